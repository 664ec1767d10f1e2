"""Positions: attention alone ignores word order, and four ways to give it back.

1. A one-layer GPT whose position table is zero gives the same last-position logits
   for a prefix and any reordering of it (attention sums over a set); a second
   causal layer already tells them apart.
2. Two hand-built heads on "the cat sat on the mat": one sees only content and
   attends to earlier copies of the same character; one sees sinusoidal positions
   and attends to the previous character, which no content-only head can do.
3. The sinusoidal table's shift is a rotation, RoPE's scores depend only on the
   offset t - s, ALiBi's biases are a slope times the offset.
4. The learned table has block_size rows, so the model refuses a longer input.

With ``--plot=PATH`` (needs matplotlib) it draws the two heads' attention patterns.

    python examples/09_positions.py --plot=docs/images/positions.png
"""
import argparse

import numpy as np

import tinygrad_gpt.functional as F
from tinygrad_gpt import Tensor, manual_seed, no_grad
from tinygrad_gpt.model import GPT, GPTConfig

ROUNDING = 1e-7  # a few float32 steps of logits of size 0.1 to 0.3


def sinusoidal(T, d):
    """Vaswani et al.'s table: PE[t, 2i] = sin(t w_i), PE[t, 2i+1] = cos(t w_i), w_i = 10000^(-2i/d)."""
    w = 10000.0 ** (-np.arange(0, d, 2) / d)          # (d/2,)
    pe = np.zeros((T, d))
    pe[:, 0::2] = np.sin(np.arange(T)[:, None] * w)
    pe[:, 1::2] = np.cos(np.arange(T)[:, None] * w)
    return pe, w


def shift_back(w):
    """The (d, d) rotation R with R PE[t] = PE[t - 1]: each (sin, cos) pair turned by -w_i."""
    d = 2 * len(w)
    R = np.zeros((d, d))
    for i, wi in enumerate(w):
        c, s = np.cos(wi), np.sin(wi)
        # sin(a - w) = sin a cos w - cos a sin w;  cos(a - w) = cos a cos w + sin a sin w
        R[2 * i, 2 * i], R[2 * i, 2 * i + 1] = c, -s
        R[2 * i + 1, 2 * i], R[2 * i + 1, 2 * i + 1] = s, c
    return R


def causal_weights(q, k):
    """Softmax over the keys each query may see, by the library's softmax: (T, T)."""
    T = q.shape[0]
    s = q @ k.T / np.sqrt(q.shape[1])
    s = np.where(np.tril(np.ones((T, T), bool)), s, -np.inf)
    return F.softmax(Tensor(s)).data


def order_blindness(seed):
    print("1. without positions, one attention layer cannot tell the order of the prefix")
    a, b = np.array([[1, 2, 3, 4, 5]]), np.array([[3, 1, 4, 2, 5]])  # same last token, prefix reordered
    print("   last-position logits of [1 2 3 4 5] and [3 1 4 2 5], largest difference:")
    print(f"   {'':<10}{'learned positions':>18}{'position table zero':>21}")
    diffs, largest = {}, 0.0
    for n_layer in (1, 2):
        manual_seed(seed)
        model = GPT(GPTConfig(block_size=8, vocab_size=10, n_layer=n_layer, n_head=2, n_embd=16)).eval()
        with no_grad():
            with_pos = np.abs(model(a)[0].data[0, -1] - model(b)[0].data[0, -1]).max()
            model.transformer.wpe.weight.data[:] = 0
            logits = model(a)[0].data[0, -1]
            diffs[n_layer] = np.abs(logits - model(b)[0].data[0, -1]).max()
            largest = max(largest, np.abs(logits).max())
        # a difference of a few float32 steps is rounding, and its digits depend on the BLAS kernel:
        # print the bound, not the digits
        zero = "below 1e-7" if diffs[n_layer] < ROUNDING else f"{diffs[n_layer]:.2e}"
        print(f"   {n_layer} layer{'s' if n_layer > 1 else ' '}  {with_pos:>18.2e}{zero:>21}")
    print(f"   (float32 rounding: the largest logit is {largest:.2f}, where one float32 step is "
          f"{np.spacing(np.float32(largest)):.1e})")
    return diffs[1] < ROUNDING < diffs[2]


