"""The training loop: nanoGPT's recipe on our engine.

``train(TrainConfig(...))`` loads text, builds a character tokenizer and a GPT,
and runs AdamW with warmup + cosine decay, gradient clipping and gradient
accumulation. Every ``eval_interval`` it estimates train and val loss and saves
a checkpoint; it logs to ``out_dir/log.jsonl``; it can resume exactly.

A run locks its ``out_dir`` (``lock.RunLock``), stops on a NaN or infinite loss or
gradient norm without saving bad weights (or skips such steps with
``--skip_nonfinite=True``), and can name the op that made a NaN (``--detect_anomaly=True``).

Under MPI (``mpiexec -n N python -m tinygrad_gpt train ...``) each of the N ranks takes the
micro-batches ``j % N == rank`` of every step and the gradients are summed over the ranks
(``distributed.py``), so the run is the same as one process with the same flags; rank 0
alone prints, logs, locks ``out_dir`` and reads and writes checkpoints.
"""
import contextlib
import math
import os
import signal
import sys
import time
from dataclasses import dataclass, asdict
from typing import ClassVar, Optional

import numpy as np

from . import backend, distributed, functional as F
from .anomaly import detect_anomaly
from .backend import get_array_module
from .checkpoint import CKPT_NAME, check_training_state, load_checkpoint, save_checkpoint
from .errors import AnomalyError, CheckpointError, ConfigError, DataError, FileError, Stopped, TrainingError
from .data import Dataset, load_text
from .model import GPT, GPTConfig
from .optim import clip_grad_norm_, cosine_lr
from .tensor import no_grad
from .tokenizer import CharTokenizer, tokenizer_from_dict
from .bpe import BPETokenizer
from .pretrained import WEIGHTS_NAME, crop_block_size, from_pretrained, load_hf_tokenizer
from .lock import RunLock
from .fast import tune_allocator_for_training
from .fileio import file_op
from .runlog import LOG_NAME, RunLog
from .stopping import EXIT_CODES, Abort, StopSignals, signal_name
from .fast.threads import cpu_threads
from .run import telemetry
from .text.folder import open_folder
from .text.shards import ShardDataset


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
        positive = ("batch_size", "block_size", "n_layer", "n_head", "n_embd", "max_iters",
                    "gradient_accumulation_steps", "eval_interval", "eval_iters", "log_interval")
        for name in positive:
            if getattr(self, name) <= 0:
                raise ConfigError(f"--{name} must be positive, got {getattr(self, name)}")
        for name in ("warmup_iters", "sample_tokens", "health_interval"):
            if getattr(self, name) < 0:
                raise ConfigError(f"--{name} must be >= 0, got {getattr(self, name)}")
        for name in ("learning_rate", "min_lr", "weight_decay", "grad_clip", "ddp_bucket_mb"):
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
        for name, allowed in self.CHOICES.items():
            if getattr(self, name) not in allowed:
                raise ConfigError(f"--{name} must be one of {', '.join(allowed)}, got {getattr(self, name)!r}")
        return self


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


class Progress:
    """A one-line progress bar on a terminal; on anything else, nothing (the log lines remain)."""

    def __init__(self, total, start, enabled, stream=sys.stderr):
        self.total, self.start = total, start
        self.enabled = enabled and stream.isatty()
        self.stream, self.t0 = stream, time.time()

    def eta(self, it):
        """Seconds left after step ``it``, extrapolated from the time so far (evaluations included)."""
        done = (it - self.start + 1) / max(1, self.total - self.start)
        return (time.time() - self.t0) / max(done, 1e-9) * (1 - done)

    def update(self, it, loss, speed=""):
        if not self.enabled:
            return
        done = (it - self.start + 1) / max(1, self.total - self.start)
        bar = "#" * int(30 * done)
        self.stream.write(f"\r[{bar:<30}] {it + 1}/{self.total} loss {loss:.4f} {speed} eta {self.eta(it):4.0f}s ")
        self.stream.flush()

    def clear(self):
        if self.enabled:
            self.stream.write("\r" + " " * 110 + "\r")
            self.stream.flush()


STREAMS = {"batches": 1, "eval": 2}


def stream(seed, purpose, *more):
    """A generator of its own for one purpose, derived from the seed.

    The model's init and dropout draw from ``backend.rng()`` (seeded with ``seed``); the
    training batches and the evaluation batches each get an independent stream, so no two
    of them replay the same random numbers.
    """
    return np.random.default_rng([seed, STREAMS[purpose], *more])


