"""GPT-2 124M on the CPU: KV-cache sampling speed against ``transformers``, and peak memory.

    python benchmarks/bench_gpt2.py [--new_tokens=50] [--prompt_tokens=8] [--repeats=3]

The model is GPT-2 124M's shape (12 layers, 12 heads, 768 wide, vocab 50257,
block 1024) with random weights, so nothing is downloaded. Ours and
``GPT2LMHeadModel`` hold the same weights, and their logits are compared. Both
sample ``new_tokens`` tokens, batch 1, with their KV caches (``generate`` with
``use_cache=True``), and the median of ``repeats`` runs is compared. A greedy run
checks that the two pick the same tokens.

Memory is measured first, in a fresh process started while this one is still
small (Linux carries a parent's peak RSS over into a forked child), that only loads
the model with ``from_pretrained`` from a saved folder and samples: its peak
resident set size (``getrusage``) beside the size of the weights.
"""
import argparse
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time

import numpy as np

from tinygrad_gpt import backend
from tinygrad_gpt.model import GPT, GPTConfig
from tinygrad_gpt.tensor import no_grad
from tinygrad_gpt.run.settings import tune_allocator_for_training

tune_allocator_for_training()  # as the train command does: glibc keeps freed blocks for reuse

GPT2_124M = dict(block_size=1024, vocab_size=50257, n_layer=12, n_head=12, n_embd=768)


def peak_rss_mib():
    """This process's peak resident set size (Linux reports KiB, macOS bytes)."""
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak / 2**20 if sys.platform == "darwin" else peak / 2**10


def save_random(folder):
    """Run in a fresh process: write a randomly initialised 124M GPT as a Hugging Face folder."""
    from tinygrad_gpt.storage.pretrained import save_pretrained
    backend.manual_seed(0)
    t0 = time.perf_counter()
    model = GPT(GPTConfig(**GPT2_124M))
    print(f"ours: {model.num_parameters() / 1e6:.1f}M parameters, random init in "
          f"{time.perf_counter() - t0:.1f} s")
    save_pretrained(model, folder)


def memory_child(folder, new_tokens, prompt_tokens):
    """Run in a fresh process: load ``folder`` and sample; print the RSS figures."""
    from tinygrad_gpt.storage.pretrained import from_pretrained
    base = peak_rss_mib()
    weights = os.path.getsize(os.path.join(folder, "model.safetensors")) / 2**20
    t0 = time.perf_counter()
    model = from_pretrained(folder)
    load_s = time.perf_counter() - t0
    after_load = peak_rss_mib()
    prompt = np.random.default_rng(0).integers(0, model.config.vocab_size, (1, prompt_tokens))
    model.generate(prompt, new_tokens, top_k=50, seed=0)
    peak = peak_rss_mib()
    print(f"weights file {weights:.0f} MiB; loaded in {load_s:.1f} s; peak RSS: {base:.0f} MiB after "
          f"imports, {after_load:.0f} MiB after loading, {peak:.0f} MiB after sampling {new_tokens} tokens")
    print(f"peak RSS / weights = {peak / weights:.2f}  (above the imports: {(peak - base) / weights:.2f})")
    try:  # Linux's own high-water mark of this process, as a cross-check
        with open("/proc/self/status") as f:
            hwm = next(int(line.split()[1]) for line in f if line.startswith("VmHWM"))
        print(f"VmHWM {hwm / 2**10:.0f} MiB")
    except (OSError, StopIteration):
        pass


def timed(fn):
    t0 = time.perf_counter()
    fn()
    return time.perf_counter() - t0


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--new_tokens", type=int, default=50)
    p.add_argument("--prompt_tokens", type=int, default=8)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--memory_child", default=None, help=argparse.SUPPRESS)
    p.add_argument("--save_random", default=None, help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.save_random:
        return save_random(args.save_random)
    if args.memory_child:
        return memory_child(args.memory_child, args.new_tokens, args.prompt_tokens)
    with tempfile.TemporaryDirectory() as folder:
        for flag in (f"--save_random={folder}", f"--memory_child={folder}"):
            subprocess.run([sys.executable, os.path.abspath(__file__), flag, f"--new_tokens={args.new_tokens}",
                            f"--prompt_tokens={args.prompt_tokens}"], check=True)
        compare_speed(folder, args)


def compare_speed(folder, args):
    import torch
    from transformers import GPT2Config, GPT2LMHeadModel
    from tinygrad_gpt.storage.pretrained import config_to_hf, from_pretrained

    model = from_pretrained(folder).eval()
    print(f"numpy {np.__version__}, torch {torch.__version__} ({torch.get_num_threads()} threads)")
    hf_config = {k: v for k, v in config_to_hf(model).items() if k not in ("architectures", "model_type")}
    hf = GPT2LMHeadModel(GPT2Config(**{**hf_config, "bos_token_id": 0, "eos_token_id": 0})).eval()
    hf.load_state_dict({k: torch.from_numpy(p.data) for k, p in model.named_parameters()}, strict=False)

    x = np.random.default_rng(1).integers(0, GPT2_124M["vocab_size"], (1, 128))
    with no_grad(), torch.no_grad():
        diff = np.abs(model(x)[0].numpy() - hf(torch.tensor(x)).logits.numpy()).max()
    print(f"logits of a 128-token sequence: max |ours - transformers| = {diff:.2e}")

    prompt = np.random.default_rng(0).integers(0, GPT2_124M["vocab_size"], (1, args.prompt_tokens))
    n = args.new_tokens
    ours_greedy = model.generate(prompt, n, temperature=0)  # also the warm-up of both
    with torch.no_grad():
        hf_greedy = hf.generate(torch.tensor(prompt), max_new_tokens=n, min_new_tokens=n, do_sample=False,
                                pad_token_id=0).numpy()
    agree = int((ours_greedy == hf_greedy).all(axis=0).cumprod().sum()) - args.prompt_tokens
    print(f"greedy: the first {agree} of {n} new tokens are the same in both")

    def ours_run():
        model.generate(prompt, n, top_k=50, seed=1)

    def hf_run():
        with torch.no_grad():
            hf.generate(torch.tensor(prompt), max_new_tokens=n, min_new_tokens=n, do_sample=True, top_k=50,
                        use_cache=True, pad_token_id=0)
    # alternate the two, so that a busy machine slows both alike
    ours_times, hf_times = [], []
    for _ in range(args.repeats):
        ours_times.append(timed(ours_run))
        hf_times.append(timed(hf_run))
    ours_s, hf_s = statistics.median(ours_times), statistics.median(hf_times)
    print(f"sampling {n} tokens after a {args.prompt_tokens}-token prompt, batch 1, KV cache, "
          f"median of {args.repeats}:")
    print(f"  ours          {ours_s:6.2f} s  {n / ours_s:7.1f} tokens/s")
    print(f"  transformers  {hf_s:6.2f} s  {n / hf_s:7.1f} tokens/s")
    print(f"  ours / transformers speed: {hf_s / ours_s:.2f}")


if __name__ == "__main__":
    main()
