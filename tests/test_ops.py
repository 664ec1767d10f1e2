"""Property tests for every differentiable op of the engine (ops.py, rules.py, fast/, functional.py).

Each op goes through the same battery (``check_op``):

1. float64 forward against a NumPy reference,
2. float64 gradients against central differences (``check_grads``, tolerances in GRAD_TOL),
3. the input arrays are not mutated by forward, backward or the check,
4. float32 in gives float32 out, for the forward value and for every gradient,
   and the float32 values stay close to the float64 reference.

The suite is written over the ``xp`` fixture so it also runs on CuPy (``--device=cuda``).
"""
import math

import numpy as np
import pytest
from hypothesis import given, strategies as st

import tinygrad_gpt as tg
from tinygrad_gpt import Tensor, functional as F
from tinygrad_gpt import tensor as tensor_module
from tinygrad_gpt.backend import to_numpy
from tinygrad_gpt.gradcheck import check_grads

import strategies as S

# Central differences in float64 with step 1e-6 are accurate to ~1e-9 on these small,
# well-scaled inputs; a wrong backward is off by O(1). Directional check, 2 directions.
GRAD_TOL = dict(eps=1e-6, atol=1e-7, rtol=1e-5)
# float64 forward against NumPy: both compute the same formula, so only rounding differs.
FWD_TOL = dict(rtol=1e-10, atol=1e-12)
# float32 forward and gradients against the float64 results: a sanity bound, not precision.
F32_TOL = dict(rtol=1e-3, atol=1e-4)


def check_op(xp, fn, arrays, reference, requires=None, fwd_tol=FWD_TOL, grad_tol=GRAD_TOL,
             f32_tol=F32_TOL):
    """The standard battery for ``fn(*tensors)`` against ``reference(*numpy_arrays)``."""
    arrays = [np.asarray(a, dtype=np.float64) for a in arrays]
    requires = [True] * len(arrays) if requires is None else list(requires)
    assert any(requires)
    originals = [a.copy() for a in arrays]

    # 1. float64 forward against NumPy
    ts = [Tensor(xp.asarray(a), requires_grad=r) for a, r in zip(arrays, requires)]
    out = fn(*ts)
    expected = np.asarray(reference(*[a.copy() for a in arrays]), dtype=np.float64)
    assert out.dtype == np.float64
    assert out.shape == expected.shape, (out.shape, expected.shape)
    np.testing.assert_allclose(out.numpy(), expected, **fwd_tol)

    # 2. gradients against central differences
    out.backward(xp.ones(out.shape, dtype=out.dtype))
    grads64 = []
    for t, r in zip(ts, requires):
        if r:
            assert t.grad is not None and t.grad.shape == t.data.shape and t.grad.dtype == np.float64
            grads64.append(to_numpy(t.grad))
        else:
            assert t.grad is None
    assert check_grads(fn, ts, **grad_tol)

    # 3. no input was written to
    for t, a in zip(ts, originals):
        np.testing.assert_array_equal(to_numpy(t.data), a)

    # 4. float32 stays float32, forward and gradients
    ts32 = [Tensor(xp.asarray(a.astype(np.float32)), requires_grad=r) for a, r in zip(arrays, requires)]
    out32 = fn(*ts32)
    assert out32.dtype == np.float32, f"float32 inputs gave a {out32.dtype} output"
    scale = max(1.0, float(np.max(np.abs(expected), initial=0.0)))
    np.testing.assert_allclose(out32.numpy(), expected, rtol=f32_tol["rtol"], atol=f32_tol["atol"] * scale)
    out32.backward(xp.ones(out32.shape, dtype=np.float32))
    for t, g64 in zip([t for t, r in zip(ts32, requires) if r], grads64):
        assert t.grad.dtype == np.float32, f"float32 input got a {t.grad.dtype} gradient"
        assert t.grad.shape == t.data.shape
        gscale = max(1.0, float(np.max(np.abs(g64), initial=0.0)))
        np.testing.assert_allclose(to_numpy(t.grad), g64, rtol=f32_tol["rtol"],
                                   atol=f32_tol["atol"] * gscale)
    return out


def rand(*shape, seed=0, low=-2.0, high=2.0):
    return np.random.default_rng(seed).uniform(low, high, size=shape)


# ============================================================================ references

def gelu_ref(x):
    return 0.5 * x * (1 + np.tanh(math.sqrt(2 / math.pi) * (x + 0.044715 * x ** 3)))


def softmax_ref(x, axis=-1):
    e = np.exp(x - x.max(axis=axis, keepdims=True))
    return e / e.sum(axis=axis, keepdims=True)


def log_softmax_ref(x, axis=-1):
    s = x - x.max(axis=axis, keepdims=True)
    return s - np.log(np.exp(s).sum(axis=axis, keepdims=True))


def cross_entropy_ref(logits, targets, ignore_index=-1):
    V = logits.shape[-1]
    lp = log_softmax_ref(logits.reshape(-1, V))
    t = targets.reshape(-1)
    keep = t != ignore_index
    return -lp[np.arange(t.size)[keep], t[keep]].mean()


def layer_norm_ref(x, w, b=None, eps=1e-5):
    mu = x.mean(axis=-1, keepdims=True)
    var = ((x - mu) ** 2).mean(axis=-1, keepdims=True)
    out = (x - mu) / np.sqrt(var + eps) * w
    return out if b is None else out + b


def attention_ref(q, k, v, causal, scale=None):
    Tq, Tk = q.shape[-2], k.shape[-2]
    scale = q.shape[-1] ** -0.5 if scale is None else scale
    s = q @ np.swapaxes(k, -1, -2) * scale
    if causal:  # bottom-right aligned: query i sees keys 0 .. Tk - Tq + i
        s = np.where(np.triu(np.ones((Tq, Tk), dtype=bool), k=1 + Tk - Tq), -np.inf, s)
    return softmax_ref(s) @ v


# ============================================================================ binary arithmetic

BINARY = {
    "add": (lambda x, y: x + y, np.add),
    "sub": (lambda x, y: x - y, np.subtract),
    "mul": (lambda x, y: x * y, np.multiply),
    "div": (lambda x, y: x / y, np.divide),
}
REQUIRES_PAIRS = [(True, True), (True, False), (False, True)]


@pytest.mark.parametrize("name", sorted(BINARY))
@S.SETTINGS
@given(data=st.data())
def test_binary_ops_broadcast(xp, name, data):
    sx, sy = data.draw(S.broadcastable_shapes(), label="shapes")
    x = data.draw(S.float_arrays(sx), label="x")
    y = data.draw(S.nonzero_arrays(sy) if name == "div" else S.float_arrays(sy), label="y")
    requires = data.draw(st.sampled_from(REQUIRES_PAIRS), label="requires")
    fn, ref = BINARY[name]
    check_op(xp, fn, [x, y], ref, requires=requires)


SCALAR_OPS = {
    "x + c": (lambda x: x + 1.5, lambda x: x + 1.5),
    "c + x": (lambda x: 1.5 + x, lambda x: 1.5 + x),
    "x - c": (lambda x: x - 2.25, lambda x: x - 2.25),
    "c - x": (lambda x: 2.25 - x, lambda x: 2.25 - x),
    "x * c": (lambda x: x * -1.75, lambda x: x * -1.75),
    "c * x": (lambda x: 3 * x, lambda x: 3 * x),
    "x / c": (lambda x: x / 4.0, lambda x: x / 4.0),
    "c / x": (lambda x: 2.0 / x, lambda x: 2.0 / x),
}


@pytest.mark.parametrize("name", sorted(SCALAR_OPS))
@S.FEW
@given(data=st.data())
def test_python_scalar_on_either_side(xp, name, data):
    x = data.draw(S.nonzero_arrays(data.draw(S.shapes(), label="shape")), label="x")
    fn, ref = SCALAR_OPS[name]
    check_op(xp, fn, [x], ref)


# ============================================================================ powers

# (exponent, input strategy): fractional and negative powers need positive bases
POWERS = [(2, S.float_arrays), (3, S.float_arrays), (0.5, S.positive_arrays),
          (-1, S.nonzero_arrays), (1.7, S.positive_arrays), (1, S.float_arrays),
          (0, S.nonzero_arrays), (-2.5, S.positive_arrays), (2.0, S.float_arrays)]


@pytest.mark.parametrize("p,arrays", POWERS, ids=[repr(p) for p, _ in POWERS])
@S.FEW
@given(data=st.data())
def test_pow_const(xp, p, arrays, data):
    x = data.draw(arrays(data.draw(S.shapes(), label="shape")), label="x")
    check_op(xp, lambda x: x ** p, [x], lambda x: np.power(x, p))


@S.SETTINGS
@given(data=st.data())
def test_pow_tensor_tensor(xp, data):
    sx, sy = data.draw(S.broadcastable_shapes(), label="shapes")
    x = data.draw(S.positive_arrays(sx, low=0.3, high=3.0), label="base")
    y = data.draw(S.float_arrays(sy, bound=2.0), label="exponent")
    requires = data.draw(st.sampled_from(REQUIRES_PAIRS), label="requires")
    check_op(xp, lambda x, y: x ** y, [x, y], np.power, requires=requires)


@pytest.mark.parametrize("c", [2.0, 0.5, 3, math.e])
@S.FEW
@given(data=st.data())
def test_pow_const_base(xp, c, data):
    y = data.draw(S.float_arrays(data.draw(S.shapes(), label="shape"), bound=2.0), label="y")
    check_op(xp, lambda y: c ** y, [y], lambda y: np.power(float(c), y))


# ============================================================================ matmul

@S.SETTINGS
@given(data=st.data())
def test_matmul_random_shapes(xp, data):
    sx, sy = data.draw(S.matmul_shapes(), label="shapes")
    x = data.draw(S.float_arrays(sx, bound=2.0), label="x")
    y = data.draw(S.float_arrays(sy, bound=2.0), label="y")
    requires = data.draw(st.sampled_from(REQUIRES_PAIRS), label="requires")
    check_op(xp, lambda x, y: x @ y, [x, y], np.matmul, requires=requires)


@S.SETTINGS
@given(data=st.data())
def test_linear_random_shapes(xp, data):
    lead = data.draw(S.shapes(min_dims=1, max_dims=3), label="lead")
    n_in, n_out = data.draw(st.integers(1, 4), label="in"), data.draw(st.integers(1, 4), label="out")
    x = data.draw(S.float_arrays(lead + (n_in,), bound=2.0), label="x")
    w = data.draw(S.float_arrays((n_in, n_out), bound=2.0), label="w")
    b = data.draw(S.float_arrays((n_out,), bound=2.0), label="b")
    check_op(xp, F.linear, [x, w, b], lambda x, w, b: x @ w + b)
    check_op(xp, F.linear, [x, w], lambda x, w: x @ w)
    gelu_linear = lambda *ts: F.linear(*ts, activation="gelu")  # noqa: E731
    check_op(xp, gelu_linear, [x, w, b], lambda x, w, b: gelu_ref(x @ w + b))
    check_op(xp, gelu_linear, [x, w], lambda x, w: gelu_ref(x @ w))


