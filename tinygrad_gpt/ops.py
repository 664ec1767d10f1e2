"""The primitive Functions, on raw NumPy/CuPy arrays.

Each op computes its forward on arrays, saves what backward needs, and its
backward returns one gradient per input with the derivative in a comment.
``xp`` always comes from the arrays, never from a global.

Groups: elementwise binary, elementwise unary, reductions, movement, matmul.
The fused ops of a transformer (softmax, layer norm, cross-entropy, attention)
live in ``rules.py``; the fast layer (``fast/``) speeds up some of these rules.
"""
import math

from . import backend
from .backend import get_array_module, scatter_add
from .function import Function, sum_to


# ----------------------------------------------------------------------------- binary

class Add(Function):
    def forward(self, x, y):
        self.shapes = x.shape, y.shape
        return x + y

    def backward(self, g):
        # d/dx (x + y) = 1, d/dy (x + y) = 1
        return (sum_to(g, self.shapes[0]) if self.needs_grad[0] else None,
                sum_to(g, self.shapes[1]) if self.needs_grad[1] else None)


class Sub(Function):
    def forward(self, x, y):
        self.shapes = x.shape, y.shape
        return x - y

    def backward(self, g):
        # d/dx (x - y) = 1, d/dy (x - y) = -1
        return (sum_to(g, self.shapes[0]) if self.needs_grad[0] else None,
                -sum_to(g, self.shapes[1]) if self.needs_grad[1] else None)


class Mul(Function):
    def forward(self, x, y):
        self.save_for_backward(x, y)
        return x * y

    def backward(self, g):
        x, y = self.saved
        # d/dx (x * y) = y, d/dy (x * y) = x
        return (sum_to(g * y, x.shape) if self.needs_grad[0] else None,
                sum_to(g * x, y.shape) if self.needs_grad[1] else None)


class Div(Function):
    def forward(self, x, y):
        out = x / y
        self.save_for_backward(x, y, out)
        return out

    def backward(self, g):
        x, y, out = self.saved
        # d/dx (x / y) = 1 / y, d/dy (x / y) = -x / y^2 = -out / y
        gx = sum_to(g / y, x.shape) if self.needs_grad[0] else None
        gy = sum_to(-g * out / y, y.shape) if self.needs_grad[1] else None
        return gx, gy


class Pow(Function):
    """x ** y with both sides arrays (a tensor exponent, or a constant base)."""

    def forward(self, x, y):
        xp = get_array_module(x, y)
        out = xp.power(x, y)
        self.save_for_backward(x, y, out)
        return out

    def backward(self, g):
        x, y, out = self.saved
        xp = get_array_module(x)
        # d/dx x^y = y x^(y-1), d/dy x^y = x^y ln x
        gx = sum_to(g * y * xp.power(x, y - 1), x.shape) if self.needs_grad[0] else None
        gy = sum_to(g * out * xp.log(x), y.shape) if self.needs_grad[1] else None
        return gx, gy


def _power(x, p):
    """x ** p for a Python number p, using multiplication for the common cases (no slow powf)."""
    if p == 2:
        return x * x
    if p == 3:
        return x * x * x
    if p == 1:
        return x.copy()
    if p == 0.5:
        return get_array_module(x).sqrt(x)
    if p == -1:
        return 1 / x
    return get_array_module(x).power(x, x.dtype.type(p))


class PowConst(Function):
    """x ** p for a constant Python number p."""

    def forward(self, x, p):
        self.save_for_backward(x)
        self.p = p
        return _power(x, p)

    def backward(self, g):
        (x,) = self.saved
        if self.p == 0:  # x^0 = 1 everywhere, 0 ** 0 included: the gradient is 0 (not 0 * inf)
            return get_array_module(g).zeros_like(g)
        # d/dx x^p = p x^(p-1)
        return g * (self.p * _power(x, self.p - 1))


# ----------------------------------------------------------------------------- unary

class Neg(Function):
    def forward(self, x):
        return -x

    def backward(self, g):
        # d/dx (-x) = -1
        return -g


class Abs(Function):
    def forward(self, x):
        self.save_for_backward(x)
        return get_array_module(x).abs(x)

    def backward(self, g):
        # d/dx |x| = sign(x): -1 below 0, 1 above, and 0 at the kink (as PyTorch)
        return g * get_array_module(g).sign(self.saved[0])


class Exp(Function):
    def forward(self, x):
        out = get_array_module(x).exp(x)
        self.save_for_backward(out)
        return out

    def backward(self, g):
        # d/dx e^x = e^x
        return g * self.saved[0]


class Log(Function):
    def forward(self, x):
        self.save_for_backward(x)
        return get_array_module(x).log(x)

    def backward(self, g):
        # d/dx ln x = 1 / x
        return g / self.saved[0]


