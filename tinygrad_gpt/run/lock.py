"""A lock on a run's ``out_dir``: one training run writes there at a time.

``RunLock(folder)`` opens ``folder/.lock`` and takes an exclusive ``fcntl.flock`` on it,
then writes its process id and host name into it. A second run cannot take the flock
and is refused with a ``LockError`` that names the holder from the file. The kernel
drops a flock when its process ends, however it ends, so a lock left by ``kill -9``
never blocks the next run: that run takes it over and reports the dead run's pid.
The file is removed when the ``with`` block ends, normally or by an exception.

The lock is advisory, as every flock is: it binds the runs of this package, not other
programs writing into the folder. Where ``flock`` is missing (Windows) or refused by
the file system (some network mounts answer ENOLCK), it falls back to the file itself:
created with ``O_CREAT | O_EXCL``, judged stale when the process it names is gone on
this host, and never judged when it names another host (delete it by hand there).

    >>> with RunLock("out") as lock:  # doctest: +SKIP
    ...     lock.taken_over, lock.stale_pid  # (True, pid) when a dead run's lock was taken over
"""
import contextlib
import errno
import os
import socket
import time

from ..errors import LockError

try:
    import fcntl
except ImportError:  # Windows
    fcntl = None

LOCK_NAME = ".lock"
YOUNG_SECONDS = 10  # (fallback only) a lock file this new without a pid in it is still being written


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


def _holder(text):
    """(pid or None, host) from a lock file's text."""
    lines = text.split("\n")
    pid = int(lines[0]) if lines[0].strip().isdigit() else None
    return pid, (lines[1] if len(lines) > 1 else "")


class RunLock:
    """An exclusive lock on ``folder/.lock``, holding this process's pid, while the ``with`` block runs."""

    def __init__(self, folder):
        self.path = os.path.join(os.fspath(folder), LOCK_NAME)
        self.owner = f"{os.getpid()}\n{socket.gethostname()}\n"
        self.taken_over = False  # True when a dead run's lock was taken over
        self.stale_pid = None    # that run's pid, when its lock file had one
        self._fd = None          # the flocked descriptor; True when the pid-file way holds the lock

    def __enter__(self):
        if fcntl is not None:
            for _ in range(5):  # the file may be removed under us by a run that just ended: retry
                fd, created = self._open()
                try:
                    if not self._flock(fd):  # the file system has no flock: the pid-file way
                        os.close(fd)
                        if created:
                            os.remove(self.path)
                        break
                    if self._still_the_file(fd):
                        self._claim(fd)
                        self._fd = fd
                        return self
                except OSError as e:  # a full disk or a read-only mount while writing our pid
                    os.close(fd)
                    if created:
                        with contextlib.suppress(OSError):
                            os.remove(self.path)
                    raise LockError(f"{self.path}: cannot write the lock file ({e.strerror})") from None
                except BaseException:
                    os.close(fd)
                    raise
                os.close(fd)
            else:
                raise LockError(f"{self.path}: other runs keep taking this lock; try again")
        return self._enter_without_flock()

    def __exit__(self, *exc):
        if self._fd is None:
            return False
        try:
            with open(self.path, encoding="utf-8") as f:
                mine = f.read() == self.owner
            if mine:  # never remove a lock that someone else has made in the meantime
                os.remove(self.path)
        except OSError:
            pass
        if self._fd is not True:
            os.close(self._fd)  # closing drops the flock
        self._fd = None
        return False

    # ------------------------------------------------------------------ with flock
    def _open(self):
        """(fd, True when this call created the file)."""
        try:
            try:
                return os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_EXCL, 0o644), True
            except FileExistsError:
                return os.open(self.path, os.O_RDWR), False
        except OSError as e:
            raise LockError(f"{self.path}: cannot create the lock file ({e.strerror})") from None

    def _flock(self, fd):
        """True when this process now holds the flock, False when the file system has none
        (ENOLCK, EOPNOTSUPP, ...); LockError when another run holds it."""
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            return True
        except OSError as e:
            if e.errno not in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
                return False
        pid, host = _holder(os.pread(fd, 4096, 0).decode("utf-8", "replace"))
        if pid is None:
            raise LockError(f"{os.path.dirname(self.path)}: another run is starting in this out_dir "
                            f"right now; wait for it to end, or pick another --out_dir")
        where = f" on host {host}" if host and host != socket.gethostname() else ""
        raise LockError(f"{os.path.dirname(self.path)}: another run (process {pid}{where}) is using this "
                        f"out_dir; wait for it to end, or pick another --out_dir")

    def _still_the_file(self, fd):
        """False when a run that just ended removed the file between our open and our flock."""
        try:
            return os.path.samestat(os.fstat(fd), os.stat(self.path))
        except FileNotFoundError:
            return False

    def _claim(self, fd):
        """Note a dead run's pid if its text is still there, then write ours."""
        old = os.pread(fd, 4096, 0).decode("utf-8", "replace")
        if old:
            self.taken_over, self.stale_pid = True, _holder(old)[0]
        os.ftruncate(fd, 0)
        os.pwrite(fd, self.owner.encode("utf-8"), 0)

    # ------------------------------------------------------------------ without flock
    def _enter_without_flock(self):
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
            self._fd = True
            return self
        raise LockError(f"{self.path}: other runs keep taking this lock; try again")

    def _take_over_if_stale(self):
        """Remove the lock if its process is gone; raise LockError if it is alive."""
        try:
            with open(self.path, encoding="utf-8", errors="replace") as f:
                pid, host = _holder(f.read())
            age = time.time() - os.path.getmtime(self.path)
        except FileNotFoundError:  # released meanwhile: try again
            return
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