RESUME_KEYS = ("iter", "best_val_loss", "tokenizer", "batch_rng", "rng")


def _check_resumable(ckpt):
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


def _prepare_out_dir(out_dir):
    """Create ``out_dir`` if needed; returns the folders this made, deepest first."""
    made, folder = [], os.path.abspath(out_dir)
    while folder and not os.path.exists(folder) and folder != os.path.dirname(folder):
        made.append(folder)
        folder = os.path.dirname(folder)
    try:
        os.makedirs(out_dir, exist_ok=True)
    except OSError as e:
        _forget_out_dir(out_dir, made)
        raise ConfigError(f"--out_dir={out_dir}: cannot create it ({e.strerror})") from None
    if not os.access(out_dir, os.W_OK | os.X_OK):
        raise ConfigError(f"--out_dir={out_dir}: the folder is not writable")
    return made


def _forget_out_dir(out_dir, made):
    """Remove the folders a failed run made, if they hold nothing but its empty-handed log."""
    if not made:
        return
    with contextlib.suppress(OSError):
        os.remove(os.path.join(out_dir, LOG_NAME))
    for folder in made:
        try:
            os.rmdir(folder)
        except OSError:
            return


def _load_data(cfg, tokenizer=None, tokenizer_source=None):
    if cfg.data is not None and os.path.isdir(cfg.data):  # a folder of shards, read through memory maps
        return open_folder(cfg.data, cfg.block_size, tokenizer, tokenizer_source, cfg.vocab_size)
    text, name = load_text(cfg.dataset, cfg.data)
    if tokenizer is None:
        tokenizer = (BPETokenizer.train(text, cfg.vocab_size) if cfg.tokenizer == "bpe"
                     else CharTokenizer.from_text(text))
    where = cfg.data if cfg.data is not None else name
    try:
        ids = tokenizer.encode_array(text)
    except ValueError as e:  # resuming on text with characters the checkpoint's tokenizer lacks
        raise DataError(f"{where}: {e} (the tokenizer of {tokenizer_source})" if tokenizer_source
                        else f"{where}: {e}") from None
    dataset = Dataset(ids, cfg.block_size)
    for split in Dataset.SPLITS:
        if len(dataset.split(split)) < cfg.block_size + 1:
            raise DataError(f"{where}: the {split} split has {len(dataset.split(split))} tokens, too few for "
                            f"block_size {cfg.block_size} (it needs at least {cfg.block_size + 1}); use a "
                            f"smaller block_size or more text")
    return dataset, tokenizer, name


def train(cfg, print_fn=print):
    """Run training as ``cfg`` says; returns the final {"train": loss, "val": loss} estimate.

    The run holds a lock on ``out_dir``, so a second run there is refused. Every step's
    loss and gradient norm are checked: a non-finite one stops the run (or, with
    ``skip_nonfinite``, drops that step), and weights that are not finite are never saved.
    The ops run in mode ``cfg.ops`` (functional.mode). Training tunes glibc's allocator for the
    whole process (``fast.tune_allocator``) unless the environment sets TINYGRAD_GPT_TUNE_MALLOC=0.
    """
    cfg.validate()
    comm = distributed.world()
    _check_ranks(cfg, comm)
    print_fn = print_fn if comm.rank == 0 else _quiet
    if comm.size > 1:
        distributed.share_cores(comm)  # this rank's share of the cores, BLAS and helper threads
    if cfg.device == "cuda" and comm.size > 1:
        backend.use_gpu(comm.local_rank)  # one GPU per rank on each machine
    backend.require_device(cfg.device)
    tune_allocator_for_training()
    made, run = [], None
    try:
        with StopSignals() as signals:  # from here on a signal never leaves a half-made out_dir
            made = _prepare_out_dir(cfg.out_dir) if comm.rank == 0 else []
            with (RunLock(cfg.out_dir) if comm.rank == 0 else contextlib.nullcontext()) as lock:
                if lock is not None and lock.taken_over:
                    pid = f" (process {lock.stale_pid})" if lock.stale_pid is not None else ""
                    print_fn(f"taking over {lock.path}, left by a run that no longer exists{pid}")
                run = _setup(cfg, print_fn, comm)  # reads and checks every file; writes nothing
                if comm.rank == 0:
                    _remove_partial_writes(cfg.out_dir)
                run.signals = signals
                anomaly = detect_anomaly() if cfg.detect_anomaly else contextlib.nullcontext()
                # non-finite values are caught by the checks below, so NumPy's warnings would only repeat them
                try:
                    with F.mode(cfg.ops), anomaly, np.errstate(over="ignore", divide="ignore", invalid="ignore"):
                        losses = _loop(run, print_fn)
                except TrainingError as e:  # met by every rank alike (from allreduced values), unless
                    e.every_rank = not isinstance(e.__context__, AnomalyError)  # one rank's op made a NaN
                    raise
                finally:
                    if run.sync is not None:
                        run.sync.close()
    except BaseException:
        if comm.rank == 0 and (run is None or run.saved_iter is None):  # failed before anything worth keeping
            _forget_out_dir(cfg.out_dir, made)
        raise
    if cfg.skip_nonfinite:
        print_fn(f"{run.skipped} steps skipped for a non-finite loss or gradient")
    if cfg.sample_tokens and comm.rank == 0:
        tokenizer = run.tokenizer
        print_fn(f"\nA sample from the trained model ({cfg.sample_tokens} tokens):\n")
        start = "\n" if isinstance(tokenizer, BPETokenizer) or "\n" in tokenizer.stoi else tokenizer.chars[0]
        with F.mode(cfg.ops):
            print_fn(sample_text(run.model, tokenizer, start, cfg.sample_tokens, seed=cfg.seed))
    return losses


