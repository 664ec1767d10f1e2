"""Values and gradients against PyTorch (CPU, float64) for every op, and for random
compositions of ops. Skipped when torch is not installed (pip install '.[parity]')."""
import math

import numpy as np
import pytest
from hypothesis import given, strategies as st

torch = pytest.importorskip("torch")
TF = torch.nn.functional

from tinygrad_gpt import Tensor, functional as F  # noqa: E402
from tinygrad_gpt.backend import to_numpy, get_array_module  # noqa: E402

import strategies as S  # noqa: E402

# float64 on both sides: only rounding differs, so values and gradients agree to ~1e-13;
# 1e-10 relative leaves room for different summation orders.
RTOL, ATOL = 1e-10, 1e-12


def compare(xp, ours, theirs, arrays, requires=None, rtol=RTOL, atol=ATOL, seed=0):
    """Run ``ours`` on Tensors and ``theirs`` on torch tensors made from the same float64
    arrays; backpropagate the same random output weighting; compare values and grads."""
    arrays = [np.asarray(a, dtype=np.float64) for a in arrays]
    requires = [True] * len(arrays) if requires is None else list(requires)
    ts = [Tensor(xp.asarray(a), requires_grad=r) for a, r in zip(arrays, requires)]
    tt = [torch.tensor(a, dtype=torch.float64, requires_grad=r) for a, r in zip(arrays, requires)]
    out, ref = ours(*ts), theirs(*tt)
    assert out.shape == tuple(ref.shape), (out.shape, tuple(ref.shape))
    r = ref.detach().numpy()
    scale = max(1.0, float(np.max(np.abs(r), initial=0.0)))
    np.testing.assert_allclose(out.numpy(), r, rtol=rtol, atol=atol * scale, err_msg="forward")
    w = np.random.default_rng(seed).standard_normal(out.shape)
    out.backward(xp.asarray(w))
    (ref * torch.tensor(w)).sum().backward()
    for i, (t, u) in enumerate(zip(ts, tt)):
        if not u.requires_grad:
            continue
        if u.grad is None:  # torch saw no path from this input to the output
            assert t.grad is None or np.all(to_numpy(t.grad) == 0), f"grad {i}"
            continue
        g = u.grad.numpy()
        gscale = max(1.0, float(np.max(np.abs(g), initial=0.0)))
        assert t.grad is not None, f"input {i} got no gradient"
        np.testing.assert_allclose(to_numpy(t.grad), g, rtol=rtol, atol=atol * gscale,
                                   err_msg=f"gradient of input {i}")


def rand(*shape, seed=0, low=-2.0, high=2.0):
    return np.random.default_rng(seed).uniform(low, high, size=shape)


def all_axes(axis, ndim):
    """torch wants explicit dims where NumPy takes axis=None."""
    return tuple(range(ndim)) if axis is None else axis


# ============================================================================ elementwise

BINARY = {
    "add": (lambda x, y: x + y, lambda x, y: x + y),
    "sub": (lambda x, y: x - y, lambda x, y: x - y),
    "mul": (lambda x, y: x * y, lambda x, y: x * y),
    "div": (lambda x, y: x / y, lambda x, y: x / y),
    "pow": (lambda x, y: x ** y, lambda x, y: x ** y),
}


@pytest.mark.parametrize("name", sorted(BINARY))
@S.FEW
@given(data=st.data())
def test_binary_broadcasting(xp, name, data):
    sx, sy = data.draw(S.broadcastable_shapes(), label="shapes")
    if name == "pow":
        x, y = data.draw(S.positive_arrays(sx, low=0.3)), data.draw(S.float_arrays(sy, bound=2.0))
    elif name == "div":
        x, y = data.draw(S.float_arrays(sx)), data.draw(S.nonzero_arrays(sy))
    else:
        x, y = data.draw(S.float_arrays(sx)), data.draw(S.float_arrays(sy))
    compare(xp, *BINARY[name], [x, y])


@pytest.mark.parametrize("p", [2, 3, 0.5, -1, 1.7, 0, 1, -2.5])
def test_pow_const_exponent(xp, p):
    x = rand(3, 4, seed=1, low=0.3, high=3.0)
    compare(xp, lambda x: x ** p, lambda x: x ** p, [x])


