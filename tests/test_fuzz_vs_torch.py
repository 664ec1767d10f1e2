"""Random programs against PyTorch: differential fuzzing of the engine.

Hypothesis draws programs of 4-12 steps over the package's ops and functionals, each with its
argument variants (axes, keepdims, broadcasting, index kinds, masks, layouts of the leaves).
Each program runs on our engine and on PyTorch from the same leaves; the loss and every leaf's
gradient must agree. PyTorch runs in float64; our engine runs the program in float64, or in
float32 against the same float64 reference with float32's tolerance.

Tolerances are tight (float64: 1e-7 relative to each array's scale) because a bug shows as an
O(1) error. Ill-conditioned programs are not drawn instead of being tolerated: each step is
kept only where its inputs are well inside its domain (no near-ties in max, no relu input near
its kink, no near-constant layer-norm rows, tanh and sigmoid away from saturation, log and
fractional powers of values well above 0, divisors away from 0, every value finite and below
1e4 in size).

    pytest tests/test_fuzz_vs_torch.py                                    # 250 programs
    TINYGRAD_GPT_FUZZ_PROGRAMS=5000 pytest tests/test_fuzz_vs_torch.py \\
        -k random_programs --hypothesis-show-statistics                    # a long run, op counts

With ``functional.mode`` present every program runs in each of its modes; under
``pytest --device=cuda`` the leaves live on the device. Below the fuzzer: inputs PyTorch refuses,
which ours must refuse with a readable error, and the failures found so far, as plain tests.
"""
import math
import os
from dataclasses import dataclass

import numpy as np
import pytest
from hypothesis import HealthCheck, event, given, note, settings, strategies as st

torch = pytest.importorskip("torch")
TF = torch.nn.functional

from tinygrad_gpt import Tensor, functional as F  # noqa: E402
from tinygrad_gpt.backend import get_array_module, to_numpy  # noqa: E402

PROGRAMS = int(os.environ.get("TINYGRAD_GPT_FUZZ_PROGRAMS", "250"))
FUZZ = settings(max_examples=PROGRAMS, deadline=None, database=None if PROGRAMS > 1000 else settings().database,
                suppress_health_check=list(HealthCheck))

TOLERANCE = {np.float64: dict(rtol=1e-7, atol=1e-9), np.float32: dict(rtol=2e-3, atol=2e-4)}
BOUND = 1e4  # largest |value| a step may make


def modes():
    """The op modes to run each program in: all of them where ``functional.mode`` exists."""
    if not hasattr(F, "mode"):
        return (None,)
    return tuple(getattr(F, "MODES", ("composed", "rules", "fast")))


# ============================================================================ programs

@dataclass
class Step:
    """One op of a program: ``ours(*tensors)`` and ``theirs(*torch_tensors)`` on the pool
    values at ``inputs``; each returns one tensor or a tuple (split). A leaf step has no inputs
    and carries its values (float64) and the layout our engine gets them in."""
    name: str
    inputs: tuple = ()
    ours: object = None
    theirs: object = None
    leaf: np.ndarray = None
    layout: str = "contiguous"
    requires_grad: bool = True
    n_out: int = 1


class Program:
    """Steps in order, the pool of values they make (float64 torch values without a graph, for the
    drawing's checks) and the loss terms: (pool index, reduction, weights)."""

    def __init__(self, dtype):
        self.dtype, self.steps, self.values, self.used, self.loss = dtype, [], [], set(), []

    def __repr__(self):  # what hypothesis prints for a failing program
        return f"Program({np.dtype(self.dtype)}):\n{self.describe()}"

    def describe(self):
        lines, n = [], 0
        for s in self.steps:
            outs = s.n_out
            names = ", ".join(f"v{n + i}" for i in range(outs))
            if s.leaf is not None:
                lines.append(f"{names} = leaf{tuple(s.leaf.shape)} {s.layout}"
                             f"{'' if s.requires_grad else ' (no grad)'}")
            else:
                lines.append(f"{names} = {s.name}({', '.join(f'v{i}' for i in s.inputs)})")
            n += outs
        lines.append("loss = " + " + ".join(f"{r}(v{i})" for i, r, _ in self.loss))
        return "\n".join(lines)


def _torch(a):
    return torch.tensor(np.asarray(a, dtype=np.float64))


def add_leaf(data, prog, shape, requires_grad=None, low=-2.0, high=2.0, layouts=True):
    """A new leaf of ``shape`` with values in [low, high]; returns its pool index."""
    seed = data.draw(st.integers(0, 2 ** 32 - 1), label="seed")
    values = np.random.default_rng(seed).uniform(low, high, size=shape)
    layout = "contiguous"
    if layouts:
        layout = data.draw(st.sampled_from(["contiguous", "contiguous", "strided", "transposed",
                                            "read-only", "broadcast"]), label="layout")
    if layout == "broadcast":  # constant along its first axis: a zero-stride view for our engine
        if values.ndim == 0 or shape[0] == 1:
            layout = "contiguous"
        else:
            values = np.broadcast_to(values[:1], shape).copy()
    if prog.dtype == np.float32:
        values = values.astype(np.float32).astype(np.float64)
    if requires_grad is None:
        requires_grad = data.draw(st.sampled_from([True, True, True, False]), label="requires_grad")
    prog.steps.append(Step("leaf", leaf=values, layout=layout, requires_grad=requires_grad))
    prog.values.append(_torch(values))
    return len(prog.values) - 1


def pick(data, prog, ok=lambda v: True):
    """A pool index whose value satisfies ``ok``, newest first (None if there is none)."""
    candidates = [i for i, v in enumerate(prog.values) if ok(v)]
    if not candidates:
        return None
    return data.draw(st.sampled_from(candidates[::-1]), label="operand")


def try_step(prog, name, inputs, ours, theirs, check=lambda *vs: True):
    """Append the step if its inputs pass ``check`` and its outputs are finite and bounded."""
    inputs = tuple(inputs)
    args = [prog.values[i] for i in inputs]
    if not check(*args):
        return False
    with torch.no_grad():
        out = theirs(*args)
    outs = out if isinstance(out, tuple) else (out,)
    if not all(bool(torch.isfinite(o).all()) and float(o.abs().max(), ) <= BOUND
               if o.numel() else False for o in outs):
        return False
    prog.steps.append(Step(name, inputs, ours, theirs, n_out=len(outs)))
    prog.values.extend(outs)
    prog.used.update(inputs)
    event(name.split("[")[0].split("(")[0])
    return True


# ----------------------------------------------------------------------------- shapes and values

def small_shapes(min_dims=0, max_dims=3, max_side=4):
    return st.lists(st.integers(1, max_side), min_size=min_dims, max_size=max_dims).map(tuple)


@st.composite
def broadcast_partner(draw, shape):
    """A shape that broadcasts with ``shape``: leading dims dropped or added, some dims set to 1."""
    shape = list(shape)
    drop = draw(st.integers(0, len(shape)))
    partner = [draw(st.sampled_from([n, n, 1])) for n in shape[drop:]]
    if draw(st.booleans()) and len(partner) < 4:
        partner = [draw(st.integers(1, 3))] + partner if drop == 0 else partner
    return tuple(partner)


def grid(v):
    return v.detach().numpy()


def far_from(v, points, gap):
    """Every value at least ``gap`` away from each of ``points``."""
    a = grid(v)
    return all(np.abs(a - p).min(initial=np.inf) >= gap for p in points)


