"""A run's ``out_dir``: checked, made if missing, locked while the run lasts, and left as it was
found when a run fails before it saved anything.

A new run (``--init_from=scratch`` or a GPT-2 folder) into an out_dir that holds a checkpoint is
refused before anything in the folder changes: one line names the checkpoint, its iteration and
its data, and the two ways on (``--init_from=resume``, ``--overwrite=True``).
"""
import contextlib
import os

from ..errors import ConfigError
from ..storage.checkpoint import CKPT_NAME, checkpoint_summary
from ..storage.lock import LOCK_NAME, RunLock
from .runlog import LOG_NAME


class OutDir:
    """``with OutDir(cfg, active):`` the checked, made and locked out_dir (``active``: rank 0;
    the other ranks of a run under MPI touch no file). Set ``run`` once the run exists: a run
    that fails before it saved anything removes the folders it made."""

    def __init__(self, cfg, active, print_fn):
        self.cfg, self.active, self.print_fn = cfg, active, print_fn
        self.made, self.lock, self.run = [], None, None

    def __enter__(self):
        if self.active:
            refuse_overwrite(self.cfg)
            self.made = make(self.cfg.out_dir)
            try:
                self.lock = RunLock(self.cfg.out_dir).__enter__()
            except BaseException:
                for folder in self.made:  # those that are still empty
                    with contextlib.suppress(OSError):
                        os.rmdir(folder)
                raise
            if self.lock.stale_pid is not None:
                self.print_fn(f"taking over {self.lock.path}, left by a run that no longer exists "
                              f"(process {self.lock.stale_pid})")
        return self

    def __exit__(self, kind, value, tb):
        if self.lock is None:
            return False
        try:
            if kind is not None and (self.run is None or self.run.saved_iter is None):
                forget(self.cfg.out_dir, self.made)  # still locked: nobody else is in the folder
        finally:
            self.lock.__exit__(kind, value, tb)
        return False

    def remove_partial_writes(self):
        """Delete temporary checkpoint files a killed run left half-written (the lock is ours)."""
        if self.active:
            for name in os.listdir(self.cfg.out_dir):
                if name.startswith(f".{CKPT_NAME}.") and name.endswith(".tmp"):
                    with contextlib.suppress(OSError):
                        os.remove(os.path.join(self.cfg.out_dir, name))


def refuse_overwrite(cfg):
    """A new run would replace the checkpoint in ``out_dir``: ConfigError, unless --overwrite=True."""
    path = os.path.join(cfg.out_dir, CKPT_NAME)
    if cfg.init_from == "resume" or cfg.overwrite or not os.path.lexists(path):
        return
    raise ConfigError(f"--out_dir={cfg.out_dir} holds a checkpoint, {path} ({checkpoint_summary(path)}), "
                      f"that a new run would replace: --init_from=resume continues it, --overwrite=True "
                      f"replaces it")


def make(out_dir):
    """Create ``out_dir`` if needed; returns the folders this made, deepest first."""
    made, folder = [], os.path.abspath(out_dir)
    while folder and not os.path.exists(folder) and folder != os.path.dirname(folder):
        made.append(folder)
        folder = os.path.dirname(folder)
    try:
        os.makedirs(out_dir, exist_ok=True)
    except OSError as e:
        forget(out_dir, made)
        raise ConfigError(f"--out_dir={out_dir}: cannot create it ({e.strerror})") from None
    if not os.access(out_dir, os.W_OK | os.X_OK):
        raise ConfigError(f"--out_dir={out_dir}: the folder is not writable")
    return made


def forget(out_dir, made):
    """Remove the folders a failed run made, if they hold nothing but its empty-handed log and lock."""
    if not made:
        return
    for name in (LOG_NAME, LOCK_NAME):
        with contextlib.suppress(OSError):
            os.remove(os.path.join(out_dir, name))
    for folder in made:
        try:
            os.rmdir(folder)
        except OSError:
            return
