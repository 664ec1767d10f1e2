"""Generation speed: our KV cache against nanoGPT-style PyTorch generation and our plain path.

    python benchmarks/bench_generate.py [--new_tokens=300] [--repeats=3]

The model is nanoGPT's GPU config (6 layers, 6 heads, 384 wide, block 256, vocab 65),
batch 1, starting from one token. nanoGPT's `generate` has no cache: each new
token re-runs the model on the whole (cropped) context. Ours with the cache runs
only the newest token through each layer; past block_size the window slides and
the cache is rebuilt, so both paths give the same tokens.

``--bound`` also times the passes each path is made of, and prints how far the cache
can get ahead of the plain path at this length at best: a token past block_size
needs the whole window run again (every position embedding shifts), so even with
free cached steps the cached run costs at least those rebuilds.
"""
import argparse
import os
import statistics
import sys
import time

import numpy as np

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "tests"))

from tinygrad_gpt import backend  # noqa: E402
from tinygrad_gpt.model import GPT, GPTConfig, LayerCache  # noqa: E402
from tinygrad_gpt.tensor import no_grad  # noqa: E402
from tinygrad_gpt.run.settings import tune_allocator_for_training  # noqa: E402

tune_allocator_for_training()  # as the train command does: glibc keeps freed blocks for reuse


def torch_generate(model, idx, new_tokens, block_size):
    """nanoGPT's generate loop: crop the context, run everything, sample the last position."""
    import torch
    with torch.no_grad():
        for _ in range(new_tokens):
            logits, _ = model(idx[:, -block_size:])
            probs = torch.softmax(logits[:, -1, :], dim=-1)
            idx = torch.cat([idx, torch.multinomial(probs, 1)], dim=1)
    return idx


def _median_time(fn, repeats=5):
    fn()
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def bound(model, new_tokens, torch_seconds):
    """Time the plain path's pass over t tokens (t on a grid, interpolated), a cache rebuild
    over the full window, and one cached step; print the cached path's best case."""
    block = model.config.block_size
    ids = np.zeros((1, block), dtype=np.int64)
    grid = sorted({1, *range(16, block + 1, 16)})
    def fresh():  # empty caches, one a layer
        return [LayerCache() for _ in model.transformer.h]

    with no_grad():
        plain = [_median_time(lambda: model._next_logits(ids[:, :t], None)) for t in grid]
        rebuild = _median_time(lambda: model._next_logits(ids, fresh()))  # the whole window, no cache
        caches = fresh()
        model._next_logits(ids[:, :block - 1], caches)
        full = [(c.k, c.v) for c in caches]

        def cached_step():  # the newest token, with block - 1 cached
            for c, (k, v) in zip(caches, full):
                c.k, c.v = k, v
            model._next_logits(ids, caches)
        step = _median_time(cached_step, repeats=20)
    # a cached step reads every weight once: the blocks' matrix-vector products alone
    weights = [p.data for p in model.transformer.h.parameters() if p.ndim == 2]
    rows = [np.ones((1, w.shape[0]), dtype=w.dtype) for w in weights]
    products = _median_time(lambda: [r @ w for r, w in zip(rows, weights)], repeats=20)
    # step i (0-based) sees min(i + 1, block) tokens; the cache rebuilds at i = 0 and i >= block
    lengths = np.minimum(np.arange(1, new_tokens + 1), block)
    plain_total = float(np.interp(lengths, grid, plain).sum())
    rebuilds = max(0, new_tokens - block)
    floor = rebuilds * rebuild
    print(f"\nthe passes ({new_tokens} new tokens, block {block}): plain pass over t tokens "
          f"{plain[0] * 1e3:.1f} ms (t=1) to {plain[-1] * 1e3:.1f} ms (t={block}); cache rebuild "
          f"over the window {rebuild * 1e3:.1f} ms; cached step {step * 1e3:.2f} ms")
    print(f"the blocks' matrix-vector products of one cached step, without the engine: "
          f"{products * 1e3:.2f} ms ({sum(w.nbytes for w in weights) / 2**20:.0f} MiB of weights)")
    cached = new_tokens - rebuilds - 1
    print(f"plain path, summed: {plain_total:.2f} s; cached path, summed: "
          f"{floor + cached * step:.2f} s, of which {rebuilds} rebuilds: {floor:.2f} s")
    if rebuilds:
        print(f"with free cached steps, the cache could be at most {plain_total / floor:.2f}x our "
              f"plain path and {torch_seconds / floor:.2f}x nanoGPT-style torch; with cached steps that "
              f"cost only their products, {plain_total / (floor + cached * products):.2f}x and "
              f"{torch_seconds / (floor + cached * products):.2f}x")


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--new_tokens", type=int, default=300)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--bound", action="store_true",
                   help="also time the passes, and print the cache's best case")
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
    if args.bound:
        bound(ours, args.new_tokens, statistics.median(times["torch, nanoGPT-style (no cache)"]))


if __name__ == "__main__":
    main()
