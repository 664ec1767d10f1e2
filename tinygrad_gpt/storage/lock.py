"""One training run per ``out_dir``: an exclusive ``fcntl.flock`` on ``out_dir/.lock``, a file that is kept.

The holder writes its pid and host into it and empties it at the end. The kernel drops a flock when its
process ends, however it ends, so a ``kill -9`` never blocks the next run, which finds the killed run's pid
in the file (``stale_pid``). Where flock is unavailable (Windows, some network mounts) a run is refused.
"""
import errno
import os
import socket

from ..errors import LockError

LOCK_NAME = ".lock"


class RunLock:
    """An exclusive flock on ``folder/.lock`` while the ``with`` block runs."""

    def __init__(self, folder):
        self.folder, self.path = os.fspath(folder), os.path.join(os.fspath(folder), LOCK_NAME)
        self.stale_pid, self._fd = None, None

    def __enter__(self):
        try:
            import fcntl
        except ImportError:  # Windows
            raise LockError(f"{self.folder}: cannot lock the out_dir: this system has no fcntl.flock") from None
        try:
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)  # made if missing; never removed
        except OSError as e:
            raise LockError(f"{self.path}: cannot open the lock file ({e.strerror})") from None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as e:
            pid, _, host = os.pread(fd, 4096, 0).decode("utf-8", "replace").partition("\n")
            os.close(fd)
            if e.errno not in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):  # ENOLCK, EOPNOTSUPP, ...
                raise LockError(f"{self.path}: cannot lock the out_dir: the file system refuses flock "
                                f"({e.strerror})") from None
            where = "" if host.strip() in ("", socket.gethostname()) else f" on host {host.strip()}"
            who = f"process {pid}{where}" if pid.isdigit() else "starting right now"
            raise LockError(f"{self.folder}: another run ({who}) is using this out_dir; wait for it to end, "
                            f"or pick another --out_dir") from None
        try:
            old = os.pread(fd, 4096, 0).decode("utf-8", "replace").split("\n")[0]
            self.stale_pid = int(old) if old.isdigit() else None  # a clean exit leaves the file empty
            os.ftruncate(fd, 0)
            os.pwrite(fd, f"{os.getpid()}\n{socket.gethostname()}\n".encode("utf-8"), 0)
        except OSError as e:
            os.close(fd)
            raise LockError(f"{self.path}: cannot write the lock file ({e.strerror})") from None
        self._fd = fd
        return self

    def __exit__(self, *exc):
        try:
            os.ftruncate(self._fd, 0)  # no holder named: the next run knows nobody was killed
        finally:
            os.close(self._fd)  # closing drops the flock; the file stays
