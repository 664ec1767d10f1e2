"""Optimizers (SGD, AdamW), gradient clipping, and the cosine learning-rate schedule.

Parameters are given as a list, or as a list of groups (dicts with ``params`` and
per-group options such as ``weight_decay``), as in PyTorch. Updates run in place
on the parameters' arrays, on whatever device they live.

    >>> from tinygrad_gpt.nn import Parameter
    >>> w = Parameter([1.0, -2.0])
    >>> opt = SGD([w], lr=0.1)
    >>> (w * w).sum().backward(); opt.step()
    >>> w.numpy()
    array([ 0.8, -1.6], dtype=float32)
"""
import math

import numpy as np

from .backend import get_array_module, to_device, to_numpy

MAX_STEP = 2 ** 53  # step counts beyond this are not exact as floats, and no run makes them


class Optimizer:
    """Base class: parameter groups, per-parameter state, and (de)serialisation."""

    state_keys = ()  # names of the per-parameter arrays kept in ``state``

    def __init__(self, params, defaults):
        params = list(params)
        if not params:
            raise ValueError(f"{type(self).__name__}: got an empty parameter list")
        groups = params if isinstance(params[0], dict) else [{"params": params}]
        self.defaults = defaults
        self.param_groups = []
        for group in groups:
            unknown = set(group) - set(defaults) - {"params"}
            if unknown:
                raise ValueError(f"{type(self).__name__}: unknown group options {sorted(unknown)}")
            self.param_groups.append({**defaults, **group, "params": list(group["params"])})
        self.state = {}  # id(param) -> {"step": int, <state_keys>: arrays}

    def _params(self):
        return [p for group in self.param_groups for p in group["params"]]

    def zero_grad(self, set_to_none=True):
        """Forget the gradients (as PyTorch: ``set_to_none=False`` writes zeros into them instead)."""
        for p in self._params():
            if set_to_none or p.grad is None:
                p.grad = None
            else:
                p.grad[...] = 0

    def step(self):
        for group in self.param_groups:
            for p in group["params"]:
                if p.grad is not None:
                    self._update(p, p.grad, group, self.state.setdefault(id(p), {"step": 0}))

    def _update(self, p, g, group, state):
        raise NotImplementedError

    def state_dict(self):
        """{"state": {index: {"step", arrays...}}, "param_groups": [options + param indices]}."""
        index = {id(p): i for i, p in enumerate(self._params())}
        state = {index[k]: {n: (to_numpy(v).copy() if n != "step" else v) for n, v in s.items()}
                 for k, s in self.state.items() if k in index}
        groups, start = [], 0
        for group in self.param_groups:
            n = len(group["params"])
            groups.append({**{k: v for k, v in group.items() if k != "params"},
                           "params": list(range(start, start + n))})
            start += n
        return {"state": state, "param_groups": groups}

    def load_state_dict(self, sd):
        """Restore from ``state_dict()``; everything is checked before anything changes."""
        name = f"{type(self).__name__}.load_state_dict"
        params = self._params()
        if not isinstance(sd, dict) or not isinstance(sd.get("param_groups", []), list):
            raise ValueError(f"{name}: expected a dict with a list of param_groups")
        if sd.get("type", type(self).__name__) != type(self).__name__:
            raise ValueError(f"{name}: the state is of a {str(sd['type'])[:40]} optimizer")
        groups = sd.get("param_groups", [])
        sizes = [len(g["params"]) if isinstance(g, dict) and isinstance(g.get("params"), list) else None
                 for g in groups]
        if sizes != [len(g["params"]) for g in self.param_groups]:
            raise ValueError(f"{name}: param_groups do not match this optimizer's "
                             f"(saved sizes {sizes}, these {[len(g['params']) for g in self.param_groups]})")
        options = [self._check_options(saved, i) for i, saved in enumerate(groups)]
        new_state = {}
        state = sd.get("state", {})
        if not isinstance(state, dict):
            raise ValueError(f"{name}: state must be a dict of parameter index -> state")
        for i, s in state.items():
            if isinstance(i, bool) or not isinstance(i, (int, str)) or not str(i).isascii() \
                    or not str(i).isdigit() or not int(i) < len(params) or not isinstance(s, dict):
                raise ValueError(f"{name}: state for unknown parameter {str(i)[:20]}")
            i = int(i)
            p = params[i]
            step = s.get("step", 0)
            if isinstance(step, bool) or not isinstance(step, (int, np.integer)) or not 0 <= step <= MAX_STEP:
                raise ValueError(f"{name}: step of parameter {i} must be an integer in [0, 2**53], got {step!r}")
            entry = {"step": int(step)}
            for key in self.state_keys:
                if key in s:
                    value = np.asarray(to_numpy(s[key]))
                    if value.shape != p.shape:
                        raise ValueError(f"{name}: {key} of parameter {i} "
                                         f"has shape {value.shape}, expected {p.shape}")
                    if value.dtype.kind != "f" or not np.isfinite(value).all() or \
                            (key in self.nonnegative_keys and (value < 0).any()):
                        raise ValueError(f"{name}: {key} of parameter {i} must hold finite floats"
                                         f"{' >= 0' if key in self.nonnegative_keys else ''}")
                    entry[key] = to_device(value.astype(p.dtype), p.device)
            new_state[id(p)] = entry
        for group, saved in zip(self.param_groups, options):
            group.update(saved)
        self.state = new_state

    nonnegative_keys = ()  # state arrays that can never be negative (AdamW's second moment)

    def _check_options(self, saved, index):
        """A saved group's options, typed as this optimizer's defaults, or ValueError naming the option."""
        out = {}
        for key, value in saved.items():
            if key == "params":
                continue
            where = f"{type(self).__name__}.load_state_dict: param_groups[{index}] {str(key)[:40]!r}"
            if key not in self.defaults:
                raise ValueError(f"{where} is not an option of {type(self).__name__}")
            default = self.defaults[key]
            values = list(value) if isinstance(value, (list, tuple)) else [value]
            if (isinstance(value, (list, tuple)) != isinstance(default, tuple)
                    or isinstance(default, tuple) and len(values) != len(default)
                    or not all(isinstance(v, (int, float, np.integer, np.floating)) and not isinstance(v, bool)
                               and math.isfinite(v) and v >= 0 for v in values)):
                shape = f"{len(default)} numbers" if isinstance(default, tuple) else "a number"
                raise ValueError(f"{where} must be {shape} >= 0, got {str(value)[:40]}")
            if key == "betas" and not all(v < 1 for v in values):
                raise ValueError(f"{where} must be in [0, 1), got {values}")
            out[key] = tuple(values) if isinstance(default, tuple) else value
        return out


