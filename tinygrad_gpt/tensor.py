"""``Tensor``: an array with a gradient, and the engine that computes gradients.

A Tensor holds a backend array (``.data``), an optional gradient (``.grad``), and,
when it was made by an op, the Function that made it (``._ctx``), which links it
to its inputs. ``Tensor._apply`` is the one place that builds graph nodes;
``Tensor.backward`` walks the graph in reverse topological order (iteratively, so
deep graphs work) and adds up gradients of tensors used more than once.

    >>> x = Tensor([1.0, 2.0, 3.0], requires_grad=True)
    >>> (x * x).sum().backward()
    >>> x.grad
    array([2., 4., 6.], dtype=float32)

``+=``, ``-=``, ``*=`` and ``/=`` change a tensor in place, as in PyTorch: a parameter is
updated under ``no_grad`` (``with no_grad(): w -= lr * w.grad``), and backward refuses to
use a value that an op saved and that was changed in place afterwards (engine/versions.py).

Which implementation runs for an op (its rule, a fast op, or a composed twin) is the current
mode's choice (modes.py); ``_apply`` asks it.
"""
import contextlib
import operator

import numpy as np

from . import backend, modes
from .backend import get_array_module, to_numpy, is_array
from . import ops, rules
from .engine import indexing, versions

_grad_enabled = True
_op_hooks = []  # objects with forward(fn, inputs, out) and backward(fn, g, gxs): add_op_hook


class no_grad(contextlib.ContextDecorator):
    """Inside ``with no_grad():`` ops build no graph and results need no gradient."""

    def _recreate_cm(self):  # a fresh object per decorated call, so recursion restores correctly
        return type(self)()

    def __enter__(self):
        global _grad_enabled
        self.previous, _grad_enabled = _grad_enabled, False
        return self

    def __exit__(self, *exc):
        global _grad_enabled
        _grad_enabled = self.previous
        return False


def is_grad_enabled():
    return _grad_enabled


class _Released:
    """Marks a node whose graph was freed by backward(retain_graph=False)."""
    parents = ()


_RELEASED = _Released()


class _Handle:
    """What the hook registrations return: ``remove()`` takes the hook off."""

    def __init__(self, hooks, hook):
        self.hooks, self.hook = hooks, hook

    def remove(self):
        if self.hook in self.hooks:
            self.hooks.remove(self.hook)


def add_op_hook(hook):
    """Call ``hook.forward(fn, inputs, out)`` after every op's forward and ``hook.backward(fn, g,
    gxs)`` after every op's backward, until the returned handle's ``remove()``. Anomaly mode
    (anomaly.py) checks values this way; with no hook, an op pays one test of an empty list."""
    _op_hooks.append(hook)
    return _Handle(_op_hooks, hook)


def _as_array(data, device, dtype):
    """Turn constructor input into a backend array on the right device."""
    if isinstance(data, Tensor):
        data = data.data
    if is_array(data):  # a host array goes to the default device, a device array stays put
        array = data if dtype is None else data.astype(dtype, copy=False)
        home = backend.default_device() if isinstance(array, np.ndarray) else backend.device_of(array)
        return backend.to_device(array, device or home)
    if isinstance(data, (np.generic,)) and dtype is None:
        array = np.asarray(data)
    else:  # Python numbers and (nested) lists: float32 unless told otherwise
        array = np.asarray(data, dtype=np.float32 if dtype is None else dtype)
    return backend.to_device(array, device or backend.default_device())