def no_near_ties(v, axes):
    """In each group of the reduction over ``axes``, the top two values are clearly apart."""
    a = grid(v)
    if not axes:
        return True
    rest = [i for i in range(a.ndim) if i not in axes]
    groups = np.transpose(a, rest + list(axes)).reshape(-1, math.prod(a.shape[i] for i in axes))
    if groups.shape[1] < 2:
        return True
    top = np.sort(groups, axis=1)[:, -2:]
    return bool((top[:, 1] - top[:, 0] >= 1e-4 * (1 + np.abs(top[:, 1]))).all())


def rows_spread(v):
    """Layer norm is well-conditioned: every row's spread is well above rounding of its mean."""
    a = grid(v).reshape(-1, v.shape[-1])
    std = a.std(axis=1)
    return bool((std >= 1e-2 * (1 + np.abs(a.mean(axis=1)))).all())


def bounded(limit):
    return lambda *vs: all(float(v.abs().max()) <= limit for v in vs if v.numel())


# ============================================================================ op families
# Each family draws its operands and arguments, and adds one step (True) or declines (False).

def fam_binary(data, prog):
    op = data.draw(st.sampled_from(["add", "sub", "mul", "div"]), label="binary")
    x = pick(data, prog)
    kind = data.draw(st.sampled_from(["pool", "leaf", "scalar", "rscalar", "array"]), label="other")
    fn = {"add": lambda a, b: a + b, "sub": lambda a, b: a - b,
          "mul": lambda a, b: a * b, "div": lambda a, b: a / b}[op]
    divisor_ok = lambda v: far_from(v, [0.0], 0.2)  # noqa: E731
    if kind in ("scalar", "rscalar"):
        c = data.draw(st.sampled_from([2, -1, 0.5, 2.5, -3.0]), label="scalar")
        if kind == "scalar":
            return try_step(prog, f"{op}[scalar {c}]", [x], lambda a: fn(a, c), lambda a: fn(a, c))
        return try_step(prog, f"r{op}[scalar {c}]", [x], lambda a: fn(c, a), lambda a: fn(c, a),
                        check=(divisor_ok if op == "div" else lambda v: True))
    if kind == "array":  # a constant array on either side (ndarray op Tensor, Tensor op ndarray)
        shape = data.draw(broadcast_partner(prog.values[x].shape), label="shape")
        seed = data.draw(st.integers(0, 2 ** 32 - 1), label="seed")
        rng = np.random.default_rng(seed)
        # float values of the program's dtype; integers or booleans (which must not raise a
        # float32 program's dtype); or a 0-d float64 array (which must not either, beside axes)
        ckind = data.draw(st.sampled_from(["float", "float", "int", "bool", "0-d float64"]), label="constant")
        if ckind == "bool" and op == "div":
            ckind = "int"
        if ckind == "0-d float64" and prog.values[x].ndim == 0:  # two 0-d operands: float64 in PyTorch too
            ckind = "float"
        if ckind == "int":
            c = rng.integers(1, 4, size=shape) * rng.choice([-1, 1], size=shape)
        elif ckind == "bool":
            c = rng.random(shape) < 0.5
        elif ckind == "0-d float64":
            c = np.array(rng.uniform(0.5, 2.0))
        else:
            c = (rng.uniform(0.5, 2.0, size=shape) * rng.choice([-1, 1], size=shape)).astype(prog.dtype)
        const = lambda a: _xp(a).asarray(c)  # noqa: E731
        ref = torch.tensor(c.astype(np.float64))
        if data.draw(st.booleans(), label="left"):
            return try_step(prog, f"{op}[{ckind} array{c.shape} left]", [x], lambda a: fn(const(a), a),
                            lambda a: fn(ref, a), check=(divisor_ok if op == "div" else lambda v: True))
        return try_step(prog, f"{op}[{ckind} array{c.shape}]", [x], lambda a: fn(a, const(a)), lambda a: fn(a, ref))
    if kind == "pool":
        y = pick(data, prog, lambda v: _broadcasts(v.shape, prog.values[x].shape))
    else:
        y = add_leaf(data, prog, data.draw(broadcast_partner(prog.values[x].shape), label="shape"))
    return try_step(prog, op, [x, y], fn, fn,
                    check=(lambda a, b: divisor_ok(b)) if op == "div" else (lambda a, b: True))


def _broadcasts(s, t):
    try:
        np.broadcast_shapes(s, t)
        return True
    except ValueError:
        return False


def _xp(like):
    """The array module of a Tensor: NumPy, or CuPy under --device=cuda."""
    return get_array_module(like.data)


def _dev(c, like):
    """A constant array of a Tensor's dtype, on its device."""
    return _xp(like).asarray(c.astype(like.dtype))


UNARY = {
    # name: (ours, theirs, the input's domain)
    "neg": (lambda a: -a, lambda a: -a, lambda v: True),
    "exp": (lambda a: a.exp(), torch.exp, bounded(6.0)),
    "log": (lambda a: a.log(), torch.log, lambda v: float(v.min()) >= 0.05),
    "sqrt": (lambda a: a.sqrt(), torch.sqrt, lambda v: float(v.min()) >= 0.05),
    "tanh": (lambda a: a.tanh(), torch.tanh, bounded(4.0)),
    "sigmoid": (lambda a: a.sigmoid(), torch.sigmoid, bounded(8.0)),
    "relu": (lambda a: a.relu(), torch.relu, lambda v: far_from(v, [0.0], 1e-6)),
    "gelu": (lambda a: a.gelu(), lambda a: TF.gelu(a, approximate="tanh"), bounded(8.0)),
    "F.gelu": (F.gelu, lambda a: TF.gelu(a, approximate="tanh"), bounded(8.0)),
    "F.gelu_composed": (F.gelu_composed, lambda a: TF.gelu(a, approximate="tanh"), bounded(8.0)),
    "dropout(eval)": (lambda a: F.dropout(a, 0.5, training=False), lambda a: TF.dropout(a, 0.5, training=False),
                      lambda v: True),
    "dropout(p=0)": (lambda a: F.dropout(a, 0.0), lambda a: TF.dropout(a, 0.0), lambda v: True),
    "detach": (lambda a: a.detach(), lambda a: a.detach(), lambda v: True),
}


def fam_unary(data, prog):
    name = data.draw(st.sampled_from(sorted(UNARY)), label="unary")
    ours, theirs, domain = UNARY[name]
    return try_step(prog, name, [pick(data, prog)], ours, theirs, check=domain)


def fam_pow(data, prog):
    x = pick(data, prog)
    kind = data.draw(st.sampled_from(["const", "const", "tensor", "rpow"]), label="pow")
    if kind == "const":
        p = data.draw(st.sampled_from([2, 3, 0, 1, -1, -2, 0.5, 1.5, 2.5, -0.5]), label="p")
        if p != int(p):
            domain = lambda v: float(v.min()) >= 0.05  # noqa: E731
        elif p < 0:
            domain = lambda v: far_from(v, [0.0], 0.2)  # noqa: E731
        else:
            domain = bounded(30.0)
        return try_step(prog, f"pow[{p}]", [x], lambda a: a ** p, lambda a: a ** p, check=domain)
    if kind == "rpow":
        c = data.draw(st.sampled_from([2.0, 0.5, 3]), label="base")
        return try_step(prog, f"rpow[{c}]", [x], lambda a: c ** a, lambda a: c ** a, check=bounded(6.0))
    y = add_leaf(data, prog, data.draw(broadcast_partner(prog.values[x].shape), label="shape"), low=-1.5, high=1.5)
    return try_step(prog, "pow[tensor]", [x, y], lambda a, b: a ** b, lambda a, b: a ** b,
                    check=lambda a, b: float(a.min()) >= 0.1 and float(a.max()) <= 20)


