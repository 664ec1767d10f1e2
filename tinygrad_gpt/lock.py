"""A lock on a run's ``out_dir``: one training run writes there at a time.

``RunLock(folder)`` creates ``folder/.lock`` atomically (``O_CREAT | O_EXCL``) and
writes its process id and host name in it. A second run finds the file, sees that
the process named in it is alive, and is refused with a ``LockError``. A lock whose
process is gone (a run killed with ``kill -9``) is stale and is taken over. The lock
is removed when the ``with`` block ends, normally or by an exception.

    >>> with RunLock("out") as lock:  # doctest: +SKIP
    ...     lock.taken_over, lock.stale_pid  # (True, pid) when a dead run's lock was taken over
"""
import os
import socket
import time

from .errors import LockError

LOCK_NAME = ".lock"
YOUNG_SECONDS = 10  # a lock file this new without a pid in it is still being written


def pid_alive(pid):
    """True when a process with this id exists (and is not a zombie) on this machine."""
    if pid <= 0:
        return False
    if os.name == "nt":  # os.kill(pid, 0) would terminate the process there; assume it is alive
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # it exists but belongs to another user
        return True
    try:  # a killed process that its parent has not reaped yet still answers kill(pid, 0)
        with open(f"/proc/{pid}/stat", encoding="ascii", errors="replace") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except (OSError, IndexError):
        return True


class RunLock:
    """``folder/.lock`` holding this process's pid while the ``with`` block runs."""

    def __init__(self, folder):
        self.path = os.path.join(os.fspath(folder), LOCK_NAME)
        self.owner = f"{os.getpid()}\n{socket.gethostname()}\n"
        self.taken_over = False  # True when a dead run's lock was taken over
        self.stale_pid = None    # that run's pid, when its lock file had one

    def __enter__(self):
        for _ in range(5):  # a stale lock is removed, then creation is tried again
            try:
                fd = os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
            except FileExistsError:
                self._take_over_if_stale()
                continue
            except OSError as e:
                raise LockError(f"{self.path}: cannot create the lock file ({e.strerror})") from None
            with os.fdopen(fd, "w", encoding="utf-8") as f:
                f.write(self.owner)
            return self
        raise LockError(f"{self.path}: other runs keep taking this lock; try again")

    def __exit__(self, *exc):
        try:
            with open(self.path, encoding="utf-8") as f:
                mine = f.read() == self.owner
            if mine:  # never remove a lock that someone else has made in the meantime
                os.remove(self.path)
        except OSError:
            pass
        return False

    def _take_over_if_stale(self):
        """Remove the lock if its process is gone; raise LockError if it is alive."""
        try:
            with open(self.path, encoding="utf-8", errors="replace") as f:
                lines = f.read().split("\n")
            age = time.time() - os.path.getmtime(self.path)
        except FileNotFoundError:  # released meanwhile: try again
            return
        pid = int(lines[0]) if lines[0].strip().isdigit() else None
        host = lines[1] if len(lines) > 1 else ""
        if pid is None and age < YOUNG_SECONDS:
            raise LockError(f"{self.path}: another run is taking this lock right now")
        if pid is not None and host and host != socket.gethostname():
            raise LockError(f"{self.path}: the lock belongs to process {pid} on host {host}; "
                            f"delete the file if that run is over")
        if pid is not None and pid_alive(pid):
            raise LockError(f"{os.path.dirname(self.path)}: another run (process {pid}) is using this "
                            f"out_dir; wait for it to end, pick another --out_dir, or delete "
                            f"{self.path} if no such run exists")
        try:
            os.remove(self.path)
        except FileNotFoundError:
            pass
        self.taken_over, self.stale_pid = True, pid
