"""The training loop: nanoGPT's recipe on our engine.

``train(TrainConfig(...))`` loads text, builds a character tokenizer and a GPT,
and runs AdamW with warmup + cosine decay, gradient clipping and gradient
accumulation. Every ``eval_interval`` it estimates train and val loss and saves
a checkpoint; it logs to ``out_dir/log.jsonl``; it can resume exactly.

This file reads like nanoGPT's ``train.py``: the config, then ``train``, the loop and the step.
What keeps a run honest lives beside it in ``run/``: the flag checks (``config.py``), what the
run starts from (``inputs.py``, ``resume.py``), its ``out_dir`` and lock (``outdir.py``,
``lock.py``), NaN and infinity (``finite.py``: a non-finite loss stops the run without saving
bad weights, or ``--skip_nonfinite=True`` skips the step), the progress bar, the random streams,
signals (``stopping.py``) and what the ranks of an MPI run share (``ranks.py``).

Under MPI (``mpiexec -n N python -m tinygrad_gpt train ...``) each of the N ranks takes the
micro-batches ``j % N == rank`` of every step and the gradients are summed over the ranks
(``distributed.py``), so the run is the same as one process with the same flags; rank 0
alone prints, logs, locks ``out_dir`` and reads and writes checkpoints.
"""
import contextlib
import math
import os
import time
from dataclasses import dataclass, asdict
from typing import ClassVar, Optional

import numpy as np

from .. import backend, functional as F
from ..anomaly import detect_anomaly
from ..errors import AnomalyError, FileError, Stopped, TrainingError
from ..model import GPT
from ..optim import clip_grad_norm_, cosine_lr
from ..storage.checkpoint import CKPT_NAME, save_checkpoint
from ..storage.fileio import file_op
from ..storage.pretrained import WEIGHTS_NAME
from ..tensor import no_grad
from ..text.bpe import BPETokenizer
from ..text.data import Dataset
from . import config, distributed, finite, ranks, resume, telemetry
from .inputs import read_inputs
from .outdir import OutDir
from .progress import Progress, duration
from .runlog import RunLog
from .settings import cpu_threads, tune_allocator_for_training
from .stopping import EXIT_CODES, Abort, StopSignals, should_stop, signal_name
from .streams import stream


@dataclass
class TrainConfig:
    # data
    dataset: str = "pydoc"          # the built-in text: Python's docs, or tiny Shakespeare (downloaded once)
    data: Optional[str] = None      # a UTF-8 text file, or a folder of shards (prepare's, llm.c's, nanoGPT's)
    out_dir: str = "out"            # where the checkpoint, log.jsonl and the lock go
    # model
    batch_size: int = 12            # sequences per micro-batch
    block_size: int = 64            # context length in tokens
    n_layer: int = 4                # transformer blocks
    n_head: int = 4                 # attention heads per block
    n_embd: int = 128               # width of the residual stream (a multiple of n_head)
    dropout: float = 0.0            # dropout probability while training
    bias: bool = True               # biases in the linear layers and layer norms
    # optimizer and schedule
    learning_rate: float = 1e-3     # the peak learning rate, reached after warmup
    max_iters: int = 2000           # training steps in all (a resumed run continues to it)
    lr_decay_iters: Optional[int] = None  # decay ends here, at min_lr (None: max_iters; resume: the checkpoint's)
    min_lr: float = 1e-4            # the learning rate after the decay
    warmup_iters: int = 100         # steps of linear warmup
    beta1: float = 0.9              # AdamW's first-moment decay
    beta2: float = 0.99             # AdamW's second-moment decay
    weight_decay: float = 0.1       # AdamW's decoupled weight decay (2-D weights only)
    grad_clip: float = 1.0          # clip the gradient norm to this (0 turns clipping off)
    gradient_accumulation_steps: int = 1  # micro-batches summed into one step
    # evaluation, logging, checkpoints
    eval_interval: int = 250        # estimate the losses and save a checkpoint every this many steps
    eval_iters: int = 50            # batches per loss estimate
    log_interval: int = 10          # print a loss line every this many steps (without a progress bar)
    health_interval: int = 50       # log each parameter's gradient norm and update ratio this often (0: never)
    always_save_checkpoint: bool = True  # save at every evaluation (False: only when val loss improves)
    init_from: str = "scratch"      # scratch | resume (out_dir's checkpoint) | a GPT-2 folder to fine-tune
    overwrite: bool = False         # a new run may replace the checkpoint in out_dir (else it is refused)
    tokenizer: str = "char"         # characters, or a byte-level BPE trained on the data first (scratch runs only)
    vocab_size: int = 1024          # the BPE's size for --tokenizer=bpe; the ids' range for shards without a tokenizer
    # system
    device: str = backend.default_device()  # where the arrays live (default: $TINYGRAD_GPT_DEVICE or cpu)
    dtype: str = "float32"          # the parameters' and activations' float type
    seed: int = 1337                # seeds the weights, dropout, batches and evaluation
    sample_tokens: int = 300        # tokens printed at the end (0: none)
    progress: bool = True           # a progress bar when writing to a terminal
    skip_nonfinite: bool = False    # drop a step whose loss or gradient is NaN/inf, count it, go on
    detect_anomaly: bool = False    # name the op that makes the first NaN/inf (slow: for debugging)
    ops: str = "fast"               # composed | rules | fast: how the ops run (functional.mode)
    ddp_overlap: bool = False       # under MPI: allreduce gradient buckets while backward runs
    ddp_bucket_mb: float = 1.0      # the size of those buckets, in MiB

    CHOICES: ClassVar[dict] = {"dataset": ("pydoc", "shakespeare"), "tokenizer": ("char", "bpe"),
                               "device": backend.DEVICES, "dtype": ("float32", "float64"), "ops": F.MODES}

    def validate(self):
        return config.check(self)


