"""The exercises, in the docs' order: what to write, where to read, how each is graded.

An exercise whose answer is one Function names the project's rule (``rule``), the class the
workbook defines (``attr``), its cases (``build`` and ``edges``), the arrays known mistakes
would give (``candidates``) and what the GPT of step 3 runs with the learner's class in place
(``gpt_ops``). The other three (``backward``, ``broadcasting``, ``adamw``) have graders of
their own in special.py.
"""
import dataclasses
import typing

import numpy as np

from ... import functional as F, function, ops, optim, rules, tensor
from . import cases as C, mistakes as M
from .grader import grade_function
from .special import grade_adamw, grade_backward, grade_broadcasting


@dataclasses.dataclass
class Exercise:
    name: str
    about: str  # one line for ``exercise list``
    page: str
    section: str
    attr: str  # the name the workbook defines
    title: str
    body: str  # the formula and the shapes, for the workbook's docstring
    hints: tuple  # the docs section, the shapes, the derivative
    solution: tuple  # the project's objects whose source is the solution
    grade: typing.Callable = grade_function
    template: str = "function"
    rule: typing.Any = None
    args: str = "x"
    todo: tuple = ("", "")
    build: typing.Callable = None
    edges: tuple = ()
    candidates: typing.Callable = lambda case, name, g: []
    gpt_ops: typing.Callable = None
    passed: str = ""



def _fn(name, about, page, section, rule, args, title, body, todo, hints, gpt, **kw):
    """An exercise whose answer is one Function class with the rule's name."""
    return Exercise(name, about, page, section, rule.__name__, title, body, tuple(hints), (rule,),
                    rule=rule, args=args, todo=todo, gpt_ops=gpt, **kw)