class SGD(Optimizer):
    """p -= lr * (g + weight_decay * p), with optional (heavy-ball) momentum as in PyTorch."""

    state_keys = ("momentum_buffer",)

    def __init__(self, params, lr=1e-2, momentum=0.0, weight_decay=0.0):
        super().__init__(params, dict(lr=lr, momentum=momentum, weight_decay=weight_decay))

    def _update(self, p, g, group, state):
        if group["weight_decay"]:
            g = g + group["weight_decay"] * p.data
        if group["momentum"]:
            buf = state.get("momentum_buffer")
            if buf is None:
                buf = state["momentum_buffer"] = g.copy()
            else:  # buf = momentum * buf + g
                buf *= group["momentum"]
                buf += g
            g = buf
        state["step"] += 1
        p.data -= group["lr"] * g


class AdamW(Optimizer):
    """Adam with decoupled weight decay (Loshchilov & Hutter), as torch.optim.AdamW.

    This is the rule, one parameter at a time, as docs/10-adamw.md derives it. The fast layer's
    ``fast.AdamW`` does the same update a whole parameter group at a time, in place;
    ``GPT.configure_optimizers`` and the train command use it in the "fast" mode.
    """

    state_keys = ("exp_avg", "exp_avg_sq")
    nonnegative_keys = ("exp_avg_sq",)

    def __init__(self, params, lr=1e-3, betas=(0.9, 0.999), eps=1e-8, weight_decay=1e-2):
        super().__init__(params, dict(lr=lr, betas=tuple(betas), eps=eps, weight_decay=weight_decay))

    def _update(self, p, g, group, state):
        xp = get_array_module(p.data)
        lr, (b1, b2), eps, wd = group["lr"], group["betas"], group["eps"], group["weight_decay"]
        if "exp_avg" not in state:
            state["exp_avg"], state["exp_avg_sq"] = xp.zeros_like(p.data), xp.zeros_like(p.data)
        state["step"] = t = state["step"] + 1
        m, v = state["exp_avg"], state["exp_avg_sq"]
        m[...] = b1 * m + (1 - b1) * g          # m: a running mean of the gradient
        v[...] = b2 * v + (1 - b2) * g * g      # v: a running mean of its square
        m_hat = m / (1 - b1 ** t)               # both start at 0: divide out that bias
        v_hat = v / (1 - b2 ** t)
        p.data *= 1 - lr * wd                   # decoupled weight decay: shrink w, apart from g
        p.data -= lr * m_hat / (xp.sqrt(v_hat) + eps)  # the step: about lr in size, per coordinate


def clip_grad_norm_(params, max_norm):
    """Scale all gradients together so their global L2 norm is at most ``max_norm``.

    Returns the norm before clipping, as a Python float.
    """
    grads = [p.grad for p in params if p.grad is not None]
    if not grads:
        return 0.0
    xp = get_array_module(*grads)
    total = float(xp.sqrt(sum(xp.vdot(g.ravel(), g.ravel()) for g in grads)))
    coef = max_norm / (total + 1e-6)
    if coef < 1:
        for g in grads:
            g *= g.dtype.type(coef)
    return total


def cosine_lr(it, learning_rate, warmup_iters, lr_decay_iters, min_lr):
    """nanoGPT's schedule: linear warmup, cosine decay to ``min_lr``, then flat."""
    if it < warmup_iters:
        return learning_rate * (it + 1) / (warmup_iters + 1)
    if it > lr_decay_iters:
        return min_lr
    ratio = (it - warmup_iters) / max(1, lr_decay_iters - warmup_iters)
    coeff = 0.5 * (1.0 + math.cos(math.pi * ratio))  # goes 1 -> 0
    return min_lr + coeff * (learning_rate - min_lr)