def two_heads(text, seed, beta):
    print(f"\n2. two hand-built heads on {text!r}")
    rng = np.random.default_rng(seed)
    chars = sorted(set(text))
    emb = {c: rng.standard_normal(16) / 4 for c in chars}          # content vectors, |e|^2 about 1
    content = np.array([emb[c] for c in text])                     # (T, 16)
    pe, w = sinusoidal(len(text), 16)
    R = shift_back(w)
    error = np.abs(pe[1:] @ R.T - pe[:-1]).max()  # float64 rounding, its digits vary between CPUs
    print(f"   R PE[t] = PE[t-1] for every t: largest error {'below 1e-14' if error < 1e-14 else f'{error:.1e}'}")
    # content head: q = beta e(c_t), k = e(c_s); position head: q = beta R PE[t], k = PE[s]
    a_content = causal_weights(beta * content, content)
    a_pos = causal_weights(beta * pe @ R.T, pe)
    prev = np.mean([a_pos[t].argmax() == t - 1 for t in range(1, len(text))])
    same = np.mean([text[a_content[t].argmax()] == text[t] for t in range(len(text))])
    t = text.rindex("at")
    print(f"   content-only head: the top key has the query's own character in {same:.0%} of rows")
    print(f"   position head: the top key is the previous position in {prev:.0%} of rows")
    print(f"   row of the last 'a' (position {t}), top three keys:")
    for name, A in (("content", a_content), ("position", a_pos)):
        top = np.argsort(-A[t])[:3]
        print(f"     {name:<9}" + "  ".join(f"{s}:{text[s]!r} {A[t, s]:.2f}" for s in top))
    return a_content, a_pos


def rope_and_alibi():
    print("\n3. relative positions")
    rng = np.random.default_rng(1)
    q, k = rng.standard_normal(8), rng.standard_normal(8)
    _, w = sinusoidal(1, 8)

    def rope(x, pos):  # rotate each pair (x[2i], x[2i+1]) by the angle pos * w_i
        c, s = np.cos(pos * w), np.sin(pos * w)
        out = np.empty_like(x)
        out[0::2] = x[0::2] * c - x[1::2] * s
        out[1::2] = x[0::2] * s + x[1::2] * c
        return out
    dots = [rope(q, t) @ rope(k, s) for t, s in ((5, 3), (12, 10), (40, 38))]
    print("   RoPE: q.k after rotating q to t and k to s, for (t, s) = (5, 3), (12, 10), (40, 38):")
    print("     " + "  ".join(f"{d:.4f}" for d in dots) + "   (the same: only t - s = 2 matters)")
    slopes = 2.0 ** (-8 * np.arange(1, 9) / 8)
    print("   ALiBi slopes for 8 heads: " + " ".join(f"1/{round(1 / m)}" for m in slopes))
    print("   ALiBi bias of query 5 over keys 0..5, slope 1/2: "
          + " ".join(f"{-0.5 * (5 - s) + 0.0:.1f}" for s in range(6)))
    return np.allclose(dots, dots[0])


def block_size_limit():
    print("\n4. the learned table has block_size rows")
    model = GPT(GPTConfig(block_size=8, vocab_size=10, n_layer=1, n_head=2, n_embd=16))
    print(f"   wpe.weight has shape {model.transformer.wpe.weight.shape}")
    try:
        model(np.zeros((1, 9), dtype=np.int64))
    except ValueError as e:
        print(f"   9 tokens: ValueError: {e}")


def plot(path, text, a_content, a_pos):
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        print('\n(no picture: install matplotlib with pip install "tinygrad_gpt[plot]")')
        return
    fig, axes = plt.subplots(1, 2, figsize=(10, 4.8))
    labels = [c if c != " " else "_" for c in text]
    for ax, A, title in ((axes[0], a_content, "content only (no positions)"),
                         (axes[1], a_pos, "sinusoidal positions: previous token")):
        ax.imshow(A, cmap="viridis", vmin=0, vmax=1)
        ax.set_title(title)
        ax.set_xticks(range(len(text)), labels, fontsize=7)
        ax.set_yticks(range(len(text)), labels, fontsize=7)
        ax.set_xlabel("key")
    axes[0].set_ylabel("query")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    print(f"\nwrote {path}")


def main(argv=None):
    p = argparse.ArgumentParser(description="Why attention needs positions, and how they are given.")
    p.add_argument("--text", default="the cat sat on the mat")
    p.add_argument("--beta", type=float, default=12.0, help="how sharply the hand-built heads attend")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--plot", default=None, help="a PNG for the two heads' attention patterns")
    a = p.parse_args(argv)
    ok = order_blindness(a.seed)
    a_content, a_pos = two_heads(a.text, a.seed, a.beta)
    ok &= rope_and_alibi()
    block_size_limit()
    if a.plot:
        plot(a.plot, a.text, a_content, a_pos)
    print("\nall checks hold" if ok else "\nMISMATCH")
    return 0 if ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
