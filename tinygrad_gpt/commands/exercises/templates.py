'''The workbooks: one runnable Python file per exercise, written by ``exercise start NAME``.

Each defines the same name as the project's rule, so a workbook whose whole text is
``from tinygrad_gpt.rules import LayerNorm`` is a correct one. ``{check}`` becomes the command
that grades it.
'''

HEAD = '''"""Exercise {name}: {title}

{body}
Read: docs/{page}, section "{section}".
Grade it: {check}
"""
'''

FUNCTION = HEAD + '''import numpy as np

from tinygrad_gpt.function import Function


class {cls}(Function):
    def forward(self, {args}):
        xp = np  # on a GPU it would be cupy: the project takes xp from the arrays
        raise NotImplementedError("write {cls}.forward: {forward}")

    def backward(self, g):
        raise NotImplementedError("write {cls}.backward: {backward}")
'''

BACKWARD = HEAD + '''

def topo_order(root):
    """Every tensor that requires a gradient, each after all the tensors it was made from."""
    raise NotImplementedError("write topo_order: a depth-first walk with a stack of your own, "
                              "appending a tensor once all its parents are appended")


def backward(root):
    """Fill .grad of every leaf reached from the one-element tensor ``root``."""
    raise NotImplementedError("write backward: start from d root/d root = 1, walk topo_order(root) "
                              "in reverse, call t._ctx.backward(g) and add each gradient into its parent's")
'''

BROADCASTING = HEAD + '''

def sum_to(g, shape):
    """Sum ``g`` down to ``shape``, the shape of an input that broadcasting copied up to g.shape."""
    raise NotImplementedError("write sum_to: sum over the leading axes broadcasting added, and "
                              "(keeping them) over the axes where shape has 1 and g does not")
'''

ADAMW = HEAD + '''from tinygrad_gpt.optim import Optimizer


class AdamW(Optimizer):
    state_keys = ("exp_avg", "exp_avg_sq")

    def __init__(self, params, lr=1e-3, betas=(0.9, 0.999), eps=1e-8, weight_decay=1e-2):
        super().__init__(params, dict(lr=lr, betas=tuple(betas), eps=eps, weight_decay=weight_decay))

    def _update(self, p, g, group, state):
        """Update p.data in place from its gradient g; ``state`` is this parameter's dict,
        state["step"] starts at 0; keep m and v in state["exp_avg"], state["exp_avg_sq"]."""
        raise NotImplementedError("write AdamW._update: the moments m and v, their bias correction, "
                                  "the decoupled weight decay, then the step")
'''

TEXTS = {"function": FUNCTION, "backward": BACKWARD, "broadcasting": BROADCASTING, "adamw": ADAMW}


def render(exercise, check):
    """The workbook text for ``exercise``."""
    fields = dict(name=exercise.name, title=exercise.title, body=exercise.body, page=exercise.page,
                  section=exercise.section, check=check, cls=exercise.attr, args=exercise.args,
                  forward=exercise.todo[0], backward=exercise.todo[1])
    return TEXTS[exercise.template].format(**fields)
