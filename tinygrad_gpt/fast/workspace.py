"""Arrays the fast layer keeps from one training step to the next (CPU only).

NumPy makes a fresh array for every activation and gradient. glibc serves blocks above
128 KiB with mmap, or from the top of a heap that it trims when they are freed, so without
a process-wide allocator setting a training step pays a page fault on every 4 KiB page of
every large array it makes, each step anew. Here the fast ops take their large output and
scratch arrays from a pool of byte buffers kept per size: the pool holds each buffer it has
made, and lends it again (viewed with the shape and dtype asked for) once nothing else refers
to it. Any reference counts: a Tensor's data, a
view (its ``base``), an op's saved arrays, a gradient, a variable in the user's code, so an
array is never lent while it may still be read. Memory stays near the step's peak: a step
that needs as many arrays of a shape as the last one makes no new one.
"""
import sys
import threading
from collections import OrderedDict

import numpy as np

POOLED_MIN = 1 << 17  # bytes: smaller blocks come from glibc's heap, which reuses them anyway
POOL_MAX = 1 << 30    # bytes: above this, idle buffers of sizes not asked for lately are let go
RECENT = 4096         # requests: a size asked for within this many (several steps) is kept
_pool = OrderedDict()  # size in bytes -> list of byte buffers, most recently used size last
_bytes = 0
_clock = 0  # requests so far
_last = {}  # size -> _clock at its last request
_lock = threading.Lock()  # two threads must not both take one free array


def _free_count():
    """The reference count of a pooled array that no one else holds, as ``empty`` sees it:
    the pool's list, the loop variable and getrefcount's argument."""
    for a in [np.empty(1)]:
        return sys.getrefcount(a)


_FREE = _free_count()


def empty(shape, dtype, like=None):
    """An uninitialised C-ordered array of ``shape`` and ``dtype``, from the pool on the CPU.

    ``like`` is an array of the device wanted (None: NumPy). Small arrays and arrays on the
    GPU (CuPy keeps a pool of its own) are made fresh.
    """
    dtype = np.dtype(dtype)
    shape = tuple(shape)
    if like is not None and not isinstance(like, np.ndarray):
        from ..backend import get_array_module
        return get_array_module(like).empty(shape, dtype)
    size = dtype.itemsize
    for n in shape:
        size *= n
    if size < POOLED_MIN:
        return np.empty(shape, dtype)
    with _lock:
        return _take(size).view(dtype).reshape(shape)


def _take(size):
    """A free buffer of ``size`` bytes from the pool, else a new one that the pool keeps."""
    global _clock
    key = size
    _clock += 1
    _last[key] = _clock
    arrays = _pool.get(key)
    if arrays is None:
        arrays = _pool[key] = []
    else:
        _pool.move_to_end(key)
        for a in arrays:
            if sys.getrefcount(a) == _FREE:
                return a
    a = np.empty(size, np.uint8)
    arrays.append(a)
    _grow(size)
    return a


def empty_like(x):
    """``empty(x.shape, x.dtype)`` on x's device; NumPy's ``empty_like`` (which keeps x's
    memory order) when x is not C-ordered."""
    if isinstance(x, np.ndarray) and not x.flags.c_contiguous:
        return np.empty_like(x)
    return empty(x.shape, x.dtype, like=x)


def _grow(size):
    """Count ``size`` new bytes; past POOL_MAX, drop the free buffers of the least recent sizes."""
    global _bytes
    _bytes += size
    if _bytes > POOL_MAX:  # least recent sizes first; a step's own sizes are all recent
        for key in list(_pool):
            if _clock - _last[key] < RECENT or _bytes <= POOL_MAX // 2:
                return
            _drop_free(key)


def _drop_free(key):
    """Let go of the buffers of ``key`` bytes that no one holds."""
    global _bytes
    kept = [a for a in _pool[key] if sys.getrefcount(a) > _FREE]
    _bytes -= key * (len(_pool[key]) - len(kept))
    if kept:
        _pool[key] = kept
    else:
        del _pool[key], _last[key]


def release():
    """Let go of the pooled buffers that no one holds, so that other work (writing a
    checkpoint, say) may use their memory; the next training step makes them again."""
    with _lock:
        for key in list(_pool):
            _drop_free(key)


def matmul(a, b):
    """``a @ b``, into a pooled array when both are NumPy arrays of one float dtype and at
    least 2-D (the same BLAS call, so the same values)."""
    if not (isinstance(a, np.ndarray) and isinstance(b, np.ndarray) and a.ndim >= 2
            and b.ndim >= 2 and a.dtype == b.dtype and a.dtype.kind == "f"):
        return a @ b
    shape = np.broadcast_shapes(a.shape[:-2], b.shape[:-2]) + (a.shape[-2], b.shape[-1])
    return np.matmul(a, b, out=empty(shape, a.dtype))


def _same(a, b):
    return (isinstance(a, np.ndarray) and isinstance(b, np.ndarray) and a.shape == b.shape
            and a.dtype == b.dtype)


def multiply(a, b):
    """``a * b``, into a pooled array when both are NumPy arrays of one shape and dtype."""
    return np.multiply(a, b, out=empty(a.shape, a.dtype)) if _same(a, b) else a * b


def add(a, b):
    """``a + b``, into a pooled array when both are NumPy arrays of one shape and dtype."""
    return np.add(a, b, out=empty(a.shape, a.dtype)) if _same(a, b) else a + b
