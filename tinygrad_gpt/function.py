"""The ``Function`` base class: one differentiable operation on raw arrays.

A Function computes ``forward`` on backend arrays (NumPy or CuPy) and keeps what
its ``backward`` needs. ``backward(g)`` receives the gradient of the loss with
respect to the output and returns one gradient per input (``None`` where an
input needs none). ``Tensor._apply`` is the one place that calls ``forward``
and links the result into the graph.

    >>> import numpy as np
    >>> class Double(Function):
    ...     def forward(self, x):
    ...         return 2 * x
    ...     def backward(self, g):
    ...         return 2 * g  # d/dx 2x = 2
    >>> Double().forward(np.ones(2))
    array([2., 2.])
"""
from .backend import get_array_module


class Function:
    """Base class of every op. Subclasses define ``forward`` and ``backward``."""

    def __init__(self, needs_grad=()):
        # needs_grad[i] is True when input i requires a gradient; backward may
        # skip the work for inputs that do not.
        self.needs_grad = tuple(needs_grad)
        self.parents = ()
        self.saved = ()

    @property
    def name(self):
        return type(self).__name__

    def save_for_backward(self, *arrays):
        self.saved = arrays

    def forward(self, *arrays, **kwargs):
        raise NotImplementedError

    def backward(self, g):
        raise NotImplementedError


def sum_to(x, shape):
    """Sum ``x`` down to ``shape``: the gradient of broadcasting ``shape`` up to x.shape.

        >>> import numpy as np
        >>> sum_to(np.ones((2, 3)), (1, 3))
        array([[2., 2., 2.]])
    """
    shape = tuple(shape)
    if x.shape == shape:
        return x
    lead = x.ndim - len(shape)
    axes = tuple(range(lead)) + tuple(
        lead + i for i, n in enumerate(shape) if n == 1 and x.shape[lead + i] != 1)
    return x.sum(axis=axes, keepdims=True).reshape(shape)


class SliceGrad:
    """The gradient of ``x[index]`` for an index that picks each element at most once:
    ``values`` at ``index`` and zero elsewhere, in an array of ``shape``, not yet written out.

    ``GetItem.backward`` returns one, so that when several slices of one tensor are used (q, k
    and v cut from one qkv tensor) the engine adds each slice's values straight into one
    gradient array, instead of making a zero-filled array per slice and adding those up.
    ``order`` lists x's axes from the outermost in memory to the innermost: the dense array
    gets x's layout, so that the gradient of a transposed view reshapes back without a copy.
    """

    def __init__(self, values, index, shape, order):
        self.values, self.index, self.shape, self.order = values, index, tuple(shape), order

    @property
    def dtype(self):
        return self.values.dtype

    def astype(self, dtype):
        return SliceGrad(self.values.astype(dtype), self.index, self.shape, self.order)

    def dense(self):
        xp = get_array_module(self.values)
        inverse = sorted(range(len(self.order)), key=self.order.__getitem__)
        out = xp.zeros([self.shape[i] for i in self.order], self.dtype).transpose(inverse)
        out[self.index] = self.values
        return out

    def add_to(self, array):
        """array[index] += values, in place."""
        array[self.index] += self.values


def memory_order(x):
    """x's axes from the largest stride to the smallest: (0, 1, ...) for a C-contiguous array."""
    return sorted(range(x.ndim), key=lambda i: -abs(x.strides[i]))
