"""Grading for the three exercises that are not one Function: the backward loop, ``sum_to``, AdamW."""
import numpy as np

from ... import ops, optim
from ...function import sum_to
from ...tensor import Tensor
from .cases import Draw
from .diagnose import compare
from .grader import Mistake, call, step_gpt


# ----------------------------------------------------------------------------- backward

def _graph(draw, n_nodes):
    """Three leaves and ``n_nodes`` ops, each on one or two earlier tensors (reuse included)."""
    leaves = [Tensor(draw.array((2, 3)), requires_grad=True) for _ in range(3)]
    nodes = list(leaves)
    for _ in range(n_nodes):
        a, b = nodes[draw.int(0, len(nodes) - 1)], nodes[draw.int(0, len(nodes) - 1)]
        kind = draw.int(0, 3)
        nodes.append(a + b if kind == 0 else a * b if kind == 1 else a.tanh() if kind == 2 else a * 0.5 - b)
    root = sum(nodes[3:], nodes[0]) * Tensor(draw.array((2, 3)))
    return leaves, root.sum()


def _twice(draw):
    a, b = (Tensor(draw.array(3), requires_grad=True) for _ in range(2))
    return [a, b], (a * b + a).sum()  # a is used twice


def _diamond(draw):
    a = Tensor(draw.array(3), requires_grad=True)
    h = a.tanh()  # h is used by two ops: its gradient must be complete before it goes on
    return [a], ((h * h) + h.tanh()).sum()


def _deep(draw):
    a = Tensor(draw.array(2), requires_grad=True)
    x = a
    for _ in range(3000):
        x = x * 1.0001
    return [a], x.sum()


BACKWARD_CASES = [("a tensor used twice", _twice), ("a tensor used by two ops", _diamond),
                  ("a chain of 3000 ops", _deep)] + [("a random graph", lambda d, n=n: _graph(d, n))
                                                    for n in (2, 4, 6, 8, 10)]
BACKWARD_WHY = {"a tensor used twice": "a tensor used twice must receive the sum of its gradients (add, "
                "do not overwrite)",
                "a tensor used by two ops": "walk in topological order: a tensor's backward runs only once "
                "every op that used it has sent its gradient"}


def grade_backward(exercise, learner, path):
    for what, build in BACKWARD_CASES:
        leaves, root = build(Draw(0))
        try:
            call("backward", path, learner, root)
        except Mistake as m:
            if "RecursionError" in "\n".join(m.lines):
                m.lines.append("likely mistake: a recursive sort; walk the graph with a stack of your own")
            raise
        mine = [leaf.grad for leaf in leaves]
        leaves2, root2 = build(Draw(0))
        root2.backward()
        for i, (leaf, got) in enumerate(zip(leaves2, mine)):
            if leaf.grad is None and (got is None or not np.any(got)):
                continue  # a leaf the root does not depend on
            lines = compare(f"the gradient of leaf {i}", got, leaf.grad)
            if lines:
                why = BACKWARD_WHY.get(what)
                raise Mistake([f"step 2 (gradients) failed on {what}"] + lines +
                              ([f"likely mistake: {why}"] if why and not lines[-1].startswith("likely") else []))
    step_gpt(exercise, learner, path)


# ----------------------------------------------------------------------------- broadcasting

def broadcast_case(draw):
    """A gradient g of a broadcast result, and the shape of the input broadcast to it."""
    shape = tuple(draw.int(1, 3) for _ in range(draw.int(1, 3)))
    small = tuple(1 if draw.int(0, 1) else n for n in shape[draw.int(0, len(shape) - 1):])
    return draw.array(shape), small


BROADCAST_EDGES = [lambda d: (d.array((2, 3, 4)), (4,)), lambda d: (d.array((2, 3, 4)), (3, 1)),
                   lambda d: (d.array((3, 4)), (3, 4)), lambda d: (d.array((2, 3)), (1, 1))]


