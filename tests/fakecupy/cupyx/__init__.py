"""``cupyx.scatter_add`` of the stand-in.

CuPy's scatter_add adds with atomicAdd, so repeated indices are summed in whatever order
the GPU threads arrive. The stand-in sums them in a fresh random order on every call, so
floating-point results that depend on that order change from call to call, as on a GPU.
"""
import random as _random

import numpy as _np

from cupy._core import ndarray, unwrap

_order = _random.Random()  # unseeded: a different order on every run


def scatter_add(a, slices, value):
    """a[slices] += value, adding up repeated indices, in place."""
    if not isinstance(a, ndarray):
        raise TypeError(f"Unsupported type {type(a)}")
    idx = unwrap(slices)
    val = unwrap(value)
    out = a._a
    if isinstance(idx, _np.ndarray) and idx.dtype.kind in "iu":
        idx = idx % out.shape[0]  # wraps around, as CuPy's indexing does
        flat = idx.ravel()
        rows = _np.broadcast_to(val, idx.shape + out.shape[1:]).reshape((flat.size,) + out.shape[1:])
        perm = list(range(flat.size))
        _order.shuffle(perm)
        _np.add.at(out, flat[perm], rows[perm])
    else:
        _np.add.at(out, idx, val)


def scatter_max(a, slices, value):
    _np.maximum.at(a._a, unwrap(slices), unwrap(value))
