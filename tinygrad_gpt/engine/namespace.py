"""The ``xp`` of a Tensor: NumPy's functions, on Tensors, recorded in the graph.

A rule takes ``xp = get_array_module(g)`` from its arguments and calls ``xp.exp``, ``xp.where``,
``xp.swapaxes`` and so on. Given arrays, ``xp`` is NumPy or CuPy. Given Tensors (a backward run
on Tensors, for a gradient of a gradient: engine/higher.py), it is a ``TensorNamespace``: the
same names, each a Tensor op, so that the backward is itself recorded and can be differentiated.

    >>> from tinygrad_gpt import Tensor
    >>> from tinygrad_gpt.backend import get_array_module
    >>> x = Tensor([0.0, 1.0], requires_grad=True)
    >>> xp = get_array_module(x)
    >>> xp.where(x > 0.5, xp.exp(x), x).requires_grad
    True

The three ops that NumPy has and the Tensor methods lacked are here, each with its rule:
``Where`` and ``BroadcastTo`` (and ``ops.Cast`` for ``astype``).
"""
import numpy as np

from .. import backend
from ..function import Function, sum_to


class Where(Function):
    """x where the boolean ``cond`` holds, else y (both broadcast)."""

    def forward(self, x, y, cond):
        self.cond, self.shapes = cond, (x.shape, y.shape)
        return backend.get_array_module(x, y).where(cond, x, y)

    def backward(self, g):
        xp = backend.get_array_module(g)
        zero = g.dtype.type(0)
        # d/dx = 1 where cond holds, else 0;  d/dy = the other way round
        gx = sum_to(xp.where(self.cond, g, zero), self.shapes[0]) if self.needs_grad[0] else None
        gy = sum_to(xp.where(self.cond, zero, g), self.shapes[1]) if self.needs_grad[1] else None
        return gx, gy


class BroadcastTo(Function):
    def forward(self, x, shape):
        self.shape = x.shape
        return backend.get_array_module(x).broadcast_to(x, shape)

    def backward(self, g):
        # each value was copied to many places: their gradients add up
        return sum_to(g, self.shape)


class TensorNamespace:
    """NumPy's names for the Tensor ops, on one device's arrays (``xp``). Constants (``zeros``,
    ``arange``, ``sign``) are Tensors that need no gradient."""

    def __init__(self, xp):
        self.xp = xp

    def _lift(self, x, like):
        return x if _is_tensor(x) else like._lift(x)

    def _constant(self, array):
        from ..tensor import Tensor  # tensor.py imports this module's home package first
        return Tensor._wrap(self.xp.asarray(array))

    def _data(self, x):
        return x.data if _is_tensor(x) else x

    # elementwise
    def exp(self, x): return x.exp()
    def log(self, x): return x.log()
    def sqrt(self, x): return x.sqrt()
    def tanh(self, x): return x.tanh()
    def abs(self, x): return x.abs()
    def sign(self, x): return self._constant(self.xp.sign(self._data(x)))

    def power(self, x, y):
        return x ** (float(y) if np.ndim(y) == 0 and not _is_tensor(y) else y)

    def maximum(self, x, y):
        x, y = (x, x._lift(y)) if _is_tensor(x) else (y._lift(x), y)
        return self.where(x >= y, x, y)

    def where(self, cond, x, y):
        like = x if _is_tensor(x) else y
        cond = self._data(cond)
        if not _is_tensor(like):
            return self._constant(self.xp.where(cond, x, y))
        x, y = self._lift(x, like), self._lift(y, like)
        if x.dtype != y.dtype and x.dtype.kind == y.dtype.kind == "f":
            raise TypeError(f"where: operands need one dtype, got {x.dtype} and {y.dtype}")
        return like._apply(Where, x, y, cond=cond)

    # shapes and products
    def swapaxes(self, x, a, b):
        return x.transpose(a, b)

    def transpose(self, x, axes):
        return x.permute(*axes)

    def broadcast_to(self, x, shape):
        return x._apply(BroadcastTo, x, shape=tuple(shape))

    def matmul(self, x, y): return x @ y
    def concatenate(self, xs, axis=0): return type(xs[0]).cat(list(xs), axis=axis)

    # constants
    def zeros(self, shape, dtype=np.float64): return self._constant(self.xp.zeros(shape, dtype=dtype))
    def ones(self, shape, dtype=np.float64): return self._constant(self.xp.ones(shape, dtype=dtype))
    def zeros_like(self, x): return self._constant(self.xp.zeros_like(self._data(x)))
    def ones_like(self, x): return self._constant(self.xp.ones_like(self._data(x)))
    def arange(self, *args, **kwargs): return self._constant(self.xp.arange(*args, **kwargs))
    def triu(self, x, k=0): return self._constant(self.xp.triu(self._data(x), k=k))


def _is_tensor(x):
    return hasattr(x, "_apply")


_spaces = {}


def namespace_of(array):
    """The TensorNamespace of the device that holds ``array``."""
    xp = backend.get_array_module(array)
    if xp not in _spaces:
        _spaces[xp] = TensorNamespace(xp)
    return _spaces[xp]
