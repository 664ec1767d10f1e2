"""Training dynamics: the same run with and without learning-rate warmup.

Two runs of the tiny recipe (nanoGPT's small character model: 4 layers, 4 heads,
128 wide, 64 characters of context, batches of 12, AdamW with beta2 0.99 and
clipping at 1.0) from the same initial weights on the same batches. One warms
the learning rate up linearly over ``--warmup`` steps, the other starts at the
full rate. Each step's loss and gradient norm (before clipping) are kept, and
train and val loss are estimated every ``--eval_interval`` steps. Step 0 is
evaluated too, before any update: the untrained model's losses.

With ``--plot=PATH`` (needs matplotlib) it draws both runs: loss, gradient norm
and learning rate against the step.

    python examples/10_warmup.py --iters=300 --plot=docs/images/warmup.png
"""
import argparse
import math

import numpy as np

from tinygrad_gpt import manual_seed, no_grad
from tinygrad_gpt.text.data import Dataset, load_text
from tinygrad_gpt.model import GPT, GPTConfig
from tinygrad_gpt.optim import clip_grad_norm_, cosine_lr
from tinygrad_gpt.tokenizer import CharTokenizer


def estimate(model, data, batch_size, iters, seed):
    """Mean loss of each split over the same ``iters`` batches (no gradients)."""
    model.eval()
    out = {}
    with no_grad():
        for split in ("train", "val"):
            rng = np.random.default_rng(seed)
            out[split] = float(np.mean([model(*data.get_batch(split, batch_size, rng))[1].item()
                                        for _ in range(iters)]))
    model.train()
    return out


def run(a, data, vocab_size, warmup):
    """One training run; returns per-step lists and the evaluations."""
    manual_seed(a.seed)
    model = GPT(GPTConfig(block_size=a.block_size, vocab_size=vocab_size, n_layer=a.n_layer,
                          n_head=a.n_head, n_embd=a.n_embd))
    opt = model.configure_optimizers(weight_decay=0.1, learning_rate=a.lr, betas=(0.9, 0.99))
    rng = np.random.default_rng(a.seed)  # the same batches in both runs
    hist = {"loss": [], "norm": [], "lr": [], "evals": []}
    for it in range(a.iters + 1):
        if it % a.eval_interval == 0 or it == a.iters:
            hist["evals"].append((it, estimate(model, data, a.batch_size, a.eval_iters, a.seed + 1)))
        if it == a.iters:
            break
        lr = cosine_lr(it, a.lr, warmup_iters=warmup, lr_decay_iters=a.iters, min_lr=a.lr / 10)
        for group in opt.param_groups:
            group["lr"] = lr
        _, loss = model(*data.get_batch("train", a.batch_size, rng))
        loss.backward()
        norm = clip_grad_norm_(model.parameters(), 1.0)  # the norm before clipping
        opt.step()
        model.zero_grad()
        hist["loss"].append(loss.item())
        hist["norm"].append(float(norm))
        hist["lr"].append(lr)
    return hist


def plot(path, runs):
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        print('(no picture: install matplotlib with pip install "tinygrad_gpt[plot]")')
        return
    fig, axes = plt.subplots(3, 1, figsize=(8, 8), sharex=True, gridspec_kw={"height_ratios": [3, 2, 1]})
    for (name, hist), color in zip(runs.items(), ("tab:blue", "tab:red")):
        steps = np.arange(len(hist["loss"]))
        axes[0].plot(steps, hist["loss"], color=color, lw=0.6, alpha=0.5)
        its = [it for it, _ in hist["evals"]]
        # the evaluations (every eval_interval steps) as dots on their lines
        axes[0].plot(its, [e["train"] for _, e in hist["evals"]], color=color, lw=2, marker="o", ms=5,
                     label=f"{name}: train")
        axes[0].plot(its, [e["val"] for _, e in hist["evals"]], color=color, lw=2, ls="--", marker="s",
                     ms=4, mfc="w", label=f"{name}: val")
        axes[1].plot(steps, hist["norm"], color=color, lw=0.8, label=name)
        axes[2].plot(steps, hist["lr"], color=color, lw=1.5, label=name)
    axes[0].set_ylabel("loss")
    axes[0].legend(fontsize=8)
    axes[1].set_ylabel("gradient norm")
    axes[1].set_yscale("log")
    axes[1].axhline(1.0, color="k", lw=0.5, ls=":")
    axes[2].set_ylabel("learning rate")
    axes[2].set_xlabel("step")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    print(f"wrote {path}")


def main(argv=None):
    p = argparse.ArgumentParser(description="The same training run with and without warmup.")
    p.add_argument("--data", default=None, help="a UTF-8 text file (default: Python's own docs)")
    p.add_argument("--iters", type=int, default=300)
    p.add_argument("--warmup", type=int, default=100, help="warmup steps of the warmed-up run")
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--batch_size", type=int, default=12)
    p.add_argument("--block_size", type=int, default=64)
    p.add_argument("--n_layer", type=int, default=4)
    p.add_argument("--n_head", type=int, default=4)
    p.add_argument("--n_embd", type=int, default=128)
    p.add_argument("--eval_interval", type=int, default=50)
    p.add_argument("--eval_iters", type=int, default=10)
    p.add_argument("--seed", type=int, default=1337)
    p.add_argument("--plot", default=None, help="a PNG for the loss, gradient-norm and lr curves")
    a = p.parse_args(argv)

    text, name = load_text("pydoc", a.data)
    tok = CharTokenizer.from_text(text)
    data = Dataset(tok.encode_array(text), a.block_size)
    print(f"{name}: vocab {tok.vocab_size}, ln(vocab) = {math.log(tok.vocab_size):.3f}; "
          f"{a.n_layer} layers, {a.n_head} heads, width {a.n_embd}, lr {a.lr:g}, {a.iters} steps")
    counts = np.bincount(data.train, minlength=tok.vocab_size) / len(data.train)
    nz = counts[counts > 0]
    print(f"a model that knows only character frequencies (the unigram entropy of train): "
          f"{-(nz * np.log(nz)).sum():.3f}")
    runs = {f"warmup {a.warmup}": run(a, data, tok.vocab_size, a.warmup),
            "no warmup": run(a, data, tok.vocab_size, 0)}
    first = max(1, min(a.warmup, a.iters) // 2)
    for label, hist in runs.items():
        print(f"\n{label}:")
        print(f"  step  {'train':>7} {'val':>7}")
        for it, e in hist["evals"]:
            print(f"  {it:4d}  {e['train']:7.4f} {e['val']:7.4f}")
        norms = hist["norm"]
        print(f"  gradient norm: largest {max(norms):.2f} (step {int(np.argmax(norms))}), "
              f"median of the first {first} steps {np.median(norms[:first]):.2f}, "
              f"of the last {first} {np.median(norms[-first:]):.2f}")
        print(f"  steps clipped (norm > 1): {sum(n > 1 for n in norms)} of {len(norms)}")
    if a.plot:
        plot(a.plot, runs)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