@pytest.mark.parametrize("c", [2.0, 0.5, 3])
def test_pow_const_base(xp, c):
    compare(xp, lambda y: c ** y, lambda y: c ** y, [rand(2, 3, seed=2)])


SCALARS = {
    "c+x": (lambda x: 1.5 + x), "x-c": (lambda x: x - 2.0), "c-x": (lambda x: 2.0 - x),
    "c*x": (lambda x: -3.0 * x), "x/c": (lambda x: x / 4.0), "c/x": (lambda x: 2.0 / x),
}


@pytest.mark.parametrize("name", sorted(SCALARS))
def test_python_scalars(xp, name):
    fn = SCALARS[name]
    compare(xp, fn, fn, [rand(2, 3, seed=3, low=0.5, high=2.0)])


UNARY = {
    "neg": (lambda x: -x, lambda x: -x, None),
    "abs": (lambda x: x.abs(), torch.abs, None),
    "exp": (lambda x: x.exp(), torch.exp, None),
    "log": (lambda x: x.log(), torch.log, (0.2, 4.0)),
    "sqrt": (lambda x: x.sqrt(), torch.sqrt, (0.2, 4.0)),
    "tanh": (lambda x: x.tanh(), torch.tanh, None),
    "sigmoid": (lambda x: x.sigmoid(), torch.sigmoid, (-8.0, 8.0)),
    "relu": (lambda x: x.relu(), torch.relu, None),
    "gelu": (lambda x: F.gelu(x), lambda x: TF.gelu(x, approximate="tanh"), (-5.0, 5.0)),
}


@pytest.mark.parametrize("name", sorted(UNARY))
def test_unary(xp, name):
    ours, theirs, bounds = UNARY[name]
    low, high = bounds or (-2.0, 2.0)
    compare(xp, ours, theirs, [rand(4, 5, seed=4, low=low, high=high)])


def test_relu_at_zero_matches(xp):
    compare(xp, lambda x: x.relu(), torch.relu, [np.array([-1.0, 0.0, 1.0])])


def test_abs_at_zero_and_with_broadcasting_matches(xp):
    compare(xp, lambda x: abs(x), torch.abs, [np.array([-1.0, 0.0, 1.0])])
    compare(xp, lambda x, y: (x - y).abs() * y, lambda x, y: (x - y).abs() * y,
            [rand(2, 3, seed=7), rand(3, seed=8)])


# ============================================================================ matmul

MATMUL_CASES = [((3,), (3,)), ((2, 3), (3,)), ((3,), (3, 4)), ((2, 3), (3, 4)),
                ((5, 2, 3), (5, 3, 4)), ((5, 2, 3), (3, 4)), ((2, 3), (5, 3, 4)),
                ((2, 1, 2, 3), (4, 3, 2)), ((3,), (2, 3, 4)), ((2, 4, 3), (3,))]


@pytest.mark.parametrize("sx,sy", MATMUL_CASES, ids=[f"{a}@{b}" for a, b in MATMUL_CASES])
def test_matmul(xp, sx, sy):
    compare(xp, lambda x, y: x @ y, lambda x, y: x @ y, [rand(*sx, seed=5), rand(*sy, seed=6)])


@S.FEW
@given(data=st.data())
def test_matmul_random_shapes(xp, data):
    sx, sy = data.draw(S.matmul_shapes(), label="shapes")
    compare(xp, lambda x, y: x @ y, lambda x, y: x @ y,
            [data.draw(S.float_arrays(sx)), data.draw(S.float_arrays(sy))])


# ============================================================================ reductions

AXES = [None, 0, -1, (0, 2), (-1, 1), (0, 1, 2)]


@pytest.mark.parametrize("keepdims", [False, True])
@pytest.mark.parametrize("axis", AXES, ids=[repr(a) for a in AXES])
@pytest.mark.parametrize("name", ["sum", "mean", "max"])
def test_reductions(xp, name, axis, keepdims):
    x = np.random.default_rng(7).permutation(24).reshape(2, 3, 4) * 0.3 - 3.0  # no ties
    torch_fn = {"sum": torch.sum, "mean": torch.mean, "max": torch.amax}[name]
    compare(xp, lambda t: getattr(t, name)(axis=axis, keepdims=keepdims),
            lambda t: torch_fn(t, dim=all_axes(axis, 3), keepdim=keepdims), [x])


