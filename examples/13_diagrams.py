"""The diagrams of the docs, drawn from the code's own numbers, and the numbers that go with them.

1. Page 1: how position 0 reaches position 7 in a recurrence, a convolution and attention
   (the attention edges are the library's causal mask), and what attention's comparisons
   cost next to the weights in GPT-2 small.
2. Page 1a: a timeline of the transformer era.
3. Page 8: one head's pipeline, Q K^T -> scale -> mask -> softmax -> A V, on five tokens,
   checked against ``F.scaled_dot_product_attention``.
4. Page 9: the residual stream of a two-block GPT, and the gradient norm along the stream of
   an untrained four-block GPT, measured by ``backward``.
5. Page 9a: the whole model with every parameter shape read off ``parameter_shapes``; the
   GPT-2 family counted the same way; training compute, 6 N D FLOPs, against Chinchilla's rule.
6. Page 12a: the KV cache, and its memory against the context for multi-head, grouped-query
   and multi-query attention, next to the constant state of a recurrent network.

Every number is printed; with ``--plots=DIR`` (needs matplotlib) the pictures are drawn too.

    python examples/13_diagrams.py
    python examples/13_diagrams.py --plots=docs/images
    python examples/13_diagrams.py --data=path/to/tinyshakespeare.txt   # and the recipes' passes over it
"""
import argparse
import math
import os

import numpy as np

import tinygrad_gpt.functional as F
from tinygrad_gpt import Tensor, manual_seed
from tinygrad_gpt.text.data import Dataset, load_text
from tinygrad_gpt.model import GPT, GPTConfig, parameter_shapes
from tinygrad_gpt.rules import causal_mask
from tinygrad_gpt.tokenizer import CharTokenizer

# GPT-2's four sizes (Radford et al., 2019, Table 2): layers, width, heads, and the parameter
# count printed in the paper
GPT2 = {"small": (12, 768, 12, 117), "medium": (24, 1024, 16, 345),
        "large": (36, 1280, 20, 762), "XL": (48, 1600, 25, 1542)}
GPT2_VOCAB, GPT1_VOCAB, GPT2_CONTEXT = 50257, 40478, 1024
# the shipped recipes (tinygrad_gpt/recipes/*.toml), which tests/test_examples.py holds these to
RECIPES = {
    "shakespeare_char_cpu": {"block_size": 64, "n_layer": 4, "n_head": 4, "n_embd": 128,
                             "batch_size": 12, "max_iters": 2000},
    "shakespeare_char_gpu": {"block_size": 256, "n_layer": 6, "n_head": 6, "n_embd": 384,
                             "batch_size": 64, "max_iters": 5000},
}
SHAKESPEARE_VOCAB = 65


def millions(n):
    return f"{n / 1e6:.1f}M"


def count(config):
    """Parameters of GPT(config), from the shapes of its placeholder model (no weights made)."""
    return sum(math.prod(shape) for shape in parameter_shapes(config).values())


# ----------------------------------------------------------------------------- page 1

def connectivity(T=8, k=3):
    print("page 1: how far apart are positions 0 and T-1?")
    mask = causal_mask(np, T, T, np.dtype(np.float32))                 # 0 where query t may see key s
    edges = [(s, t) for t in range(T) for s in range(T) if mask[t, s] == 0]
    conv_layers = math.ceil((T - 1) / (k - 1))
    print(f"   T = {T}: recurrence {T - 1} steps, convolution of width {k} {conv_layers} layers, "
          f"attention 1 step ({len(edges)} edges in one causal layer, T(T+1)/2 = {T * (T + 1) // 2})")
    layers, C, heads, _ = GPT2["small"]
    model = GPT(GPTConfig(GPT2_CONTEXT, GPT2_VOCAB, layers, heads, C), init=False)
    weights, attention = 6 * model.num_parameters(), 12 * layers * C * GPT2_CONTEXT
    assert weights + attention == model.flops_per_token()
    print(f"   GPT-2 small, training FLOPs per token: attention's comparisons 12 n_layer C T = {attention:,}, "
          f"the weights 6N = {weights:,}")
    print(f"     attention over the blocks' weights alone, T/(6C) = {GPT2_CONTEXT}/{6 * C} = "
          f"{GPT2_CONTEXT / (6 * C):.3f}; over all weights (the tied head included) {attention / weights:.3f}")
    return edges, conv_layers


