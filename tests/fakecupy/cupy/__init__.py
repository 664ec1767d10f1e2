"""A strict stand-in for CuPy, for tests only: it runs on the CPU and proves nothing about speed.

``TINYGRAD_GPT_FAKE_CUPY=1 python -m pytest --device=cuda`` puts this folder first on
``sys.path``, so ``import cupy`` finds it and the whole suite runs through the CuPy path
of ``tinygrad_gpt.backend``. It models only what the project uses, each as CuPy documents
it (see ``_core.py``): a device array that never converts to NumPy by itself, explicit
transfers (``asarray``, ``asnumpy``, ``get``), one GPU, ``cupy.random`` generators, and
``cupyx.scatter_add``. ``COUNTS`` counts host syncs and host-to-device copies.
"""
import numpy as _np

from . import cuda, random  # noqa: F401  (cupy.cuda and cupy.random, as in CuPy)
from ._core import COUNTS, _h2d, _sync, ndarray, reset_counts, unwrap, wrap  # noqa: F401

__version__ = "14.2.0+standin"
STAND_IN = True

# dtypes and constants are NumPy's, as in CuPy
from numpy import (bool_, dtype, e, finfo, float16, float32, float64, iinfo, inf, int8,  # noqa: E402,F401
                   int16, int32, int64, intp, nan, newaxis, pi, uint8, uint16, uint32, uint64)


def asarray(a, dtype=None, order=None):
    """A device array: a stand-in array as is (or cast), anything else copied from the host."""
    if isinstance(a, ndarray):
        return a if dtype is None or a.dtype == _np.dtype(dtype) else a.astype(dtype)
    _h2d("asarray")
    return ndarray._from(_np.array(a, dtype=dtype, order=order or "K", copy=True))


def array(obj, dtype=None, copy=True, order="K", ndmin=0):
    if isinstance(obj, ndarray):
        return ndarray._from(_np.array(obj._a, dtype=dtype, copy=copy, order=order, ndmin=ndmin))
    _h2d("array")
    return ndarray._from(_np.array(obj, dtype=dtype, copy=True, order=order, ndmin=ndmin))


def ascontiguousarray(a, dtype=None):
    if not isinstance(a, ndarray):
        return asarray(_np.ascontiguousarray(a, dtype=dtype))
    return ndarray._from(_np.ascontiguousarray(a._a, dtype=dtype))


def asnumpy(a, stream=None, order="C", out=None):
    """A host NumPy array (a host sync for a device array)."""
    if isinstance(a, ndarray):
        return a.get(stream=stream, order=order, out=out)
    return _np.asarray(a, order=order)


def get_array_module(*args):
    return __import__(__name__) if any(isinstance(a, ndarray) for a in args) else _np


def concatenate(tup, axis=0, out=None, dtype=None):
    for a in tup:
        if not isinstance(a, ndarray):
            raise TypeError("Only cupy arrays can be concatenated")
    return _with_out(_np.concatenate, [a._a for a in tup], axis, out, dtype)


def stack(tup, axis=0, out=None, dtype=None):
    for a in tup:
        if not isinstance(a, ndarray):
            raise TypeError("Only cupy arrays can be stacked")
    return _with_out(_np.stack, [a._a for a in tup], axis, out, dtype)


def _with_out(fn, arrays, axis, out, dtype):
    if out is None:
        return wrap(fn(arrays, axis=axis, dtype=dtype))
    if not isinstance(out, ndarray):
        raise TypeError(f"Unsupported type {type(out)}")
    fn(arrays, axis=axis, out=out._a, dtype=dtype)
    return out


def argsort(a, axis=-1, kind=None):
    """Stable, as in CuPy, which accepts no other kind."""
    if kind not in (None, "stable"):
        raise ValueError(f"cupy.argsort does not support kind={kind!r}")
    return wrap(_np.argsort(unwrap(a), axis=axis, kind="stable"))


def sort(a, axis=-1, kind=None):
    if kind not in (None, "stable"):
        raise ValueError(f"cupy.sort does not support kind={kind!r}")
    return wrap(_np.sort(unwrap(a), axis=axis, kind="stable"))


# NumPy names CuPy does not provide, or that would make host data look like device data
_MISSING = {"may_share_memory", "shares_memory", "frombuffer", "fromfile", "load", "save",
            "savez", "loadtxt", "genfromtxt", "memmap", "lib", "add", "subtract", "multiply"}


def _forward(name, fn):
    def call(*args, **kwargs):
        return wrap(fn(*unwrap(args), **unwrap(kwargs)))
    call.__name__ = name
    return call


class _Ufunc:
    """A CuPy ufunc: call it, or use ``.reduce`` or ``.at`` (CuPy has both)."""

    def __init__(self, name):
        self.__name__, self._fn = name, getattr(_np, name)

    def __call__(self, *args, **kwargs):
        return wrap(self._fn(*unwrap(args), **unwrap(kwargs)))

    def reduce(self, *args, **kwargs):
        return wrap(self._fn.reduce(*unwrap(args), **unwrap(kwargs)))

    def at(self, a, indices, b=None):
        if not isinstance(a, ndarray):
            raise TypeError(f"Unsupported type {type(a)}")
        self._fn.at(a._a, unwrap(indices), *(() if b is None else (unwrap(b),)))


add, subtract, multiply = _Ufunc("add"), _Ufunc("subtract"), _Ufunc("multiply")


def __getattr__(name):
    if name.startswith("__") or name in _MISSING:
        raise AttributeError(f"module 'cupy' has no attribute '{name}'")
    fn = getattr(_np, name, None)
    if fn is None or not callable(fn) or isinstance(fn, type):
        raise AttributeError(f"module 'cupy' has no attribute '{name}'")
    if isinstance(fn, _np.ufunc):
        f = _Ufunc(name)
    else:
        f = _forward(name, fn)
    globals()[name] = f
    return f
