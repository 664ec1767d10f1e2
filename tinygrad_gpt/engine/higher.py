"""Gradients of gradients: the backward pass run on Tensors, so that it is itself recorded.

Every rule's backward is array code that takes ``xp`` from its arguments. Given Tensors instead
of arrays, ``xp`` is the namespace of Tensor ops (namespace.py), so the same code builds graph
nodes. With ``create_graph=True`` each node of the graph is visited as in ``Tensor.backward``,
but its rule is run again on Tensors:

1. the rule's forward, on the node's input Tensors: the values it saves for its backward
   (``tanh(x)``, softmax's ``s``) become Tensors that depend on the inputs;
2. the rule's backward, with the incoming gradient ``g`` a Tensor.

The gradients that come out are Tensors with a graph of their own, which ``backward`` or
``grad`` differentiates again: no derivative is written twice. A fast op (``fast/``) runs its
rule here (the first class of its MRO in ops.py or rules.py): fast speed is for first order.

    >>> from tinygrad_gpt import Tensor
    >>> x = Tensor([0.5], requires_grad=True, dtype="float64")
    >>> (gx,) = grad(x.tanh().sum(), [x], create_graph=True)   # 1 - tanh(x)^2
    >>> (ggx,) = grad(gx.sum(), [x])                            # -2 tanh(x) (1 - tanh(x)^2)
    >>> round(float(ggx.item()), 6)
    -0.726862
"""
import inspect

from .. import modes, ops, rules
from ..backend import get_array_module
from ..errors import DoubleBackwardError
from ..function import Function, Gradients
from .. import tensor as _tensor
from ..tensor import Tensor
from . import versions

_RULE_MODULES = (ops.__name__, rules.__name__)
_ACTIVATIONS = {"gelu": ops.Gelu}  # a fast Linear may fuse its activation: run it as its own rule


class Transposed(Function):
    """The backward of a linear op whose backward writes into an array (slicing's scatter) or
    moves it (``to``), as an op of its own. Its forward is that backward, on arrays; its
    backward is the op itself: the transpose of a transpose is the map we started from."""

    def forward(self, g, node):
        self.node = node
        return node.backward(g)

    def backward(self, g):
        # d/dg (P^T g) = P: apply the op (a slice, a move) to the incoming gradient
        if isinstance(g, Tensor):
            return Tensor._apply(type(self.node), g, **self.node.kwargs)
        return type(self.node)((True,)).forward(g, **self.node.kwargs)


_LINEAR = (ops.GetItem, ops.ToDevice)  # their backward is Transposed


def rule_of(fn):
    """The rule behind a node: the first class of its MRO in ops.py or rules.py (a fast op's
    rule), else the node's own class (a Function of the user's own)."""
    for cls in type(fn).__mro__:
        if cls.__module__ in _RULE_MODULES:
            return cls
    return type(fn)


def _accepted(rule, kwargs):
    """The keyword arguments that ``rule.forward`` takes (a fast op may take more: tiles)."""
    params = inspect.signature(rule.forward).parameters
    if any(p.kind is p.VAR_KEYWORD for p in params.values()):
        return dict(kwargs)
    return {k: v for k, v in kwargs.items() if k in params}


def backward_on_tensors(ctx, g):
    """The gradients of a node's inputs as Tensors: its rule's forward run again on the input
    Tensors, then its backward on the Tensor ``g``; both are recorded."""
    rule, kwargs = rule_of(ctx), getattr(ctx, "kwargs", {})
    if isinstance(ctx, Transposed):
        return ctx.backward(g)
    needs = tuple(p is not None and p.requires_grad for p in ctx.parents)
    if issubclass(rule, _LINEAR):  # set the rule's shapes from the arrays, then Transposed
        node = rule(needs)
        node.forward(*(p.data for p in ctx.parents), **_accepted(rule, kwargs))
        node.kwargs = _accepted(rule, kwargs)
        return Tensor._apply(Transposed, g, node=node)
    if kwargs.get("dropout_p"):
        raise DoubleBackwardError(f"{ctx.name} with dropout cannot be differentiated twice (its forward "
                                  f"would draw new random numbers); use dropout_p=0 or the composed mode")
    node = rule(needs)
    try:
        out = node.forward(*ctx.parents, **_accepted(rule, kwargs))
        activation = _ACTIVATIONS.get(kwargs.get("activation"))
        if activation is not None:  # Linear+GELU from the fast layer: GELU first, then Linear
            act = activation((True,))
            act.forward(out)
            g = act.backward(g)
        return node.backward(g)
    except DoubleBackwardError:
        raise
    except Exception as e:
        raise DoubleBackwardError(
            f"{ctx.name} cannot be differentiated twice: running its rule ({rule.__name__}) on Tensors "
            f"failed with {type(e).__name__}: {e}. A rule differentiable twice takes "
            f"xp = get_array_module(...) from its arguments and uses xp's functions and array "
            f"methods only, writing into no array") from e


def _propagate(ctx, g, grads):
    """Like tensor.py's ``_propagate``, with Tensors: one node's backward, recorded."""
    gxs = backward_on_tensors(ctx, g)
    if not isinstance(gxs, tuple):
        gxs = (gxs,)
    for hook in _tensor._op_hooks:  # anomaly mode checks the values, as arrays
        hook.backward(ctx, g.data, tuple(gx.data if isinstance(gx, Tensor) else gx for gx in gxs))
    for p, gx in zip(ctx.parents, gxs):
        if p is None or gx is None or not p.requires_grad:
            continue
        if not isinstance(gx, Tensor):  # a constant (an array) from a backward
            gx = Tensor._wrap(gx)
        if gx.shape != p.shape:
            raise RuntimeError(f"{ctx.name}.backward returned a gradient of shape "
                               f"{gx.shape} for an input of shape {p.shape}")
        if gx.dtype != p.dtype:
            gx = gx.astype(p.dtype)
        grads.add(id(p), gx)


