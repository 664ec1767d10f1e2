"""The ``Function`` base class: one differentiable operation on raw arrays.

A Function computes ``forward`` on backend arrays (NumPy or CuPy) and keeps what
its ``backward`` needs. ``backward(g)`` receives the gradient of the loss with
respect to the output and returns one gradient per input (``None`` where an
input needs none). ``Function.apply`` runs it on Tensors and links the result
into the graph, as ``torch.autograd.Function.apply`` does:

    >>> class Double(Function):
    ...     def forward(self, x):
    ...         return 2 * x
    ...     def backward(self, g):
    ...         return 2 * g  # d/dx 2x = 2
    >>> from tinygrad_gpt import Tensor
    >>> x = Tensor([1.0, 2.0], requires_grad=True)
    >>> y = Double.apply(x)
    >>> y.sum().backward(); x.grad
    array([2., 2.], dtype=float32)
"""

class Function:
    """Base class of every op. Subclasses define ``forward`` and ``backward``."""

    def __init__(self, needs_grad=()):
        # needs_grad[i] is True when input i requires a gradient; backward may
        # skip the work for inputs that do not.
        self.needs_grad = tuple(needs_grad)
        self.parents = ()
        self.saved = ()

    @classmethod
    def apply(cls, *inputs, **kwargs):
        """Run this op on Tensors and record it in the graph; returns the output Tensor.

        ``inputs`` are the Tensors to differentiate with respect to (numbers and arrays
        become constant Tensors); ``kwargs`` are options passed to ``forward`` as they are.
        An exception raised in your ``forward`` or ``backward`` reaches you unchanged.
        """
        from .tensor import Tensor  # tensor.py builds on this module, so it is imported here
        inputs = [t if t is None or isinstance(t, Tensor) else Tensor(t, dtype=getattr(t, "dtype", None))
                  for t in inputs]
        return Tensor._apply(cls, *inputs, **kwargs)

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


class Gradients(dict):
    """The gradients on their way back through the graph, one per tensor (by id).

    A tensor used twice receives two gradients, and its gradient is their sum, as in
    micrograd's ``grad +=``: weight tying and residual connections rely on it.

        >>> grads = Gradients()
        >>> grads.add("x", 1.0); grads.add("x", 2.0)
        >>> grads.take("x")
        3.0
    """

    def add(self, key, gx):
        self[key] = self[key] + gx if key in self else gx

    def take(self, key):
        """The summed gradient of ``key`` (None if none arrived), removed from the dict."""
        return self.pop(key, None)

    def leaf_copy(self, g, dtype):
        """A fresh array of ``g``'s values in ``dtype``, for a leaf's ``.grad`` to own."""
        return g.astype(dtype, copy=True)