def draw_connectivity(plt, path, edges, conv_layers, T=8, k=3):
    fig, axes = plt.subplots(1, 3, figsize=(13, 4.2))
    hot, cold = "tab:red", "0.8"

    def nodes(ax, y, label, color="tab:blue"):
        ax.scatter(range(T), [y] * T, s=90, color=color, zorder=3)
        ax.text(-0.9, y, label, ha="right", va="center", fontsize=9)

    # recurrence: x_t -> h_t, h_{t-1} -> h_t
    ax = axes[0]
    nodes(ax, 0, "x")
    nodes(ax, 1, "h", "tab:green")
    for t in range(T):
        ax.annotate("", (t, 0.93), (t, 0.07), arrowprops=dict(arrowstyle="->", color=hot if t == 0 else cold))
        if t:
            ax.annotate("", (t - 0.1, 1), (t - 0.9, 1), arrowprops=dict(arrowstyle="->", color=hot, lw=1.5))
    ax.set_title(f"recurrence: {T - 1} steps from x$_0$ to h$_{T - 1}$")
    ax.set_ylim(-0.6, 1.6)

    # a causal convolution of width k, stacked until position 0 reaches position T-1
    ax = axes[1]
    reach = {(conv_layers, T - 1)}            # nodes that feed the top right one
    for layer in range(conv_layers, 0, -1):
        reach |= {(layer - 1, t - j) for (l, t) in reach if l == layer for j in range(k) if t - j >= 0}
    for layer in range(conv_layers + 1):
        nodes(ax, layer, "x" if layer == 0 else f"layer {layer}", "tab:blue" if layer == 0 else "tab:green")
        if layer == 0:
            continue
        for t in range(T):
            for j in range(k):
                if t - j >= 0:
                    on = (layer, t) in reach and (layer - 1, t - j) in reach
                    ax.plot([t - j, t], [layer - 1, layer], color=hot if on else cold, lw=1.3 if on else 0.7,
                            zorder=2 if on else 1)
    ax.set_title(f"convolution, width {k}: {conv_layers} layers from x$_0$ to position {T - 1}")
    ax.set_ylim(-0.6, conv_layers + 0.6)

    # attention: one layer, the edges of the causal mask
    ax = axes[2]
    nodes(ax, 0, "x")
    nodes(ax, 1, "out", "tab:green")
    for s, t in edges:
        on = t == T - 1
        ax.plot([s, t], [0, 1], color=hot if on else cold, lw=1.3 if on else 0.7, zorder=2 if on else 1)
    ax.set_title(f"attention: 1 step from every x$_s$, s $\\leq$ t")
    ax.set_ylim(-0.6, 1.6)
    for ax in axes:
        ax.set_xlim(-2.2, T - 0.5)
        ax.set_xticks(range(T))
        ax.set_xlabel("position")
        ax.set_yticks([])
        for side in ("left", "right", "top"):
            ax.spines[side].set_visible(False)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


# ----------------------------------------------------------------------------- page 1a

TIMELINE = [  # (year, what, kind)
    (2013.0, "Graves: soft attention windows\n(handwriting)", "attention"),
    (2014.7, "seq2seq translation\n(Sutskever et al.)", "recurrent"),
    (2014.68, "Bahdanau et al.: content-based\nattention for translation", "attention"),
    (2017.45, "Attention Is All You Need", "attention"),
    (2018.45, "GPT", "language"),
    (2018.8, "BERT", "language"),
    (2019.1, "GPT-2", "language"),
    (2020.05, "scaling laws (Kaplan et al.)", "language"),
    (2020.4, "GPT-3: in-context learning", "language"),
    (2020.8, "ViT: images as patches", "other"),
    (2021.05, "Switch Transformer\n(mixture of experts)", "efficiency"),
    (2021.3, "RoPE", "efficiency"),
    (2021.55, "AlphaFold 2", "other"),
    (2021.63, "foundation models", "language"),
    (2022.2, "InstructGPT (RLHF)", "language"),
    (2022.25, "Chinchilla", "language"),
    (2022.4, "FlashAttention", "efficiency"),
    (2022.72, "Whisper (speech)", "other"),
    (2022.91, "ChatGPT", "language"),
    (2023.15, "LLaMA", "language"),
    (2023.4, "grouped-query attention", "efficiency"),
    (2023.95, "Mixtral (mixture of experts)", "efficiency"),
]
KIND_COLOR = {"recurrent": "tab:gray", "attention": "tab:red", "language": "tab:blue",
              "other": "tab:green", "efficiency": "tab:purple"}


def timeline():
    print("\npage 1a: a timeline")
    years = [int(y) for y, _, _ in TIMELINE]
    print(f"   {len(TIMELINE)} events from {min(years)} to {max(years)}")


