"""What the ranks of a run under MPI share before they train (``distributed.py`` moves the bytes).

Rank 0 alone reads files, prints, logs and writes checkpoints. At the start it sends the others
the tokenizer, the model's config and the tokens, then the weights, the optimizer state, the
position in the run and the batch stream; each rank keeps a dropout stream of its own.
"""
import os

import numpy as np

from .. import backend
from ..errors import ConfigError
from ..model import GPTConfig
from ..text.data import Dataset
from ..text.folder import open_folder
from ..text.shards import ShardDataset
from ..tokenizer import tokenizer_from_dict
from . import distributed
from .streams import dropout_seed


def check_ranks(cfg, comm):
    """--gradient_accumulation_steps counts the micro-batches of all ranks together, as nanoGPT."""
    if cfg.gradient_accumulation_steps % comm.size:
        err = ConfigError(f"--gradient_accumulation_steps={cfg.gradient_accumulation_steps} must be a "
                          f"multiple of the number of processes ({comm.size}): each step's micro-batches "
                          f"are shared out among them")
        err.every_rank = True
        raise err


def quiet(*args, **kwargs):
    """print_fn of the ranks other than 0: they say nothing."""


class SilentLog:
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


def share_inputs(comm, cfg, dataset, tokenizer, data_name, model_config):
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


def share_state(run, ckpt):
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
            backend.manual_seed(dropout_seed(cfg.seed, comm.rank, run.start_iter))
    distributed.check_same_weights(comm, run.model, "at the start")
    bucket_size = max(1, int(cfg.ddp_bucket_mb * 2 ** 20) // np.dtype(cfg.dtype).itemsize)
    run.sync = distributed.GradSync(comm, run.optimizer, overlap=cfg.ddp_overlap, bucket_size=bucket_size)