def test_linear_rejects_an_unknown_activation():
    with pytest.raises(ValueError, match="unknown activation 'relu'"):
        F.linear(Tensor(np.ones((2, 3))), Tensor(np.ones((3, 5))), activation="relu")


def test_linear_gelu_keeps_its_derivative_only_when_a_gradient_is_needed():
    """With a gradient to come, the fused op keeps GELU's derivative (and not the pre-activation);
    under no_grad it keeps nothing, and the values are the same either way."""
    from tinygrad_gpt.tensor import no_grad
    x, w, b = (Tensor(rand(*s, seed=20 + i), requires_grad=True) for i, s in enumerate([(4, 3), (3, 6), (6,)]))
    y = F.linear(x, w, b, activation="gelu")
    assert y._ctx.name == "Linear+GELU" and y._ctx.d.shape == (4, 6)
    with no_grad():
        z = F.linear(x, w, b, activation="gelu")
    assert z._ctx is None and not z.requires_grad
    np.testing.assert_array_equal(z.numpy(), y.numpy())
    np.testing.assert_allclose(y.numpy(), gelu_ref(x.numpy() @ w.numpy() + b.numpy()), rtol=1e-12)


def test_linear_rejects_mismatched_shapes():
    with pytest.raises(ValueError, match="linear"):
        F.linear(Tensor(np.ones((2, 3))), Tensor(np.ones((4, 5))))
    with pytest.raises(ValueError, match="bias"):
        F.linear(Tensor(np.ones((2, 3))), Tensor(np.ones((3, 5))), Tensor(np.ones(4)))


MATMUL_CASES = [
    ((3,), (3,)),                 # dot product
    ((2, 3), (3,)),               # matrix @ vector
    ((3,), (3, 4)),               # vector @ matrix
    ((2, 3), (3, 4)),             # matrix @ matrix
    ((5, 2, 3), (5, 3, 4)),       # batched
    ((5, 2, 3), (3, 4)),          # batch @ shared weight
    ((2, 3), (5, 3, 4)),          # shared matrix @ batch
    ((2, 1, 2, 3), (4, 3, 2)),    # broadcast batch dims
    ((3,), (2, 3, 4)),            # vector @ batch
    ((2, 4, 3), (3,)),            # batch @ vector
]


@pytest.mark.parametrize("sx,sy", MATMUL_CASES, ids=[f"{a}@{b}" for a, b in MATMUL_CASES])
def test_matmul_cases(xp, sx, sy):
    for requires in REQUIRES_PAIRS:
        check_op(xp, lambda x, y: x @ y, [rand(*sx, seed=1), rand(*sy, seed=2)], np.matmul,
                 requires=requires)


def test_rmatmul_with_ndarray(xp):
    a = rand(2, 3, seed=3)  # a constant ndarray on the left, cast to y's dtype
    check_op(xp, lambda y: xp.asarray(a, dtype=y.dtype) @ y, [rand(3, 4, seed=4)], lambda y: a @ y)


# ============================================================================ unary

UNARY = {
    "neg": (lambda x: -x, np.negative, lambda s: S.float_arrays(s)),
    "abs": (lambda x: x.abs(), np.abs, lambda s: S.nonzero_arrays(s, low=0.01)),
    "exp": (lambda x: x.exp(), np.exp, lambda s: S.float_arrays(s)),
    "log": (lambda x: x.log(), np.log, lambda s: S.positive_arrays(s)),
    "sqrt": (lambda x: x.sqrt(), np.sqrt, lambda s: S.positive_arrays(s)),
    "tanh": (lambda x: x.tanh(), np.tanh, lambda s: S.float_arrays(s, bound=4.0)),
    "sigmoid": (lambda x: x.sigmoid(), lambda x: 1 / (1 + np.exp(-x)), lambda s: S.float_arrays(s, bound=6.0)),
    "relu": (lambda x: x.relu(), lambda x: np.maximum(x, 0), lambda s: S.nonzero_arrays(s, low=0.01)),
    "gelu": (lambda x: x.gelu(), gelu_ref, lambda s: S.float_arrays(s, bound=4.0)),
    "F.gelu": (lambda x: F.gelu(x), gelu_ref, lambda s: S.float_arrays(s, bound=4.0)),
}


@pytest.mark.parametrize("name", sorted(UNARY))
@S.SETTINGS
@given(data=st.data())
def test_unary_ops(xp, name, data):
    fn, ref, arrays = UNARY[name]
    x = data.draw(arrays(data.draw(S.shapes(), label="shape")), label="x")
    check_op(xp, fn, [x], ref)


def test_sigmoid_is_stable_for_huge_inputs(xp):
    for dtype in (np.float32, np.float64):
        x = Tensor(xp.asarray(np.array([-1000.0, -50.0, 0.0, 50.0, 1000.0], dtype=dtype)), requires_grad=True)
        with np.errstate(all="raise"):
            out = x.sigmoid()
            out.sum().backward()
        assert out.dtype == dtype
        np.testing.assert_allclose(out.numpy(), [0.0, 0.0, 0.5, 1.0, 1.0], atol=1e-15)
        assert np.all(np.isfinite(to_numpy(x.grad)))
        np.testing.assert_allclose(to_numpy(x.grad)[2], 0.25)


@S.SETTINGS
@given(data=st.data())
def test_abs_with_broadcasting(xp, data):
    """|x| * y and |x - y| over shapes that broadcast, away from the kink at 0."""
    sx, sy = data.draw(S.broadcastable_shapes(), label="shapes")
    x, y = data.draw(S.nonzero_arrays(sx, low=0.01), label="x"), data.draw(S.float_arrays(sy), label="y")
    check_op(xp, lambda x, y: abs(x) * y, [x, y], lambda x, y: np.abs(x) * y)
    d = data.draw(S.nonzero_arrays(np.broadcast_shapes(sx, sy), low=0.01), label="x - y")
    check_op(xp, lambda x, y: (x - y).abs(), [y + d, y], lambda x, y: np.abs(x - y))


def test_abs_gradient_at_zero_is_zero(xp):
    x = Tensor(xp.asarray(np.array([-1.5, 0.0, 2.0])), requires_grad=True)
    x.abs().sum().backward()
    np.testing.assert_array_equal(to_numpy(x.grad), [-1.0, 0.0, 1.0])


def test_relu_gradient_at_zero_is_zero(xp):
    x = Tensor(xp.asarray(np.array([-1.0, 0.0, 2.0])), requires_grad=True)
    x.relu().sum().backward()
    np.testing.assert_array_equal(to_numpy(x.grad), [0.0, 0.0, 1.0])


# ============================================================================ reductions

REDUCE_REFS = {"sum": np.sum, "mean": np.mean, "max": np.max}


@pytest.mark.parametrize("name", sorted(REDUCE_REFS))
@S.SETTINGS
@given(data=st.data())
def test_reductions_random_axes(xp, name, data):
    shape = data.draw(S.shapes(max_dims=4), label="shape")
    axis = data.draw(S.axis_args(len(shape)), label="axis")
    keepdims = data.draw(st.booleans(), label="keepdims")
    # max gets distinct values: no ties, and no two values within a finite-difference step
    x = data.draw(S.distinct_arrays(shape) if name == "max" else S.float_arrays(shape), label="x")
    check_op(xp, lambda x: getattr(x, name)(axis=axis, keepdims=keepdims), [x],
             lambda x: REDUCE_REFS[name](x, axis=axis, keepdims=keepdims))


AXES = [None, 0, 1, 2, -1, -3, (0, 2), (-1, 0), (1,), (0, 1, 2), (2, -2)]


@pytest.mark.parametrize("keepdims", [False, True])
@pytest.mark.parametrize("axis", AXES, ids=[repr(a) for a in AXES])
@pytest.mark.parametrize("name", sorted(REDUCE_REFS))
def test_reductions_every_axis_form(xp, name, axis, keepdims):
    x = np.random.default_rng(5).permutation(24).reshape(2, 3, 4) * 0.25 - 3.0  # distinct values
    check_op(xp, lambda x: getattr(x, name)(axis=axis, keepdims=keepdims), [x],
             lambda x: REDUCE_REFS[name](x, axis=axis, keepdims=keepdims))


def test_max_shares_gradient_equally_between_ties(xp):
    x = Tensor(xp.asarray(np.array([[1.0, 3.0, 3.0], [2.0, 0.0, -1.0]])), requires_grad=True)
    x.max(axis=1).sum().backward()
    np.testing.assert_allclose(to_numpy(x.grad), [[0, 0.5, 0.5], [1, 0, 0]])


@pytest.mark.parametrize("axis", [3, -4, (0, 3)])
def test_reduction_axis_out_of_range_is_value_error(xp, axis):
    x = Tensor(xp.zeros((2, 3, 4)))
    for name in ("sum", "mean", "max"):
        with pytest.raises(ValueError, match="out of range"):
            getattr(x, name)(axis=axis)


# ============================================================================ movement

@st.composite
def reshape_cases(draw):
    shape = draw(S.shapes(max_dims=4))
    n = int(np.prod(shape, dtype=np.int64))
    candidates = [(n,), (1, n), (n, 1), tuple(reversed(shape)), shape + (1,), (1,) + shape, ()]
    if n != 1:
        candidates.pop()  # () only holds one element
    target = list(draw(st.sampled_from(candidates)))
    if target and draw(st.booleans()):  # let one dimension be inferred
        target[draw(st.integers(0, len(target) - 1))] = -1
    return shape, tuple(target)


@S.SETTINGS
@given(case=reshape_cases(), data=st.data())
def test_reshape(xp, case, data):
    shape, target = case
    x = data.draw(S.float_arrays(shape), label="x")
    check_op(xp, lambda x: x.reshape(target), [x], lambda x: x.reshape(target))
    check_op(xp, lambda x: x.reshape(*target), [x], lambda x: x.reshape(target))
    check_op(xp, lambda x: x.view(*target), [x], lambda x: x.reshape(target))


@S.SETTINGS
@given(data=st.data())
def test_transpose(xp, data):
    shape = data.draw(S.shapes(max_dims=4), label="shape")
    axes = data.draw(S.permutations_of(len(shape)), label="axes")
    negative = tuple(a - len(shape) for a in axes)
    x = data.draw(S.float_arrays(shape), label="x")
    check_op(xp, lambda x: x.permute(*axes), [x], lambda x: np.transpose(x, axes))
    check_op(xp, lambda x: x.permute(axes), [x], lambda x: np.transpose(x, axes))
    check_op(xp, lambda x: x.permute(*negative), [x], lambda x: np.transpose(x, axes))
    check_op(xp, lambda x: x.T, [x], lambda x: x.T)
    if shape:  # transpose swaps two dims, as in PyTorch
        d0 = data.draw(st.integers(-len(shape), len(shape) - 1), label="dim0")
        d1 = data.draw(st.integers(-len(shape), len(shape) - 1), label="dim1")
        check_op(xp, lambda x: x.transpose(d0, d1), [x], lambda x: np.swapaxes(x, d0, d1))