def _quiet(*args, **kwargs):
    """print_fn of the ranks other than 0: they say nothing."""


def _check_ranks(cfg, comm):
    """--gradient_accumulation_steps counts the micro-batches of all ranks together, as nanoGPT."""
    if cfg.gradient_accumulation_steps % comm.size:
        err = ConfigError(f"--gradient_accumulation_steps={cfg.gradient_accumulation_steps} must be a "
                          f"multiple of the number of processes ({comm.size}): each step's micro-batches "
                          f"are shared out among them")
        err.every_rank = True
        raise err


def _remove_partial_writes(out_dir):
    """Delete temporary checkpoint files a killed run left half-written (the lock is ours)."""
    for name in os.listdir(out_dir):
        if name.startswith(f".{CKPT_NAME}.") and name.endswith(".tmp"):
            try:
                os.remove(os.path.join(out_dir, name))
            except OSError:
                pass


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


class _SilentLog:
    """The log of the ranks other than 0: they write nothing."""
    path = old_path = os.devnull

    def set_aside_past(self, iteration):
        return 0

    def open(self):
        pass

    def write(self, record):
        pass

    def close(self):
        pass


def _setup(cfg, print_fn, comm=distributed.Single()):
    """Data, tokenizer, model and optimizer: from scratch, a GPT-2 folder, or the checkpoint.

    Under MPI rank 0 reads the files (and trains the tokenizer) and broadcasts the result:
    the tokenizer and the model's config as JSON, the tokens, weights and optimizer state as
    buffers, so the other ranks need no files at all."""
    ckpt_path = os.path.join(cfg.out_dir, CKPT_NAME)
    ckpt = pretrained = dataset = tokenizer = data_name = model_config = None
    if comm.rank == 0:
        ckpt, pretrained, dataset, tokenizer, data_name, model_config = _read_inputs(cfg, ckpt_path)
    if comm.size > 1:
        dataset, tokenizer, data_name, model_config = _share_inputs(
            comm, cfg, dataset, tokenizer, data_name, model_config)

    backend.manual_seed(cfg.seed)
    model = (pretrained if pretrained is not None else GPT(model_config)).to(device=cfg.device,
                                                                             dtype=np.dtype(cfg.dtype))
    optimizer = model.configure_optimizers(cfg.weight_decay, cfg.learning_rate, (cfg.beta1, cfg.beta2))
    run = _Run(cfg, model, optimizer, dataset, tokenizer, stream(cfg.seed, "batches"), ckpt_path,
               lr_decay_iters=cfg.lr_decay_iters or cfg.max_iters, comm=comm)
    if ckpt is not None:
        _restore(run, ckpt)
        _keep_schedule(run, ckpt, print_fn)
    if ckpt is not None or pretrained is not None:  # rank 0 alone (the others read no file), before it shares
        weights = os.path.join(cfg.init_from, WEIGHTS_NAME)  # a GPT-2 folder's, unless it is sharded
        _check_loaded_weights(model, dataset, ckpt_path if ckpt is not None else
                              weights if os.path.isfile(weights) else cfg.init_from)
    if comm.size > 1:
        _share_state(run, ckpt)
    print_fn(f"data: {data_name}, {len(dataset.train):,} train and {len(dataset.val):,} val tokens, "
             f"vocab {tokenizer.vocab_size}")
    print_fn(f"model: {model.num_parameters() / 1e6:.2f}M parameters, {model_config.n_layer} layers, "
             f"{model_config.n_head} heads, {model_config.n_embd} wide, block {model_config.block_size}; "
             f"device {cfg.device}, {cfg.dtype}")
    if comm.size > 1:
        print_fn(f"{comm.size} processes: {cfg.gradient_accumulation_steps // comm.size} micro-batches "
                 f"of {cfg.batch_size} each per step, {cpu_threads()} CPU thread(s) each")
    if cfg.init_from == "resume":
        print_fn(f"resuming from {ckpt_path} at iteration {run.start_iter}")
    return run


