"""Engine tests for ``Tensor``: construction, the graph, backward, no_grad, dtypes, devices."""
import gc
import math
import operator
import weakref

import numpy as np
import pytest
from hypothesis import given, strategies as st

import tinygrad_gpt as tg
from tinygrad_gpt import Tensor, no_grad, is_grad_enabled, functional as F
from tinygrad_gpt.backend import cuda_available, to_numpy, is_array
from tinygrad_gpt.function import Function
from tinygrad_gpt.nn import Linear

import strategies as S


def leaf(xp, values, dtype=np.float64):
    return Tensor(xp.asarray(np.asarray(values, dtype=dtype)), requires_grad=True)


# ============================================================================ construction

@pytest.mark.parametrize("dtype", [np.float64, np.float32, np.float16, np.int64, np.int32, np.bool_])
def test_array_keeps_its_dtype(xp, dtype):
    a = np.arange(6).reshape(2, 3).astype(dtype)
    t = Tensor(xp.asarray(a))
    assert t.dtype == dtype
    assert t.shape == (2, 3)
    np.testing.assert_array_equal(t.numpy(), a)


@pytest.mark.parametrize("data,shape,dtype", [
    (1.5, (), np.float32), (3, (), np.int64), ([1, 2, 3], (3,), np.int64), ([1.0, 2.0], (2,), np.float32),
    ([[1, 2], [3, 4]], (2, 2), np.int64), ([[0.5], [1.5]], (2, 1), np.float32), ([1, 2.5], (2,), np.float32),
    (True, (), np.bool_), ([True, False], (2,), np.bool_), ([], (0,), np.float32),
])
def test_python_numbers_and_lists_take_pytorchs_dtypes(device, data, shape, dtype):
    """As torch.tensor: floats become float32, ints int64 and bools bool."""
    t = Tensor(data)
    assert t.dtype == dtype
    assert t.shape == shape
    assert t.device == device
    np.testing.assert_array_equal(t.numpy(), np.asarray(data, dtype=dtype))


def test_a_model_takes_a_list_of_token_ids():
    """model(Tensor([[1, 2]])) works: the ids are int64, as in PyTorch."""
    from tinygrad_gpt.model import GPT, GPTConfig
    model = GPT(GPTConfig(block_size=4, vocab_size=5, n_layer=1, n_head=1, n_embd=4))
    logits, loss = model(Tensor([[1, 2]]), Tensor([[2, 3]]))
    assert logits.shape == (1, 2, 5) and np.isfinite(loss.item())


def test_dtype_argument_and_numpy_scalars(xp):
    assert Tensor([1, 2], dtype=np.float64).dtype == np.float64
    assert Tensor(xp.asarray(np.ones(2)), dtype=np.float32).dtype == np.float32
    assert Tensor(np.float64(2.5)).dtype == np.float64
    assert Tensor(np.float32(2.5)).dtype == np.float32
    assert Tensor(np.int64(2)).dtype == np.int64


def test_attributes(xp, device):
    a = np.arange(6.0).reshape(2, 3)
    t = Tensor(xp.asarray(a), requires_grad=True)
    assert is_array(t.data) and isinstance(t.data, xp.ndarray)
    assert t.grad is None
    assert t.shape == (2, 3) and isinstance(t.shape, tuple)
    assert t.dtype == np.float64
    assert t.device == device
    assert t.requires_grad is True
    assert Tensor(xp.asarray(a)).requires_grad is False
    assert t.ndim == 2 and t.numel() == 6 and len(t) == 2
    assert t.is_leaf
    assert "Tensor(" in repr(t) and "requires_grad=True" in repr(t)
    assert t.tolist() == a.tolist()


def test_numpy_item_detach_to(xp, device):
    t = Tensor(xp.asarray(np.array([[2.5]])), requires_grad=True)
    n = t.numpy()
    assert isinstance(n, np.ndarray) and n.dtype == np.float64
    np.testing.assert_array_equal(n, [[2.5]])
    assert t.item() == 2.5 and isinstance(t.item(), float)
    with pytest.raises(ValueError, match="one element"):
        Tensor(xp.zeros(3)).item()

    y = t * 2
    d = y.detach()
    assert d.requires_grad is False and d.is_leaf
    np.testing.assert_array_equal(d.numpy(), [[5.0]])

    moved = t.to(device)
    assert moved is t  # already there
    on_cpu = t.to("cpu")
    assert on_cpu.device == "cpu"
    assert isinstance(on_cpu.data, np.ndarray)
    np.testing.assert_array_equal(on_cpu.numpy(), t.numpy())


def test_constructors(device):
    z = Tensor.zeros(2, 3)
    o = Tensor.ones((4,), requires_grad=True)
    assert z.shape == (2, 3) and z.dtype == np.float32 and z.device == device
    assert o.shape == (4,) and o.requires_grad and np.all(o.numpy() == 1)
    assert np.all(z.numpy() == 0)
    tg.manual_seed(3)
    r1 = Tensor.randn(3, 2)
    tg.manual_seed(3)
    r2 = Tensor.randn((3, 2), dtype=np.float64)
    assert r1.dtype == np.float32 and r2.dtype == np.float64 and r1.shape == (3, 2)
    np.testing.assert_allclose(r1.numpy(), r2.numpy(), rtol=1e-6)