class Tensor:
    """An n-dimensional array that can record the ops applied to it and backpropagate."""

    __slots__ = ("_data", "grad", "requires_grad", "_ctx", "_version", "_hooks", "__weakref__")
    __array_ufunc__ = None  # make `ndarray + Tensor` call Tensor.__radd__
    __hash__ = object.__hash__  # == compares values, so hashing stays by identity (dicts, sets)

    def __init__(self, data, requires_grad=False, device=None, dtype=None):
        if device is not None:
            backend.require_device(device)
        self.data = _as_array(data, device, dtype)
        self._version = [0, 0]
        self.grad = None
        self._ctx = None
        self._hooks = None
        self.requires_grad = False
        if requires_grad:
            self.requires_grad_(True)

    @classmethod
    def _wrap(cls, array, requires_grad=False):
        """A Tensor around an existing backend array, with no checks or copies."""
        t = cls.__new__(cls)
        t._data, t.grad, t._ctx, t._hooks, t.requires_grad = array, None, None, None, requires_grad
        t._version = [0, 0]
        return t

    def _set_data(self, value):
        if isinstance(value, Tensor):
            value = value._data
        if not is_array(value):
            raise TypeError(f".data must be a NumPy or CuPy array (or a Tensor), got {type(value).__name__}")
        self._data = value

    data = property(operator.attrgetter("_data"), _set_data, doc=(
        "The backend array. Changes made through it (``w.data -= lr * w.grad``) are not "
        "recorded and not checked by backward, as with PyTorch's ``.data``."))

    def requires_grad_(self, flag=True):
        if flag and self.data.dtype.kind != "f":
            raise TypeError(f"only floating-point tensors can require gradients, "
                            f"got dtype {self.data.dtype}")
        self.requires_grad = bool(flag)
        return self

    # ------------------------------------------------------------------ attributes
    shape = property(lambda self: tuple(self._data.shape))
    dtype = property(lambda self: self._data.dtype)
    ndim = property(lambda self: self._data.ndim)
    size = property(lambda self: int(self._data.size))
    device = property(lambda self: backend.device_of(self._data))
    is_leaf = property(lambda self: self._ctx is None)
    T = property(lambda self: self.transpose())

    def __len__(self):
        return len(self.data)

    def __repr__(self):
        """Like PyTorch: the device when it is not the CPU, the dtype when it is not float32."""
        parts = [np.array2string(to_numpy(self.data), separator=", ", prefix="Tensor(")]
        if self.device != "cpu":
            parts.append(f"device='{self.device}'")
        if self.dtype != np.float32:
            parts.append(f"dtype={self.dtype}")
        if self.requires_grad:
            parts.append("requires_grad=True")
        return f"Tensor({', '.join(parts)})"

    def numpy(self):
        """The values as a host NumPy array."""
        return to_numpy(self.data)

    def item(self):
        """The value of a one-element tensor as a Python number."""
        if self.data.size != 1:
            raise ValueError(f"item() needs a tensor with one element, got shape {self.shape}")
        return self.data.item()

    def _scalar(self, kind):
        """The one element, for float(), int() and bool(); the errors are PyTorch's types."""
        if self.data.size != 1:
            hint = " (reduce it first, e.g. with .any(), .all() or .sum())" if self.data.size else ""
            error = RuntimeError if kind == "bool" else ValueError
            raise error(f"{kind}() of a Tensor needs exactly one element, got shape {self.shape}{hint}")
        return self.data.item()

    def __float__(self): return float(self._scalar("float"))
    def __int__(self): return int(self._scalar("int"))
    def __bool__(self): return bool(self._scalar("bool"))

    def tolist(self):
        return self.numpy().tolist()

    def detach(self):
        """The same values (the same array), cut off from the graph."""
        t = Tensor._wrap(self.data)
        t._version = self._version  # one array, one version: writing either is seen by both
        return t

    def to(self, device):
        """This tensor on ``device`` ("cpu" or "cuda"); gradients flow back across the move."""
        backend.require_device(device)
        if device == self.device:
            return self
        return Tensor._apply(ops.ToDevice, self, device=device)

    # ------------------------------------------------------------------ constructors
    @classmethod
    def zeros(cls, *shape, dtype=np.float32, device=None, requires_grad=False):
        xp = backend.xp_for(device or backend.default_device())
        return cls(xp.zeros(_shape_arg(shape), dtype=dtype), requires_grad=requires_grad)

    @classmethod
    def ones(cls, *shape, dtype=np.float32, device=None, requires_grad=False):
        xp = backend.xp_for(device or backend.default_device())
        return cls(xp.ones(_shape_arg(shape), dtype=dtype), requires_grad=requires_grad)

    @classmethod
    def randn(cls, *shape, dtype=np.float32, device=None, requires_grad=False):
        """Standard normal values from the global seeded generator."""
        array = backend.rng().standard_normal(_shape_arg(shape)).astype(dtype)
        return cls(array, device=device or backend.default_device(), requires_grad=requires_grad)

    # ------------------------------------------------------------------ the graph
    @staticmethod
    def _apply(fn_cls, *inputs, **kwargs):
        """Run op ``fn_cls`` on the inputs (Tensors, or None for an absent optional input) and
        link the result into the graph. ``Function.apply`` is the public way in.

        This is the only place graph nodes are made. The current mode (modes.py) says what runs
        for ``fn_cls``: its rule, a fast op in its place, or a composed twin built from
        primitive ops, which makes its own nodes.
        """
        arrays = [t._data if t is not None else None for t in inputs]
        get_array_module(*arrays)  # raises if inputs live on different devices
        impl = modes.current().implementation(fn_cls, arrays, kwargs)
        if not modes.is_function(impl):
            return impl(*inputs, **kwargs)
        # under no_grad nothing needs a gradient, so forwards keep nothing for a backward
        needs = [_grad_enabled and t is not None and t.requires_grad for t in inputs]
        fn = impl(needs)
        out = _forward(fn, arrays, kwargs)
        for hook in _op_hooks:
            hook.forward(fn, inputs, out)
        requires = any(needs)
        t = Tensor._wrap(out, requires)
        if out.base is not None:  # maybe a view of an input: share its version box
            versions.share(t, inputs)
        if requires:
            fn.parents = inputs
            fn.recorded_at = versions.now()  # for the in-place check in backward
            t._ctx = fn
        return t

    def _topo(self, constants=False):
        """Tensors of the graph in topological order (inputs first), without recursion.

        Backward walks only tensors that require a gradient; with ``constants=True`` the walk
        also lists the constant inputs of each op (the pictures in viz.py show those too).
        """
        order, seen, stack = [], set(), [(self, False)]
        while stack:
            node, expanded = stack.pop()
            if expanded:
                order.append(node)
                continue
            if id(node) in seen:
                continue
            seen.add(id(node))
            stack.append((node, True))
            if node._ctx is not None:
                for p in node._ctx.parents:
                    if p is not None and (constants or p.requires_grad) and id(p) not in seen:
                        stack.append((p, False))
        return order

    def backward(self, grad=None, retain_graph=False):
        """Compute d self / d leaf for every leaf that requires grad, adding into ``.grad``.

        ``grad`` is the gradient flowing into ``self``; it may be left out only
        for a one-element tensor. The graph is freed afterwards unless
        ``retain_graph=True``, which also keeps ``.grad`` on intermediate tensors.
        """
        if not self.requires_grad:
            raise RuntimeError("backward() on a tensor that does not require grad "
                               "(no input had requires_grad=True, or it was made under no_grad)")
        xp = get_array_module(self.data)
        if grad is None:
            if self.data.size != 1:
                raise RuntimeError(f"backward() without a grad argument needs a one-element tensor, "
                                   f"got shape {self.shape}; pass grad= of the same shape")
            grad = xp.ones_like(self.data)
        else:
            grad = grad.data if isinstance(grad, Tensor) else xp.asarray(grad, dtype=self.dtype)
            if tuple(grad.shape) != self.shape:
                raise ValueError(f"backward(): grad has shape {tuple(grad.shape)} "
                                 f"but the tensor has shape {self.shape}")
        grads = modes.current().gradients({id(self): grad})  # tensor id -> its gradients' sum so far
        for t in reversed(self._topo()):  # every tensor after all the tensors made from it
            g = grads.take(id(t))
            if g is None:
                continue
            ctx = t._ctx
            if ctx is None or retain_graph:
                t._accumulate_grad(g)
            if ctx is None:
                continue
            if ctx is _RELEASED:
                raise RuntimeError("backward() through a graph that was already freed; "
                                   "call the first backward with retain_graph=True")
            if ctx.recorded_at != versions.now():  # something was written in place since: here?
                versions.check(t, ctx)
            _propagate(ctx, g, grads)
            if not retain_graph:
                t._ctx = _RELEASED

    def register_post_accumulate_grad_hook(self, hook):
        """Call ``hook(self)`` in every backward pass, once this leaf's ``.grad`` holds the
        pass's whole gradient (as PyTorch's method of the same name); returns a handle whose
        ``remove()`` takes the hook off. Data-parallel training starts sending gradients there.

            >>> w = Tensor([1.0, 2.0], requires_grad=True)
            >>> handle = w.register_post_accumulate_grad_hook(lambda t: print(t.grad))
            >>> (w * w).sum().backward()
            [2. 4.]
            >>> handle.remove()
        """
        if self._hooks is None:
            self._hooks = []
        self._hooks.append(hook)
        return _Handle(self._hooks, hook)

    def _accumulate_grad(self, g):
        if self.grad is None:  # a fresh, writable array the tensor owns
            self.grad = g.astype(self.dtype, copy=True)
        else:
            self.grad = self.grad + g
        if self._hooks:
            for hook in list(self._hooks):  # this pass's whole gradient is in
                hook(self)

    def zero_grad(self):
        self.grad = None

    # ------------------------------------------------------------------ arithmetic
    def _lift(self, other):
        """Turn a Python number or array into a constant Tensor beside self.

        As in PyTorch, a constant does not raise a float tensor's dtype: integer and boolean
        operands, and 0-d float arrays beside a tensor with axes, take the tensor's dtype (NumPy
        alone would make float32 * int64 a float64 array)."""
        source = None
        if isinstance(other, Tensor) and not other.requires_grad:
            source, other = other, other.data
        if isinstance(other, Tensor):
            return other
        if is_array(other):
            if self.dtype.kind == "f" and (other.dtype.kind in "biu"
                                           or (other.dtype.kind == "f" and other.ndim == 0 < self.ndim)):
                other = other.astype(self.dtype)
            xp = get_array_module(self.data)
            if source is None and other.ndim == 0 and xp is not np and isinstance(other, np.ndarray):
                # as in PyTorch, a 0-d host value beside a device tensor is a number: made once there
                return Tensor._wrap(backend.device_constant(xp, other.item(), other.dtype))
            t = Tensor._wrap(other)
            if source is not None and other is source._data:
                t._version = source._version  # one array: a write to the tensor is seen here too
            return t
        xp = get_array_module(self.data)
        if isinstance(other, (bool, int, float, np.number)) and self.dtype.kind == "f":
            if xp is not np:  # a device constant is made once, not copied over at every use
                return Tensor._wrap(backend.device_constant(xp, other, self.dtype))
            return Tensor._wrap(xp.asarray(other, dtype=self.dtype))
        return Tensor._wrap(xp.asarray(other))

    def __add__(self, other): return Tensor._apply(ops.Add, self, self._lift(other))
    def __radd__(self, other): return Tensor._apply(ops.Add, self._lift(other), self)
    def __sub__(self, other): return Tensor._apply(ops.Sub, self, self._lift(other))
    def __rsub__(self, other): return Tensor._apply(ops.Sub, self._lift(other), self)
    def __mul__(self, other): return Tensor._apply(ops.Mul, self, self._lift(other))
    def __rmul__(self, other): return Tensor._apply(ops.Mul, self._lift(other), self)
    def __truediv__(self, other): return Tensor._apply(ops.Div, self, self._lift(other))
    def __rtruediv__(self, other): return Tensor._apply(ops.Div, self._lift(other), self)
    def __matmul__(self, other): return Tensor._apply(ops.MatMul, *_one_dtype(self, self._lift(other)))
    def __rmatmul__(self, other): return Tensor._apply(ops.MatMul, *_one_dtype(self._lift(other), self))
    def __neg__(self): return Tensor._apply(ops.Neg, self)

    # ------------------------------------------------------------------ in place
    def __iadd__(self, other): return self._inplace(ops.Add, operator.iadd, other)
    def __isub__(self, other): return self._inplace(ops.Sub, operator.isub, other)
    def __imul__(self, other): return self._inplace(ops.Mul, operator.imul, other)
    def __itruediv__(self, other): return self._inplace(ops.Div, operator.itruediv, other)

    def _inplace(self, fn_cls, array_op, other):
        """``self op= other``: the same Tensor with its values updated, as in PyTorch.

        Where no gradient is recorded (under no_grad, or on constants) the array itself is
        written. A leaf that requires grad refuses while gradients are recorded. Any other
        tensor becomes the output of the op, applied to its old value; the op gets a new
        array, so that its input keeps the value its backward needs.
        """
        other = self._lift(other)
        recorded = _grad_enabled and (self.requires_grad or other.requires_grad)
        if recorded and self._ctx is None and self.requires_grad:
            raise RuntimeError(
                f"a leaf Tensor that requires grad (shape {self.shape}) cannot be changed in place "
                f"while gradients are recorded; update parameters under no_grad: "
                f"`with no_grad(): w -= lr * w.grad`, or through the array: `w.data -= lr * w.grad`")
        xp = get_array_module(self.data, other.data)  # raises if the devices differ
        try:
            shape = np.broadcast_shapes(self.shape, other.shape)
        except ValueError:
            shape = None
        if shape != self.shape:
            raise ValueError(f"in-place {fn_cls.__name__}: a tensor of shape {other.shape} cannot "
                             f"update one of shape {self.shape} (the result must keep its shape)")
        if recorded:
            old = Tensor._wrap(self.data, self.requires_grad)
            old._ctx, old._version = self._ctx, self._version
            new = Tensor._apply(fn_cls, old, other)
            self._data, self._ctx, self.requires_grad = new.data.astype(self.dtype, copy=False), new._ctx, True
        else:
            array_op(self.data, other.data)
        now = versions.tick()
        if recorded:  # a new box: ops that used the old value see a newer version and refuse
            self._version = [now, now]
            self._ctx.recorded_at = now
        else:
            self._version[0] = now
        return self

    # ------------------------------------------------------------------ comparisons
    def _compare(self, other, array_op):
        """An elementwise comparison: a boolean Tensor that needs no gradient."""
        if not isinstance(other, (Tensor, bool, int, float, np.number, list, tuple)) and not is_array(other):
            return NotImplemented  # t == None is False, as for any other object
        other = self._lift(other)
        xp = get_array_module(self.data, other.data)
        return Tensor._wrap(xp.asarray(array_op(self.data, other.data)))

    def __lt__(self, other): return self._compare(other, operator.lt)
    def __le__(self, other): return self._compare(other, operator.le)
    def __gt__(self, other): return self._compare(other, operator.gt)
    def __ge__(self, other): return self._compare(other, operator.ge)
    def __eq__(self, other): return self._compare(other, operator.eq)
    def __ne__(self, other): return self._compare(other, operator.ne)

    def any(self):
        """True where any element is true, as a one-element boolean Tensor."""
        return Tensor._wrap(get_array_module(self.data).asarray(self.data.any()))

    def all(self):
        """True where every element is true, as a one-element boolean Tensor."""
        return Tensor._wrap(get_array_module(self.data).asarray(self.data.all()))

    def __pow__(self, other):
        if isinstance(other, (int, float)) and not isinstance(other, bool):
            return Tensor._apply(ops.PowConst, self, p=other)
        return Tensor._apply(ops.Pow, self, self._lift(other))

    def __rpow__(self, other):
        return Tensor._apply(ops.Pow, self._lift(other), self)

    # ------------------------------------------------------------------ elementwise
    def abs(self): return Tensor._apply(ops.Abs, self)
    def __abs__(self): return self.abs()
    def exp(self): return Tensor._apply(ops.Exp, self)
    def log(self): return Tensor._apply(ops.Log, self)
    def sqrt(self): return Tensor._apply(ops.Sqrt, self)
    def tanh(self): return Tensor._apply(ops.Tanh, self)
    def sigmoid(self): return Tensor._apply(ops.Sigmoid, self)
    def relu(self): return Tensor._apply(ops.Relu, self)

    def gelu(self):
        """GELU, tanh approximation (as in GPT-2)."""
        return Tensor._apply(ops.Gelu, self)

    def masked_fill(self, mask, value):
        """A copy with ``value`` where the boolean ``mask`` (broadcastable) is True."""
        mask = mask.data if isinstance(mask, Tensor) else mask
        xp = get_array_module(self.data)
        if not is_array(mask):
            mask = np.asarray(mask)
        if mask.dtype != bool:  # as in PyTorch: 0/1 integers are not taken for a mask
            raise TypeError(f"masked_fill: the mask must be boolean, got dtype {mask.dtype}")
        if get_array_module(mask) is not xp:
            mask = xp.asarray(mask)  # a mask, like an index, goes where the data is
        return Tensor._apply(ops.MaskedFill, self, mask=mask, value=value)

    # ------------------------------------------------------------------ reductions
    # ``dim=`` and ``keepdim=`` are PyTorch's names for ``axis=`` and ``keepdims=``
    def sum(self, axis=None, keepdims=False, *, dim=None, keepdim=None):
        axis, keepdims = _axis_arg(axis, dim), _keepdims_arg(keepdims, keepdim)
        return Tensor._apply(ops.Sum, self, axis=axis, keepdims=keepdims)

    def max(self, axis=None, keepdims=False, *, dim=None, keepdim=None):
        """The largest values along ``axis`` (values only, not PyTorch's (values, indices))."""
        axis, keepdims = _axis_arg(axis, dim), _keepdims_arg(keepdims, keepdim)
        return Tensor._apply(ops.Max, self, axis=axis, keepdims=keepdims)

    def mean(self, axis=None, keepdims=False, *, dim=None, keepdim=None):
        axis, keepdims = _axis_arg(axis, dim), _keepdims_arg(keepdims, keepdim)
        axes = ops._axes(axis, self.ndim)
        n = int(np.prod([self.shape[a] for a in axes])) if axes else 1
        return self.sum(axis=axis, keepdims=keepdims) * (1.0 / n if n else float("nan"))  # empty: NaN

    # ------------------------------------------------------------------ softmax family
    def softmax(self, axis=-1, *, dim=None):
        axis = _axis_arg(axis, dim, -1)
        if self.ndim == 0:  # one value along no axis: as in PyTorch, axis 0 or -1, result 1
            ops._axes(axis, 0)
            return self.reshape(1).softmax(0).reshape(())
        return Tensor._apply(rules.Softmax, self, axis=axis)

    def log_softmax(self, axis=-1, *, dim=None):
        axis = _axis_arg(axis, dim, -1)
        if self.ndim == 0:
            ops._axes(axis, 0)
            return self.reshape(1).log_softmax(0).reshape(())
        return Tensor._apply(rules.LogSoftmax, self, axis=axis)

    # ------------------------------------------------------------------ movement
    def reshape(self, *shape):
        return Tensor._apply(ops.Reshape, self, shape=_shape_arg(shape))

    def view(self, *shape):
        return self.reshape(*shape)

    def transpose(self, *axes):
        """Permute the axes; with none given, reverse them (like NumPy)."""
        axes = _shape_arg(axes) or tuple(reversed(range(self.ndim)))
        if sorted(a % max(self.ndim, 1) for a in axes) != list(range(self.ndim)):
            raise ValueError(f"transpose: axes {axes} are not a permutation of a "
                             f"{self.ndim}-dimensional tensor's axes (shape {self.shape})")
        return Tensor._apply(ops.Transpose, self, axes=tuple(a % self.ndim for a in axes))

    def permute(self, *axes):
        return self.transpose(*axes)

    def __getitem__(self, index):
        return Tensor._apply(ops.GetItem, self, index=indexing.index_arg(_unwrap(index), self.data))

    def _getitem_checked(self, index):
        """``self[index]`` for integer ids their caller has range-checked already (once per
        batch, on the host): no second check, so no wait for the device."""
        return Tensor._apply(ops.GetItem, self,
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
        return Tensor._apply(ops.Cat, *tensors, axis=axis)

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
        return Tensor.cat([t.reshape(new) for t in tensors], axis=axis)

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


def _forward(fn, arrays, kwargs):
    """fn.forward on the arrays. A ValueError from one of the engine's own ops (NumPy's
    broadcasting message, say) gets the op's name and the input shapes in front; an op of
    the user's own (``Function.apply``) raises as it raised."""
    try:
        return fn.forward(*arrays, **kwargs)
    except ValueError as e:
        if not type(fn).__module__.startswith("tinygrad_gpt."):
            raise
        shapes = " and ".join(str(tuple(a.shape)) for a in arrays if a is not None)
        raise ValueError(f"{fn.name}: bad input shapes {shapes}: {e}") from e


def _propagate(ctx, g, grads):
    """Run one node's backward and add each input's gradient into ``grads``."""
    gxs = ctx.backward(g)
    if not isinstance(gxs, tuple):
        gxs = (gxs,)
    for hook in _op_hooks:
        hook.backward(ctx, g, gxs)
    for p, gx in zip(ctx.parents, gxs):
        if p is None or gx is None or not p.requires_grad:
            continue
        if tuple(gx.shape) != p.shape:
            raise RuntimeError(f"{ctx.name}.backward returned a gradient of shape "
                               f"{tuple(gx.shape)} for an input of shape {p.shape}")
        if gx.dtype != p.dtype:
            gx = gx.astype(p.dtype)
        grads.add(id(p), gx)  # grads[p] += gx


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
        raise TypeError(f"matmul: operands need one dtype, got {x.dtype} and {y.dtype}")
    return x, y


def _shape_arg(shape):
    """Accept f(2, 3) and f((2, 3)) alike."""
    if len(shape) == 1 and isinstance(shape[0], (tuple, list)):
        return tuple(shape[0])
    return tuple(shape)


def _unwrap(index):
    """An index with its Tensors replaced by their arrays."""
    if isinstance(index, tuple):
        return tuple(i.data if isinstance(i, Tensor) else i for i in index)
    return index.data if isinstance(index, Tensor) else index