def draw_timeline(plt, path):
    fig, ax = plt.subplots(figsize=(13, 5.2))
    ax.axhline(0, color="k", lw=1)
    levels = [1.0, -1.0, 2.0, -2.0, 3.0, -3.0]
    for i, (year, what, kind) in enumerate(TIMELINE):
        y = levels[i % len(levels)]
        color = KIND_COLOR[kind]
        ax.plot([year, year], [0, y], color=color, lw=0.8)
        ax.scatter([year], [0], color=color, zorder=3)
        ax.text(year, y + (0.12 if y > 0 else -0.12), what, ha="center", va="bottom" if y > 0 else "top",
                fontsize=7.5, color=color)
    for kind, color in KIND_COLOR.items():
        ax.scatter([], [], color=color, label=kind)
    ax.legend(loc="upper left", fontsize=8, frameon=False)
    ax.set_xlim(2012.3, 2024.7)
    ax.set_ylim(-4.2, 4.2)
    ax.set_xticks(range(2013, 2025))
    ax.set_yticks([])
    for side in ("left", "right", "top"):
        ax.spines[side].set_visible(False)
    ax.set_title("the transformer era")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


# ----------------------------------------------------------------------------- page 8

def attention_pipeline(T=5, hs=3, seed=0):
    print(f"\npage 8: one head's attention, step by step (T = {T}, d_k = {hs})")
    rng = np.random.default_rng(seed)
    q, k, v = (rng.standard_normal((T, hs)) for _ in range(3))
    S = q @ k.T / math.sqrt(hs)                               # (T, T)
    M = causal_mask(np, T, T, np.dtype(np.float64))                     # (T, T): 0 or -inf
    A = F.softmax(Tensor(S + M)).data                         # (T, T), rows sum to 1
    O = A @ v                                                 # (T, d_k)
    engine = F.scaled_dot_product_attention(Tensor(q[None]), Tensor(k[None]), Tensor(v[None])).data[0]
    print(f"   Q, K, V {q.shape}; S = Q K^T / sqrt(d_k) {S.shape}; S + M {M.shape}; "
          f"A = softmax(S + M) {A.shape}; O = A V {O.shape}")
    print(f"   rows of A sum to 1: {np.allclose(A.sum(axis=1), 1)}; "
          f"weight above the diagonal: {A[np.triu_indices(T, 1)].max():.1f}")
    error = np.abs(O - engine).max()
    print(f"   O equals F.scaled_dot_product_attention: largest difference "
          f"{'below 1e-12' if error < 1e-12 else f'{error:.1e}'} (float64)")
    return q, k, v, S, M, A, O, error < 1e-12


def draw_pipeline(plt, path, q, k, v, S, M, A, O):
    T, hs = q.shape
    panels = [(q, "Q", f"(T, d$_k$) = {q.shape}"), (k.T, "K$^\\top$", f"(d$_k$, T) = {k.T.shape}"),
              (S, "S = Q K$^\\top$ / $\\sqrt{d_k}$", f"(T, T) = {S.shape}"),
              (S + M, "S + M: mask the future", "$-\\infty$ above the diagonal"),
              (A, "A = softmax(S + M)", "each row sums to 1"),
              (v, "V", f"(T, d$_k$) = {v.shape}"), (O, "O = A V", f"(T, d$_k$) = {O.shape}")]
    widths = [p[0].shape[1] for p in panels]
    fig, axes = plt.subplots(1, len(panels), figsize=(15, 3.0), gridspec_kw={"width_ratios": widths})
    for ax, (m, title, shape) in zip(axes, panels):
        shown = np.where(np.isfinite(m), m, np.nan)
        cmap = plt.get_cmap("viridis" if m is A else "coolwarm").copy()
        cmap.set_bad("0.85")
        lim = np.nanmax(np.abs(shown))
        ax.imshow(shown, cmap=cmap, vmin=0 if m is A else -lim, vmax=1 if m is A else lim)
        for i in range(m.shape[0]):
            for j in range(m.shape[1]):
                dark = m is A and m[i, j] < 0.5
                ax.text(j, i, "$-\\infty$" if np.isneginf(m[i, j]) else f"{m[i, j]:.2f}",
                        ha="center", va="center", fontsize=7, color="w" if dark else "k")
        ax.set_title(title, fontsize=10)
        ax.set_xlabel(shape, fontsize=8)
        ax.set_xticks([])
        ax.set_yticks([])
    for ax, sign in zip(axes[:-1], ["·", "→", "→", "→", "·", "="]):
        if sign:
            ax.annotate(sign, (1.0, 0.5), xycoords="axes fraction", xytext=(4, 0), textcoords="offset points",
                        fontsize=16, va="center")
    fig.tight_layout(w_pad=2.2)
    fig.savefig(path, dpi=100)
    plt.close(fig)


