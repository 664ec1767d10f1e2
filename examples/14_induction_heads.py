"""Induction heads, trained: a two-layer GPT learns to continue a passage it has already seen.

An induction head completes a pattern from earlier in the context: if token A was followed by B
before, then at the next A it attends to that B and predicts it. It takes two layers: a
previous-token head in layer 0 writes "the token before me was A" into each position, and a head
in layer 1 looks for the positions whose previous token equals its current one.

Plain text seldom repeats within a short context, so a small model trained on it for a few
minutes has little reason to learn this. Here each training window of the text (``--copy_fraction``
of them) has one passage of 8 to ``block_size/2 - 1`` characters (fewer for a context under 32)
written a second time at a random later place. Then the script writes held-out passages twice and measures, for every head:

- its previous-token score: the mean weight a query puts on the position just before it;
- its induction score: over the second copy, the mean weight query t puts on position t - P + 1,
  the character that followed the earlier occurrence of the current one (P is the passage length);

and the loss on the first copy against the loss on the second: the second copy is predictable only
by looking back.

    python examples/14_induction_heads.py --data=path/to/tinyshakespeare.txt
    python examples/14_induction_heads.py --data=path/to/tinyshakespeare.txt --copy_fraction=0
"""
import argparse

import numpy as np

from tinygrad_gpt import manual_seed, no_grad
from tinygrad_gpt.text.data import Dataset, load_text
from tinygrad_gpt.run import settings
from tinygrad_gpt.model import GPT, GPTConfig
from tinygrad_gpt.optim import clip_grad_norm_, cosine_lr
from tinygrad_gpt.tokenizer import CharTokenizer
from tinygrad_gpt.commands.viz import attention_weights


def windows_with_copies(train, T, B, copy_fraction, rng):
    """(x, y) batches of T + 1 characters; in a window picked with probability copy_fraction,
    a passage of min(8, T/4) .. T/2 - 1 characters is written again at a random later place."""
    x = np.empty((B, T + 1), dtype=np.int64)
    for b in range(B):
        s = rng.integers(0, len(train) - T - 1)
        w = train[s:s + T + 1].copy()
        if rng.random() < copy_fraction:
            L = rng.integers(min(8, T // 4), T // 2)      # the passage
            gap = rng.integers(0, T + 2 - 2 * L)          # characters between the two copies
            i = rng.integers(0, T + 2 - 2 * L - gap)      # where the first copy starts
            w[i + L + gap:i + 2 * L + gap] = w[i:i + L]
        x[b] = w
    return x[:, :-1], x[:, 1:]


def measure(model, passages):
    """Losses on the first and second copy, and every head's previous-token and induction score."""
    P = passages.shape[1]
    idx = np.concatenate([passages, passages], axis=1)            # (n, 2P): each passage twice
    maps = attention_weights(model, idx)                          # per layer (n, nh, 2P, 2P)
    t = np.arange(P, 2 * P)                                       # queries of the second copy
    prev = [A[:, :, np.arange(1, 2 * P), np.arange(2 * P - 1)].mean(axis=(0, 2)) for A in maps]
    induction = [A[:, :, t, t - P + 1].mean(axis=(0, 2)) for A in maps]
    model.eval()
    with no_grad():
        logits = model(idx[:, :-1])[0].data                       # (n, 2P - 1, V)
    model.train()
    z = logits - logits.max(axis=-1, keepdims=True)
    logp = z - np.log(np.exp(z).sum(axis=-1, keepdims=True))
    nll = -np.take_along_axis(logp, idx[:, 1:, None], axis=-1)[..., 0]
    # predictions of characters 1 .. P-1 (first copy) and of P+1 .. 2P-1 (second copy, after its first)
    return nll[:, :P - 1].mean(), nll[:, P:].mean(), np.array(prev), np.array(induction)


def best(scores):
    layer, head = np.unravel_index(np.argmax(scores), scores.shape)
    return f"L{layer}H{head} {scores[layer, head]:.2f}"


def main(argv=None):
    p = argparse.ArgumentParser(description="Train a two-layer GPT and find its induction heads.")
    p.add_argument("--data", default=None, help="a UTF-8 text file (default: Python's own docs)")
    p.add_argument("--iters", type=int, default=4000)
    p.add_argument("--eval_every", type=int, default=1000)
    p.add_argument("--copy_fraction", type=float, default=1.0, help="windows with a repeated passage")
    p.add_argument("--block_size", type=int, default=64)
    p.add_argument("--n_head", type=int, default=4)
    p.add_argument("--n_embd", type=int, default=64)
    p.add_argument("--batch_size", type=int, default=16)
    p.add_argument("--lr", type=float, default=3e-3)
    p.add_argument("--probes", type=int, default=16, help="held-out passages to measure on")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=1,
                   help="CPU threads for BLAS and the fast layer (the matrices here are small: one is fastest)")
    a = p.parse_args(argv)
    if a.block_size < 8 or a.block_size % 2:
        p.error(f"--block_size must be an even number of at least 8, got {a.block_size}")

    settings.set_cpu_threads(a.threads)  # a command may set the process's threads; importing never does
    text, name = load_text("pydoc", a.data)
    tok = CharTokenizer.from_text(text)
    data = Dataset(tok.encode_array(text), a.block_size)
    T, P = a.block_size, a.block_size // 2
    print(f"{name}: vocab {tok.vocab_size}; 2 layers, {a.n_head} heads, width {a.n_embd}, {T} characters, "
          f"{a.iters} steps; a copied passage in {a.copy_fraction:.0%} of the windows")
    manual_seed(a.seed)
    model = GPT(GPTConfig(block_size=T, vocab_size=tok.vocab_size, n_layer=2, n_head=a.n_head, n_embd=a.n_embd))
    opt = model.configure_optimizers(weight_decay=0.1, learning_rate=a.lr, betas=(0.9, 0.99))
    rng = np.random.default_rng(a.seed)
    starts = np.random.default_rng(a.seed + 1).integers(0, len(data.val) - P, a.probes)
    passages = np.stack([data.val[s:s + P] for s in starts])      # (probes, P), never trained on
    uniform = np.mean(1 / (np.arange(P, 2 * P) + 1))              # the induction score of even attention
    print(f"held-out passages of {P} characters, each written twice; even attention would score {uniform:.3f}")
    print(f"  {'step':>5}  {'loss, 1st copy':>14}  {'2nd copy':>8}  {'best previous-token head':>24}"
          f"  {'best induction head':>19}")
    for it in range(a.iters + 1):
        if it % a.eval_every == 0 or it == a.iters:
            first, second, prev, induction = measure(model, passages)
            print(f"  {it:>5}  {first:>14.2f}  {second:>8.2f}  {best(prev):>24}  {best(induction):>19}")
        if it == a.iters:
            break
        lr = cosine_lr(it, a.lr, warmup_iters=50, lr_decay_iters=a.iters, min_lr=a.lr / 10)
        for group in opt.param_groups:
            group["lr"] = lr
        _, loss = model(*windows_with_copies(data.train, T, a.batch_size, a.copy_fraction, rng))
        loss.backward()
        clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        model.zero_grad()
    print(f"every head at step {a.iters}, previous-token score / induction score:")
    for layer in range(2):
        print(f"  layer {layer}: " + "  ".join(f"H{h} {prev[layer, h]:.2f}/{induction[layer, h]:.2f}"
                                             for h in range(a.n_head)))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
