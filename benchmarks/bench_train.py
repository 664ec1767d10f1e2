"""Training-step speed of our GPT against the same GPT in PyTorch eager, side by side.

    python benchmarks/bench_train.py --config=cpu              # nanoGPT's CPU config
    python benchmarks/bench_train.py --config=gpu --repeats=3  # nanoGPT's GPU config (slow on a CPU)
    CUPY_TF32=1 python benchmarks/bench_train.py --config=gpu --device=cuda --tf32=True

One step = forward, backward, gradient clipping at 1.0, AdamW, zero_grad, at float32,
on a fixed batch. Both models start from the same weights (GPT-2 init). The three
contenders (ours, torch with manual attention, torch with fused SDPA attention)
alternate within one process after a warm-up; the table gives medians and the
ratio ours/torch. MFU is model FLOPs per second over the measured float32 matmul peak.
Peak memory (``--memory``) runs each contender in a fresh subprocess and reports
the growth of its peak resident set over the model's own footprint. ``--isolated`` also
times each contender alone in a fresh process: alternating in one process is fairer to
machine drift, but one framework's idle worker threads can slow the other down.
"""
import argparse
import os
import resource
import statistics
import subprocess
import sys
import time

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "tests"))

from tinygrad_gpt import backend  # noqa: E402
from tinygrad_gpt.model import GPT, GPTConfig  # noqa: E402
from tinygrad_gpt.optim import clip_grad_norm_  # noqa: E402
from tinygrad_gpt.run.settings import tune_allocator_for_training  # noqa: E402

tune_allocator_for_training()  # as the train command does: only with TINYGRAD_GPT_TUNE_MALLOC=1

CONFIGS = {  # nanoGPT's shakespeare_char settings: the CPU one and the GPU one
    "cpu": dict(batch_size=12, block_size=64, n_layer=4, n_head=4, n_embd=128),
    "gpu": dict(batch_size=64, block_size=256, n_layer=6, n_head=6, n_embd=384),
    "tiny": dict(batch_size=4, block_size=32, n_layer=2, n_head=2, n_embd=32),  # checks the flow only
}
VOCAB = 65


def make_ours(c, device, seed=0):
    backend.manual_seed(seed)
    config = GPTConfig(block_size=c["block_size"], vocab_size=VOCAB, n_layer=c["n_layer"],
                       n_head=c["n_head"], n_embd=c["n_embd"])
    model = GPT(config).to(device=device)
    opt = model.configure_optimizers(0.1, 1e-3, (0.9, 0.99))

    def step(x, y):
        _, loss = model(x, y)
        loss.backward()
        clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        model.zero_grad()
        return loss.item()
    return model, step


def make_torch(c, device, state_dict, sdpa):
    import torch
    from torch_gpt import TorchGPT, load_from_state_dict
    model = TorchGPT(c["block_size"], VOCAB, c["n_layer"], c["n_head"], c["n_embd"], use_sdpa=sdpa)
    if state_dict is not None:  # start from our weights; otherwise its own (same) init
        load_from_state_dict(model, state_dict)
    model.to(device)
    params = list(model.parameters())
    groups = [{"params": [p for p in params if p.dim() >= 2], "weight_decay": 0.1},
              {"params": [p for p in params if p.dim() < 2], "weight_decay": 0.0}]
    opt = torch.optim.AdamW(groups, lr=1e-3, betas=(0.9, 0.99), foreach=True)

    def step(x, y):
        _, loss = model(x, y)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        opt.step()
        opt.zero_grad(set_to_none=True)
        return loss.item()
    return model, step


def matmul_peak(device, n=1024, reps=10):
    """Measured float32 matmul GFLOP/s on this device (the MFU denominator)."""
    xp = backend.xp_for(device)
    a = xp.asarray(np.random.default_rng(0).standard_normal((n, n), dtype=np.float32))
    b = a.copy()
    a @ b
    backend.synchronize(device)
    best = float("inf")
    for _ in range(reps):
        t0 = time.perf_counter()
        a @ b
        backend.synchronize(device)
        best = min(best, time.perf_counter() - t0)
    return 2 * n ** 3 / best / 1e9


def batch(c, seed=1):
    rng = np.random.default_rng(seed)
    shape = (c["batch_size"], c["block_size"])
    return rng.integers(0, VOCAB, shape), rng.integers(0, VOCAB, shape)


def run_speed(args):
    import torch
    c = CONFIGS[args.config]
    torch.backends.cuda.matmul.allow_tf32 = args.tf32
    torch.backends.cudnn.allow_tf32 = args.tf32
    tdev = args.torch_device or args.device
    ours_model, ours_step = make_ours(c, args.device)
    sd = ours_model.state_dict()
    contenders = {"ours": ours_step}
    x, y = batch(c)
    xd, yd = backend.to_device(x, args.device), backend.to_device(y, args.device)
    tx, ty = torch.from_numpy(x).to(tdev), torch.from_numpy(y).to(tdev)
    for name, sdpa in (("torch manual", False), ("torch sdpa", True)):
        contenders[name] = make_torch(c, tdev, sd, sdpa)[1]
    inputs = {name: ((xd, yd) if name == "ours" else (tx, ty)) for name in contenders}

    def sync():
        backend.synchronize(args.device)
        if tdev == "cuda":
            torch.cuda.synchronize()

    for name, step in contenders.items():  # warm-up
        for _ in range(args.warmup):
            step(*inputs[name])
    times = {name: [] for name in contenders}
    for _ in range(args.repeats):
        for name, step in contenders.items():
            sync()
            t0 = time.perf_counter()
            for _ in range(args.steps):
                step(*inputs[name])
            sync()
            times[name].append((time.perf_counter() - t0) / args.steps)
    med = {name: statistics.median(t) for name, t in times.items()}

    tokens = c["batch_size"] * c["block_size"]
    flops = ours_model.flops_per_token() * tokens
    peak = matmul_peak(args.device, n=256 if args.config == "tiny" else 1024)
    print(f"config {args.config} {c}, device {args.device} (torch on {tdev}), tf32 {args.tf32} "
          f"(CUPY_TF32={os.environ.get('CUPY_TF32', '0')}), "
          f"torch {torch.__version__} ({torch.get_num_threads()} threads), numpy {np.__version__}")
    print(f"matmul peak {peak:.0f} GFLOP/s float32; {flops / 1e9:.2f} GFLOP per step\n")
    print("| contender | ms/step | MFU | ours/this |")
    print("|---|---|---|---|")
    for name, t in med.items():
        print(f"| {name} | {t * 1e3:.1f} | {flops / t / 1e9 / peak:.1%} | {med['ours'] / t:.2f} |")
    return med