def online_softmax(scores, values, block=2):
    """One query's softmax-weighted average of ``values``, with the keys taken ``block`` at a time:
    a running max m, sum z and unnormalised output o, rescaled by exp(m - m') at each block."""
    m, z, o = -np.inf, 0.0, np.zeros(values.shape[1])
    for j in range(0, len(scores), block):
        s, v = scores[j:j + block], values[j:j + block]
        m_new = max(m, s.max())
        z = np.exp(m - m_new) * z + np.exp(s - m_new).sum()
        o = np.exp(m - m_new) * o + np.exp(s - m_new) @ v
        m = m_new
    return o / z, m + np.log(z)


def check_online_softmax(S, M, A, v):
    T = S.shape[0]
    worst = 0.0
    for t in range(T):
        seen = np.isfinite(M[t])                                  # the keys query t may see
        out, lse = online_softmax(S[t, seen], v[seen])
        worst = max(worst, np.abs(out - A[t] @ v).max(), abs(lse - np.log(np.exp(S[t, seen]).sum())))
    print(f"   the online softmax over blocks of 2 keys gives every row of O and its log-sum-exp: largest "
          f"difference {'below 1e-12' if worst < 1e-12 else f'{worst:.1e}'} (float64)")
    return worst < 1e-12


def scale_at_init(seed=0, B=8, T=64, V=65):
    print("\npage 8a: queries, keys and scores of an untrained GPT's first block (N(0, 0.02^2) weights)")
    print(f"   {'C':>5}{'heads':>6}{'hs':>4}{'var(q)':>9}{'C 0.02^2':>10}{'var(q.k/sqrt hs)':>18}"
          f"{'largest weight of the last row':>32}{'1/T':>8}")
    for C, nh in ((128, 4), (768, 12)):
        manual_seed(seed)
        model = GPT(GPTConfig(block_size=T, vocab_size=V, n_layer=1, n_head=nh, n_embd=C))
        idx = np.random.default_rng(seed).integers(0, V, (B, T))
        tr, block = model.transformer, model.transformer.h[0]
        qkv = block.attn.c_attn(block.ln_1(tr.wte.weight[idx] + tr.wpe.weight[0:T])).data   # (B, T, 3C)
        hs = C // nh
        q, k = (qkv[..., i * C:(i + 1) * C].reshape(B, T, nh, hs).transpose(0, 2, 1, 3) for i in (0, 1))
        s = q @ k.transpose(0, 1, 3, 2) / math.sqrt(hs)                                      # (B, nh, T, T)
        last = F.softmax(Tensor(s[:, :, -1, :])).data                                        # the last query sees every key
        print(f"   {C:>5}{nh:>6}{hs:>4}{q.var():>9.4f}{C * 0.02 ** 2:>10.4f}{s.var():>18.4f}"
              f"{last.max(axis=-1).mean():>32.4f}{1 / T:>8.4f}")


# ----------------------------------------------------------------------------- page 9

def residual_stream(seed=0, B=4, T=32, V=65):
    config = GPTConfig(block_size=T, vocab_size=V, n_layer=4, n_head=4, n_embd=128)
    print(f"\npage 9: the gradient along the residual stream of an untrained GPT "
          f"({config.n_layer} blocks, C = {config.n_embd})")
    manual_seed(seed)
    model = GPT(config)
    rng = np.random.default_rng(seed)
    idx, targets = rng.integers(0, V, (B, T)), rng.integers(0, V, (B, T))
    tr = model.transformer
    x = tr.wte.weight[idx] + tr.wpe.weight[0:T]               # (B, T, C): the stream starts
    stream = [x]
    for block in tr.h:                                        # Block.forward, one sublayer at a time
        x = x + block.attn(block.ln_1(x))
        stream.append(x)
        x = x + block.mlp(block.ln_2(x))
        stream.append(x)
    loss = F.cross_entropy(tr.ln_f(x) @ tr.wte.weight.T, targets)
    loss.backward(retain_graph=True)                          # keeps .grad on the stream's tensors
    norms = np.array([np.linalg.norm(s.grad) for s in stream])
    branches = np.array([np.linalg.norm(a.grad - b.grad) for a, b in zip(stream[:-1], stream[1:])])
    top = norms[-1]
    print("   |gradient| at each point of the stream, over its value at the top, bottom to top:")
    print("     " + " ".join(f"{n / top:.2f}" for n in norms))
    print("   |what each sublayer's branch adds| over the same, bottom to top:")
    print("     " + " ".join(f"{b / top:.2f}" for b in branches))
    return norms / top, branches / top