def test_tensor_from_tensor_shares_values(xp):
    a = Tensor(xp.asarray(np.arange(3.0)))
    b = Tensor(a, requires_grad=True)
    assert b.requires_grad and b.is_leaf
    np.testing.assert_array_equal(b.numpy(), a.numpy())


# ============================================================================ gradients of reused tensors

def test_tensor_used_twice_accumulates(xp):
    x = leaf(xp, [1.0, -2.0, 3.0])
    (x * x).sum().backward()
    np.testing.assert_allclose(to_numpy(x.grad), [2.0, -4.0, 6.0])

    y = leaf(xp, [1.0, -2.0, 3.0])
    (y + y).sum().backward()
    np.testing.assert_allclose(to_numpy(y.grad), [2.0, 2.0, 2.0])

    # x feeds two branches that meet again: d/dx (e^x * x + e^x) = e^x (x + 2)
    z = leaf(xp, [0.5, -1.0])
    e = z.exp()
    (e * z + e).sum().backward()
    zv = np.array([0.5, -1.0])
    np.testing.assert_allclose(to_numpy(z.grad), np.exp(zv) * (zv + 2), rtol=1e-14)


def _basic_index(draw, shape):
    """A basic index into ``shape``: per axis an int, a slice (any step) or everything."""
    parts = []
    for n in shape:
        kind = draw(st.sampled_from(["int", "slice", "all"]))
        if kind == "int":
            parts.append(draw(st.integers(-n, n - 1)))
        elif kind == "slice":
            start, stop = draw(st.integers(-n, n)), draw(st.integers(-n, n))
            parts.append(slice(start, stop, draw(st.sampled_from([1, 2, -1]))))
        else:
            parts.append(slice(None))
    return tuple(parts)


@given(data=st.data())
def test_gradients_of_slices_and_whole_uses_add_up(xp, data):
    """A tensor used through several slices (overlapping or not, any step) and whole, in any
    mix: its gradient is the sum of every use's, as a dense reference computes it. The engine
    adds slice gradients in place (SliceGrad), so this covers every order of sparse and dense."""
    shape = data.draw(S.shapes(min_dims=1, max_dims=3, max_side=4))
    uses = data.draw(st.lists(st.sampled_from(["slice", "whole", "square"]), min_size=1, max_size=5))
    x0 = data.draw(S.float_arrays(shape))
    x = leaf(xp, x0)
    expected = np.zeros(shape)
    total = None
    for i, use in enumerate(uses):
        if use == "slice":
            index = _basic_index(data.draw, shape)
            w = np.random.default_rng(i).standard_normal(np.zeros(shape)[index].shape)
            term = (x[index] * Tensor(xp.asarray(w))).sum()
            expected[index] += w  # a basic index picks each element at most once
        elif use == "whole":
            term = (x * 2.0).sum()
            expected += 2.0
        else:
            term = (x * x).sum()
            expected += 2 * x0
        total = term if total is None else total + term
    total.backward()
    np.testing.assert_allclose(to_numpy(x.grad), expected, rtol=1e-12, atol=1e-12)


def test_slice_gradient_takes_the_layout_of_its_input(xp):
    """The gradient of slices of a transposed view comes back in that view's memory order,
    so undoing the transpose gives a C-contiguous array (and a reshape needs no copy)."""
    B, T, n = 2, 5, 3
    a = leaf(xp, np.random.default_rng(0).standard_normal((B, T, 3 * n)))
    parts = a.reshape(B, T, 3, n).permute(2, 0, 1, 3)  # (3, B, T, n), as q, k, v are cut
    seen = []
    original = tg.tensor._propagate

    def spy(ctx, g, grads):
        if type(ctx).__name__ == "Transpose":
            seen.append(g)
        return original(ctx, g, grads)

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(tg.tensor, "_propagate", spy)
        (parts[0] * 1.0 + parts[1] * 2.0 + parts[2] * 3.0).sum().backward()
    assert len(seen) == 1 and seen[0].transpose(1, 2, 0, 3).flags.c_contiguous
    expected = np.broadcast_to(np.repeat([1.0, 2.0, 3.0], n), (B, T, 3 * n))
    np.testing.assert_array_equal(to_numpy(a.grad), expected)


