"""Generation speed: our KV cache against nanoGPT-style PyTorch generation and our plain path.

    python benchmarks/bench_generate.py [--new_tokens=300] [--repeats=3]

The model is nanoGPT's GPU config (6 layers, 6 heads, 384 wide, block 256, vocab 65),
batch 1, starting from one token. nanoGPT's `generate` has no cache: each new
token re-runs the model on the whole (cropped) context. Ours with the cache runs
only the newest token through each layer; past block_size the window slides and
the cache is rebuilt, so both paths give the same tokens.
"""
import argparse
import os
import statistics
import sys
import time

import numpy as np

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "tests"))

from tinygrad_gpt import backend  # noqa: E402
from tinygrad_gpt.model import GPT, GPTConfig  # noqa: E402


def torch_generate(model, idx, new_tokens, block_size):
    """nanoGPT's generate loop: crop the context, run everything, sample the last position."""
    import torch
    with torch.no_grad():
        for _ in range(new_tokens):
            logits, _ = model(idx[:, -block_size:])
            probs = torch.softmax(logits[:, -1, :], dim=-1)
            idx = torch.cat([idx, torch.multinomial(probs, 1)], dim=1)
    return idx


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--new_tokens", type=int, default=300)
    p.add_argument("--repeats", type=int, default=3)
    args = p.parse_args()
    import torch
    from torch_gpt import TorchGPT, load_from_state_dict

    backend.manual_seed(0)
    config = GPTConfig(block_size=256, vocab_size=65, n_layer=6, n_head=6, n_embd=384)
    ours = GPT(config).eval()
    theirs = TorchGPT(256, 65, 6, 6, 384).eval()
    load_from_state_dict(theirs, ours.state_dict())
    start = np.zeros((1, 1), dtype=np.int64)
    runs = {
        "ours, KV cache": lambda: ours.generate(start, args.new_tokens, seed=0, use_cache=True),
        "ours, no cache": lambda: ours.generate(start, args.new_tokens, seed=0, use_cache=False),
        "torch, nanoGPT-style (no cache)": lambda: torch_generate(
            theirs, torch.zeros((1, 1), dtype=torch.long), args.new_tokens, 256),
    }
    for run in runs.values():  # warm-up, short
        run()
    times = {name: [] for name in runs}
    for _ in range(args.repeats):
        for name, run in runs.items():
            t0 = time.perf_counter()
            run()
            times[name].append(time.perf_counter() - t0)
    same = (ours.generate(start, args.new_tokens, seed=0, use_cache=True)
            == ours.generate(start, args.new_tokens, seed=0, use_cache=False)).all()
    rate = {name: args.new_tokens / statistics.median(t) for name, t in times.items()}
    print(f"torch {torch.__version__} ({torch.get_num_threads()} threads), numpy {np.__version__}; "
          f"batch 1, {args.new_tokens} new tokens; cached == uncached tokens: {bool(same)}\n")
    print("| generator | tokens/s | ours with cache / this |")
    print("|---|---|---|")
    for name, r in rate.items():
        print(f"| {name} | {r:.1f} | {rate['ours, KV cache'] / r:.2f} |")


if __name__ == "__main__":
    main()