def draw_residual(plt, path, norms, branches):
    fig, (ax, bx) = plt.subplots(1, 2, figsize=(12, 6.2), gridspec_kw={"width_ratios": [1.1, 1]})
    # the schematic: the stream goes up; each sublayer reads a layer-normed copy and adds back
    steps = ["attention", "MLP", "attention", "MLP"]
    ax.annotate("", (0, len(steps) + 1.3), (0, -0.3), arrowprops=dict(arrowstyle="->", lw=3, color="tab:blue"))
    ax.text(0, -0.55, "tok + pos  (B, T, C)", ha="center", va="top", fontsize=9)
    ax.text(0, len(steps) + 1.45, "ln_f, then x W$_{te}^\\top$: logits (B, T, V)", ha="center", fontsize=9)
    for i, name in enumerate(steps):
        y = i + 0.8
        ax.add_patch(plt.Rectangle((0.9, y - 0.25), 1.6, 0.5, color="tab:green", alpha=0.25))
        ax.text(1.7, y, f"LN → {name}\n(block {i // 2})", ha="center", va="center", fontsize=8.5)
        ax.annotate("", (0.9, y), (0.05, y - 0.45), arrowprops=dict(arrowstyle="->", color="0.3"))
        ax.annotate("", (0.08, y + 0.45), (1.7, y + 0.25), arrowprops=dict(arrowstyle="->", color="0.3"))
        ax.text(0, y + 0.45, "+", ha="center", va="center", fontsize=13, color="tab:red",
                bbox=dict(boxstyle="circle", fc="w", ec="tab:red"))
    ax.text(-0.15, 2.5, "the residual stream:\nx ← x + F(LN(x))", ha="right", va="center", fontsize=9)
    ax.set_xlim(-1.6, 2.8)
    ax.set_ylim(-1.0, len(steps) + 1.8)
    ax.axis("off")
    ax.set_title("two blocks, four sublayers")
    # the measurement: the gradient passes down the identity path almost unchanged
    n = len(norms)
    bx.barh(range(n), norms, color="tab:blue", label="|gradient of the stream| here")
    bx.barh(np.arange(n - 1) + 0.5, branches, height=0.35, color="tab:green",
            label="|what the sublayer above adds to it|")
    bx.set_yticks(range(n), ["tok + pos"] + [f"after {'attn' if i % 2 == 0 else 'MLP'} {i // 2}" for i in range(n - 1)])
    bx.axvline(1.0, color="k", lw=0.5, ls=":")
    bx.set_xlabel("norm, relative to the top")
    bx.set_title(f"an untrained GPT, {(n - 1) // 2} blocks: measured by backward")
    bx.legend(fontsize=8, loc="upper center", bbox_to_anchor=(0.5, -0.1), ncol=2)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


# ----------------------------------------------------------------------------- page 9a

def architecture():
    config = GPTConfig(GPT2_CONTEXT, GPT2_VOCAB, *GPT2["small"][:1], GPT2["small"][2], GPT2["small"][1])
    shapes = parameter_shapes(config)
    print("\npage 9a: GPT-2 small's parameters, read off parameter_shapes")
    groups = {}
    for name, shape in shapes.items():
        key = name.split(".", 3)[-1] if ".h." in name else name
        groups.setdefault(key, []).append(shape)
    for key, group in groups.items():
        each = math.prod(group[0])
        print(f"   {key:<32}{str(group[0]):>14} x {len(group):>2} = {each * len(group):>12,}")
    total = count(config)
    print(f"   total{'':>51}{total:>12,}")
    print("   the GPT-2 family, counted from the model (the formula agrees), against the paper's printed"
          " counts and the formula with GPT-1's vocabulary")
    print(f"     {'size':<8}{'layers':>7}{'C':>6}{'parameters':>16}{'(in millions)':>15}{'paper':>8}"
          f"{'V = ' + str(GPT1_VOCAB):>13}")
    ladder = {}
    for size, (layers, C, heads, printed) in GPT2.items():
        n = count(GPTConfig(GPT2_CONTEXT, GPT2_VOCAB, layers, heads, C))
        formula = GPT2_VOCAB * C + GPT2_CONTEXT * C + layers * (12 * C * C + 13 * C) + 2 * C
        old = GPT1_VOCAB * C + GPT2_CONTEXT * C + layers * (12 * C * C + 13 * C) + 2 * C
        assert n == formula, (size, n, formula)
        ladder[size] = (n, printed)
        print(f"     {size:<8}{layers:>7}{C:>6}{n:>16,}{millions(n):>15}{str(printed) + 'M':>8}{millions(old):>13}")
    return shapes, ladder


