"""Fast twins of the elementwise and row-wise rules: GELU, slicing, Linear, softmax, layer norm.

Each class subclasses the rule it speeds up (``ops.Gelu``, ``ops.GetItem``, ``rules.Linear``,
``rules.Softmax``, ``rules.LayerNorm``) and overrides its forward and backward; the maths is
the rule's, and tests/test_fast.py holds each to its rule, values and gradients.
"""
import numpy as np

from .. import ops, rules
from ..backend import get_array_module
from ..ops import GELU_C
from . import kernels, workspace
from .chunks import CHUNK, for_chunks
from .grads import SliceGrad, memory_order


# ----------------------------------------------------------------------------- GELU

def gelu_arrays(x, out, d=None):
    """out = GELU(x) and, if ``d`` is given, d = GELU'(x), on flat arrays, in place.

    ``out`` may be ``x`` itself (the GELU then overwrites its input), or None for a scratch
    array per chunk. The steps run over cache-sized chunks (``for_chunks``): on
    large activations the passes over memory, not the arithmetic, are what costs.
    """
    xp = get_array_module(x)
    if x.dtype == np.float32 and kernels.usable(x, *(a for a in (out, d) if a is not None)):
        none = np.empty(0, dtype=x.dtype)

        in_place = out is not None and np.may_share_memory(x, out)

        def compiled(s):  # the same in one pass (kernels.py), with a float32 tanh of its own
            xs = x[s]
            # the loop vectorises only when it writes where it does not read: in place, it
            # writes a scratch chunk, copied back while it is in cache
            os = workspace.empty(xs.shape, xs.dtype) if out is None or in_place else out[s]
            kernels.gelu(xs, os, none if d is None else d[s])
            if in_place:
                out[s] = os
        for_chunks(compiled, x.size, x)
        return

    def part(s):
        xs = x[s]
        os = xp.empty_like(xs) if out is None else out[s]
        x2 = xs * xs
        p = xp.multiply(x2, 0.044715 * GELU_C, out=None if d is None else d[s])
        p += GELU_C
        p *= xs                   # u = c x (1 + 0.044715 x^2)
        xp.tanh(p, out=p)
        p *= 0.5
        p += 0.5                  # p = (1 + tanh u) / 2
        xp.multiply(xs, p, out=os)  # out = x p (the last read of x)
        if d is None:
            return
        # d/dx = p + x (1 - t^2) u' / 2 with t = 2p - 1, so 1 - t^2 = 4 p (1 - p), and
        # d/dx = p + 2 out (1 - p) u',  u' = c (1 + 3 * 0.044715 x^2)
        x2 *= 2 * 3 * 0.044715 * GELU_C
        x2 += 2 * GELU_C          # 2 u'
        x2 *= os
        q = xp.subtract(1, p)
        q *= x2
        p += q
    for_chunks(part, x.size, x)


class Gelu(ops.Gelu):
    """``ops.Gelu`` in chunks, or as one compiled loop (float32 with numba).

    The forward keeps only x (which the graph holds anyway, as this op's input), not tanh(u);
    the backward recomputes tanh(u) and the derivative from it (``gelu_arrays``). In the
    model's MLP the GELU is fused into the linear layer before it (``Linear`` below, with
    ``activation="gelu"``), which keeps the derivative instead of the pre-activation.
    """

    def forward(self, x):
        self.shape = x.shape
        x = x.reshape(-1)  # flat, so chunks are plain slices (and 0-d input works)
        out = workspace.empty_like(x)
        gelu_arrays(x, out)
        self.save_for_backward(x)
        return out.reshape(self.shape)

    def backward(self, g):
        (x,) = self.saved
        d = workspace.empty_like(x)
        gelu_arrays(x, None, d)
        d *= g.reshape(-1)
        return d.reshape(self.shape)


# ----------------------------------------------------------------------------- slices

class GetItem(ops.GetItem):
    """``ops.GetItem`` whose gradient for a basic index is a ``SliceGrad``: the values, not yet
    written into a zero array, so the engine (``InPlaceGradients``) adds them straight into
    the input's gradient."""

    def forward(self, x, index):
        self.order = memory_order(x)
        return super().forward(x, index)

    def backward(self, g):
        if ops._is_advanced(self.index):
            return super().backward(g)
        return SliceGrad(g, self.index, self.shape, self.order)


# ----------------------------------------------------------------------------- outputs from the pool

