"""The fast paths get every input the rules accept: read-only, strided, transposed, broadcast
(zero-stride) and 0-d arrays, as inputs and as upstream gradients.

Each test runs a fast op (a compiled numba kernel, or a chunked or tiled path) on arrays of
every layout, compares values and gradients with the op's rule (``functional.mode("rules")``
where the modes exist, else the op's composed twin) on contiguous copies in float64, and shows
which path ran: each kernel is wrapped to count its calls. A kernel takes only writable C-order
arrays; any other layout goes through the NumPy path (``kernels.usable``), unless the op's own
reshape already made a fresh copy.
"""
import contextlib
import importlib
import sys

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings, strategies as st

from tinygrad_gpt import Tensor, fast, functional as F, optim
from tinygrad_gpt.backend import to_numpy

import strategies as S

try:  # the fast layer's own package, or the kernels beside the ops
    kernels = importlib.import_module("tinygrad_gpt.fast.kernels")
except ImportError:
    kernels = importlib.import_module("tinygrad_gpt.kernels")
if hasattr(kernels, "load"):  # kernels compiled on first use: now, so that they can be wrapped
    kernels.load()

LAYOUTS = ("contiguous", "read-only", "strided", "transposed", "broadcast")
# the fixtures below patch modules for the whole test; ``calls`` is cleared at each example
_FIXTURES = [HealthCheck.function_scoped_fixture]
SETTINGS = settings(S.SETTINGS, suppress_health_check=list(S.SETTINGS.suppress_health_check) + _FIXTURES)
FEW = settings(S.FEW, suppress_health_check=list(S.FEW.suppress_health_check) + _FIXTURES)


def with_layout(a, layout, xp):
    """``a``'s values (float array) in the given memory layout, on ``xp``'s device. A broadcast
    array repeats ``a``'s first entry along axis 0, so the values change: use the result's values."""
    if layout == "broadcast" and a.ndim:
        return xp.broadcast_to(xp.asarray(a[:1]), a.shape)
    if layout == "strided" and a.ndim:
        big = xp.zeros(a.shape[:-1] + (2 * a.shape[-1],), dtype=a.dtype)
        big[..., ::2] = xp.asarray(a)
        return big[..., ::2]
    if layout == "transposed" and a.ndim >= 2:
        return xp.ascontiguousarray(xp.asarray(a).swapaxes(-1, -2)).swapaxes(-1, -2)
    if layout == "read-only" and xp is np:
        a = a.copy()
        a.flags.writeable = False
        return a
    return xp.asarray(a)


def modules_with(name):
    """The package's loaded modules that hold ``name`` (a constant or an imported function)."""
    return [m for key, m in sorted(sys.modules.items())
            if key.startswith("tinygrad_gpt") and m is not None and hasattr(m, name)]


def in_mode(name):
    return F.mode(name) if hasattr(F, "mode") else contextlib.nullcontext()


def plain(a):
    """A contiguous float64 host copy, for the reference."""
    return np.array(to_numpy(a), dtype=np.float64)


def takes(*arrays):
    """Whether a kernel takes these arrays (as the op hands them over) as they are: writable
    NumPy arrays in C order, with the kernels on. Anything else must take the NumPy path."""
    return bool(kernels.enabled) and all(isinstance(a, np.ndarray) and a.flags.c_contiguous and a.flags.writeable
                                   for a in arrays)


@pytest.fixture
def calls(monkeypatch):
    """Count the calls of each numba kernel: calls["gelu"] and so on."""
    counts = {}
    for name in ("layer_norm_forward", "layer_norm_backward", "gelu", "adamw"):
        kernel = getattr(kernels, name)
        if kernel is None:
            continue

        def counted(*args, _kernel=kernel, _name=name):
            counts[_name] = counts.get(_name, 0) + 1
            return _kernel(*args)
        monkeypatch.setattr(kernels, name, counted)
    return counts


@pytest.fixture(params=["one block", "chunks"])
def chunks(request, monkeypatch):
    """Run as it is, or with tiny chunks on two threads, so that the chunked paths of
    ``backend.for_chunks`` run on small arrays."""
    if request.param == "chunks":
        users = modules_with("for_chunks")
        real = users[0].for_chunks
        monkeypatch.setattr(sys.modules[real.__module__], "CHUNKED_MIN", 8)
        for module in users:
            monkeypatch.setattr(module, "for_chunks", lambda fn, n, array, chunk=None: real(fn, n, array, chunk=2))
    return request.param