@st.composite
def axis_arg(draw, ndim):
    if ndim == 0:  # PyTorch takes 0 and -1 for a 0-d tensor's axis
        return draw(st.sampled_from([None, 0, -1]))
    kind = draw(st.sampled_from(["none", "int", "tuple"]))
    if kind == "none":
        return None
    if kind == "int":
        return draw(st.integers(-ndim, ndim - 1))
    axes = draw(st.lists(st.integers(0, ndim - 1), min_size=1, max_size=ndim, unique=True))
    return tuple(a - ndim if draw(st.booleans()) else a for a in axes)


def _dims(axis, ndim):
    if axis is None or ndim == 0:
        return tuple(range(ndim))
    return tuple(a % ndim for a in ((axis,) if isinstance(axis, int) else axis))


def fam_reduce(data, prog):
    x = pick(data, prog)
    v = prog.values[x]
    op = data.draw(st.sampled_from(["sum", "mean", "max"]), label="reduce")
    axis = data.draw(axis_arg(v.ndim), label="axis")
    keepdims = data.draw(st.booleans(), label="keepdims")
    dims = _dims(axis, v.ndim)

    def theirs(a):
        if not dims:  # a 0-d tensor: nothing to reduce
            return a.clone()
        f = {"sum": torch.sum, "mean": torch.mean, "max": torch.amax}[op]
        return f(a, dim=dims, keepdim=keepdims)
    return try_step(prog, f"{op}[axis={axis}, keepdims={keepdims}]", [x],
                    lambda a: getattr(a, op)(axis=axis, keepdims=keepdims), theirs,
                    check=(lambda a: no_near_ties(a, dims)) if op == "max" else (lambda a: True))


@st.composite
def reshape_target(draw, shape):
    n = math.prod(shape)
    dims, left = [], n
    for _ in range(draw(st.integers(0, 3))):
        d = draw(st.sampled_from([k for k in range(1, left + 1) if left % k == 0]))
        dims.append(d)
        left //= d
    dims.append(left)
    dims = draw(st.permutations(dims))
    if draw(st.booleans()):
        dims[draw(st.integers(0, len(dims) - 1))] = -1
    return tuple(dims)


def fam_movement(data, prog):
    x = pick(data, prog)
    v = prog.values[x]
    kind = data.draw(st.sampled_from(["reshape", "view", "transpose", "permute", "T"]), label="movement")
    if kind in ("reshape", "view"):
        shape = data.draw(reshape_target(v.shape), label="shape")
        packed = data.draw(st.booleans(), label="packed")
        ours = (lambda a: getattr(a, kind)(shape)) if packed else (lambda a: getattr(a, kind)(*shape))
        return try_step(prog, f"{kind}{shape}", [x], ours, lambda a: a.reshape(shape))
    if kind == "T":
        perm = tuple(reversed(range(v.ndim)))
        return try_step(prog, "T", [x], lambda a: a.T, lambda a: a.permute(perm))
    if kind == "transpose" and v.ndim:  # two dims swapped, as in PyTorch
        d0, d1 = (data.draw(st.integers(-v.ndim, v.ndim - 1), label=f"dim{i}") for i in range(2))
        return try_step(prog, f"transpose({d0}, {d1})", [x], lambda a: a.transpose(d0, d1),
                        lambda a: a.transpose(d0, d1))
    perm = tuple(data.draw(st.permutations(range(v.ndim)), label="perm"))
    perm = tuple(p - v.ndim if data.draw(st.booleans(), label="negative") else p for p in perm)
    return try_step(prog, f"permute{perm}", [x], lambda a: a.permute(*perm),
                    lambda a: a.permute(tuple(p % v.ndim for p in perm)))


def _torch_basic(t, parts):
    """NumPy's basic indexing (ints, slices with any step, None) done with torch ops."""
    ax = 0
    for p in parts:
        if p is None:
            t = t.unsqueeze(ax)
            ax += 1
        elif isinstance(p, int):
            t = t.select(ax, p)
        else:  # a slice, negative steps included, as the positions it picks
            t = t.index_select(ax, torch.as_tensor(np.arange(t.shape[ax])[p].copy()))
            ax += 1
    return t


def fam_index(data, prog):
    x = pick(data, prog, lambda v: v.ndim >= 1)
    if x is None:
        return False
    shape = prog.values[x].shape
    kind = data.draw(st.sampled_from(["basic", "ellipsis", "ints", "ints2", "pair", "tensor", "list",
                                      "bool", "bool_axis0", "mixed"]), label="index")
    if kind in ("basic", "ellipsis"):
        k = data.draw(st.integers(1, len(shape)), label="axes")
        axes = shape[:k] if kind == "basic" else shape[len(shape) - k:]
        parts = []
        for n in axes:
            c = data.draw(st.sampled_from(["int", "slice", "slice", "all", "none"]), label="part")
            if c == "int":
                parts.append(data.draw(st.integers(-n, n - 1), label="i"))
            elif c == "slice":
                step = data.draw(st.sampled_from([None, 1, 2, 3, -1, -2]), label="step")
                start = data.draw(st.none() | st.integers(-n, n), label="start")
                stop = data.draw(st.none() | st.integers(-n - 1, n), label="stop")
                s = slice(start, stop, step)
                if not len(range(n)[s]):
                    return False
                parts.append(s)
            elif c == "none":
                parts += [None, slice(None)]
            else:
                parts.append(slice(None))
        if kind == "basic":
            index = tuple(parts)
            theirs = lambda a: _torch_basic(a, parts)  # noqa: E731
        else:
            index = (Ellipsis, *parts)
            lead = [slice(None)] * (len(shape) - k)
            theirs = lambda a: _torch_basic(a, lead + parts)  # noqa: E731
        return try_step(prog, f"getitem[{index}]", [x], lambda a: a[index], theirs)
    n0 = shape[0]
    ids = np.asarray(data.draw(st.lists(st.integers(-n0, n0 - 1), min_size=1, max_size=6), label="ids"))
    ids = np.concatenate([ids, ids[:1]])  # a repeat: gradients must add up
    dtype = data.draw(st.sampled_from([np.int64, np.int32]), label="id dtype")
    ids = ids.astype(dtype)
    tids = torch.as_tensor(ids.astype(np.int64))
    if kind == "ints":
        return try_step(prog, f"getitem[ints {ids.tolist()}]", [x], lambda a: a[ids], lambda a: a[tids])
    if kind == "ints2":  # a 2-D index array
        ids2 = np.concatenate([ids, ids]).reshape(2, -1)
        tids2 = torch.as_tensor(ids2.astype(np.int64))
        return try_step(prog, "getitem[ints 2-D]", [x], lambda a: a[ids2], lambda a: a[tids2])
    if kind == "tensor":
        return try_step(prog, "getitem[Tensor ids]", [x], lambda a: a[Tensor(_xp(a).asarray(ids))], lambda a: a[tids])
    if kind == "list":
        lst = ids.tolist()
        return try_step(prog, "getitem[list]", [x], lambda a: a[lst], lambda a: a[tids])
    if kind == "pair":
        if len(shape) < 2:
            return False
        n1 = shape[1]
        ids1 = np.asarray(data.draw(st.lists(st.integers(-n1, n1 - 1), min_size=len(ids), max_size=len(ids)),
                                    label="ids1"))
        return try_step(prog, "getitem[pair of ids]", [x], lambda a: a[ids, ids1],
                        lambda a: a[tids, torch.as_tensor(ids1)])
    if kind == "mixed":  # a slice, then ids
        if len(shape) < 2:
            return False
        n1 = shape[1]
        ids1 = np.asarray(data.draw(st.lists(st.integers(0, n1 - 1), min_size=1, max_size=5), label="ids1"))
        ids1 = np.concatenate([ids1, ids1[:1]])
        return try_step(prog, "getitem[:, ids]", [x], lambda a: a[:, ids1], lambda a: a[:, torch.as_tensor(ids1)])
    seed = data.draw(st.integers(0, 2 ** 32 - 1), label="seed")
    mshape = shape if kind == "bool" else shape[:1]
    mask = np.random.default_rng(seed).random(mshape) < 0.6
    if not mask.any():
        return False
    return try_step(prog, f"getitem[{kind}]", [x], lambda a: a[mask], lambda a: a[torch.as_tensor(mask)])


