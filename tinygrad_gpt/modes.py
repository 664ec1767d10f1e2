"""The mode: which implementation runs for each op, and how backward adds up gradients.

There are three, like nanoGPT's ``if self.flash: ... else: # manual``, but for every op:

- ``"composed"``: each fused op runs as its composed twin in functional.py (``softmax_composed``
  and friends), built from primitive ops only; the engine differentiates primitives alone;
- ``"rules"``: the hand-derived rules of rules.py and ops.py, plain array code;
- ``"fast"`` (the default): the fast layer (``fast/``) in place of the rules it speeds up, and
  gradients added in place.

All three compute the same values and gradients (tests/test_modes.py checks it). ``Tensor._apply``
asks the current mode which implementation to run; nothing else chooses. This is the one module
that knows both the rules and the fast layer.

    >>> import numpy as np
    >>> from tinygrad_gpt import Tensor
    >>> x = Tensor([[1.0, 2.0, 3.0]])
    >>> with mode("rules"):
    ...     np.round(x.softmax(-1).numpy(), 3)
    array([[0.09 , 0.245, 0.665]], dtype=float32)
    >>> get_mode()
    'fast'
"""
import contextlib
import warnings

from . import fast, ops, optim, rules
from .fast import workspace
from .function import Function, Gradients


class Mode:
    """One way of running the ops.

    ``ops`` maps an op's rule (a Function class) to what runs in its place: another Function
    class, or a function of Tensors built from primitive ops (a composed twin). An op that is
    not in ``ops`` runs its rule. ``gradients`` is the dict class that adds up gradients in
    backward (``function.Gradients``, or the fast layer's in-place one).

    A mode with one rule swapped for your own is ``mode.replacing({rules.LayerNorm: MyLayerNorm})``.
    """

    def __init__(self, name, ops=None, gradients=Gradients):
        self.name, self.ops, self.gradients = name, dict(ops or {}), gradients

    def implementation(self, rule, arrays=None, kwargs=None):
        """What runs for ``rule``. Given the input arrays, a fast op may pick a variant for
        them (its ``choose``), as the fast attention does for long sequences."""
        impl = self.ops.get(rule, rule)
        choose = getattr(impl, "choose", None) if arrays is not None else None
        return impl if choose is None else choose(arrays, kwargs or {})

    def replacing(self, ops, name=None):
        """A copy of this mode with some implementations replaced: ``{rule: implementation}``."""
        return Mode(name or self.name, {**self.ops, **ops}, self.gradients)

    def __repr__(self):
        return f"Mode({self.name!r})"


def is_function(impl):
    """True for a Function class, False for a composed twin (a function of Tensors)."""
    return isinstance(impl, type) and issubclass(impl, Function)


def _composed_ops():
    """Each fused op and its composed twin, from functional.py. functional.py is built on
    Tensor, which reads this module, so it is imported here, on the first use of the mode."""
    from . import functional as F
    return {ops.Gelu: F.gelu_composed, rules.Linear: F.linear_composed, rules.Softmax: F.softmax_composed,
            rules.LogSoftmax: F.log_softmax_composed, rules.CrossEntropy: F.cross_entropy_composed,
            rules.LayerNorm: F.layer_norm_composed,
            rules.Attention: F.scaled_dot_product_attention_composed}


RULES = Mode("rules")
FAST = Mode("fast", {**fast.OPS, optim.AdamW: fast.AdamW}, fast.InPlaceGradients)
MODES = ("composed", "rules", "fast")
_modes = {"rules": RULES, "fast": FAST}
_current = FAST


def _get(name):
    if isinstance(name, Mode):
        return name
    if name not in MODES:
        raise ValueError(f"mode: unknown mode {name!r}, expected one of {', '.join(MODES)}")
    if name == "composed" and name not in _modes:
        _modes[name] = Mode("composed", _composed_ops())
    return _modes[name]


def current():
    """The Mode the ops run in now."""
    return _current


def get_mode():
    """The current mode's name: "composed", "rules" or "fast"."""
    return _current.name


def _activate(m):
    global _current
    previous, _current = _current, m
    return previous


class set_mode:
    """Switch the mode for the rest of the program: ``set_mode("rules")``. Also a context manager
    that switches back at the end, as ``torch.set_grad_enabled`` is: ``with set_mode("rules"):``."""

    def __init__(self, name):
        self.previous = _activate(_get(name))

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        _activate(self.previous)
        return False


class mode(contextlib.ContextDecorator):
    """Run the ops in ``name`` mode ("composed", "rules", "fast", or a Mode) inside a ``with``
    block, or in a function decorated with ``@mode(name)``. Run backward in the mode of its
    forward. ``mode(name)`` alone changes nothing (it warns when it is dropped unused); to switch
    for good, call ``set_mode(name)``.

        >>> with mode("composed"):
        ...     get_mode()
        'composed'
    """

    used = True  # until __init__ has checked the name

    def __init__(self, name):
        self.mode = _get(name)
        self.used = False

    def __call__(self, func):  # used as a decorator
        self.used = True
        return super().__call__(func)

    def _recreate_cm(self):  # a fresh object per decorated call, so recursion restores correctly
        fresh = type(self)(self.mode)
        fresh.used = True
        return fresh

    def __enter__(self):
        self.used = True
        self.previous = _activate(self.mode)
        return self

    def __exit__(self, *exc):
        _activate(self.previous)
        return False

    def __repr__(self):
        state = "active" if _current is self.mode and self.used else "not active"
        return (f"<mode {self.mode.name!r}, {state}: use `with mode({self.mode.name!r}):` "
                f"or set_mode({self.mode.name!r})>")

    def __del__(self):
        if not self.used:
            warnings.warn(f"mode({self.mode.name!r}) was made but never entered, so nothing changed: "
                          f"write `with mode({self.mode.name!r}):` or call set_mode({self.mode.name!r})",
                          RuntimeWarning, stacklevel=2)


def release_buffers():
    """Let go of the fast layer's idle buffers (``fast.workspace``), whatever the mode: the
    arrays it keeps from one training step to the next. Writing a checkpoint calls this, so
    that its copies reuse that memory; the next step makes the buffers again."""
    workspace.release()
