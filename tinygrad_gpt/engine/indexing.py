"""Indices for ``Tensor.__getitem__``: arrays on the data's device, range-checked there.

On a GPU an out-of-range integer index wraps around silently (NumPy raises IndexError), so
integer index arrays are range-checked when the data is on the device: host arrays on the host,
before they are copied over (no wait for the device); arrays already on the device there, which
waits for the device once per index. The training step does not pay that wait: its ids are
checked once per batch, on the host, before they go to the device, and the model's embedding
then indexes with ``check=False``.
"""
import numpy as np

from ..backend import get_array_module, is_array, to_numpy


def index_arg(index, like, check=True):
    """``index`` (ints, slices, lists, arrays, or a tuple of them; Tensors already unwrapped to
    their arrays) with its lists and arrays made arrays on the device of ``like``."""
    xp = get_array_module(like)
    items = tuple(map(_convert, index)) if isinstance(index, tuple) else (_convert(index),)
    if check and xp is not np:
        check_index_range(items, like.shape)
    items = tuple(xp.asarray(i) if is_array(i) and get_array_module(i) is not xp else i for i in items)
    return items if isinstance(index, tuple) else items[0]


def _convert(i):
    if isinstance(i, list):
        i = np.asarray(i, dtype=np.int64) if not i else np.asarray(i)
    if is_array(i) and i.dtype.kind == "f":
        raise TypeError(f"indices must be integers or booleans, got dtype {i.dtype}")
    return i


def _width(i):
    """How many axes of the data the index item ``i`` indexes."""
    if i is None or i is Ellipsis or isinstance(i, (bool, np.bool_)):
        return 0
    return i.ndim if is_array(i) and i.dtype.kind == "b" else 1


def check_index_range(items, shape):
    """IndexError for an integer index array with an entry outside its axis, as NumPy's.
    Each array is checked where it lives; the device ones together, with one wait."""
    used = sum(_width(i) for i in items)
    axis, on_device = 0, []
    for i in items:
        if i is Ellipsis:
            axis += max(len(shape) - used, 0)
            continue
        if _width(i) != 1 or not is_array(i):
            axis += _width(i)
            continue
        if i.dtype.kind in "iu" and i.size and axis < len(shape):
            if isinstance(i, np.ndarray):
                _refuse_out_of_range(i, axis, shape[axis])
            else:
                on_device.append((i, axis))
        axis += 1
    if on_device:
        xp = get_array_module(on_device[0][0])
        flags = xp.stack([_out_of_range(i, shape[a]).any() for i, a in on_device])
        if bool(flags.any()):  # the one wait; the error path below may wait again
            for i, a in on_device:
                _refuse_out_of_range(to_numpy(i), a, shape[a])


def _out_of_range(ids, n):
    return (ids >= n) if ids.dtype.kind == "u" else (ids < -n) | (ids >= n)


def _refuse_out_of_range(ids, axis, n):
    bad = _out_of_range(ids, n)
    if bad.any():
        raise IndexError(f"index {int(ids[bad].ravel()[0])} is out of bounds for axis {axis} with size {n}")