def test_max_with_ties_matches_amax(xp):
    # both split the gradient equally between tied maxima
    x = np.array([[1.0, 3.0, 3.0], [2.0, 2.0, 2.0]])
    compare(xp, lambda t: t.max(axis=1), lambda t: torch.amax(t, dim=1), [x])
    compare(xp, lambda t: t.max(), lambda t: torch.amax(t), [x])


# ============================================================================ movement

def test_reshape_transpose_permute(xp):
    x = rand(2, 3, 4, seed=8)
    compare(xp, lambda t: t.reshape(4, -1), lambda t: t.reshape(4, -1), [x])
    compare(xp, lambda t: t.permute(2, 0, 1), lambda t: t.permute(2, 0, 1), [x])
    compare(xp, lambda t: t.permute(-1, -3, -2), lambda t: t.permute(2, 0, 1), [x])
    compare(xp, lambda t: t.transpose(0, 2), lambda t: t.transpose(0, 2), [x])
    compare(xp, lambda t: t.transpose(-2, -1), lambda t: t.transpose(-2, -1), [rand(3, 5, seed=9)])
    compare(xp, lambda t: t.T, lambda t: t.T, [rand(3, 5, seed=9)])


INDEXES = {
    "int": lambda: 1,
    "negative int": lambda: -1,
    "slice": lambda: slice(1, None),
    "strided slice": lambda: slice(None, None, 2),
    "tuple": lambda: (slice(None), 2),
    "ellipsis": lambda: (Ellipsis, slice(0, 2)),
    "newaxis": lambda: (None, 1),
    "array repeats": lambda: np.array([0, 2, 0, 0]),
    "array 2d": lambda: np.array([[3, 3], [0, 3]]),
    "array pair": lambda: (np.array([0, 0, 3]), np.array([1, 1, 2])),
    "slice and array": lambda: (slice(1, 3), np.array([2, 2, 0])),
    "bool mask": lambda: np.array([True, False, True, True]),
}


@pytest.mark.parametrize("name", sorted(INDEXES))
def test_getitem(xp, name):
    index = INDEXES[name]()

    def convert(i, mod):
        if isinstance(i, tuple):
            return tuple(convert(p, mod) for p in i)
        return mod(i) if isinstance(i, np.ndarray) else i

    compare(xp, lambda t: t[convert(index, xp.asarray)], lambda t: t[convert(index, torch.from_numpy)],
            [rand(4, 3, seed=10)])


@pytest.mark.parametrize("mshape", [(4, 3), (3,), (4, 1), (1, 3), ()])
def test_masked_fill(xp, mshape):
    mask = np.random.default_rng(11).random(mshape) > 0.5
    compare(xp, lambda t: t.masked_fill(xp.asarray(mask), -2.5),
            lambda t: t.masked_fill(torch.from_numpy(np.asarray(mask)), -2.5), [rand(4, 3, seed=12)])


@pytest.mark.parametrize("axis", [0, 1, -1])
def test_cat_stack_split(xp, axis):
    a, b, c = rand(2, 3, seed=13), rand(2, 3, seed=14), rand(2, 3, seed=15)
    compare(xp, lambda *ts: Tensor.cat(ts, axis=axis), lambda *ts: torch.cat(ts, dim=axis), [a, b, c])
    compare(xp, lambda *ts: Tensor.stack(ts, axis=axis), lambda *ts: torch.stack(ts, dim=axis), [a, b, c])
    x = rand(5, 7, seed=16)
    for spec in (2, 3, [1, 4] if axis == 0 else [2, 0, 5], 10):
        def ours(t):
            return Tensor.cat([p * float(i + 1) for i, p in enumerate(t.split(spec, axis=axis))], axis=axis)

        def theirs(t):
            return torch.cat([p * float(i + 1) for i, p in enumerate(torch.split(t, spec, dim=axis))], dim=axis)

        compare(xp, ours, theirs, [x])


# ============================================================================ transformer functions

@pytest.mark.parametrize("axis", [0, 1, -1])
@pytest.mark.parametrize("name", ["softmax", "log_softmax"])
def test_softmax_family(xp, name, axis):
    ours = getattr(F, name)
    theirs = getattr(torch, name)
    compare(xp, lambda t: ours(t, axis=axis), lambda t: theirs(t, dim=axis), [rand(3, 4, 5, seed=17, low=-5, high=5)])
    big = np.array([[1000.0, 0.0, -1000.0], [1000.0, 1000.0, 999.0]])
    compare(xp, lambda t: ours(t, axis=axis), lambda t: theirs(t, dim=axis), [big])


