"""The fast layer against the rules it speeds up: each fast op (tinygrad_gpt/fast/) subclasses a
rule, and gives that rule's values and gradients on random shapes (hypothesis), in float64.

Each case runs one function twice, once under ``functional.mode("rules")`` and once under
``mode("fast")``, checks that the fast run really built the fast op (and the rules run the rule),
and compares the outputs and every input's gradient.
"""
import numpy as np
import pytest
from hypothesis import given, strategies as st

import strategies as S
from tinygrad_gpt import Tensor, fast, functional as F, ops, rules
from tinygrad_gpt.fast import attention as fast_attention, kernels
from tinygrad_gpt.backend import to_numpy
from tinygrad_gpt.function import Gradients

RTOL, ATOL = 1e-10, 1e-12  # float64: the two paths differ only in the order of their sums


def _ops_of(out):
    """The types of every Function in out's graph."""
    seen, stack, found = set(), [out], set()
    while stack:
        t = stack.pop()
        if id(t) in seen or t._ctx is None:
            continue
        seen.add(id(t))
        found.add(type(t._ctx))
        stack.extend(p for p in t._ctx.parents if p is not None)
    return found


def _run(mode, fn, arrays, g, expect):
    with F.mode(mode):
        ts = [Tensor(a, requires_grad=True) for a in arrays]
        out = fn(*ts)
        assert expect in _ops_of(out), (mode, expect, _ops_of(out))
        out.backward(g)
    return [out.numpy()] + [to_numpy(t.grad) for t in ts]


def same_as_rule(fn, arrays, rule, fast_op, seed=0):
    """fn's values and gradients in the fast mode (which must build ``fast_op``) equal those in
    the rules mode (which must build ``rule``, the op ``fast_op`` names as its base)."""
    assert issubclass(fast_op, rule)
    with F.mode("rules"):
        shape = fn(*(Tensor(a) for a in arrays)).shape
    g = np.random.default_rng(seed).standard_normal(shape)
    expected = _run("rules", fn, arrays, g, rule)
    got = _run("fast", fn, arrays, g, fast_op)
    for a, e in zip(got, expected):
        np.testing.assert_allclose(a, e, rtol=RTOL, atol=ATOL)


def test_every_fast_op_names_the_rule_it_speeds_up():
    for rule, fast_op in fast.OPS.items():
        assert issubclass(fast_op, rule) and fast_op is not rule
    assert issubclass(fast.BlockedAttention, rules.Attention)


@S.SETTINGS
@given(data=st.data())
def test_gelu(data):
    x = data.draw(S.float_arrays(data.draw(S.shapes(min_dims=1), label="shape"), bound=4.0), label="x")
    same_as_rule(lambda x: x.gelu(), [x], ops.Gelu, fast.Gelu)


@S.SETTINGS
@given(data=st.data(), bias=st.booleans())
def test_linear(data, bias):
    lead = data.draw(S.shapes(min_dims=1, max_dims=3), label="lead")
    n_in, n_out = data.draw(st.integers(1, 5), label="in"), data.draw(st.integers(1, 5), label="out")
    arrays = [data.draw(S.float_arrays(lead + (n_in,)), label="x"),
              data.draw(S.float_arrays((n_in, n_out)), label="w")]
    if bias:
        arrays.append(data.draw(S.float_arrays((n_out,)), label="b"))
    same_as_rule(lambda *ts: F.linear(*ts), arrays, rules.Linear, fast.Linear)


@S.SETTINGS
@given(data=st.data())
def test_linear_with_gelu_is_the_rules_linear_then_gelu(data):
    """fast.Linear with activation="gelu" is one op; in the rules mode the same call is
    rules.Linear followed by ops.Gelu."""
    lead = data.draw(S.shapes(min_dims=1, max_dims=2), label="lead")
    n_in, n_out = data.draw(st.integers(1, 5), label="in"), data.draw(st.integers(1, 5), label="out")
    arrays = [data.draw(S.float_arrays(lead + (n_in,)), label="x"),
              data.draw(S.float_arrays((n_in, n_out)), label="w"),
              data.draw(S.float_arrays((n_out,)), label="b")]
    same_as_rule(lambda *ts: F.linear(*ts, activation="gelu"), arrays, rules.Linear, fast.Linear)
    with F.mode("rules"):
        assert ops.Gelu in _ops_of(F.linear(*(Tensor(a, requires_grad=True) for a in arrays), activation="gelu"))


@S.SETTINGS
@given(data=st.data())
def test_softmax(data):
    shape = data.draw(S.shapes(min_dims=1), label="shape")
    axis = data.draw(st.integers(-len(shape), len(shape) - 1), label="axis")
    x = data.draw(S.float_arrays(shape, bound=5.0), label="x")
    same_as_rule(lambda x: x.softmax(axis), [x], rules.Softmax, fast.Softmax)


