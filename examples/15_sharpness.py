"""The sharpness of a tiny GPT over training: does it settle near 2/lr (the edge of stability)?

Plain gradient descent with step size lr is stable on a quadratic only while the top eigenvalue
of the Hessian (the *sharpness*) stays below 2/lr. Cohen et al. (2021, "Gradient descent on
neural networks typically occurs at the edge of stability") found that on neural networks the
sharpness rises during training until it reaches about 2/lr, and then hovers there while the
loss keeps falling, though not at every step.

This example trains a tiny float64 GPT by gradient descent on one fixed batch (the same windows
at every step, so the loss is one fixed function and the comparison with 2/lr has a meaning), at
a few learning rates from the same initial weights. Every ``--every`` steps it measures the
sharpness by power iteration on Hessian-vector products (``tinygrad_gpt.grad`` twice, no
Hessian built), warm-started from the previous eigenvector.

Data: ``--data=PATH``; otherwise tiny Shakespeare where it lies at ../shared/data beside the
repository, otherwise Python's own docs.

    python examples/15_sharpness.py --lrs=0.1,0.4,1.0 --steps=300
    python examples/15_sharpness.py --steps=2000 --every=50 --n_embd=32 --batch_size=32
"""
import argparse
import os
import sys

import numpy as np

import tinygrad_gpt as tg
from tinygrad_gpt import Tensor, manual_seed, no_grad
from tinygrad_gpt.errors import DataError
from tinygrad_gpt.model import GPT, GPTConfig
from tinygrad_gpt.text.data import Dataset, load_text
from tinygrad_gpt.tokenizer import CharTokenizer

SHAKESPEARE = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "shared", "data",
                           "tinyshakespeare.txt")


def hvp(model, x, y, vs):
    """H v for the loss on the batch (x, y), as arrays: the gradient of <grad loss, v>."""
    params = model.parameters()
    loss = model(x, y)[1]
    gs = tg.grad(loss, params, create_graph=True)            # gradients that are graphs themselves
    inner = sum((g * Tensor(v)).sum() for g, v in zip(gs, vs))
    return [h.numpy() for h in tg.grad(inner, params)]


def power_iteration(matvec, vs, iters, shift=0.0):
    """(Rayleigh quotient, unit vector) after ``iters`` steps of v <- (H - shift I) v / |...|."""
    lam = 0.0
    for _ in range(iters):
        hv = [h - shift * v for h, v in zip(matvec(vs), vs)]
        lam = sum(float((h * v).sum()) for h, v in zip(hv, vs))
        norm = np.sqrt(sum(float((h * h).sum()) for h in hv))
        vs = [h / norm for h in hv]
    return lam + shift, vs


def unit(vs):
    norm = np.sqrt(sum(float((v * v).sum()) for v in vs))
    return [v / norm for v in vs]


def sharpness(matvec, vs, iters, rng):
    """The largest eigenvalue of H (not the largest in size) and the vector to warm-start from.

    Power iteration finds the eigenvalue of largest magnitude. Early in training that one can be
    negative; then a second run on H - lam I, whose eigenvalues are all >= 0, finds the top one."""
    lam, vs = power_iteration(matvec, vs, iters)
    if lam >= 0:
        return lam, vs
    top, _ = power_iteration(matvec, unit([rng.standard_normal(v.shape) for v in vs]), 4 * iters, shift=lam)
    return top, vs


