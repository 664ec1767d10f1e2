"""Version records: how backward refuses a value that was changed in place after an op used it.

A counter counts the in-place changes of the whole process. Each tensor has a version box
``[written_at, rebased_at]``, shared with its views: a write to its array stamps ``written_at``,
and a recorded in-place op, which makes the tensor the output of a new op, gives it a new box
with both stamps. An op remembers the count when it was recorded (``recorded_at``); backward
compares, as PyTorch's version counters do.
"""
from ..backend import is_array

_writes = 0


def now():
    """How many in-place changes this process has made so far."""
    return _writes


def tick():
    """Count one in-place change; return the new count."""
    global _writes
    _writes += 1
    return _writes


def share(t, inputs):
    """A view of an input's array shares the input's version box: a write to one is a write
    to both, so ops that saved either see it."""
    root = _root(t._data)
    for p in inputs:
        if p is not None and _root(p._data) is root:
            t._version = p._version
            return


def check(t, ctx):
    """Refuse to backpropagate through an op when, since it was recorded, an input became the
    output of a recorded in-place op (its gradient would flow to the wrong place), or the op's
    input or output was written in place while the op keeps that array for its backward."""
    for i, p in enumerate((t,) + tuple(ctx.parents)):
        if p is None:
            continue
        what = "its output" if i == 0 else f"its input {i - 1}"
        written_at, rebased_at = p._version
        if rebased_at > ctx.recorded_at:
            raise RuntimeError(
                f"backward through {ctx.name}: {what} (shape {p.shape}) was changed in place by a "
                f"recorded op after {ctx.name} used it; write `y = y + ...` instead of `y += ...` "
                f"for a tensor that is already in use")
        if written_at > ctx.recorded_at and _keeps(ctx, p._data):
            raise RuntimeError(
                f"backward through {ctx.name}: {what} (shape {p.shape}) was changed in place after "
                f"{ctx.name} saved it for its backward, so the gradient would use the wrong value; "
                f"change it in place only after backward(), or write `y = y + ...`")


def _root(array):
    while getattr(array, "base", None) is not None:
        array = array.base
    return array


def _keeps(ctx, array):
    """True when the op holds ``array``, or a view of its memory, among its attributes."""
    root, todo = _root(array), list(vars(ctx).values())
    while todo:
        value = todo.pop()
        if isinstance(value, (tuple, list)):
            todo.extend(value)
        elif isinstance(value, dict):
            todo.extend(value.values())
        elif is_array(value) and _root(value) is root:
            return True
    return False