def test_transpose_swaps_two_dims_as_in_pytorch(xp):
    """On a 2-D tensor transpose(-2, -1) is the matrix transpose (NumPy's transpose(-2, -1)
    would give back the same shape)."""
    x = Tensor(xp.arange(6.0).reshape(2, 3))
    assert x.transpose(-2, -1).shape == (3, 2) and x.transpose(0, 1).shape == (3, 2)
    assert Tensor(xp.zeros((2, 3, 4, 5))).transpose(1, 3).shape == (2, 5, 4, 3)
    assert Tensor(xp.zeros(())).transpose(0, -1).shape == ()


@pytest.mark.parametrize("dims", [(), (0,), (0, 1, 2), ((1, 0),)])
def test_transpose_of_other_than_two_dims_points_to_permute(xp, dims):
    with pytest.raises(TypeError, match="permute"):
        Tensor(xp.zeros((2, 3, 4))).transpose(*dims)


def test_transpose_rejects_a_dim_out_of_range(xp):
    with pytest.raises(IndexError, match="out of range"):
        Tensor(xp.zeros((2, 3))).transpose(0, 2)


@S.SETTINGS
@given(data=st.data())
def test_unsqueeze_and_squeeze(xp, data):
    shape = data.draw(S.shapes(max_dims=3), label="shape")
    x = data.draw(S.float_arrays(shape), label="x")
    dim = data.draw(st.integers(-len(shape) - 1, len(shape)), label="dim")
    check_op(xp, lambda x: x.unsqueeze(dim), [x], lambda x: np.expand_dims(x, dim))
    check_op(xp, lambda x: x.squeeze(), [x], lambda x: np.squeeze(x))
    if shape:
        d = data.draw(st.integers(-len(shape), len(shape) - 1), label="squeeze dim")
        keep = lambda x: np.squeeze(x, d) if x.shape[d] == 1 else x  # a dim longer than 1 stays
        check_op(xp, lambda x: x.squeeze(d), [x], keep)
    check_op(xp, lambda x: x.unsqueeze(dim).squeeze(dim), [x], lambda x: x)


def test_squeeze_and_unsqueeze_as_in_pytorch(xp):
    x = Tensor(xp.zeros((2, 1, 3, 1)))
    assert x.squeeze().shape == (2, 3) and x.squeeze(1).shape == (2, 3, 1)
    assert x.squeeze(0).shape == (2, 1, 3, 1) and x.squeeze((1, -1)).shape == (2, 3)
    assert x.unsqueeze(4).shape == (2, 1, 3, 1, 1) and x.unsqueeze(-5).shape == (1, 2, 1, 3, 1)
    for bad in (lambda: x.unsqueeze(5), lambda: x.squeeze(4), lambda: x.size(4)):
        with pytest.raises(IndexError, match="out of range"):
            bad()


def test_matmul_of_two_float_dtypes_says_how_to_cast(xp):
    x, y = Tensor(xp.ones((2, 3), dtype=np.float32)), Tensor(xp.ones((3, 2)))
    for bad in (lambda: x @ y, lambda: y.T @ x.T):
        with pytest.raises(TypeError, match=r"float32 @ float64|float64 @ float32") as e:
            bad()
        assert ".double()" in str(e.value) and ".float()" in str(e.value)
    assert (x.double() @ y).dtype == np.float64 and (x @ y.float()).dtype == np.float32


def test_size_is_the_shape_and_numel_the_count(xp):
    """As in PyTorch: size() is the shape, size(dim) one length; NumPy's size is numel()."""
    x = Tensor(xp.zeros((2, 3, 4)))
    assert x.size() == (2, 3, 4) and x.size(0) == 2 and x.size(-1) == 4
    assert x.numel() == 24 and x.dim() == 3 and Tensor(xp.zeros(())).numel() == 1


@S.SETTINGS
@given(data=st.data())
def test_pow_and_clone(xp, data):
    x = np.abs(data.draw(S.float_arrays(data.draw(S.shapes(max_dims=3), label="shape")), label="x")) + 0.5
    check_op(xp, lambda x: x.pow(3), [x], lambda x: x ** 3)
    check_op(xp, lambda x: x.pow(x), [x], lambda x: x ** x)
    check_op(xp, lambda x: x.clone() * x, [x], lambda x: x * x)
    check_op(xp, lambda x: x.T.contiguous(), [x], lambda x: x.T)


def test_clone_and_contiguous_copy(xp):
    """clone() has its own memory; contiguous() copies only an array that is not C-ordered."""
    x = Tensor(xp.arange(6.0).reshape(2, 3), requires_grad=True)
    y = x.clone()
    y.data[0, 0] = 7.0
    assert float(x.data[0, 0]) == 0.0 and y.requires_grad
    assert x.contiguous() is x and x.T.contiguous().data.flags.c_contiguous


@pytest.mark.parametrize("method,dtype", [("float", np.float32), ("double", np.float64), ("half", np.float16)])
def test_casts_change_the_dtype_and_pass_the_gradient_back(xp, method, dtype):
    """float(), double() and half() as in PyTorch: a copy in the new dtype, or the tensor
    itself when it has that dtype already; the gradient comes back in the input's dtype."""
    for source in (np.float64, np.float32):
        x = Tensor(xp.asarray([0.5, -1.25, 2.0], dtype=source), requires_grad=True)
        y = getattr(x, method)()
        assert y.dtype == dtype and (y is x) == (source == dtype)
        (y * Tensor(xp.asarray([1.0, 2.0, 3.0], dtype=dtype))).sum().backward()
        assert x.grad.dtype == source
        np.testing.assert_array_equal(to_numpy(x.grad), [1.0, 2.0, 3.0])


def test_cast_gradients_against_central_differences(xp):
    """Through a float32 and a float16 round trip; the steps are large enough that the
    rounding of the narrow dtype stays far below the bounds."""
    x = Tensor(xp.asarray(np.random.default_rng(0).uniform(0.5, 2.0, (3, 4))), requires_grad=True)
    assert check_grads(lambda x: (x.float() * x.float()).double(), [x], eps=1e-2, atol=1e-4, rtol=1e-3,
                       mode="full")
    assert check_grads(lambda x: x.half().double() * 3.0, [x], eps=0.25, atol=1e-2, rtol=1e-2,
                       mode="full")


@pytest.mark.parametrize("axes", [(0,), (0, 0), (0, 2), (0, 1, 2)])
def test_permute_rejects_non_permutations(xp, axes):
    with pytest.raises(ValueError, match="permutation"):
        Tensor(xp.zeros((2, 3))).permute(*axes)


@st.composite
def index_cases(draw):
    """(shape, index) covering ints, slices with any step, Ellipsis/None, integer arrays
    with repeats (1-D and 2-D), pairs of integer arrays, mixed slice+array, boolean masks."""
    shape = draw(S.shapes(min_dims=1, max_dims=3))
    n = shape[0]
    kind = draw(st.sampled_from(["int", "slice", "tuple", "array", "array2d", "pair", "mixed",
                                 "bool", "list"]))
    if kind == "int":
        return shape, draw(st.integers(-n, n - 1))
    if kind == "slice":
        start = draw(st.none() | st.integers(-n - 1, n + 1))
        stop = draw(st.none() | st.integers(-n - 1, n + 1))
        step = draw(st.none() | st.integers(-3, 3).filter(bool))
        return shape, slice(start, stop, step)
    if kind == "tuple":
        parts = [draw(st.sampled_from([slice(None), slice(1, None), slice(None, None, -1)])
                      | st.integers(-m, m - 1)) for m in shape]
        if draw(st.booleans()):
            parts = [Ellipsis] + parts[1:]
        if draw(st.booleans()):
            parts.insert(draw(st.integers(0, len(parts))), None)
        return shape, tuple(parts)
    if kind == "array":
        return shape, draw(S.index_arrays(n))
    if kind == "array2d":
        ids = draw(S.index_arrays(n))
        return shape, np.concatenate([ids, ids[::-1]]).reshape(2, -1)
    if kind == "list":
        return shape, [int(i) for i in draw(S.index_arrays(n))]
    if kind == "pair" and len(shape) >= 2:
        size = draw(st.integers(1, 6))
        rows = draw(st.lists(st.integers(-n, n - 1), min_size=size, max_size=size))
        cols = draw(st.lists(st.integers(0, shape[1] - 1), min_size=size, max_size=size))
        return shape, (np.array(rows + rows[:1]), np.array(cols + cols[:1]))  # a repeated pair
    if kind == "mixed" and len(shape) >= 2:
        return shape, (slice(None), draw(S.index_arrays(shape[1])))
    mask = np.array(draw(st.lists(st.booleans(), min_size=n, max_size=n)))
    return shape, mask


@S.SETTINGS
@given(case=index_cases(), data=st.data())
def test_getitem(xp, case, data):
    shape, index = case
    x = data.draw(S.float_arrays(shape), label="x")

    def fn(t):
        i = tuple(xp.asarray(p) if isinstance(p, np.ndarray) else p for p in index) \
            if isinstance(index, tuple) else (xp.asarray(index) if isinstance(index, np.ndarray) else index)
        return t[i]

    check_op(xp, fn, [x], lambda x: x[index])


def test_getitem_repeated_indices_accumulate(xp):
    x = Tensor(xp.asarray(np.arange(4.0)), requires_grad=True)
    w = np.array([1.0, 10.0, 100.0, 1000.0])
    (x[np.array([0, 0, 2, -4])] * xp.asarray(w)).sum().backward()
    # position 0 is picked three times (ids 0, 0 and -4), position 2 once
    np.testing.assert_allclose(to_numpy(x.grad), [1 + 10 + 1000, 0, 100, 0])

    y = Tensor(xp.asarray(np.ones((3, 2))), requires_grad=True)
    y[np.array([[1, 1], [1, 2]])].sum().backward()
    np.testing.assert_allclose(to_numpy(y.grad), [[0, 0], [3, 3], [1, 1]])

    z = Tensor(xp.asarray(np.ones((2, 3))), requires_grad=True)
    z[np.array([0, 0, 1]), np.array([2, 2, 0])].sum().backward()
    np.testing.assert_allclose(to_numpy(z.grad), [[0, 0, 2], [1, 0, 0]])


def test_getitem_with_tensor_index_and_list(xp):
    x = Tensor(xp.asarray(np.arange(5.0)), requires_grad=True)
    ids = Tensor(xp.asarray(np.array([4, 4, 1])))
    x[ids].sum().backward()
    x[[0, 0]].sum().backward()
    np.testing.assert_allclose(to_numpy(x.grad), [2, 1, 0, 0, 2])


def test_getitem_float_index_is_type_error(xp):
    with pytest.raises(TypeError, match="integers or booleans"):
        Tensor(xp.zeros(3))[np.array([0.0, 1.0])]


@st.composite
def masked_fill_cases(draw):
    """x's shape and a boolean mask that broadcasts to it (fewer dims, size-1 dims)."""
    shape = draw(S.shapes(min_dims=1, max_dims=3))
    drop = draw(st.integers(0, len(shape)))
    mshape = [1 if draw(st.booleans()) else n for n in shape[drop:]]
    mask = np.array(draw(st.lists(st.booleans(), min_size=int(np.prod(mshape, dtype=int)),
                                  max_size=int(np.prod(mshape, dtype=int)))), dtype=bool)
    value = draw(st.floats(-5, 5, allow_nan=False))
    return shape, mask.reshape(mshape), value


