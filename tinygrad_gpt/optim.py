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

    def zero_grad(self):
        for p in self._params():
            p.grad = None

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
        params = self._params()
        groups = sd.get("param_groups", [])
        if [len(g["params"]) for g in groups] != [len(g["params"]) for g in self.param_groups]:
            raise ValueError(f"{type(self).__name__}.load_state_dict: parameter groups do not match "
                             f"(saved sizes {[len(g['params']) for g in groups]}, "
                             f"these {[len(g['params']) for g in self.param_groups]})")
        new_state = {}
        for i, s in sd.get("state", {}).items():
            i = int(i)
            if not 0 <= i < len(params):
                raise ValueError(f"{type(self).__name__}.load_state_dict: state for unknown parameter {i}")
            p = params[i]
            entry = {"step": int(s.get("step", 0))}
            for key in self.state_keys:
                if key in s:
                    value = np.asarray(to_numpy(s[key]))
                    if value.shape != p.shape:
                        raise ValueError(f"{type(self).__name__}.load_state_dict: {key} of parameter {i} "
                                         f"has shape {value.shape}, expected {p.shape}")
                    entry[key] = to_device(value.astype(p.dtype), p.device)
            new_state[id(p)] = entry
        for group, saved in zip(self.param_groups, groups):
            group.update({k: (tuple(v) if isinstance(v, list) else v)
                          for k, v in saved.items() if k != "params"})
        self.state = new_state


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
    """Adam with decoupled weight decay (Loshchilov & Hutter), matching torch.optim.AdamW.

    p *= 1 - lr * wd;  m = b1 m + (1 - b1) g;  v = b2 v + (1 - b2) g^2;
    p -= lr / (1 - b1^t) * m / (sqrt(v) / sqrt(1 - b2^t) + eps)
    """

    state_keys = ("exp_avg", "exp_avg_sq")

    def __init__(self, params, lr=1e-3, betas=(0.9, 0.999), eps=1e-8, weight_decay=1e-2):
        super().__init__(params, dict(lr=lr, betas=tuple(betas), eps=eps, weight_decay=weight_decay))

    def _update(self, p, g, group, state):
        xp = get_array_module(p.data)
        lr, (b1, b2), eps, wd = group["lr"], group["betas"], group["eps"], group["weight_decay"]
        if "exp_avg" not in state:
            state["exp_avg"] = xp.zeros_like(p.data)
            state["exp_avg_sq"] = xp.zeros_like(p.data)
        m, v = state["exp_avg"], state["exp_avg_sq"]
        state["step"] += 1
        t = state["step"]
        if wd:
            p.data *= 1 - lr * wd
        tmp = xp.empty_like(g)        # one scratch array, reused below
        xp.multiply(g, 1 - b1, out=tmp)
        m *= b1                       # m = b1 m + (1 - b1) g
        m += tmp
        xp.multiply(g, g, out=tmp)
        tmp *= 1 - b2
        v *= b2                       # v = b2 v + (1 - b2) g^2
        v += tmp
        xp.sqrt(v, out=tmp)           # denom = sqrt(v) / sqrt(1 - b2^t) + eps
        tmp *= 1 / math.sqrt(1 - b2 ** t)
        tmp += eps
        xp.divide(m, tmp, out=tmp)    # p -= lr / (1 - b1^t) * m / denom
        tmp *= lr / (1 - b1 ** t)
        p.data -= tmp


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