def train(cfg, print_fn=print):
    """Run training as ``cfg`` says; returns the final {"train": loss, "val": loss} estimate.

    The run holds a lock on ``out_dir``, so a second run there is refused, and a new run does
    not replace a checkpoint there unless ``cfg.overwrite``. Every step's loss and gradient norm
    are checked: a non-finite one stops the run (or, with ``skip_nonfinite``, drops that step),
    and weights that are not finite are never saved. The ops run in mode ``cfg.ops``
    (functional.mode). With TINYGRAD_GPT_TUNE_MALLOC=1 in the environment, training tunes
    glibc's allocator for the whole process (``settings.tune_allocator``); the fast layer
    does not need it.
    """
    cfg.validate()
    comm = distributed.world()
    ranks.check_ranks(cfg, comm)
    print_fn = print_fn if comm.rank == 0 else ranks.quiet
    if comm.size > 1:
        distributed.share_cores(comm)  # this rank's share of the cores, BLAS and helper threads
    if cfg.device == "cuda" and comm.size > 1:
        backend.use_gpu(comm.local_rank)  # one GPU per rank on each machine
    backend.require_device(cfg.device)
    tune_allocator_for_training()
    # from here on a signal never leaves a half-made out_dir
    with StopSignals() as signals, OutDir(cfg, comm.rank == 0, print_fn) as out:
        out.run = run = _setup(cfg, print_fn, comm)  # reads and checks every file; writes nothing
        out.remove_partial_writes()
        run.signals = signals
        losses = _train(run, print_fn)
    if cfg.skip_nonfinite:
        print_fn(f"{run.skipped} steps skipped for a non-finite loss or gradient")
    if cfg.sample_tokens and comm.rank == 0:
        tokenizer = run.tokenizer
        print_fn(f"\nA sample from the trained model ({cfg.sample_tokens} tokens):\n")
        start = "\n" if isinstance(tokenizer, BPETokenizer) or "\n" in tokenizer.stoi else tokenizer.chars[0]
        with F.mode(cfg.ops):
            print_fn(sample_text(run.model, tokenizer, start, cfg.sample_tokens, seed=cfg.seed))
    return losses


@dataclass
class _Run:
    """Everything one training run carries from iteration to iteration."""
    cfg: TrainConfig
    model: GPT
    optimizer: object
    dataset: Dataset
    tokenizer: object
    batch_rng: np.random.Generator
    ckpt_path: str
    start_iter: int = 0
    best_val: float = float("inf")
    saved_iter: Optional[int] = None  # the iteration of the last good checkpoint on disk
    skipped: int = 0                  # steps dropped for a non-finite loss or gradient
    resumed: bool = False
    lr_decay_iters: int = 0           # the schedule's decay length (a resume keeps the checkpoint's)
    eval_pending: bool = False        # the checkpoint was saved by a stop before its evaluation
    signals: object = None            # StopSignals: a SIGTERM or Ctrl-C asks for a stop
    comm: object = distributed.Single()  # the ranks training together (distributed.py)
    sync: Optional[distributed.GradSync] = None  # sums their gradients; None when alone


