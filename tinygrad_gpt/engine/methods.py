"""The ops as Tensor methods: ``x + y``, ``x @ w``, ``x.exp()``, ``x.sum(axis)``, ``x.reshape(...)``.

Each method applies its op (ops.py, rules.py) through ``Tensor._apply``, which the current mode
(modes.py) may route to a fast op or a composed twin. ``Tensor`` (tensor.py) inherits them from
``TensorMethods``; tensor.py keeps the data, the graph, backward and the in-place ops.
"""
import operator

import numpy as np

from .. import backend, ops, rules
from ..backend import get_array_module, is_array
from . import indexing, namespace


class TensorMethods:
    """The op methods of ``Tensor``."""

    __slots__ = ()

    # ------------------------------------------------------------------ arithmetic
    def _lift(self, other):
        """Turn a Python number or array into a constant Tensor beside self.

        As in PyTorch, a constant does not raise a float tensor's dtype: integer and boolean
        operands, and 0-d float arrays beside a tensor with axes, take the tensor's dtype (NumPy
        alone would make float32 * int64 a float64 array)."""
        source = None
        if isinstance(other, TensorMethods) and not other.requires_grad:
            source, other = other, other.data
        if isinstance(other, TensorMethods):
            return other
        if is_array(other):
            if self.dtype.kind == "f" and (other.dtype.kind in "biu"
                                           or (other.dtype.kind == "f" and other.ndim == 0 < self.ndim)):
                other = other.astype(self.dtype)
            xp = get_array_module(self.data)
            if source is None and other.ndim == 0 and xp is not np and isinstance(other, np.ndarray):
                # as in PyTorch, a 0-d host value beside a device tensor is a number: made once there
                return self._wrap(backend.device_constant(xp, other.item(), other.dtype))
            t = self._wrap(other)
            if source is not None and other is source._data:
                t._version = source._version  # one array: a write to the tensor is seen here too
            return t
        xp = get_array_module(self.data)
        if isinstance(other, (bool, int, float, np.number)) and self.dtype.kind == "f":
            if xp is not np:  # a device constant is made once, not copied over at every use
                return self._wrap(backend.device_constant(xp, other, self.dtype))
            return self._wrap(xp.asarray(other, dtype=self.dtype))
        return self._wrap(xp.asarray(other))

    def __add__(self, other): return self._apply(ops.Add, self, self._lift(other))
    def __radd__(self, other): return self._apply(ops.Add, self._lift(other), self)
    def __sub__(self, other): return self._apply(ops.Sub, self, self._lift(other))
    def __rsub__(self, other): return self._apply(ops.Sub, self._lift(other), self)
    def __mul__(self, other): return self._apply(ops.Mul, self, self._lift(other))
    def __rmul__(self, other): return self._apply(ops.Mul, self._lift(other), self)
    def __truediv__(self, other): return self._apply(ops.Div, self, self._lift(other))
    def __rtruediv__(self, other): return self._apply(ops.Div, self._lift(other), self)
    def __matmul__(self, other): return self._apply(ops.MatMul, *_one_dtype(self, self._lift(other)))
    def __rmatmul__(self, other): return self._apply(ops.MatMul, *_one_dtype(self._lift(other), self))
    def __neg__(self): return self._apply(ops.Neg, self)

    # ------------------------------------------------------------------ comparisons
    def _compare(self, other, array_op):
        """An elementwise comparison: a boolean Tensor that needs no gradient."""
        if not isinstance(other, (TensorMethods, bool, int, float, np.number, list, tuple)) and not is_array(other):
            return NotImplemented  # t == None is False, as for any other object
        other = self._lift(other)
        xp = get_array_module(self.data, other.data)
        return self._wrap(xp.asarray(array_op(self.data, other.data)))

    def __lt__(self, other): return self._compare(other, operator.lt)
    def __le__(self, other): return self._compare(other, operator.le)
    def __gt__(self, other): return self._compare(other, operator.gt)
    def __ge__(self, other): return self._compare(other, operator.ge)
    def __eq__(self, other): return self._compare(other, operator.eq)
    def __ne__(self, other): return self._compare(other, operator.ne)

    def any(self):
        """True where any element is true, as a one-element boolean Tensor."""
        return self._wrap(get_array_module(self.data).asarray(self.data.any()))

    def all(self):
        """True where every element is true, as a one-element boolean Tensor."""
        return self._wrap(get_array_module(self.data).asarray(self.data.all()))

    def __pow__(self, other):
        if isinstance(other, (int, float)) and not isinstance(other, bool):
            return self._apply(ops.PowConst, self, p=other)
        return self._apply(ops.Pow, self, self._lift(other))

    def __rpow__(self, other):
        return self._apply(ops.Pow, self._lift(other), self)

    def pow(self, exponent): return self ** exponent

    # ------------------------------------------------------------------ copies and casts
    def clone(self):
        """A copy with its own memory; gradients flow back through it (unlike ``detach``)."""
        return self._apply(ops.Cast, self, dtype=self.dtype)

    def contiguous(self):
        """This tensor when its array is C-ordered already, else a C-ordered copy (differentiable)."""
        return self if self._data.flags.c_contiguous else self.clone()

    def float(self): return self._cast(np.float32)
    def double(self): return self._cast(np.float64)
    def half(self): return self._cast(np.float16)

    def _cast(self, dtype):
        """This tensor in ``dtype``: itself when it has that dtype, else a differentiable copy."""
        return self if self.dtype == dtype else self._apply(ops.Cast, self, dtype=np.dtype(dtype))

    # ------------------------------------------------------------------ elementwise
    def abs(self): return self._apply(ops.Abs, self)
    def __abs__(self): return self.abs()
    def exp(self): return self._apply(ops.Exp, self)
    def log(self): return self._apply(ops.Log, self)
    def sqrt(self): return self._apply(ops.Sqrt, self)
    def tanh(self): return self._apply(ops.Tanh, self)
    def sigmoid(self): return self._apply(ops.Sigmoid, self)
    def relu(self): return self._apply(ops.Relu, self)

    def gelu(self):
        """GELU, tanh approximation (as in GPT-2)."""
        return self._apply(ops.Gelu, self)

    def masked_fill(self, mask, value):
        """A copy with ``value`` where the boolean ``mask`` (broadcastable) is True."""
        mask = mask.data if isinstance(mask, TensorMethods) else mask
        xp = get_array_module(self.data)
        if not is_array(mask):
            mask = np.asarray(mask)
        if mask.dtype != bool:  # as in PyTorch: 0/1 integers are not taken for a mask
            raise TypeError(f"masked_fill: the mask must be boolean, got dtype {mask.dtype}")
        if get_array_module(mask) is not xp:
            mask = xp.asarray(mask)  # a mask, like an index, goes where the data is
        return self._apply(ops.MaskedFill, self, mask=mask, value=value)

    # ------------------------------------------------------------------ reductions
    # ``dim=`` and ``keepdim=`` are PyTorch's names for ``axis=`` and ``keepdims=``
    def sum(self, axis=None, keepdims=False, *, dim=None, keepdim=None):
        axis, keepdims = _axis_arg(axis, dim), _keepdims_arg(keepdims, keepdim)
        return self._apply(ops.Sum, self, axis=axis, keepdims=keepdims)

    def max(self, axis=None, keepdims=False, *, dim=None, keepdim=None):
        """The largest values along ``axis`` (values only, not PyTorch's (values, indices))."""
        axis, keepdims = _axis_arg(axis, dim), _keepdims_arg(keepdims, keepdim)
        return self._apply(ops.Max, self, axis=axis, keepdims=keepdims)

    def mean(self, axis=None, keepdims=False, *, dim=None, keepdim=None):
        axis, keepdims = _axis_arg(axis, dim), _keepdims_arg(keepdims, keepdim)
        axes = ops._axes(axis, self.ndim)
        n = int(np.prod([self.shape[a] for a in axes])) if axes else 1
        return self.sum(axis=axis, keepdims=keepdims) * (1.0 / n if n else float("nan"))  # empty: NaN

    def astype(self, dtype, order="C", copy=True):
        """A copy in ``dtype``, as NumPy's (gradients flow back in this tensor's dtype)."""
        return self._apply(ops.Cast, self, dtype=np.dtype(dtype))

    def copy(self): return self.astype(self.dtype)
    def __array_namespace__(self, api_version=None): return namespace.namespace_of(self.data)

    # ------------------------------------------------------------------ softmax family
    def softmax(self, axis=-1, *, dim=None):
        axis = _axis_arg(axis, dim, -1)
        if self.ndim == 0:  # one value along no axis: as in PyTorch, axis 0 or -1, result 1
            ops._axes(axis, 0)
            return self.reshape(1).softmax(0).reshape(())
        return self._apply(rules.Softmax, self, axis=axis)

    def log_softmax(self, axis=-1, *, dim=None):
        axis = _axis_arg(axis, dim, -1)
        if self.ndim == 0:
            ops._axes(axis, 0)
            return self.reshape(1).log_softmax(0).reshape(())
        return self._apply(rules.LogSoftmax, self, axis=axis)

    # ------------------------------------------------------------------ sizes, as in PyTorch
    def size(self, dim=None):
        """The shape, as PyTorch's ``x.size()``; ``x.size(0)`` is the length of one dim.
        NumPy's ``size`` (the element count) is ``numel()``."""
        if dim is None:
            return self.shape
        if not -self.ndim <= dim < self.ndim:
            raise IndexError(f"size: dim {dim} is out of range for a tensor of shape {self.shape}")
        return self.shape[dim]

    def numel(self):
        """The number of elements (NumPy's ``size``)."""
        return int(self._data.size)

    def dim(self):
        """The number of dims (NumPy's ``ndim``)."""
        return self.ndim

    # ------------------------------------------------------------------ movement
    def reshape(self, *shape):
        return self._apply(ops.Reshape, self, shape=_shape_arg(shape))

    def view(self, *shape):
        return self.reshape(*shape)

    def transpose(self, *dims):
        """Swap two dims, as in PyTorch: ``k.transpose(-2, -1)``. ``permute`` takes a full order;
        ``.T`` reverses every dim."""
        if len(dims) != 2 or not all(isinstance(d, (int, np.integer)) for d in dims):
            hint = f" (x.permute{_plain(dims)})" if dims else ""
            raise TypeError(f"transpose(dim0, dim1) swaps two dims, as in PyTorch; got {dims}. "
                            f"For a full order of the dims use permute{hint}; to reverse them, .T")
        n = max(self.ndim, 1)  # a 0-d tensor takes dims 0 and -1, as in PyTorch
        for d in dims:
            if not -n <= d < n:
                raise IndexError(f"transpose: dim {d} is out of range for a tensor of shape {self.shape}")
        axes = list(range(self.ndim))
        if axes:
            axes[dims[0]], axes[dims[1]] = axes[dims[1]], axes[dims[0]]
        return self.permute(axes)

    def permute(self, *dims):
        """Put the dims in the given order: ``x.permute(2, 0, 1)`` (NumPy's ``transpose(axes)``)."""
        axes = _shape_arg(dims)
        if sorted(a % max(self.ndim, 1) for a in axes) != list(range(self.ndim)):
            raise ValueError(f"permute: dims {axes} are not a permutation of a "
                             f"{self.ndim}-dimensional tensor's dims (shape {self.shape})")
        return self._apply(ops.Transpose, self, axes=tuple(a % self.ndim for a in axes))

    def unsqueeze(self, dim):
        """A new dim of length 1 at ``dim`` (which may be ``ndim``, or negative from the end)."""
        if not -self.ndim - 1 <= dim <= self.ndim:
            raise IndexError(f"unsqueeze: dim {dim} is out of range for a tensor of shape {self.shape} "
                             f"(from {-self.ndim - 1} to {self.ndim})")
        dim = dim % (self.ndim + 1)
        return self.reshape(self.shape[:dim] + (1,) + self.shape[dim:])

    def squeeze(self, dim=None):
        """Without ``dim``, drop every dim of length 1; with it (an int or a tuple), drop those of
        them that have length 1 and keep the others, as in PyTorch."""
        dims = range(self.ndim) if dim is None else dim if isinstance(dim, (tuple, list)) else (dim,)
        n = max(self.ndim, 1)
        for d in dims:
            if not -n <= d < n:
                raise IndexError(f"squeeze: dim {d} is out of range for a tensor of shape {self.shape}")
        drop = {d % n for d in dims if self.ndim and self.shape[d] == 1}
        return self.reshape(tuple(s for i, s in enumerate(self.shape) if i not in drop))

    def __getitem__(self, index):
        return self._apply(ops.GetItem, self, index=indexing.index_arg(_unwrap(index), self.data))

    def _getitem_checked(self, index):
        """``self[index]`` for integer ids their caller has range-checked already (once per
        batch, on the host): no second check, so no wait for the device."""
        return self._apply(ops.GetItem, self,
                             index=indexing.index_arg(_unwrap(index), self.data, check=False))

    @staticmethod
    def cat(tensors, axis=0, *, dim=None):
        """Join tensors along an existing axis."""
        axis = _axis_arg(axis, dim, 0)
        tensors = list(tensors)
        if not tensors:
            raise ValueError("cat: needs at least one tensor")
        ndim = tensors[0].ndim
        if any(t.ndim != ndim for t in tensors):
            raise ValueError(f"cat: tensors need the same number of dimensions, got shapes "
                             f"{', '.join(str(t.shape) for t in tensors)}")
        if ndim == 0 or not -ndim <= axis < ndim:
            raise ValueError(f"cat: axis {axis} is out of range for tensors of shape {tensors[0].shape}"
                             + (" (0-d tensors cannot be joined; use stack)" if ndim == 0 else ""))
        return tensors[0]._apply(ops.Cat, *tensors, axis=axis)

    @staticmethod
    def stack(tensors, axis=0, *, dim=None):
        """Join same-shaped tensors along a new axis."""
        axis = _axis_arg(axis, dim, 0)
        tensors = list(tensors)
        if not tensors:
            raise ValueError("stack: needs at least one tensor")
        shape = tensors[0].shape
        for t in tensors:
            if t.shape != shape:
                raise ValueError(f"stack: all tensors need one shape, got {shape} and {t.shape}")
        if not -len(shape) - 1 <= axis <= len(shape):
            raise ValueError(f"stack: axis {axis} is out of range for tensors of shape {shape}")
        axis = axis % (len(shape) + 1)
        new = shape[:axis] + (1,) + shape[axis:]
        return tensors[0].cat([t.reshape(new) for t in tensors], axis=axis)

    def split(self, split_size_or_sections, axis=0, *, dim=None):
        """Cut into pieces along ``axis``: equal pieces of a given size (the last may be
        smaller), or a list of sizes that add up to the axis length. Returns a tuple."""
        axis = _axis_arg(axis, dim, 0)
        if not -self.ndim <= axis < self.ndim:
            raise ValueError(f"split: axis {axis} is out of range for a tensor of shape {self.shape}")
        n = self.shape[axis]
        if isinstance(split_size_or_sections, int):
            if split_size_or_sections <= 0:
                raise ValueError(f"split: size must be positive, got {split_size_or_sections}")
            sizes = [min(split_size_or_sections, n - s) for s in range(0, n, split_size_or_sections)]
        else:
            sizes = list(split_size_or_sections)
            if sum(sizes) != n:
                raise ValueError(f"split: sizes {sizes} do not add up to {n} (axis {axis} of {self.shape})")
        pieces, start = [], 0
        for size in sizes:
            index = [slice(None)] * self.ndim
            index[axis] = slice(start, start + size)
            pieces.append(self[tuple(index)])
            start += size
        return tuple(pieces)