def test_weight_tying_gradient_is_the_sum_of_both_uses(xp):
    """An embedding matrix reused as the output projection (as in GPT-2) gets the sum of
    the gradients of both uses."""
    rng = np.random.default_rng(0)
    V, C = 5, 3
    w = rng.standard_normal((V, C))
    ids = np.array([[0, 3, 3], [1, 4, 0]])
    targets = np.array([[3, 3, 1], [0, 2, 2]])

    def loss(w_in, w_out):
        h = F.embedding(xp.asarray(ids), w_in).tanh()        # (B, T, C)
        logits = h @ w_out.T                                  # (B, T, V)
        return F.cross_entropy(logits, xp.asarray(targets))

    tied = leaf(xp, w)
    loss(tied, tied).backward()
    w_in, w_out = leaf(xp, w), leaf(xp, w)
    loss(w_in, w_out).backward()
    np.testing.assert_allclose(to_numpy(tied.grad), to_numpy(w_in.grad) + to_numpy(w_out.grad), rtol=1e-12)
    assert np.abs(to_numpy(w_in.grad)).sum() > 0 and np.abs(to_numpy(w_out.grad)).sum() > 0


def test_ten_thousand_op_chain_backward(xp):
    """Backward is iterative: a chain far deeper than Python's recursion limit works."""
    x = leaf(xp, [1.0, 2.0])
    c = 1.0001
    y = x
    for i in range(10_000):
        y = y * c if i % 2 == 0 else y + 0.5
    y.sum().backward()
    # d/dx of the chain is c^5000 (the additions contribute 1)
    np.testing.assert_allclose(to_numpy(x.grad), [c ** 5000] * 2, rtol=1e-10)


# ============================================================================ no_grad and detach

def test_no_grad_builds_no_graph(xp):
    x = leaf(xp, [1.0, 2.0])
    with no_grad():
        assert is_grad_enabled() is False
        y = (x * 2).exp().sum()
    assert is_grad_enabled() is True
    assert y.requires_grad is False and y.is_leaf
    with pytest.raises(RuntimeError, match="does not require grad"):
        y.backward()


def test_no_grad_restores_state_after_an_exception():
    with pytest.raises(KeyError):
        with no_grad():
            raise KeyError("boom")
    assert is_grad_enabled() is True


def test_no_grad_as_decorator(xp):
    x = leaf(xp, [1.0])

    @no_grad()
    def f(t):
        assert is_grad_enabled() is False
        return t * 3

    y = f(x)
    assert y.requires_grad is False
    assert is_grad_enabled() is True
    assert (x * 3).requires_grad is True


def test_no_grad_nested_restores_outer_state(xp):
    with no_grad():
        with no_grad():
            pass
        assert is_grad_enabled() is False
    assert is_grad_enabled() is True


def test_no_grad_decorator_is_reentrant(xp):
    """A recursive function decorated with @no_grad() must leave gradients enabled once
    the outermost call returns (the decorator is one object shared by every call)."""
    calls = []

    @no_grad()
    def walk(n):
        calls.append(is_grad_enabled())
        if n:
            walk(n - 1)

    try:
        walk(2)
        assert calls == [False, False, False]
        assert is_grad_enabled() is True, "grad mode stayed disabled after a recursive @no_grad() call"
    finally:
        tg.tensor._grad_enabled = True  # do not leak a disabled grad mode into other tests


def test_detach_stops_the_gradient(xp):
    x = leaf(xp, [1.5, -2.0])
    (x * x.detach()).sum().backward()
    np.testing.assert_allclose(to_numpy(x.grad), [1.5, -2.0])  # not 2x


# ============================================================================ backward: arguments and errors

def test_backward_on_non_scalar_needs_a_grad(xp):
    y = leaf(xp, [1.0, 2.0]) * 2
    with pytest.raises(RuntimeError, match=r"one-element.*\(2,\)"):
        y.backward()


def test_backward_on_tensor_without_grad_is_runtime_error(xp):
    with pytest.raises(RuntimeError, match="does not require grad"):
        Tensor(xp.ones(1)).backward()


def test_backward_with_explicit_grad(xp):
    x = leaf(xp, [[1.0, 2.0], [3.0, 4.0]])
    g = np.array([[1.0, -1.0], [0.5, 2.0]])
    (x * 3).backward(xp.asarray(g))
    np.testing.assert_allclose(to_numpy(x.grad), 3 * g)
    x2 = leaf(xp, [[1.0, 2.0], [3.0, 4.0]])
    (x2 ** 2).backward(Tensor(xp.asarray(g)))
    np.testing.assert_allclose(to_numpy(x2.grad), 2 * np.array([[1, 2], [3, 4]]) * g)
    x3 = leaf(xp, [1.0, 2.0])
    (x3 * 1.0).backward([1.0, 1.0])  # a list works too
    np.testing.assert_allclose(to_numpy(x3.grad), [1.0, 1.0])
    with pytest.raises(ValueError, match=r"\(3,\).*\(2,\)"):
        (x3 * 1.0).backward(xp.ones(3))


def test_backward_on_a_leaf(xp):
    x = leaf(xp, [1.0, 2.0])
    x.backward(xp.asarray(np.array([3.0, 4.0])))
    np.testing.assert_allclose(to_numpy(x.grad), [3.0, 4.0])


