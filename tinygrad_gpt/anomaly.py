"""Anomaly mode: name the op that first made a NaN or an infinity, in forward or backward.

Inside ``with detect_anomaly():`` every op's output is checked after its forward,
and every input gradient after its backward. The first op that turns finite
values into non-finite ones raises ``AnomalyError`` with its name, the shapes
involved and the line of code that applied it::

    >>> from tinygrad_gpt.tensor import Tensor
    >>> x = Tensor([1.0, -1.0, 2.0])
    >>> with detect_anomaly():  # doctest: +ELLIPSIS
    ...     x.log()
    Traceback (most recent call last):
    tinygrad_gpt.errors.AnomalyError: Log.forward produced nan (1 of 3 values) from finite inputs of shape (3,) ...

Outside the block nothing is checked and nothing is paid: the engine tests one
empty list of hooks per op (``tensor.add_op_hook``). Minus infinity written on purpose by ``masked_fill``
(an attention mask) is not an anomaly; a NaN that softmax makes from it is.
"""
import contextlib
import os
import sys

from . import tensor as _tensor
from .backend import get_array_module
from .errors import AnomalyError

# ops that write infinities on purpose: masked_fill(mask, -inf) before a softmax
WRITES_INF = {"MaskedFill"}
# frames in these files are the engine's own; an op's site is the first frame outside them
_ENGINE_FILES = {os.path.join(os.path.dirname(os.path.abspath(__file__)), name)
                 for name in ("tensor.py", "functional.py", "nn.py", "anomaly.py", "modes.py", "function.py",
                              os.path.join("engine", "methods.py"))}


def _is_float(array):
    return array is not None and getattr(array, "dtype", None) is not None and array.dtype.kind == "f"


def _bad(array):
    """'nan', 'inf' or '-inf' (nan first) with a count, or None for finite or non-float data."""
    if not _is_float(array):
        return None
    xp = get_array_module(array)
    finite = xp.isfinite(array)
    if bool(finite.all()):
        return None
    n = int(array.size - int(finite.sum()))
    kind = "nan" if _has_nan(array) else ("inf" if bool((array[~finite] > 0).any()) else "-inf")
    return f"{kind} ({n} of {array.size} values)"


def _has_nan(array):
    return _is_float(array) and bool(get_array_module(array).isnan(array).any())


def _shapes(arrays):
    """'shape (3,)' or 'shapes (2, 3) and (3,)'."""
    shapes = [str(tuple(a.shape)) for a in arrays if a is not None]
    return ("shape " if len(shapes) == 1 else "shapes ") + " and ".join(shapes)


def _site():
    """'applied at file.py:line in function': the code outside the engine that applied the op."""
    frame = sys._getframe(1)
    while frame is not None and os.path.abspath(frame.f_code.co_filename) in _ENGINE_FILES:
        frame = frame.f_back
    if frame is None:
        return "applied at an unknown place"
    return f"applied at {os.path.basename(frame.f_code.co_filename)}:{frame.f_lineno} in {frame.f_code.co_name}"


class _Checker:
    """The hook ``Tensor._apply`` and backward call after each op while anomaly mode is on."""

    def forward(self, fn, inputs, out):
        fn.anomaly_site = _site()
        arrays = [t.data if t is not None else None for t in inputs]
        for t in inputs:  # a NaN nobody made in this mode: a parameter, the data, an older tensor
            if t is not None and _has_nan(t.data):
                raise AnomalyError(f"{fn.name}.forward got {_bad(t.data)} in an input of shape "
                                   f"{tuple(t.data.shape)} that no op made in anomaly mode (a parameter, "
                                   f"the data, or a tensor made before); op {fn.anomaly_site}")
        bad = _bad(out)
        if bad is None:
            return
        inputs_bad = [b for b in map(_bad, arrays) if b is not None]
        if not inputs_bad and fn.name in WRITES_INF and not _has_nan(out):
            return  # -inf written by a mask on purpose
        if inputs_bad and not _has_nan(out):
            return  # infinities passed on, not made here
        held = "finite inputs" if not inputs_bad else "inputs holding inf but no nan"
        largest = max((float(abs(a).max()) for a in arrays if a is not None and a.size and a.dtype.kind == "f"
                       and _bad(a) is None), default=0.0)
        raise AnomalyError(f"{fn.name}.forward produced {bad} from {held} of {_shapes(arrays)} "
                           f"(largest finite input magnitude {largest:.3g}); output shape {tuple(out.shape)}; "
                           f"op {fn.anomaly_site}")

    def backward(self, fn, g, gxs):
        site = getattr(fn, "anomaly_site", "applied outside anomaly mode")
        for p, gx in zip(fn.parents, gxs):
            if hasattr(gx, "dense"):  # a gradient kept as the values of one slice: check those
                gx = gx.values
            bad = None if p is None or not p.requires_grad else _bad(gx)
            if bad is None:
                continue
            if _bad(g) is not None:
                raise AnomalyError(f"the gradient reaching {fn.name}.backward (output shape {tuple(g.shape)}) "
                                   f"is already {_bad(g)}: passed to backward(), or summed from several "
                                   f"uses until it overflowed; op {site}")
            arrays = [q.data if q is not None else None for q in fn.parents]
            held = " holding inf" if any(_bad(a) is not None for a in arrays) else ""
            raise AnomalyError(f"{fn.name}.backward produced {bad} in the gradient of an input of shape "
                               f"{tuple(p.shape)} from a finite gradient of shape {tuple(g.shape)}; "
                               f"forward inputs{held} of {_shapes(arrays)}; op {site}")


_CHECKER = _Checker()


@contextlib.contextmanager
def detect_anomaly():
    """Check every op's forward output and backward gradients inside the block (slow: debugging only).

        >>> with detect_anomaly():           # doctest: +SKIP
        ...     loss = model(x, y)[1]
        ...     loss.backward()
    """
    handle = _tensor.add_op_hook(_CHECKER)
    try:
        yield
    finally:
        handle.remove()
