"""Neural-network functions on Tensors, imported as ``F``.

Each fused function (backed by a rule in ``rules.py``, or GELU's in ``ops.py``) has a composed
twin here, built only from primitive Tensor ops: ``softmax_composed``, ``layer_norm_composed``
and so on. Which one runs, the rule, its fast op or the composed twin, is the mode's choice
(modes.py; ``mode``, ``set_mode`` and ``get_mode`` are here too):

    >>> import numpy as np
    >>> from tinygrad_gpt import Tensor
    >>> x = Tensor([[1.0, 2.0, 3.0]])
    >>> with mode("rules"):
    ...     np.round(softmax(x).numpy(), 3)
    array([[0.09 , 0.245, 0.665]], dtype=float32)
    >>> get_mode()
    'fast'
"""
import math

import numpy as np

from . import backend, modes, rules
from .backend import get_array_module, is_array
from .modes import MODES, get_mode, mode, set_mode  # noqa: F401 (the mode switch, as F.mode)
from .engine.methods import _axis_arg
from .tensor import Tensor


def _int_array(ids, like, what, check):
    """ids (Tensor, array or list) as an integer array on ``like``'s device, or ValueError.

    ``check(ids)`` raises for ids out of range. It runs where the ids are: host ids
    (the usual case: batches come from NumPy) are checked on the host before they go to
    the device, so the check costs no device sync; ids already on the device are checked
    there, which waits for the device once (on a GPU an out-of-range index would wrap
    around silently)."""
    if isinstance(ids, Tensor):
        ids = ids.data
    xp = get_array_module(like)
    if not is_array(ids):
        ids = np.asarray(ids)
    if ids.dtype.kind not in "iu":
        raise ValueError(f"{what} must be integers, got dtype {ids.dtype}")
    check(ids)
    return xp.asarray(ids) if get_array_module(ids) is not xp else ids


# ----------------------------------------------------------------------------- linear

ACTIVATIONS = (None, "gelu")


def linear(x, weight, bias=None, activation=None):
    """x @ weight + bias, with weight of shape (in, out) (GPT-2's layout), fused.

    ``activation="gelu"`` applies GELU in the same op: ``gelu(linear(x, weight, bias))``,
    without keeping the pre-activation for the backward.
    """
    if activation not in ACTIVATIONS:
        raise ValueError(f"linear: unknown activation {activation!r} (one of {ACTIVATIONS})")
    if x.ndim < 1 or weight.ndim != 2 or x.shape[-1] != weight.shape[0]:
        raise ValueError(f"linear: input of shape {x.shape} does not fit a weight of shape {weight.shape} "
                         f"(the input's last axis must equal the weight's first)")
    if bias is not None and bias.shape != (weight.shape[1],):
        raise ValueError(f"linear: bias must have shape ({weight.shape[1]},), got {bias.shape}")
    inputs = (x, weight) if bias is None else (x, weight, bias)
    if activation in getattr(modes.current().implementation(rules.Linear), "activations", ()):
        return Tensor._apply(rules.Linear, *inputs, activation=activation)  # one op (the fast layer's)
    out = Tensor._apply(rules.Linear, *inputs)
    return out if activation is None else gelu(out)


def linear_composed(x, weight, bias=None):
    """The same from primitives: a matrix product and a broadcast add."""
    out = x @ weight
    return out if bias is None else out + bias


# ----------------------------------------------------------------------------- softmax

def softmax(x, axis=-1, *, dim=None):
    """exp(x) / sum(exp(x)) along ``axis`` (or PyTorch's ``dim``), stable for large inputs."""
    return x.softmax(_axis_arg(axis, dim, -1))


def log_softmax(x, axis=-1, *, dim=None):
    """x - log(sum(exp(x))) along ``axis`` (or ``dim``), stable for large inputs."""
    return x.log_softmax(_axis_arg(axis, dim, -1))


def softmax_composed(x, axis=-1, *, dim=None):
    """Softmax from primitives. The max is a constant shift: softmax(x - c) = softmax(x)."""
    axis = _axis_arg(axis, dim, -1)
    e = (x - x.max(axis=axis, keepdims=True).detach()).exp()
    return e / e.sum(axis=axis, keepdims=True)


def log_softmax_composed(x, axis=-1, *, dim=None):
    """Log-softmax from primitives."""
    axis = _axis_arg(axis, dim, -1)
    s = x - x.max(axis=axis, keepdims=True).detach()
    return s - s.exp().sum(axis=axis, keepdims=True).log()