class Sqrt(Function):
    def forward(self, x):
        out = get_array_module(x).sqrt(x)
        self.save_for_backward(out)
        return out

    def backward(self, g):
        # d/dx sqrt(x) = 1 / (2 sqrt(x))
        return g / (2 * self.saved[0])


class Tanh(Function):
    def forward(self, x):
        out = get_array_module(x).tanh(x)
        self.save_for_backward(out)
        return out

    def backward(self, g):
        out = self.saved[0]
        # d/dx tanh(x) = 1 - tanh(x)^2
        return g * (1 - out * out)


class Sigmoid(Function):
    def forward(self, x):
        # sigmoid(x) = (1 + tanh(x / 2)) / 2, which never overflows
        out = get_array_module(x).tanh(x * 0.5)
        out += 1
        out *= 0.5
        self.save_for_backward(out)
        return out

    def backward(self, g):
        out = self.saved[0]
        # d/dx sigmoid(x) = sigmoid(x) (1 - sigmoid(x))
        return g * out * (1 - out)


class Relu(Function):
    def forward(self, x):
        self.save_for_backward(x)
        return get_array_module(x).maximum(x, 0)

    def backward(self, g):
        # d/dx max(x, 0) = 1 where x > 0, else 0
        return g * (self.saved[0] > 0)


GELU_C = math.sqrt(2.0 / math.pi)


class Gelu(Function):
    """GELU with GPT-2's tanh approximation: 0.5 x (1 + tanh(u)), u = c (x + 0.044715 x^3)."""

    def forward(self, x):
        t = get_array_module(x).tanh(GELU_C * (x + 0.044715 * x * x * x))
        self.save_for_backward(x, t)
        return 0.5 * x * (1 + t)

    def backward(self, g):
        x, t = self.saved
        # d/dx GELU = (1 + t) / 2 + x (1 - t^2) u' / 2,  u' = c (1 + 3 * 0.044715 x^2)
        return g * (0.5 * (1 + t) + 0.5 * x * (1 - t * t) * (GELU_C * (1 + 3 * 0.044715 * x * x)))


class MaskedFill(Function):
    """x with ``value`` wherever the boolean ``mask`` (broadcast to x) is True."""

    def forward(self, x, mask, value):
        xp = get_array_module(x, mask)
        self.mask, self.shape = mask, x.shape
        return xp.where(mask, x.dtype.type(value), x)

    def backward(self, g):
        xp = get_array_module(g)
        # d/dx = 1 where the mask is False, 0 where the value was written
        return sum_to(xp.where(self.mask, g.dtype.type(0), g), self.shape)


# ----------------------------------------------------------------------------- reductions

def _axes(axis, ndim):
    """Normalise axis=None|int|tuple to a sorted tuple of non-negative axes. As in PyTorch, a
    0-d tensor takes axis 0 or -1 (and has nothing to reduce), and an axis named twice is an error."""
    if axis is None:
        return tuple(range(ndim))
    axis = (axis,) if isinstance(axis, int) else tuple(axis)
    out = []
    for a in axis:
        if not -max(ndim, 1) <= a < max(ndim, 1):
            raise ValueError(f"axis {a} is out of range for a tensor with {ndim} dimensions")
        if ndim:
            out.append(a % ndim)
    if len(set(out)) < len(out):
        raise ValueError(f"axis {axis} names an axis twice")
    return tuple(sorted(out))


def _keepdims_shape(shape, axes):
    return tuple(1 if i in axes else n for i, n in enumerate(shape))


class Sum(Function):
    def forward(self, x, axis=None, keepdims=False):
        self.shape = x.shape
        self.axes = _axes(axis, x.ndim)
        return x.sum(axis=self.axes, keepdims=keepdims)

    def backward(self, g):
        xp = get_array_module(g)
        # d/dx_i sum(x) = 1: the gradient is copied back over the summed axes
        g = g.reshape(_keepdims_shape(self.shape, self.axes))
        return xp.broadcast_to(g, self.shape)


class Max(Function):
    def forward(self, x, axis=None, keepdims=False):
        self.axes = _axes(axis, x.ndim)
        out = x.max(axis=self.axes, keepdims=True)
        self.save_for_backward(x, out)
        return out if keepdims else out.reshape([n for i, n in enumerate(x.shape) if i not in self.axes])

    def backward(self, g):
        x, out = self.saved
        # d/dx_i max(x) = 1 at the maximum (shared equally between ties), 0 elsewhere
        hit = x == out
        count = hit.sum(axis=self.axes, keepdims=True).astype(g.dtype)
        return hit * (g.reshape(out.shape) / count)