@S.SETTINGS
@given(case=masked_fill_cases(), data=st.data())
def test_masked_fill(xp, case, data):
    shape, mask, value = case
    x = data.draw(S.float_arrays(shape), label="x")
    check_op(xp, lambda x: x.masked_fill(xp.asarray(mask), value), [x],
             lambda x: np.where(mask, value, x))


def test_masked_fill_accepts_tensor_and_list_masks_and_inf(xp):
    x = Tensor(xp.asarray(np.array([[1.0, 2.0], [3.0, 4.0]])), requires_grad=True)
    out = x.masked_fill(Tensor(xp.asarray(np.array([True, False]))), -math.inf)
    out2 = x.masked_fill([[False, True], [False, False]], 0.0)
    np.testing.assert_array_equal(out.numpy(), [[-np.inf, 2], [-np.inf, 4]])
    np.testing.assert_array_equal(out2.numpy(), [[1, 0], [3, 4]])
    (out2 * 1.0).sum().backward()
    np.testing.assert_array_equal(to_numpy(x.grad), [[1, 0], [1, 1]])


def test_masked_fill_mask_that_broadcasts_the_input_up(xp):
    """A mask of higher rank than x broadcasts x up (as np.where and torch.masked_fill do).
    Either masked_fill rejects it with a clear ValueError, or it gives the right gradient:
    the gradient of x is summed over the broadcast dimensions."""
    x = Tensor(xp.asarray(np.array([1.0, 2.0, 3.0])), requires_grad=True)
    mask = xp.asarray(np.array([[True, False, False], [False, True, False]]))
    try:
        out = x.masked_fill(mask, 0.0)
    except ValueError:
        return  # rejecting the shapes up front is acceptable
    assert out.shape == (2, 3)
    out.sum().backward()
    np.testing.assert_allclose(to_numpy(x.grad), [1.0, 1.0, 2.0])


@st.composite
def cat_cases(draw):
    ndim = draw(st.integers(1, 3))
    base = list(draw(S.shapes(min_dims=ndim, max_dims=ndim)))
    axis = draw(st.integers(-ndim, ndim - 1))
    sizes = draw(st.lists(st.integers(1, 3), min_size=1, max_size=3))
    shapes = []
    for n in sizes:
        s = list(base)
        s[axis] = n
        shapes.append(tuple(s))
    return shapes, axis


@S.SETTINGS
@given(case=cat_cases(), data=st.data())
def test_cat(xp, case, data):
    shapes, axis = case
    arrays = [data.draw(S.float_arrays(s), label=f"x{i}") for i, s in enumerate(shapes)]
    requires = [True] + [data.draw(st.booleans(), label=f"r{i}") for i in range(1, len(shapes))]
    check_op(xp, lambda *ts: Tensor.cat(ts, axis=axis), arrays,
             lambda *a: np.concatenate(a, axis=axis), requires=requires)


@S.SETTINGS
@given(data=st.data())
def test_stack(xp, data):
    shape = data.draw(S.shapes(max_dims=3), label="shape")
    k = data.draw(st.integers(1, 3), label="k")
    axis = data.draw(st.integers(-len(shape) - 1, len(shape)), label="axis")
    arrays = [data.draw(S.float_arrays(shape), label=f"x{i}") for i in range(k)]
    check_op(xp, lambda *ts: Tensor.stack(ts, axis=axis), arrays,
             lambda *a: np.stack(a, axis=axis))


def test_cat_and_stack_reject_bad_input(xp):
    with pytest.raises(ValueError):
        Tensor.cat([])
    with pytest.raises(ValueError):
        Tensor.stack([])
    with pytest.raises(ValueError, match=r"\(2, 3\).*\(3, 2\)"):
        Tensor.stack([Tensor(xp.zeros((2, 3))), Tensor(xp.zeros((3, 2)))])
    with pytest.raises(ValueError, match="Cat"):
        Tensor.cat([Tensor(xp.zeros((2, 3))), Tensor(xp.zeros((2, 4)))], axis=0)


@st.composite
def split_cases(draw):
    shape = draw(S.shapes(min_dims=1, max_dims=3, max_side=5))
    axis = draw(st.integers(-len(shape), len(shape) - 1))
    n = shape[axis]
    if draw(st.booleans()):
        return shape, axis, draw(st.integers(1, n + 1))
    sizes, left = [], n
    while left:
        sizes.append(draw(st.integers(1, left)))
        left -= sizes[-1]
    return shape, axis, sizes


def _split_ref(x, spec, axis):
    n = x.shape[axis]
    if isinstance(spec, int):
        cuts = list(range(spec, n, spec))
    else:
        cuts = list(np.cumsum(spec)[:-1])
    return np.split(x, cuts, axis=axis)


@S.SETTINGS
@given(case=split_cases(), data=st.data())
def test_split(xp, case, data):
    shape, axis, spec = case
    x = data.draw(S.float_arrays(shape), label="x")
    pieces = Tensor(xp.asarray(x)).split(spec, axis=axis)
    expected = _split_ref(x, spec, axis)
    assert isinstance(pieces, tuple) and len(pieces) == len(expected)
    for p, e in zip(pieces, expected):
        assert p.shape == e.shape
        np.testing.assert_array_equal(p.numpy(), e)

    # each piece weighted differently, so a gradient routed to the wrong piece shows
    def fn(t):
        return Tensor.cat([p * float(i + 1) for i, p in enumerate(t.split(spec, axis=axis))], axis=axis)

    check_op(xp, fn, [x], lambda x: np.concatenate(
        [p * float(i + 1) for i, p in enumerate(_split_ref(x, spec, axis))], axis=axis))


def test_split_rejects_bad_sizes(xp):
    x = Tensor(xp.zeros((5, 2)))
    with pytest.raises(ValueError, match="add up"):
        x.split([2, 2])
    with pytest.raises(ValueError, match="positive"):
        x.split(0)


# ============================================================================ softmax family

@pytest.mark.parametrize("name", ["softmax", "log_softmax"])
@S.SETTINGS
@given(data=st.data())
def test_softmax_family(xp, name, data):
    shape = data.draw(S.shapes(min_dims=1, max_dims=3), label="shape")
    axis = data.draw(st.integers(-len(shape), len(shape) - 1), label="axis")
    x = data.draw(S.float_arrays(shape, bound=5.0), label="x")
    ref = softmax_ref if name == "softmax" else log_softmax_ref
    check_op(xp, lambda x: getattr(x, name)(axis), [x], lambda x: ref(x, axis))
    check_op(xp, lambda x: getattr(F, name)(x, axis=axis), [x], lambda x: ref(x, axis))


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("name", ["softmax", "log_softmax", "softmax_composed", "log_softmax_composed"])
def test_softmax_family_is_stable_for_large_inputs(xp, name, dtype):
    x = np.array([[1000.0, 0.0, -1000.0], [1000.0, 1000.0, 999.0], [-1000.0, -1000.0, -1000.0]])
    t = Tensor(xp.asarray(x.astype(dtype)), requires_grad=True)
    with np.errstate(over="raise", invalid="raise"):
        out = getattr(F, name)(t, axis=-1)
        (out * xp.asarray(np.arange(9.0).reshape(3, 3).astype(dtype))).sum().backward()
    ref = softmax_ref(x) if not name.startswith("log") else log_softmax_ref(x)
    assert out.dtype == dtype
    np.testing.assert_allclose(out.numpy(), ref, rtol=1e-6, atol=1e-6)
    assert np.all(np.isfinite(to_numpy(t.grad)))


# ============================================================================ cross-entropy

@st.composite
def cross_entropy_cases(draw):
    lead = draw(st.sampled_from([(draw(st.integers(1, 6)),),
                                 (draw(st.integers(1, 3)), draw(st.integers(1, 3)))]))
    V = draw(st.integers(2, 5))
    ignore_index = draw(st.sampled_from([-1, -100, 0]))
    n = int(np.prod(lead))
    targets = draw(st.lists(st.integers(0, V - 1) | st.just(ignore_index), min_size=n, max_size=n))
    if all(t == ignore_index for t in targets):  # keep at least one counted row
        targets[0] = 1
    return lead, V, np.array(targets, dtype=np.int64).reshape(lead), ignore_index


@S.SETTINGS
@given(case=cross_entropy_cases(), data=st.data())
def test_cross_entropy(xp, case, data):
    lead, V, targets, ignore_index = case
    logits = data.draw(S.float_arrays(lead + (V,), bound=5.0), label="logits")
    t = xp.asarray(targets)
    check_op(xp, lambda l: F.cross_entropy(l, t, ignore_index=ignore_index), [logits],
             lambda l: cross_entropy_ref(l, targets, ignore_index))


def test_cross_entropy_ignored_rows_get_zero_gradient(xp):
    logits = Tensor(xp.asarray(rand(2, 3, 4, seed=7)), requires_grad=True)
    targets = np.array([[1, -1, 3], [-1, -1, 0]])
    F.cross_entropy(logits, xp.asarray(targets)).backward()
    g = to_numpy(logits.grad)
    np.testing.assert_array_equal(g[targets == -1], 0)
    assert np.all(np.abs(g[targets != -1]).sum(axis=-1) > 0)
    np.testing.assert_allclose(g.sum(axis=-1), 0, atol=1e-15)  # softmax - onehot sums to 0


def test_cross_entropy_accepts_targets_as_tensor_and_list(xp):
    logits = rand(3, 4, seed=8)
    expected = cross_entropy_ref(logits, np.array([0, 3, 2]))
    for targets in (Tensor(xp.asarray(np.array([0, 3, 2]))), [0, 3, 2]):
        out = F.cross_entropy(Tensor(xp.asarray(logits)), targets)
        np.testing.assert_allclose(out.item(), expected, rtol=1e-12)


@pytest.mark.parametrize("targets,match", [
    (np.array([0, 4, 1]), "in \\[0, 4\\)"),        # id == V
    (np.array([0, -2, 1]), "in \\[0, 4\\)"),       # negative, not the ignore_index
    (np.array([0, 1]), "targets of shape"),        # wrong shape
    (np.array([0.0, 1.0, 2.0]), "integers"),       # float ids
])
def test_cross_entropy_rejects_bad_targets(xp, targets, match):
    with pytest.raises(ValueError, match=match):
        F.cross_entropy(Tensor(xp.zeros((3, 4))), xp.asarray(targets))


# ============================================================================ layer norm

@pytest.mark.parametrize("bias", [True, False])
@S.SETTINGS
@given(data=st.data())
def test_layer_norm(xp, bias, data):
    lead = data.draw(S.shapes(max_dims=2), label="lead")
    C = data.draw(st.integers(2, 5), label="C")
    # distinct values keep every row's variance well above eps (a flat row would make
    # rstd ~ 1/sqrt(eps) and central differences meaningless)
    x = data.draw(S.distinct_arrays(lead + (C,), gap=0.2), label="x")
    w = data.draw(S.float_arrays((C,), bound=2.0), label="w")
    arrays = [x, w] + ([data.draw(S.float_arrays((C,)), label="b")] if bias else [])
    requires = [True] + [data.draw(st.booleans(), label=f"r{i}") for i in range(1, len(arrays))]
    check_op(xp, lambda *ts: F.layer_norm(*ts), arrays, layer_norm_ref, requires=requires)


