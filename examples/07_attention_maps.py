"""Attention maps: for each layer and head, how much each character looks at each earlier one.

Row i of a map is the softmax over the keys that query i may see (keys 0..i, the
causal mask), so every row sums to 1 and everything above the diagonal is 0.
After training, heads specialise: some look at the previous character, some at
the start of the word or line. The picture needs matplotlib (the ``plot`` extra).

    python examples/07_attention_maps.py --out_dir=out --text="def __init__(self):"
"""
import argparse
import os

import numpy as np

from tinygrad_gpt.storage.checkpoint import CKPT_NAME, load_checkpoint
from tinygrad_gpt.tokenizer import CharTokenizer
from tinygrad_gpt.run.train import TrainConfig, train
from tinygrad_gpt.commands.viz import VizError, attention_weights, plot_attention


def checkpoint_or_train(out_dir, iters):
    """Load out_dir's checkpoint, or train a small model there first."""
    if not os.path.exists(os.path.join(out_dir, CKPT_NAME)):
        print(f"(no checkpoint in {out_dir}: training a small one for {iters} iterations)")
        train(TrainConfig(out_dir=out_dir, max_iters=iters, n_layer=2, n_head=2, n_embd=48,
                          block_size=32, batch_size=8, eval_interval=iters, eval_iters=2,
                          warmup_iters=iters // 10, sample_tokens=0, progress=False),
              print_fn=lambda *args: None)
    ckpt = load_checkpoint(os.path.join(out_dir, CKPT_NAME))
    return ckpt.build_model().eval(), CharTokenizer.from_dict(ckpt.extra["tokenizer"])


def main(argv=None):
    p = argparse.ArgumentParser(description="Draw a trained GPT's attention maps for a text.")
    p.add_argument("--out_dir", default="out", help="a training output folder with ckpt.safetensors")
    p.add_argument("--iters", type=int, default=300, help="training iterations if there is no checkpoint")
    p.add_argument("--text", default="The import statement")
    p.add_argument("--out", default=None, help="the PNG to write (default: OUT_DIR/attention.png)")
    a = p.parse_args(argv)

    model, tok = checkpoint_or_train(a.out_dir, a.iters)
    text = a.text[-model.config.block_size:]
    maps = attention_weights(model, np.array([tok.encode(text)]))  # per layer: (1, nh, T, T)
    last = maps[-1][0]
    print(f"{len(maps)} layers x {last.shape[0]} heads; in the last layer each character looks most at:")
    for head in range(last.shape[0]):
        pairs = [f"{text[i]!r}->{text[j]!r}" for i, j in enumerate(last[head].argmax(axis=-1))]
        print(f"  head {head}: " + " ".join(pairs))
    rows = np.concatenate([m[0].sum(axis=-1).ravel() for m in maps])
    print(f"every row sums to 1: {np.allclose(rows, 1)}; nothing above the diagonal: "
          f"{all(np.triu(m[0], k=1).max() == 0 for m in maps)}")
    try:
        print(f"wrote {plot_attention(model, tok, text, a.out or os.path.join(a.out_dir, 'attention.png'))}")
    except VizError as e:  # no matplotlib
        print(e)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