def _setup(cfg, print_fn, comm=distributed.Single()):
    """Data, tokenizer, model and optimizer: from scratch, a GPT-2 folder, or the checkpoint.

    Under MPI rank 0 reads the files (and trains the tokenizer) and broadcasts the result:
    the tokenizer and the model's config as JSON, the tokens, weights and optimizer state as
    buffers, so the other ranks need no files at all."""
    ckpt_path = os.path.join(cfg.out_dir, CKPT_NAME)
    ckpt = pretrained = dataset = tokenizer = data_name = model_config = None
    if comm.rank == 0:
        ckpt, pretrained, dataset, tokenizer, data_name, model_config = read_inputs(cfg, ckpt_path)
    if comm.size > 1:
        dataset, tokenizer, data_name, model_config = ranks.share_inputs(
            comm, cfg, dataset, tokenizer, data_name, model_config)

    backend.manual_seed(cfg.seed)
    model = (pretrained if pretrained is not None else GPT(model_config)).to(device=cfg.device,
                                                                             dtype=np.dtype(cfg.dtype))
    with F.mode(cfg.ops):  # the optimizer of the run's mode: fast.AdamW in "fast"
        optimizer = model.configure_optimizers(cfg.weight_decay, cfg.learning_rate, (cfg.beta1, cfg.beta2))
    run = _Run(cfg, model, optimizer, dataset, tokenizer, stream(cfg.seed, "batches"), ckpt_path,
               lr_decay_iters=cfg.lr_decay_iters or cfg.max_iters, comm=comm)
    if ckpt is not None:
        resume.restore(run, ckpt)
        resume.keep_schedule(run, ckpt, print_fn)
    if ckpt is not None or pretrained is not None:  # rank 0 alone (the others read no file), before it shares
        weights = os.path.join(cfg.init_from, WEIGHTS_NAME)  # a GPT-2 folder's, unless it is sharded
        finite.check_loaded_weights(model, dataset, ckpt_path if ckpt is not None else
                                    weights if os.path.isfile(weights) else cfg.init_from)
    if comm.size > 1:
        ranks.share_state(run, ckpt)
    _describe(run, data_name, print_fn)
    return run


def _describe(run, data_name, print_fn):
    """What the run trains on, what it trains, and where it starts."""
    cfg, c, comm = run.cfg, run.model.config, run.comm
    print_fn(f"data: {data_name}, {len(run.dataset.train):,} train and {len(run.dataset.val):,} val tokens, "
             f"vocab {run.tokenizer.vocab_size}")
    print_fn(f"model: {run.model.num_parameters() / 1e6:.2f}M parameters, {c.n_layer} layers, "
             f"{c.n_head} heads, {c.n_embd} wide, block {c.block_size}; device {cfg.device}, {cfg.dtype}")
    if comm.size > 1:
        print_fn(f"{comm.size} processes: {cfg.gradient_accumulation_steps // comm.size} micro-batches "
                 f"of {cfg.batch_size} each per step, {cpu_threads()} CPU thread(s) each")
    if cfg.init_from == "resume":
        print_fn(f"resuming from {run.ckpt_path} at iteration {run.start_iter}")


def _train(run, print_fn):
    """The loop in the run's mode of ops, with anomaly mode if asked; the allreduce closed after."""
    anomaly = detect_anomaly() if run.cfg.detect_anomaly else contextlib.nullcontext()
    # non-finite values are caught by the loop's checks, so NumPy's warnings would only repeat them
    quiet_numpy = np.errstate(over="ignore", divide="ignore", invalid="ignore")
    try:
        with F.mode(run.cfg.ops), anomaly, quiet_numpy:
            return _loop(run, print_fn)
    except TrainingError as e:  # met by every rank alike (from allreduced values), unless
        e.every_rank = not isinstance(e.__context__, AnomalyError)  # one rank's op made a NaN
        raise
    finally:
        if run.sync is not None:
            run.sync.close()