def test_shape_mismatch_names_the_op_and_both_shapes(xp):
    with pytest.raises(ValueError) as e:
        Tensor(xp.zeros((2, 3))) + Tensor(xp.zeros(4))
    assert "Add" in str(e.value) and "(2, 3)" in str(e.value) and "(4,)" in str(e.value)
    with pytest.raises(ValueError) as e:
        Tensor(xp.zeros((2, 3))) @ Tensor(xp.zeros((4, 5)))
    assert "MatMul" in str(e.value) and "(2, 3)" in str(e.value) and "(4, 5)" in str(e.value)
    with pytest.raises(ValueError) as e:
        Tensor(xp.zeros((2, 3))) * Tensor(xp.zeros((3, 2)))
    assert "Mul" in str(e.value)


def test_integer_tensor_cannot_require_grad(xp):
    with pytest.raises(TypeError, match="floating"):
        Tensor(xp.asarray(np.array([1, 2])), requires_grad=True)
    t = Tensor(xp.asarray(np.array([1, 2], dtype=np.int32)))
    with pytest.raises(TypeError, match="int32"):
        t.requires_grad_()
    assert t.requires_grad is False


class _WrongShape(Function):
    def forward(self, x):
        return x * 2

    def backward(self, g):
        return g.sum(axis=0)  # wrong: drops a dimension


def test_engine_rejects_gradient_of_wrong_shape(xp):
    x = leaf(xp, np.ones((2, 3)))
    with pytest.raises(RuntimeError, match=r"_WrongShape.*\(3,\).*\(2, 3\)"):
        Tensor._apply(_WrongShape, x).sum().backward()


@S.SETTINGS
@given(data=st.data())
def test_every_grad_has_its_tensors_shape_and_dtype(xp, data):
    (sa, sb) = data.draw(S.broadcastable_shapes(), label="ab")
    sc = data.draw(S.shapes(max_dims=2), label="c")
    dtypes = [data.draw(st.sampled_from([np.float32, np.float64]), label=f"dt{i}") for i in range(3)]
    arrays = [data.draw(S.float_arrays(s, bound=2.0), label=f"x{i}").astype(dt)
              for i, (s, dt) in enumerate(zip((sa, sb, sc), dtypes))]
    a, b, c = (Tensor(xp.asarray(v), requires_grad=True) for v in arrays)
    out = ((a * b).tanh() - a).sum() + (c.exp() / 2.0).mean() * (a.sum() + 1.0)
    out.backward()
    for t in (a, b, c):
        assert t.grad.shape == t.shape
        assert t.grad.dtype == t.dtype
        assert np.all(np.isfinite(to_numpy(t.grad)))


def test_grads_accumulate_across_backward_calls(xp):
    x = leaf(xp, [1.0, 2.0, 3.0])
    for _ in range(2):
        (x * x).sum().backward()
    np.testing.assert_allclose(to_numpy(x.grad), 2 * 2 * np.array([1.0, 2.0, 3.0]))
    x.zero_grad()
    assert x.grad is None


def test_grad_is_a_fresh_writable_array(xp):
    x = leaf(xp, [1.0, 2.0])
    y = x.sum()
    y.backward()
    g = x.grad
    g += 1  # the engine hands out an array the tensor owns
    np.testing.assert_array_equal(to_numpy(x.grad), [2.0, 2.0])


# ============================================================================ graph release

def test_backward_frees_the_graph(xp):
    x = leaf(xp, [0.1, 0.2, 0.3])
    e = x.exp()
    saved = weakref.ref(e.data)    # Exp keeps its output for backward
    node = weakref.ref(e)
    loss = (e * 2.0).sum()
    del e
    gc.collect()
    assert saved() is not None and node() is not None  # the graph holds them
    loss.backward()
    gc.collect()
    assert saved() is None, "the saved arrays outlived backward"
    assert node() is None, "an intermediate tensor outlived backward"
    np.testing.assert_allclose(to_numpy(x.grad), 2 * np.exp([0.1, 0.2, 0.3]), rtol=1e-14)


def test_second_backward_is_a_clear_error(xp):
    x = leaf(xp, [1.0, 2.0])
    loss = (x.exp() * x).sum()
    loss.backward()
    with pytest.raises(RuntimeError, match="retain_graph=True"):
        loss.backward()


def test_retain_graph_allows_a_second_backward(xp):
    x = leaf(xp, [1.0, 2.0])
    e = x.exp()
    saved = weakref.ref(e.data)
    loss = (e * x).sum()
    del e
    loss.backward(retain_graph=True)
    gc.collect()
    assert saved() is not None
    first = to_numpy(x.grad).copy()
    loss.backward()
    np.testing.assert_allclose(to_numpy(x.grad), 2 * first, rtol=1e-14)
    with pytest.raises(RuntimeError, match="freed"):
        loss.backward()


def test_retain_graph_keeps_intermediate_grads(xp):
    x = leaf(xp, [1.0, 2.0])
    h = x * 3.0
    (h * h).sum().backward(retain_graph=True)
    np.testing.assert_allclose(to_numpy(h.grad), 2 * np.array([3.0, 6.0]))
    np.testing.assert_allclose(to_numpy(x.grad), 18 * np.array([1.0, 2.0]))


