"""The training loop: nanoGPT's recipe on our engine.

``train(TrainConfig(...))`` loads text, builds a character tokenizer and a GPT,
and runs AdamW with warmup + cosine decay, gradient clipping and gradient
accumulation. Every ``eval_interval`` it estimates train and val loss and saves
a checkpoint; it logs to ``out_dir/log.jsonl``; it can resume exactly.
"""
import json
import math
import os
import sys
import time
from dataclasses import dataclass, asdict
from typing import Optional

import numpy as np

from . import backend
from .checkpoint import CKPT_NAME, load_checkpoint, save_checkpoint
from .serialization import CheckpointError
from .data import DataError, Dataset, load_text
from .model import GPT, GPTConfig
from .optim import clip_grad_norm_, cosine_lr
from .tensor import no_grad
from .tokenizer import CharTokenizer
from .bpe import BPETokenizer, tokenizer_from_dict
from .pretrained import crop_block_size, from_pretrained, load_hf_tokenizer


class ConfigError(ValueError):
    """A flag value that cannot be used; the message names the flag."""


class TrainingError(RuntimeError):
    """The run cannot go on (for example, the loss became NaN)."""


@dataclass
class TrainConfig:
    # data
    dataset: str = "pydoc"          # pydoc | shakespeare
    data: Optional[str] = None      # a UTF-8 text file to train on instead of a dataset
    out_dir: str = "out"
    # model
    batch_size: int = 12
    block_size: int = 64
    n_layer: int = 4
    n_head: int = 4
    n_embd: int = 128
    dropout: float = 0.0
    bias: bool = True
    # optimizer and schedule
    learning_rate: float = 1e-3
    max_iters: int = 2000
    lr_decay_iters: Optional[int] = None  # None: decay until max_iters
    min_lr: float = 1e-4
    warmup_iters: int = 100
    beta1: float = 0.9
    beta2: float = 0.99
    weight_decay: float = 0.1
    grad_clip: float = 1.0          # 0 turns clipping off
    gradient_accumulation_steps: int = 1
    # evaluation, logging, checkpoints
    eval_interval: int = 250
    eval_iters: int = 50
    log_interval: int = 10
    always_save_checkpoint: bool = True
    init_from: str = "scratch"      # scratch | resume | a Hugging Face GPT-2 folder (fine-tune it)
    tokenizer: str = "char"         # char | bpe (trained on the data first; scratch runs only)
    vocab_size: int = 1024          # the BPE's size for --tokenizer=bpe
    # system
    device: str = backend.default_device()
    dtype: str = "float32"          # float32 | float64
    seed: int = 1337
    sample_tokens: int = 300        # tokens printed at the end (0: none)
    progress: bool = True           # a progress bar when writing to a terminal

    def validate(self):
        positive = ("batch_size", "block_size", "n_layer", "n_head", "n_embd", "max_iters",
                    "gradient_accumulation_steps", "eval_interval", "eval_iters", "log_interval")
        for name in positive:
            if getattr(self, name) <= 0:
                raise ConfigError(f"--{name} must be positive, got {getattr(self, name)}")
        for name in ("warmup_iters", "sample_tokens"):
            if getattr(self, name) < 0:
                raise ConfigError(f"--{name} must be >= 0, got {getattr(self, name)}")
        for name in ("learning_rate", "min_lr", "weight_decay", "grad_clip"):
            if not getattr(self, name) >= 0 or not math.isfinite(getattr(self, name)):
                raise ConfigError(f"--{name} must be a finite number >= 0, got {getattr(self, name)}")
        if self.lr_decay_iters is not None and self.lr_decay_iters <= 0:
            raise ConfigError(f"--lr_decay_iters must be positive, got {self.lr_decay_iters}")
        for name in ("beta1", "beta2", "dropout"):
            if not 0 <= getattr(self, name) < 1:
                raise ConfigError(f"--{name} must be in [0, 1), got {getattr(self, name)}")
        if self.n_embd % self.n_head:
            raise ConfigError(f"--n_embd={self.n_embd} is not divisible by --n_head={self.n_head}")
        if self.init_from not in ("scratch", "resume") and not os.path.isdir(self.init_from):
            raise ConfigError(f"--init_from must be scratch, resume or a Hugging Face GPT-2 folder, "
                              f"got {self.init_from!r}")
        if self.tokenizer == "bpe" and self.vocab_size < 257:
            raise ConfigError(f"--vocab_size must be at least 257 for --tokenizer=bpe, got {self.vocab_size}")
        choices = {"tokenizer": ("char", "bpe"), "device": backend.DEVICES,
                   "dtype": ("float32", "float64"), "dataset": ("pydoc", "shakespeare")}
        for name, allowed in choices.items():
            if getattr(self, name) not in allowed:
                raise ConfigError(f"--{name} must be one of {', '.join(allowed)}, got {getattr(self, name)!r}")
        return self


