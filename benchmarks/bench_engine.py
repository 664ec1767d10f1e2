"""Per-op overhead of the engine against PyTorch eager, side by side in one process.

    python benchmarks/bench_engine.py [--repeats=7]

Each case runs forward + backward on small tensors, where the time is almost all
bookkeeping (graph building, dispatch, gradient accumulation) rather than
arithmetic. The two engines alternate, after a warm-up, and the medians are compared.
"""
import argparse
import statistics
import time

import numpy as np

from tinygrad_gpt import Tensor
from tinygrad_gpt.run.settings import tune_allocator_for_training

tune_allocator_for_training()  # as the train command does: glibc keeps freed blocks for reuse

try:
    import torch
except ImportError:  # the benchmark needs torch as the yardstick
    torch = None


def chain_ours(x0, n):
    x = Tensor(x0, requires_grad=True)
    y = x
    for i in range(n):
        y = (y * 1.0001 + 0.001) if i % 2 else y.tanh()
    y.sum().backward()
    return x.grad


def chain_torch(x0, n):
    x = torch.tensor(x0, requires_grad=True)
    y = x
    for i in range(n):
        y = (y * 1.0001 + 0.001) if i % 2 else y.tanh()
    y.sum().backward()
    return x.grad


def mlp_ours(params, xb, yb):
    w1, b1, w2, b2 = params
    h = (Tensor(xb) @ w1 + b1).relu()
    loss = ((h @ w2 + b2 - Tensor(yb)) ** 2).mean()
    loss.backward()
    for p in params:
        p.data -= 1e-3 * p.grad
        p.grad = None
    return loss


def mlp_torch(params, xb, yb):
    w1, b1, w2, b2 = params
    h = (torch.from_numpy(xb) @ w1 + b1).relu()
    loss = ((h @ w2 + b2 - torch.from_numpy(yb)) ** 2).mean()
    loss.backward()
    with torch.no_grad():
        for p in params:
            p -= 1e-3 * p.grad
            p.grad = None
    return loss


def timed(fn, inner):
    t0 = time.perf_counter()
    for _ in range(inner):
        fn()
    return (time.perf_counter() - t0) / inner


def compare(name, ours, theirs, repeats, inner):
    ours(), theirs()  # warm-up
    a, b = [], []
    for _ in range(repeats):  # alternate A/B so drift hits both
        a.append(timed(ours, inner))
        b.append(timed(theirs, inner))
    ma, mb = statistics.median(a), statistics.median(b)
    print(f"| {name} | {ma * 1e3:.3f} | {mb * 1e3:.3f} | {ma / mb:.2f} |")
    return ma / mb


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=7)
    args = parser.parse_args()
    if torch is None:
        raise SystemExit("this benchmark compares with PyTorch: pip install torch")
    torch.set_num_threads(max(1, torch.get_num_threads()))
    rng = np.random.default_rng(0)
    print(f"numpy {np.__version__}, torch {torch.__version__}, {torch.get_num_threads()} torch threads\n")
    print("| case (forward + backward) | ours ms | torch ms | ours/torch |")
    print("|---|---|---|---|")
    x0 = rng.standard_normal((16, 16)).astype(np.float32)
    compare("chain of 1000 elementwise ops, 16x16", lambda: chain_ours(x0, 1000),
            lambda: chain_torch(x0, 1000), args.repeats, 3)

    shapes = [(64, 64), (64,), (64, 64), (64,)]
    init = [(rng.standard_normal(s) * 0.1).astype(np.float32) for s in shapes]
    ours_p = [Tensor(a.copy(), requires_grad=True) for a in init]
    torch_p = [torch.tensor(a.copy(), requires_grad=True) for a in init]
    xb = rng.standard_normal((64, 64)).astype(np.float32)
    yb = rng.standard_normal((64, 64)).astype(np.float32)
    compare("MLP step, 64x64 (2 layers, MSE, SGD)", lambda: mlp_ours(ours_p, xb, yb),
            lambda: mlp_torch(torch_p, xb, yb), args.repeats, 200)


if __name__ == "__main__":
    main()