def compute(data=None):
    print("\npage 9a: training compute, 6 N D FLOPs (the weights only), and Chinchilla's 20 tokens per parameter")
    train = None
    if data:  # the text the recipes train on: how many passes over its train split they make
        text, name = load_text(data=data)
        train = len(Dataset(CharTokenizer.from_text(text).encode_array(text), 8).train)
        print(f"   {name}: {len(text):,} characters, {train:,} in the train split")
    for name, r in RECIPES.items():
        config = GPTConfig(r["block_size"], SHAKESPEARE_VOCAB, r["n_layer"], r["n_head"], r["n_embd"])
        model = GPT(config, init=False)
        N = model.num_parameters()
        D = r["max_iters"] * r["batch_size"] * r["block_size"]
        print(f"   {name}: N = {N:,} (without wpe), D = {r['max_iters']} steps x {r['batch_size']} x "
              f"{r['block_size']} = {D:,} tokens")
        print(f"     6 N D = {6 * N * D:.2e} FLOPs; with attention, flops_per_token x D = "
              f"{model.flops_per_token() * D:.2e}")
        print(f"     {D / N:.2f} tokens per parameter; 20 per parameter would be {20 * N:,} tokens")
        if train:
            print(f"     passes over the train split: {D / train:.0f}; at 20 tokens per parameter {20 * N / train:.0f}")
    for name, n, d in (("Gopher", 280e9, 300e9), ("Chinchilla", 70e9, 1.4e12)):
        print(f"   {name}: N = {n:.3g}, D = {d:.3g} tokens, {d / n:.1f} tokens per parameter, 6 N D = {6 * n * d:.2e}")


def draw_architecture(plt, path, shapes, ladder):
    fig, (ax, bx) = plt.subplots(1, 2, figsize=(13, 7.6), gridspec_kw={"width_ratios": [1.35, 1]})
    C, V, T = shapes["transformer.wte.weight"][1], shapes["transformer.wte.weight"][0], shapes["transformer.wpe.weight"][0]
    layers = len({n.split(".")[2] for n in shapes if ".h." in n})
    h = "transformer.h.0."
    rows = [  # (y, label, activation shape, parameters, colour)
        (0.0, "token ids", "(B, T)", "", "0.9"),
        (1.0, "wte[idx] + wpe[0:T]", "(B, T, C)", f"wte {shapes['transformer.wte.weight']}, wpe {shapes['transformer.wpe.weight']}", "#cfe2f3"),
        (2.1, "ln_1", "(B, T, C)", f"{shapes[h + 'ln_1.weight']} x 2", "#d9ead3"),
        (2.8, "c_attn: q, k, v", "(B, T, 3C) → (B, nh, T, hs)", f"{shapes[h + 'attn.c_attn.weight']} + {shapes[h + 'attn.c_attn.bias']}", "#d9ead3"),
        (3.5, "softmax(q k$^\\top$/√hs + M) v", "(B, nh, T, T) → (B, T, C)", "no parameters", "#d9ead3"),
        (4.2, "c_proj, then x + ·", "(B, T, C)", f"{shapes[h + 'attn.c_proj.weight']} + {shapes[h + 'attn.c_proj.bias']}", "#d9ead3"),
        (4.9, "ln_2", "(B, T, C)", f"{shapes[h + 'ln_2.weight']} x 2", "#fff2cc"),
        (5.6, "c_fc + GELU", "(B, T, 4C)", f"{shapes[h + 'mlp.c_fc.weight']} + {shapes[h + 'mlp.c_fc.bias']}", "#fff2cc"),
        (6.3, "c_proj, then x + ·", "(B, T, C)", f"{shapes[h + 'mlp.c_proj.weight']} + {shapes[h + 'mlp.c_proj.bias']}", "#fff2cc"),
        (7.4, "ln_f", "(B, T, C)", f"{shapes['transformer.ln_f.weight']} x 2", "#cfe2f3"),
        (8.1, "x wte$^\\top$ (tied head)", "(B, T, V)", "wte again: no new parameters", "#cfe2f3"),
        (9.0, "cross-entropy with the next token", "a number", "", "0.9"),
    ]
    for y, label, act, params, color in rows:
        ax.add_patch(plt.Rectangle((0, y - 0.28), 3.2, 0.56, color=color))
        ax.text(1.6, y, label, ha="center", va="center", fontsize=9)
        ax.text(3.35, y, act, ha="left", va="center", fontsize=8, color="0.25")
        ax.text(-0.5, y, params, ha="right", va="center", fontsize=7.5, color="tab:purple")
    for (y0, *_), (y1, *_) in zip(rows[:-1], rows[1:]):
        ax.annotate("", (1.6, y1 - 0.28), (1.6, y0 + 0.28), arrowprops=dict(arrowstyle="->", color="0.4"))
    for top, add in ((rows[1][0] + 0.45, rows[5][0]), (rows[5][0] + 0.35, rows[8][0])):  # the residuals
        ax.plot([1.6, -0.3, -0.3], [top, top, add], color="tab:red", lw=1.2)
        ax.annotate("", (0, add), (-0.3, add), arrowprops=dict(arrowstyle="->", color="tab:red", lw=1.2))
    ax.text(-0.27, rows[3][0], "residual", rotation=90, ha="left", va="center", fontsize=8, color="tab:red")
    ax.add_patch(plt.Rectangle((-0.1, 1.65), 3.4, 4.95, fill=False, ls="--", ec="0.3"))
    ax.text(3.35, 1.75, f"block, × n_layer = {layers}", fontsize=9, va="bottom")
    ax.set_xlim(-4.0, 6.2)
    ax.set_ylim(9.5, -0.5)
    ax.axis("off")
    ax.set_title(f"GPT-2 small, V = {V}, T = {T}, C = {C}\n"
                 "activations (grey) and parameter shapes (purple), read off the model", fontsize=10)
    sizes = list(ladder)
    counted = [ladder[s][0] / 1e6 for s in sizes]
    printed = [ladder[s][1] for s in sizes]
    xs = np.arange(len(sizes))
    bx.bar(xs - 0.2, counted, 0.4, label="counted (this model, V = 50257)", color="tab:blue")
    bx.bar(xs + 0.2, printed, 0.4, label="printed in the GPT-2 paper", color="tab:orange")
    for x, c, p in zip(xs, counted, printed):
        bx.text(x - 0.2, c, f"{c:.1f}", ha="center", va="bottom", fontsize=8)
        bx.text(x + 0.2, p, f"{p}", ha="center", va="bottom", fontsize=8)
    bx.set_xticks(xs, sizes)
    bx.set_ylabel("parameters (millions)")
    bx.set_title("the GPT-2 family")
    bx.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