def _step(run, it, lr, log, progress, meter, health, print_fn):
    """One training step, logged with its speed, and with the parameters' health when it is due."""
    cfg = run.cfg
    t0 = time.perf_counter()
    optimizer = health.watch(run.optimizer, run.model, it)  # notes every health_interval steps
    step_args = (run.model, optimizer, run.dataset, cfg, lr, run.batch_rng)
    loss, norm = _train_step(*step_args) if run.sync is None else _train_step(*step_args, sync=run.sync)
    seconds = time.perf_counter() - t0
    ms = round(seconds * 1000, 2)
    if not (math.isfinite(loss) and math.isfinite(norm)):
        health.record(it, norm)
        finite.nonfinite_step(run, it, loss, norm, log, lr, ms, print_fn)
        return
    speed = meter.step(seconds)
    log.write({"iter": it, "loss": loss, "lr": lr, "ms": ms, **speed})
    record = health.record(it, norm)
    if record is not None:
        log.write(record)
    progress.update(it, loss, telemetry.shown(speed))
    if it % cfg.log_interval == 0 and not progress.enabled:
        print_fn(f"iter {it}: loss {loss:.4f}, lr {lr:.2e}, {ms:.1f} ms, {telemetry.shown(speed)}, "
                 f"{duration(progress.eta(it))} left")


def _loop(run, print_fn):
    """Iterations start_iter .. max_iters: evaluate and save on schedule, then step."""
    cfg = run.cfg
    log = RunLog(cfg.out_dir) if run.comm.rank == 0 else ranks.SilentLog()  # rank 0 alone writes the log
    progress = Progress(cfg.max_iters, run.start_iter, cfg.progress and run.comm.rank == 0)
    losses, it = None, run.start_iter
    run.signals.armed = True
    try:
        moved = log.set_aside_past(run.start_iter if run.resumed else None)
        if moved:
            print_fn(f"moved {moved} records that the checkpoint does not hold from {log.path} to {log.old_path}")
        log.open()
        meter, health = telemetry.Meter.for_run(run.model, cfg, run.comm), telemetry.Health(cfg.health_interval)
        log.write(meter.start_record(run.start_iter, cfg.device))  # peak_flops and flops_per_token, once
        for it in range(run.start_iter, cfg.max_iters + 1):
            lr = cosine_lr(it, cfg.learning_rate, cfg.warmup_iters, run.lr_decay_iters, cfg.min_lr)
            resumed_here = run.resumed and it == run.start_iter and not run.eval_pending
            eval_due = (it % cfg.eval_interval == 0 or it == cfg.max_iters) and not resumed_here
            signum = should_stop(run.signals, run.comm)
            if signum:
                _stop_and_save(run, it, eval_due, signum)
            if eval_due:
                progress.clear()
                losses = _evaluate_and_save(run, it, log, print_fn)
            if it == cfg.max_iters:
                break
            _step(run, it, lr, log, progress, meter, health, print_fn)
    except AnomalyError as e:
        raise TrainingError(f"at iteration {it}: {e}") from None
    except FileError as e:
        log.close()
        with contextlib.suppress(FileError):  # keep the log to what the checkpoint on disk holds
            log.set_aside_past(run.saved_iter)
        raise FileError(f"{e}; {finite.kept(run)}") from None
    except Abort as e:
        raise Stopped(f"{signal_name(e.signum)} again at iteration {it}: stopped at once without saving; "
                      f"{finite.kept(run)}", EXIT_CODES[e.signum]) from None
    finally:
        run.signals.armed = False
        progress.clear()
        log.close()
    return losses


def _stop_and_save(run, it, eval_pending, signum):
    """Save the state before step ``it`` (unless the checkpoint on disk holds it) and stop."""
    if run.saved_iter != it:
        finite.check_weights(run, it)
        _save(run, it, eval_pending)
    raise Stopped(f"stopped by {signal_name(signum)}: saved iteration {it} to {run.ckpt_path}",
                  EXIT_CODES.get(signum, 1), saved=True)


def estimate_loss(model, dataset, cfg, rng, comm=distributed.Single()):
    """Mean loss over ``eval_iters`` random batches of each split, in eval mode.

    With several ranks each draws every batch and evaluates those with ``k % size == rank``;
    one allreduce adds up the losses."""
    out = {}
    model.eval()
    with no_grad():
        for split in ("train", "val"):
            losses = []
            for k in range(cfg.eval_iters):
                if k % comm.size != comm.rank:  # another rank's batch: draw its windows, read nothing
                    dataset.skip_batch(split, cfg.batch_size, rng)
                    continue
                x, y = dataset.get_batch(split, cfg.batch_size, rng)
                losses.append(model(x, y)[1].item())
            out[split] = float(np.mean(losses)) if comm.size == 1 else math.fsum(losses) / cfg.eval_iters
    model.train()
    if comm.size > 1:
        both = comm.allreduce_(np.array([out["train"], out["val"]]))
        out = {"train": float(both[0]), "val": float(both[1])}
    return out


