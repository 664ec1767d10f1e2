"""The same training on a GPU through CuPy: only the device changes.

Every op takes its array module (NumPy or CuPy) from its inputs, so moving the
model with ``model.to(device="cuda")`` is all it takes; batches follow the
model's device. This script times a few training steps on each device it can
use. Without CuPy or a CUDA GPU it says so and runs on the CPU alone.

    pip install "tinygrad_gpt[cuda]"
    python examples/05_train_on_gpu.py --iters=50 --n_embd=256
"""
import argparse
import time

import numpy as np

from tinygrad_gpt import backend, manual_seed
from tinygrad_gpt.text.data import Dataset, load_text
from tinygrad_gpt.model import GPT, GPTConfig
from tinygrad_gpt.tokenizer import CharTokenizer


def time_training(device, dataset, vocab, a):
    """Train a fresh model for a.iters steps on ``device``; returns (first loss, last loss, ms per step)."""
    manual_seed(a.seed)
    model = GPT(GPTConfig(block_size=a.block_size, vocab_size=vocab, n_layer=a.n_layer,
                          n_head=a.n_head, n_embd=a.n_embd)).to(device=device)
    opt = model.configure_optimizers(weight_decay=0.1, learning_rate=1e-3, betas=(0.9, 0.99))
    rng = np.random.default_rng(a.seed)
    losses, t0 = [], None
    for it in range(a.iters + 1):
        if it == 1:  # step 0 warms up (CuPy compiles its kernels on first use)
            backend.synchronize(device)
            t0 = time.perf_counter()
        x, y = dataset.get_batch("train", a.batch_size, rng)  # NumPy ids; the model moves them
        _, loss = model(x, y)
        loss.backward()
        opt.step()
        model.zero_grad()
        losses.append(loss.item())  # .item() copies one number back, which waits for the GPU
    ms = (time.perf_counter() - t0) * 1000 / max(1, a.iters)
    return losses[0], losses[-1], ms


def main(argv=None):
    p = argparse.ArgumentParser(description="Train the same GPT on the GPU (CuPy) and on the CPU.")
    p.add_argument("--iters", type=int, default=20)
    p.add_argument("--batch_size", type=int, default=12)
    p.add_argument("--block_size", type=int, default=64)
    p.add_argument("--n_layer", type=int, default=4)
    p.add_argument("--n_head", type=int, default=4)
    p.add_argument("--n_embd", type=int, default=128)
    p.add_argument("--seed", type=int, default=1337)
    a = p.parse_args(argv)

    devices = ["cuda", "cpu"]
    try:
        backend.require_device("cuda")
    except backend.DeviceError as e:  # it says why: no CuPy, or no GPU
        print(f"no GPU here ({e}): running on the CPU only")
        devices = ["cpu"]
    text, _ = load_text("pydoc")
    tok = CharTokenizer.from_text(text)
    dataset = Dataset(tok.encode_array(text), a.block_size)
    for device in devices:
        first, last, ms = time_training(device, dataset, tok.vocab_size, a)
        print(f"{device:>4}: loss {first:.4f} -> {last:.4f} in {a.iters} steps, {ms:.1f} ms per step")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