# ----------------------------------------------------------------------------- page 12a

def kv_cache():
    layers, C, heads, _ = GPT2["small"]
    hs = C // heads
    print("\npage 12a: the KV cache, 2 n_layer T n_kv hs numbers per sequence")
    print(f"   GPT-2 small: n_layer = {layers}, {heads} heads of hs = {hs}, context T = {GPT2_CONTEXT}")
    print(f"     {'keys and values kept':<34}{'per token':>10}{'at T = 1024':>14}{'float32':>11}")
    rows = {}
    for name, n_kv in (("multi-head (GPT-2), n_kv = 12", heads), ("grouped-query, n_kv = 4", 4),
                       ("multi-query, n_kv = 1", 1)):
        per_token = 2 * layers * n_kv * hs
        rows[n_kv] = per_token
        print(f"     {name:<34}{per_token:>10,}{per_token * GPT2_CONTEXT:>14,}"
              f"{per_token * GPT2_CONTEXT * 4 / 1e6:>8.2f} MB")
    lstm = 2 * layers * C                                     # h and c of each layer
    print(f"     an LSTM of the same depth and width keeps h and c: 2 n_layer C = {lstm:,} numbers, "
          f"whatever T is")
    weights = count(GPTConfig(GPT2_CONTEXT, GPT2_VOCAB, layers, heads, C))
    print(f"     the weights: {weights:,} numbers, {weights * 4 / 1e6:.2f} MB")
    # LLaMA 2 70B (Touvron et al., 2023): 80 layers, 64 query heads of 128, 8 key-value heads, 4096 tokens
    L, nh, n_kv, d, ctx = 80, 64, 8, 128, 4096
    full, grouped = 2 * L * nh * d * ctx, 2 * L * n_kv * d * ctx
    print(f"   LLaMA 2 70B, {L} layers, {nh} heads of {d}, {n_kv} key-value heads, T = {ctx}: "
          f"{grouped:,} numbers ({grouped * 2 / 1e9:.2f} GB in 16-bit) instead of {full:,} "
          f"({full * 2 / 1e9:.2f} GB)")
    return rows, lstm, weights


