"""The rules of a transformer's fused ops: each forward and backward is its docs page's formula.

A fused op does in one node what a composition of primitives does in several (``functional.py``
keeps those compositions as ``softmax_composed`` and friends): it saves fewer arrays, and its
backward is derived by hand, in ``docs/``. Everything here is plain array code, with ``xp``
from the arrays: no chunks, no tiles, no compiled kernels. The fast layer (``fast/``) speeds
these rules up in subclasses, and the tests hold each fast op to its rule.

    >>> import numpy as np
    >>> softmax(np.array([0.0, np.log(3.0)]))
    array([0.25, 0.75])
"""
from .backend import device_of, get_array_module, random_uniform
from .function import Function, sum_to


def softmax(x, axis=-1):
    """exp(x) / sum(exp(x)) along ``axis``, on arrays. Subtracting the row max changes nothing
    (the factor e^-max cancels) but keeps exp from overflowing."""
    e = get_array_module(x).exp(x - x.max(axis=axis, keepdims=True))
    return e / e.sum(axis=axis, keepdims=True)


def causal_mask(xp, Tq, Tk, dtype):
    """An additive (Tq, Tk) mask: 0 where query i may see key j, -inf after it.

    Queries are the last Tq positions of the Tk keys, so with a KV cache (Tq < Tk) query i
    sees keys 0 .. Tk - Tq + i.
    """
    above = xp.triu(xp.ones((Tq, Tk), dtype=bool), k=1 + Tk - Tq)
    return xp.where(above, dtype.type(-float("inf")), dtype.type(0))


class Linear(Function):
    """x @ W + b for x of shape (..., in), W (in, out), b (out,) or absent: one matrix product
    over all rows (docs/04-matmul.md)."""

    def forward(self, x, weight, bias=None):
        self.shape, self.has_bias = x.shape, bias is not None
        x2 = x.reshape(-1, x.shape[-1])  # (N, in)
        self.save_for_backward(x2, weight)
        out = x2 @ weight  # (N, out)
        if bias is not None:
            out = out + bias
        return out.reshape(*x.shape[:-1], weight.shape[1])

    def backward(self, g):
        x2, weight = self.saved
        g2 = g.reshape(-1, weight.shape[1])  # (N, out)
        # d/dx = g @ W^T,  d/dW = x^T @ g,  d/db = sum of g over the rows
        gx = (g2 @ weight.T).reshape(self.shape) if self.needs_grad[0] else None
        gw = x2.T @ g2 if self.needs_grad[1] else None
        gb = g2.sum(axis=0) if self.has_bias and self.needs_grad[2] else None
        return (gx, gw, gb) if self.has_bias else (gx, gw)


class Softmax(Function):
    def forward(self, x, axis=-1):
        self.axis = axis
        out = softmax(x, axis)
        self.save_for_backward(out)
        return out

    def backward(self, g):
        (s,) = self.saved
        # d softmax_i / d x_j = s_i (delta_ij - s_j)  =>  gx = s * (g - sum(g * s))
        return s * (g - (g * s).sum(axis=self.axis, keepdims=True))


class LogSoftmax(Function):
    def forward(self, x, axis=-1):
        xp = get_array_module(x)
        self.axis = axis
        shifted = x - x.max(axis=axis, keepdims=True)
        out = shifted - xp.log(xp.exp(shifted).sum(axis=axis, keepdims=True))
        self.save_for_backward(out)
        return out

    def backward(self, g):
        xp = get_array_module(g)
        (out,) = self.saved
        # d logsoftmax_i / d x_j = delta_ij - softmax_j  =>  gx = g - softmax * sum(g)
        return g - xp.exp(out) * g.sum(axis=self.axis, keepdims=True)


