"""A gradient penalty: train a classifier to have small input gradients (double backpropagation).

Drucker and LeCun (1992) added to the loss the squared norm of its gradient with respect to the
input, so that the classifier changes slowly near the training points; WGAN-GP (Gulrajani et al.,
2017) penalizes the input gradient's norm the same way. The penalty is a function of a gradient,
so training on it needs the gradient of a gradient:

    ce = cross_entropy(f(x), y)                                   # mean over the batch
    (gx,) = tinygrad_gpt.grad(ce, x, create_graph=True)           # d ce / d x, itself a graph
    penalty = ((B * gx) ** 2).sum(-1).mean()                      # mean of |d ce_i / d x_i|^2
    (ce + lam * penalty).backward()                               # through both backwards

A small float64 MLP (2 -> hidden -> hidden -> 2, tanh) learns two interleaved half-moons, once
with the penalty in the objective and once without (the penalty is then only measured). Before
training, the gradient of the whole objective with respect to every weight is checked against
PyTorch (the same weights, torch.autograd.grad with create_graph=True) where torch is installed,
and against central differences in a random direction otherwise.

    python examples/16_gradient_penalty.py --lam=0.1 --steps=300
"""
import argparse

import numpy as np

import tinygrad_gpt as tg
from tinygrad_gpt import Tensor, functional as F
from tinygrad_gpt.optim import AdamW


def moons(n, rng):
    """n points of two interleaved half-moons, with a little noise; labels 0 and 1."""
    t = rng.uniform(0, np.pi, n)
    y = rng.integers(0, 2, n)
    x = np.stack([np.cos(t) + y * 1.0, np.sin(t) * (1 - 2 * y) + y * 0.5], axis=1)
    return x + 0.1 * rng.standard_normal((n, 2)), y


def init(hidden, rng):
    sizes = [(2, hidden), (hidden, hidden), (hidden, 2)]
    return [a for n_in, n_out in sizes
            for a in (rng.standard_normal((n_in, n_out)) / np.sqrt(n_in), np.zeros(n_out))]


def mlp(params, x):
    w1, b1, w2, b2, w3, b3 = params
    h = (x @ w1 + b1).tanh()          # (B, hidden)
    h = (h @ w2 + b2).tanh()          # (B, hidden)
    return h @ w3 + b3                # (B, 2) logits


def objective(params, x, y, lam):
    """(cross-entropy, penalty, ce + lam * penalty) on the batch (x, y), all Tensors."""
    xt = Tensor(x, requires_grad=True)
    ce = F.cross_entropy(mlp(params, xt), y)
    (gx,) = tg.grad(ce, xt, create_graph=True)           # (B, 2): d ce / d x, recorded
    penalty = ((len(x) * gx) ** 2).sum(-1).mean()        # each example's own |d ce_i / d x_i|^2
    return ce, penalty, ce + lam * penalty


def torch_objective(torch, params, x, y, lam):
    """The same objective in PyTorch."""
    w1, b1, w2, b2, w3, b3 = params
    xt = torch.tensor(x, requires_grad=True)
    logits = torch.tanh(torch.tanh(xt @ w1 + b1) @ w2 + b2) @ w3 + b3
    ce = torch.nn.functional.cross_entropy(logits, torch.tensor(y))
    (gx,) = torch.autograd.grad(ce, xt, create_graph=True)
    return ce + lam * ((len(x) * gx) ** 2).sum(-1).mean()


def check_gradient(arrays, x, y, lam, rng):
    """The objective's gradient against torch's, or against central differences without torch."""
    params = [Tensor(a, requires_grad=True) for a in arrays]
    ours = [g.numpy() for g in tg.grad(objective(params, x, y, lam)[2], params)]
    try:
        import torch
    except ImportError:
        torch = None
    if torch is not None:
        tparams = [torch.tensor(a, requires_grad=True) for a in arrays]
        ref = [g.numpy() for g in torch.autograd.grad(torch_objective(torch, tparams, x, y, lam), tparams)]
        err = max(float(np.abs(o - r).max()) for o, r in zip(ours, ref))
        scale = max(float(np.abs(r).max()) for r in ref)
        print(f"gradient of ce + lam * penalty, every weight, against torch.autograd: max |diff| {err:.1e} "
              f"(largest entry {scale:.3f}): {'PASS' if err <= 1e-10 * max(1.0, scale) else 'FAIL'}")
        return
    vs = [rng.standard_normal(a.shape) for a in arrays]
    eps = 1e-6
    def at(sign):
        return objective([Tensor(a + sign * eps * v) for a, v in zip(arrays, vs)], x, y, lam)[2].item()
    numeric = (at(1) - at(-1)) / (2 * eps)
    analytic = sum(float((g * v).sum()) for g, v in zip(ours, vs))
    err = abs(numeric - analytic) / max(1.0, abs(numeric))
    print(f"gradient of ce + lam * penalty in a random direction: {analytic:.8f}, central differences "
          f"{numeric:.8f} (no torch here): {'PASS' if err <= 1e-6 else 'FAIL'}")


def train(arrays, x, y, lam, a):
    """AdamW on ce + lam * penalty; prints ce and penalty every so often; returns both histories."""
    params = [Tensor(v.copy(), requires_grad=True) for v in arrays]
    opt = AdamW(params, lr=a.lr, weight_decay=0.0)
    history = []
    for step in range(a.steps + 1):
        ce, penalty, total = objective(params, x, y, lam)
        history.append((ce.item(), penalty.item()))
        if step % a.report == 0 or step == a.steps:
            print(f"  {step:5d} {ce.item():9.4f} {penalty.item():9.4f}")
        if step == a.steps:
            break
        opt.zero_grad()
        total.backward()              # through the loss and through its recorded input gradient
        opt.step()
    return history


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--lam", type=float, default=0.1, help="the penalty's weight")
    p.add_argument("--steps", type=int, default=300)
    p.add_argument("--lr", type=float, default=1e-2, help="AdamW's learning rate")
    p.add_argument("--n", type=int, default=128, help="training points")
    p.add_argument("--hidden", type=int, default=16)
    p.add_argument("--report", type=int, default=50, help="print every this many steps")
    p.add_argument("--seed", type=int, default=0)
    a = p.parse_args(argv)
    for name in ("steps", "n", "hidden", "report"):
        if getattr(a, name) < 1:
            p.error(f"--{name} must be a positive integer, got {getattr(a, name)}")
    if not a.lam >= 0:
        p.error(f"--lam must be a number >= 0, got {a.lam}")

    rng = np.random.default_rng(a.seed)
    x, y = moons(a.n, rng)
    arrays = init(a.hidden, rng)
    check_gradient(arrays, x, y, a.lam, rng)
    runs = {}
    for lam in (a.lam, 0.0):
        print(f"\nlam {lam:g}:\n   step        ce   penalty")
        runs[lam] = train(arrays, x, y, lam, a)
    print()
    for lam, history in runs.items():
        (ce0, pen0), (ce1, pen1) = history[0], history[-1]
        print(f"lam {lam:g}: penalty {pen0:.4f} -> {pen1:.4f}, cross-entropy {ce0:.4f} -> {ce1:.4f}")


if __name__ == "__main__":
    main()
