"""Writing the project's files safely, and saying in one line what went wrong when the OS says no.

``write_atomic(path, chunks)`` writes a temporary file beside ``path``, fsyncs it and renames
it over ``path``: a crash, a full disk or a refused rename leaves the old file as it was and
no temporary file behind. ``file_op("writing", path)`` turns an ``OSError`` raised inside it
(a full disk, a read-only mount, a permission, an I/O error) into a ``FileError`` whose message
names the file, the operation and the cause:

    >>> with file_op("writing", "out/ckpt.safetensors"):  # doctest: +SKIP
    ...     write_atomic("out/ckpt.safetensors", [b"..."])
    FileError: no space left on device while writing out/ckpt.safetensors
"""
import contextlib
import errno
import os
import tempfile

from ..errors import FileError

HINTS = {errno.EPERM: " (is the file or its folder immutable? `lsattr` shows the i flag)",
         errno.EROFS: " (the file system is mounted read-only)"}


def describe(e, operation, path=None):
    """``"<cause> while <operation> <path>"`` for an OSError, e.g. "no space left on device while
    writing out/log.jsonl"."""
    cause = (e.strerror or str(e)).lower() if isinstance(e, OSError) else str(e)
    path = os.fspath(path) if path is not None else (e.filename or "a file")
    return f"{cause} while {operation} {path}{HINTS.get(getattr(e, 'errno', None), '')}"


@contextlib.contextmanager
def file_op(operation, path):
    """Turn an ``OSError`` raised in the block into a ``FileError`` naming ``path`` and ``operation``."""
    try:
        yield
    except FileError:  # already names its file
        raise
    except OSError as e:
        raise FileError(describe(e, operation, path)) from None


def write_atomic(path, chunks):
    """Write ``chunks`` (bytes) to a temporary file beside ``path``, fsync it, and rename it over ``path``.

    On any failure, the temporary file is removed and the exception goes on; ``path`` is untouched.
    """
    folder = os.path.dirname(os.path.abspath(path))
    fd, tmp = tempfile.mkstemp(dir=folder, prefix=f".{os.path.basename(path)}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            if hasattr(os, "fchmod"):  # mkstemp makes 0600; give the file the usual permissions
                umask = os.umask(0)
                os.umask(umask)
                os.fchmod(f.fileno(), 0o666 & ~umask)
            for chunk in chunks:
                f.write(chunk)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.remove(tmp)
        raise
    fsync_dir(folder)  # make the rename itself durable


def fsync_dir(folder):
    """fsync a folder, so a rename in it survives a power cut (where the OS allows it)."""
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:  # e.g. Windows, where directories cannot be opened
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)
