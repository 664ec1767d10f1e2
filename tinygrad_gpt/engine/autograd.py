"""Helpers built on ``grad``: vector-Jacobian and Jacobian-vector products, Jacobians, Hessians.

Imported as ``tinygrad_gpt.autograd``. Each takes a function of Tensors and the point (a Tensor
or a tuple of Tensors), as ``torch.func`` and ``torch.autograd.functional`` do, and returns
Tensors. Only reverse mode is needed: a Jacobian-vector product is the derivative of a
vector-Jacobian product with respect to its (dummy) vector, the double-vjp trick.

    >>> import numpy as np
    >>> from tinygrad_gpt import Tensor
    >>> x = Tensor(np.array([1.0, 2.0]))
    >>> hvp(lambda x: (x * x * x).sum(), x, Tensor(np.array([1.0, 0.0])))[1].numpy()   # 6 x * v
    array([6., 0.])
"""
import numpy as np

from ..tensor import Tensor
from .higher import grad


def _point(x):
    """(tuple of fresh leaves that require grad, whether x was one Tensor)."""
    single = isinstance(x, Tensor)
    xs = (x,) if single else tuple(x)
    return tuple(Tensor(t.data, requires_grad=True) for t in xs), single


def _like(xs, vs):
    vs = (vs,) if isinstance(vs, Tensor) else tuple(vs)
    if len(vs) != len(xs) or any(v.shape != x.shape for v, x in zip(vs, xs)):
        raise ValueError(f"the vectors' shapes {[v.shape for v in vs]} must be the inputs' "
                         f"{[x.shape for x in xs]}")
    return vs


def _zeros_for_none(gs, xs):
    return tuple(Tensor(np.zeros(x.shape), dtype=x.dtype, device=x.device) if g is None else g
                 for g, x in zip(gs, xs))


def vjp(f, x, v, create_graph=False):
    """(f(x), v^T J): the output, and the gradient of <v, f(x)> with respect to x."""
    xs, single = _point(x)
    out = f(*xs)
    gs = _zeros_for_none(grad(out, xs, grad_outputs=v, create_graph=create_graph, allow_unused=True), xs)
    return out, gs[0] if single else gs


def jvp(f, x, v, create_graph=False):
    """(f(x), J v), by the double-vjp trick: u -> J^T u is linear in u, so the gradient of
    <J^T u, v> with respect to u is J v, whatever u is (here zeros)."""
    xs, single = _point(x)
    vs = _like(xs, v)
    out = f(*xs)
    u = Tensor(np.zeros(out.shape), dtype=out.dtype, device=out.device, requires_grad=True)
    gs = grad(out, xs, grad_outputs=u, create_graph=True, allow_unused=True)
    inner = sum((g * v).sum() for g, v in zip(gs, vs) if g is not None)
    if not isinstance(inner, Tensor) or not inner.requires_grad:  # f does not depend on x
        return out, Tensor(np.zeros(out.shape), dtype=out.dtype, device=out.device)
    (jv,) = grad(inner, [u], create_graph=create_graph, allow_unused=True)
    return out, _zeros_for_none((jv,), (u,))[0]


def hvp(f, x, v, create_graph=False):
    """(f(x), H v) for a scalar function f: the gradient of <grad f(x), v>, no Hessian built."""
    xs, single = _point(x)
    vs = _like(xs, v)
    out = f(*xs)
    gs = grad(out, xs, create_graph=True, allow_unused=True)
    inner = sum((g * v).sum() for g, v in zip(gs, vs) if g is not None)
    if not isinstance(inner, Tensor) or not inner.requires_grad:  # f is linear in x: H = 0
        hv = _zeros_for_none((None,) * len(xs), xs)
    else:
        hv = _zeros_for_none(grad(inner, xs, create_graph=create_graph, allow_unused=True), xs)
    return out, hv[0] if single else hv


def jacobian(f, x):
    """d f(x) / d x of shape out.shape + x.shape (a tuple over the inputs when x is a tuple),
    one backward per output element."""
    xs, single = _point(x)
    out = f(*xs)
    rows = [[] for _ in xs]
    for i in range(out.numel()):
        onehot = np.zeros(out.numel())
        onehot[i] = 1
        seed = Tensor(onehot.reshape(out.shape), dtype=out.dtype, device=out.device)
        gs = _zeros_for_none(grad(out, xs, grad_outputs=seed, retain_graph=True, allow_unused=True), xs)
        for r, g in zip(rows, gs):
            r.append(g.numpy())
    jac = tuple(Tensor(np.stack(r).reshape(out.shape + x.shape), dtype=x.dtype, device=x.device)
                for r, x in zip(rows, xs))
    return jac[0] if single else jac


def hessian(f, x):
    """The Hessian of a scalar function f, of shape x.shape + x.shape, for small inputs: the
    Jacobian of the gradient, one Hessian-vector product per input element."""
    if not isinstance(x, Tensor):
        raise TypeError("hessian: x must be one Tensor")
    return jacobian(lambda x: grad(f(x), [x], create_graph=True)[0], x)
