"""Sampling from a trained checkpoint: ``python -m tinygrad_gpt sample --out_dir=out``."""
import os
from dataclasses import dataclass
from typing import ClassVar, Optional

import numpy as np

from .. import backend, functional as F
from ..storage.checkpoint import checkpoint_tokenizer, load_checkpoint
from ..errors import CheckpointError, ConfigError
from ..storage.fileio import file_op
from ..model import sampling_problem
from ..text.data import read_text_file
from ..storage.pretrained import from_pretrained, load_hf_tokenizer, missing_folder


@dataclass
class SampleConfig:
    out_dir: str = "out"            # the training run whose checkpoint is sampled
    init_from: str = "resume"       # resume (out_dir's checkpoint) | a Hugging Face GPT-2 folder
    start: str = "\n"               # the prompt, or FILE:path to read it from a file
    num_samples: int = 3            # continuations to print
    max_new_tokens: int = 300       # tokens generated for each
    temperature: float = 0.8        # 0: always the likeliest token
    top_k: Optional[int] = 200      # keep only the k likeliest tokens (None: all)
    top_p: Optional[float] = None   # keep the smallest set with this much probability
    seed: int = 1337                # the same seed gives the same samples
    device: str = backend.default_device()  # where the model runs (default: $TINYGRAD_GPT_DEVICE or cpu)
    use_cache: bool = True          # the KV cache (same tokens, faster)
    ops: str = "fast"               # composed | rules | fast: how the ops run (functional.mode)

    CHOICES: ClassVar[dict] = {"device": backend.DEVICES, "ops": F.MODES}

    def validate(self):
        for name in ("num_samples", "max_new_tokens"):
            if getattr(self, name) <= 0:
                raise ConfigError(f"--{name} must be positive, got {getattr(self, name)}")
        problem = sampling_problem(self.temperature, self.top_k, self.top_p)
        if problem is not None:
            raise ConfigError(f"--{problem}")
        if self.init_from != "resume" and not os.path.isdir(self.init_from):
            raise ConfigError(missing_folder(self.init_from, "resume"))
        for name, allowed in self.CHOICES.items():
            if getattr(self, name) not in allowed:
                raise ConfigError(f"--{name} must be one of {', '.join(allowed)}, got {getattr(self, name)!r}")
        return self


def prompt_text(start):
    """The prompt itself, or the contents of a file for ``FILE:path``."""
    return read_text_file(start[len("FILE:"):]) if start.startswith("FILE:") else start


def _from_checkpoint(cfg):
    path = os.path.join(cfg.out_dir, "ckpt.safetensors")
    with file_op("reading", path):
        ckpt = load_checkpoint(path)
    tokenizer = checkpoint_tokenizer(ckpt)
    return ckpt.build_model(device=cfg.device), tokenizer


def sample(cfg, print_fn=print):
    """Print ``num_samples`` continuations of the prompt; returns them as a list of strings."""
    cfg.validate()
    backend.require_device(cfg.device)
    if cfg.init_from != "resume":  # a Hugging Face GPT-2 folder, with its own tokenizer
        model = from_pretrained(cfg.init_from, device=cfg.device)
        tokenizer = load_hf_tokenizer(cfg.init_from, vocab_size=model.config.vocab_size)
        weights = os.path.join(cfg.init_from, "model.safetensors")
    else:
        model, tokenizer = _from_checkpoint(cfg)
        weights = os.path.join(cfg.out_dir, "ckpt.safetensors")
    model.eval()
    text = prompt_text(cfg.start)
    if not text:
        raise ConfigError("--start is empty: give at least one character of prompt")
    try:
        ids = np.asarray([tokenizer.encode(text)] * cfg.num_samples, dtype=np.int64)
    except ValueError as e:
        where = f"--start={cfg.start}" if cfg.start.startswith("FILE:") else "--start"
        raise ConfigError(f"{where}: {e}") from None
    try:  # weights too large for their dtype overflow; that is reported once, below, not warned about
        with F.mode(cfg.ops), np.errstate(over="ignore", invalid="ignore", divide="ignore"):
            out = model.generate(ids, cfg.max_new_tokens, temperature=cfg.temperature, top_k=cfg.top_k,
                                 top_p=cfg.top_p, use_cache=cfg.use_cache, seed=cfg.seed)
    except FloatingPointError as e:
        dtype = model.transformer.wte.weight.dtype
        raise CheckpointError(f"{weights}: {e}: the weights overflow in {dtype}") from None
    samples = [tokenizer.decode(row.tolist()) for row in out]
    for s in samples:
        print_fn(s)
        print_fn("---------------")
    return samples
