"""``python -m tinygrad_gpt gradcheck``: every differentiable op against central differences.

Each op runs on random float64 inputs with random shapes (broadcasting ones for
the binary ops). For every input the whole Jacobian is built twice, from
backward (``gradcheck.analytic_jacobian``) and from central differences
(``gradcheck.numerical_jacobian``), and every entry must satisfy
``|backward - numerical| <= atol + rtol * |numerical|``; the random-direction
check ``gradcheck.check_grads`` must pass too. A table shows the worst errors.
``--order=2`` checks second derivatives instead: in random directions, the backward of the
recorded backward against central differences of the backward (``gradcheck.second_directional``).

    >>> rows = run_all(GradcheckConfig(cases="tanh,matmul"), print_fn=lambda *a: None)
    >>> [(r.name, r.ok) for r in rows]
    [('tanh', True), ('matmul', True)]
"""
import math
import zlib
from dataclasses import dataclass
from typing import ClassVar, Optional

import numpy as np

from .. import backend, functional as F
from ..gradcheck import analytic_jacobian, check_grads, numerical_jacobian, second_directional
from ..tensor import Tensor
from ..errors import ConfigError, GradcheckFailure


@dataclass
class GradcheckConfig:
    seed: int = 0                   # draws the shapes and values of every case
    cases: Optional[str] = None     # comma-separated case names to run (None: all)
    ops: str = "fast"               # composed | rules | fast: which ops are checked (functional.mode)
    eps: float = 1e-6               # the central-difference step
    atol: float = 1e-7              # absolute tolerance between backward and the differences
    rtol: float = 1e-5              # relative tolerance
    device: str = backend.default_device()  # where the ops run (default: $TINYGRAD_GPT_DEVICE or cpu)
    order: int = 1                  # 1: backward; 2: the backward of the backward (create_graph)

    CHOICES: ClassVar[dict] = {"device": backend.DEVICES, "ops": F.MODES}

    def validate(self):
        for name in ("eps", "atol", "rtol"):
            if not getattr(self, name) > 0 or not math.isfinite(getattr(self, name)):
                raise ConfigError(f"--{name} must be a positive number, got {getattr(self, name)}")
        if self.order not in (1, 2):
            raise ConfigError(f"--order must be 1 or 2, got {self.order}")
        if self.device not in backend.DEVICES:
            raise ConfigError(f"--device must be one of {', '.join(backend.DEVICES)}, got {self.device!r}")
        if self.ops not in F.MODES:
            raise ConfigError(f"--ops must be one of {', '.join(F.MODES)} (--cases picks the cases), "
                              f"got {self.ops!r}")
        unknown = sorted(set(self.selected()) - set(CASES))
        if unknown:
            raise ConfigError(f"--cases: unknown case(s) {', '.join(unknown)}; choose from {', '.join(CASES)}")
        return self

    def selected(self):
        return list(CASES) if self.cases is None else [s.strip() for s in self.cases.split(",") if s.strip()]


# ----------------------------------------------------------------------------- random inputs

def _shape(rng, min_dims=1, max_dims=3, min_side=1):
    """A random shape: 1 to 3 axes of 1 to 4 elements each."""
    return tuple(int(n) for n in rng.integers(min_side, 5, size=rng.integers(min_dims, max_dims + 1)))


def _broadcast_pair(rng):
    """Two shapes that broadcast: y drops leading axes of x and sets some sides to 1 (maybe swapped)."""
    x = _shape(rng, 1, 3)
    y = x[rng.integers(0, len(x)):]
    y = tuple(1 if rng.random() < 0.4 else n for n in y)
    return (y, x) if rng.random() < 0.5 else (x, y)


def _values(rng, shape, low=-2.0, high=2.0):
    return rng.uniform(low, high, size=shape)


def _away_from_zero(rng, shape):
    """|values| in [0.5, 2]: divisors, and relu away from its kink."""
    return _values(rng, shape, 0.5, 2.0) * rng.choice([-1.0, 1.0], size=shape)


def _distinct(rng, shape, gap=0.3):
    """All values at least ``gap`` apart: max and layer norm without ties or zero variance."""
    n = int(np.prod(shape))
    return (rng.permutation(n) * gap + rng.uniform(0, gap / 3, size=n) - n * gap / 2).reshape(shape)