def test_layer_norm_rejects_wrong_parameter_shapes(xp):
    x = Tensor(xp.zeros((2, 3)))
    with pytest.raises(ValueError, match="weight"):
        F.layer_norm(x, Tensor(xp.ones(4)))
    with pytest.raises(ValueError, match="bias"):
        F.layer_norm(x, Tensor(xp.ones(3)), Tensor(xp.ones((1, 3))))


# ============================================================================ embedding

@S.SETTINGS
@given(data=st.data())
def test_embedding(xp, data):
    V = data.draw(st.integers(1, 6), label="V")
    C = data.draw(st.integers(1, 4), label="C")
    ids = data.draw(S.index_arrays(V, negative=False), label="ids")
    if data.draw(st.booleans(), label="2d") and ids.size % 2 == 0:
        ids = ids.reshape(2, -1)
    weight = data.draw(S.float_arrays((V, C)), label="weight")
    check_op(xp, lambda w: F.embedding(xp.asarray(ids), w), [weight], lambda w: w[ids])


def test_embedding_repeated_ids_accumulate(xp):
    weight = Tensor(xp.asarray(rand(4, 3, seed=9)), requires_grad=True)
    ids = np.array([[1, 1, 3], [1, 0, 3]])
    g = rand(2, 3, 3, seed=10)
    F.embedding(xp.asarray(ids), weight).backward(xp.asarray(g))
    expected = np.zeros((4, 3))
    np.add.at(expected, ids, g)
    np.testing.assert_allclose(to_numpy(weight.grad), expected, rtol=1e-14)
    np.testing.assert_allclose(to_numpy(weight.grad)[1], g[0, 0] + g[0, 1] + g[1, 0], rtol=1e-14)
    np.testing.assert_array_equal(to_numpy(weight.grad)[2], 0)


@pytest.mark.parametrize("ids,match", [([0, 4], "in \\[0, 4\\)"), ([-1, 2], "in \\[0, 4\\)"),
                                       (np.array([0.0, 1.0]), "integers")])
def test_embedding_rejects_bad_ids(xp, ids, match):
    with pytest.raises(ValueError, match=match):
        F.embedding(ids, Tensor(xp.zeros((4, 2))))


# ============================================================================ dropout

def test_dropout_p0_and_eval_are_identity(xp):
    x = Tensor(xp.asarray(rand(5, 4, seed=11)), requires_grad=True)
    for out in (F.dropout(x, 0.0), F.dropout(x, 0.5, training=False), F.dropout(x, 0.0, training=False)):
        np.testing.assert_array_equal(out.numpy(), x.numpy())
        out.sum().backward()
    np.testing.assert_array_equal(to_numpy(x.grad), 3 * np.ones((5, 4)))


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("p", [0.1, 0.5, 0.9])
def test_dropout_keeps_one_minus_p_and_scales(xp, p, dtype):
    tg.manual_seed(1234)
    n = 200_000
    xv = 1.0 + np.random.default_rng(12).random(n)  # nonzero, so a zero means "dropped"
    x = Tensor(xp.asarray(xv.astype(dtype)), requires_grad=True)
    out = F.dropout(x, p)
    assert out.dtype == dtype
    o = out.numpy()
    kept = o != 0
    # the kept fraction is 1 - p within ~8 standard deviations of a binomial
    assert abs(kept.mean() - (1 - p)) < 8 * math.sqrt(p * (1 - p) / n)
    np.testing.assert_allclose(o[kept], xv.astype(dtype)[kept] / (1 - p), rtol=1e-6)
    w = np.random.default_rng(13).standard_normal(n)
    out.backward(xp.asarray(w.astype(dtype)))
    assert x.grad.dtype == dtype
    # gradient = incoming gradient times the mask scaling: 1/(1-p) where kept, 0 where dropped
    np.testing.assert_allclose(to_numpy(x.grad), w.astype(dtype) * kept / (1 - p), rtol=1e-6)


def test_dropout_is_reproducible_with_manual_seed(xp):
    x = Tensor(xp.ones((50, 50)))
    tg.manual_seed(7)
    a = F.dropout(x, 0.3).numpy()
    b = F.dropout(x, 0.3).numpy()
    tg.manual_seed(7)
    c = F.dropout(x, 0.3).numpy()
    np.testing.assert_array_equal(a, c)
    assert not np.array_equal(a, b)


@pytest.mark.parametrize("p", [-0.1, 1.0, 1.5])
def test_dropout_rejects_bad_p(xp, p):
    with pytest.raises(ValueError, match="p must be in"):
        F.dropout(Tensor(xp.ones(3)), p)


# ============================================================================ attention

@st.composite
def attention_cases(draw):
    batch = draw(S.shapes(max_dims=2, max_side=2))
    causal = draw(st.booleans())
    Tk = draw(st.integers(1, 4))
    Tq = draw(st.integers(1, Tk)) if causal else draw(st.integers(1, 4))
    hs, hv = draw(st.integers(1, 4)), draw(st.integers(1, 4))
    return batch, Tq, Tk, hs, hv, causal


@S.SETTINGS
@given(case=attention_cases(), data=st.data())
def test_attention(xp, case, data):
    batch, Tq, Tk, hs, hv, causal = case
    q = data.draw(S.float_arrays(batch + (Tq, hs), bound=2.0), label="q")
    k = data.draw(S.float_arrays(batch + (Tk, hs), bound=2.0), label="k")
    v = data.draw(S.float_arrays(batch + (Tk, hv), bound=2.0), label="v")
    check_op(xp, lambda q, k, v: F.scaled_dot_product_attention(q, k, v, causal=causal),
             [q, k, v], lambda q, k, v: attention_ref(q, k, v, causal))


@S.SETTINGS
@given(case=attention_cases(), tile=st.integers(1, 3), data=st.data())
def test_attention_in_query_tiles(xp, case, tile, data):
    """The causal queries in tiles of every size (tiling made to start at two queries here; by
    default it starts at TILED_MIN), including a last partial tile, with Tq <= Tk."""
    from tinygrad_gpt.fast import attention as fused
    batch, Tq, Tk, hs, hv, causal = case
    q = data.draw(S.float_arrays(batch + (Tq, hs), bound=2.0), label="q")
    k = data.draw(S.float_arrays(batch + (Tk, hs), bound=2.0), label="k")
    v = data.draw(S.float_arrays(batch + (Tk, hv), bound=2.0), label="v")
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(fused, "TILED_MIN", 2)
        patch.setattr(fused, "QUERY_TILE", tile)
        check_op(xp, lambda q, k, v: F.scaled_dot_product_attention(q, k, v, causal=causal),
                 [q, k, v], lambda q, k, v: attention_ref(q, k, v, causal))


@pytest.mark.parametrize("Tq,Tk,tile,expected", [
    (5, 5, None, [(0, 5, 5)]),                                  # below TILED_MIN: one tile
    (64, 64, None, [(32, 64, 64), (0, 32, 32)]),                # halves
    (130, 130, None, [(128, 130, 130), (64, 128, 128), (0, 64, 64)]),  # QUERY_TILE rows, a partial one
    (3, 7, 1, [(2, 3, 7), (1, 2, 6), (0, 1, 5)]),              # a KV cache: Tq < Tk
    (4, 4, 9, [(0, 4, 4)]),                                     # a tile wider than the queries
])
def test_query_tiles(Tq, Tk, tile, expected):
    """Tiles cover each query once, widest first, and each sees the keys up to its last query."""
    from tinygrad_gpt.fast.attention import _query_tiles
    assert _query_tiles(Tq, Tk, True, tile) == expected
    assert _query_tiles(Tq, Tk, False, tile) == [(0, Tq, Tk)]  # no mask: every key, one tile


@pytest.mark.host_only("it runs the GPU branch on NumPy arrays; on the device that branch runs anyway")
def test_attention_without_matmul_out_gives_the_same_results(monkeypatch):
    """Off the CPU, Attention writes its products through a temporary instead of matmul's out=
    (the GPU path); run that branch on NumPy arrays: the same values and gradients."""
    from tinygrad_gpt.fast import attention as fused
    q, k, v = rand(2, 3, 5, 4, seed=93), rand(2, 3, 7, 4, seed=94), rand(2, 3, 7, 2, seed=95)
    results = []
    for device in ("cpu", "elsewhere"):
        with pytest.MonkeyPatch.context() as patch:
            patch.setattr(fused, "device_of", lambda a, d=device: d)
            ts = [Tensor(a, requires_grad=True) for a in (q, k, v)]
            out = F.scaled_dot_product_attention(*ts)
            out.backward(np.ones(out.shape))
        results.append([out.numpy()] + [t.grad for t in ts])
    for a, b in zip(*results):
        np.testing.assert_allclose(a, b, rtol=1e-12, atol=1e-14)


@pytest.mark.parametrize("causal", [True, False])
def test_attention_in_default_tiles_with_broadcast_heads(xp, causal):
    """At the default tiling (Tq = 66: two tiles of 33), with k and v broadcast over q's batch
    axis and Tq < Tk, against the reference and numerical gradients."""
    q, k, v = rand(2, 1, 66, 3, seed=90), rand(1, 2, 70, 3, seed=91), rand(1, 2, 70, 2, seed=92)
    check_op(xp, lambda q, k, v: F.scaled_dot_product_attention(q, k, v, causal=causal),
             [q, k, v], lambda q, k, v: attention_ref(q, k, v, causal))


@pytest.mark.parametrize("causal", [True, False])
@pytest.mark.parametrize("Tq,Tk", [(5, 5), (1, 5), (3, 5), (2, 7)])
def test_attention_fixed_shapes(xp, Tq, Tk, causal):
    q, k, v = rand(2, 3, Tq, 4, seed=14), rand(2, 3, Tk, 4, seed=15), rand(2, 3, Tk, 4, seed=16)
    check_op(xp, lambda q, k, v: F.scaled_dot_product_attention(q, k, v, causal=causal),
             [q, k, v], lambda q, k, v: attention_ref(q, k, v, causal))


@st.composite
def blocked_attention_cases(draw):
    batch, Tq, Tk, hs, hv, causal = draw(attention_cases())
    lead = batch if batch else (1,)  # blocks run over the flattened leading dims
    n = int(np.prod(lead))
    return lead, Tq, Tk, hs, hv, causal, draw(st.integers(1, n + 1)), draw(st.integers(1, Tq + 1))


@S.SETTINGS
@given(case=blocked_attention_cases(), data=st.data())
def test_blocked_attention(xp, case, data):
    """Blocks of every size, down to one (Tq, Tk) matrix each, including a last partial block;
    causal query tiles of every size, down to one row, including a last partial tile."""
    lead, Tq, Tk, hs, hv, causal, block, tile = case
    q = data.draw(S.float_arrays(lead + (Tq, hs), bound=2.0), label="q")
    k = data.draw(S.float_arrays(lead + (Tk, hs), bound=2.0), label="k")
    v = data.draw(S.float_arrays(lead + (Tk, hv), bound=2.0), label="v")
    check_op(xp, lambda q, k, v: F.blocked_attention(q, k, v, causal=causal, block=block, tile=tile),
             [q, k, v], lambda q, k, v: attention_ref(q, k, v, causal))


