"""The stand-in's array: a NumPy array behind a wall, behaving as CuPy documents.

CuPy keeps its arrays on the GPU, so a CuPy array never turns into a NumPy array by
itself ("Conversion to/from NumPy arrays" in CuPy's user guide):
- ``__array__`` raises TypeError, so ``np.asarray(x)`` and ``np.float32(x)`` fail;
- ``__array_ufunc__ = None`` and ``__array_function__`` returning NotImplemented make
  ``np.exp(x)``, ``np.sum(x)`` and ``numpy_array + x`` fail (real CuPy dispatches these,
  which would hide a NumPy call on a device array; the stand-in refuses them);
- a NumPy array given to a CuPy function or operator is a TypeError;
- reductions and scalar indexing give 0-d arrays, not NumPy scalars;
- integer-array indices wrap around instead of raising IndexError
  ("Out-of-bounds integer array indexing" in "Differences between CuPy and NumPy").
Reading values back (``get``, ``asnumpy``, ``item``, ``tolist``, ``float``, ``int``,
``bool``, ``repr``) waits for the device: each one counts as a host sync in COUNTS.
"""
import collections

import numpy as np

# host syncs (device -> host reads) and host -> device copies, for tests to assert on
COUNTS = collections.Counter()


def reset_counts():
    COUNTS.clear()


def _sync(what):
    COUNTS["sync"] += 1
    COUNTS["sync:" + what] += 1


def _h2d(what):
    COUNTS["h2d"] += 1
    COUNTS["h2d:" + what] += 1


def unsupported(obj):
    return TypeError(f"Unsupported type {type(obj)}")


def unwrap(obj, where="argument"):
    """The NumPy array behind a stand-in array; scalars, dtypes and shapes pass through;
    a NumPy array is a TypeError, as in CuPy."""
    if isinstance(obj, ndarray):
        return obj._a
    if isinstance(obj, np.ndarray):
        raise unsupported(obj)
    if isinstance(obj, (list, tuple)):
        return type(obj)(unwrap(o, where) for o in obj)
    if isinstance(obj, dict):
        return {k: unwrap(v, where) for k, v in obj.items()}
    return obj


def wrap(obj):
    """NumPy results back behind the wall: arrays and NumPy scalars become stand-in arrays."""
    if isinstance(obj, np.ndarray):
        return ndarray._from(obj)
    if isinstance(obj, np.generic):
        return ndarray._from(np.asarray(obj))
    if isinstance(obj, tuple):
        return tuple(wrap(o) for o in obj)
    if isinstance(obj, list):
        return [wrap(o) for o in obj]
    return obj


def _index(key, shape):
    """An index for NumPy with CuPy's rule: integer-array indices wrap around each axis.
    Host index arrays (NumPy arrays and lists) are copied to the device, as CuPy does."""
    items = key if isinstance(key, tuple) else (key,)
    out, axis = [], 0
    consumed = sum(1 if not (k is None or k is Ellipsis) else 0 for k in items)
    for k in items:
        if isinstance(k, ndarray) and k.dtype == np.bool_:
            out.append(k._a)
            axis += k.ndim
            continue
        if isinstance(k, (np.ndarray, list)):
            _h2d("index")
            k = ndarray._from(np.array(k))
            if k.dtype == np.bool_:
                out.append(k._a)
                axis += k.ndim
                continue
        if k is Ellipsis:
            out.append(k)
            axis = len(shape) - (consumed - axis)
            continue
        if k is None:
            out.append(k)
            continue
        if isinstance(k, ndarray):
            if k.dtype.kind not in "iu":
                raise IndexError("arrays used as indices must be of integer (or boolean) type")
            n = shape[axis] if axis < len(shape) else 0
            out.append(k._a % n if n else k._a)  # wraps around, as in CuPy
        else:
            out.append(k)
        axis += 1
    return tuple(out)


_REDUCTIONS = ("all", "any", "argmax", "argmin", "max", "min", "mean", "prod", "std", "sum", "var")
_METHODS = _REDUCTIONS + (
    "astype", "clip", "conj", "copy", "cumsum", "diagonal", "dot", "fill", "flatten",
    "nonzero", "ravel", "repeat", "reshape", "round", "squeeze", "swapaxes", "take",
    "transpose", "view")
_PLAIN = ("shape", "dtype", "ndim", "size", "strides", "itemsize", "nbytes", "flags")