def fam_masked_fill(data, prog):
    x = pick(data, prog)
    shape = prog.values[x].shape
    mshape = tuple(data.draw(st.sampled_from([n, 1]), label="mask side") for n in shape)
    mshape = mshape[data.draw(st.integers(0, len(mshape)), label="drop"):]
    seed = data.draw(st.integers(0, 2 ** 32 - 1), label="seed")
    mask = np.random.default_rng(seed).random(mshape) < 0.5
    value = data.draw(st.sampled_from([0.0, -2.0, 3.5, 1]), label="value")
    as_tensor = data.draw(st.booleans(), label="mask as Tensor")
    ours = (lambda a: a.masked_fill(Tensor(_xp(a).asarray(mask)), value)) if as_tensor \
        else (lambda a: a.masked_fill(mask, value))
    return try_step(prog, f"masked_fill[{mshape}]", [x], ours,
                    lambda a: a.masked_fill(torch.as_tensor(mask), value))


SOFTMAX = {
    "softmax": (lambda a, ax: a.softmax(ax), torch.softmax),
    "log_softmax": (lambda a, ax: a.log_softmax(ax), torch.log_softmax),
    "F.softmax": (F.softmax, torch.softmax),
    "F.log_softmax": (F.log_softmax, torch.log_softmax),
    "F.softmax_composed": (F.softmax_composed, torch.softmax),
    "F.log_softmax_composed": (F.log_softmax_composed, torch.log_softmax),
}


def fam_softmax(data, prog):
    x = pick(data, prog)
    name = data.draw(st.sampled_from(sorted(SOFTMAX)), label="softmax")
    ndim = prog.values[x].ndim
    axis = data.draw(st.integers(-max(ndim, 1), max(ndim, 1) - 1), label="axis")
    ours, theirs = SOFTMAX[name]
    return try_step(prog, f"{name}[axis={axis}]", [x], lambda a: ours(a, axis), lambda a: theirs(a, dim=axis))


def fam_join(data, prog):
    x = pick(data, prog, lambda v: v.ndim >= 1)
    if x is None:
        return False
    shape = prog.values[x].shape
    kind = data.draw(st.sampled_from(["cat", "stack", "split", "split_sections"]), label="join")
    if kind == "cat":
        axis = data.draw(st.integers(-len(shape), len(shape) - 1), label="axis")
        other = data.draw(st.sampled_from(["self", "leaf"]), label="with")
        if other == "self":
            ins = [x, x]
        else:
            s = list(shape)
            s[axis] = data.draw(st.integers(1, 3), label="size")
            ins = [x, add_leaf(data, prog, tuple(s))]
        order = data.draw(st.permutations(range(2)), label="order")
        return try_step(prog, f"cat[axis={axis}]", ins,
                        lambda a, b: Tensor.cat([(a, b)[i] for i in order], axis=axis),
                        lambda a, b: torch.cat([(a, b)[i] for i in order], dim=axis))
    if kind == "stack":
        axis = data.draw(st.integers(-len(shape) - 1, len(shape)), label="axis")
        y = data.draw(st.sampled_from(["self", "leaf"]), label="with")
        ins = [x, x] if y == "self" else [x, add_leaf(data, prog, shape)]
        return try_step(prog, f"stack[axis={axis}]", ins, lambda a, b: Tensor.stack([a, b], axis=axis),
                        lambda a, b: torch.stack([a, b], dim=axis))
    axis = data.draw(st.integers(-len(shape), len(shape) - 1), label="axis")
    n = shape[axis]
    if kind == "split":
        size = data.draw(st.integers(1, n + 1), label="size")
    else:
        cuts = sorted(set(data.draw(st.lists(st.integers(1, n - 1), max_size=3), label="cuts"))) if n > 1 else []
        size = [b - a for a, b in zip([0] + cuts, cuts + [n])]
    return try_step(prog, f"split[{size}, axis={axis}]", [x], lambda a: a.split(size, axis=axis),
                    lambda a: tuple(torch.split(a, size, dim=axis)))


def fam_layer_norm(data, prog):
    x = pick(data, prog, lambda v: v.ndim >= 1 and v.shape[-1] >= 2)
    if x is None:
        return False
    C = prog.values[x].shape[-1]
    fn = data.draw(st.sampled_from(["layer_norm", "layer_norm_composed"]), label="layer_norm")
    affine = data.draw(st.sampled_from(["weight, bias", "weight, bias", "weight", "bias", "none"]), label="affine")
    eps = data.draw(st.sampled_from([1e-5, 1e-3]), label="eps")
    w = add_leaf(data, prog, (C,)) if "weight" in affine else None
    b = add_leaf(data, prog, (C,)) if "bias" in affine else None
    params = [i for i in (w, b) if i is not None]

    def split(ps):  # the inputs after x back into (weight, bias)
        ps = list(ps)
        return (ps.pop(0) if w is not None else None), (ps.pop(0) if b is not None else None)

    def ours(a, *ps):
        weight, bias = split(ps)
        return getattr(F, fn)(a, weight, bias, eps=eps)

    def theirs(a, *ps):
        weight, bias = split(ps)
        return TF.layer_norm(a, (C,), weight, bias, eps)
    return try_step(prog, f"{fn}[{affine}, eps={eps}]", [x] + params, ours, theirs,
                    check=lambda a, *ps: rows_spread(a))


def fam_cross_entropy(data, prog):
    x = pick(data, prog, lambda v: v.ndim >= 1 and v.shape[-1] >= 2)
    if x is None:
        return False
    shape = prog.values[x].shape
    V = shape[-1]
    seed = data.draw(st.integers(0, 2 ** 32 - 1), label="seed")
    rng = np.random.default_rng(seed)
    targets = rng.integers(0, V, size=shape[:-1])
    ignore = data.draw(st.sampled_from([-1, -100, 0, V - 1]), label="ignore_index")
    targets[rng.random(targets.shape) < 0.25] = ignore
    if not (targets != ignore).any():
        return False
    fn = data.draw(st.sampled_from(["cross_entropy", "cross_entropy_composed"]), label="ce")
    ttargets = torch.as_tensor(targets.reshape(-1))
    return try_step(prog, f"{fn}[ignore_index={ignore}]", [x],
                    lambda a: getattr(F, fn)(a, targets, ignore_index=ignore),
                    lambda a: TF.cross_entropy(a.reshape(-1, V), ttargets, ignore_index=ignore))


def fam_embedding(data, prog):
    w = pick(data, prog, lambda v: v.ndim == 2)
    if w is None or data.draw(st.booleans(), label="fresh weight"):
        w = add_leaf(data, prog, data.draw(small_shapes(2, 2), label="shape"))
    V = prog.values[w].shape[0]
    seed = data.draw(st.integers(0, 2 ** 32 - 1), label="seed")
    ids = np.random.default_rng(seed).integers(0, V, size=data.draw(small_shapes(0, 2), label="ids shape"))
    return try_step(prog, f"embedding[ids{ids.shape}]", [w], lambda a: F.embedding(ids, a),
                    lambda a: TF.embedding(torch.as_tensor(ids), a))