# ----------------------------------------------------------------------------- cross-entropy

def _flatten_targets(logits, targets, ignore_index):
    """Check shapes and ids; return logits as (N, V) and targets as (N,)."""
    if logits.dtype.kind != "f":
        raise ValueError(f"cross_entropy: logits must be floating-point, got dtype {logits.dtype}")
    V = logits.shape[-1]

    def check(t):
        if logits.ndim < 1 or tuple(t.shape) != logits.shape[:-1]:
            raise ValueError(f"cross_entropy: logits of shape {logits.shape} need targets of shape "
                             f"{logits.shape[:-1]}, got {tuple(t.shape)}")
        bad = ((t < 0) | (t >= V)) & (t != ignore_index)
        if bool(bad.any()):
            raise ValueError(f"cross_entropy: target ids must be in [0, {V}) or equal ignore_index="
                             f"{ignore_index}; found {int(t[bad].ravel()[0])}")

    t = _int_array(targets, logits.data, "cross_entropy targets", check)
    return logits.reshape(-1, V), t.reshape(-1)


def cross_entropy(logits, targets, ignore_index=-1):
    """Mean negative log-likelihood of ``targets`` under softmax(logits).

    logits: (V,), (N, V) or (B, T, V). targets: integers of shape (), (N,) or (B, T);
    positions equal to ``ignore_index`` are left out of the mean.
    """
    logits2, t = _flatten_targets(logits, targets, ignore_index)
    return Tensor._apply(rules.CrossEntropy, logits2, Tensor._wrap(t), ignore_index=ignore_index)


def cross_entropy_composed(logits, targets, ignore_index=-1):
    """Cross-entropy from primitives: pick -log p[target] and average the kept rows."""
    logits2, t = _flatten_targets(logits, targets, ignore_index)
    xp = get_array_module(t)
    valid = t != ignore_index
    logp = log_softmax_composed(logits2)._getitem_checked((xp.arange(t.shape[0]), xp.where(valid, t, 0)))
    weight = valid.astype(logits.dtype) / valid.sum().astype(logits.dtype)  # stays on the device
    return -(logp * weight).sum()


# ----------------------------------------------------------------------------- layer norm

def layer_norm(x, weight, bias=None, eps=1e-5):
    """Normalise the last axis to zero mean and unit variance, then scale and shift.
    ``weight=None`` scales by 1 (PyTorch's layer norm without elementwise affine)."""
    if x.ndim == 0:
        raise ValueError("layer_norm: the input needs at least one axis, got a 0-d tensor")
    C = x.shape[-1]
    if weight is None:
        weight = Tensor._wrap(get_array_module(x.data).ones(C, dtype=x.dtype))
    for name, p in (("weight", weight), ("bias", bias)):
        if p is not None and p.shape != (C,):
            raise ValueError(f"layer_norm: {name} must have shape ({C},) for input "
                             f"of shape {x.shape}, got {p.shape}")
    inputs = (x, weight) if bias is None else (x, weight, bias)
    return Tensor._apply(rules.LayerNorm, *inputs, eps=eps)


def layer_norm_composed(x, weight, bias=None, eps=1e-5):
    """Layer norm from primitives."""
    mu = x.mean(axis=-1, keepdims=True)
    xc = x - mu
    var = (xc * xc).mean(axis=-1, keepdims=True)
    out = xc / (var + eps).sqrt()
    out = out if weight is None else out * weight
    return out if bias is None else out + bias


# ----------------------------------------------------------------------------- GELU

def gelu(x):
    """GELU, tanh approximation: 0.5 x (1 + tanh(sqrt(2/pi) (x + 0.044715 x^3)))."""
    return x.gelu()


def gelu_composed(x):
    """GELU from primitives."""
    return 0.5 * x * (1 + (math.sqrt(2 / math.pi) * (x + 0.044715 * (x * x * x))).tanh())


# ----------------------------------------------------------------------------- embedding, dropout

def embedding(idx, weight):
    """Rows of ``weight`` (V, C) picked by integer ids of any shape: out[..., :] = weight[idx]."""
    if weight.ndim != 2:
        raise ValueError(f"embedding: weight must be 2-D (V, C), got shape {weight.shape}")
    V = weight.shape[0]

    def check(ids):
        if ids.size and bool(((ids < 0) | (ids >= V)).any()):
            raise ValueError(f"embedding: ids must be in [0, {V}), got min {int(ids.min())} "
                             f"and max {int(ids.max())}")

    return weight._getitem_checked(_int_array(idx, weight.data, "embedding ids", check))


