"""The checks of a training config: every flag's range, before anything is read or written.

``TrainConfig.validate`` (in ``train.py``) calls ``check(cfg)``; each problem is one ``ConfigError``
naming the flag, as the command line spells it.
"""
import math
import os

from ..errors import ConfigError
from ..model import heads_problem
from ..storage.pretrained import missing_folder

POSITIVE = ("batch_size", "block_size", "n_layer", "n_head", "n_embd", "max_iters",
            "gradient_accumulation_steps", "eval_interval", "eval_iters", "log_interval")
NON_NEGATIVE = ("warmup_iters", "sample_tokens", "health_interval")
FINITE = ("learning_rate", "min_lr", "weight_decay", "grad_clip", "ddp_bucket_mb")
FRACTIONS = ("beta1", "beta2", "dropout")  # in [0, 1)


def check(cfg):
    """Raise ConfigError for the first flag of ``cfg`` that is out of range; return ``cfg``."""
    for name in POSITIVE:
        if getattr(cfg, name) <= 0:
            raise ConfigError(f"--{name} must be positive, got {getattr(cfg, name)}")
    for name in NON_NEGATIVE:
        if getattr(cfg, name) < 0:
            raise ConfigError(f"--{name} must be >= 0, got {getattr(cfg, name)}")
    for name in FINITE:
        if not getattr(cfg, name) >= 0 or not math.isfinite(getattr(cfg, name)):
            raise ConfigError(f"--{name} must be a finite number >= 0, got {getattr(cfg, name)}")
    if cfg.lr_decay_iters is not None and cfg.lr_decay_iters <= 0:
        raise ConfigError(f"--lr_decay_iters must be positive, got {cfg.lr_decay_iters}")
    for name in FRACTIONS:
        if not 0 <= getattr(cfg, name) < 1:
            raise ConfigError(f"--{name} must be in [0, 1), got {getattr(cfg, name)}")
    problem = heads_problem(cfg.n_embd, cfg.n_head, flag="--")
    if problem:
        raise ConfigError(problem)
    if cfg.init_from not in ("scratch", "resume") and not os.path.isdir(cfg.init_from):
        raise ConfigError(missing_folder(cfg.init_from, "scratch, resume"))
    if cfg.tokenizer == "bpe" and cfg.vocab_size < 257:
        raise ConfigError(f"--vocab_size must be at least 257 for --tokenizer=bpe, got {cfg.vocab_size}")
    for name, allowed in cfg.CHOICES.items():
        if getattr(cfg, name) not in allowed:
            raise ConfigError(f"--{name} must be one of {', '.join(allowed)}, got {getattr(cfg, name)!r}")
    return cfg
