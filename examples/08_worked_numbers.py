"""Worked numbers: softmax, cross-entropy, layer norm and attention on inputs small enough to follow.

Every number is computed twice where the engine can compute it: with NumPy and
the formula written out, and with the library's own ops (``F.cross_entropy``,
``F.layer_norm``, ``F.scaled_dot_product_attention``) and ``backward``. The last
two sections show the lower-triangular averaging trick and why attention scores
are divided by sqrt(d_k). With ``--plots=DIR`` (needs matplotlib) it also draws
``DIR/causal_average.png`` and ``DIR/sqrt_dk.png``.

    python examples/08_worked_numbers.py
    python examples/08_worked_numbers.py --plots=docs/images
"""
import argparse
import os

import numpy as np

import tinygrad_gpt.functional as F
from tinygrad_gpt import Tensor


def t64(a, grad=False):
    return Tensor(np.asarray(a, dtype=np.float64), requires_grad=grad)


def fmt(v, digits=4):
    return "[" + ", ".join(f"{x:.{digits}f}" for x in np.ravel(v)) + "]"


def softmax_and_cross_entropy(z, target):
    print("1. softmax and cross-entropy on three logits")
    e = np.exp(z)
    p = e / e.sum()
    lse = np.log(e.sum())
    print(f"   logits z           {fmt(z)}")
    print(f"   exp(z)             {fmt(e)}   sum {e.sum():.4f}")
    print(f"   p = softmax(z)     {fmt(p)}")
    print(f"   log-sum-exp        {lse:.4f}")
    print(f"   loss = -log p[{target}]    {-np.log(p[target]):.4f}  (= lse - z[{target}] = {lse - z[target]:.4f})")
    zt = t64([z], grad=True)
    loss = F.cross_entropy(zt, np.array([target]))
    loss.backward()
    onehot = np.eye(len(z))[target]
    print(f"   p - onehot         {fmt(p - onehot)}   sums to {abs((p - onehot).sum()):.4f}")
    print(f"   engine: loss {loss.item():.4f}, dloss/dz {fmt(zt.grad[0])}")
    print(f"   uniform guess: ln 3 = {np.log(3):.4f}")
    return np.allclose(loss.item(), -np.log(p[target])) and np.allclose(zt.grad[0], p - onehot)


def layer_norm(x, g):
    print("\n2. layer norm on a 4-vector (weight 1, bias 0, eps 1e-5)")
    mu = x.mean()
    var = ((x - mu) ** 2).mean()
    r = 1 / np.sqrt(var + 1e-5)
    xhat = (x - mu) * r
    print(f"   x                  {fmt(x)}")
    print(f"   mean {mu:.4f}   variance {var:.4f}   r = 1/sqrt(var + eps) {r:.4f}")
    print(f"   xhat = (x - mean) r {fmt(xhat)}")
    print(f"   mean(xhat) {abs(xhat.mean()):.4f}   mean(xhat^2) {np.mean(xhat ** 2):.4f}")
    h = g  # weight 1, so h = g * w = g
    gx = r * (h - h.mean() - xhat * np.mean(h * xhat))
    xt, w, b = t64(x, grad=True), t64(np.ones(4)), t64(np.zeros(4))
    F.layer_norm(xt, w, b).backward(g)
    print(f"   incoming gradient g {fmt(g)}")
    print(f"   r (h - mean h - xhat mean(h xhat)) {fmt(gx)}")
    print(f"   engine's dx        {fmt(xt.grad)}")
    print(f"   sum(dx) {abs(xt.grad.sum()):.4f}   sum(dx * xhat) {abs((xt.grad * xhat).sum()):.4f}")
    return np.allclose(xt.grad, gx)


def attention_three_tokens(q, k, v):
    print("\n3. causal attention over three tokens (one head, d_k = 2)")
    d_k = q.shape[1]
    s = q @ k.T / np.sqrt(d_k)
    for name, m in (("Q", q), ("K", k), ("V", v)):
        print(f"   {name} rows            " + "  ".join(fmt(row, 1) for row in m))
    print("   scores Q K^T / sqrt(2), before the mask:")
    for row in s:
        print("     " + fmt(row))
    masked = np.where(np.tril(np.ones((3, 3), bool)), s, -np.inf)
    a = np.exp(masked - masked.max(axis=1, keepdims=True))
    a /= a.sum(axis=1, keepdims=True)
    print("   weights A = softmax(masked scores), row by row:")
    for row in a:
        print("     " + fmt(row))
    out = a @ v
    print("   output A V, row by row:")
    for row in out:
        print("     " + fmt(row))
    y = F.scaled_dot_product_attention(t64(q[None, None]), t64(k[None, None]), t64(v[None, None]))
    print(f"   engine's output    " + "  ".join(fmt(row) for row in y.data[0, 0]))
    return np.allclose(y.data[0, 0], out)