# ============================================================================ dtype discipline

@pytest.mark.parametrize("expr", [
    "x * 2.0", "2.0 * x", "x + 1.5", "1.5 + x", "x - 0.5", "0.5 - x", "x / 3.0", "2.0 / x",
    "x ** 3", "x ** 2", "x ** 0.5", "x ** -1", "x ** 1.7", "2.0 ** x", "x.mean()", "x.mean(axis=0)",
    "x * 2", "x / 2", "-x", "x.sqrt() * math.pi",
])
def test_float32_stays_float32_with_python_scalars(xp, expr):
    x = Tensor(xp.asarray(np.array([[1.0, 2.0], [3.0, 4.0]], dtype=np.float32)), requires_grad=True)
    out = eval(expr, {"x": x, "math": math})
    assert out.dtype == np.float32, f"{expr} gave {out.dtype}"
    out.sum().backward()
    assert x.grad.dtype == np.float32


def test_ndarray_on_the_left(xp):
    x = leaf(xp, [1.0, 2.0])
    a = xp.asarray(np.array([10.0, 20.0]))
    results = {"+": a + x, "-": a - x, "*": a * x, "/": a / x}
    for op, out in results.items():
        assert isinstance(out, Tensor), f"ndarray {op} Tensor did not give a Tensor"
    np.testing.assert_allclose(results["+"].numpy(), [11.0, 22.0])
    np.testing.assert_allclose(results["-"].numpy(), [9.0, 18.0])
    np.testing.assert_allclose(results["/"].numpy(), [10.0, 10.0])
    (results["+"] + results["*"]).sum().backward()
    np.testing.assert_allclose(to_numpy(x.grad), [11.0, 21.0])


# ============================================================================ devices

@pytest.mark.skipif(cuda_available(), reason="checks the error raised without a GPU")
def test_cuda_without_gpu_is_a_device_error():
    with pytest.raises(tg.DeviceError, match="cuda"):
        Tensor([1.0], device="cuda")
    with pytest.raises(tg.DeviceError, match="CuPy"):
        Tensor([1.0]).to("cuda")
    with pytest.raises(tg.DeviceError):
        with tg.device("cuda"):
            pass
    with pytest.raises(tg.DeviceError):
        Tensor.zeros(2, device="cuda")


@pytest.mark.parametrize("name", ["tpu", "gpu", "CUDA", ""])
def test_unknown_device_is_a_device_error(name):
    with pytest.raises(tg.DeviceError, match="unknown device"):
        Tensor([1.0], device=name)
    with pytest.raises(tg.DeviceError, match="unknown device"):
        Tensor([1.0]).to(name)
    with pytest.raises(tg.DeviceError, match="unknown device"):
        with tg.device(name):
            pass


def test_device_error_is_a_runtime_error():
    assert issubclass(tg.DeviceError, RuntimeError)


@pytest.mark.gpu
def test_mixing_devices_is_a_device_error():
    a = Tensor([1.0, 2.0], device="cpu", requires_grad=True)
    b = Tensor([1.0, 2.0], device="cuda", requires_grad=True)
    for op in (lambda: a + b, lambda: b * a, lambda: a @ b, lambda: Tensor.cat([a, b])):
        with pytest.raises(tg.DeviceError, match="different devices"):
            op()


@pytest.mark.gpu
def test_to_cuda_and_back_carries_the_gradient():
    x = Tensor(np.array([1.0, 2.0, 3.0]), device="cpu", requires_grad=True)
    y = x.to("cuda")
    assert y.device == "cuda" and y.requires_grad
    (y * y).sum().backward()
    assert isinstance(x.grad, np.ndarray)
    np.testing.assert_allclose(to_numpy(x.grad), [2.0, 4.0, 6.0])
    z = Tensor([1.0], device="cuda")
    assert z.to("cpu").device == "cpu" and z.to("cuda") is z


# ============================================================================ in place

OUT_OF_PLACE = {"+=": operator.add, "-=": operator.sub, "*=": operator.mul, "/=": operator.truediv}
INPLACE = {"+=": (lambda t, o: t.__iadd__(o), np.add), "-=": (lambda t, o: t.__isub__(o), np.subtract),
           "*=": (lambda t, o: t.__imul__(o), np.multiply), "/=": (lambda t, o: t.__itruediv__(o), np.divide)}


@pytest.mark.parametrize("op", sorted(INPLACE))
def test_inplace_ops_update_the_array_and_keep_the_tensor(xp, op):
    fn, ref = INPLACE[op]
    start = np.arange(1.0, 7.0).reshape(2, 3)
    for other in (2.0, Tensor(xp.asarray(np.array([1.0, 2.0, 4.0]))), xp.asarray(np.full((2, 1), 0.5))):
        t = Tensor(xp.asarray(start.copy()), dtype=np.float32)
        array = t.data
        assert fn(t, other) is t
        assert t.data is array and t.dtype == np.float32
        o = other.numpy() if isinstance(other, Tensor) else to_numpy(xp.asarray(other))
        np.testing.assert_allclose(t.numpy(), ref(start, o), rtol=1e-6)


