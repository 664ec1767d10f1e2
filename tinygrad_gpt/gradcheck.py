"""Gradient checking: compare backward against central differences, in float64.

``check_grads`` perturbs the inputs along a random direction ``v`` and compares
the numerical directional derivative of ``<w, f(x)>`` (``w`` a random output
weighting) with the one backward gives, ``sum_i <grad_i, v_i>``. That needs two
forward passes whatever the input size. ``mode="full"`` builds the whole
Jacobian instead, element by element, and prints a readable report on failure.
``gradgradcheck`` does the same one order up: the gradient of a gradient (a backward
through a recorded backward) against central differences of the first gradient.

    >>> import numpy as np
    >>> from tinygrad_gpt import Tensor
    >>> x = Tensor(np.random.rand(3, 4), requires_grad=True)
    >>> check_grads(lambda x: (x * x).tanh(), [x])
    True
"""
import numpy as np

from .backend import to_numpy, get_array_module
from .errors import GradcheckError
from .tensor import Tensor
from .engine.higher import grad


def _evaluate(fn, arrays, requires):
    inputs = [Tensor(a, requires_grad=r) for a, r in zip(arrays, requires)]
    return inputs, fn(*inputs)


def _weighted(out, w):
    return float((to_numpy(out.data).astype(np.float64) * w).sum())


def check_grads(fn, inputs, eps=1e-6, atol=1e-7, rtol=1e-5, mode="directional", seed=0,
                n_directions=2, raise_on_failure=True):
    """Check the gradients of ``fn(*inputs)`` with respect to every input that requires grad.

    ``inputs`` are float64 Tensors; ``fn`` returns a Tensor of any shape. Returns True
    when the check passes, else raises GradcheckError (or returns False when
    ``raise_on_failure=False``).
    """
    for t in inputs:
        if t.requires_grad and t.dtype != np.float64:
            raise TypeError(f"check_grads needs float64 inputs for precision, got {t.dtype}")
    arrays = [t.data for t in inputs]
    requires = [t.requires_grad for t in inputs]
    if not any(requires):
        raise ValueError("check_grads: no input has requires_grad=True")
    if mode == "full":
        return _check_full(fn, arrays, requires, eps, atol, rtol, raise_on_failure)
    if mode != "directional":
        raise ValueError(f"check_grads: mode must be 'directional' or 'full', got {mode!r}")
    rng = np.random.default_rng(seed)
    for _ in range(n_directions):
        ok, msg = _check_direction(fn, arrays, requires, eps, atol, rtol, rng)
        if not ok:
            if raise_on_failure:
                raise GradcheckError(msg)
            return False
    return True


def _check_direction(fn, arrays, requires, eps, atol, rtol, rng):
    xp = get_array_module(*arrays)
    inputs, out = _evaluate(fn, arrays, requires)
    w = rng.standard_normal(out.shape)
    out.backward(xp.asarray(w, dtype=out.dtype))
    vs = [rng.standard_normal(a.shape) if r else None for a, r in zip(arrays, requires)]
    analytic = sum(float((to_numpy(t.grad) * v).sum()) for t, v in zip(inputs, vs)
                   if v is not None and t.grad is not None)
    shifted = []
    for sign in (1, -1):
        moved = [a + sign * eps * xp.asarray(v) if v is not None else a for a, v in zip(arrays, vs)]
        shifted.append(_weighted(_evaluate(fn, moved, [False] * len(moved))[1], w))
    numeric = (shifted[0] - shifted[1]) / (2 * eps)
    err = abs(analytic - numeric)
    ok = err <= atol + rtol * abs(numeric)
    return ok, (f"directional derivative mismatch: backward gives {analytic:.12g}, "
                f"central differences give {numeric:.12g} (abs error {err:.3g})")


def numerical_jacobian(fn, arrays, index, eps=1e-6):
    """d fn(*arrays).ravel() / d arrays[index].ravel() by central differences, as (out, in)."""
    xp = get_array_module(*arrays)
    base = to_numpy(arrays[index]).astype(np.float64)
    cols = []
    for j in range(base.size):
        vals = []
        for sign in (1, -1):
            x = base.copy()
            x.flat[j] += sign * eps
            moved = list(arrays)
            moved[index] = xp.asarray(x)
            vals.append(to_numpy(_evaluate(fn, moved, [False] * len(moved))[1].data).ravel())
        cols.append((vals[0] - vals[1]) / (2 * eps))
    return np.stack(cols, axis=1)


def analytic_jacobian(fn, arrays, requires, index):
    """The same Jacobian from backward, one output element at a time."""
    xp = get_array_module(*arrays)
    inputs, out = _evaluate(fn, arrays, requires)
    rows = []
    for i in range(out.numel()):
        if i:  # a fresh graph for each output element (backward frees the last one)
            inputs, out = _evaluate(fn, arrays, requires)
        onehot = np.zeros(out.numel())
        onehot[i] = 1
        out.backward(xp.asarray(onehot.reshape(out.shape), dtype=out.dtype))
        grad = inputs[index].grad
        rows.append(np.zeros(arrays[index].size) if grad is None else to_numpy(grad).ravel())
    return np.stack(rows, axis=0)


