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
from . import ops
from .engine import versions
from .engine.methods import TensorMethods, _shape_arg

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


_DEFAULT = {"b": np.bool_, "i": np.int64, "u": np.int64}  # any other kind becomes float32


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
    elif dtype is not None:
        array = np.asarray(data, dtype=dtype)
    else:  # Python numbers and (nested) lists, as in PyTorch: floats float32, ints int64, bools bool
        array = np.asarray(data)
        array = array.astype(_DEFAULT.get(array.dtype.kind, np.float32), copy=False)
    return backend.to_device(array, device or backend.default_device())


class Tensor(TensorMethods):
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
    device = property(lambda self: backend.device_of(self._data))
    is_leaf = property(lambda self: self._ctx is None)
    T = property(lambda self: self.permute(tuple(reversed(range(self.ndim)))))

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
            fn.parents, fn.kwargs = inputs, kwargs  # kwargs: to run the op again on Tensors (engine/higher.py)
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

    def backward(self, grad=None, retain_graph=None, create_graph=False):
        """Compute d self / d leaf for every leaf that requires grad, adding into ``.grad``.

        ``grad`` is the gradient flowing into ``self``; it may be left out only
        for a one-element tensor. The graph is freed afterwards unless
        ``retain_graph=True``, which also keeps ``.grad`` on intermediate tensors.
        With ``create_graph=True`` the backward is itself recorded: ``.grad`` becomes a Tensor
        that can be differentiated again (engine/higher.py), and the graph is kept.
        """
        if create_graph:
            from .engine import higher  # it builds on this module
            return higher.backward(self, grad, retain_graph)
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
                t._accumulate_grad(g, grads)
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

    def _accumulate_grad(self, g, grads=None):
        if self.grad is None:  # a fresh, writable array the tensor owns (the mode's Gradients make it)
            self.grad = g.astype(self.dtype, copy=True) if grads is None else grads.leaf_copy(g, self.dtype)
        else:
            self.grad = self.grad + g
        if self._hooks:
            for hook in list(self._hooks):  # this pass's whole gradient is in
                hook(self)

    def zero_grad(self, set_to_none=True):
        if set_to_none or self.grad is None:
            self.grad = None
        else:
            self.grad[...] = 0

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
        get_array_module(self.data, other.data)  # raises if the devices differ
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