def _torch_attention(q, k, v, causal, scale):
    Tq, Tk = q.shape[-2], k.shape[-2]
    mask = torch.ones(Tq, Tk, dtype=torch.bool).tril(Tk - Tq) if causal else None
    return TF.scaled_dot_product_attention(q, k, v, attn_mask=mask, scale=scale)


def fam_attention(data, prog):
    x = pick(data, prog, lambda v: v.ndim >= 2)
    if x is None:
        return False
    shape = prog.values[x].shape
    fn = data.draw(st.sampled_from(["sdpa", "blocked", "composed"]), label="attention")
    causal = data.draw(st.booleans(), label="causal")
    scale = data.draw(st.sampled_from([None, 0.7]), label="scale")
    kv = data.draw(st.sampled_from(["self", "leaves"]), label="kv")
    if kv == "self":
        ins = [x, x, x]
    else:
        lead, Tq, hs = shape[:-2], shape[-2], shape[-1]
        Tk = data.draw(st.integers(Tq if causal else 1, Tq + 3), label="Tk")
        hv = data.draw(st.integers(1, 4), label="hv")
        klead = lead if fn == "blocked" else data.draw(broadcast_partner(lead), label="lead")
        ins = [x, add_leaf(data, prog, klead + (Tk, hs)), add_leaf(data, prog, klead + (Tk, hv))]
    if fn == "blocked":
        block = data.draw(st.sampled_from([None, 1, 2]), label="block")
        tile = data.draw(st.sampled_from([None, 1, 2, 3]), label="tile")
        def ours(q, k, v):
            return F.blocked_attention(q, k, v, causal=causal, scale=scale, block=block, tile=tile)
    elif fn == "sdpa":
        def ours(q, k, v):
            return F.scaled_dot_product_attention(q, k, v, causal=causal, scale=scale)
    else:
        def ours(q, k, v):
            return F.scaled_dot_product_attention_composed(q, k, v, causal=causal, scale=scale)
    return try_step(prog, f"{fn}_attention[causal={causal}, scale={scale}]", ins, ours,
                    lambda q, k, v: _torch_attention(q, k, v, causal, scale), check=bounded(5.0))


def fam_linear(data, prog):
    x = pick(data, prog, lambda v: v.ndim >= 1)
    if x is None:
        return False
    n_in = prog.values[x].shape[-1]
    n_out = data.draw(st.integers(1, 4), label="out")
    w = add_leaf(data, prog, (n_in, n_out))
    fn = data.draw(st.sampled_from(["linear", "linear+gelu", "linear_composed"]), label="linear")
    act = "gelu" if fn == "linear+gelu" else None

    def theirs(a, w, b=None):
        y = a @ w if b is None else a @ w + b
        return TF.gelu(y, approximate="tanh") if act else y
    ours_fn = F.linear_composed if fn == "linear_composed" else (lambda a, w, b=None: F.linear(a, w, b, activation=act))
    if data.draw(st.booleans(), label="bias"):
        b = add_leaf(data, prog, (n_out,))
        return try_step(prog, fn, [x, w, b], ours_fn, theirs)
    return try_step(prog, f"{fn}[no bias]", [x, w], ours_fn, theirs)


def fam_matmul(data, prog):
    x = pick(data, prog, lambda v: v.ndim >= 1)
    if x is None:
        return False
    shape = prog.values[x].shape
    k = shape[-1]
    m = data.draw(st.integers(1, 4), label="m")
    kind = data.draw(st.sampled_from(["vector", "matrix", "batched", "left", "left_vector"]), label="matmul")
    if kind == "vector":
        y = add_leaf(data, prog, (k,))
    elif kind == "matrix":
        y = add_leaf(data, prog, (k, m))
    elif kind == "batched":
        y = add_leaf(data, prog, data.draw(broadcast_partner(shape[:-2]), label="batch") + (k, m))
    else:  # the new operand on the left: y @ x with x's second-to-last axis as the shared one
        if len(shape) < 2 and kind == "left":
            return False
        n = shape[-2] if len(shape) >= 2 else shape[-1]
        y = add_leaf(data, prog, (n,) if kind == "left_vector" else (m, n))
        return try_step(prog, f"matmul[{kind}]", [y, x], lambda a, b: a @ b, torch.matmul)
    return try_step(prog, f"matmul[{kind}]", [x, y], lambda a, b: a @ b, torch.matmul)


FAMILIES = [fam_binary, fam_binary, fam_unary, fam_unary, fam_pow, fam_reduce, fam_reduce, fam_movement,
            fam_index, fam_index, fam_masked_fill, fam_softmax, fam_join, fam_layer_norm,
            fam_cross_entropy, fam_embedding, fam_attention, fam_linear, fam_matmul]


# ============================================================================ drawing and running

@st.composite
def programs(draw, dtypes=(np.float64, np.float64, np.float64, np.float32)):
    """A random program: 1-3 leaves, then 4-12 ops, then a loss over the values left unused."""
    data = _Drawer(draw)
    prog = Program(draw(st.sampled_from(dtypes), label="dtype"))
    for _ in range(draw(st.integers(1, 3), label="leaves")):
        add_leaf(data, prog, draw(small_shapes(), label="shape"), requires_grad=True)
    n_ops, tries = draw(st.integers(4, 12), label="ops"), 0
    ops = 0
    while ops < n_ops and tries < 40:
        tries += 1
        family = draw(st.sampled_from(FAMILIES), label="family")
        if family(data, prog):
            ops += 1
    sinks = [i for i in range(len(prog.values)) if i not in prog.used]
    last = len(prog.values) - 1
    chosen = sorted({last} | set(draw(st.lists(st.sampled_from(sinks), max_size=2), label="sinks")))
    for i in chosen:
        r = draw(st.sampled_from(["weighted", "weighted", "sum", "mean"]), label="reduction")
        seed = draw(st.integers(0, 2 ** 32 - 1), label="seed")
        w = np.random.default_rng(seed).standard_normal(tuple(prog.values[i].shape))
        prog.loss.append((i, r, w))
    return prog


class _Drawer:
    """Lets the op families call ``data.draw`` inside a composite strategy."""

    def __init__(self, draw):
        self.draw = lambda strategy, label=None: draw(strategy)


def _leaf_ours(step, xp, dtype):
    a = step.leaf.astype(dtype)
    if step.layout == "strided" and a.ndim:  # every other element of a wider array
        big = xp.zeros(a.shape[:-1] + (2 * a.shape[-1],), dtype=dtype)
        big[..., ::2] = xp.asarray(a)
        data = big[..., ::2]
    elif step.layout == "transposed" and a.ndim >= 2:
        data = xp.ascontiguousarray(xp.asarray(a).T).T
    elif step.layout == "broadcast" and a.ndim:
        data = xp.broadcast_to(xp.asarray(a[:1]), a.shape)
    elif step.layout == "read-only" and xp is np:
        data = a.copy()
        data.flags.writeable = False
    else:
        data = xp.asarray(a)
    return Tensor(data, requires_grad=step.requires_grad)