@S.SETTINGS
@given(data=st.data(), bias=st.booleans(), compiled=st.booleans())
def test_layer_norm(data, bias, compiled):
    """With the numba kernels on (when numba is there) and off."""
    lead = data.draw(S.shapes(min_dims=1, max_dims=2), label="lead")
    C = data.draw(st.integers(2, 8), label="C")
    arrays = [data.draw(S.distinct_arrays(lead + (C,), gap=0.1), label="x"),
              data.draw(S.float_arrays((C,)), label="w")]
    if bias:
        arrays.append(data.draw(S.float_arrays((C,)), label="b"))
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(kernels, "enabled", compiled and kernels.load())
        same_as_rule(lambda *ts: F.layer_norm(*ts), arrays, rules.LayerNorm, fast.LayerNorm)


@st.composite
def attention_cases(draw):
    batch = draw(S.shapes(max_dims=2, max_side=2))
    causal = draw(st.booleans())
    Tk = draw(st.integers(1, 6))
    Tq = draw(st.integers(1, Tk)) if causal else draw(st.integers(1, 6))
    hs, hv = draw(st.integers(1, 4)), draw(st.integers(1, 4))
    return batch, Tq, Tk, hs, hv, causal


def _qkv(data, batch, Tq, Tk, hs, hv):
    return [data.draw(S.float_arrays(batch + (Tq, hs), bound=2.0), label="q"),
            data.draw(S.float_arrays(batch + (Tk, hs), bound=2.0), label="k"),
            data.draw(S.float_arrays(batch + (Tk, hv), bound=2.0), label="v")]


@S.SETTINGS
@given(case=attention_cases(), tile=st.integers(1, 3), data=st.data())
def test_attention_in_query_tiles(case, tile, data):
    """fast.Attention, in tiles of every size (tiling made to start at two queries)."""
    batch, Tq, Tk, hs, hv, causal = case
    arrays = _qkv(data, batch, Tq, Tk, hs, hv)
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(fast_attention, "TILED_MIN", 2)
        patch.setattr(fast_attention, "QUERY_TILE", tile)
        same_as_rule(lambda q, k, v: F.scaled_dot_product_attention(q, k, v, causal=causal), arrays,
                     rules.Attention, fast.Attention)


@S.SETTINGS
@given(case=attention_cases(), block=st.integers(1, 3), tile=st.integers(1, 3), data=st.data())
def test_blocked_attention(case, block, tile, data):
    """fast.BlockedAttention, in blocks and tiles of every size, against rules.Attention."""
    batch, Tq, Tk, hs, hv, causal = case
    arrays = _qkv(data, batch, Tq, Tk, hs, hv)
    same_as_rule(lambda q, k, v: F.blocked_attention(q, k, v, causal=causal, block=block, tile=tile),
                 arrays, rules.Attention, fast.BlockedAttention)


def test_attention_with_dropout_draws_the_same_weights():
    """With dropout the fast op runs in one tile, so it draws the rule's random numbers."""
    from tinygrad_gpt import manual_seed
    rng = np.random.default_rng(5)
    arrays = [rng.standard_normal((2, 3, 8, 4)) for _ in range(3)]
    results = []
    for mode in ("rules", "fast"):
        manual_seed(7)
        with F.mode(mode):
            ts = [Tensor(a, requires_grad=True) for a in arrays]
            out = F.scaled_dot_product_attention(*ts, dropout_p=0.4)
            out.backward(np.ones(out.shape))
        results.append([out.numpy()] + [to_numpy(t.grad) for t in ts])
    for a, e in zip(*results):
        np.testing.assert_allclose(a, e, rtol=RTOL, atol=ATOL)


@S.SETTINGS
@given(data=st.data())
def test_slices_and_in_place_gradient_sums(data):
    """fast.GetItem returns SliceGrads that InPlaceGradients adds into one array; the rule
    returns dense gradients that Gradients adds with +. Slices of a transposed view, a tensor
    used three times (the in-place branch), and an integer index with repeats."""
    n = data.draw(st.integers(1, 4), label="n")
    B, T = data.draw(st.integers(1, 3), label="B"), data.draw(st.integers(1, 4), label="T")
    x = data.draw(S.float_arrays((B, T, 3 * n)), label="x")
    ids = data.draw(S.index_arrays(T), label="ids")

    def fn(x):
        parts = x.reshape(B, T, 3, n).permute(2, 0, 1, 3)  # (3, B, T, n), as q, k, v are cut
        out = parts[0] * 1.5 + parts[1] * parts[2] + parts[2]
        return out.sum(axis=-1) + x[:, ids].sum(axis=(1, 2))[:, None]
    same_as_rule(fn, [x], ops.GetItem, fast.GetItem)