@pytest.mark.parametrize("op", sorted(INPLACE))
@S.FEW
@given(data=st.data())
def test_inplace_equals_out_of_place_in_values_and_gradients(xp, op, data):
    """x op= y gives x op y, written into x's array without a graph, recorded with one."""
    sx, sy = data.draw(S.broadcastable_shapes().filter(
        lambda s: np.broadcast_shapes(*s) == tuple(s[0])), label="shapes")
    a, b = data.draw(S.float_arrays(sx), label="x"), data.draw(S.nonzero_arrays(sy), label="y")
    fn, ref = INPLACE[op]
    t = Tensor(xp.asarray(a.copy()))
    array = t.data
    fn(t, Tensor(xp.asarray(b)))
    assert t.data is array
    np.testing.assert_allclose(t.numpy(), ref(a, b), rtol=1e-12)
    # recorded: on a non-leaf, the gradients are those of the out-of-place expression
    grads = []
    for inplace in (True, False):
        x, y = leaf(xp, a), leaf(xp, b)
        h = x * 1.5
        h = fn(h, y) if inplace else OUT_OF_PLACE[op](h, y)
        (h * h).sum().backward()
        grads.append((h.numpy(), to_numpy(x.grad), to_numpy(y.grad)))
    for u, v in zip(*grads):
        np.testing.assert_allclose(u, v, rtol=1e-12)


def test_inplace_on_a_leaf_that_requires_grad_refuses_and_explains_the_idiom(xp):
    w = leaf(xp, [1.0, 2.0])
    for op in ("+=", "-=", "*=", "/="):
        with pytest.raises(RuntimeError, match=r"with no_grad\(\): w -= lr \* w\.grad.*w\.data -= lr \* w\.grad"):
            INPLACE[op][0](w, 1.0)
    np.testing.assert_array_equal(w.numpy(), [1.0, 2.0])  # nothing was written
    with no_grad():
        w -= 0.5
    w.data -= 0.25        # through the array, as in PyTorch
    w.data += -0.25 * w.data  # micrograd's p.data += -lr * p.grad
    np.testing.assert_allclose(w.numpy(), [0.1875, 0.9375])
    assert w.requires_grad and w.is_leaf


def test_a_hand_written_training_loop_updates_the_same_leaf(xp):
    """The loop a newcomer types first: backward, an update under no_grad, zero the grad."""
    rng = np.random.default_rng(0)
    x = Tensor(xp.asarray(rng.standard_normal((16, 3))))
    y = x @ Tensor(xp.asarray(np.array([1.0, -2.0, 0.5])))
    w = Tensor(xp.zeros(3), requires_grad=True)
    first, losses = w, []
    for _ in range(60):
        loss = ((x @ w - y) ** 2).mean()
        loss.backward()
        with no_grad():
            w -= 0.1 * w.grad
        w.zero_grad()
        losses.append(loss.item())
    assert w is first and w.is_leaf and w.requires_grad
    assert losses[-1] < 1e-3 * losses[0]
    np.testing.assert_allclose(w.numpy(), [1.0, -2.0, 0.5], atol=1e-2)


def test_backward_refuses_values_saved_by_an_op_and_changed_in_place(xp):
    x = leaf(xp, [1.0, 2.0])
    y = (x * x).sum()  # Mul keeps x for its backward
    with no_grad():
        x += 1.0
    with pytest.raises(RuntimeError, match=r"backward through Mul: its input 0 .* changed in place"):
        y.backward()
    x = leaf(xp, [1.0, 2.0])
    y = (x + 1.0).sum()  # Add keeps no value: as in PyTorch, a change does not matter
    with no_grad():
        x += 1.0
    y.backward()
    np.testing.assert_array_equal(to_numpy(x.grad), [1.0, 1.0])
    e = leaf(xp, [1.0, 2.0]).exp()  # Exp keeps its output (and Sum keeps nothing)
    loss = e.sum()
    with no_grad():
        e *= 2.0
    with pytest.raises(RuntimeError, match="backward through Exp: its output"):
        loss.backward()
    # a view shares its base's version: writing the base is seen through the view
    base = Tensor(xp.ones((2, 3)))
    c = leaf(xp, [1.0, 2.0, 3.0])
    z = (c * base[0]).sum()
    base += 1.0
    with pytest.raises(RuntimeError, match="changed in place"):
        z.backward()
    # as is writing a detached alias (one array); .data is not checked, as in PyTorch
    x = leaf(xp, [1.0, 2.0])
    y = (x * x).sum()
    alias = x.detach()
    alias += 1.0
    with pytest.raises(RuntimeError, match="changed in place"):
        y.backward()
    x = leaf(xp, [1.0, 2.0])
    (x * x).sum().backward()  # after backward, updates are free
    with no_grad():
        x -= 0.1 * x.grad
    np.testing.assert_allclose(x.numpy(), [0.8, 1.6])