def _evaluate_and_save(run, it, log, print_fn):
    """Estimate both losses, log them, and save a checkpoint unless something is not finite."""
    cfg = run.cfg
    losses = estimate_loss(run.model, run.dataset, cfg, stream(cfg.seed, "eval", it), run.comm)
    if run.comm.size > 1:
        distributed.check_same_weights(run.comm, run.model, f"at iteration {it}")
    print_fn(f"step {it}: train loss {losses['train']:.4f}, val loss {losses['val']:.4f}")
    log.write({"iter": it, "train_loss": losses["train"], "val_loss": losses["val"]})
    finite.check_weights(run, it)
    if not (math.isfinite(losses["train"]) and math.isfinite(losses["val"])):
        fault = f"the estimated losses are {losses['train']} (train) and {losses['val']} (val) at iteration {it}"
        if not cfg.skip_nonfinite:
            raise TrainingError(f"{fault}; {finite.kept(run)}")
        print_fn(f"step {it}: no checkpoint saved, {fault}")
        return losses
    if losses["val"] < run.best_val or cfg.always_save_checkpoint:
        run.best_val = min(run.best_val, losses["val"])
        _save(run, it)
    return losses


def _save(run, it, eval_pending=False):
    """Write the checkpoint of iteration ``it``: the state before its step."""
    extra = {"iter": it, "best_val_loss": run.best_val, "train_config": asdict(run.cfg),
             "tokenizer": run.tokenizer.to_dict(), "batch_rng": run.batch_rng.bit_generator.state,
             "rng": backend.rng_state(), "skipped": run.skipped, "lr_decay_iters": run.lr_decay_iters,
             "eval_pending": eval_pending}
    if run.comm.size > 1:  # every rank takes part; rank 0 writes the other ranks' dropout streams too
        rngs = run.comm.gather_json(backend.rng_state())
        extra["rank_rngs"] = rngs[1:] if rngs is not None else None
    if run.comm.rank == 0:
        with file_op("writing", run.ckpt_path):
            save_checkpoint(run.ckpt_path, run.model, run.optimizer, extra)
    run.saved_iter = it


def _train_step(model, optimizer, dataset, cfg, lr, batch_rng, sync=None):
    """One optimizer step over ``gradient_accumulation_steps`` micro-batches.

    Returns (mean loss, gradient norm before clipping). When either is not finite the
    update is not made: the gradients are dropped and the weights stay as they were.
    With ``sync`` (several ranks) every rank draws all the micro-batches, runs those with
    ``j % size == rank``, and the gradients and loss are summed over the ranks.
    """
    for group in optimizer.param_groups:
        group["lr"] = lr
    total = None
    n = cfg.gradient_accumulation_steps
    rank, size = (sync.comm.rank, sync.comm.size) if sync is not None else (0, 1)
    for j in range(n):
        if j % size != rank:  # another rank's micro-batch: draw its windows, read nothing
            dataset.skip_batch("train", cfg.batch_size, batch_rng)
            continue
        x, y = dataset.get_batch("train", cfg.batch_size, batch_rng)
        _, loss = model(x, y)
        part = loss.data.astype(np.float64) / n  # summed on the device: no wait per micro-batch
        total = part if total is None else total + part
        if sync is not None and j + size >= n:  # this rank's last: its gradients will be final
            sync.arm(float(total))  # its loss goes into the allreduce's buffer (through the host)
        (loss * (1.0 / n)).backward() if n > 1 else loss.backward()
    total = float(total) if sync is None else sync.finish()  # the step's first host sync: the loss
    norm = clip_grad_norm_(model.parameters(), cfg.grad_clip or math.inf)  # the second: the norm
    if math.isfinite(total) and math.isfinite(norm):
        optimizer.step()
    model.zero_grad()
    return total, norm


def sample_text(model, tokenizer, start, max_new_tokens, temperature=0.8, top_k=200, top_p=None, seed=None):
    """Generate from ``start`` text and decode it."""
    ids = np.asarray([tokenizer.encode(start)], dtype=np.int64)
    out = model.generate(ids, max_new_tokens, temperature=temperature, top_k=top_k, top_p=top_p, seed=seed)
    return tokenizer.decode(out[0].tolist())
