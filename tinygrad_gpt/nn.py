"""Modules: containers of parameters, and the layers a GPT is built from.

A ``Module`` finds its parameters by walking its attributes: every
``Parameter`` and every sub-``Module`` (in the order they were assigned), so
names come out dotted, as in PyTorch: ``h.0.attn.c_attn.weight``.

    >>> layer = Linear(3, 2)
    >>> [name for name, _ in layer.named_parameters()]
    ['weight', 'bias']
    >>> layer(Tensor([[1.0, 2.0, 3.0]])).shape
    (1, 2)
"""
import math

import numpy as np

from . import backend, functional as F
from .backend import to_numpy
from .tensor import Tensor


class Parameter(Tensor):
    """A Tensor that a Module owns and an optimizer updates (requires grad by default)."""

    __slots__ = ()

    def __init__(self, data, requires_grad=True, device=None, dtype=None):
        super().__init__(data, requires_grad=requires_grad, device=device, dtype=dtype)


def _init(shape, init=True, std=None, bound=None, value=None):
    """A float32 Parameter drawn from the global generator: normal(0, std), uniform(+-bound), or a
    constant. With ``init=False`` it is a placeholder on the host instead, a read-only broadcast zero
    that holds no memory and draws no random numbers, for a module whose values are assigned next."""
    if not init:
        return Parameter(np.broadcast_to(np.zeros((), np.float32), shape), device="cpu")
    if value is not None:
        return Parameter(np.full(shape, value, dtype=np.float32))
    if std is not None:
        return Parameter((backend.rng().standard_normal(shape) * std).astype(np.float32))
    return Parameter(backend.rng().uniform(-bound, bound, shape).astype(np.float32))


class Module:
    """Base class of layers and models."""

    training = True

    def forward(self, *args, **kwargs):
        raise NotImplementedError

    def __call__(self, *args, **kwargs):
        return self.forward(*args, **kwargs)

    def children(self):
        """(name, sub-module) pairs, in assignment order."""
        return [(k, v) for k, v in vars(self).items() if isinstance(v, Module)]

    def named_parameters(self, prefix=""):
        """(dotted name, Parameter) pairs; a parameter shared by two modules appears once."""
        seen, out = set(), []
        self._collect(prefix, seen, out)
        return out

    def _collect(self, prefix, seen, out):
        for name, value in vars(self).items():
            if isinstance(value, Parameter) and id(value) not in seen:
                seen.add(id(value))
                out.append((prefix + name, value))
            elif isinstance(value, Module):
                value._collect(f"{prefix}{name}.", seen, out)

    def parameters(self):
        return [p for _, p in self.named_parameters()]

    def modules(self):
        """This module and every module inside it."""
        out = [self]
        for _, child in self.children():
            out.extend(child.modules())
        return out

    def train(self, mode=True):
        for m in self.modules():
            m.training = mode
        return self

    def eval(self):
        return self.train(False)

    def zero_grad(self):
        for p in self.parameters():
            p.grad = None

    def to(self, device=None, dtype=None):
        """Move (and/or cast) every parameter in place; returns self."""
        if device is not None:
            backend.require_device(device)
        for p in self.parameters():
            data = p.data if dtype is None else p.data.astype(dtype)
            p.data = backend.to_device(data, device) if device is not None else data
            p.grad = None
        return self

    def state_dict(self):
        """Parameter name -> host NumPy array (a copy), in the module's own dtype."""
        return {name: to_numpy(p.data).copy() for name, p in self.named_parameters()}

    def load_state_dict(self, state_dict):
        """Copy values in, keeping each parameter's dtype and device.

        Every key and shape is checked before anything changes, so a failed load
        leaves the module as it was.
        """
        params = dict(self.named_parameters())
        state_dict = {k: v.data if isinstance(v, Tensor) else v if backend.is_array(v) else np.asarray(v)
                      for k, v in state_dict.items()}
        missing = sorted(set(params) - set(state_dict))
        unexpected = sorted(set(state_dict) - set(params))
        problems = []
        if missing:
            problems.append(f"missing keys: {', '.join(missing)}")
        if unexpected:
            problems.append(f"unexpected keys: {', '.join(unexpected)}")
        for name in sorted(set(params) & set(state_dict)):
            value = state_dict[name]
            shape = tuple(value.shape)
            if shape != params[name].shape:
                problems.append(f"shape mismatch for {name}: expected {params[name].shape}, got {shape}")
            elif getattr(value, "dtype", np.float32).kind not in "fiu":
                problems.append(f"{name} has non-numeric dtype {value.dtype}")
        if problems:
            raise ValueError(f"load_state_dict ({type(self).__name__}): " + "; ".join(problems))
        for name, p in params.items():
            value = state_dict[name]
            value = backend.to_device(to_numpy(value).astype(p.dtype), p.device)
            p.data = value
            p.grad = None
        return self

    def num_parameters(self):
        return sum(p.numel() for p in self.parameters())


class ModuleList(Module):
    """A list of modules whose parameters are named by index: ``0.weight``, ``1.weight``."""

    def __init__(self, modules=()):
        self._modules = list(modules)

    def children(self):
        return [(str(i), m) for i, m in enumerate(self._modules)]

    def _collect(self, prefix, seen, out):
        for i, m in enumerate(self._modules):
            m._collect(f"{prefix}{i}.", seen, out)

    def __getitem__(self, i):
        return self._modules[i]

    def __len__(self):
        return len(self._modules)

    def __iter__(self):
        return iter(self._modules)


class Linear(Module):
    """y = x @ W + b with W of shape (in, out), the layout of GPT-2's checkpoints.

    ``init=False`` (here and in the other layers) makes placeholder parameters (``_init``)."""

    def __init__(self, in_features, out_features, bias=True, init=True):
        bound = 1 / math.sqrt(in_features)  # PyTorch's default init range
        self.weight = _init((in_features, out_features), init, bound=bound)
        self.bias = _init((out_features,), init, bound=bound) if bias else None

    def forward(self, x, activation=None):
        """``activation="gelu"`` gives gelu(x @ W + b) in one fused op (F.linear)."""
        return F.linear(x, self.weight, self.bias, activation=activation)


class Embedding(Module):
    """A table of ``num`` vectors of size ``dim``, looked up by integer id."""

    def __init__(self, num, dim, init=True):
        self.weight = _init((num, dim), init, std=1.0)

    def forward(self, idx):
        return F.embedding(idx, self.weight)


class LayerNorm(Module):
    """Layer norm over the last axis with a learned scale and (optional) shift."""

    def __init__(self, n, bias=True, eps=1e-5, init=True):
        self.eps = eps
        self.weight = _init((n,), init, value=1.0)
        self.bias = _init((n,), init, value=0.0) if bias else None

    def forward(self, x):
        return F.layer_norm(x, self.weight, self.bias, self.eps)


class Dropout(Module):
    """Zero elements with probability p while training; the identity in eval mode."""

    def __init__(self, p=0.0):
        if not 0 <= p < 1:
            raise ValueError(f"Dropout: p must be in [0, 1), got {p}")
        self.p = p

    def forward(self, x):
        return F.dropout(x, self.p, self.training)