# ----------------------------------------------------------------------------- the cases
# Each case draws its inputs from rng and returns (fn, arrays): fn(*tensors) -> Tensor.

def _binary(op, y_values=_values):
    return lambda rng: (op, [_values(rng, s) if i == 0 else y_values(rng, s)
                             for i, s in enumerate(_broadcast_pair(rng))])


def _unary(op, values=_values):
    return lambda rng: (op, [values(rng, _shape(rng))])


def _reduce(method, values=_values):
    def case(rng):
        shape = _shape(rng)
        axis = int(rng.integers(-len(shape), len(shape))) if rng.random() < 0.7 else None
        keepdims = bool(rng.integers(2))
        return (lambda x: getattr(x, method)(axis=axis, keepdims=keepdims)), [values(rng, shape)]
    return case


def _masked_fill(rng):
    x = _shape(rng)
    mask = rng.random(tuple(1 if rng.random() < 0.4 else n for n in x[rng.integers(0, len(x)):])) < 0.5
    return (lambda t: t.masked_fill(backend.xp_for(t.device).asarray(mask), -1.5)), [_values(rng, x)]


def _transpose(rng):
    shape = _shape(rng, 2, 3, min_side=2)
    axes = tuple(int(a) for a in rng.permutation(len(shape)))
    return (lambda x: x.permute(*axes)), [_values(rng, shape)]


def _getitem_ids(rng):
    shape = _shape(rng, 1, 3)
    ids = rng.integers(0, shape[0], size=5)  # five picks from at most four rows: always a repeat
    return (lambda x: x[ids]), [_values(rng, shape)]


def _cat(rng):
    a, b = _shape(rng, 2, 3, min_side=2), int(rng.integers(1, 4))
    axis = int(rng.integers(len(a)))
    other = a[:axis] + (b,) + a[axis + 1:]
    return (lambda x, y: Tensor.cat([x, y], axis=axis)), [_values(rng, a), _values(rng, other)]


def _matmul(batch_x, batch_y, x_vec=False, y_vec=False):
    def case(rng):
        n, k, m = (int(v) for v in rng.integers(1, 5, size=3))
        x = (k,) if x_vec else batch_x + (n, k)
        y = (k,) if y_vec else batch_y + (k, m)
        return (lambda a, b: a @ b), [_values(rng, x), _values(rng, y)]
    return case


def _cross_entropy(rng):
    N, V = int(rng.integers(2, 6)), int(rng.integers(2, 6))
    targets = rng.integers(0, V, size=N)
    targets[rng.integers(0, N)] = -1  # one ignored row
    return (lambda x: F.cross_entropy(x, targets)), [_values(rng, (N, V), -3, 3)]


def _layer_norm(bias):
    def case(rng):
        shape = _shape(rng, 1, 2) + (int(rng.integers(3, 6)),)
        C = shape[-1]
        arrays = [_distinct(rng, shape), _values(rng, (C,))] + ([_values(rng, (C,))] if bias else [])
        return F.layer_norm, arrays
    return case


def _attention(causal, Tq_less=False, blocked=False):
    def case(rng):
        B, nh, Tk, hs = (int(v) for v in rng.integers(1, 4, size=4))
        Tk += 1
        Tq = int(rng.integers(1, Tk)) if Tq_less else Tk
        shapes = [(B, nh, Tq, hs), (B, nh, Tk, hs), (B, nh, Tk, hs)]
        if blocked:  # blocks of one or two (Tq, Tk) matrices, the last one possibly partial;
            # causal queries in tiles of one or two rows
            block, tile = int(rng.integers(1, 3)), int(rng.integers(1, 3))
            return (lambda q, k, v: F.blocked_attention(q, k, v, causal=causal, block=block,
                                                        tile=tile)), \
                [_values(rng, s) for s in shapes]
        return (lambda q, k, v: F.scaled_dot_product_attention(q, k, v, causal=causal)), \
            [_values(rng, s) for s in shapes]
    return case


def _embedding(rng):
    V, C = int(rng.integers(2, 5)), int(rng.integers(1, 4))
    ids = rng.integers(0, V, size=(2, 3))  # six ids from at most four rows: repeats accumulate
    return (lambda w: F.embedding(ids, w)), [_values(rng, (V, C))]