def dropout(x, p, training=True):
    """Zero each element with probability p and scale the rest by 1 / (1 - p)."""
    if not 0 <= p < 1:
        raise ValueError(f"dropout: p must be in [0, 1), got {p}")
    if not training or p == 0:
        return x
    keep = backend.random_uniform(x.shape, x.dtype, x.device) >= p
    return x * (keep * x.dtype.type(1 / (1 - p)))


# ----------------------------------------------------------------------------- attention

def _check_qkv(q, k, v, causal):
    if min(q.ndim, k.ndim, v.ndim) < 2:  # the leading dims broadcast, as in a matrix product
        raise ValueError(f"scaled_dot_product_attention: q, k, v need rank >= 2, "
                         f"got shapes {q.shape}, {k.shape}, {v.shape}")
    if q.shape[-1] != k.shape[-1] or k.shape[-2] != v.shape[-2]:
        raise ValueError(f"scaled_dot_product_attention: shapes {q.shape}, {k.shape}, {v.shape} "
                         f"do not fit: need q (..., Tq, hs), k (..., Tk, hs), v (..., Tk, hv)")
    if causal and q.shape[-2] > k.shape[-2]:
        raise ValueError(f"scaled_dot_product_attention: causal attention needs Tq <= Tk, "
                         f"got Tq={q.shape[-2]} and Tk={k.shape[-2]}")


def scaled_dot_product_attention(q, k, v, causal=True, dropout_p=0.0, scale=None):
    """softmax(q @ k^T / sqrt(hs) + mask) @ v, fused.

    q: (..., Tq, hs), k, v: (..., Tk, hs). With ``causal``, query i sees keys up
    to position Tk - Tq + i, so the queries are the newest Tq positions (as in a
    KV cache; with Tq == Tk this is the usual lower-triangular mask).
    """
    _check_qkv(q, k, v, causal)
    return Tensor._apply(rules.Attention, q, k, v, causal=causal, scale=scale, dropout_p=dropout_p)


def blocked_attention(q, k, v, causal=True, scale=None, block=None, tile=None):
    """The same attention, computed ``block`` (batch, head) matrices at a time, never holding all
    the (..., Tq, Tk) weights: the fast layer's BlockedAttention. With ``causal``, each block goes through
    its queries ``tile`` rows at a time and skips the keys a tile cannot see.
    ``scaled_dot_product_attention`` picks it by itself for long sequences on the CPU; q, k and
    v must share their leading dims. In the "rules" and "composed" modes it is that mode's
    ``scaled_dot_product_attention``."""
    _check_qkv(q, k, v, causal)
    if not q.shape[:-2] == k.shape[:-2] == v.shape[:-2]:
        raise ValueError(f"blocked_attention: q, k, v need the same leading dims, "
                         f"got shapes {q.shape}, {k.shape}, {v.shape}")
    for name, n in (("block", block), ("tile", tile)):
        if n is not None and (not isinstance(n, int) or isinstance(n, bool) or n < 1):
            raise ValueError(f"blocked_attention: {name} must be a positive int, got {n!r}")
    blocked = getattr(modes.current().implementation(rules.Attention), "blocked", None)
    if blocked is None:
        return scaled_dot_product_attention(q, k, v, causal=causal, scale=scale)
    return Tensor._apply(blocked, q, k, v, causal=causal, scale=scale, block=block, tile=tile)


def scaled_dot_product_attention_composed(q, k, v, causal=True, scale=None, dropout_p=0.0):
    """Attention from primitives: scores, mask, softmax, dropout, weighted sum of values."""
    _check_qkv(q, k, v, causal)
    Tq, Tk = q.shape[-2], k.shape[-2]
    scale = q.shape[-1] ** -0.5 if scale is None else scale
    att = (q @ k.transpose(-2, -1)) * scale  # (..., Tq, Tk)
    if causal:
        xp = get_array_module(q.data)
        att = att.masked_fill(xp.triu(xp.ones((Tq, Tk), dtype=bool), k=1 + Tk - Tq), -math.inf)
    return dropout(softmax_composed(att), dropout_p) @ v