def estimate_loss(model, dataset, cfg, rng):
    """Mean loss over ``eval_iters`` random batches of each split, in eval mode."""
    out = {}
    model.eval()
    with no_grad():
        for split in ("train", "val"):
            losses = []
            for _ in range(cfg.eval_iters):
                x, y = dataset.get_batch(split, cfg.batch_size, rng)
                losses.append(model(x, y)[1].item())
            out[split] = float(np.mean(losses))
    model.train()
    return out


class Progress:
    """A one-line progress bar on a terminal; on anything else, nothing (the log lines remain)."""

    def __init__(self, total, start, enabled, stream=sys.stderr):
        self.total, self.start = total, start
        self.enabled = enabled and stream.isatty()
        self.stream, self.t0 = stream, time.time()

    def update(self, it, loss):
        if not self.enabled:
            return
        done = (it - self.start + 1) / max(1, self.total - self.start)
        eta = (time.time() - self.t0) / max(done, 1e-9) * (1 - done)
        bar = "#" * int(30 * done)
        self.stream.write(f"\r[{bar:<30}] {it + 1}/{self.total} loss {loss:.4f} eta {eta:4.0f}s ")
        self.stream.flush()

    def clear(self):
        if self.enabled:
            self.stream.write("\r" + " " * 79 + "\r")
            self.stream.flush()


RESUME_KEYS = ("iter", "best_val_loss", "tokenizer", "batch_rng", "rng")


def _check_resumable(ckpt):
    """A checkpoint can resume training only with optimizer state, RNG states and a tokenizer."""
    missing = [k for k in RESUME_KEYS if k not in ckpt.extra]
    if ckpt.optimizer_state is None:
        missing.append("optimizer state")
    if missing:
        raise CheckpointError(f"{ckpt.path}: cannot resume training from this checkpoint; "
                              f"it lacks {', '.join(missing)}")
    try:
        tokenizer_from_dict(ckpt.extra["tokenizer"])
    except (ValueError, TypeError, KeyError) as e:
        raise CheckpointError(f"{ckpt.path}: the saved tokenizer is unreadable ({e})") from None


def _prepare_out_dir(out_dir):
    try:
        os.makedirs(out_dir, exist_ok=True)
    except OSError as e:
        raise ConfigError(f"--out_dir={out_dir}: cannot create it ({e.strerror})") from None
    if not os.access(out_dir, os.W_OK | os.X_OK):
        raise ConfigError(f"--out_dir={out_dir}: the folder is not writable")


def _load_data(cfg, tokenizer=None):
    text, name = load_text(cfg.dataset, cfg.data)
    if tokenizer is None:
        tokenizer = (BPETokenizer.train(text, cfg.vocab_size) if cfg.tokenizer == "bpe"
                     else CharTokenizer.from_text(text))
    try:
        ids = tokenizer.encode_array(text)
    except ValueError as e:  # resuming on text with characters the checkpoint's tokenizer lacks
        raise DataError(f"{name}: {e}") from None
    return Dataset(ids, cfg.block_size), tokenizer, name