def test_the_modes_pick_the_gradient_sums():
    """The rules and composed modes add gradients with the plain ``+`` (function.Gradients);
    the fast mode adds in place (fast.InPlaceGradients)."""
    from tinygrad_gpt import modes
    for mode, expected in (("rules", Gradients), ("composed", Gradients), ("fast", fast.InPlaceGradients)):
        with F.mode(mode):
            assert modes.current().gradients is expected
            assert (modes.current().implementation(ops.Gelu) is fast.Gelu) == (mode == "fast")
    grads = fast.InPlaceGradients()
    a = np.ones(3)
    grads.add("k", a)
    grads.add("k", np.ones(3))
    grads.add("k", np.ones(3))
    assert a.tolist() == [1, 1, 1] and grads.take("k").tolist() == [3, 3, 3]  # the first is never written


def test_gelu_arrays_in_chunks_matches_the_rule():
    """Inputs of several chunks (on two threads from CHUNKED_MIN elements) give ops.Gelu's values
    and derivative (the NumPy path: float64)."""
    from tinygrad_gpt.fast.chunks import CHUNKED_MIN
    x = np.random.default_rng(3).uniform(-5, 5, CHUNKED_MIN + 17)
    out, d = np.empty_like(x), np.empty_like(x)
    fast.gelu_arrays(x, out, d)
    rule = ops.Gelu([True])
    np.testing.assert_allclose(out, rule.forward(x), rtol=1e-13, atol=1e-15)
    np.testing.assert_allclose(d, rule.backward(np.ones_like(x)), rtol=1e-12, atol=1e-14)


@S.SETTINGS
@given(data=st.data(), broadcast=st.booleans())
def test_add_from_the_pool(data, broadcast):
    """Sums of one shape go into a pooled array (large ones; small ones too small to pool
    take the same path), broadcast sums are the rule's."""
    shape = data.draw(S.shapes(min_dims=1), label="shape")
    x = data.draw(S.float_arrays(shape), label="x")
    y = data.draw(S.float_arrays(shape[-1:] if broadcast else shape), label="y")
    same_as_rule(lambda a, b: a + b, [x, y], ops.Add, fast.Add)


def test_add_and_reshape_of_pooled_size_keep_their_values_apart():
    """Arrays above the pool's threshold: two sums alive at once are two arrays, and a pooled
    array is lent again only once nothing holds it (values and gradients match the rules)."""
    rng = np.random.default_rng(0)
    x, y = (rng.standard_normal((300, 128)).astype(np.float32) for _ in range(2))
    same_as_rule(lambda a, b: ((a + b) * (a + b + b)).sum(), [x, y], ops.Add, fast.Add)
    t = rng.standard_normal((4, 96, 128)).astype(np.float32)
    same_as_rule(lambda a: a.transpose(1, 2).reshape(4, -1) * a.reshape(4, -1), [t], ops.Reshape, fast.Reshape)


@S.SETTINGS
@given(data=st.data(), transpose=st.booleans())
def test_reshape(data, transpose):
    """A view where the rule's reshape is a view, a pooled copy where it copies."""
    shape = data.draw(S.shapes(min_dims=2), label="shape")
    x = data.draw(S.float_arrays(shape), label="x")

    def fn(a):
        return (a.transpose(-1, -2) if transpose else a).reshape(-1) * 2.0
    same_as_rule(fn, [x], ops.Reshape, fast.Reshape)


def test_the_pool_lends_a_buffer_only_when_nothing_holds_it(monkeypatch):
    from tinygrad_gpt.fast import workspace
    workspace.release()
    a, b = workspace.empty((256, 256), np.float32), workspace.empty((256, 256), np.float32)
    assert not np.shares_memory(a, b)
    buffer = id(a.base)  # the pool keeps it alive, so its id stays its own
    del a
    c = workspace.empty((256, 256), np.float32)
    assert id(c.base) == buffer  # lent again once free
    view = c[1:]
    del c
    assert id(workspace.empty((256, 256), np.float32).base) != buffer  # a view still holds it
    del view
    # over the bound, idle buffers of sizes not asked for lately are let go; recent ones stay
    monkeypatch.setattr(workspace, "POOL_MAX", 0)
    monkeypatch.setattr(workspace, "RECENT", 1)
    kept = workspace.empty((256, 256), np.float32)
    workspace.empty((512, 256), np.float32)
    assert {id(x) for x in workspace._pool[256 * 256 * 4]} == {id(kept.base), id(b.base)}
    workspace.release()