def assert_close(ours, ref, rtol, what):
    ours, ref = plain(ours), plain(ref)  # the reference's gradients live on the test's device too
    assert ours.shape == ref.shape, what
    np.testing.assert_allclose(ours, ref, rtol=rtol, atol=rtol * max(1.0, float(np.abs(ref).max(initial=0))),
                               err_msg=what)


def backprop(fn, arrays, g_layout, xp, seed):
    """Values of fn on Tensors of ``arrays`` and their gradients for an upstream gradient of the
    given layout."""
    ts = [Tensor(a, requires_grad=True) for a in arrays]
    with in_mode("fast"):
        out = fn(*ts)
        g = np.random.default_rng(seed).standard_normal(out.shape).astype(out.dtype)
        g = with_layout(g, g_layout, xp)
        out.backward(g)
    return out, [t.grad for t in ts], g


def reference(fn, composed, arrays, g):
    """The rule's values and gradients: ``fn`` in "rules" mode where the modes exist, else the
    composed twin; on contiguous float64 copies."""
    ts = [Tensor(plain(a), requires_grad=True) for a in arrays]
    with in_mode("rules"):
        out = (fn if hasattr(F, "mode") else composed)(*ts)
        out.backward(plain(g))
    return out.numpy(), [t.grad for t in ts]


# ============================================================================ layer norm

@SETTINGS
@given(data=st.data())
def test_layer_norm_kernels_on_every_layout(data, calls, chunks, xp):
    """Both layer-norm kernels against the rule, on read-only, strided, transposed and
    broadcast inputs and gradients; the kernels run exactly when each array they read is a
    writable C-order array, the NumPy path otherwise."""
    calls.clear()
    rows, C = data.draw(st.integers(1, 6), label="rows"), data.draw(st.integers(2, 6), label="C")
    dtype = data.draw(st.sampled_from([np.float64, np.float32]), label="dtype")
    x_layout, w_layout, b_layout, g_layout = (data.draw(st.sampled_from(LAYOUTS), label=n) for n in "xwbg")
    bias = data.draw(st.booleans(), label="bias")
    rng = np.random.default_rng(data.draw(st.integers(0, 2 ** 32 - 1), label="seed"))
    x = with_layout(rng.uniform(-2, 2, (rows, C)).astype(dtype), x_layout, xp)  # 2-D: reshaped as it is
    w = with_layout(rng.uniform(0.5, 2, C).astype(dtype), w_layout, xp)
    b = with_layout(rng.uniform(-1, 1, C).astype(dtype), b_layout, xp)
    arrays = [x, w, b] if bias else [x, w]
    out, grads, g = backprop(F.layer_norm, arrays, g_layout, xp, seed=1)
    ref_out, ref_grads = reference(F.layer_norm, F.layer_norm_composed, arrays, g)
    rtol = 1e-10 if dtype == np.float64 else 2e-4
    # a row's gradient is amplified by 1 / std: rows of rows.uniform(-2, 2) keep it small
    assert_close(out.data, ref_out, rtol, "forward")
    for name, a, e in zip("xwb", grads, ref_grads):
        assert a.dtype == dtype
        assert_close(a, e, rtol * 10, f"gradient of {name}")
    # the backward also reads the forward's normalised rows, made like x (empty_like keeps its order)
    expect_forward, expect_backward = takes(*arrays), takes(g, w, xp.empty_like(x))
    if kernels.enabled and xp is np and {x_layout, w_layout, b_layout if bias else "contiguous"} == {"contiguous"}:
        assert expect_forward  # the common case, for the record: fresh contiguous arrays take the kernel
    if "read-only" in (x_layout, w_layout) or "broadcast" in (x_layout, w_layout):
        assert not expect_forward  # broadcast_to views are read-only too
    assert bool(calls.get("layer_norm_forward")) == expect_forward
    assert bool(calls.get("layer_norm_backward")) == expect_backward
    if chunks == "chunks" and expect_forward and rows >= 4:
        assert calls["layer_norm_forward"] > 1  # row blocks of two (work of two blocks or more is cut)


def test_layer_norm_crash_on_a_read_only_gradient_is_fixed(calls):
    """The crash this class of tests was written for: a sum over rows hands the layer norm's
    backward a read-only broadcast gradient, which numba refused with a TypeError. It now goes
    through the NumPy path and matches PyTorch's values."""
    torch = pytest.importorskip("torch")
    rng = np.random.default_rng(0)
    arrays = [rng.standard_normal(s) for s in ((1, 3), (3,), (3,))]
    x, w, b = (Tensor(a, requires_grad=True, dtype="float64") for a in arrays)
    F.layer_norm(x, w, b, 1e-5).sum(axis=0)[np.array([2, 1])].mean().backward()
    tx, tw, tb = (torch.tensor(a, requires_grad=True) for a in arrays)
    torch.nn.functional.layer_norm(tx, (3,), tw, tb, 1e-5).sum(dim=0)[torch.tensor([2, 1])].mean().backward()
    for ours, theirs in ((x, tx), (w, tw), (b, tb)):
        np.testing.assert_allclose(to_numpy(ours.grad), theirs.grad.numpy(), rtol=1e-10, atol=1e-12)
    assert "layer_norm_backward" not in calls  # read-only: the NumPy path (no kernel at all on a GPU)
    if kernels.enabled and isinstance(x.data, np.ndarray):  # the kernels take host arrays only
        assert calls["layer_norm_forward"] == 1