def test_inplace_on_a_tensor_of_the_graph_is_recorded(xp):
    x = leaf(xp, [1.0, 2.0])
    h = x * 2.0
    kept = h
    h += 1.0              # h = 2x + 1
    h *= x                # h = (2x + 1) x
    assert h is kept and h.requires_grad and not h.is_leaf
    h.sum().backward()
    np.testing.assert_allclose(h.numpy(), [3.0, 10.0])
    np.testing.assert_allclose(to_numpy(x.grad), [5.0, 9.0])  # 4x + 1
    acc = Tensor(xp.zeros(2))  # a constant that takes in a tensor needing a gradient
    w = leaf(xp, [3.0, 4.0])
    acc += w * w
    acc.sum().backward()
    np.testing.assert_allclose(to_numpy(w.grad), [6.0, 8.0])
    # an op that used h before the change would route its gradient wrongly: it refuses instead
    x = leaf(xp, [1.0, 2.0])
    h = x * 2.0
    y = h * 3.0
    h += 1.0
    with pytest.raises(RuntimeError, match="backward through Mul: its input 0 .* by a recorded op"):
        (y + h).sum().backward()


def test_inplace_keeps_the_shape_and_the_dtype(xp):
    t = Tensor(xp.zeros(3))
    with pytest.raises(ValueError, match=r"shape \(2, 3\) cannot update one of shape \(3,\)"):
        t += Tensor(xp.ones((2, 3)))
    with pytest.raises(ValueError, match="cannot update"):
        t += Tensor(xp.ones(4))
    t32 = Tensor(xp.zeros(2, dtype=np.float32))
    t32 += xp.ones(2, dtype=np.float64)
    assert t32.dtype == np.float32


# ============================================================================ PyTorch habits

COMPARE = {"<": np.less, "<=": np.less_equal, ">": np.greater, ">=": np.greater_equal,
           "==": np.equal, "!=": np.not_equal}


@pytest.mark.parametrize("op", sorted(COMPARE))
def test_comparisons_give_boolean_tensors_without_a_gradient(xp, op):
    a, b = np.array([[1.0, 2.0, 3.0]]), np.array([[2.0], [3.0]])
    x, y = leaf(xp, a), leaf(xp, b)
    for out, expected in [(eval(f"x {op} y"), COMPARE[op](a, b)), (eval(f"x {op} 2.0"), COMPARE[op](a, 2.0)),
                          (eval(f"2.0 {op} x"), COMPARE[op](2.0, a)),
                          (eval(f"x {op} xp.asarray(b)"), COMPARE[op](a, b))]:
        assert isinstance(out, Tensor) and out.dtype == np.bool_
        assert not out.requires_grad and out.is_leaf
        np.testing.assert_array_equal(out.numpy(), expected)
    assert (Tensor(2.0) > 1).item() is True and (Tensor(2.0) > 1).shape == ()


def test_tensors_still_hash_by_identity():
    a, b = Tensor([1.0, 2.0]), Tensor([1.0, 2.0])
    assert len({a, b}) == 2 and {a: 1, b: 2}[b] == 2
    assert a in [a] and a in {a}
    assert (a == None) is False and (a != None) is True  # noqa: E711
    assert (a == "text") is False
    layer = Linear(2, 2)
    assert len(list(layer.parameters())) == 2


@pytest.mark.parametrize("value", [2.75, -3.0])
@pytest.mark.parametrize("shape", [(), (1,), (1, 1)])
def test_float_int_bool_of_one_element(xp, value, shape):
    t = Tensor(xp.full(shape, value))
    assert float(t) == value and isinstance(float(t), float)
    assert int(t) == int(value) and isinstance(int(t), int)
    assert bool(t) is True and bool(Tensor(xp.zeros(shape))) is False
    assert float(leaf(xp, [value]).sum()) == value
    assert math.isclose(float(Tensor([0.1])), 0.1, rel_tol=1e-7)  # float32 0.1


def test_float_int_bool_of_many_elements_explain(xp):
    t = Tensor(xp.ones(3))
    for fn in (float, int, bool):  # ValueError for numbers, RuntimeError for truth, as PyTorch
        with pytest.raises(RuntimeError if fn is bool else ValueError, match=rf"{fn.__name__}\(\) of a Tensor needs exactly one element, got shape \(3,\)"):
            fn(t)
    with pytest.raises(RuntimeError, match=r"\.any\(\), \.all\(\)"):
        bool(t > 0)
    assert bool((t > 0).all()) and not bool((t < 0).any())
    with pytest.raises(RuntimeError, match=r"got shape \(0,\)"):
        bool(Tensor(xp.ones(0)))


def test_abs_forward_backward(xp):
    x = leaf(xp, [-2.0, 0.0, 3.0])
    y = abs(x)
    np.testing.assert_array_equal(y.numpy(), [2.0, 0.0, 3.0])
    y.sum().backward()
    np.testing.assert_array_equal(to_numpy(x.grad), [-1.0, 0.0, 1.0])  # 0 at the kink, as PyTorch