EXERCISES = [
    _fn("tanh", "warm-up: tanh, one local derivative", "05-elementwise-and-gelu.md",
        "Elementwise ops: one local derivative each", ops.Tanh, "x", "tanh, forward beside backward",
        "out = tanh(x), elementwise; x any shape.\nd/dx tanh(x) = 1 - tanh(x)^2: save the output in forward.",
        ("out = xp.tanh(x); save out with self.save_for_backward(out)", "return g * (the local derivative)"),
        ["read docs/05-elementwise-and-gelu.md, \"Elementwise ops: one local derivative each\"",
         "x, out, g and the gradient all have x's shape: an elementwise op", "gx = g * (1 - out * out)"],
        lambda L: {ops.Tanh: L, ops.Gelu: F.gelu_composed}, build=C.elementwise,
        edges=(C.fixed(C.elementwise, [3, 2, 2, 3, 4]),), candidates=M.tanh_candidates,
        passed="your tanh trains a GPT (inside its GELU)"),
    Exercise("backward", "the engine's backward loop: topological order, gradient accumulation",
             "02-autodiff.md", "How the engine does it", "backward", "the backward loop",
             "topo_order(root): every tensor that requires grad, inputs first, without recursion.\n"
             "backward(root): d root/d root = 1; then, for t in reversed order: ctx = t._ctx (None for a leaf;\n"
             "a leaf adds its gradient into t.grad), gxs = ctx.backward(g) (a tuple, or one array),\n"
             "one per tensor of ctx.parents (skip None parents and those with requires_grad False);\n"
             "a tensor used twice gets the sum of its gradients.",
             ["read docs/02-autodiff.md, \"How the engine does it\"",
              "every gradient has its tensor's shape; keep them in a dict keyed by id(tensor)",
              "grads[id(parent)] = grads.get(id(parent), 0) + gx, after a reverse topological walk"],
             (tensor.Tensor._topo, tensor.Tensor.backward, tensor._propagate), grade=grade_backward,
             template="backward", passed="your backward loop trains a GPT"),
    Exercise("broadcasting", "the backward of a broadcast op: sum_to", "03-broadcasting.md",
             "Broadcasting copies, so its gradient sums", "sum_to", "sum_to, the gradient of broadcasting",
             "Broadcasting copies an input of shape `shape` up to g.shape: (C,) -> (B, T, C), (T, 1) -> (B, T, C).\n"
             "Each copy sends back a gradient, so the input's gradient is their sum: sum g over the leading\n"
             "axes that were added, and over the axes where shape has 1, keeping those (keepdims).",
             ["read docs/03-broadcasting.md, \"Broadcasting copies, so its gradient sums\"",
              "sum_to(g of shape (2, 3, 4), (3, 1)) has shape (3, 1)",
              "g.sum(axis=leading + size-1 axes, keepdims=True).reshape(shape)"],
             (function.sum_to,), grade=grade_broadcasting, template="broadcasting",
             passed="your sum_to trains a GPT (its broadcast adds)"),
    _fn("matmul", "x @ y with batch dimensions", "04-matmul.md", "Batches, broadcasting and vectors", ops.MatMul,
        "x, y", "the matrix product", "out = x @ y; x (..., n, k), y (..., k, m), out (..., n, m); both at least 2-d;\n"
        "y's batch dimensions may be fewer than x's, or 1 (broadcast): a shared weight matrix is (k, m).",
        ("out = x @ y; save x and y", "gx = g @ y^T, gy = x^T @ g, transposing the last two axes, then sum_to"),
        ["read docs/04-matmul.md, \"The derivation\" and \"Batches, broadcasting and vectors\"",
         "g is (..., n, m); gx must be x's shape, gy y's shape: sum over the batch axes y was broadcast on",
         "gx = sum_to(g @ swapaxes(y, -1, -2), x.shape), gy = sum_to(swapaxes(x, -1, -2) @ g, y.shape)"],
        lambda L: {ops.MatMul: L, rules.Linear: F.linear_composed}, build=C.matmul,
        edges=(C.fixed(C.matmul, [2, 2, 3, 2, 2, 2, 1]), C.fixed(C.matmul, [3, 4, 2, 1, 2, 2, 0])),
        passed="your matmul trains a GPT (its linear layers and head)"),
    _fn("gelu", "GELU, tanh form", "05-elementwise-and-gelu.md", "GELU, tanh form", ops.Gelu, "x",
        "GELU (GPT-2's tanh form)", "out = 0.5 x (1 + tanh(u)), u = c (x + 0.044715 x^3), c = sqrt(2 / pi)\n"
        "(tinygrad_gpt.ops.GELU_C); x any shape.",
        ("t = tanh(u); out = 0.5 * x * (1 + t)", "the product rule: both x and t depend on x"),
        ["read docs/05-elementwise-and-gelu.md, \"GELU, tanh form\"", "elementwise: everything has x's shape",
         "gx = g * (0.5 (1 + t) + 0.5 x (1 - t^2) c (1 + 3 * 0.044715 x^2))"],
        lambda L: {ops.Gelu: L}, build=C.elementwise, edges=(C.fixed(C.elementwise, [3, 2, 2, 2, 3]),),
        candidates=M.gelu_candidates, passed="your GELU trains a GPT"),
    _fn("softmax", "softmax over the last axis", "06-softmax-cross-entropy.md", "Softmax", rules.Softmax,
        "x, axis=-1", "softmax", "s = exp(x) / sum(exp(x)) along axis; x any shape. Subtract the row max first.",
        ("s = exp(x - max) / sum; save s", "gx = s * (g - sum(g * s)) along the axis"),
        ["read docs/06-softmax-cross-entropy.md, \"Softmax\"", "s, g, gx: x's shape; sums keep the axis",
         "gx = s * (g - (g * s).sum(axis, keepdims=True))"],
        lambda L: {rules.Softmax: L, rules.Attention: M.softmax_attention}, build=C.softmax,
        edges=(lambda d: C.Case([("x", d.array((2, 3, 4)) * 50 + 1000)], {"axis": -1}, {"d2": 4}),),
        candidates=M.softmax_candidates, passed="your softmax trains a GPT (inside its attention)"),
    _fn("cross_entropy", "cross-entropy of logits and targets, p - y", "06-softmax-cross-entropy.md",
        "Cross-entropy: $p - y$", rules.CrossEntropy, "logits, targets, ignore_index=-1", "cross-entropy",
        "loss = mean over the counted rows of -log softmax(logits)[target]; logits (N, V), targets (N,)\n"
        "integers; rows whose target is ignore_index are not counted. Return a 0-d array.",
        ("log p[target] = shifted[target] - log(sum(exp(shifted)))", "gx = (p - onehot(target)) / count"),
        ["read docs/06-softmax-cross-entropy.md, \"Cross-entropy: $p - y$\"",
         "g is a 0-d array; the gradient is (N, V); targets need none (return None for it)",
         "gx = (softmax(logits) - onehot(targets)) / count * g, zero on ignored rows"],
        lambda L: {rules.CrossEntropy: L}, build=C.cross_entropy, candidates=M.ce_candidates,
        passed="your cross-entropy trains a GPT"),
    _fn("layer_norm", "layer norm: the three-term gradient", "07-layer-norm.md", "Backward for the input",
        rules.LayerNorm, "x, weight, bias=None, eps=1e-5", "layer norm",
        "xhat = (x - mean) / sqrt(var + eps) over the last axis; out = xhat * weight + bias.\n"
        "x (..., C), weight and bias (C,); bias may be None (then return two gradients).",
        ("xhat = (x - mean) * rstd; out = xhat * weight + bias", "gx, gweight, gbias"),
        ["read docs/07-layer-norm.md, \"Backward for the scale and shift\" and \"Backward for the input\"",
         "x, g, gx: (..., C); gweight and gbias: (C,), summed over every row, however many batch axes",
         "gh = g * weight; gx = rstd * (gh - mean(gh) - xhat * mean(gh * xhat))"],
        lambda L: {rules.LayerNorm: L}, build=C.layer_norm,
        edges=(C.fixed(C.layer_norm, [0, 3]), C.fixed(C.layer_norm, [2, 2, 3, 4])),
        candidates=M.ln_candidates, passed="your layer norm trains a GPT"),
    _fn("attention", "causal attention: the four-step backward", "08-attention.md", "Backward, for one head",
        rules.Attention, "q, k, v, causal=True, scale=None, dropout_p=0.0", "causal self-attention",
        "s = q @ k^T * scale + mask; a = softmax(s); out = a @ v. q (..., Tq, hs), k and v (..., Tk, hs);\n"
        "scale = hs ** -0.5 unless given; query i sees keys 0 .. Tk - Tq + i (rules.causal_mask).\n"
        "dropout_p is 0 here: you may ignore it.",
        ("scores, mask, softmax, then a @ v", "the four steps back: gv, ga; gs; gq and gk"),
        ["read docs/08-attention.md, \"Backward, for one head\"",
         "g (..., Tq, hs); ga and gs (..., Tq, Tk); gq like q, gk and gv like k",
         "gv = a^T g; ga = g v^T; gs = a (ga - sum(ga a)); gq = gs k * scale; gk = gs^T q * scale"],
        lambda L: {rules.Attention: L}, build=C.attention,
        edges=(C.fixed(C.attention, [2, 2, 2, 4, 3, 2]), C.fixed(C.attention, [0, 2, 3, 1])),
        candidates=M.attention_candidates, passed="your attention trains a GPT"),
    _fn("embedding", "the embedding lookup: a scatter-add", "09-embedding-and-residuals.md",
        "Embedding: a lookup whose gradient is a scatter-add", ops.GetItem, "x, index", "the embedding lookup",
        "out = x[index]: x is the table (V, C), index integer ids of any shape (or, in the GPT, slices).\n"
        "An id that appears twice was read twice: its row's gradient is the sum of both.",
        ("out = x[index]; keep x's shape", "gx = zeros of x's shape, then add g into the rows picked"),
        ["read docs/09-embedding-and-residuals.md, \"Embedding: a lookup whose gradient is a scatter-add\"",
         "ids (B, T) pick rows of x (V, C): out and g are (B, T, C), gx is (V, C)",
         "gx = xp.zeros(x.shape); np.add.at(gx, index, g); the index gets no gradient"],
        lambda L: {ops.GetItem: L}, build=C.embedding, candidates=M.embedding_candidates,
        passed="your embedding trains a GPT (and slices its heads)"),
    Exercise("adamw", "AdamW's update", "10-adamw.md", "The update", "AdamW", "AdamW's update",
             "m = b1 m + (1 - b1) g;  v = b2 v + (1 - b2) g^2;  m_hat = m / (1 - b1^t);  v_hat = v / (1 - b2^t)\n"
             "p = p * (1 - lr * weight_decay) - lr * m_hat / (sqrt(v_hat) + eps); t counts the steps from 1.",
             ["read docs/10-adamw.md, \"The update\"", "m, v, g and p.data all have the parameter's shape",
              "update m and v in place (m[...] = ...), then p.data *= 1 - lr wd; "
              "p.data -= lr m_hat / (sqrt(v_hat) + eps)"],
             (optim.AdamW,), grade=grade_adamw, template="adamw", passed="your AdamW trains a GPT"),
]
BY_NAME = {e.name: e for e in EXERCISES}