@pytest.mark.parametrize("ignore_index", [-1, -100, 2])
@pytest.mark.parametrize("lead", [(6,), (2, 3)])
def test_cross_entropy(xp, lead, ignore_index):
    V = 5
    targets = np.random.default_rng(18).integers(0, V, size=lead)
    targets.flat[1] = ignore_index
    targets.flat[-1] = ignore_index
    t_ours = xp.asarray(targets)
    t_torch = torch.from_numpy(targets.reshape(-1))
    compare(xp, lambda l: F.cross_entropy(l, t_ours, ignore_index=ignore_index),
            lambda l: TF.cross_entropy(l.reshape(-1, V), t_torch, ignore_index=ignore_index),
            [rand(*lead, V, seed=19, low=-4, high=4)])


@pytest.mark.parametrize("bias", [True, False])
def test_layer_norm(xp, bias):
    x, w, b = rand(2, 3, 6, seed=20), rand(6, seed=21), rand(6, seed=22)
    if bias:
        compare(xp, F.layer_norm, lambda x, w, b: TF.layer_norm(x, (6,), w, b, eps=1e-5), [x, w, b])
    else:
        compare(xp, F.layer_norm, lambda x, w: TF.layer_norm(x, (6,), w, None, eps=1e-5), [x, w])


def test_embedding_repeated_ids(xp):
    ids = np.array([[1, 1, 4], [0, 1, 4]])
    compare(xp, lambda w: F.embedding(xp.asarray(ids), w), lambda w: TF.embedding(torch.from_numpy(ids), w),
            [rand(5, 3, seed=23)])


def test_dropout_identity_cases(xp):
    compare(xp, lambda x: F.dropout(x, 0.0), lambda x: TF.dropout(x, 0.0), [rand(3, 4, seed=24)])
    compare(xp, lambda x: F.dropout(x, 0.7, training=False), lambda x: TF.dropout(x, 0.7, training=False),
            [rand(3, 4, seed=25)])


@pytest.mark.parametrize("shape", [(5, 4), (2, 3, 5, 4)])
@pytest.mark.parametrize("causal", [True, False])
def test_attention_square(xp, shape, causal):
    q, k, v = (rand(*shape, seed=26 + i) for i in range(3))
    compare(xp, lambda q, k, v: F.scaled_dot_product_attention(q, k, v, causal=causal),
            lambda q, k, v: TF.scaled_dot_product_attention(q, k, v, is_causal=causal), [q, k, v])


@pytest.mark.parametrize("T", [64, 130])
def test_attention_in_query_tiles(xp, T):
    """Causal attention long enough for the default query tiles (two halves at 64, tiles of 64
    with a partial one at 130) against PyTorch, values and gradients."""
    q, k, v = (rand(2, 2, T, 4, seed=70 + i) for i in range(3))
    compare(xp, lambda q, k, v: F.scaled_dot_product_attention(q, k, v, causal=True),
            lambda q, k, v: TF.scaled_dot_product_attention(q, k, v, is_causal=True), [q, k, v])


@pytest.mark.parametrize("block,tile", [(1, None), (3, 2), (2, 1)])
@pytest.mark.parametrize("causal", [True, False])
def test_blocked_attention(xp, block, tile, causal):
    q, k, v = (rand(2, 3, 5, 4, seed=60 + i) for i in range(3))
    compare(xp, lambda q, k, v: F.blocked_attention(q, k, v, causal=causal, block=block, tile=tile),
            lambda q, k, v: TF.scaled_dot_product_attention(q, k, v, is_causal=causal), [q, k, v])


@pytest.mark.parametrize("Tq,Tk", [(1, 6), (3, 6), (4, 5)])
def test_attention_kv_cache_shapes(xp, Tq, Tk):
    """Tq < Tk: torch's is_causal aligns top-left, so give it the bottom-right mask
    explicitly (True = may attend): query i sees keys 0 .. Tk - Tq + i."""
    q, k, v = rand(2, 2, Tq, 4, seed=29), rand(2, 2, Tk, 4, seed=30), rand(2, 2, Tk, 4, seed=31)
    allowed = torch.from_numpy(~np.triu(np.ones((Tq, Tk), dtype=bool), k=1 + Tk - Tq))
    compare(xp, lambda q, k, v: F.scaled_dot_product_attention(q, k, v, causal=True),
            lambda q, k, v: TF.scaled_dot_product_attention(q, k, v, attn_mask=allowed), [q, k, v])