def _linear(bias, activation=None):
    def case(rng):
        lead = _shape(rng, 1, 2)
        n_in, n_out = int(rng.integers(1, 4)), int(rng.integers(1, 4))
        arrays = [_values(rng, lead + (n_in,)), _values(rng, (n_in, n_out))]
        arrays += [_values(rng, (n_out,))] if bias else []
        return (lambda *ts: F.linear(*ts, activation=activation)), arrays
    return case


def _residual_mlp(rng):
    """x + gelu(layer_norm(x) @ W1) @ W2: a residual branch, as in a transformer block."""
    T, C, H = int(rng.integers(1, 4)), int(rng.integers(2, 4)), int(rng.integers(2, 5))
    def fn(x, w, W1, W2):
        return x + (F.layer_norm(x, w) @ W1).gelu() @ W2
    return fn, [_distinct(rng, (T, C)), _values(rng, (C,)), _values(rng, (C, H)), _values(rng, (H, C))]


CASES = {
    "add": _binary(lambda x, y: x + y),
    "sub": _binary(lambda x, y: x - y),
    "mul": _binary(lambda x, y: x * y),
    "div": _binary(lambda x, y: x / y, _away_from_zero),
    "pow": lambda rng: (lambda x, y: x ** y, [_values(rng, s, 0.5, 2.0) for s in _broadcast_pair(rng)]),
    "pow_const": lambda rng: ((lambda x, p=float(rng.choice([2, 3, 0.5, -1, 1.7])): x ** p),
                              [_values(rng, _shape(rng), 0.5, 2.0)]),
    "neg": _unary(lambda x: -x),
    "abs": _unary(lambda x: x.abs(), _away_from_zero),
    "exp": _unary(lambda x: x.exp()),
    "log": _unary(lambda x: x.log(), lambda rng, s: _values(rng, s, 0.5, 2.0)),
    "sqrt": _unary(lambda x: x.sqrt(), lambda rng, s: _values(rng, s, 0.5, 2.0)),
    "tanh": _unary(lambda x: x.tanh()),
    "sigmoid": _unary(lambda x: x.sigmoid()),
    "relu": _unary(lambda x: x.relu(), _away_from_zero),
    "gelu": _unary(lambda x: x.gelu(), lambda rng, s: _values(rng, s, -3.0, 3.0)),
    "masked_fill": _masked_fill,
    "sum": _reduce("sum"),
    "mean": _reduce("mean"),
    "max": _reduce("max", _distinct),
    "reshape": lambda rng: ((lambda x: x.reshape(-1)), [_values(rng, _shape(rng, 2, 3, min_side=2))]),
    "transpose": _transpose,
    "clone": lambda rng: ((lambda x: x.clone() * x), [_values(rng, _shape(rng))]),
    "getitem_slice": lambda rng: ((lambda x: x[..., ::2]), [_values(rng, _shape(rng))]),
    "getitem_ids": _getitem_ids,
    "cat": _cat,
    "matmul": _matmul((), ()),
    "matmul_batched": _matmul((2, 1), (3,)),
    "matmul_vec_mat": _matmul((), (), x_vec=True),
    "matmul_mat_vec": _matmul((2,), (), y_vec=True),
    "linear": _linear(bias=True),
    "linear_nobias": _linear(bias=False),
    "linear_gelu": _linear(bias=True, activation="gelu"),
    "softmax": lambda rng: ((lambda x: x.softmax(-1)), [_values(rng, _shape(rng), -3, 3)]),
    "log_softmax": lambda rng: ((lambda x: x.log_softmax(0)), [_values(rng, _shape(rng), -3, 3)]),
    "cross_entropy": _cross_entropy,
    "layer_norm": _layer_norm(bias=True),
    "layer_norm_nobias": _layer_norm(bias=False),
    "attention_causal": _attention(causal=True),
    "attention_kv_cache": _attention(causal=True, Tq_less=True),
    "attention_full": _attention(causal=False),
    "attention_blocked": _attention(causal=True, Tq_less=True, blocked=True),
    "embedding": _embedding,
    "where": lambda rng: ((lambda x, y: backend.get_array_module(x).where(x.data > 0, x, y)),
                          [_values(rng, s) for s in _broadcast_pair(rng)]),
    "broadcast_to": lambda rng: ((lambda x: backend.get_array_module(x).broadcast_to(x, (2,) + x.shape)),
                                 [_values(rng, _shape(rng))]),
    "astype": _unary(lambda x: x.astype("float64") * x.copy()),
    "residual_mlp": _residual_mlp,
}