# ============================================================================ GELU

@SETTINGS
@given(data=st.data())
def test_gelu_kernel_on_every_layout(data, calls, chunks, xp):
    """x.gelu() in float32 (the kernel's dtype) against its rule in float64, on inputs of
    every layout and rank 0..3 and gradients of every layout. The op flattens its input, which
    copies a strided or broadcast one: only a read-only input that stays a view misses the kernel."""
    calls.clear()
    shape = data.draw(S.shapes(0, 3), label="shape")
    x_layout, g_layout = data.draw(st.sampled_from(LAYOUTS), label="x"), data.draw(st.sampled_from(LAYOUTS), label="g")
    rng = np.random.default_rng(data.draw(st.integers(0, 2 ** 32 - 1), label="seed"))
    x = with_layout(rng.uniform(-4, 4, shape).astype(np.float32), x_layout, xp)
    out, (gx,), g = backprop(lambda t: t.gelu(), [x], g_layout, xp, seed=2)
    ref_out, (ref_gx,) = reference(lambda t: t.gelu(), F.gelu_composed, [x], g)
    assert out.dtype == np.float32 and gx.dtype == np.float32
    assert_close(out.data, ref_out, 2e-6, "forward")
    assert_close(gx, ref_gx, 2e-5, "gradient")
    # the op flattens x (a copy for most strided and broadcast layouts, a view otherwise), and
    # the kernel runs on the flat array if it can take it: forward once, backward once, a call a chunk
    expect = takes(x.reshape(-1))
    if x_layout == "read-only":
        assert not expect
    per_pass = 1 if chunks == "one block" or x.size < 4 else -(-x.size // 2)
    assert calls.get("gelu", 0) == (2 * per_pass if expect else 0)


@SETTINGS
@given(data=st.data())
def test_linear_gelu_kernel_on_every_layout(data, calls, chunks, xp):
    """F.linear(..., activation="gelu") in float32 against its rule (or the composed ops) in
    float64. The kernel works on the op's own fresh product, so every layout of x, W, b and the
    gradient reaches it."""
    calls.clear()
    lead = data.draw(S.shapes(1, 2), label="lead")
    n_in, n_out = data.draw(st.integers(1, 4), label="in"), data.draw(st.integers(1, 4), label="out")
    layouts = [data.draw(st.sampled_from(LAYOUTS), label=n) for n in "xwbg"]
    rng = np.random.default_rng(data.draw(st.integers(0, 2 ** 32 - 1), label="seed"))
    x = with_layout(rng.uniform(-2, 2, lead + (n_in,)).astype(np.float32), layouts[0], xp)
    w = with_layout(rng.uniform(-1, 1, (n_in, n_out)).astype(np.float32), layouts[1], xp)
    b = with_layout(rng.uniform(-1, 1, n_out).astype(np.float32), layouts[2], xp)
    out, grads, g = backprop(lambda x, w, b: F.linear(x, w, b, activation="gelu"), [x, w, b], layouts[3], xp, 3)
    ref_out, ref_grads = reference(lambda x, w, b: F.linear(x, w, b, activation="gelu"),
                                   lambda x, w, b: F.gelu_composed(F.linear_composed(x, w, b)), [x, w, b], g)
    assert_close(out.data, ref_out, 2e-5, "forward")
    for name, a, e in zip("xwb", grads, ref_grads):
        assert a.dtype == np.float32
        assert_close(a, e, 1e-4, f"gradient of {name}")
    assert bool(calls.get("gelu")) == takes(xp.empty(1))  # the op's own product: always a fresh array


# ============================================================================ AdamW

@FEW
@given(data=st.data())
def test_adamw_kernel_on_every_layout(data, calls, chunks, xp):
    """AdamW's one-pass kernel against its NumPy path (bit for bit), with gradients and parameters
    of every layout, 0-d parameters included. The group goes through the kernel only when every
    gradient and parameter is a writable C-order array; a read-only parameter is an error on
    either path."""
    calls.clear()
    from tinygrad_gpt.nn import Parameter
    shapes = data.draw(st.lists(S.shapes(0, 2), min_size=2, max_size=3), label="shapes")
    g_layouts = [data.draw(st.sampled_from(LAYOUTS), label="g") for _ in shapes]
    p_layouts = [data.draw(st.sampled_from(LAYOUTS[:1] + LAYOUTS[2:]), label="p") for _ in shapes]
    dtype = data.draw(st.sampled_from([np.float32, np.float64]), label="dtype")
    seed = data.draw(st.integers(0, 2 ** 32 - 1), label="seed")
    results = []
    for on in (True, False):
        rng = np.random.default_rng(seed)
        with pytest.MonkeyPatch.context() as patch:
            patch.setattr(kernels, "enabled", on and kernels.enabled)
            params = []
            for s, lay in zip(shapes, p_layouts):
                p = Parameter(np.zeros(s), dtype=dtype)
                values = rng.standard_normal(s).astype(dtype)
                p.data = with_layout(values, lay if lay != "broadcast" else "contiguous", xp)
                params.append(p)
            opt = fast.AdamW(params, lr=0.01, weight_decay=0.1)
            for _ in range(2):
                for p, lay in zip(params, g_layouts):
                    p.grad = with_layout(rng.standard_normal(p.shape).astype(dtype), lay, xp)
                opt.step()
            results.append([plain(p.data) for p in params])
    for a, e in zip(*results):
        np.testing.assert_array_equal(a, e)
    usable = takes(*(a for p in params for a in (p.data, p.grad)))
    if "read-only" in g_layouts:
        assert not usable
    assert calls.get("adamw", 0) == (2 * len(shapes) if usable else 0)


def test_adamw_read_only_parameter_is_refused_on_both_paths():
    from tinygrad_gpt.nn import Parameter
    for on, AdamW in ((True, fast.AdamW), (False, fast.AdamW), (False, optim.AdamW)):
        with pytest.MonkeyPatch.context() as patch:
            patch.setattr(kernels, "enabled", on and kernels.enabled)
            params = [Parameter(np.zeros(3)), Parameter(np.zeros(2))]
            params[0].data = with_layout(np.ones(3, np.float32), "read-only", np)
            for p in params:
                p.grad = np.ones(p.shape, np.float32)
            with pytest.raises(ValueError, match="read-only"):
                AdamW(params).step()


# ============================================================================ attention

@SETTINGS
@given(data=st.data())
def test_attention_paths_on_every_layout(data, xp, monkeypatch):
    """The tiled, blocked and max-shift-skipping attention paths against the rule,
    with q, k, v and the gradient in every layout."""
    for name, value in (("TILED_MIN", 2), ("QUERY_TILE", 2), ("SCORE_CHECK_MIN", 1)):
        for module in modules_with(name):  # where the attention paths read them
            monkeypatch.setattr(module, name, value)
    lead = data.draw(S.shapes(1, 2, max_side=3), label="lead")
    Tq = data.draw(st.integers(1, 6), label="Tq")
    causal = data.draw(st.booleans(), label="causal")
    Tk = data.draw(st.integers(Tq if causal else 1, Tq + 2), label="Tk")
    hs = data.draw(st.integers(1, 4), label="hs")
    layouts = [data.draw(st.sampled_from(LAYOUTS), label=n) for n in "qkvg"]
    path = data.draw(st.sampled_from(["tiled", "blocked"]), label="path")
    tile = data.draw(st.sampled_from([None, 1, 2]), label="tile")
    rng = np.random.default_rng(data.draw(st.integers(0, 2 ** 32 - 1), label="seed"))
    q, k, v = (with_layout(rng.uniform(-1.5, 1.5, lead + (T, hs)), lay, xp)
               for T, lay in zip((Tq, Tk, Tk), layouts))
    if path == "tiled":
        fn = lambda q, k, v: F.scaled_dot_product_attention(q, k, v, causal=causal)  # noqa: E731
    else:
        fn = lambda q, k, v: F.blocked_attention(q, k, v, causal=causal, block=1, tile=tile)  # noqa: E731
    out, grads, g = backprop(fn, [q, k, v], layouts[3], xp, 4)
    ref_out, ref_grads = reference(lambda q, k, v: F.scaled_dot_product_attention(q, k, v, causal=causal),
                                   lambda q, k, v: F.scaled_dot_product_attention_composed(q, k, v, causal=causal),
                                   [q, k, v], g)
    assert_close(out.data, ref_out, 1e-10, "forward")
    for name, a, e in zip("qkv", grads, ref_grads):
        assert_close(a, e, 1e-9, f"gradient of {name}")