def train(cfg, print_fn=print):
    """Run training as ``cfg`` says; returns the final {"train": loss, "val": loss} estimate."""
    cfg.validate()
    backend.require_device(cfg.device)
    _prepare_out_dir(cfg.out_dir)
    ckpt_path = os.path.join(cfg.out_dir, CKPT_NAME)
    log_path = os.path.join(cfg.out_dir, "log.jsonl")
    dtype = np.dtype(cfg.dtype)

    ckpt = pretrained = tokenizer = None
    if cfg.init_from == "resume":
        ckpt = load_checkpoint(ckpt_path)
        _check_resumable(ckpt)
        tokenizer = tokenizer_from_dict(ckpt.extra["tokenizer"])
        model_config = ckpt.config
        cfg.block_size = model_config.block_size  # the model's shape comes from the checkpoint
    elif cfg.init_from != "scratch":  # a GPT-2 folder: its weights and its own BPE tokenizer
        pretrained = from_pretrained(cfg.init_from, dtype=cfg.dtype, dropout=cfg.dropout)
        cfg.block_size = min(cfg.block_size, pretrained.config.block_size)
        model_config = crop_block_size(pretrained, cfg.block_size).config
        tokenizer = load_hf_tokenizer(cfg.init_from)
    dataset, tokenizer, data_name = _load_data(cfg, tokenizer)
    if ckpt is None and pretrained is None:
        model_config = GPTConfig(block_size=cfg.block_size, vocab_size=tokenizer.vocab_size,
                                 n_layer=cfg.n_layer, n_head=cfg.n_head, n_embd=cfg.n_embd,
                                 dropout=cfg.dropout, bias=cfg.bias)

    backend.manual_seed(cfg.seed)
    model = (pretrained if pretrained is not None else GPT(model_config)).to(device=cfg.device, dtype=dtype)
    optimizer = model.configure_optimizers(cfg.weight_decay, cfg.learning_rate, (cfg.beta1, cfg.beta2))
    batch_rng = np.random.default_rng(cfg.seed)
    start_iter, best_val = 0, float("inf")
    if ckpt is not None:
        model.load_state_dict(ckpt.model_state)
        try:
            optimizer.load_state_dict(ckpt.optimizer_state)
        except (ValueError, TypeError, KeyError) as e:
            raise CheckpointError(f"{ckpt_path}: the optimizer state does not fit the model: {e}") from None
        start_iter, best_val = ckpt.extra["iter"], ckpt.extra["best_val_loss"]
        batch_rng.bit_generator.state = ckpt.extra["batch_rng"]
        backend.set_rng_state(ckpt.extra["rng"])
    lr_decay_iters = cfg.lr_decay_iters or cfg.max_iters

    print_fn(f"data: {data_name}, {len(dataset.train):,} train and {len(dataset.val):,} val tokens, "
             f"vocab {tokenizer.vocab_size}")
    print_fn(f"model: {model.num_parameters() / 1e6:.2f}M parameters, {model_config.n_layer} layers, "
             f"{model_config.n_head} heads, {model_config.n_embd} wide, block {model_config.block_size}; "
             f"device {cfg.device}, {cfg.dtype}")
    if ckpt is not None:
        print_fn(f"resuming from {ckpt_path} at iteration {start_iter}")

    log = open(log_path, "a" if ckpt is not None else "w", encoding="utf-8")
    progress = Progress(cfg.max_iters, start_iter, cfg.progress)
    losses = None
    try:
        for it in range(start_iter, cfg.max_iters + 1):
            lr = cosine_lr(it, cfg.learning_rate, cfg.warmup_iters, lr_decay_iters, cfg.min_lr)
            resumed_here = ckpt is not None and it == start_iter
            if (it % cfg.eval_interval == 0 or it == cfg.max_iters) and not resumed_here:
                losses = estimate_loss(model, dataset, cfg, np.random.default_rng([cfg.seed, it]))
                progress.clear()
                print_fn(f"step {it}: train loss {losses['train']:.4f}, val loss {losses['val']:.4f}")
                log.write(json.dumps({"iter": it, "train_loss": losses["train"],
                                      "val_loss": losses["val"]}) + "\n")
                log.flush()
                if losses["val"] < best_val or cfg.always_save_checkpoint:
                    best_val = min(best_val, losses["val"])
                    extra = {"iter": it, "best_val_loss": best_val, "train_config": asdict(cfg),
                             "tokenizer": tokenizer.to_dict(), "batch_rng": batch_rng.bit_generator.state,
                             "rng": backend.rng_state()}
                    save_checkpoint(ckpt_path, model, optimizer, extra)
            if it == cfg.max_iters:
                break
            t0 = time.perf_counter()
            loss = _train_step(model, optimizer, dataset, cfg, lr, batch_rng)
            if not math.isfinite(loss):
                raise TrainingError(f"the loss became {loss} at iteration {it}; the last good "
                                    f"checkpoint is kept in {ckpt_path}")
            ms = (time.perf_counter() - t0) * 1000
            log.write(json.dumps({"iter": it, "loss": loss, "lr": lr, "ms": round(ms, 2)}) + "\n")
            progress.update(it, loss)
            if it % cfg.log_interval == 0 and not progress.enabled:
                print_fn(f"iter {it}: loss {loss:.4f}, lr {lr:.2e}, {ms:.1f} ms")
    finally:
        progress.clear()
        log.close()

    if cfg.sample_tokens:
        print_fn(f"\nA sample from the trained model ({cfg.sample_tokens} tokens):\n")
        start = "\n" if isinstance(tokenizer, BPETokenizer) or "\n" in tokenizer.stoi else tokenizer.chars[0]
        print_fn(sample_text(model, tokenizer, start, cfg.sample_tokens, seed=cfg.seed))
    return losses


def _train_step(model, optimizer, dataset, cfg, lr, batch_rng):
    """One optimizer step over ``gradient_accumulation_steps`` micro-batches; returns the mean loss."""
    for group in optimizer.param_groups:
        group["lr"] = lr
    total = 0.0
    n = cfg.gradient_accumulation_steps
    for _ in range(n):
        x, y = dataset.get_batch("train", cfg.batch_size, batch_rng)
        _, loss = model(x, y)
        (loss * (1.0 / n)).backward() if n > 1 else loss.backward()
        total += loss.item() / n
    if cfg.grad_clip:
        clip_grad_norm_(model.parameters(), cfg.grad_clip)
    optimizer.step()
    model.zero_grad()
    return total


def sample_text(model, tokenizer, start, max_new_tokens, temperature=0.8, top_k=200, top_p=None, seed=None):
    """Generate from ``start`` text and decode it."""
    ids = np.asarray([tokenizer.encode(start)], dtype=np.int64)
    out = model.generate(ids, max_new_tokens, temperature=temperature, top_k=top_k, top_p=top_p, seed=seed)
    return tokenizer.decode(out[0].tolist())
