"""A run's record, ``out_dir/log.jsonl``: one JSON object per line, and the side file beside it.

Each training step adds ``{"iter", "loss", "lr", "ms", "tokens_per_s", "mfu"}``, each evaluation
``{"iter", "train_loss", "val_loss"}``, and the start of a run its constants (``peak_flops``, ...:
run/telemetry.py). The log always tells the story of the run whose
checkpoint sits beside it: when a run resumes from iteration N, the records the
checkpoint does not hold (steps N and later, evaluations after N) are moved to
``log.old.jsonl``, appended there and never deleted; a new run from scratch moves the
whole of an earlier run's log there. So ``plot`` draws one consistent run.

    >>> log = RunLog("out")                  # doctest: +SKIP
    >>> log.set_aside_past(100)              # doctest: +SKIP  (resuming from iteration 100)
    >>> log.write({"iter": 100, "loss": 1.5}) # doctest: +SKIP
"""
import json
import os

from ..storage.fileio import file_op

LOG_NAME = "log.jsonl"
OLD_LOG_NAME = "log.old.jsonl"


def held_by_checkpoint(record, iteration):
    """True when a checkpoint of ``iteration`` holds this record: a step before it, an evaluation (or
    a run's start record) at or before it (a checkpoint is written right after the evaluation of its
    iteration)."""
    if iteration is None or not isinstance(record, dict) or not isinstance(record.get("iter"), int):
        return False
    at_start = "val_loss" in record or "peak_flops" in record  # an evaluation, or a run's start record
    return record["iter"] <= iteration if at_start else record["iter"] < iteration


class RunLog:
    """Appends records to ``folder/log.jsonl``; every OS error names the file (``FileError``)."""

    def __init__(self, folder):
        self.path = os.path.join(os.fspath(folder), LOG_NAME)
        self.old_path = os.path.join(os.fspath(folder), OLD_LOG_NAME)
        self._f = None

    def open(self):
        with file_op("opening", self.path):
            self._f = open(self.path, "a", encoding="utf-8")
        return self

    def write(self, record):
        with file_op("writing", self.path):
            self._f.write(json.dumps(record) + "\n")
            self._f.flush()  # a killed run's log ends at its last finished step

    def close(self):
        if self._f is not None:
            try:
                self._f.close()
            except OSError:  # the records that mattered were flushed, or their error already raised
                pass
            self._f = None

    def set_aside_past(self, iteration):
        """Move every record from the first one a checkpoint of ``iteration`` does not hold
        (None: every record) to the end of ``log.old.jsonl``; returns how many lines moved."""
        with file_op("reading", self.path):
            try:
                with open(self.path, "rb") as f:
                    raw = f.read()
            except FileNotFoundError:
                return 0
        keep = 0
        for line in raw.splitlines(keepends=True):
            if not line.endswith(b"\n"):  # a line half-written by a killed run
                break
            try:
                record = json.loads(line)
            except ValueError:  # a line half-written by a killed run
                break
            if not held_by_checkpoint(record, iteration):
                break
            keep += len(line)
        rest = raw[keep:]
        if not rest:
            return 0
        rest += b"" if rest.endswith(b"\n") else b"\n"
        with file_op("writing", self.old_path):
            with open(self.old_path, "ab") as f:
                f.write(rest)
                f.flush()
                os.fsync(f.fileno())
        with file_op("writing", self.path):
            os.truncate(self.path, keep)
        return rest.count(b"\n")
