"""Train a small character-level GPT on the CPU with the library API.

The whole recipe in one loop: random windows of text, next-character
cross-entropy, backward, gradient clipping, AdamW with warmup and cosine decay.
The loss starts near ln(vocab size), the loss of a uniform guess, and falls as
the model learns which characters follow which.

    python examples/03_train_char_gpt.py --iters=200
    python examples/03_train_char_gpt.py --data=input.txt --iters=1000 --n_layer=4 --n_embd=128
"""
import argparse
import math
import time

import numpy as np

from tinygrad_gpt import manual_seed, no_grad
from tinygrad_gpt.text.data import Dataset, load_text
from tinygrad_gpt.model import GPT, GPTConfig
from tinygrad_gpt.optim import clip_grad_norm_, cosine_lr
from tinygrad_gpt.tokenizer import CharTokenizer


def main(argv=None):
    p = argparse.ArgumentParser(description="Train a small character GPT on the CPU.")
    p.add_argument("--data", default=None, help="a UTF-8 text file (default: Python's own docs)")
    p.add_argument("--iters", type=int, default=200)
    p.add_argument("--batch_size", type=int, default=12)
    p.add_argument("--block_size", type=int, default=64)
    p.add_argument("--n_layer", type=int, default=2)
    p.add_argument("--n_head", type=int, default=4)
    p.add_argument("--n_embd", type=int, default=64)
    p.add_argument("--lr", type=float, default=3e-3)
    p.add_argument("--sample_tokens", type=int, default=200)
    p.add_argument("--seed", type=int, default=1337)
    a = p.parse_args(argv)

    text, name = load_text("pydoc", a.data)
    tok = CharTokenizer.from_text(text)
    data = Dataset(tok.encode_array(text), a.block_size)  # 90% train, 10% val
    manual_seed(a.seed)
    model = GPT(GPTConfig(block_size=a.block_size, vocab_size=tok.vocab_size,
                          n_layer=a.n_layer, n_head=a.n_head, n_embd=a.n_embd))
    opt = model.configure_optimizers(weight_decay=0.1, learning_rate=a.lr, betas=(0.9, 0.99))
    rng = np.random.default_rng(a.seed)
    print(f"{name}: {len(text):,} characters, vocab {tok.vocab_size}; "
          f"model {model.num_parameters():,} parameters")
    print(f"a uniform guess has loss ln({tok.vocab_size}) = {math.log(tok.vocab_size):.3f}")

    t0 = time.time()
    for it in range(a.iters):
        lr = cosine_lr(it, a.lr, warmup_iters=a.iters // 10, lr_decay_iters=a.iters, min_lr=a.lr / 10)
        for group in opt.param_groups:
            group["lr"] = lr
        x, y = data.get_batch("train", a.batch_size, rng)  # (B, T) ids; y is x shifted by one
        _, loss = model(x, y)
        loss.backward()
        clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        model.zero_grad()
        if it % max(1, a.iters // 10) == 0 or it == a.iters - 1:
            print(f"iter {it:5d}  train loss {loss.item():.4f}  lr {lr:.1e}")

    model.eval()
    with no_grad():
        val = np.mean([model(*data.get_batch("val", a.batch_size, rng))[1].item() for _ in range(5)])
    print(f"val loss {val:.4f} after {a.iters} iterations ({time.time() - t0:.1f} s)")
    if a.sample_tokens:
        out = model.generate(np.array([tok.encode("\n")]), a.sample_tokens, temperature=0.8, seed=a.seed)
        print("\nsample:\n" + tok.decode(out[0].tolist()))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