def _read_inputs(cfg, ckpt_path):
    """The checkpoint or GPT-2 folder (if any), the data, the tokenizer and the model's config."""
    ckpt = pretrained = tokenizer = model_config = None
    if cfg.init_from == "resume":
        with file_op("reading", ckpt_path):
            ckpt = load_checkpoint(ckpt_path)
        tokenizer = _check_resumable(ckpt)
        model_config = ckpt.config
        cfg.block_size = model_config.block_size  # the model's shape comes from the checkpoint
    elif cfg.init_from != "scratch":  # a GPT-2 folder: its weights and its own BPE tokenizer
        pretrained = from_pretrained(cfg.init_from, dtype=cfg.dtype, dropout=cfg.dropout)
        cfg.block_size = min(cfg.block_size, pretrained.config.block_size)
        model_config = crop_block_size(pretrained, cfg.block_size).config
        tokenizer = load_hf_tokenizer(cfg.init_from, vocab_size=model_config.vocab_size)
    source = ckpt_path if ckpt is not None else cfg.init_from if pretrained is not None else None
    dataset, tokenizer, data_name = _load_data(cfg, tokenizer, source)
    if ckpt is None and pretrained is None:
        model_config = GPTConfig(block_size=cfg.block_size, vocab_size=tokenizer.vocab_size,
                                 n_layer=cfg.n_layer, n_head=cfg.n_head, n_embd=cfg.n_embd,
                                 dropout=cfg.dropout, bias=cfg.bias)
    return ckpt, pretrained, dataset, tokenizer, data_name, model_config


def _share_inputs(comm, cfg, dataset, tokenizer, data_name, model_config):
    """Rank 0's tokenizer, model config and tokens on every rank (JSON and one buffer)."""
    info = comm.bcast_json(None if comm.rank else {
        "tokenizer": tokenizer.to_dict(), "model_config": model_config.to_dict(),
        "block_size": cfg.block_size, "data_name": data_name, "shards": isinstance(dataset, ShardDataset)})
    ids = None if info["shards"] else distributed.bcast_ids(  # shards: each rank maps the files itself
        comm, None if comm.rank else np.concatenate([dataset.train, dataset.val]))
    if comm.rank:
        cfg.block_size = info["block_size"]
        tokenizer, data_name = tokenizer_from_dict(info["tokenizer"]), info["data_name"]
        model_config = GPTConfig(**info["model_config"])
        dataset = open_folder(cfg.data, cfg.block_size, tokenizer, "rank 0", check=False)[0] if info["shards"] \
            else Dataset(ids, cfg.block_size)
    return dataset, tokenizer, data_name, model_config


DROPOUT_STREAM = 3  # the ranks other than 0 draw dropout from stream [seed, 3, rank, iteration]