def causal_average(x):
    print("\n4. the lower-triangular averaging trick (T = 4)")
    T = len(x)
    tril = np.tril(np.ones((T, T)))
    w = tril / tril.sum(axis=1, keepdims=True)
    print("   W = tril(ones) with each row divided by its sum:")
    for row in w:
        print("     " + fmt(row))
    print(f"   x                  {fmt(x)}")
    print(f"   W x                {fmt(w @ x)}   (the running mean of x)")
    zeros = np.zeros((T, T))
    soft = F.softmax(Tensor(np.where(tril > 0, zeros, -np.inf))).data
    print(f"   softmax of 0 below the diagonal and -inf above equals W: {np.allclose(soft, w)}")
    return w, np.allclose(soft, w)


def sqrt_dk(seed, samples=20000, keys=8):
    print("\n5. why the scores are divided by sqrt(d_k)")
    rng = np.random.default_rng(seed)
    print(f"   q, k with independent N(0, 1) entries; {samples} pairs; softmax over {keys} keys")
    print(f"   {'d_k':>5} {'var(q.k)':>10} {'var(q.k/sqrt d_k)':>18} "
          f"{'max weight, unscaled':>21} {'max weight, scaled':>19}")
    rows = {}
    for d in (4, 16, 64, 256):
        q = rng.standard_normal((samples, d))
        k = rng.standard_normal((samples, keys, d))
        dots = np.einsum("nd,nkd->nk", q, k)
        scaled = dots / np.sqrt(d)

        def top(s):
            e = np.exp(s - s.max(axis=1, keepdims=True))
            return (e.max(axis=1) / e.sum(axis=1)).mean()
        rows[d] = (dots, scaled)
        print(f"   {d:>5} {dots.var():>10.2f} {scaled.var():>18.2f} {top(dots):>21.3f} {top(scaled):>19.3f}")
    print(f"   a uniform row over {keys} keys has max weight {1 / keys:.3f}; a one-hot row has 1.000")
    return rows


def plots(folder, w, rows):
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        print('\n(no pictures: install matplotlib with pip install "tinygrad_gpt[plot]")')
        return
    os.makedirs(folder, exist_ok=True)
    fig, ax = plt.subplots(figsize=(3.6, 3.2))
    im = ax.imshow(w, cmap="viridis", vmin=0, vmax=1)
    for i in range(w.shape[0]):
        for j in range(w.shape[1]):
            ax.text(j, i, f"{w[i, j]:.2f}", ha="center", va="center", color="w" if w[i, j] < 0.6 else "k")
    ax.set_xlabel("key position s")
    ax.set_ylabel("query position t")
    ax.set_title("causal averaging weights")
    fig.colorbar(im, ax=ax, fraction=0.046)
    fig.tight_layout()
    fig.savefig(os.path.join(folder, "causal_average.png"), dpi=110)
    plt.close(fig)

    dots, scaled = rows[64]
    fig, axes = plt.subplots(1, 2, figsize=(8, 3), sharey=True)
    for ax, s, title in ((axes[0], dots[0], "d_k = 64, scores q.k"),
                         (axes[1], scaled[0], "d_k = 64, scores q.k / 8")):
        e = np.exp(s - s.max())
        ax.bar(range(len(s)), e / e.sum(), color="tab:blue")
        ax.set_title(title)
        ax.set_xlabel("key")
    axes[0].set_ylabel("softmax weight")
    fig.tight_layout()
    fig.savefig(os.path.join(folder, "sqrt_dk.png"), dpi=110)
    plt.close(fig)
    print(f"\nwrote {os.path.join(folder, 'causal_average.png')} and {os.path.join(folder, 'sqrt_dk.png')}")


def main(argv=None):
    p = argparse.ArgumentParser(description="Worked numbers for softmax, layer norm and attention.")
    p.add_argument("--seed", type=int, default=0, help="seed of the sqrt(d_k) experiment")
    p.add_argument("--samples", type=int, default=20000, help="random (q, k) pairs per d_k")
    p.add_argument("--plots", default=None, help="a folder for causal_average.png and sqrt_dk.png")
    a = p.parse_args(argv)
    ok = softmax_and_cross_entropy(np.array([2.0, 1.0, 0.1]), target=0)
    ok &= layer_norm(np.array([1.0, 2.0, 3.0, 6.0]), np.array([1.0, 0.0, 0.0, 0.0]))
    ok &= attention_three_tokens(np.array([[1.0, 0.0], [0.0, 1.0], [1.0, 1.0]]),
                                 np.array([[1.0, 0.0], [1.0, 1.0], [0.0, 2.0]]),
                                 np.array([[1.0, 0.0], [0.0, 1.0], [2.0, 2.0]]))
    w, same = causal_average(np.array([4.0, 2.0, 6.0, 0.0]))
    ok &= same
    rows = sqrt_dk(a.seed, a.samples)
    if a.plots:
        plots(a.plots, w, rows)
    print("\nthe engine agrees with every formula" if ok else "\nMISMATCH between the engine and a formula")
    return 0 if ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
