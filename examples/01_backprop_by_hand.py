"""Backprop by hand on a few scalars, checked against the engine.

One neuron and a squared error, written as a chain of single steps:

    z = w * x + b        y = tanh(z)        d = y - t        L = d * d

The backward pass walks the chain from L back to the inputs, multiplying local
derivatives (the chain rule). ``d`` is used twice in ``d * d``, so its two paths
add up: dL/dd = d + d. The engine must give the same numbers.

Then a few steps of gradient descent on w and b, the way a training loop updates
parameters: in place, under no_grad, so w and b stay the same leaf tensors.

    python examples/01_backprop_by_hand.py --x=2 --w=0.5 --b=-0.5 --t=1 --steps=5 --lr=0.1
"""
import argparse
import math

import numpy as np

from tinygrad_gpt import Tensor, no_grad


def by_hand(x, w, b, t):
    """Forward and backward with plain Python floats; returns (values, grads) dicts."""
    z = w * x + b
    y = math.tanh(z)
    d = y - t
    L = d * d
    gL = 1.0                   # dL/dL
    gd = gL * d + gL * d       # L = d * d: one path through each factor, and they add
    gy = gd * 1.0              # d = y - t:  dd/dy = 1
    gz = gy * (1 - y * y)      # y = tanh(z): dy/dz = 1 - tanh(z)^2
    gw, gx, gb = gz * x, gz * w, gz * 1.0   # z = w x + b
    return dict(x=x, w=w, b=b, z=z, y=y, d=d, L=L), dict(x=gx, w=gw, b=gb, z=gz, y=gy, d=gd, L=gL)


def by_engine(x, w, b, t):
    """The same computation with Tensors; backward(retain_graph=True) keeps every .grad."""
    leaf = {k: Tensor(v, requires_grad=True, dtype=np.float64) for k, v in dict(x=x, w=w, b=b).items()}
    z = leaf["w"] * leaf["x"] + leaf["b"]
    y = z.tanh()
    d = y - t
    L = d * d
    L.backward(retain_graph=True)  # retain_graph: intermediate tensors keep their .grad too
    nodes = dict(leaf, z=z, y=y, d=d, L=L)
    return {k: n.item() for k, n in nodes.items()}, {k: float(n.grad) for k, n in nodes.items()}


def descend(x, w, b, t, lr, steps):
    """Gradient descent on w and b; returns the loss before each step and after the last."""
    w = Tensor(w, requires_grad=True, dtype=np.float64)
    b = Tensor(b, requires_grad=True, dtype=np.float64)
    losses = []
    for _ in range(steps + 1):
        L = ((w * x + b).tanh() - t) ** 2
        losses.append(L.item())
        if len(losses) > steps:
            break
        L.backward()
        with no_grad():          # an update is not part of the graph; w stays a leaf
            w -= lr * w.grad
            b -= lr * b.grad
        w.zero_grad()            # .grad adds up over backward calls: clear it each step
        b.zero_grad()
    return losses, w.item(), b.item()


def main(argv=None):
    p = argparse.ArgumentParser(description="Backprop by hand on scalars, checked against the engine.")
    p.add_argument("--x", type=float, default=2.0)
    p.add_argument("--w", type=float, default=0.5)
    p.add_argument("--b", type=float, default=-0.5)
    p.add_argument("--t", type=float, default=1.0, help="the target")
    p.add_argument("--steps", type=int, default=5, help="gradient descent steps after the check")
    p.add_argument("--lr", type=float, default=0.1)
    a = p.parse_args(argv)
    values, hand = by_hand(a.x, a.w, a.b, a.t)
    engine_values, engine = by_engine(a.x, a.w, a.b, a.t)
    print("z = w*x + b,  y = tanh(z),  d = y - t,  L = d*d\n")
    print(f"{'node':<6}{'value':>12}{'dL/dnode by hand':>20}{'by the engine':>16}")
    ok = True
    for k in ("L", "d", "y", "z", "w", "x", "b"):
        same = math.isclose(hand[k], engine[k], rel_tol=1e-12, abs_tol=1e-15)
        same &= math.isclose(values[k], engine_values[k], rel_tol=1e-12, abs_tol=1e-15)
        ok &= same
        print(f"{k:<6}{values[k]:>12.6f}{hand[k]:>20.6f}{engine[k]:>16.6f}{'' if same else '  MISMATCH'}")
    print("\nall gradients agree" if ok else "\nthe engine disagrees with the chain rule")
    losses, w, b = descend(a.x, a.w, a.b, a.t, a.lr, a.steps)
    print(f"\n{a.steps} steps of `with no_grad(): w -= lr * w.grad` (lr={a.lr}):")
    print("  L: " + " -> ".join(f"{v:.6f}" for v in losses) + f"   (w = {w:.4f}, b = {b:.4f})")
    return 0 if ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