class Add(ops.Add):
    """``ops.Add`` whose output, for two NumPy arrays of one shape and dtype (the residual
    stream), comes from the workspace pool: the same sum, in an array kept across steps."""

    def forward(self, x, y):
        self.shapes = x.shape, y.shape
        return workspace.add(x, y)


class Reshape(ops.Reshape):
    """``ops.Reshape`` whose copy, when x's layout needs one (heads merged back after
    attention), goes into a pooled array; a view where there can be one, as the rule."""

    def forward(self, x, shape):
        self.shape = x.shape
        if not isinstance(x, np.ndarray):
            return x.reshape(shape)
        try:
            return np.reshape(x, shape, copy=False)
        except ValueError:  # a copy is needed: C-ordered, as NumPy's reshape makes it
            out = workspace.empty(x.shape, x.dtype)
            np.copyto(out, x)
            return out.reshape(shape)


# ----------------------------------------------------------------------------- BLAS row and column sums

def _softmax(x, axis, out=None, shift=True):
    """A numerically stable softmax on arrays (subtract the max before exp); ``out=x`` works in place.

    Softmax does not change when a row is shifted; the max is subtracted only so that exp
    cannot overflow. ``shift=False`` skips it, for callers that know every |x| is small.
    """
    xp = get_array_module(x)
    if shift:
        out = xp.subtract(x, x.max(axis=axis, keepdims=True), out=out)
        xp.exp(out, out=out)
    else:
        out = xp.exp(x, out=out)
    out /= _row_sums(out) if axis in (-1, out.ndim - 1) else out.sum(axis=axis, keepdims=True)
    return out


def _row_sums(x):
    """x.sum(axis=-1, keepdims=True) as a matrix-vector product with ones: on short rows (the
    64 keys of a score row) BLAS is several times faster than NumPy's reduction."""
    xp = get_array_module(x)
    return (x @ xp.ones(x.shape[-1], dtype=x.dtype))[..., None]


def _row_dots(a, b):
    """(a * b).sum(axis=-1, keepdims=True) without the product array."""
    return get_array_module(a, b).einsum("...i,...i->...", a, b)[..., None]


def _column_sums(a):
    """a.sum(axis=0) for a 2-D array, as a matrix-vector product: BLAS does it 2-4x faster."""
    xp = get_array_module(a)
    return xp.ones(a.shape[0], dtype=a.dtype) @ a


# ----------------------------------------------------------------------------- Linear, softmax, layer norm

class Linear(rules.Linear):
    """``rules.Linear`` with the bias added in place and its gradient summed by BLAS.

    With ``activation="gelu"`` the output is GELU(x @ W + b), computed in place: the op keeps
    GELU's derivative for the backward, and the pre-activation is never kept, where a
    separate GELU op would keep it as its input (an MLP's widest array).
    """

    activation = None
    activations = ("gelu",)  # what it can fuse: functional.linear(..., activation="gelu") is one op

    @property
    def name(self):
        return "Linear" if self.activation is None else "Linear+GELU"

    def forward(self, x, weight, bias=None, activation=None):
        self.shape, self.activation = x.shape, activation
        x2 = x.reshape(-1, x.shape[-1])  # (N, in)
        self.save_for_backward(x2, weight)
        self.has_bias = bias is not None
        out = workspace.matmul(x2, weight)  # (N, out)
        if bias is not None:
            out += bias
        self.d = None
        if activation == "gelu":  # out = GELU(out), and d = GELU'(pre-activation) if needed
            if any(self.needs_grad):
                self.d = workspace.empty_like(out)
            gelu_arrays(out.reshape(-1), out.reshape(-1), None if self.d is None else self.d.reshape(-1))
        return out.reshape(*x.shape[:-1], weight.shape[1])

    def backward(self, g):
        x2, weight = self.saved
        g2 = g.reshape(-1, weight.shape[1])
        if self.d is not None:  # through the GELU first: d/dh GELU(h) = d
            g2 = workspace.multiply(g2, self.d)
        # d/dx = g @ W^T,  d/dW = x^T @ g,  d/db = sum of g over the rows
        gx = workspace.matmul(g2, weight.T).reshape(self.shape) if self.needs_grad[0] else None
        gw = workspace.matmul(x2.T, g2) if self.needs_grad[1] else None
        gb = _column_sums(g2) if self.has_bias and self.needs_grad[2] else None
        return (gx, gw, gb) if self.has_bias else (gx, gw)