def test_attention_scale_and_different_value_width(xp):
    q, k, v = rand(3, 4, seed=32), rand(5, 4, seed=33), rand(5, 2, seed=34)
    compare(xp, lambda q, k, v: F.scaled_dot_product_attention(q, k, v, causal=False, scale=0.2),
            lambda q, k, v: TF.scaled_dot_product_attention(q, k, v, scale=0.2), [q, k, v])


# ============================================================================ random compositions

def _ones(t):
    return get_array_module(t.data).ones(t.shape[-1])


# (name, ours, theirs); all keep the shape except where noted, and stay finite
UNARY_STEPS = [
    ("tanh", lambda t: t.tanh(), torch.tanh),
    ("sigmoid", lambda t: t.sigmoid(), torch.sigmoid),
    ("gelu", lambda t: t.gelu(), lambda t: TF.gelu(t, approximate="tanh")),
    ("relu", lambda t: t.relu(), torch.relu),
    ("neg", lambda t: -t, lambda t: -t),
    ("exp_tanh", lambda t: t.tanh().exp(), lambda t: t.tanh().exp()),
    ("log_1p_sq", lambda t: (t * t + 1.0).log(), lambda t: (t * t + 1.0).log()),
    ("sqrt", lambda t: (t * t + 0.5).sqrt(), lambda t: (t * t + 0.5).sqrt()),
    ("pow", lambda t: (t * t + 1.0) ** 1.5, lambda t: (t * t + 1.0) ** 1.5),
    ("cube", lambda t: t ** 3 * 0.1, lambda t: t ** 3 * 0.1),
    ("softmax", lambda t: t.softmax(-1), lambda t: torch.softmax(t, -1)),
    ("log_softmax", lambda t: t.log_softmax(0), lambda t: torch.log_softmax(t, 0)),
    ("center", lambda t: t - t.mean(axis=-1, keepdims=True), lambda t: t - t.mean(dim=-1, keepdim=True)),
    ("max_shift", lambda t: t - t.max(axis=0, keepdims=True), lambda t: t - torch.amax(t, dim=0, keepdim=True)),
    ("sum_back", lambda t: t * t.sum(axis=-1, keepdims=True) * 0.1,
     lambda t: t * t.sum(dim=-1, keepdim=True) * 0.1),
    ("layer_norm", lambda t: F.layer_norm(t, Tensor(_ones(t))),
     lambda t: TF.layer_norm(t, (t.shape[-1],), eps=1e-5)),
    ("transpose", lambda t: t.T if t.ndim == 2 else t, lambda t: t.T if t.ndim == 2 else t),
    ("flip_rows", lambda t: t[::-1] * 1.0, lambda t: torch.flip(t, dims=(0,))),
]
BINARY_STEPS = [
    ("add", lambda a, b: a + b, lambda a, b: a + b),
    ("sub", lambda a, b: a - b, lambda a, b: a - b),
    ("mul", lambda a, b: a * b, lambda a, b: a * b),
    ("div", lambda a, b: a / (b * b + 1.0), lambda a, b: a / (b * b + 1.0)),
    ("matmul", lambda a, b: (a @ b) * 0.5 if a.ndim == b.ndim == 2 else a * b,
     lambda a, b: (a @ b) * 0.5 if a.ndim == b.ndim == 2 else a * b),
]


@S.SETTINGS
@given(data=st.data())
def test_random_compositions_match_torch(xp, data):
    """A random expression over three leaves, (n, n), (n, n) and a broadcast (n,), built
    from the steps above, matches torch in value and every gradient to ~1e-8."""
    n = data.draw(st.integers(2, 4), label="n")
    leaves = [data.draw(S.float_arrays(s, bound=2.0), label=f"leaf{i}")
              for i, s in enumerate([(n, n), (n, n), (n,)])]
    steps = data.draw(st.lists(st.tuples(st.booleans(), st.integers(0, 100), st.integers(0, 100),
                                         st.integers(0, 100)), min_size=2, max_size=8), label="steps")

    def build(nodes, which):
        for binary, op, i, j in steps:
            if binary:
                name, ours, theirs = BINARY_STEPS[op % len(BINARY_STEPS)]
                a, b = nodes[i % len(nodes)], nodes[j % len(nodes)]
                nodes.append((ours if which == 0 else theirs)(a, b))
            else:
                name, ours, theirs = UNARY_STEPS[op % len(UNARY_STEPS)]
                nodes.append((ours if which == 0 else theirs)(nodes[i % len(nodes)]))
        return nodes[-1]

    compare(xp, lambda *ts: build(list(ts), 0), lambda *ts: build(list(ts), 1), leaves,
            rtol=1e-8, atol=1e-10)