class ndarray:
    """A device array of the stand-in (not a NumPy subclass)."""

    __slots__ = ("_a", "__weakref__")
    __array_ufunc__ = None
    __array_priority__ = 100

    def __init__(self, shape, dtype=float):
        self._a = np.empty(shape, dtype=dtype)

    @classmethod
    def _from(cls, array):
        out = cls.__new__(cls)
        out._a = array
        return out

    # -- the wall
    def __array__(self, dtype=None, copy=None):
        raise TypeError("Implicit conversion to a NumPy array is not allowed. "
                        "Please use `.get()` to construct a NumPy array explicitly.")

    def __array_function__(self, func, types, args, kwargs):
        return NotImplemented

    # -- reading back (host syncs)
    def get(self, stream=None, order="C", out=None):
        _sync("get")
        if out is not None:
            np.copyto(out, self._a)
            return out
        return np.array(self._a, order=order)

    def item(self, *args):
        _sync("item")
        return self._a.item(*args)

    def tolist(self):
        _sync("tolist")
        return self._a.tolist()

    def __float__(self):
        _sync("float")
        return float(self._a)

    def __int__(self):
        _sync("int")
        return int(self._a)

    def __complex__(self):
        _sync("complex")
        return complex(self._a)

    def __bool__(self):
        _sync("bool")
        return bool(self._a)

    def __repr__(self):
        _sync("repr")
        return repr(self._a)

    def __str__(self):
        _sync("repr")
        return str(self._a)

    def __format__(self, spec):
        _sync("repr")
        return format(self._a, spec)

    def set(self, arr, stream=None):
        if not isinstance(arr, np.ndarray):
            raise TypeError(f"Only numpy.ndarray can be set to cupy.ndarray, got {type(arr)}")
        _h2d("set")
        self._a[...] = arr

    # -- attributes
    def __getattr__(self, name):
        if name in _PLAIN:
            return getattr(self._a, name)
        if name in _METHODS:
            method = getattr(self._a, name)
            return lambda *args, **kwargs: wrap(method(*unwrap(args), **unwrap(kwargs)))
        raise AttributeError(f"'cupy.ndarray' object has no attribute '{name}'")

    T = property(lambda self: ndarray._from(self._a.T))
    flat = property(lambda self: _Flat(self))
    base = property(lambda self: None if self._a.base is None else ndarray._from(self._a.base))
    device = property(lambda self: _Device0)

    def __len__(self):
        return len(self._a)

    def argsort(self, axis=-1, kind=None):
        import cupy
        return cupy.argsort(self, axis=axis, kind=kind)

    def __iter__(self):
        if self._a.ndim == 0:
            raise TypeError("iteration over a 0-d array")
        return (self[i] for i in range(len(self._a)))

    def __getitem__(self, key):
        return wrap(self._a[_index(key, self._a.shape)])

    def __setitem__(self, key, value):
        if isinstance(value, np.ndarray):
            _h2d("setitem")
            value = value.copy()
        elif isinstance(value, ndarray):
            value = value._a
        self._a[_index(key, self._a.shape)] = value

    __hash__ = None

    def __copy__(self):
        return ndarray._from(self._a.copy())

    def __deepcopy__(self, memo):
        return ndarray._from(self._a.copy())

    def __reduce__(self):
        raise TypeError("the stand-in's arrays are not pickled")


class _Flat:
    """``x.flat``: the elements in C order, read and written by position (cupy.flatiter)."""

    def __init__(self, base):
        self._base = base

    def __getitem__(self, key):
        return wrap(self._base._a.flat[unwrap(key)])

    def __setitem__(self, key, value):
        self._base._a.flat[unwrap(key)] = _operand(value)

    def __len__(self):
        return self._base._a.size


def _operand(other):
    if isinstance(other, ndarray):
        return other._a
    if isinstance(other, (bool, int, float, complex, np.generic)):
        return other
    raise unsupported(other)


def _binary(name):
    op = getattr(np.ndarray, name)

    def method(self, other):
        try:
            y = _operand(other)
        except TypeError:
            if isinstance(other, np.ndarray):
                raise
            return NotImplemented
        return wrap(op(self._a, y))
    method.__name__ = name
    return method


def _inplace(name):
    op = getattr(np.ndarray, name)

    def method(self, other):
        op(self._a, _operand(other))
        return self
    method.__name__ = name
    return method


def _unary(name):
    op = getattr(np.ndarray, name)

    def method(self):
        return wrap(op(self._a))
    method.__name__ = name
    return method


for _name in ("add", "sub", "mul", "truediv", "floordiv", "mod", "pow", "matmul", "and", "or",
              "xor", "lshift", "rshift"):
    setattr(ndarray, f"__{_name}__", _binary(f"__{_name}__"))
    setattr(ndarray, f"__r{_name}__", _binary(f"__r{_name}__"))
    setattr(ndarray, f"__i{_name}__", _inplace(f"__i{_name}__"))
for _name in ("eq", "ne", "lt", "le", "gt", "ge"):
    setattr(ndarray, f"__{_name}__", _binary(f"__{_name}__"))
for _name in ("neg", "pos", "abs", "invert"):
    setattr(ndarray, f"__{_name}__", _unary(f"__{_name}__"))


class _Device:
    id = 0

    def synchronize(self):
        pass

    def __repr__(self):
        return "<CUDA Device 0>"


_Device0 = _Device()