def topo(roots):
    """The tensors that require grad in the graphs of ``roots``, inputs first (no recursion)."""
    order, seen, stack = [], set(), [(t, False) for t in reversed(roots)]
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
            stack.extend((p, False) for p in node._ctx.parents
                         if p is not None and p.requires_grad and id(p) not in seen)
    return order


def _seed(t, g, create_graph):
    """The gradient flowing into output ``t``: ones for a one-element tensor when ``g`` is None."""
    if g is None:
        if t.numel() != 1:
            raise RuntimeError(f"grad can be implicitly created only for a one-element output, got "
                               f"shape {t.shape}; pass grad_outputs= (backward: grad=) of that shape")
        g = get_array_module(t.data).ones_like(t.data)
    if not isinstance(g, Tensor):
        g = Tensor(g, dtype=t.dtype, device=t.device)
    if g.shape != t.shape:
        raise ValueError(f"a gradient of shape {g.shape} for an output of shape {t.shape}")
    return g if create_graph else g.data


def run(outputs, seeds, create_graph, retain_graph, wanted=None):
    """Backpropagate ``seeds`` from ``outputs``, as ``Tensor.backward`` does; with
    ``create_graph`` on Tensors, recorded. Without ``wanted`` the gradients are added into the
    leaves' ``.grad``; with it, the gradients of those tensors (by id) are returned instead."""
    grads = Gradients() if create_graph else modes.current().gradients()
    for t, g in zip(outputs, seeds):
        grads.add(id(t), g)
    found = {}
    for t in reversed(topo(outputs)):  # every tensor after all the tensors made from it
        g = grads.take(id(t))
        if g is None:
            continue
        ctx = t._ctx
        if wanted is not None:
            if id(t) in wanted:
                found[id(t)] = g
        elif ctx is None or retain_graph:
            t._accumulate_grad(g)
        if ctx is None:
            continue
        if ctx is _tensor._RELEASED:
            raise RuntimeError("backward through a graph that was already freed; "
                               "call the first backward with retain_graph=True")
        if ctx.recorded_at != versions.now():  # something was written in place since: here?
            versions.check(t, ctx)
        if create_graph:
            _propagate(ctx, g, grads)
        else:
            _tensor._propagate(ctx, g, grads)
        if not retain_graph:
            t._ctx = _tensor._RELEASED
    return found


def backward(t, grad=None, retain_graph=None):
    """``t.backward(grad, create_graph=True)``: ``.grad`` of each leaf becomes a Tensor with a
    graph of its own. The graph of ``t`` is kept unless ``retain_graph=False``."""
    if not t.requires_grad:
        raise RuntimeError("backward() on a tensor that does not require grad "
                           "(no input had requires_grad=True, or it was made under no_grad)")
    run([t], [_seed(t, grad, True)], True, True if retain_graph is None else retain_graph)


def _tensors(x, what):
    if isinstance(x, Tensor):
        return [x]
    x = list(x)
    if not all(isinstance(t, Tensor) for t in x):
        raise TypeError(f"grad: {what} must be Tensors, got {[type(t).__name__ for t in x]}")
    return x


def grad(outputs, inputs, grad_outputs=None, create_graph=False, retain_graph=None, allow_unused=False):
    """The gradients of ``outputs`` with respect to ``inputs``, as a tuple of Tensors (as
    ``torch.autograd.grad``); ``.grad`` is left alone. ``grad_outputs`` weights each output (it
    may be left out for one-element outputs). With ``create_graph=True`` the gradients are
    recorded, so they can be differentiated again; the graph is then kept unless
    ``retain_graph=False``. An input that the outputs do not depend on is an error, or gives
    None with ``allow_unused=True``.

        >>> from tinygrad_gpt import Tensor
        >>> x = Tensor([3.0], requires_grad=True)
        >>> (gx,) = grad((x * x * x).sum(), x, create_graph=True)   # 3 x^2 = 27
        >>> grad(gx.sum(), x)[0].item()                            # 6 x = 18
        18.0
    """
    outputs, inputs = _tensors(outputs, "outputs"), _tensors(inputs, "inputs")
    if grad_outputs is None or isinstance(grad_outputs, Tensor):
        grad_outputs = [grad_outputs] * len(outputs) if grad_outputs is None else [grad_outputs]
    if len(grad_outputs) != len(outputs):
        raise ValueError(f"grad: {len(grad_outputs)} grad_outputs for {len(outputs)} outputs")
    for name, ts in (("output", outputs), ("input", inputs)):
        for i, t in enumerate(ts):
            if not t.requires_grad:
                raise RuntimeError(f"grad: {name} {i} (shape {t.shape}) does not require grad")
    seeds = [_seed(t, g, create_graph) for t, g in zip(outputs, grad_outputs)]
    retain = create_graph if retain_graph is None else retain_graph
    found = run(outputs, seeds, create_graph, retain, wanted={id(x) for x in inputs})
    results = []
    for i, x in enumerate(inputs):
        g = found.get(id(x))
        if g is None and not allow_unused:
            raise RuntimeError(f"grad: input {i} (shape {x.shape}) was not used to compute the "
                               f"outputs; pass allow_unused=True to get None for it")
        if g is not None and not isinstance(g, Tensor):
            g = Tensor._wrap(g.astype(x.dtype, copy=True))
        results.append(g)
    return tuple(results)
