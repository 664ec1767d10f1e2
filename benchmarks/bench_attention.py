"""One layer's causal attention, forward and backward, against PyTorch's fused attention.

    python benchmarks/bench_attention.py [--batch=64 --heads=6 --T=256 --head_size=64] [--repeats=5]
    python benchmarks/bench_attention.py --only=torch    # one contender alone in this process

The default shape is nanoGPT's GPU config. The contenders alternate in one process after
a warm-up, and the table gives medians: our ``Attention`` (the (B, nh, T, T) weights
materialised), ``BlockedAttention`` (blocks of (batch, head) rows and tiles of queries,
never holding all the weights), and torch's ``scaled_dot_product_attention``. Alternating
in one process, each framework's idle worker threads can slow the other down (RESULTS.md,
section 3); ``--only`` times one contender by itself.
"""
import argparse
import statistics
import time

import numpy as np

from tinygrad_gpt import fast
from tinygrad_gpt.run.settings import tune_allocator_for_training

tune_allocator_for_training()  # as the train command does: glibc keeps freed blocks for reuse


def ours(cls, q, k, v, g):
    op = cls((True, True, True))
    op.forward(q, k, v)
    return op.backward(g)


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--batch", type=int, default=64)
    p.add_argument("--heads", type=int, default=6)
    p.add_argument("--T", type=int, default=256)
    p.add_argument("--head_size", type=int, default=64)
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--only", choices=["attention", "blocked", "torch"], help="time this one alone")
    args = p.parse_args()
    import torch
    import torch.nn.functional as TF

    rng = np.random.default_rng(0)
    shape = (args.batch, args.heads, args.T, args.head_size)
    q, k, v, g = (rng.standard_normal(shape, dtype=np.float32) * 0.3 for _ in range(4))
    tq, tk, tv = (torch.from_numpy(a.copy()).requires_grad_() for a in (q, k, v))
    tg = torch.from_numpy(g)

    def theirs():
        for t in (tq, tk, tv):
            t.grad = None
        TF.scaled_dot_product_attention(tq, tk, tv, is_causal=True).backward(tg)

    runs = {
        "attention": ("`Attention` (weights materialised)", lambda: ours(fast.Attention, q, k, v, g)),
        "blocked": ("`BlockedAttention` (blocks and query tiles)",
                    lambda: ours(fast.BlockedAttention, q, k, v, g)),
        "torch": ("torch SDPA", theirs),
    }
    runs = dict(value for key, value in runs.items() if args.only in (None, key))
    times = {name: [] for name in runs}
    for run in runs.values():  # warm-up
        run()
    for _ in range(args.repeats):
        for name, run in runs.items():
            t0 = time.perf_counter()
            run()
            times[name].append(time.perf_counter() - t0)
    weights = args.batch * args.heads * args.T * args.T
    print(f"torch {torch.__version__} ({torch.get_num_threads()} threads), numpy {np.__version__}; "
          f"q, k, v {shape} float32, causal; the weights: {weights * 4 / 2**20:.0f} MiB\n")
    print("| attention, forward + backward | ms | this / torch SDPA |")
    print("|---|---|---|")
    sdpa = statistics.median(times["torch SDPA"]) if "torch SDPA" in times else None
    for name, t in times.items():
        ratio = "-" if sdpa is None else f"{statistics.median(t) / sdpa:.2f}"
        print(f"| {name} | {statistics.median(t) * 1e3:.1f} | {ratio} |")


if __name__ == "__main__":
    main()