@pytest.mark.parametrize("block,tile", [(1, None), (2, 1), (5, 2), (None, None), (None, 3)])
def test_blocked_attention_matches_fused_attention(xp, block, tile):
    """The same values and gradients as Attention, with a KV cache's Tq < Tk, in blocks and tiles."""
    q, k, v = rand(2, 3, 3, 4, seed=40), rand(2, 3, 6, 4, seed=41), rand(2, 3, 6, 5, seed=42)
    v1, g1, w = _values_and_grads(
        xp, lambda q, k, v: F.blocked_attention(q, k, v, block=block, tile=tile), [q, k, v])
    v2, g2, _ = _values_and_grads(xp, F.scaled_dot_product_attention, [q, k, v], w)
    np.testing.assert_allclose(v1, v2, rtol=1e-12, atol=1e-14)
    for a, b in zip(g1, g2):
        np.testing.assert_allclose(a, b, rtol=1e-10, atol=1e-12)


def test_long_sequences_use_blocked_attention_on_the_cpu(xp):
    """Weights of CHUNKED_MIN elements or more go through BlockedAttention on the CPU, smaller
    ones (and dropout, and the GPU) through Attention; both give the same float32 results."""
    from tinygrad_gpt.fast import attention as fused
    from tinygrad_gpt.fast.chunks import CHUNKED_MIN
    T = 128
    n = -(-CHUNKED_MIN // (T * T))  # (n, T, T) weights: just over the threshold
    q, k, v = (rand(n, T, 8, seed=43 + i).astype(np.float32) for i in range(3))
    big = F.scaled_dot_product_attention(*(Tensor(xp.asarray(a), requires_grad=True) for a in (q, k, v)))
    small = F.scaled_dot_product_attention(*(Tensor(xp.asarray(a[:1]), requires_grad=True) for a in (q, k, v)))
    dropped = F.scaled_dot_product_attention(*(Tensor(xp.asarray(a), requires_grad=True) for a in (q, k, v)),
                                             dropout_p=0.5)
    expected = fused.BlockedAttention if xp is np else fused.Attention
    assert type(big._ctx) is expected
    assert type(small._ctx) is fused.Attention and type(dropped._ctx) is fused.Attention
    np.testing.assert_allclose(big.numpy()[:1], small.numpy(), rtol=1e-5, atol=1e-6)


def test_blocked_attention_rejects_bad_input(xp):
    q, k = Tensor(xp.asarray(rand(2, 3, 4, seed=46))), Tensor(xp.asarray(rand(1, 3, 4, seed=47)))
    with pytest.raises(ValueError, match="same leading dims"):
        F.blocked_attention(q, k, k)
    for block in (0, -1, 1.5):
        with pytest.raises(ValueError, match="block must be a positive int"):
            F.blocked_attention(q, q, q, block=block)
    for tile in (0, -2, 2.0, True):
        with pytest.raises(ValueError, match="tile must be a positive int"):
            F.blocked_attention(q, q, q, tile=tile)


def test_attention_custom_scale(xp):
    q, k, v = rand(2, 3, 4, seed=17), rand(2, 3, 4, seed=18), rand(2, 3, 4, seed=19)
    check_op(xp, lambda q, k, v: F.scaled_dot_product_attention(q, k, v, causal=True, scale=0.3),
             [q, k, v], lambda q, k, v: attention_ref(q, k, v, True, scale=0.3))


@pytest.mark.parametrize("Tq", [1, 2, 4])
def test_causal_attention_kv_cache_rows_match_full_attention(xp, Tq):
    """With Tq < Tk the queries are the newest Tq positions: the rows equal the last Tq
    rows of full causal attention over all Tk positions (bottom-right aligned mask)."""
    Tk = 6
    q_all, k, v = rand(2, Tk, 3, seed=20), rand(2, Tk, 3, seed=21), rand(2, Tk, 3, seed=22)
    full = F.scaled_dot_product_attention(Tensor(xp.asarray(q_all)), Tensor(xp.asarray(k)),
                                          Tensor(xp.asarray(v)), causal=True).numpy()
    last = F.scaled_dot_product_attention(Tensor(xp.asarray(q_all[:, -Tq:])), Tensor(xp.asarray(k)),
                                          Tensor(xp.asarray(v)), causal=True).numpy()
    np.testing.assert_allclose(last, full[:, -Tq:], rtol=1e-12, atol=1e-14)


def test_causal_attention_query_i_sees_keys_up_to_tk_minus_tq_plus_i(xp):
    Tq, Tk = 3, 5
    q, k, v = rand(Tq, 4, seed=23), rand(Tk, 4, seed=24), rand(Tk, 4, seed=25)
    kt, vt = Tensor(xp.asarray(k), requires_grad=True), Tensor(xp.asarray(v), requires_grad=True)
    out = F.scaled_dot_product_attention(Tensor(xp.asarray(q)), kt, vt, causal=True)
    for i in range(Tq):
        kt.grad = vt.grad = None
        out_i = F.scaled_dot_product_attention(Tensor(xp.asarray(q)), kt, vt, causal=True)[i]
        out_i.sum().backward()
        visible = Tk - Tq + i + 1
        assert np.all(to_numpy(vt.grad)[visible:] == 0), f"query {i} saw a future value"
        assert np.all(to_numpy(kt.grad)[visible:] == 0), f"query {i} saw a future key"
        assert np.all(np.abs(to_numpy(vt.grad)[:visible]).sum(axis=1) > 0)
    assert out.shape == (Tq, 4)


def test_attention_with_dropout_gradient(xp):
    """With the generator reseeded before every forward the dropout mask is fixed, so the
    fused backward through the dropped weights can be checked numerically."""
    q, k, v = rand(2, 4, 3, seed=26), rand(2, 4, 3, seed=27), rand(2, 4, 3, seed=28)

    def fn(q, k, v):
        tg.manual_seed(99)
        return F.scaled_dot_product_attention(q, k, v, causal=True, dropout_p=0.4)

    ts = [Tensor(xp.asarray(a), requires_grad=True) for a in (q, k, v)]
    dropped = fn(*ts).numpy()
    assert not np.allclose(dropped, attention_ref(q, k, v, True))
    assert check_grads(fn, ts, **GRAD_TOL)


@pytest.mark.parametrize("shapes,match", [
    (((2, 3), (2, 4), (2, 3)), "do not fit"),          # hs differs
    (((2, 3), (4, 3), (5, 3)), "do not fit"),          # Tk differs between k and v
    (((4, 3), (2, 3), (2, 3)), "Tq <= Tk"),            # causal with Tq > Tk
    (((3,), (3,), (3,)), "rank"),
])
def test_attention_rejects_bad_shapes(xp, shapes, match):
    q, k, v = (Tensor(xp.zeros(s)) for s in shapes)
    with pytest.raises(ValueError, match=match):
        F.scaled_dot_product_attention(q, k, v, causal=True)


# ============================================================================ fused vs composed twins

@st.composite
def twin_cases(draw):
    """(name, fused fn, composed fn, arrays) for one fused op and random inputs."""
    name = draw(st.sampled_from(["softmax", "log_softmax", "cross_entropy", "layer_norm",
                                 "layer_norm_nobias", "gelu", "attention"]))
    if name in ("softmax", "log_softmax"):
        shape = draw(S.shapes(min_dims=1, max_dims=3))
        axis = draw(st.integers(-len(shape), len(shape) - 1))
        x = draw(S.float_arrays(shape, bound=5.0))
        return (name, lambda x: getattr(F, name)(x, axis=axis),
                lambda x: getattr(F, name + "_composed")(x, axis=axis), [x])
    if name == "cross_entropy":
        lead, V, targets, ignore = draw(cross_entropy_cases())
        return (name, lambda l, t=targets: F.cross_entropy(l, t, ignore_index=ignore),
                lambda l, t=targets: F.cross_entropy_composed(l, t, ignore_index=ignore),
                [draw(S.float_arrays(lead + (V,), bound=5.0))])
    if name.startswith("layer_norm"):
        C = draw(st.integers(2, 5))
        shape = draw(S.shapes(max_dims=2)) + (C,)
        arrays = [draw(S.distinct_arrays(shape, gap=0.2)), draw(S.float_arrays((C,), bound=2.0))]
        if name == "layer_norm":
            arrays.append(draw(S.float_arrays((C,))))
        return name, F.layer_norm, F.layer_norm_composed, arrays
    if name == "gelu":
        return name, F.gelu, F.gelu_composed, [draw(S.float_arrays(draw(S.shapes()), bound=4.0))]
    batch, Tq, Tk, hs, hv, causal = draw(attention_cases())
    arrays = [draw(S.float_arrays(batch + (T, h), bound=2.0)) for T, h in ((Tq, hs), (Tk, hs), (Tk, hv))]
    return (name, lambda q, k, v: F.scaled_dot_product_attention(q, k, v, causal=causal),
            lambda q, k, v: F.scaled_dot_product_attention_composed(q, k, v, causal=causal), arrays)


def _values_and_grads(xp, fn, arrays, w=None):
    ts = [Tensor(xp.asarray(a), requires_grad=True) for a in arrays]
    out = fn(*ts)
    if w is None:
        w = np.random.default_rng(0).standard_normal(out.shape)
    out.backward(xp.asarray(w, dtype=out.dtype))
    return out.numpy(), [to_numpy(t.grad) for t in ts], w


@S.SETTINGS
@given(case=twin_cases())
def test_fused_ops_match_composed_twins(xp, case):
    name, fused_fn, composed_fn, arrays = case
    v1, g1, w = _values_and_grads(xp, fused_fn, arrays)
    v2, g2, _ = _values_and_grads(xp, composed_fn, arrays, w)
    np.testing.assert_allclose(v1, v2, rtol=1e-10, atol=1e-12, err_msg=f"{name} values")
    for i, (a, b) in enumerate(zip(g1, g2)):
        np.testing.assert_allclose(a, b, rtol=1e-9, atol=1e-11, err_msg=f"{name} gradient {i}")
    # and the composed twin passes the gradient check on its own
    ts = [Tensor(xp.asarray(a), requires_grad=True) for a in arrays]
    assert check_grads(composed_fn, ts, **GRAD_TOL)


TWINS = {
    "softmax": (F.softmax, F.softmax_composed, [(3, 5)]),
    "log_softmax": (F.log_softmax, F.log_softmax_composed, [(3, 5)]),
    "cross_entropy": (lambda l: F.cross_entropy(l, np.array([1, -1, 4])),
                      lambda l: F.cross_entropy_composed(l, np.array([1, -1, 4])), [(3, 5)]),
    "layer_norm": (F.layer_norm, F.layer_norm_composed, [(3, 5), (5,), (5,)]),
    "layer_norm_nobias": (F.layer_norm, F.layer_norm_composed, [(3, 5), (5,)]),
    "gelu": (F.gelu, F.gelu_composed, [(3, 5)]),
    "linear": (F.linear, F.linear_composed, [(2, 3, 4), (4, 5), (5,)]),
    "linear_gelu": (lambda x, w, b: F.linear(x, w, b, activation="gelu"),
                    lambda x, w, b: F.gelu_composed(F.linear_composed(x, w, b)), [(2, 3, 4), (4, 5), (5,)]),
    "attention": (F.scaled_dot_product_attention, F.scaled_dot_product_attention_composed,
                  [(2, 4, 3), (2, 4, 3), (2, 4, 3)]),
}


@pytest.mark.parametrize("name", sorted(TWINS))
def test_fused_and_composed_twins_keep_float32(xp, name):
    fused_fn, composed_fn, shapes = TWINS[name]
    arrays = [rand(*s, seed=30 + i).astype(np.float32) for i, s in enumerate(shapes)]
    results = []
    for fn in (fused_fn, composed_fn):
        ts = [Tensor(xp.asarray(a), requires_grad=True) for a in arrays]
        out = fn(*ts)
        assert out.dtype == np.float32, f"{name}: {fn.__name__} turned float32 into {out.dtype}"
        out.backward(xp.ones(out.shape, dtype=np.float32))
        assert all(t.grad.dtype == np.float32 for t in ts)
        results.append((out.numpy(), [to_numpy(t.grad) for t in ts]))
    np.testing.assert_allclose(results[0][0], results[1][0], rtol=1e-5, atol=1e-6)
    for a, b in zip(results[0][1], results[1][1]):
        np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-5)


