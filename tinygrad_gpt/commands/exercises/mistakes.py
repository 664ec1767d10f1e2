"""The arrays that known mistakes give, for the diagnosis to recognise (``diagnose.compare``).

Each function takes a case, the name of the input whose gradient is checked and the incoming
gradient g, and returns (array, likely mistake) pairs, computed from the formulas directly.
"""
import math

import numpy as np

from ... import functional as F, ops, rules


def softmax_attention(q, k, v, causal=True, scale=None, dropout_p=0.0):
    """Attention built on the Softmax op, so that a GPT runs the learner's softmax."""
    Tq, Tk = q.shape[-2], k.shape[-2]
    att = (q @ k.transpose(-2, -1)) * (q.shape[-1] ** -0.5 if scale is None else scale)
    if causal and Tq > 1:
        att = att.masked_fill(np.triu(np.ones((Tq, Tk), dtype=bool), k=1 + Tk - Tq), -math.inf)
    return F.dropout(att.softmax(-1), dropout_p) @ v


def tanh_candidates(case, name, g):
    x = case.inputs[0][1]
    return [(g * (1 - x * x), "1 - x^2 uses the input; the derivative is 1 - tanh(x)^2 (save the output)"),
            (g * (1 - np.tanh(x)), "the derivative is 1 - tanh(x)^2: the square is missing")]


def gelu_candidates(case, name, g):
    x = case.inputs[0][1]
    t = np.tanh(ops.GELU_C * (x + 0.044715 * x ** 3))
    return [(g * 0.5 * (1 + t), "the second term, x (1 - t^2) u' / 2, is missing (t depends on x too)"),
            (g * (0.5 * (1 + t) + 0.5 * x * (1 - t * t) * ops.GELU_C), "u' = c (1 + 3 * 0.044715 x^2): "
             "the derivative of the cubic is missing")]


def softmax_candidates(case, name, g):
    s = rules.softmax(case.inputs[0][1])
    return [(s * g, "the term - sum(g * s) is missing: gx = s * (g - sum(g * s))"),
            (s * (g - g.sum(-1, keepdims=True)), "the sum is of g * s, not of g: gx = s * (g - sum(g * s))")]


def ce_candidates(case, name, g):
    logits, targets = case.inputs[0][1], case.inputs[1][1]
    p = rules.softmax(logits)
    onehot = np.eye(logits.shape[1])[np.where(targets < 0, 0, targets)]
    valid = (targets != -1)[:, None]
    return [((p - onehot) / valid.sum() * g, "the ignored rows (target -1) must get a zero gradient"),
            ((onehot - p) * valid / valid.sum() * g, "the gradient has the wrong sign: it is p - y")]


def ln_candidates(case, name, g):
    x, w = case.inputs[0][1], case.inputs[1][1]
    xc = x - x.mean(-1, keepdims=True)
    rstd = 1 / np.sqrt((xc * xc).mean(-1, keepdims=True) + 1e-5)
    xhat, gh = xc * rstd, g * w
    if name != "x":
        return []
    return [(rstd * (gh - gh.mean(-1, keepdims=True)), "a term of the layer norm backward is missing: "
             "- xhat * mean(gh * xhat), the path through the variance"),
            (rstd * (gh - xhat * (gh * xhat).mean(-1, keepdims=True)), "a term of the layer norm backward is "
             "missing: - mean(gh), the path through the mean"),
            (rstd * gh, "two terms of the layer norm backward are missing: the paths through the mean and "
             "the variance"),
            (rstd * (g - g.mean(-1, keepdims=True) - xhat * (g * xhat).mean(-1, keepdims=True)),
             "the weight is missing: use gh = g * weight in the formula for gx")]


def attention_candidates(case, name, g):
    q, k, v = (a for _, a in case.inputs)
    scale = q.shape[-1] ** -0.5
    s = q @ np.swapaxes(k, -1, -2) * scale + rules.causal_mask(np, q.shape[-2], k.shape[-2], q.dtype)
    a = rules.softmax(s) if q.shape[-2] > 1 else rules.softmax(q @ np.swapaxes(k, -1, -2) * scale)
    gs_wrong = a * (g @ np.swapaxes(v, -1, -2))
    why = "step 3 is missing - sum_j ga_j a_j: the softmax backward is gs = a * (ga - sum(ga * a))"
    return {"q": [(gs_wrong @ k * scale, why)], "k": [(np.swapaxes(gs_wrong, -1, -2) @ q * scale, why)],
            "v": [(a @ g if a.shape[-1] == g.shape[-2] else None,
                   "gv = a^T @ g: transpose the attention weights")]}.get(name, [])


def embedding_candidates(case, name, g):
    x, index = case.inputs[0][1], case.inputs[1][1]
    gx = np.zeros_like(x)
    gx[index] = g
    return [(gx, "an id used twice must add both gradients: gx[index] = g keeps only one; use "
             "np.add.at(gx, index, g), a scatter-add")]