class Softmax(rules.Softmax):
    """``rules.Softmax`` with the row sums as a BLAS product (``_softmax``)."""

    def forward(self, x, axis=-1):
        self.axis = axis
        out = _softmax(x, axis)
        self.save_for_backward(out)
        return out


class LayerNorm(rules.LayerNorm):
    """``rules.LayerNorm`` in cache-sized blocks of rows (``for_chunks``; rows are
    independent), or as one compiled loop per row (``kernels.layer_norm_forward`` and
    ``layer_norm_backward``, with numba)."""

    def forward(self, x, weight, bias=None, eps=1e-5):
        xp = get_array_module(x, weight, bias)
        self.shape, C = x.shape, x.shape[-1]
        x2 = x.reshape(-1, C)                               # (N, C)
        xhat, out = workspace.empty_like(x2), workspace.empty_like(x2)
        rstd = xp.empty((x2.shape[0], 1), dtype=x.dtype)    # (N, 1)
        # row means as one matrix-vector product: several times faster than .mean(axis=-1)
        average = xp.full((C, 1), 1 / C, dtype=x.dtype)

        def part(s):
            xs, xh, r, o = x2[s], xhat[s], rstd[s], out[s]
            xp.subtract(xs, xs @ average, out=xh)           # x - mean
            r[:] = xp.einsum("ij,ij->i", xh, xh)[:, None]  # sums of squares, no (N, C) temporary
            r *= 1 / C
            r += eps                                        # var + eps
            xp.sqrt(r, out=r)
            xp.reciprocal(r, out=r)                         # rstd = 1 / sqrt(var + eps)
            xh *= r                                         # xhat
            xp.multiply(xh, weight, out=o)
            if bias is not None:
                o += bias

        b = xp.zeros_like(weight) if bias is None else bias

        def compiled(s):  # the same in one loop over each row (kernels.py), if numba is there
            kernels.layer_norm_forward(x2[s], weight, b, float(eps), out[s], xhat[s], rstd[s])
        use_kernel = kernels.usable(x2, weight, b)
        for_chunks(compiled if use_kernel else part, x2.shape[0], x, chunk=max(1, CHUNK // C))
        self.save_for_backward(xhat, rstd, weight)
        self.has_bias = bias is not None
        return out.reshape(self.shape)

    def backward(self, g):
        xhat, rstd, weight = self.saved
        xp = get_array_module(g)
        C = xhat.shape[1]
        g2 = g.reshape(xhat.shape)
        gx = workspace.empty_like(xhat) if self.needs_grad[0] else None
        average = xp.full((C, 1), 1 / C, dtype=xhat.dtype)  # row means, as in the forward

        def part(s):
            gs, xh = g2[s], xhat[s]
            if gx is not None:
                # with gh = g * w: gx = rstd * (gh - mean(gh) - xhat * mean(gh * xhat))
                gh = gs * weight
                o = gx[s]
                mean_ghx = xp.einsum("ij,ij->i", gh, xh)[:, None] * (1 / C)  # row dots, no temporary
                xp.multiply(xh, mean_ghx, out=o)
                o += gh @ average                           # + mean(gh)
                xp.subtract(gh, o, out=o)
                o *= rstd[s]
            # d/dw = sum over rows of g * xhat, d/db = sum over rows of g (per block, added below)
            return xp.einsum("ij,ij->j", gs, xh), _column_sums(gs)

        def compiled(s):  # the same in one loop over each row (kernels.py), its own gw and gb sums
            gws, gbs = xp.zeros_like(weight), xp.zeros_like(weight)
            kernels.layer_norm_backward(g2[s], xhat[s], rstd[s], weight, gx_out[s], gws, gbs)
            return gws, gbs
        use_kernel = kernels.usable(g2, xhat, weight)
        if use_kernel:  # the kernel always writes gx: into scratch when it is not needed
            gx_out = gx if gx is not None else workspace.empty_like(xhat)
        parts = for_chunks(compiled if use_kernel else part, xhat.shape[0], g, chunk=max(1, CHUNK // C))
        gw = sum(p[0] for p in parts) if self.needs_grad[1] else None
        gb = sum(p[1] for p in parts) if self.has_bias and self.needs_grad[2] else None
        gx = None if gx is None else gx.reshape(self.shape)
        return (gx, gw, gb) if self.has_bias else (gx, gw)
