"""Backprop by hand on a few scalars, checked against the engine.

One neuron and a squared error, written as a chain of single steps:

    z = w * x + b        y = tanh(z)        d = y - t        L = d * d

The backward pass walks the chain from L back to the inputs, multiplying local
derivatives (the chain rule). ``d`` is used twice in ``d * d``, so its two paths
add up: dL/dd = d + d. The engine must give the same numbers.

    python examples/01_backprop_by_hand.py --x=2 --w=0.5 --b=-0.5 --t=1
"""
import argparse
import math

import numpy as np

from tinygrad_gpt import Tensor


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


def main(argv=None):
    p = argparse.ArgumentParser(description="Backprop by hand on scalars, checked against the engine.")
    p.add_argument("--x", type=float, default=2.0)
    p.add_argument("--w", type=float, default=0.5)
    p.add_argument("--b", type=float, default=-0.5)
    p.add_argument("--t", type=float, default=1.0, help="the target")
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
    return 0 if ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