# ----------------------------------------------------------------------------- movement

class Reshape(Function):
    def forward(self, x, shape):
        self.shape = x.shape
        return x.reshape(shape)

    def backward(self, g):
        # reshaping moves no values: the gradient is reshaped back
        return g.reshape(self.shape)


class Cast(Function):
    """A new C-ordered array in ``dtype``: ``float()``, ``double()``, ``half()``, ``clone()``
    and ``contiguous()``."""

    def forward(self, x, dtype):
        self.dtype = x.dtype
        return x.astype(dtype, order="C", copy=True)

    def backward(self, g):
        # d/dx cast(x) = 1: the gradient goes back unchanged, in x's dtype
        return g.astype(self.dtype, copy=False)


class Transpose(Function):
    def forward(self, x, axes):
        self.axes = axes
        return get_array_module(x).transpose(x, axes)

    def backward(self, g):
        # the gradient is permuted back by the inverse permutation
        inverse = [0] * len(self.axes)
        for i, a in enumerate(self.axes):
            inverse[a] = i
        return get_array_module(g).transpose(g, inverse)


def _is_advanced(index):
    """True when an index holds integer arrays, which may repeat positions."""
    parts = index if isinstance(index, tuple) else (index,)
    return any(hasattr(p, "dtype") and p.dtype.kind in "iu" for p in parts)


class GetItem(Function):
    def forward(self, x, index):
        self.shape, self.dtype, self.index = x.shape, x.dtype, index
        return x[index]

    def backward(self, g):
        # each picked element passes its gradient back to where it came from, 0 elsewhere
        gx = get_array_module(g).zeros(self.shape, dtype=self.dtype)
        if _is_advanced(self.index):  # an element picked twice receives the sum (scatter-add)
            scatter_add(gx, self.index, g)
        else:  # a basic index picks each element at most once
            gx[self.index] = g
        return gx


class Cat(Function):
    def forward(self, *xs, axis=0):
        self.axis = axis
        self.sizes = [x.shape[axis] for x in xs]
        return get_array_module(*xs).concatenate(xs, axis=axis)

    def backward(self, g):
        # concatenation copies values: the gradient is split back into pieces
        out, start = [], 0
        for n in self.sizes:
            index = [slice(None)] * g.ndim
            index[self.axis] = slice(start, start + n)
            out.append(g[tuple(index)])
            start += n
        return tuple(out)


# ----------------------------------------------------------------------------- matmul

class MatMul(Function):
    """x @ y with NumPy's rules: 1-D operands, batched and broadcast batch dimensions."""

    def forward(self, x, y):
        self.save_for_backward(x, y)
        if x.ndim > 2 and y.ndim == 2:  # (..., n, k) @ (k, m) as one big matrix product
            return (x.reshape(-1, x.shape[-1]) @ y).reshape(*x.shape[:-1], y.shape[1])
        return x @ y

    def backward(self, g):
        x, y = self.saved
        xp = get_array_module(g)
        if x.ndim > 2 and y.ndim == 2:  # a weight matrix shared by every row: 2-D products
            k, m = y.shape
            g2 = g.reshape(-1, m)
            # d/dX (X @ W) = G @ W^T, d/dW (X @ W) = X^T @ G
            gx = (g2 @ y.T).reshape(x.shape) if self.needs_grad[0] else None
            gy = x.reshape(-1, k).T @ g2 if self.needs_grad[1] else None
            return gx, gy
        if x.ndim == 1 and y.ndim == 1:  # dot product: d/dx x.y = y, d/dy x.y = x
            return g * y, g * x
        # promote 1-D operands to matrices, as the forward did implicitly
        x2 = x[None, :] if x.ndim == 1 else x
        y2 = y[:, None] if y.ndim == 1 else y
        g2 = g[..., None, :] if x.ndim == 1 else g
        g2 = g2[..., None] if y.ndim == 1 else g2
        # d/dX (X @ Y) = G @ Y^T, d/dY (X @ Y) = X^T @ G
        gx = gy = None
        if self.needs_grad[0]:
            gx = sum_to(g2 @ xp.swapaxes(y2, -1, -2), x2.shape).reshape(x.shape)
        if self.needs_grad[1]:
            gy = sum_to(xp.swapaxes(x2, -1, -2) @ g2, y2.shape).reshape(y.shape)
        return gx, gy


class ToDevice(Function):
    """Move values to another device; the gradient moves back."""

    def forward(self, x, device):
        self.source = backend.device_of(x)
        return backend.to_device(x, device)

    def backward(self, g):
        # the move is the identity on values: d/dx = 1, on the source device
        return backend.to_device(g, self.source)