# ============================================================================ no silent float64 inside backward

def _f32(*shape, seed=0, positive=False):
    a = rand(*shape, seed=seed)
    return np.abs(a) + 0.5 if positive else a


BACKWARD_DTYPE_CASES = {
    "add": (lambda x, y: x + y, [(2, 3), (3,)]),
    "sub": (lambda x, y: x - y, [(2, 3), (3,)]),
    "mul": (lambda x, y: x * y, [(2, 3), (3,)]),
    "div": (lambda x, y: x / y, [(2, 3), (3,)]),
    "pow_const": (lambda x: x ** 1.7, [(2, 3)]),
    "pow_tensor": (lambda x, y: x ** y, [(2, 3), (3,)]),
    "matmul": (lambda x, y: x @ y, [(2, 3), (3, 4)]),
    "exp_log_sqrt": (lambda x: x.exp().log().sqrt(), [(2, 3)]),
    "tanh_sigmoid_relu_gelu": (lambda x: x.tanh().sigmoid().relu().gelu(), [(2, 3)]),
    "sum_mean": (lambda x: x.sum(axis=0) + x.mean(axis=0), [(2, 3)]),
    "max": (lambda x: x.max(axis=1), [(2, 3)]),
    "movement": (lambda x: x.reshape(3, 2).T[0:1], [(2, 3)]),
    "getitem_array": (lambda x: x[np.array([0, 0, 1])], [(2, 3)]),
    "cat": (lambda x, y: Tensor.cat([x, y], axis=0), [(2, 3), (1, 3)]),
    "masked_fill": (lambda x: x.masked_fill([True, False, True], 0.0), [(2, 3)]),
    "softmax": (lambda x: x.softmax(-1) + x.log_softmax(-1), [(2, 3)]),
    "cross_entropy": (lambda x: F.cross_entropy(x, np.array([0, 2])), [(2, 3)]),
    "layer_norm": (lambda x, w, b: F.layer_norm(x, w, b), [(2, 3), (3,), (3,)]),
    "attention": (lambda q, k, v: F.scaled_dot_product_attention(q, k, v), [(2, 3), (2, 3), (2, 3)]),
}


@pytest.mark.parametrize("name", sorted(BACKWARD_DTYPE_CASES))
def test_no_backward_silently_upcasts_float32(xp, name, monkeypatch):
    """Every Function.backward must return float32 gradients for float32 inputs: the
    engine casts a stray float64 gradient back, which hides a 2x slower backward."""
    fn, shapes = BACKWARD_DTYPE_CASES[name]
    seen = []
    original = tensor_module._propagate

    def spy(ctx, g, grads):
        backward = ctx.backward

        def recorded(g):
            gxs = backward(g)
            for gx in (gxs if isinstance(gxs, tuple) else (gxs,)):
                if gx is not None:
                    seen.append((ctx.name, gx.dtype))
            return gxs

        ctx.backward = recorded
        return original(ctx, g, grads)

    monkeypatch.setattr(tensor_module, "_propagate", spy)
    ts = [Tensor(xp.asarray(_f32(*s, seed=40 + i, positive=True).astype(np.float32)), requires_grad=True)
          for i, s in enumerate(shapes)]
    out = fn(*ts)
    assert out.dtype == np.float32
    out.backward(xp.ones(out.shape, dtype=np.float32))
    assert seen, "no backward ran"
    upcast = sorted({n for n, d in seen if d != np.float32})
    assert not upcast, f"float32 backward computed float64 gradients in {upcast}"


@pytest.mark.parametrize("threads", [2, 1])
def test_gelu_on_inputs_large_enough_to_be_chunked(xp, threads):
    """Big inputs go through fast.chunks.for_chunks (several chunks: on two threads from CHUNKED_MIN
    elements, on one below): same values and gradients as the composed form."""
    from tinygrad_gpt.fast.chunks import CHUNK, CHUNKED_MIN
    n = CHUNKED_MIN // 2 + 7 if threads == 2 else (3 * CHUNK) // 2 + 7
    x0 = rand(n, 2, seed=5)  # not a multiple of the chunk size
    g0 = rand(*x0.shape, seed=6)
    x1, x2 = Tensor(xp.asarray(x0), requires_grad=True), Tensor(xp.asarray(x0), requires_grad=True)
    y1, y2 = F.gelu(x1), F.gelu_composed(x2)
    np.testing.assert_allclose(y1.numpy(), y2.numpy(), rtol=1e-12, atol=1e-14)
    y1.backward(xp.asarray(g0))
    y2.backward(xp.asarray(g0))
    np.testing.assert_allclose(to_numpy(x1.grad), to_numpy(x2.grad), rtol=1e-10, atol=1e-12)


def test_layer_norm_on_inputs_large_enough_to_be_chunked(xp):
    """Many rows go through fast.chunks.for_chunks in blocks of rows: same values and gradients
    as the composed form, with and without bias."""
    from tinygrad_gpt.fast.chunks import CHUNKED_MIN
    C = 16
    rows = CHUNKED_MIN // C + 5  # many blocks of rows, the last one short
    x0, w0, b0, g0 = rand(rows, C, seed=7), rand(C, seed=8), rand(C, seed=9), rand(rows, C, seed=10)
    for with_bias in (True, False):
        results = []
        for fn in (F.layer_norm, F.layer_norm_composed):
            x, w, b = (Tensor(xp.asarray(a), requires_grad=True) for a in (x0, w0, b0))
            y = fn(x, w, b if with_bias else None)
            y.backward(xp.asarray(g0))
            results.append([y.numpy(), to_numpy(x.grad), to_numpy(w.grad)]
                           + ([to_numpy(b.grad)] if with_bias else []))
        for a, e in zip(*results):
            np.testing.assert_allclose(a, e, rtol=1e-9, atol=1e-10)


@pytest.mark.parametrize("Tq", [256, 100])
def test_attention_on_large_inputs(xp, Tq):
    """Weights with a million entries or more: same values and gradients as the composed form
    (also for the KV-cache shape Tq < Tk)."""
    from tinygrad_gpt.fast.chunks import CHUNKED_MIN
    Tk, hs = 256, 8
    heads = CHUNKED_MIN // (Tq * Tk) + 3
    shapes = [(heads, Tq, hs), (heads, Tk, hs), (heads, Tk, hs)]
    arrays = [rand(*s, seed=20 + i) for i, s in enumerate(shapes)]
    g0 = rand(heads, Tq, hs, seed=30)
    results = []
    for fn in (F.scaled_dot_product_attention, F.scaled_dot_product_attention_composed):
        ts = [Tensor(xp.asarray(a), requires_grad=True) for a in arrays]
        y = fn(*ts, causal=True)
        y.backward(xp.asarray(g0))
        results.append([y.numpy()] + [to_numpy(t.grad) for t in ts])
    for a, e in zip(*results):
        np.testing.assert_allclose(a, e, rtol=1e-9, atol=1e-11)


@pytest.mark.parametrize("attention,T", [("fused", 6), ("fused", 64), ("blocked", 6), ("blocked", 64)])
@pytest.mark.parametrize("size", [1.0, 40.0])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_attention_with_and_without_the_max_shift(xp, monkeypatch, attention, T, size, dtype):
    """Small scores skip the softmax's max shift; scores in the thousands take it, and so do
    score arrays too small for the check to pay (T=6). Every path gives the values and
    gradients of the reference, with no inf or NaN."""
    from tinygrad_gpt.fast import attention as fused
    q, k, v = (size * rand(4, 4, T, 4, seed=70 + i) for i in range(3))
    scores = np.einsum("...qd,...kd->...qk", q, k) * 4 ** -0.5
    checked = scores.size >= fused.SCORE_CHECK_MIN and xp is np
    assert (np.abs(scores).max() <= fused.SMALL_SCORE) == (size == 1.0)
    smalls = []
    scores_fn = fused._scores

    def spy(*args, **kwargs):
        att, small = scores_fn(*args, **kwargs)
        if kwargs.get("check", True):
            smalls.append(small)
        return att, small
    monkeypatch.setattr(fused, "_scores", spy)
    fn = F.scaled_dot_product_attention if attention == "fused" else F.blocked_attention
    ts = [Tensor(xp.asarray(a.astype(dtype)), requires_grad=True) for a in (q, k, v)]
    out = fn(*ts, causal=True)
    out.backward(xp.ones(out.shape, dtype=dtype))
    assert smalls and all(s == (size == 1.0 and checked) for s in smalls), smalls
    expected = attention_ref(q, k, v, True)
    tol = dict(rtol=1e-4, atol=1e-4 * size) if dtype == np.float32 else dict(rtol=1e-10, atol=1e-10 * size)
    np.testing.assert_allclose(out.numpy(), expected, **tol)
    assert all(np.isfinite(to_numpy(t.grad)).all() for t in ts)
    if dtype == np.float64:
        assert check_grads(lambda q, k, v: fn(q, k, v, causal=True), ts, **GRAD_TOL)


def test_scores_one_past_the_bound_take_the_shift():
    """The check is exact: a single score just past SMALL_SCORE (of either sign) is enough."""
    from tinygrad_gpt.fast import attention as fused
    T, hs = 64, 1
    for sign in (1.0, -1.0):
        q = np.ones((2, T, hs))
        k = np.full((2, T, hs), 0.5)
        k[1, 7, 0] = sign * (fused.SMALL_SCORE + 0.01)
        assert fused._scores(q, np.full((2, T, hs), 0.5), 1.0, None)[1]
        assert not fused._scores(q, k, 1.0, None)[1]