def train(a, vocab_size, x, y, lr):
    """Gradient descent at one learning rate; returns [(step, loss, sharpness)] and the losses."""
    manual_seed(a.seed)   # the same initial weights for every learning rate
    model = GPT(GPTConfig(block_size=a.block_size, vocab_size=vocab_size, n_layer=a.n_layer,
                          n_head=a.n_head, n_embd=a.n_embd)).to(dtype=np.float64)
    params = model.parameters()
    rng = np.random.default_rng(a.seed)
    vs = unit([rng.standard_normal(p.shape) for p in params])
    measured, losses = [], []
    for step in range(a.steps + 1):
        model.zero_grad()
        loss = model(x, y)[1]
        loss.backward()
        losses.append(loss.item())
        if step % a.every == 0 or step == a.steps:
            top, vs = sharpness(lambda v: hvp(model, x, y, v), vs, a.power_iters, rng)
            measured.append((step, loss.item(), top))
            print(f"  {step:5d} {loss.item():8.4f} {top:10.3f} {top * lr / 2:8.2f}", flush=True)
        with no_grad():   # the update is not part of the graph
            for p in params:
                p -= lr * p.grad
    return measured, losses


def summarize(lr, measured, losses):
    """The second half's median sharpness against 2/lr, and how often the loss went up."""
    late = [top for step, _, top in measured if step >= measured[-1][0] / 2]
    ratio = float(np.median(late)) * lr / 2
    rises = sum(b > a for a, b in zip(losses, losses[1:]))
    verdict = ("near 2/lr" if 0.8 <= ratio <= 1.5 else "above 2/lr" if ratio > 1.5 else "below 2/lr")
    print(f"lr {lr:g}: second half median sharpness {np.median(late):.3f} = {ratio:.2f} x 2/lr ({verdict}); "
          f"sharpness from {measured[0][2]:.3f} at step 0; the loss rose on {rises} of {len(losses) - 1} "
          f"steps; loss {losses[0]:.4f} -> {losses[-1]:.4f}")


def positive_floats(text):
    try:
        values = [float(v) for v in text.split(",")]
    except ValueError:
        values = []
    if not values or any(not v > 0 for v in values):
        raise argparse.ArgumentTypeError(f"expected positive numbers separated by commas, got {text!r}")
    return values


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--data", default=None, help="a UTF-8 text file (default: tiny Shakespeare, else pydoc)")
    p.add_argument("--lrs", type=positive_floats, default=[0.1, 0.4, 1.0], help="learning rates, e.g. 0.1,0.4")
    p.add_argument("--steps", type=int, default=300, help="gradient descent steps per learning rate")
    p.add_argument("--every", type=int, default=25, help="measure the sharpness every this many steps")
    p.add_argument("--power_iters", type=int, default=10, help="power iterations per measurement")
    p.add_argument("--batch_size", type=int, default=16, help="windows in the one fixed batch")
    p.add_argument("--block_size", type=int, default=16)
    p.add_argument("--n_layer", type=int, default=1)
    p.add_argument("--n_head", type=int, default=2)
    p.add_argument("--n_embd", type=int, default=16)
    p.add_argument("--seed", type=int, default=0)
    a = p.parse_args(argv)
    for name in ("steps", "every", "power_iters", "batch_size"):
        if getattr(a, name) < 1:
            p.error(f"--{name} must be a positive integer, got {getattr(a, name)}")

    data = a.data if a.data is not None or not os.path.exists(SHAKESPEARE) else SHAKESPEARE
    try:
        text, name = load_text("pydoc", data)
        tok = CharTokenizer.from_text(text)
        x, y = Dataset(tok.encode_array(text), a.block_size).get_batch(
            "train", a.batch_size, np.random.default_rng(a.seed))      # (B, T): the one fixed batch
    except DataError as e:
        sys.exit(f"error: {e}")
    print(f"{name}: vocab {tok.vocab_size}; one fixed batch of {a.batch_size} x {a.block_size} tokens; "
          f"{a.n_layer} layer(s), width {a.n_embd}, float64; {a.steps} steps of gradient descent")
    results = {}
    for lr in a.lrs:
        print(f"\nlr {lr:g} (2/lr = {2 / lr:.3f}):\n   step     loss  sharpness  ratio to 2/lr")
        results[lr] = train(a, tok.vocab_size, x, y, lr)
    print()
    for lr, (measured, losses) in results.items():
        summarize(lr, measured, losses)


if __name__ == "__main__":
    main()