@pytest.mark.parametrize("lead", [(5,), (2, 3), (2, 1, 3)])
def test_linear(xp, lead):
    rng = np.random.default_rng(11)
    x, w, b = rng.standard_normal(lead + (4,)), rng.standard_normal((4, 6)), rng.standard_normal(6)
    # torch's F.linear takes its weight as (out, in): ours is GPT-2's (in, out)
    compare(xp, F.linear, lambda x, w, b: torch.nn.functional.linear(x, w.T, b), [x, w, b])
    compare(xp, F.linear, lambda x, w: torch.nn.functional.linear(x, w.T), [x, w])


# ============================================================================ PyTorch habits

def _both(scenario):
    """Run ``scenario(T, no_grad, xp)`` with our Tensor and with torch; the outcome of each:
    ("error", exception type) or ("ok", list of float64 arrays)."""
    from tinygrad_gpt import no_grad as our_no_grad

    def ours(values, requires_grad=False):
        return Tensor(np.array(values, dtype=np.float64), requires_grad=requires_grad)

    def theirs(values, requires_grad=False):
        return torch.tensor(values, dtype=torch.float64, requires_grad=requires_grad)

    outcomes = []
    # a gradient stays where it is (a scenario may compute with it); results are read on the host
    for make, no_grad, grad_of, host in [(ours, our_no_grad, lambda t: t.grad, to_numpy),
                                         (theirs, torch.no_grad, lambda t: t.grad, np.asarray)]:
        try:
            outcomes.append(("ok", [np.asarray(host(a), dtype=np.float64)
                                    for a in scenario(make, no_grad, grad_of)]))
        except RuntimeError as e:
            outcomes.append(("error", type(e).__name__))
    return outcomes


def _leaf_inplace(T, no_grad, grad_of):
    w = T([1.0, 2.0], requires_grad=True)
    w -= 0.1
    return [w.detach().numpy()]


def _loop(T, no_grad, grad_of):
    x, w = T([[1.0, 2.0], [3.0, -1.0], [0.5, 0.5]]), T([0.0, 0.0], requires_grad=True)
    y = T([1.0, -2.0, 0.5])
    for _ in range(5):
        loss = ((x @ w - y) ** 2).sum()
        loss.backward()
        with no_grad():
            w -= 0.05 * grad_of(w)
            w *= 0.99
        w.grad = None
    w.data -= 0.01  # the array itself, unchecked
    w.data *= 2.0
    return [w.detach().numpy()]


def _saved_input_changed(T, no_grad, grad_of):
    x = T([1.0, 2.0], requires_grad=True)
    y = (x * x).sum()
    with no_grad():
        x += 1.0
    y.backward()
    return [grad_of(x)]


def _unsaved_input_changed(T, no_grad, grad_of):
    x = T([1.0, 2.0], requires_grad=True)
    y = ((x + 1.0) * 3.0).sum()
    with no_grad():
        x /= 2.0
    y.backward()
    return [grad_of(x), x.detach().numpy()]


def _saved_output_changed(T, no_grad, grad_of):
    x = T([1.0, 2.0], requires_grad=True)
    e = x.exp()
    with no_grad():
        e += 1.0
    e.sum().backward()
    return [grad_of(x)]


def _data_changed(T, no_grad, grad_of):
    x = T([1.0, 2.0], requires_grad=True)
    y = (x * x).sum()
    x.data += 1.0  # not checked, in either: backward uses the new values
    y.backward()
    return [grad_of(x)]


def _view_base_changed(T, no_grad, grad_of):
    base, c = T([[1.0, 2.0, 3.0], [4.0, 5.0, 6.0]]), T([1.0, 2.0, 3.0], requires_grad=True)
    z = (c * base[0]).sum()
    base += 1.0
    z.backward()
    return [grad_of(c)]


