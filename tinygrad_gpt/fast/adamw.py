"""``optim.AdamW`` for a whole parameter group at once: flat state, in place, or compiled.

Like PyTorch's multi-tensor ("foreach") AdamW, ``step`` updates a whole parameter group at once:
each group's m and v live in one flat array (each parameter's state is a view of its slice), and
the gradients are gathered into one, so the dozen passes of the update are a dozen calls per
group, not per parameter (most parameters of a GPT are small biases and norm weights, where the
call costs more than the arithmetic). The passes write in place (``out=``) and run in
cache-sized chunks. With the optional numba kernels, each parameter's whole step is instead one
compiled pass over its gradient, m, v and values, with the same roundings (``kernels.adamw``).

The arithmetic is PyTorch's order of operations, which rounds a little differently from the
textbook form of the rule; tests/test_fast.py holds this class to ``optim.AdamW``.
"""
import math

import numpy as np

from .. import optim
from ..backend import get_array_module
from . import kernels
from .chunks import for_chunks


class AdamW(optim.AdamW):
    """``optim.AdamW``, group by group: the same update, fast."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self._flat = {}  # group index -> (parameter ids, flat m, v)
        self._scratch_arrays = {}  # group index -> flat (gradients, update), the NumPy path's

    def step(self):
        for i, group in enumerate(self.param_groups):
            params = [p for p in group["params"] if p.grad is not None]
            states = [self.state.setdefault(id(p), {"step": 0}) for p in params]
            if (len(params) > 1 and len({s["step"] for s in states}) == 1
                    and len({(p.dtype, p.device) for p in params}) == 1):
                self._update_group(i, group, params, states)
            else:  # one parameter, or parameters at different steps or dtypes: one at a time
                for p, state in zip(params, states):
                    self._update_one(p, group, state)

    def _update_one(self, p, group, state):
        xp = get_array_module(p.data)
        if "exp_avg" not in state:
            state["exp_avg"] = xp.zeros_like(p.data)
            state["exp_avg_sq"] = xp.zeros_like(p.data)
        state["step"] += 1
        update = xp.empty_like(p.grad)
        _adam(p.grad, state["exp_avg"], state["exp_avg_sq"], update, group, state["step"])
        _apply_update(p, update, group)

    def _update_group(self, index, group, params, states):
        xp = get_array_module(params[0].data)
        m, v = self._flat_arrays(index, params, states)
        for state in states:
            state["step"] += 1
        t = states[0]["step"]
        if (kernels.usable(m, v, *(a for p in params for a in (p.data, p.grad)))
                and all(p.data.flags.writeable for p in params)):
            # the same steps, each parameter in one compiled pass (kernels.py): its gradient
            # read in place, its Adam step, weight decay and update written at once
            lr, (b1, b2), eps = group["lr"], group["betas"], group["eps"]
            c = np.array([b1, 1 - b1, b2, 1 - b2, 1 / math.sqrt(1 - b2 ** t), eps, lr / (1 - b1 ** t),
                          1 - lr * group["weight_decay"]], dtype=m.dtype)
            start = 0
            for p in params:
                end = start + p.data.size
                kernels.adamw(p.grad.reshape(-1), m[start:end], v[start:end], p.data.reshape(-1), c)
                start = end
            return
        g, update = self._scratch(index, m)
        xp.concatenate([p.grad.reshape(-1) for p in params], out=g)  # all gradients, flat
        for_chunks(lambda s: _adam(g[s], m[s], v[s], update[s], group, t), g.size, g)
        start = 0
        for p in params:
            _apply_update(p, update[start:start + p.data.size].reshape(p.shape), group)
            start += p.data.size

    def _scratch(self, index, m):
        """Flat arrays like m for the NumPy path's gradients and update, made once per group (as
        m and v are, below)."""
        scratch = self._scratch_arrays.get(index)
        if scratch is None or scratch[0].shape != m.shape or scratch[0].dtype != m.dtype:
            xp = get_array_module(m)
            scratch = self._scratch_arrays[index] = (xp.empty_like(m), xp.empty_like(m))
        return scratch

    def _flat_arrays(self, index, params, states):
        """The group's flat m and v.

        They are made when the group's parameters change or a state was replaced (as
        load_state_dict does), from the states' arrays if there are any, and kept:
        arrays this large made and freed every step would let the allocator hand the freed
        memory back to the system, to be faulted in again at the next step.
        """
        ids = [id(p) for p in params]
        cached = self._flat.get(index)
        if cached is not None and cached[0] == ids and all(
                state.get(key) is not None and state[key].base is flat
                for state in states for key, flat in zip(self.state_keys, cached[1:3])):
            return cached[1:]
        xp = get_array_module(params[0].data)
        total = sum(p.data.size for p in params)
        m = xp.zeros(total, dtype=params[0].dtype)
        v = xp.zeros(total, dtype=params[0].dtype)
        start = 0
        for p, state in zip(params, states):
            n = p.data.size
            for key, flat in zip(self.state_keys, (m, v)):
                view = flat[start:start + n].reshape(p.shape)
                if key in state:
                    view[...] = state[key]
                state[key] = view
            start += n
        self._flat[index] = (ids, m, v)
        return m, v


def _adam(g, m, v, update, group, t):
    """Advance m and v by one step of g, in place, and write Adam's step into ``update``."""
    xp = get_array_module(g)
    lr, (b1, b2), eps = group["lr"], group["betas"], group["eps"]
    xp.multiply(g, 1 - b1, out=update)  # ``update`` is the scratch array until the end
    m *= b1                           # m = b1 m + (1 - b1) g
    m += update
    xp.multiply(g, g, out=update)
    update *= 1 - b2
    v *= b2                           # v = b2 v + (1 - b2) g^2
    v += update
    xp.sqrt(v, out=update)            # denom = sqrt(v) / sqrt(1 - b2^t) + eps
    update *= 1 / math.sqrt(1 - b2 ** t)
    update += eps
    xp.divide(m, update, out=update)  # lr / (1 - b1^t) * m / denom
    update *= lr / (1 - b1 ** t)


def _apply_update(p, update, group):
    """p *= 1 - lr * wd (decoupled weight decay), then p -= update."""
    if group["weight_decay"]:
        p.data *= 1 - group["lr"] * group["weight_decay"]
    p.data -= update