def _axis_arg(axis, dim, default=None):
    """``dim`` is PyTorch's name for ``axis``: either may be given, not both."""
    if dim is None:
        return axis
    if axis != default:
        raise TypeError(f"give axis= or dim=, not both (got axis={axis}, dim={dim})")
    return dim


def _keepdims_arg(keepdims, keepdim):
    return keepdims if keepdim is None else keepdim


def _one_dtype(x, y):
    """Matrix-product operands, which must share a float dtype (PyTorch refuses float32 @ float64)."""
    if x.dtype != y.dtype and x.dtype.kind == "f" and y.dtype.kind == "f":
        raise TypeError(f"matmul: operands need one dtype, got {x.dtype} @ {y.dtype}; cast one of "
                        f"them, as in PyTorch: .double() for float64 on both sides, or .float() for "
                        f"float32 on both")
    return x, y


def _plain(dims):
    """Dims as the call that takes them: (2, 0, 1), whatever form they came in."""
    flat = dims[0] if len(dims) == 1 and isinstance(dims[0], (tuple, list)) else dims
    return "(" + ", ".join(str(d) for d in flat) + ")"


def _shape_arg(shape):
    """Accept f(2, 3) and f((2, 3)) alike."""
    if len(shape) == 1 and isinstance(shape[0], (tuple, list)):
        return tuple(shape[0])
    return tuple(shape)


def _unwrap(index):
    """An index with its Tensors replaced by their arrays."""
    if isinstance(index, tuple):
        return tuple(i.data if isinstance(i, TensorMethods) else i for i in index)
    return index.data if isinstance(index, TensorMethods) else index
