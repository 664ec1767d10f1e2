"""Our GPT and the same GPT in PyTorch, trained in lockstep: same weights, same batches.

    python benchmarks/recipe_lockstep.py --data=path/to/tinyshakespeare.txt [--seed=1337] [--rng=torch]

Both start from one GPT-2 init and see the same batch at every iteration, with
nanoGPT's CPU recipe (AdamW with decay on 2-D weights, clip 1.0, warmup + cosine).
Rounding differences make the two runs drift apart slowly, but any difference in
the maths (a gradient, the optimizer, the schedule) would show as a systematic gap.
It prints both losses at every evaluation and the time each side spent training.

``--rng=numpy`` (the default) draws the init and the batches the way ``python -m tinygrad_gpt train``
does; ``--rng=torch`` draws them exactly as ``recipe_torch.py`` does (torch's generator, its
init, its batch and evaluation order), so the PyTorch side reproduces that script's run.
"""
import argparse
import os
import sys
import time

import numpy as np
import torch

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "tests"))
from torch_gpt import TorchGPT, load_from_state_dict, state_dict_in_our_layout  # noqa: E402

from tinygrad_gpt import backend  # noqa: E402
from tinygrad_gpt.text.data import Dataset, read_text_file  # noqa: E402
from tinygrad_gpt.model import GPT, GPTConfig  # noqa: E402
from tinygrad_gpt.optim import clip_grad_norm_, cosine_lr  # noqa: E402
from tinygrad_gpt.tensor import no_grad  # noqa: E402
from tinygrad_gpt.tokenizer import CharTokenizer  # noqa: E402
from tinygrad_gpt.run.settings import tune_allocator_for_training  # noqa: E402

tune_allocator_for_training()  # as the train command does: glibc keeps freed blocks for reuse


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data", required=True)
    p.add_argument("--max_iters", type=int, default=2000)
    p.add_argument("--eval_interval", type=int, default=250)
    p.add_argument("--eval_iters", type=int, default=200)
    p.add_argument("--bias", type=lambda s: s == "True", default=True)
    p.add_argument("--seed", type=int, default=1337)
    p.add_argument("--rng", choices=("numpy", "torch"), default="numpy")
    a = p.parse_args()
    B, T, lr, min_lr, warmup = 12, 64, 1e-3, 1e-4, 100

    text = read_text_file(a.data)
    tok = CharTokenizer.from_text(text)
    ds = Dataset(tok.encode_array(text), T)
    backend.manual_seed(a.seed)
    ours = GPT(GPTConfig(T, tok.vocab_size, 4, 4, 128, bias=a.bias))
    if a.rng == "torch":  # recipe_torch.py's init and batches, from torch's generator
        torch.manual_seed(a.seed)
        theirs = TorchGPT(T, tok.vocab_size, 4, 4, 128, bias=a.bias)
        ours.load_state_dict(state_dict_in_our_layout(theirs))
        ids = torch.from_numpy(np.concatenate([ds.train, ds.val]).astype(np.int64))
        splits = {"train": ids[:len(ds.train)], "val": ids[len(ds.train):]}

        def get_batch(split, B_, rng_):
            data = splits[split]
            ix = torch.randint(len(data) - T, (B_,))
            x = torch.stack([data[i:i + T] for i in ix])
            y = torch.stack([data[i + 1:i + 1 + T] for i in ix])
            return x.numpy(), y.numpy()
    else:
        theirs = load_from_state_dict(TorchGPT(T, tok.vocab_size, 4, 4, 128, bias=a.bias), ours.state_dict())
        get_batch = ds.get_batch
    opt = ours.configure_optimizers(0.1, lr, (0.9, 0.99))
    tparams = list(theirs.parameters())
    topt = torch.optim.AdamW([{"params": [q for q in tparams if q.dim() >= 2], "weight_decay": 0.1},
                              {"params": [q for q in tparams if q.dim() < 2], "weight_decay": 0.0}],
                             lr=lr, betas=(0.9, 0.99))
    rng = np.random.default_rng(a.seed)
    spent = {"ours": 0.0, "torch": 0.0}
    print(f"torch {torch.__version__} ({torch.get_num_threads()} threads), numpy {np.__version__}, "
          f"bias={a.bias}, seed {a.seed}, {a.rng} random streams")
    print("| iter | ours train | ours val | torch train | torch val |")
    print("|---|---|---|---|---|")
    for it in range(a.max_iters + 1):
        if it % a.eval_interval == 0 or it == a.max_iters:
            erng = np.random.default_rng([a.seed, it])
            batches = {s: [get_batch(s, B, erng) for _ in range(a.eval_iters)] for s in ("train", "val")}
            ours.eval()
            theirs.eval()
            with no_grad(), torch.no_grad():
                lo = {s: np.mean([ours(x, y)[1].item() for x, y in bs]) for s, bs in batches.items()}
                lt = {s: np.mean([theirs(torch.from_numpy(x), torch.from_numpy(y))[1].item() for x, y in bs])
                      for s, bs in batches.items()}
            ours.train()
            theirs.train()
            print(f"| {it} | {lo['train']:.4f} | {lo['val']:.4f} | {lt['train']:.4f} | {lt['val']:.4f} |",
                  flush=True)
        if it == a.max_iters:
            break
        step_lr = cosine_lr(it, lr, warmup, a.max_iters, min_lr)
        x, y = get_batch("train", B, rng)
        t0 = time.perf_counter()
        for g in opt.param_groups:
            g["lr"] = step_lr
        _, loss = ours(x, y)
        loss.backward()
        clip_grad_norm_(ours.parameters(), 1.0)
        opt.step()
        ours.zero_grad()
        loss.item()
        t1 = time.perf_counter()
        for g in topt.param_groups:
            g["lr"] = step_lr
        _, tloss = theirs(torch.from_numpy(x), torch.from_numpy(y))
        tloss.backward()
        torch.nn.utils.clip_grad_norm_(tparams, 1.0)
        topt.step()
        topt.zero_grad(set_to_none=True)
        tloss.item()
        t2 = time.perf_counter()
        spent["ours"] += t1 - t0
        spent["torch"] += t2 - t1
    print(f"\ntraining time: ours {spent['ours']:.1f}s, torch {spent['torch']:.1f}s, "
          f"ours/torch {spent['ours'] / spent['torch']:.2f}")


if __name__ == "__main__":
    main()