def draw_kv_cache(plt, path, rows, lstm, weights, T=6):
    fig, (ax, bx) = plt.subplots(1, 2, figsize=(13, 4.8), gridspec_kw={"width_ratios": [1, 1.1]})
    # the schematic: cached keys and values of positions 0..T-1, the newest query, the appended column
    for row, name, color in ((1.6, "K", "tab:orange"), (0.2, "V", "tab:green")):
        for s in range(T + 1):
            new = s == T
            ax.add_patch(plt.Rectangle((s, row), 0.9, 1.0, color=color, alpha=0.9 if new else 0.35,
                                       ls="--" if new else "-"))
            ax.text(s + 0.45, row + 0.5, f"{name.lower()}$_{s}$", ha="center", va="center", fontsize=9)
        ax.text(-0.3, row + 0.5, name, ha="right", va="center", fontsize=11)
    ax.add_patch(plt.Rectangle((T, 3.3), 0.9, 1.0, color="tab:blue", alpha=0.9))
    ax.text(T + 0.45, 3.8, f"q$_{T}$", ha="center", va="center", color="w", fontsize=10)
    for s in range(T + 1):
        ax.annotate("", (s + 0.45, 2.6), (T + 0.45, 3.3), arrowprops=dict(arrowstyle="->", color="0.5", lw=0.7))
    ax.text(T / 2, 4.9, f"step {T}: only token {T} runs through the blocks; its query reads every\n"
            f"cached key, and k$_{T}$, v$_{T}$ are appended (in every layer)", ha="center", fontsize=9)
    ax.text(T / 2, -0.3, f"cached: positions 0..{T - 1}", ha="center", va="top", fontsize=9)
    ax.set_xlim(-1, T + 1.5)
    ax.set_ylim(-0.9, 5.8)
    ax.axis("off")
    ax.set_title("the KV cache of one layer")
    # memory against the context, GPT-2 small in float32
    context = np.arange(1, GPT2_CONTEXT + 1)
    for n_kv, label, color in ((12, "multi-head (GPT-2), 12 KV heads", "tab:red"),
                               (4, "grouped-query, 4 KV heads", "tab:purple"),
                               (1, "multi-query, 1 KV head", "tab:blue")):
        bx.plot(context, rows[n_kv] * context * 4 / 1e6, color=color, label=label)
    bx.axhline(lstm * 4 / 1e6, color="tab:green", label="an LSTM's state (h, c): constant")
    bx.axhline(weights * 4 / 1e6, color="k", ls=":", label="the weights")
    bx.set_yscale("log")
    bx.set_xlabel("tokens in the context, T")
    bx.set_ylabel("MB per sequence, float32")
    bx.set_title("GPT-2 small: memory of one sequence's cache")
    bx.legend(fontsize=8, loc="center right")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


# ----------------------------------------------------------------------------- main

def main(argv=None):
    p = argparse.ArgumentParser(description="The docs' diagrams and their numbers.")
    p.add_argument("--plots", default=None, help="a folder for the pictures (needs matplotlib)")
    p.add_argument("--data", default=None, help="tiny Shakespeare, to count the recipes' passes over it")
    a = p.parse_args(argv)
    edges, conv_layers = connectivity()
    timeline()
    q, k, v, S, M, A, O, ok = attention_pipeline()
    ok &= check_online_softmax(S, M, A, v)
    scale_at_init()
    norms, branches = residual_stream()
    shapes, ladder = architecture()
    compute(a.data)
    rows, lstm, weights = kv_cache()
    if a.plots:
        try:
            import matplotlib
            matplotlib.use("Agg")
            import matplotlib.pyplot as plt
        except ImportError:
            print('\n(no pictures: install matplotlib with pip install "tinygrad_gpt[plot]")')
        else:
            os.makedirs(a.plots, exist_ok=True)
            out = {name: os.path.join(a.plots, name) for name in (
                "connectivity.png", "timeline.png", "attention_pipeline.png", "residual_stream.png",
                "architecture.png", "kv_cache.png")}
            draw_connectivity(plt, out["connectivity.png"], edges, conv_layers)
            draw_timeline(plt, out["timeline.png"])
            draw_pipeline(plt, out["attention_pipeline.png"], q, k, v, S, M, A, O)
            draw_residual(plt, out["residual_stream.png"], norms, branches)
            draw_architecture(plt, out["architecture.png"], shapes, ladder)
            draw_kv_cache(plt, out["kv_cache.png"], rows, lstm, weights)
            print("\nwrote " + ", ".join(out.values()))
    print("\nevery check holds" if ok else "\nMISMATCH")
    return 0 if ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
