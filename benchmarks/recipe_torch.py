"""nanoGPT's character recipe in plain PyTorch, the yardstick for `python -m tinygrad_gpt train`.

    python benchmarks/recipe_torch.py --data=path/to/tinyshakespeare.txt

Same model (tests/torch_gpt.py, an independent GPT-2), same data split, same
AdamW groups (decay on 2-D weights only), clipping, warmup + cosine schedule and
evaluation (eval_iters batches of each split every eval_interval). Prints the
losses, the final val loss and the wall time.
"""
import argparse
import math
import os
import sys
import time

import numpy as np
import torch

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "tests"))
from torch_gpt import TorchGPT  # noqa: E402


def get_lr(it, lr, warmup, decay_iters, min_lr):
    if it < warmup:
        return lr * (it + 1) / (warmup + 1)
    if it > decay_iters:
        return min_lr
    ratio = (it - warmup) / (decay_iters - warmup)
    return min_lr + 0.5 * (1.0 + math.cos(math.pi * ratio)) * (lr - min_lr)


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data", required=True)
    p.add_argument("--batch_size", type=int, default=12)
    p.add_argument("--block_size", type=int, default=64)
    p.add_argument("--n_layer", type=int, default=4)
    p.add_argument("--n_head", type=int, default=4)
    p.add_argument("--n_embd", type=int, default=128)
    p.add_argument("--max_iters", type=int, default=2000)
    p.add_argument("--lr_decay_iters", type=int, default=2000)
    p.add_argument("--learning_rate", type=float, default=1e-3)
    p.add_argument("--min_lr", type=float, default=1e-4)
    p.add_argument("--warmup_iters", type=int, default=100)
    p.add_argument("--beta2", type=float, default=0.99)
    p.add_argument("--weight_decay", type=float, default=0.1)
    p.add_argument("--grad_clip", type=float, default=1.0)
    p.add_argument("--eval_interval", type=int, default=250)
    p.add_argument("--eval_iters", type=int, default=200)
    p.add_argument("--sdpa", action="store_true", help="use torch's fused attention")
    p.add_argument("--seed", type=int, default=1337)
    a = p.parse_args()

    torch.manual_seed(a.seed)
    text = open(a.data, encoding="utf-8").read()
    chars = sorted(set(text))
    lookup = {c: i for i, c in enumerate(chars)}
    ids = torch.tensor([lookup[c] for c in text], dtype=torch.long)
    n = int(0.9 * len(ids))
    splits = {"train": ids[:n], "val": ids[n:]}

    def get_batch(split):
        data = splits[split]
        ix = torch.randint(len(data) - a.block_size, (a.batch_size,))
        x = torch.stack([data[i:i + a.block_size] for i in ix])
        y = torch.stack([data[i + 1:i + 1 + a.block_size] for i in ix])
        return x, y

    model = TorchGPT(a.block_size, len(chars), a.n_layer, a.n_head, a.n_embd, use_sdpa=a.sdpa)
    params = list(model.parameters())
    groups = [{"params": [p for p in params if p.dim() >= 2], "weight_decay": a.weight_decay},
              {"params": [p for p in params if p.dim() < 2], "weight_decay": 0.0}]
    opt = torch.optim.AdamW(groups, lr=a.learning_rate, betas=(0.9, a.beta2))
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, vocab {len(chars)}, "
          f"{sum(p.numel() for p in params) / 1e6:.2f}M parameters")

    t0 = time.time()
    val = None
    for it in range(a.max_iters + 1):
        if it % a.eval_interval == 0 or it == a.max_iters:
            model.eval()
            with torch.no_grad():
                losses = {s: float(np.mean([model(*get_batch(s))[1].item() for _ in range(a.eval_iters)]))
                          for s in ("train", "val")}
            model.train()
            val = losses["val"]
            print(f"step {it}: train loss {losses['train']:.4f}, val loss {val:.4f}, "
                  f"{time.time() - t0:.1f}s", flush=True)
        if it == a.max_iters:
            break
        for g in opt.param_groups:
            g["lr"] = get_lr(it, a.learning_rate, a.warmup_iters, a.lr_decay_iters, a.min_lr)
        _, loss = model(*get_batch("train"))
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, a.grad_clip)
        opt.step()
        opt.zero_grad(set_to_none=True)
    print(f"final val loss {val:.4f}, wall time {time.time() - t0:.1f}s")


if __name__ == "__main__":
    main()