def _detached_alias_changed(T, no_grad, grad_of):
    x = T([1.0, 2.0], requires_grad=True)
    y = (x * x).sum()
    alias = x.detach()
    alias *= 3.0
    y.backward()
    return [grad_of(x)]


def _recorded_on_a_non_leaf(T, no_grad, grad_of):
    x, w = T([1.0, 2.0], requires_grad=True), T([0.5, -1.0], requires_grad=True)
    h = x * 2.0
    h += w
    h *= x
    h -= 1.0
    h /= w * w + 1.0
    h.sum().backward()
    return [h.detach().numpy(), grad_of(x), grad_of(w)]


INPLACE_SCENARIOS = {
    "leaf_inplace": _leaf_inplace, "loop": _loop, "saved_input_changed": _saved_input_changed,
    "unsaved_input_changed": _unsaved_input_changed, "saved_output_changed": _saved_output_changed,
    "data_changed": _data_changed, "view_base_changed": _view_base_changed,
    "detached_alias_changed": _detached_alias_changed, "recorded_on_a_non_leaf": _recorded_on_a_non_leaf,
}


@pytest.mark.parametrize("name", sorted(INPLACE_SCENARIOS))
def test_inplace_behaves_as_in_pytorch(name):
    (ours_kind, ours), (theirs_kind, theirs) = _both(INPLACE_SCENARIOS[name])
    assert ours_kind == theirs_kind, (ours, theirs)
    if ours_kind == "error":
        assert ours == theirs == "RuntimeError"
    else:
        for a, b in zip(ours, theirs):
            np.testing.assert_allclose(a, b, rtol=RTOL, atol=ATOL)


@pytest.mark.parametrize("op", ["<", "<=", ">", ">=", "==", "!="])
def test_comparisons_match_pytorch(op):
    a, b = rand(2, 3, seed=9).round(), rand(3, seed=10).round()
    ours = eval(f"Tensor(a, requires_grad=True) {op} Tensor(b)")
    theirs = eval(f"torch.tensor(a, requires_grad=True) {op} torch.tensor(b)")
    assert theirs.dtype == torch.bool and ours.dtype == np.bool_
    assert ours.requires_grad is theirs.requires_grad is False
    np.testing.assert_array_equal(ours.numpy(), theirs.numpy())
    np.testing.assert_array_equal(eval(f"(1.0 {op} Tensor(a)).numpy()"), eval(f"(1.0 {op} torch.tensor(a)).numpy()"))


@pytest.mark.parametrize("shape", [(), (1,), (1, 1), (3,), (0,)])
def test_float_int_bool_match_pytorch(shape):
    a = np.full(shape, -2.5)
    for fn in (float, int, bool):
        outcomes = []
        for t in (Tensor(a), torch.tensor(a)):
            try:
                outcomes.append(fn(t))
            except (ValueError, RuntimeError) as e:
                outcomes.append(type(e))
        assert outcomes[0] == outcomes[1] and type(outcomes[0]) is type(outcomes[1]), (fn, outcomes)


def test_dim_keepdim_and_dtypes_match_pytorch():
    a = rand(2, 3, 4, seed=11)
    for ours, theirs in [(Tensor(a).sum(dim=1), torch.tensor(a).sum(dim=1)),
                         (Tensor(a).mean(dim=(0, 2), keepdim=True), torch.tensor(a).mean(dim=(0, 2), keepdim=True)),
                         (Tensor(a).softmax(dim=0), torch.tensor(a).softmax(dim=0)),
                         (Tensor.cat([Tensor(a)] * 2, dim=2), torch.cat([torch.tensor(a)] * 2, dim=2))]:
        np.testing.assert_allclose(ours.numpy(), theirs.numpy(), rtol=RTOL, atol=ATOL)
    # an ndarray keeps its dtype, as torch.tensor(ndarray) does; Python floats give float32
    for array in (np.ones(2), np.ones(2, dtype=np.float32), np.arange(2)):
        assert str(Tensor(array).dtype) == str(torch.tensor(array).dtype).replace("torch.", "")
    assert Tensor([1.5, 2.0]).dtype == np.float32 and torch.tensor([1.5, 2.0]).dtype == torch.float32