def grade_broadcasting(exercise, learner, path):
    draw = Draw(0)
    cases = [edge(draw) for edge in BROADCAST_EDGES] + [broadcast_case(draw) for _ in range(12)]
    for step, label in ((1, "shapes"), (2, "values")):
        for g, shape in cases:
            got = call("sum_to", path, learner, g.copy(), shape)
            want = sum_to(g, shape)
            if step == 1 and np.shape(got) == want.shape:
                continue
            copies = {"the number of broadcast copies": g.size // max(1, want.size),
                      **{f"the size of broadcast axis {i} of g (copies along it)": n
                         for i, n in enumerate(g.shape) if n > 1}}
            lines = compare(f"sum_to(g of shape {g.shape}, {shape})", got, want, copies)
            if lines:
                raise Mistake([f"step {step} ({label}) failed"] + lines)
    step_gpt(exercise, broadcast_ops(learner), path)


def broadcast_ops(learner_sum_to):
    """Add and Mul whose backward sums with the learner's ``sum_to``, for the GPT of step 3."""
    class Add(ops.Add):
        def backward(self, g):
            return tuple(learner_sum_to(g, s) if n else None for s, n in zip(self.shapes, self.needs_grad))

    class Mul(ops.Mul):
        def backward(self, g):
            x, y = self.saved
            return (learner_sum_to(g * y, x.shape) if self.needs_grad[0] else None,
                    learner_sum_to(g * x, y.shape) if self.needs_grad[1] else None)
    return {ops.Add: Add, ops.Mul: Mul}


# ----------------------------------------------------------------------------- adamw

def _variants(p, g, lr, b1, b2, eps, wd, t, m, v):
    """What the known mistakes give after one step from state (m, v) at step t."""
    m1, v1 = b1 * m + (1 - b1) * g, b2 * v + (1 - b2) * g * g
    full = lambda m_, v_, decay: p * (1 - lr * decay) - lr * m_ / (np.sqrt(v_) + eps)
    mh, vh = m1 / (1 - b1 ** t), v1 / (1 - b2 ** t)
    coupled_g = g + wd * p
    mc, vc = b1 * m + (1 - b1) * coupled_g, b2 * v + (1 - b2) * coupled_g ** 2
    return [(full(m1, v1, wd), "the bias correction is missing: divide m by 1 - beta1^t and v by 1 - beta2^t"),
            (full(mh, vh, 0.0), "the weight decay is missing: p *= 1 - lr * weight_decay"),
            (full(mc / (1 - b1 ** t), vc / (1 - b2 ** t), 0.0),
             "the weight decay is added to the gradient (Adam with L2); AdamW decays p apart from g"),
            (full(m1 / (1 - b1 ** max(t - 1, 1)), v1 / (1 - b2 ** max(t - 1, 1)), wd) if t > 1 else None,
             "the step count t is off by one in the bias correction")]


def grade_adamw(exercise, learner, path):
    draw = Draw(0)
    for case in range(6):
        shape = draw.lead(2) + (draw.int(1, 4),)
        options = dict(lr=10 ** -draw.int(1, 3), betas=(0.9, 0.95 + 0.04 * draw.int(0, 1)), eps=1e-8,
                       weight_decay=0.1 * draw.int(0, 2) or 0.01)
        start = draw.array(shape)
        mine, ref = Tensor(start.copy()), Tensor(start.copy())
        opt = call("AdamW(...)", path, learner, [mine], **options)
        ref_opt = optim.AdamW([ref], **options)
        for t in range(1, 5):
            g = draw.array(shape)
            before = ref.data.copy()
            state = ref_opt.state.get(id(ref), {})
            m, v = (state.get("exp_avg", np.zeros(shape)), state.get("exp_avg_sq", np.zeros(shape)))
            mine.grad, ref.grad = g.copy(), g.copy()
            call("AdamW.step", path, opt.step)
            ref_opt.step()
            b1, b2 = options["betas"]
            lines = compare(f"the parameter after step {t}", mine.data, ref.data,
                            candidates=_variants(before, g, options["lr"], b1, b2, options["eps"],
                                                 options["weight_decay"], t, m.copy(), v.copy()))
            if lines:
                raise Mistake([f"step {1 if t == 1 else 2} ({'one update' if t == 1 else 'updates in a row'}) "
                               f"failed for a parameter of shape {shape}, options {options}"] + lines)
    step_gpt(exercise, {optim.AdamW: learner}, path)
