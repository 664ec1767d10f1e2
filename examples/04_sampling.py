"""Temperature, top-k and top-p: how each changes the next-token distribution, and the text.

A GPT gives logits; sampling turns them into a choice. Temperature T divides the
logits (T < 1 sharpens, T > 1 flattens, T = 0 always takes the likeliest);
top-k keeps the k likeliest tokens; top-p keeps the smallest set of likeliest
tokens whose probability reaches p. Part 1 draws many tokens from one toy
distribution with the library's ``sample_token``; part 2 samples text from a
checkpoint (trained here first if ``--out_dir`` holds none).

    python examples/04_sampling.py --out_dir=out
"""
import argparse
import os

import numpy as np

from tinygrad_gpt.storage.checkpoint import CKPT_NAME, load_checkpoint
from tinygrad_gpt.model import sample_token
from tinygrad_gpt.tokenizer import CharTokenizer
from tinygrad_gpt.run.train import TrainConfig, train

SETTINGS = [  # (label, temperature, top_k, top_p)
    ("greedy (T=0)", 0.0, None, None),
    ("T=0.5", 0.5, None, None),
    ("T=1", 1.0, None, None),
    ("T=2", 2.0, None, None),
    ("T=1, top_k=2", 1.0, 2, None),
    ("T=1, top_p=0.8", 1.0, None, 0.8),
]


def toy_distribution(draws, seed):
    words = ["the", "a", "his", "one", "zebra"]
    logits = np.array([[2.0, 1.5, 0.5, 0.0, -1.0]])
    probs = np.exp(logits[0]) / np.exp(logits[0]).sum()
    print("Part 1: how often each word is drawn from one set of logits\n")
    print(f"{'':<16}" + "".join(f"{w:>8}" for w in words))
    print(f"{'softmax(logits)':<16}" + "".join(f"{q:>8.3f}" for q in probs))
    rng = np.random.default_rng(seed)
    for label, T, k, p in SETTINGS:
        picks = np.array([sample_token(logits, T, k, p, rng)[0] for _ in range(draws)])
        freq = np.bincount(picks, minlength=len(words)) / draws
        print(f"{label:<16}" + "".join(f"{f:>8.3f}" for f in freq))


def checkpoint_or_train(out_dir, iters):
    """Load out_dir's checkpoint, or train a small model there first."""
    if not os.path.exists(os.path.join(out_dir, CKPT_NAME)):
        print(f"\n(no checkpoint in {out_dir}: training a small one for {iters} iterations)")
        train(TrainConfig(out_dir=out_dir, max_iters=iters, n_layer=2, n_head=2, n_embd=48,
                          block_size=32, batch_size=8, eval_interval=iters, eval_iters=2,
                          warmup_iters=iters // 10, sample_tokens=0, progress=False),
              print_fn=lambda *args: None)
    ckpt = load_checkpoint(os.path.join(out_dir, CKPT_NAME))
    return ckpt.build_model().eval(), CharTokenizer.from_dict(ckpt.extra["tokenizer"])


def main(argv=None):
    p = argparse.ArgumentParser(description="See how temperature, top-k and top-p change sampling.")
    p.add_argument("--out_dir", default="out", help="a training output folder with ckpt.safetensors")
    p.add_argument("--iters", type=int, default=300, help="training iterations if there is no checkpoint")
    p.add_argument("--draws", type=int, default=2000, help="tokens drawn per setting in part 1")
    p.add_argument("--tokens", type=int, default=80, help="characters of text per setting in part 2")
    p.add_argument("--start", default="The ")
    p.add_argument("--seed", type=int, default=0)
    a = p.parse_args(argv)

    toy_distribution(a.draws, a.seed)
    model, tok = checkpoint_or_train(a.out_dir, a.iters)
    print(f"\nPart 2: text after {a.start!r}, the same seed for every setting\n")
    ids = np.array([tok.encode(a.start)])
    for label, T, k, p in SETTINGS:
        out = model.generate(ids, a.tokens, temperature=T, top_k=k, top_p=p, seed=a.seed)
        print(f"--- {label}\n{tok.decode(out[0].tolist())}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