def run(prog, engine, xp=np, mode=None, backward=True):
    """Replay ``prog`` on our engine ("ours") or PyTorch; return the loss and the leaves
    (after ``loss.backward()`` unless ``backward=False``)."""
    vals, leaves = [], []
    for step in prog.steps:
        if step.leaf is not None:
            if engine == "ours":
                t = _leaf_ours(step, xp, prog.dtype)
            else:
                t = torch.tensor(step.leaf, dtype=torch.float64, requires_grad=step.requires_grad)
            leaves.append(t)
            vals.append(t)
            continue
        fn = step.ours if engine == "ours" else step.theirs
        out = fn(*[vals[i] for i in step.inputs])
        vals.extend(out if isinstance(out, tuple) else (out,))
    loss = None
    for i, r, w in prog.loss:
        v = vals[i]
        if r == "weighted":
            term = (v * (_dev(w, v) if engine == "ours" else torch.tensor(w))).sum()
        else:
            term = getattr(v, r)()
        loss = term if loss is None else loss + term
    if backward and loss.requires_grad:
        loss.backward()
    return loss, leaves


def compare(prog, xp, mode):
    tol = TOLERANCE[prog.dtype]
    ref, ref_leaves = run(prog, "torch")
    ctx = F.mode(mode) if mode is not None else _nothing()
    with ctx:
        loss, leaves = run(prog, "ours", xp)
    assert loss.dtype == prog.dtype, f"loss dtype {loss.dtype}, program dtype {np.dtype(prog.dtype)}"
    _close(loss.data, ref, "loss", tol)
    for i, (t, u) in enumerate(zip(leaves, ref_leaves)):
        if not u.requires_grad:
            assert t.grad is None, f"leaf {i} needs no gradient but got one"
            continue
        if u.grad is None:  # no path from this leaf to the loss, or only through detach
            assert t.grad is None or not np.any(to_numpy(t.grad)), f"leaf {i}: torch has no gradient"
            continue
        assert t.grad is not None, f"leaf {i} got no gradient"
        assert t.grad.dtype == prog.dtype and t.grad.shape == tuple(u.shape), f"leaf {i}'s gradient"
        _close(t.grad, u.grad, f"gradient of leaf {i}", tol)


class _nothing:
    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False


def _close(ours, ref, what, tol):
    a, r = to_numpy(ours).astype(np.float64), ref.detach().numpy()
    assert a.shape == r.shape, f"{what}: shape {a.shape}, torch {r.shape}"
    scale = max(1.0, float(np.abs(r).max(initial=0.0)))
    np.testing.assert_allclose(a, r, rtol=tol["rtol"], atol=tol["atol"] * scale, err_msg=what)


@FUZZ
@given(prog=programs())
def test_random_programs_match_torch(prog, xp):
    """Loss and every leaf gradient of a random program agree with PyTorch, in every op mode."""
    note(prog.describe())
    for mode in modes():
        note(f"mode: {mode}")
        compare(prog, xp, mode)


def _hvp(loss, leaves, vs, grad):
    """H v of ``loss`` over the leaves that require grad, by two backward passes (``grad`` is
    torch.autograd.grad or tinygrad_gpt.grad); zeros where a leaf is unused."""
    wanted = [(t, v) for t, v in zip(leaves, vs) if t.requires_grad]
    if not loss.requires_grad or not wanted:
        return None
    gs = grad(loss, [t for t, _ in wanted], create_graph=True, allow_unused=True)
    terms = [(g * v).sum() for g, (_, v) in zip(gs, wanted) if g is not None and g.requires_grad]
    if not terms:
        return [np.zeros(t.shape) for t, _ in wanted]
    hv = grad(sum(terms[1:], terms[0]), [t for t, _ in wanted], allow_unused=True)
    return [np.zeros(t.shape) if h is None else (h.numpy() if isinstance(h, Tensor) else h.detach().numpy())
            for h, (t, _) in zip(hv, wanted)]