def _check_full(fn, arrays, requires, eps, atol, rtol, raise_on_failure):
    lines = []
    for index, r in enumerate(requires):
        if not r:
            continue
        num = numerical_jacobian(fn, arrays, index, eps)
        ana = analytic_jacobian(fn, arrays, requires, index)
        bad = np.abs(ana - num) > atol + rtol * np.abs(num)
        for i, j in zip(*np.nonzero(bad)):
            lines.append(f"  input {index}, d out[{i}] / d x[{j}]: backward {ana[i, j]:.10g}, "
                         f"numerical {num[i, j]:.10g}, abs error {abs(ana[i, j] - num[i, j]):.3g}")
    if lines:
        msg = f"{len(lines)} Jacobian entries disagree:\n" + "\n".join(lines[:50])
        if raise_on_failure:
            raise GradcheckError(msg)
        print(msg)
        return False
    return True


def _first_gradient(fn, arrays, requires, w, us, create_graph):
    """(inputs, w, G): G = sum_i <d<w, fn(inputs)>/d input_i, u_i>, recorded when create_graph."""
    inputs = [Tensor(a, requires_grad=r) for a, r in zip(arrays, requires)]
    w = Tensor(w, requires_grad=create_graph)
    out = fn(*inputs)
    wanted = [t for t in inputs if t.requires_grad]
    gs = grad(out, wanted, grad_outputs=w, create_graph=create_graph, allow_unused=True)
    total = 0.0
    for g, u in zip(gs, [u for u in us if u is not None]):
        if g is not None:
            total = (g * Tensor(u)).sum() + total
    return inputs, w, total


def gradgradcheck(fn, inputs, eps=1e-6, atol=1e-7, rtol=1e-5, seed=0, n_directions=2, raise_on_failure=True):
    """Check the second derivatives of ``fn(*inputs)``, float64 inputs, in random directions.

    For a random output weighting ``w`` and input directions ``u``, the first gradient gives the
    number G(x, w) = sum_i <d<w, fn(x)>/dx_i, u_i>. Its derivative along random directions
    (v, v_w) of the inputs and of w, from backward through the recorded backward
    (``create_graph=True``), must match (G(x + eps v, w + eps v_w) - G(x - eps v, w - eps v_w)) / 2 eps,
    where each G is a first-order backward. The derivative along w checks that the backward is
    recorded as a function of its incoming gradient too (the double-vjp trick relies on it).

        >>> import numpy as np
        >>> x = Tensor(np.random.rand(3), requires_grad=True)
        >>> gradgradcheck(lambda x: x.tanh() * x.exp(), [x])
        True
    """
    for t in inputs:
        if t.requires_grad and t.dtype != np.float64:
            raise TypeError(f"gradgradcheck needs float64 inputs for precision, got {t.dtype}")
    arrays, requires = [t.data for t in inputs], [t.requires_grad for t in inputs]
    if not any(requires):
        raise ValueError("gradgradcheck: no input has requires_grad=True")
    rng = np.random.default_rng(seed)
    for _ in range(n_directions):
        analytic, numeric = second_directional(fn, arrays, requires, eps, rng)
        err = abs(analytic - numeric)
        if not err <= atol + rtol * abs(numeric):
            msg = (f"second-derivative mismatch: backward of backward gives {analytic:.12g}, central "
                   f"differences of backward give {numeric:.12g} (abs error {err:.3g})")
            if raise_on_failure:
                raise GradcheckError(msg)
            return False
    return True


def second_directional(fn, arrays, requires, eps, rng):
    """(backward of backward, central differences of backward) along one random direction:
    the two numbers ``gradgradcheck`` compares."""
    xp = get_array_module(*arrays)
    shape = fn(*[Tensor(a) for a in arrays]).shape
    w, vw = (xp.asarray(rng.standard_normal(shape)) for _ in range(2))
    us, vs = ([xp.asarray(rng.standard_normal(a.shape)) if r else None for a, r in zip(arrays, requires)]
              for _ in range(2))
    tensors, wt, total = _first_gradient(fn, arrays, requires, w, us, create_graph=True)
    analytic = 0.0
    if isinstance(total, Tensor) and total.requires_grad:
        ds = grad(total, [t for t in tensors if t.requires_grad] + [wt], allow_unused=True)
        analytic = sum(float((to_numpy(d.data) * to_numpy(v)).sum()) for d, v in
                       zip(ds, [v for v in vs if v is not None] + [vw]) if d is not None)
    shifted = []
    for sign in (1, -1):
        moved = [a + sign * eps * v if v is not None else a for a, v in zip(arrays, vs)]
        g = _first_gradient(fn, moved, requires, w + sign * eps * vw, us, create_graph=False)[2]
        shifted.append(float(g.item()) if isinstance(g, Tensor) else float(g))
    return analytic, (shifted[0] - shifted[1]) / (2 * eps)
