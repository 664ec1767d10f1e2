"""Resuming a run: what a checkpoint must hold to go on, and putting it back exactly.

A resumed run continues the saved one step for step: the weights, AdamW's moments, the iteration,
the batch stream and the dropout stream all come back, and the learning-rate schedule the
checkpoint followed is kept unless ``--lr_decay_iters`` says otherwise.
"""
from .. import backend
from ..errors import CheckpointError
from ..optim import cosine_lr
from ..storage.checkpoint import check_training_state
from ..storage.serialization import is_int

RESUME_KEYS = ("iter", "best_val_loss", "tokenizer", "batch_rng", "rng")


def check_resumable(ckpt):
    """A checkpoint can resume training only with optimizer state, RNG states and a tokenizer,
    each of the right type and range; returns the tokenizer."""
    missing = [k for k in RESUME_KEYS if k not in ckpt.extra]
    if ckpt.optimizer_state is None:
        missing.append("optimizer state")
    if missing:
        raise CheckpointError(f"{ckpt.path}: cannot resume training from this checkpoint; "
                              f"it lacks {', '.join(missing)}")
    tokenizer = check_training_state(ckpt)
    rngs = ckpt.extra.get("rank_rngs", [])  # the dropout streams of ranks 1.. of a run under MPI
    if not isinstance(rngs, list):
        raise CheckpointError(f"{ckpt.path}: extra 'rank_rngs' must be a list, got {str(rngs)[:40]}")
    for r, state in enumerate(rngs, 1):
        try:
            backend.check_rng_state(state)
        except ValueError as e:
            raise CheckpointError(f"{ckpt.path}: extra 'rank_rngs' entry {r} is not a random generator "
                                  f"state: {e}") from None
    return tokenizer


def restore(run, ckpt):
    """Weights, optimizer state, position and RNG states from a checkpoint (already validated)."""
    run.model.load_state_dict(ckpt.model_state)
    try:
        run.optimizer.load_state_dict(ckpt.optimizer_state)
    except (ValueError, TypeError, KeyError) as e:
        raise CheckpointError(f"{ckpt.path}: the optimizer state does not fit the model: {e}") from None
    run.start_iter, run.best_val = ckpt.extra["iter"], ckpt.extra["best_val_loss"]
    run.saved_iter, run.skipped, run.resumed = run.start_iter, ckpt.extra.get("skipped", 0), True
    run.eval_pending = ckpt.extra.get("eval_pending") is True
    run.batch_rng.bit_generator.state = ckpt.extra["batch_rng"]
    backend.set_rng_state(ckpt.extra["rng"])


def keep_schedule(run, ckpt, print_fn):
    """On resume, keep the decay length the checkpoint was trained with unless --lr_decay_iters says
    otherwise; say what a change or a longer run does to the learning rate."""
    cfg, start = run.cfg, run.start_iter
    saved_cfg = ckpt.extra.get("train_config") if isinstance(ckpt.extra.get("train_config"), dict) else {}
    saved = ckpt.extra.get("lr_decay_iters") or saved_cfg.get("lr_decay_iters") or saved_cfg.get("max_iters")
    if not is_int(saved) or saved <= 0:
        return
    if cfg.lr_decay_iters is None:
        run.lr_decay_iters = saved
        if cfg.max_iters > saved:
            print_fn(f"note: keeping the checkpoint's schedule, which decays to --min_lr={cfg.min_lr:g} at "
                     f"iteration {saved}; iterations {max(saved, start)}-{cfg.max_iters} run at min_lr "
                     f"(--lr_decay_iters={cfg.max_iters} would stretch the decay instead)")
    elif cfg.lr_decay_iters != saved:
        old = cosine_lr(start, cfg.learning_rate, cfg.warmup_iters, saved, cfg.min_lr)
        new = cosine_lr(start, cfg.learning_rate, cfg.warmup_iters, cfg.lr_decay_iters, cfg.min_lr)
        print_fn(f"note: --lr_decay_iters={cfg.lr_decay_iters} changes the schedule the checkpoint followed "
                 f"(decay over {saved} iterations): the learning rate at iteration {start} becomes "
                 f"{new:.3g} instead of {old:.3g}")