@settings(FUZZ, max_examples=max(10, PROGRAMS // 5))
@given(prog=programs(dtypes=(np.float64,)), seed=st.integers(0, 2 ** 32 - 1))
def test_random_programs_second_order_match_torch(prog, seed, xp):
    """Hessian-vector products (a backward through a recorded backward) of random float64
    programs agree with torch.autograd.grad(create_graph=True), in every op mode."""
    import tinygrad_gpt as tg
    note(prog.describe())
    ref, ref_leaves = run(prog, "torch", backward=False)
    rng = np.random.default_rng(seed)
    vs = [rng.standard_normal(tuple(t.shape)) for t in ref_leaves]
    try:
        expected = _hvp(ref, ref_leaves, [torch.tensor(v) for v in vs], torch.autograd.grad)
    except RuntimeError as e:  # an op torch cannot differentiate twice
        event(f"torch refused: {str(e)[:40]}")
        return
    for mode in modes():
        note(f"mode: {mode}")
        with F.mode(mode):
            loss, leaves = run(prog, "ours", xp, backward=False)
            got = _hvp(loss, leaves, [Tensor(xp.asarray(v)) for v in vs], tg.grad)
        if expected is None:
            continue
        for i, (a, r) in enumerate(zip(got, expected)):
            scale = max(1.0, float(np.abs(r).max(initial=0.0)))
            np.testing.assert_allclose(to_numpy(a), r, rtol=1e-7, atol=1e-9 * scale, err_msg=f"H v, leaf {i}")


# ============================================================================ what PyTorch refuses

ERRORS = (ValueError, IndexError, TypeError, RuntimeError)


def refused_alike(ours, theirs, words):
    """PyTorch refuses; ours refuses too, with one of our errors whose message names the problem
    (one of ``words``), not an internal slip such as 'tuple index out of range'."""
    with pytest.raises(Exception):
        theirs()
    with pytest.raises(ERRORS) as info:
        ours()
    message = str(info.value)
    assert any(w.lower() in message.lower() for w in words), message
    for slip in ("tuple index out of range", "has no attribute", "NoneType", "No matching definition"):
        assert slip not in message, message


def _pair(*shapes):
    """Random float64 arrays of the given shapes."""
    rng = np.random.default_rng(0)
    return tuple(rng.standard_normal(s) for s in shapes)


def _both(*arrays):
    """The arrays as our Tensors and as torch tensors (float64, requiring gradients)."""
    return ([Tensor(a, requires_grad=True) for a in arrays],
            [torch.tensor(a, requires_grad=True) for a in arrays])


ids = np.array
REFUSALS = {
    # name: (input shapes, ours(*tensors), theirs(*torch tensors), words the message names)
    "sum, an axis twice": ([(2, 3)], lambda x: x.sum(axis=(0, 0)), lambda x: x.sum(dim=(0, 0)), ["twice"]),
    "sum, 1 and -1": ([(2, 3)], lambda x: x.sum(axis=(1, -1)), lambda x: x.sum(dim=(1, -1)), ["twice"]),
    "max, an axis twice": ([(2, 3)], lambda x: x.max(axis=(1, 1)), lambda x: x.amax(dim=(1, 1)), ["twice"]),
    "mean, axis out of range": ([(2, 3)], lambda x: x.mean(axis=2), lambda x: x.mean(dim=2), ["axis"]),
    "sum of 0-d, axis 1": ([()], lambda x: x.sum(axis=1), lambda x: x.sum(dim=1), ["axis"]),
    "max of empty": ([(0, 3)], lambda x: x.max(), lambda x: x.amax(), ["zero-size", "Max"]),
    "softmax, axis out of range": ([(2, 3)], lambda x: x.softmax(2), lambda x: x.softmax(2), ["axis"]),
    "softmax of 0-d, axis 1": ([()], lambda x: x.softmax(1), lambda x: x.softmax(1), ["axis"]),
    "add, shapes": ([(2, 3), (4,)], lambda x, y: x + y, lambda x, y: x + y, ["shape"]),
    "matmul, inner sizes": ([(2, 3), (2, 3)], lambda x, y: x @ y, lambda x, y: x @ y, ["shape"]),
    "matmul, 0-d": ([(), (2, 3)], lambda x, y: x @ y, lambda x, y: x @ y, ["shape"]),
    "matmul, batch": ([(2, 2, 3), (3, 3, 4)], lambda x, y: x @ y, lambda x, y: x @ y, ["shape"]),
    "reshape, size": ([(2, 3)], lambda x: x.reshape(4, -1), lambda x: x.reshape(4, -1), ["reshape"]),
    "reshape, two -1": ([(2, 3)], lambda x: x.reshape(-1, -1), lambda x: x.reshape(-1, -1), ["reshape", "-1"]),
    "permute, not a permutation": ([(2, 3)], lambda x: x.permute(0, 0), lambda x: x.permute(0, 0), ["permutation"]),
    "permute, too few axes": ([(2, 3)], lambda x: x.permute(0), lambda x: x.permute(0), ["permutation"]),
    "index, int out of range": ([(2, 3)], lambda x: x[5], lambda x: x[5], ["index"]),
    "index, ids out of range": ([(2, 3)], lambda x: x[ids([0, 2])], lambda x: x[torch.tensor([0, 2])], ["index"]),
    "index, too many": ([(2, 3)], lambda x: x[0, 0, 0], lambda x: x[0, 0, 0], ["index"]),
    "index, float ids": ([(2, 3)], lambda x: x[ids([0.5])], lambda x: x[torch.tensor([0.5])], ["integer"]),
    "index, mask shape": ([(2, 3)], lambda x: x[ids([True, False, True])],
                          lambda x: x[torch.tensor([True, False, True])], ["boolean", "mask"]),
    "masked_fill, mask shape": ([(2, 3)], lambda x: x.masked_fill(np.zeros((3, 2), bool), 0.0),
                                lambda x: x.masked_fill(torch.zeros(3, 2, dtype=torch.bool), 0.0), ["shape"]),
    "cat, 0-d": ([(), ()], lambda x, y: Tensor.cat([x, y]), lambda x, y: torch.cat([x, y]), ["0-d"]),
    "cat, axis out of range": ([(2, 3), (2, 3)], lambda x, y: Tensor.cat([x, y], axis=2),
                               lambda x, y: torch.cat([x, y], dim=2), ["axis"]),
    "cat, shapes": ([(2, 3), (2, 4)], lambda x, y: Tensor.cat([x, y], axis=0),
                    lambda x, y: torch.cat([x, y], dim=0), ["shape"]),
    "cat, ranks": ([(2, 3), (3,)], lambda x, y: Tensor.cat([x, y]), lambda x, y: torch.cat([x, y]),
                   ["shape", "dimension"]),
    "cat, none": ([], lambda: Tensor.cat([]), lambda: torch.cat([]), ["at least one"]),
    "stack, shapes": ([(2, 3), (3, 2)], lambda x, y: Tensor.stack([x, y]), lambda x, y: torch.stack([x, y]),
                      ["shape"]),
    "stack, axis out of range": ([(2, 3), (2, 3)], lambda x, y: Tensor.stack([x, y], axis=3),
                                 lambda x, y: torch.stack([x, y], dim=3), ["axis"]),
    "split, sizes do not add up": ([(4, 3)], lambda x: x.split([1, 2]), lambda x: x.split([1, 2]), ["add up"]),
    "split, size 0": ([(4, 3)], lambda x: x.split(0), lambda x: x.split(0), ["positive"]),
    "split, axis out of range": ([(4, 3)], lambda x: x.split(2, axis=2), lambda x: x.split(2, dim=2), ["axis"]),
    "layer_norm, weight shape": ([(2, 3), (4,)], lambda x, w: F.layer_norm(x, w),
                                 lambda x, w: TF.layer_norm(x, (3,), w), ["weight"]),
    "layer_norm, 0-d": ([(), (1,)], lambda x, w: F.layer_norm(x, w), lambda x, w: TF.layer_norm(x, (1,), w),
                        ["0-d"]),
    "linear, sizes": ([(2, 3), (4, 5)], lambda x, w: F.linear(x, w), lambda x, w: x @ w, ["shape"]),
    "linear, bias": ([(2, 3), (3, 5), (4,)], lambda x, w, b: F.linear(x, w, b), lambda x, w, b: x @ w + b,
                     ["bias"]),
    "embedding, id out of range": ([(4, 3)], lambda w: F.embedding(ids([1, 4]), w),
                                   lambda w: TF.embedding(torch.tensor([1, 4]), w), ["ids"]),
    "embedding, negative id": ([(4, 3)], lambda w: F.embedding(ids([-1]), w),
                               lambda w: TF.embedding(torch.tensor([-1]), w), ["ids"]),
    "embedding, float ids": ([(4, 3)], lambda w: F.embedding(ids([1.0]), w),
                             lambda w: TF.embedding(torch.tensor([1.0]), w), ["integers"]),
    "cross_entropy, target out of range": ([(2, 3)], lambda x: F.cross_entropy(x, ids([0, 3])),
                                           lambda x: TF.cross_entropy(x, torch.tensor([0, 3])), ["target"]),
    "cross_entropy, target shape": ([(2, 3)], lambda x: F.cross_entropy(x, ids([0, 1, 2])),
                                    lambda x: TF.cross_entropy(x, torch.tensor([0, 1, 2])), ["targets"]),
    "cross_entropy, float targets": ([(2, 3)], lambda x: F.cross_entropy(x, ids([0.0, 1.0])),
                                     lambda x: TF.nll_loss(x, torch.tensor([0.0, 1.0])), ["integers"]),
    "attention, head sizes": ([(2, 4, 3), (2, 4, 2), (2, 4, 3)],
                              lambda q, k, v: F.scaled_dot_product_attention(q, k, v, causal=False),
                              lambda q, k, v: TF.scaled_dot_product_attention(q, k, v), ["shapes"]),
    "attention, 1-D": ([(3,), (3,), (3,)], lambda q, k, v: F.scaled_dot_product_attention(q, k, v, causal=False),
                       lambda q, k, v: TF.scaled_dot_product_attention(q, k, v), ["rank"]),
    "attention, key and value lengths": ([(2, 4, 3), (2, 4, 3), (2, 5, 3)],
                                         lambda q, k, v: F.scaled_dot_product_attention(q, k, v, causal=False),
                                         lambda q, k, v: TF.scaled_dot_product_attention(q, k, v), ["shapes"]),
    "masked_fill, integer mask": ([(2, 3)], lambda x: x.masked_fill(ids([1, 0, 1]), 0.0),
                                  lambda x: x.masked_fill(torch.tensor([1, 0, 1]), 0.0), ["boolean"]),
    "embedding, 1-D weight": ([(4,)], lambda w: F.embedding(ids([1, 2]), w),
                              lambda w: TF.embedding(torch.tensor([1, 2]), w), ["2-D"]),
    "cross_entropy, integer logits": ([], lambda: F.cross_entropy(Tensor(np.ones((2, 3), np.int64)), ids([0, 1])),
                                      lambda: TF.cross_entropy(torch.ones(2, 3, dtype=torch.long),
                                                               torch.tensor([0, 1])),
                                      ["floating-point"]),
    "matmul, float32 @ float64": ([], lambda: Tensor(np.ones((2, 3), np.float32)) @ Tensor(np.ones((3, 2))),
                                  lambda: torch.ones(2, 3) @ torch.ones(3, 2, dtype=torch.float64),
                                  ["dtype", ".double()", ".float()"]),
    "dropout, p above 1": ([(2, 3)], lambda x: F.dropout(x, 1.5), lambda x: TF.dropout(x, 1.5), ["dropout"]),
    "backward of a non-scalar": ([(2, 3)], lambda x: (x * 2).backward(), lambda x: (x * 2).backward(),
                                 ["one-element"]),
    "backward, grad shape": ([(2, 3)], lambda x: (x * 2).backward(np.ones(3)),
                             lambda x: (x * 2).backward(torch.ones(3, dtype=torch.float64)), ["shape"]),
}


@pytest.mark.parametrize("name", sorted(REFUSALS))
def test_what_torch_refuses_we_refuse_clearly(name):
    shapes, ours, theirs, words = REFUSALS[name]
    ts, tt = _both(*_pair(*shapes)) if shapes else ([], [])
    refused_alike(lambda: ours(*ts), lambda: theirs(*tt), words)


def test_integer_tensors_cannot_require_gradients():
    refused_alike(lambda: Tensor(np.arange(3), requires_grad=True),
                  lambda: torch.tensor(np.arange(3), requires_grad=True), ["floating-point"])


@pytest.mark.filterwarnings("ignore:invalid value encountered:RuntimeWarning")
@settings(max_examples=max(60, PROGRAMS // 10), deadline=None)
@given(shapes=st.tuples(small_shapes(0, 3, 3), small_shapes(0, 3, 3)),
       op=st.sampled_from(["add", "mul", "div", "matmul", "cat", "masked_fill", "pow"]),
       axis=st.integers(-3, 2))
def test_random_shapes_are_refused_or_accepted_alike(shapes, op, axis):
    """Two operands of random shapes: where PyTorch refuses the pair, ours refuses it clearly;
    where PyTorch accepts it, ours gives the same shape."""
    ts, tt = _both(*_pair(*shapes))
    ours, theirs = {
        "add": (lambda x, y: x + y, lambda x, y: x + y),
        "mul": (lambda x, y: x * y, lambda x, y: x * y),
        "div": (lambda x, y: x / y, lambda x, y: x / y),
        "pow": (lambda x, y: x ** y, lambda x, y: x ** y),
        "matmul": (lambda x, y: x @ y, torch.matmul),
        "cat": (lambda x, y: Tensor.cat([x, y], axis=axis), lambda x, y: torch.cat([x, y], dim=axis)),
        "masked_fill": (lambda x, y: x.masked_fill(y.data > 0, 1.0), lambda x, y: x.masked_fill(y > 0, 1.0)),
    }[op]
    try:
        with torch.no_grad():
            expected = tuple(theirs(*tt).shape)
    except Exception:
        refused_alike(lambda: ours(*ts), lambda: theirs(*tt), ["shape", "axis", "0-d", "dimension"])
        return
    assert ours(*ts).shape == expected


# ============================================================================ regression cases
# Programs the fuzzer and its probes found, kept as they were found.

def _program_agrees(arrays, ours, theirs, rtol=1e-10):
    ts, tt = _both(*arrays)
    loss, ref = ours(*ts), theirs(*tt)
    np.testing.assert_allclose(to_numpy(loss.data), ref.detach().numpy(), rtol=rtol, atol=1e-12)
    loss.backward()
    ref.backward()
    for t, u in zip(ts, tt):
        np.testing.assert_allclose(to_numpy(t.grad), u.grad.numpy(), rtol=rtol, atol=1e-12)


def test_found_layer_norm_backward_given_a_read_only_gradient():
    """The sum over rows hands layer norm's backward a read-only broadcast gradient; the numba
    kernel refused it with a TypeError (readonly array(float64, 2d, C))."""
    _program_agrees(_pair((1, 3), (3,)) + _pair((3,)),
                    lambda x, w, b: F.layer_norm(x, w, b, 1e-5).sum(axis=0)[np.array([2, 1])].mean(),
                    lambda x, w, b: TF.layer_norm(x, (3,), w, b, 1e-5).sum(dim=0)[torch.tensor([2, 1])].mean())


def test_found_attention_with_keys_of_another_rank():
    """q of rank 3, k and v of rank 4 (their leading dims broadcast): PyTorch takes it, ours
    said 'q, k, v need the same rank'."""
    _program_agrees(_pair((1, 1, 2), (3, 1, 4, 2)) + _pair((3, 1, 4, 1)),
                    lambda q, k, v: (F.scaled_dot_product_attention(q, k, v, causal=False) ** 2).sum(),
                    lambda q, k, v: (TF.scaled_dot_product_attention(q, k, v) ** 2).sum())


def test_found_power_zero_at_zero():
    """relu makes exact zeros; x ** 0 had gradient 0 * 0^-1 = NaN there, PyTorch's is 0."""
    _program_agrees(_pair((5,)), lambda x: (x.relu() ** 0 + x.relu() ** 2).sum(),
                    lambda x: (x.relu() ** 0 + x.relu() ** 2).sum())


@pytest.mark.parametrize("axis", [0, -1])
def test_found_0d_tensors_take_axis_0_and_minus_1(axis):
    _program_agrees(_pair(()), lambda x: x.sum(axis=axis) * x.max(axis=axis, keepdims=True) + x.softmax(axis)
                    + x.log_softmax(axis) + x.mean(axis=axis),
                    lambda x: x.sum(dim=axis) * x.amax(dim=axis, keepdim=True) + x.softmax(axis)
                    + x.log_softmax(axis) + x.mean(dim=axis))


def test_found_cross_entropy_of_one_row():
    _program_agrees(_pair((4,)), lambda x: F.cross_entropy(x * 2, np.array(1)),
                    lambda x: TF.cross_entropy(x * 2, torch.tensor(1)))


def test_found_mean_over_no_elements_is_nan():
    ours, theirs = Tensor(np.ones((0, 3))).mean(), torch.ones(0, 3).mean()
    assert np.isnan(ours.item()) and bool(torch.isnan(theirs))


@pytest.mark.parametrize("constant", [np.arange(1, 4), np.array([True, False, True]), np.array(2.0)],
                         ids=["int64", "bool", "0-d float64"])
def test_found_constants_keep_a_float32_program_float32(constant, xp):
    """float32 * int64 array was a float64 array (NumPy's promotion); in PyTorch a constant of
    another kind, or a 0-d one, does not raise a float tensor's dtype. An array with axes is
    put on the tensor's device (a host one beside a device tensor is refused, as in PyTorch);
    a 0-d host array is a number anywhere."""
    x, tx = Tensor(np.ones(3, np.float32), requires_grad=True), torch.ones(3, requires_grad=True)
    c = constant if constant.ndim == 0 else xp.asarray(constant)
    for ours, theirs in ((x * c, tx * torch.tensor(constant)), (c + x, torch.tensor(constant) + tx),
                         (x ** c, tx ** torch.tensor(constant)), (x * Tensor(constant), None)):
        assert ours.dtype == np.float32
        assert theirs is None or theirs.dtype == torch.float32
        assert ours.device == x.device
    (x * c).sum().backward()
    assert x.grad.dtype == np.float32


def test_found_layer_norm_without_weight_and_an_empty_index():
    """PyTorch takes layer_norm without a weight (ours failed deep in NumPy), and an empty list
    picks no rows (ours called it a float index)."""
    _program_agrees(_pair((2, 3), (3,)), lambda x, b: (F.layer_norm(x, None, b) ** 2).sum()
                    + (F.layer_norm_composed(x * 2, None) ** 3).sum() + x[[]].sum(),
                    lambda x, b: (TF.layer_norm(x, (3,), None, b) ** 2).sum()
                    + (TF.layer_norm(x * 2, (3,)) ** 3).sum() + x[[]].sum())