def _status_mib(field):
    """VmRSS (now) or VmHWM (peak since the last reset) of this process, in MiB."""
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1]) / 1024
    raise RuntimeError(f"{field} not found in /proc/self/status")


def make_contender(name, c):
    """One contender on the CPU, by name ("ours", "torch manual", "torch sdpa"), with its own
    init: its step function and a batch in its array type."""
    x, y = batch(c)
    if name == "ours":
        return make_ours(c, "cpu")[1], x, y
    import torch
    step = make_torch(c, "cpu", None, name == "torch sdpa")[1]
    return step, torch.from_numpy(x), torch.from_numpy(y)


def run_memory_child(args):
    """In a fresh process: build one contender, then report how far training steps lift
    the peak resident set above the size before the first step (MiB)."""
    step, x, y = make_contender(args.memory_child, CONFIGS[args.config])
    base = _status_mib("VmRSS")  # libraries, model and data loaded; no step yet
    for _ in range(args.warmup + 2):  # gradients, optimizer state, activations, buffers
        step(x, y)
    print(base, _status_mib("VmHWM") - base)


def run_isolated_child(args):
    """In a fresh process: time one contender alone (no other framework's threads around)."""
    step, x, y = make_contender(args.isolated_child, CONFIGS[args.config])
    for _ in range(args.warmup):
        step(x, y)
    times = []
    for _ in range(args.repeats):
        t0 = time.perf_counter()
        for _ in range(args.steps):
            step(x, y)
        times.append((time.perf_counter() - t0) / args.steps)
    print(statistics.median(times))


def run_isolated(args):
    print("\n| contender, alone in its own process | ms/step | ours/this |")
    print("|---|---|---|")
    out = {}
    for name in ("ours", "torch manual", "torch sdpa"):
        cmd = [sys.executable, os.path.abspath(__file__), f"--config={args.config}",
               f"--isolated_child={name}", f"--warmup={args.warmup}", f"--repeats={args.repeats}",
               f"--steps={args.steps}"]
        out[name] = float(subprocess.check_output(cmd, text=True).split()[-1])
    for name, t in out.items():
        print(f"| {name} | {t * 1e3:.1f} | {out['ours'] / t:.2f} |")


def run_memory(args):
    print("\n| contender | RSS before training, MiB | peak RSS growth over training steps, MiB |")
    print("|---|---|---|")
    out = {}
    for name in ("ours", "torch manual", "torch sdpa"):
        cmd = [sys.executable, os.path.abspath(__file__), f"--config={args.config}",
               f"--memory_child={name}", f"--warmup={args.warmup}"]
        base, out[name] = map(float, subprocess.check_output(cmd, text=True).split()[-2:])
        print(f"| {name} | {base:.0f} | {out[name]:.1f} |")
    print(f"\nours/torch manual: {out['ours'] / out['torch manual']:.2f}, "
          f"ours/torch sdpa: {out['ours'] / out['torch sdpa']:.2f}")


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--config", choices=CONFIGS, default="cpu")
    p.add_argument("--device", choices=backend.DEVICES, default="cpu")
    p.add_argument("--steps", type=int, default=5, help="steps per timed repeat")
    p.add_argument("--repeats", type=int, default=7)
    p.add_argument("--warmup", type=int, default=3)
    p.add_argument("--tf32", type=lambda s: s == "True", default=False,
                   help="True or False: torch's allow_tf32; CuPy reads CUPY_TF32=1 from the environment")
    p.add_argument("--torch_device", choices=backend.DEVICES, default=None,
                   help="where the torch contenders run (default: --device)")
    p.add_argument("--memory", action="store_true", help="also measure peak memory (CPU)")
    p.add_argument("--isolated", action="store_true",
                   help="also time each contender alone in a fresh process (CPU)")
    p.add_argument("--memory_child", help=argparse.SUPPRESS)
    p.add_argument("--isolated_child", help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.memory_child:
        return run_memory_child(args)
    if args.isolated_child:
        return run_isolated_child(args)
    backend.require_device(args.device)
    if args.device == "cuda" and args.tf32 != (os.environ.get("CUPY_TF32") == "1"):
        sys.exit(f"error: --tf32={args.tf32} needs CUPY_TF32={int(args.tf32)} in the environment, "
                 f"so that CuPy and torch both use TF32 or neither does")
    run_speed(args)
    if args.isolated:
        run_isolated(args)
    if args.memory:
        run_memory(args)


if __name__ == "__main__":
    main()