def test_dim_is_accepted_wherever_axis_is(xp):
    rng = np.random.default_rng(0)
    a = rng.standard_normal((2, 3, 4))
    t = Tensor(xp.asarray(a))
    pairs = [
        (t.sum(axis=1), t.sum(dim=1)), (t.mean(axis=(0, 2), keepdims=True), t.mean(dim=(0, 2), keepdim=True)),
        (t.max(axis=-1), t.max(dim=-1)), (t.sum(1, True), t.sum(dim=1, keepdim=True)),
        (t.softmax(axis=0), t.softmax(dim=0)), (t.log_softmax(1), t.log_softmax(dim=1)),
        (F.softmax(t, 0), F.softmax(t, dim=0)), (F.log_softmax(t, 0), F.log_softmax(t, dim=0)),
        (F.softmax_composed(t, 1), F.softmax_composed(t, dim=1)),
        (F.log_softmax_composed(t, 1), F.log_softmax_composed(t, dim=1)),
        (Tensor.cat([t, t], axis=2), Tensor.cat([t, t], dim=2)),
        (Tensor.stack([t, t], axis=1), Tensor.stack([t, t], dim=1)),
    ]
    pairs += list(zip(t.split(2, axis=2), t.split(2, dim=2)))
    for by_axis, by_dim in pairs:
        assert by_axis.shape == by_dim.shape
        np.testing.assert_array_equal(by_axis.numpy(), by_dim.numpy())
    assert t.mean(dim=1).shape == (2, 4) and t.sum(dim=1, keepdim=True).shape == (2, 1, 4)
    with pytest.raises(TypeError, match="not both"):
        t.sum(axis=0, dim=1)
    with pytest.raises(TypeError, match="not both"):
        t.softmax(0, dim=1)


def test_repr_shows_a_dtype_that_is_not_float32(device):
    on = "" if device == "cpu" else f", device='{device}'"  # as PyTorch, the device unless the CPU
    assert repr(Tensor([1.0, 2.0])) == f"Tensor([1., 2.]{on})"
    assert repr(Tensor(np.array([1.0, 2.0]), requires_grad=True)) == \
        f"Tensor([1., 2.]{on}, dtype=float64, requires_grad=True)"
    assert repr(Tensor(np.arange(3))) == f"Tensor([0, 1, 2]{on}, dtype=int64)"
    assert repr(Tensor([1.0]) > 0) == f"Tensor([ True]{on}, dtype=bool)"
    assert "dtype" not in repr(Tensor(np.ones((2, 2), dtype=np.float32)))


def test_data_can_be_set_to_an_array_or_a_tensor(xp):
    w = leaf(xp, [1.0, 2.0])
    w.data = w.data * 2  # an array
    np.testing.assert_array_equal(w.numpy(), [2.0, 4.0])
    w.data = w - 1.0     # a Tensor: its array is taken
    assert is_array(w.data) and w.is_leaf and w.requires_grad
    np.testing.assert_array_equal(w.numpy(), [1.0, 3.0])
    with pytest.raises(TypeError, match=r"\.data must be a NumPy or CuPy array"):
        w.data = [1.0, 2.0]


# ============================================================================ a user's own op

def test_function_apply_runs_a_users_op_and_its_backward():
    class Cube(Function):
        def forward(self, x):
            self.save_for_backward(x)
            return x ** 3

        def backward(self, g):
            (x,) = self.saved
            return g * 3 * x ** 2  # d/dx x^3 = 3 x^2

    x = Tensor(np.array([1.0, -2.0]), requires_grad=True)
    y = Cube.apply(x)
    y.sum().backward()
    np.testing.assert_allclose(y.numpy(), [1.0, -8.0])
    np.testing.assert_allclose(to_numpy(x.grad), [3.0, 12.0])
    np.testing.assert_allclose(Cube.apply(np.array([2.0])).numpy(), [8.0])  # an array becomes a constant


def test_a_users_op_raises_its_own_errors_with_their_tracebacks():
    class BadForward(Function):
        def forward(self, x):
            raise ValueError("my forward's own message")

    class BadBackward(Function):
        def forward(self, x):
            return 2 * x

        def backward(self, g):
            raise KeyError("my backward's own message")

    with pytest.raises(ValueError) as info:
        BadForward.apply(Tensor([1.0]))
    assert str(info.value) == "my forward's own message"
    assert any(entry.name == "forward" and "test_tensor" in str(entry.path) for entry in info.traceback)
    y = BadBackward.apply(Tensor([1.0], requires_grad=True))
    with pytest.raises(KeyError, match="my backward's own message"):
        y.sum().backward()
    # the engine's own ops still name themselves and the shapes
    with pytest.raises(ValueError, match=r"^Add: bad input shapes \(2,\) and \(3,\)"):
        Tensor(np.ones(2)) + Tensor(np.ones(3))
