"""Grade a workbook: load it, then check in order, stopping at the first failure.

1. the forward values against the project's rule;
2. each input's gradient against central differences and against the project's rule;
3. a tiny float64 GPT trained a few AdamW steps with your rule in place of the project's: its
   losses must equal the project's own to 1e-9.

Everything runs in float64, on the exercise's random cases (``cases.py``) and its edge cases.
``grade`` returns a ``Report``: passed or not, and the lines to print.
"""
import importlib.util
import os
import sys
import traceback

import numpy as np

from ... import backend
from .cases import Draw
from .diagnose import close, compare

N_RANDOM = 12  # random cases per exercise, besides the edge cases


class Mistake(Exception):
    """A failed check; ``lines`` say what failed and the likely mistake."""

    def __init__(self, lines):
        super().__init__("\n".join(lines))
        self.lines = list(lines)


class Report:
    def __init__(self, passed, lines):
        self.passed, self.lines = passed, lines


def load(path, name):
    """The workbook at ``path`` as a module; a file that does not import raises Mistake."""
    spec = importlib.util.spec_from_file_location(f"workbook_{name}", path)
    module = importlib.util.module_from_spec(spec)
    try:
        spec.loader.exec_module(module)
    except Exception as e:  # the learner's own error: shown as their traceback
        raise Mistake([f"{path} does not import:"] + trimmed(e, path)) from None
    return module


def trimmed(e, path):
    """The traceback of ``e``, trimmed to the frames in the learner's file."""
    path = os.path.abspath(path)
    frames = [f for f in traceback.extract_tb(e.__traceback__) if os.path.abspath(f.filename) == path]
    text = traceback.format_list(frames) + traceback.format_exception_only(type(e), e)
    return [line.rstrip("\n") for chunk in text for line in chunk.splitlines()]


def call(label, path, fn, *args, **kwargs):
    """``fn(*args, **kwargs)``; NotImplementedError or any other error becomes a Mistake."""
    try:
        return fn(*args, **kwargs)
    except NotImplementedError as e:
        raise Mistake([f"not implemented yet: {label}" + (f": {e}" if str(e) else "")]) from None
    except Mistake:
        raise
    except Exception as e:
        raise Mistake([f"{label} raised {type(e).__name__}:"] + trimmed(e, path)) from None


def grade(exercise, path):
    """Grade the workbook at ``path`` for ``exercise`` (a catalog.Exercise); returns a Report.
    Grading runs on the CPU, in float64 NumPy, whatever the default device."""
    try:
        module = load(path, exercise.name)
        learner = getattr(module, exercise.attr, None)
        if learner is None:
            raise Mistake([f"{path} defines no {exercise.attr}: keep the name the workbook gave"])
        with backend.device("cpu"):
            exercise.grade(exercise, learner, path)
    except Mistake as m:
        return Report(False, m.lines)
    return Report(True, [f"passed: {exercise.passed}"])


def draws(exercise, seed=0):
    """The cases to grade on: the edge cases, then N_RANDOM random ones."""
    draw = Draw(seed)
    return [edge(draw) for edge in exercise.edges] + [exercise.build(draw) for _ in range(N_RANDOM)]


def grade_function(exercise, learner, path):
    """The three steps for an exercise whose answer is one Function class."""
    cases = draws(exercise)
    for case in cases:
        step_forward(exercise, learner, path, case)
    for case in cases:
        step_gradients(exercise, learner, path, case)
    step_gpt(exercise, exercise.gpt_ops(learner), path)


def _forward(cls, case, label, path):
    fn = cls(case.grads)
    out = call(f"{label}.forward", path, fn.forward, *case.arrays(), **case.kwargs)
    return fn, out


def step_forward(exercise, learner, path, case):
    name = exercise.attr
    _, out = _forward(learner, case, name, path)
    _, ref = _forward(exercise.rule, case, name, path)
    lines = compare("the forward value", out, ref, case.dims)
    if lines:
        raise Mistake([f"step 1 (forward values) failed for {case.shapes()}"] + lines)


def step_gradients(exercise, learner, path, case):
    name = exercise.attr
    fn, out = _forward(learner, case, name, path)
    g = Draw(1).array(np.shape(out))
    gxs = call(f"{name}.backward", path, fn.backward, g.copy())
    gxs = gxs if isinstance(gxs, tuple) else (gxs,)
    ref_fn, _ = _forward(exercise.rule, case, name, path)
    refs = ref_fn.backward(g.copy())
    refs = refs if isinstance(refs, tuple) else (refs,)
    wanted = [i for i, need in enumerate(case.grads) if need]
    if len(gxs) < max(wanted) + 1:
        raise Mistake([f"step 2 (gradients) failed for {case.shapes()}",
                       f"backward returned {len(gxs)} gradient(s); forward has inputs "
                       + ", ".join(n for n, _ in case.inputs) + ": return one per input, in order"])
    for i in wanted:
        pname = case.inputs[i][0]
        numeric = numerical_gradient(exercise.rule, case, i, g)
        ok_numeric = gxs[i] is not None and np.shape(gxs[i]) == np.shape(numeric) and \
            close(gxs[i], numeric, rtol=1e-5, atol=1e-6)
        against = "the project's rule" if ok_numeric else "central differences"
        lines = compare(f"the gradient of `{pname}`", gxs[i], refs[i], case.dims,
                        exercise.candidates(case, pname, g))
        if lines or not ok_numeric:
            lines = lines or [f"the gradient of `{pname}` disagrees with central differences"]
            raise Mistake([f"step 2 (gradients) failed for {case.shapes()}: "
                           f"the gradient of `{pname}` disagrees with {against}"] + lines)


def numerical_gradient(rule, case, i, g, eps=1e-6):
    """d sum(g * rule(inputs)) / d input i by central differences, element by element."""
    arrays = case.arrays()
    x = arrays[i]
    out = np.zeros_like(x)
    for j in range(x.size):
        values = []
        for sign in (1, -1):
            moved = list(arrays)
            moved[i] = x.copy()
            moved[i].flat[j] += sign * eps
            values.append(float((rule([False] * len(arrays)).forward(*moved, **case.kwargs) * g).sum()))
        out.flat[j] = (values[0] - values[1]) / (2 * eps)
    return out


def step_gpt(exercise, plug, path):
    """Step 3: the tiny GPT trained with ``plug`` (mode replacements, or a backward function)."""
    from .gpt import reference_losses, train_losses
    losses = call("training the GPT", path, train_losses, plug)
    for step, (got, want) in enumerate(zip(losses, reference_losses())):
        if not abs(got - want) <= 1e-9 * max(1.0, abs(want)):
            raise Mistake(["step 3 (a tiny GPT trained with your rule) failed",
                           f"the loss at step {step}: yours {got:.12g}, the project's {want:.12g}",
                           "likely mistake: a case the GPT meets that the small checks did not: "
                           "compare your rule with the docs section on it in the model"])


def print_report(report, out=sys.stdout):
    for line in report.lines:
        print(line, file=out)