# ----------------------------------------------------------------------------- running

@dataclass
class CheckResult:
    name: str
    shapes: list
    max_abs: float      # the largest |backward - numerical| over every Jacobian entry
    max_rel: float      # max_abs divided by the largest |numerical| entry
    ok: bool


def check_case(name, cfg):
    """Draw the inputs of case ``name`` and compare backward with central differences."""
    rng = np.random.default_rng([cfg.seed, zlib.crc32(name.encode())])
    fn, arrays = CASES[name](rng)
    xp = backend.xp_for(cfg.device)
    arrays = [xp.asarray(np.asarray(a, dtype=np.float64)) for a in arrays]
    requires = [True] * len(arrays)
    if cfg.order == 2:
        return _check_second(name, fn, arrays, cfg, rng)
    max_abs, scale, ok = 0.0, 0.0, True
    for i in range(len(arrays)):
        num = numerical_jacobian(fn, arrays, i, cfg.eps)
        ana = analytic_jacobian(fn, arrays, requires, i)
        err = np.abs(ana - num)
        ok &= bool(np.all(err <= cfg.atol + cfg.rtol * np.abs(num)))
        max_abs = max(max_abs, float(err.max(initial=0.0)))
        scale = max(scale, float(np.abs(num).max(initial=0.0)))
    tensors = [Tensor(a, requires_grad=True) for a in arrays]
    ok &= check_grads(fn, tensors, eps=cfg.eps, atol=cfg.atol, rtol=cfg.rtol, seed=cfg.seed,
                      raise_on_failure=False)
    return CheckResult(name, [tuple(a.shape) for a in arrays], max_abs, max_abs / max(scale, 1e-300), ok)


def _check_second(name, fn, arrays, cfg, rng, n_directions=3):
    """Second derivatives of case ``name`` along random directions (``--order=2``)."""
    max_abs, scale, ok = 0.0, 0.0, True
    for _ in range(n_directions):
        analytic, numeric = second_directional(fn, arrays, [True] * len(arrays), cfg.eps, rng)
        err = abs(analytic - numeric)
        ok &= err <= cfg.atol + cfg.rtol * abs(numeric)
        max_abs, scale = max(max_abs, err), max(scale, abs(numeric))
    return CheckResult(name, [tuple(a.shape) for a in arrays], max_abs, max_abs / max(scale, 1e-300), bool(ok))


def run_all(cfg=None, print_fn=print):
    """Check every selected case and print the table; returns the list of CheckResult rows."""
    cfg = (cfg or GradcheckConfig()).validate()
    backend.require_device(cfg.device)
    what = "" if cfg.order == 1 else " of second derivatives (3 random directions)"
    print_fn(f"gradient check{what}: float64 on {cfg.device}, the {cfg.ops} ops, central differences with "
             f"eps={cfg.eps:g}; an entry passes when |backward - numerical| <= {cfg.atol:g} + {cfg.rtol:g} * |numerical|")
    print_fn(f"{'op':<20}{'shapes':<44}{'max abs err':>12}{'max rel err':>12}  result")
    rows = []
    for name in cfg.selected():
        with F.mode(cfg.ops):
            row = check_case(name, cfg)
        rows.append(row)
        shapes = " ".join(str(s) for s in row.shapes)
        print_fn(f"{name:<20}{shapes:<44}{row.max_abs:>12.2e}{row.max_rel:>12.2e}  "
                 f"{'PASS' if row.ok else 'FAIL'}")
    failed = [r.name for r in rows if not r.ok]
    print_fn(f"{len(rows) - len(failed)} of {len(rows)} passed" +
             (f"; FAILED: {', '.join(failed)}" if failed else ""))
    return rows


def gradcheck(cfg, print_fn=print):
    """The ``gradcheck`` command: the table, then GradcheckFailure if any op failed."""
    rows = run_all(cfg, print_fn)
    failed = [r.name for r in rows if not r.ok]
    if failed:
        raise GradcheckFailure(f"{len(failed)} of {len(rows)} gradient checks failed: {', '.join(failed)}")
    return rows