def _share_state(run, ckpt):
    """Rank 0's weights, optimizer state, position and batch stream on every rank; each rank's
    own dropout stream; a checksum to prove the weights equal; and the gradient allreduce."""
    comm, cfg = run.comm, run.cfg
    distributed.bcast_parameters(comm, run.model)
    if cfg.init_from == "resume":
        distributed.bcast_optimizer(comm, run.optimizer)
    state = comm.bcast_json(None if comm.rank else {
        "start_iter": run.start_iter, "best_val": run.best_val, "saved_iter": run.saved_iter,
        "skipped": run.skipped, "batch_rng": run.batch_rng.bit_generator.state,
        "lr_decay_iters": run.lr_decay_iters, "eval_pending": run.eval_pending,
        "rank_rngs": ckpt.extra.get("rank_rngs", []) if ckpt is not None else []})
    if comm.rank:
        run.start_iter, run.best_val, run.saved_iter = state["start_iter"], state["best_val"], state["saved_iter"]
        run.skipped, run.resumed = state["skipped"], cfg.init_from == "resume"
        run.lr_decay_iters, run.eval_pending = state["lr_decay_iters"], state["eval_pending"]
        run.batch_rng.bit_generator.state = state["batch_rng"]
        saved = state["rank_rngs"]  # rank r's dropout stream, if the run that saved had rank r
        if comm.rank <= len(saved):
            backend.set_rng_state(saved[comm.rank - 1])
        else:
            backend.manual_seed([cfg.seed, DROPOUT_STREAM, comm.rank, run.start_iter])
    distributed.check_same_weights(comm, run.model, "at the start")
    bucket_size = max(1, int(cfg.ddp_bucket_mb * 2 ** 20) // np.dtype(cfg.dtype).itemsize)
    run.sync = distributed.GradSync(comm, run.optimizer, overlap=cfg.ddp_overlap, bucket_size=bucket_size)


def _check_loaded_weights(model, dataset, source):
    """Weights read from a file must give a finite loss and finite gradients on the data's first
    window; weights that overflow would only fail after the run had written its log."""
    window = dataset.train[:dataset.block_size + 1].astype(np.int64)
    model.eval()  # no dropout: no random numbers drawn
    with np.errstate(over="ignore", invalid="ignore", divide="ignore"):
        _, loss = model(window[None, :-1], window[None, 1:])  # (1, T) inputs and targets
        loss.backward()
    finite = math.isfinite(loss.item()) and _nonfinite_weight(model, grads=True) is None
    model.zero_grad()
    model.train()
    if not finite:
        raise CheckpointError(f"{source}: the weights give a loss or gradients that are not finite (nan or "
                              f"inf) on the data: they overflow in {model.transformer.wte.weight.dtype}")


def _restore(run, ckpt):
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


def _loop(run, print_fn):
    """Iterations start_iter .. max_iters: evaluate and save on schedule, then step."""
    cfg = run.cfg
    log = RunLog(cfg.out_dir) if run.comm.rank == 0 else _SilentLog()  # rank 0 alone writes the log
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
            signum = should_stop(run)
            if signum:
                _stop_and_save(run, it, eval_due, signum)
            if eval_due:
                progress.clear()
                losses = _evaluate_and_save(run, it, log, print_fn)
            if it == cfg.max_iters:
                break
            t0 = time.perf_counter()
            optimizer = health.watch(run.optimizer, run.model, it)  # notes every health_interval steps
            step_args = (run.model, optimizer, run.dataset, cfg, lr, run.batch_rng)
            loss, norm = _train_step(*step_args) if run.sync is None else _train_step(*step_args, sync=run.sync)
            seconds = time.perf_counter() - t0
            ms = round(seconds * 1000, 2)
            if not (math.isfinite(loss) and math.isfinite(norm)):
                health.record(it, norm)
                _nonfinite_step(run, it, loss, norm, log, lr, ms, print_fn)
                continue
            speed = meter.step(seconds)
            log.write({"iter": it, "loss": loss, "lr": lr, "ms": ms, **speed})
            record = health.record(it, norm)
            if record is not None:
                log.write(record)
            progress.update(it, loss, telemetry.shown(speed))
            if it % cfg.log_interval == 0 and not progress.enabled:
                left = _duration(progress.eta(it))
                print_fn(f"iter {it}: loss {loss:.4f}, lr {lr:.2e}, {ms:.1f} ms, {telemetry.shown(speed)}, "
                         f"{left} left")
    except AnomalyError as e:
        raise TrainingError(f"at iteration {it}: {e}") from None
    except FileError as e:
        log.close()
        with contextlib.suppress(FileError):  # keep the log to what the checkpoint on disk holds
            log.set_aside_past(run.saved_iter)
        raise FileError(f"{e}; {_kept(run)}") from None
    except Abort as e:
        raise Stopped(f"{signal_name(e.signum)} again at iteration {it}: stopped at once without saving; "
                      f"{_kept(run)}", EXIT_CODES[e.signum]) from None
    finally:
        run.signals.armed = False
        progress.clear()
        log.close()
    return losses


def should_stop(run):
    """The number of the signal (SIGTERM, SIGINT) that asks the run to stop before its next step,
    or None to go on.

    The loop asks here, and only here, once per iteration; every process of one run must
    get the same answer, so they all stop at the same step.
    """
    signum = None if run.signals is None else run.signals.requested
    if run.comm.size == 1:
        return signum
    if not distributed.any_rank(run.comm, signum is not None):  # a one-number allreduce: all agree
        return None
    return signum or signal.SIGTERM  # the signal this rank got, or the one another rank got


def _stop_and_save(run, it, eval_pending, signum):
    """Save the state before step ``it`` (unless the checkpoint on disk holds it) and stop."""
    if run.saved_iter != it:
        _check_weights(run, it)
        _save(run, it, eval_pending)
    raise Stopped(f"stopped by {signal_name(signum)}: saved iteration {it} to {run.ckpt_path}",
                  EXIT_CODES.get(signum, 1), saved=True)


def _duration(seconds):
    """``1h02m``, ``3m05s`` or ``12s``."""
    seconds = int(seconds)
    if seconds >= 3600:
        return f"{seconds // 3600}h{seconds % 3600 // 60:02d}m"
    return f"{seconds // 60}m{seconds % 60:02d}s" if seconds >= 60 else f"{seconds}s"


def _keep_schedule(run, ckpt, print_fn):
    """On resume, keep the decay length the checkpoint was trained with unless --lr_decay_iters says
    otherwise; say what a change or a longer run does to the learning rate."""
    cfg, start = run.cfg, run.start_iter
    saved_cfg = ckpt.extra.get("train_config") if isinstance(ckpt.extra.get("train_config"), dict) else {}
    saved = ckpt.extra.get("lr_decay_iters") or saved_cfg.get("lr_decay_iters") or saved_cfg.get("max_iters")
    if not isinstance(saved, int) or isinstance(saved, bool) or saved <= 0:
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


def _kept(run):
    """Where the last good checkpoint is, for an error message."""
    if run.saved_iter is None:
        return "no checkpoint was saved"
    return f"the previous checkpoint (iteration {run.saved_iter}) is intact in {run.ckpt_path}"


def _nonfinite_step(run, it, loss, norm, log, lr, ms, print_fn):
    """A step whose loss or gradient norm is NaN or infinite: stop, or count it and go on."""
    fault = f"the loss became {loss}" if not math.isfinite(loss) else \
        f"the gradient norm became {norm} (loss {loss:.4f})"
    if not run.cfg.skip_nonfinite:
        raise TrainingError(f"{fault} at iteration {it}; {_kept(run)} (--skip_nonfinite=True skips such "
                            f"steps; --detect_anomaly=True names the op that made the first nan or inf)")
    run.skipped += 1
    log.write({"iter": it, "skipped": True, "fault": fault, "lr": lr, "ms": ms})
    if run.skipped == 1 or it % run.cfg.log_interval == 0:
        print_fn(f"iter {it}: step skipped, {fault} ({run.skipped} skipped so far)")


def _evaluate_and_save(run, it, log, print_fn):
    """Estimate both losses, log them, and save a checkpoint unless something is not finite."""
    cfg = run.cfg
    losses = estimate_loss(run.model, run.dataset, cfg, stream(cfg.seed, "eval", it), run.comm)
    if run.comm.size > 1:
        distributed.check_same_weights(run.comm, run.model, f"at iteration {it}")
    print_fn(f"step {it}: train loss {losses['train']:.4f}, val loss {losses['val']:.4f}")
    log.write({"iter": it, "train_loss": losses["train"], "val_loss": losses["val"]})
    _check_weights(run, it)
    if not (math.isfinite(losses["train"]) and math.isfinite(losses["val"])):
        fault = f"the estimated losses are {losses['train']} (train) and {losses['val']} (val) at iteration {it}"
        if not cfg.skip_nonfinite:
            raise TrainingError(f"{fault}; {_kept(run)}")
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


def _check_weights(run, it):
    """Non-finite weights are never saved; only a change from outside the training step can make them."""
    bad = _nonfinite_weight(run.model)
    if bad is not None:
        raise TrainingError(f"the weight {bad} is not finite at iteration {it}; {_kept(run)}")


def _nonfinite_weight(model, grads=False):
    """The name of the first parameter (or its gradient) holding NaN or infinity, or None."""
    for name, p in model.named_parameters():
        x = p.grad if grads else p.data
        if x is not None and not bool(get_array_module(x).isfinite(x).all()):
            return name
    return None


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