def test_attention_dropout_gradient_on_large_inputs(xp):
    """With a seeded generator the dropout mask repeats, so the forward is reproducible and its
    gradient passes the check."""
    from tinygrad_gpt import manual_seed
    from tinygrad_gpt.fast.chunks import CHUNKED_MIN
    T, hs = 128, 4
    heads = CHUNKED_MIN // (T * T) + 1
    ts = [Tensor(xp.asarray(rand(heads, T, hs, seed=40 + i)), requires_grad=True) for i in range(3)]

    def fn(q, k, v):
        manual_seed(3)
        return F.scaled_dot_product_attention(q, k, v, causal=True, dropout_p=0.3)
    assert check_grads(fn, ts, **GRAD_TOL)


def test_gelu_under_no_grad_gives_the_same_values():
    from tinygrad_gpt.tensor import no_grad
    x = Tensor(rand(5, 7, seed=3), requires_grad=True)
    y = F.gelu(x)
    with no_grad():
        z = F.gelu(x)
    assert not z.requires_grad and z._ctx is None
    np.testing.assert_array_equal(z.numpy(), y.numpy())


def _layer_norm_both_ways(x0, w0, b0, g0, dtype):
    """Values and gradients of F.layer_norm with the compiled kernels on, then off."""
    from tinygrad_gpt.fast import kernels
    results = []
    for on in (True, False):
        with pytest.MonkeyPatch.context() as patch:
            patch.setattr(kernels, "enabled", on)
            x, w = Tensor(x0.astype(dtype), requires_grad=True), Tensor(w0.astype(dtype), requires_grad=True)
            b = None if b0 is None else Tensor(b0.astype(dtype), requires_grad=True)
            y = F.layer_norm(x, w, b)
            y.backward(g0.astype(dtype))
        results.append([y.numpy(), x.grad, w.grad] + ([] if b is None else [b.grad]))
    return results


@pytest.mark.host_only("numba kernels take NumPy arrays only")
@S.SETTINGS
@given(data=st.data())
def test_layer_norm_kernels_match_numpy(data):
    """The optional numba kernels (fast/kernels.py) give the NumPy path's values and gradients, with
    and without bias, in float32 and float64; and their gradients pass the numerical check."""
    from tinygrad_gpt.fast import kernels
    if not kernels.load():
        pytest.skip("the numba kernels are not loaded (numba missing: the numba extra, pip install -e \".[numba]\"; or TINYGRAD_GPT_NUMBA=0)")
    lead = data.draw(S.shapes(min_dims=1, max_dims=2), label="lead")
    C = data.draw(st.integers(2, 9), label="C")
    x0 = data.draw(S.float_arrays(lead + (C,), bound=3.0), label="x")
    w0, b0 = data.draw(S.float_arrays((C,)), label="w"), data.draw(S.float_arrays((C,)), label="b")
    g0 = data.draw(S.float_arrays(lead + (C,)), label="g")
    with_bias = data.draw(st.booleans(), label="bias")
    # float32 rounding is amplified by 1 / std, up to 1 / sqrt(eps) for a constant row
    amplify = float((1 / np.sqrt(x0.var(axis=-1) + 1e-5)).max())
    for dtype, tol in ((np.float64, dict(rtol=1e-9, atol=1e-9 * amplify)),
                       (np.float32, dict(rtol=2e-4, atol=2e-4 * amplify))):
        on, off = _layer_norm_both_ways(x0, w0, b0 if with_bias else None, g0, dtype)
        for a, e in zip(on, off):
            assert a.dtype == dtype
            np.testing.assert_allclose(a, e, **tol)
    for on in (True, False):  # both paths against central differences
        ts = [Tensor(a, requires_grad=True) for a in ([x0, w0, b0] if with_bias else [x0, w0])]
        with pytest.MonkeyPatch.context() as patch:
            patch.setattr(kernels, "enabled", on)
            assert check_grads(F.layer_norm, ts, **GRAD_TOL)


@pytest.mark.host_only("numba kernels take NumPy arrays only")
@pytest.mark.filterwarnings("ignore:invalid value encountered:RuntimeWarning")
def test_layer_norm_kernels_on_many_rows_and_bad_values():
    """Blocks of rows on two threads (CHUNKED_MIN elements and more) give the NumPy path's
    results; inf and NaN come out where NumPy puts them (no fast-math shortcuts)."""
    from tinygrad_gpt.fast import kernels
    from tinygrad_gpt.fast.chunks import CHUNKED_MIN
    if not kernels.load():
        pytest.skip("the numba kernels are not loaded (numba missing: the numba extra, pip install -e \".[numba]\"; or TINYGRAD_GPT_NUMBA=0)")
    C = 16
    rows = CHUNKED_MIN // C + 5
    x0, w0, b0, g0 = rand(rows, C, seed=7), rand(C, seed=8), rand(C, seed=9), rand(rows, C, seed=10)
    x0[3, 2], x0[7, :] = np.nan, np.inf
    on, off = _layer_norm_both_ways(x0, w0, b0, g0, np.float64)
    for a, e in zip(on, off):
        np.testing.assert_allclose(a, e, rtol=1e-9, atol=1e-9)  # equal_nan by default
    assert np.isnan(on[0][3]).all() and np.isnan(on[0][7]).all() and np.isfinite(on[0][0]).all()


@pytest.mark.host_only("numba kernels take NumPy arrays only")
def test_a_numba_that_cannot_compile_leaves_numpy_in_charge(monkeypatch):
    """If compiling the kernels fails, their first use says so in a warning, and the ops run on
    NumPy."""
    import importlib
    from tinygrad_gpt.fast import kernels
    if not kernels.load():
        pytest.skip("the numba kernels are not loaded (numba missing: the numba extra, pip install -e \".[numba]\"; or TINYGRAD_GPT_NUMBA=0)")
    numba = kernels.numba

    def broken(*args, **kwargs):
        raise RuntimeError("no compiler today")
    try:
        with pytest.MonkeyPatch.context() as patch:
            patch.setattr(numba, "njit", broken)
            importlib.reload(kernels)
            x = Tensor(rand(3, 4, seed=1), requires_grad=True)
            with pytest.warns(UserWarning, match="numba kernels are off.*no compiler today"):
                F.layer_norm(x, Tensor(np.ones(4))).sum().backward()
        assert not kernels.enabled and kernels.numba is None and kernels.adamw is None
        assert x.grad.shape == (3, 4)
    finally:
        importlib.reload(kernels)
    assert kernels.load()


def _gelu_exact(x):
    """GELU (tanh form) and its derivative in float64, from np.tanh."""
    c = math.sqrt(2 / math.pi)
    t = np.tanh(c * (x + 0.044715 * x ** 3))
    return 0.5 * x * (1 + t), 0.5 * (1 + t) + 0.5 * x * (1 - t * t) * c * (1 + 3 * 0.044715 * x * x)


def test_gelu_kernel_is_close_to_exact():
    """The float32 GELU kernel (its tanh is a rational approximation) against float64 GELU on a
    dense grid, the saturated tails included: as close as float32 allows, within 4e-7 of tanh."""
    from tinygrad_gpt.fast import kernels
    if not kernels.load():
        pytest.skip("the numba kernels are not loaded (numba missing: the numba extra, pip install -e \".[numba]\"; or TINYGRAD_GPT_NUMBA=0)")
    x = np.linspace(-30, 30, 600_001).astype(np.float32)
    out, d = np.empty_like(x), np.empty_like(x)
    kernels.gelu(x, out, d)
    exact_out, exact_d = _gelu_exact(x.astype(np.float64))
    # |out - exact| <= |x| (1/2 * 4e-7 tanh error + float32 rounding)
    assert (np.abs(out - exact_out) <= 5e-7 * np.abs(x) + 1e-7).all()
    assert (np.abs(d - exact_d) <= 5e-7 * (1 + x.astype(np.float64) ** 2) + 1e-6).all()
    only_out = np.empty_like(x)
    kernels.gelu(x, only_out, np.empty(0, np.float32))  # no derivative: the same outputs
    np.testing.assert_array_equal(only_out, out)


@pytest.mark.filterwarnings("ignore:invalid value encountered:RuntimeWarning",
                            "ignore:overflow encountered:RuntimeWarning")
def test_gelu_kernel_on_inf_nan_and_huge_inputs():
    """inf, NaN and huge inputs give the NumPy path's GELU values (NaN where NumPy has NaN), and
    the same derivatives except where NumPy's own intermediate overflows (|x| near 1e19)."""
    from tinygrad_gpt.fast import kernels
    from tinygrad_gpt.fast import gelu_arrays
    if not kernels.load():
        pytest.skip("the numba kernels are not loaded (numba missing: the numba extra, pip install -e \".[numba]\"; or TINYGRAD_GPT_NUMBA=0)")
    x = np.array([np.inf, -np.inf, np.nan, 0, 1e30, -1e30, 88, -88, 1e-30, -3.5], np.float32)
    results = []
    for on in (True, False):
        with pytest.MonkeyPatch.context() as patch:
            patch.setattr(kernels, "enabled", on)
            out, d = np.empty_like(x), np.empty_like(x)
            gelu_arrays(x, out, d)
        results.append((out, d))
    (out, d), (out_np, d_np) = results
    np.testing.assert_array_equal(np.isnan(out), np.isnan(out_np))
    np.testing.assert_allclose(out, out_np, rtol=1e-6, atol=1e-7)
    np.testing.assert_array_equal(np.isnan(d), np.isnan(d_np))
    np.testing.assert_allclose(d, d_np, rtol=1e-6, atol=1e-6)
    assert np.isnan(out[1:3]).all() and out[0] == np.inf and out[6] == 88


@pytest.mark.host_only("numba kernels take NumPy arrays only")
@pytest.mark.parametrize("activation", ["gelu_op", "linear_gelu"])
def test_gelu_kernel_path_matches_numpy_in_float32(activation):
    """In float32, x.gelu() and the MLP's fused Linear+GELU give the NumPy path's values and
    gradients (to float32 accuracy) with the kernel on; float64 always takes the NumPy path."""
    from tinygrad_gpt.fast import kernels
    if not kernels.load():
        pytest.skip("the numba kernels are not loaded (numba missing: the numba extra, pip install -e \".[numba]\"; or TINYGRAD_GPT_NUMBA=0)")
    x0, w0, b0 = rand(70, 33, seed=1) * 3, rand(33, 40, seed=2) * 0.3, rand(40, seed=3)
    g0 = rand(70, 40 if activation == "linear_gelu" else 33, seed=4)
    results = []
    for on in (True, False):
        with pytest.MonkeyPatch.context() as patch:
            patch.setattr(kernels, "enabled", on)
            ts = [Tensor(a.astype(np.float32), requires_grad=True) for a in (x0, w0, b0)]
            y = ts[0].gelu() if activation == "gelu_op" else F.linear(*ts, activation="gelu")
            y.backward(g0.astype(np.float32))
        results.append([y.numpy()] + [t.grad for t in ts if t.grad is not None])
    for a, e in zip(*results):
        assert a.dtype == np.float32
        np.testing.assert_allclose(a, e, rtol=2e-5, atol=2e-5 * max(1.0, float(np.abs(e).max())))