class CrossEntropy(Function):
    """Mean of -log softmax(logits)[target] over the rows whose target is not ignored.

    logits: (N, V) floats; targets: (N,) integers, ``ignore_index`` marks rows to skip.
    """

    def forward(self, logits, targets, ignore_index=-1):
        xp = get_array_module(logits, targets)
        rows = xp.arange(logits.shape[0])
        valid = targets != ignore_index
        safe = xp.where(valid, targets, 0)  # any in-range id for the ignored rows
        shifted = logits - logits.max(axis=-1, keepdims=True)
        probs = xp.exp(shifted)
        total = probs.sum(axis=-1)
        probs = probs / total[:, None]
        # log p[target] = shifted[target] - log(sum(exp(shifted)))
        logp = shifted[rows, safe] - xp.log(total)
        count = valid.sum()
        self.save_for_backward(probs, safe, valid, count)
        return (-(logp * valid).sum() / count).astype(logits.dtype)

    def backward(self, g):
        xp = get_array_module(g)
        probs, safe, valid, count = self.saved
        # d loss / d logits = (softmax - onehot(target)) / count, zero on ignored rows
        onehot = xp.arange(probs.shape[1]) == safe[:, None]      # (N, V), True at the target
        return (probs - onehot) * (valid / count).astype(probs.dtype)[:, None] * g


class LayerNorm(Function):
    """(x - mean) / sqrt(var + eps) * weight + bias over the last axis; bias may be absent."""

    def forward(self, x, weight, bias=None, eps=1e-5):
        xp = get_array_module(x, weight, bias)
        self.has_bias = bias is not None
        xc = x - x.mean(axis=-1, keepdims=True)                                  # x - mean
        rstd = 1 / xp.sqrt((xc * xc).mean(axis=-1, keepdims=True) + eps)         # 1 / sqrt(var + eps)
        xhat = xc * rstd
        self.save_for_backward(xhat, rstd, weight)
        out = xhat * weight
        return out if bias is None else out + bias

    def backward(self, g):
        xhat, rstd, weight = self.saved
        C = xhat.shape[-1]
        gh = g * weight
        # with gh = g * w: gx = rstd * (gh - mean(gh) - xhat * mean(gh * xhat))
        gx = rstd * (gh - gh.mean(axis=-1, keepdims=True) - xhat * (gh * xhat).mean(axis=-1, keepdims=True))
        # d/dw = sum over rows of g * xhat, d/db = sum over rows of g
        gw = (g * xhat).reshape(-1, C).sum(axis=0) if self.needs_grad[1] else None
        gb = g.reshape(-1, C).sum(axis=0) if self.has_bias and self.needs_grad[2] else None
        return (gx, gw, gb) if self.has_bias else (gx, gw)


class Attention(Function):
    """softmax(q k^T * scale + causal mask) @ v, with optional dropout on the weights.

    q: (..., Tq, hs), k and v: (..., Tk, hs). Returns (..., Tq, hs).
    """

    def forward(self, q, k, v, causal=True, scale=None, dropout_p=0.0):
        xp = get_array_module(q, k, v)
        Tq, Tk = q.shape[-2], k.shape[-2]
        self.scale = q.shape[-1] ** -0.5 if scale is None else scale
        self.dropout_p = dropout_p
        s = q @ xp.swapaxes(k, -1, -2) * self.scale            # (..., Tq, Tk)
        if causal and Tq > 1:  # a single (newest) query may see every key
            s = s + causal_mask(xp, Tq, Tk, q.dtype)
        a = softmax(s, axis=-1)
        self.keep = None
        if dropout_p > 0:
            self.keep = random_uniform(a.shape, a.dtype, device_of(a)) >= dropout_p
        a_d = a if self.keep is None else a * self.keep * (1 / (1 - dropout_p))
        self.save_for_backward(q, k, v, a, a_d)
        return a_d @ v                                          # (..., Tq, hs)

    def backward(self, g):
        xp = get_array_module(g)
        q, k, v, a, a_d = self.saved
        # 1. out = a_d @ v:  gv = a_d^T @ g,  g_ad = g @ v^T
        gv = xp.swapaxes(a_d, -1, -2) @ g
        ga = g @ xp.swapaxes(v, -1, -2)
        # 2. dropout, a_d = a * keep / (1 - p):  ga = g_ad * keep / (1 - p)
        if self.keep is not None:
            ga = ga * self.keep * (1 / (1 - self.dropout_p))
        # 3. a = softmax(s), row by row:  gs = a * (ga - sum_j ga_j a_j)
        gs = a * (ga - (ga * a).sum(axis=-1, keepdims=True))
        # 4. s = q @ k^T * scale:  gq = gs @ k * scale,  gk = gs^T @ q * scale
        gq = gs @ k * self.scale
        gk = xp.swapaxes(gs, -1, -2) @ q * self.scale
        return sum_to(gq, q.shape), sum_to(gk, k.shape), sum_to(gv, v.shape)
