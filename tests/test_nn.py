import numpy as np
import pytest

from tinygrad_gpt import Tensor, manual_seed
from tinygrad_gpt.backend import default_device, to_device, to_numpy
from tinygrad_gpt.nn import Dropout, Embedding, LayerNorm, Linear, Module, ModuleList, Parameter


class TwoLayer(Module):
    """A small model with a parameter shared between two layers (like a tied head)."""

    def __init__(self):
        self.first = Linear(3, 4)
        self.act_scale = Parameter(np.full((4,), 2.0, dtype=np.float32))
        self.layers = ModuleList([Linear(4, 4, bias=False), Linear(4, 2)])
        self.norm = LayerNorm(2)
        self.layers[1].weight_alias = self.layers[0].weight  # the same Parameter, twice
        self.drop = Dropout(0.5)

    def forward(self, x):
        x = self.first(x) * self.act_scale
        for layer in self.layers:
            x = layer(x)
        return self.drop(self.norm(x))


EXPECTED_NAMES = ["first.weight", "first.bias", "act_scale", "layers.0.weight",
                  "layers.1.weight", "layers.1.bias", "norm.weight", "norm.bias"]


@pytest.fixture
def model():
    manual_seed(0)
    return TwoLayer()


def _random_state(model, seed=1):
    rng = np.random.default_rng(seed)
    return {k: rng.standard_normal(v.shape).astype(v.dtype) for k, v in model.state_dict().items()}


# ----------------------------------------------------------------------------- parameters

def test_named_parameters_order_is_assignment_order_and_dotted(model):
    assert [name for name, _ in model.named_parameters()] == EXPECTED_NAMES


def test_shared_parameter_appears_once(model):
    params = model.parameters()
    assert len(params) == len(EXPECTED_NAMES)
    assert len({id(p) for p in params}) == len(params)
    assert sum(p is model.layers[0].weight for p in params) == 1


def test_parameters_match_named_parameters(model):
    assert all(p is q for p, (_, q) in zip(model.parameters(), model.named_parameters()))
    assert all(isinstance(p, Parameter) and p.requires_grad for p in model.parameters())


def test_named_parameters_prefix(model):
    names = [n for n, _ in model.first.named_parameters(prefix="enc.")]
    assert names == ["enc.weight", "enc.bias"]


def test_linear_without_bias_has_no_bias_parameter():
    layer = Linear(5, 3, bias=False)
    assert [n for n, _ in layer.named_parameters()] == ["weight"]
    assert layer.weight.shape == (5, 3)


def test_modulelist_indexing_and_len():
    items = [Linear(2, 2), Linear(2, 3), LayerNorm(3)]
    ml = ModuleList(items)
    assert len(ml) == 3 and ml[1] is items[1] and list(ml) == items
    assert [n for n, _ in ml.named_parameters()] == [
        "0.weight", "0.bias", "1.weight", "1.bias", "2.weight", "2.bias"]


def test_num_parameters(model):
    assert model.num_parameters() == 3 * 4 + 4 + 4 + 16 + 8 + 2 + 2 + 2


# ----------------------------------------------------------------------------- layers vs numpy

def test_linear_forward_is_x_at_w_plus_b():
    manual_seed(3)
    layer = Linear(5, 3)
    x = np.random.default_rng(0).standard_normal((2, 4, 5)).astype(np.float32)
    out = layer(Tensor(x))
    assert out.shape == (2, 4, 3)
    np.testing.assert_allclose(out.numpy(), x @ layer.weight.numpy() + layer.bias.numpy(),
                               rtol=1e-5, atol=1e-6)


def test_linear_without_bias_forward():
    layer = Linear(4, 2, bias=False)
    x = np.random.default_rng(1).standard_normal((3, 4)).astype(np.float32)
    np.testing.assert_allclose(layer(Tensor(x)).numpy(), x @ layer.weight.numpy(), rtol=1e-5, atol=1e-6)


def test_linear_init_range_is_pytorch_default():
    manual_seed(0)
    layer = Linear(64, 32)
    bound = 1 / np.sqrt(64)
    w = layer.weight.numpy()
    assert w.dtype == np.float32
    assert np.abs(w).max() <= bound and np.abs(w).max() > 0.9 * bound
    assert np.abs(layer.bias.numpy()).max() <= bound


def test_linear_backward_gradients():
    layer = Linear(3, 2)
    x = np.random.default_rng(2).standard_normal((4, 3)).astype(np.float32)
    g = np.random.default_rng(3).standard_normal((4, 2)).astype(np.float32)
    layer(Tensor(x)).backward(g)
    np.testing.assert_allclose(to_numpy(layer.weight.grad), x.T @ g, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(to_numpy(layer.bias.grad), g.sum(0), rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("bias", [True, False])
def test_layernorm_forward_vs_numpy(bias):
    rng = np.random.default_rng(4)
    ln = LayerNorm(6, bias=bias)
    assert (ln.bias is not None) == bias
    np.testing.assert_array_equal(ln.weight.numpy(), np.ones(6, np.float32))
    ln.weight.data = to_device(rng.standard_normal(6).astype(np.float32), default_device())
    if bias:
        ln.bias.data = to_device(rng.standard_normal(6).astype(np.float32), default_device())
    x = (rng.standard_normal((2, 3, 6)) * 3 + 1).astype(np.float32)
    mu = x.mean(-1, keepdims=True)
    var = x.var(-1, keepdims=True)
    want = (x - mu) / np.sqrt(var + 1e-5) * ln.weight.numpy()
    if bias:
        want = want + ln.bias.numpy()
    np.testing.assert_allclose(ln(Tensor(x)).numpy(), want, rtol=1e-4, atol=1e-5)


def test_layernorm_names():
    assert [n for n, _ in LayerNorm(4).named_parameters()] == ["weight", "bias"]
    assert [n for n, _ in LayerNorm(4, bias=False).named_parameters()] == ["weight"]


def test_embedding_forward_and_grad_accumulates_repeats():
    emb = Embedding(7, 3)
    idx = np.array([[0, 3, 3], [6, 0, 3]])
    out = emb(idx)
    assert out.shape == (2, 3, 3)
    np.testing.assert_array_equal(out.numpy(), emb.weight.numpy()[idx])
    out.sum().backward()
    counts = np.bincount(idx.ravel(), minlength=7).astype(np.float32)
    np.testing.assert_array_equal(to_numpy(emb.weight.grad), np.repeat(counts[:, None], 3, axis=1))


def test_embedding_rejects_out_of_range_ids():
    emb = Embedding(5, 2)
    with pytest.raises(ValueError):
        emb(np.array([[0, 5]]))


# ----------------------------------------------------------------------------- dropout, train/eval

def test_train_eval_propagate_to_children(model):
    assert model.training
    assert model.eval() is model
    assert all(not m.training for m in model.modules())
    assert not model.layers[1].training and not model.drop.training
    assert model.train() is model
    assert all(m.training for m in model.modules())
    model.train(False)
    assert not model.drop.training


def test_modules_lists_every_submodule(model):
    mods = model.modules()
    for m in (model, model.first, model.layers, model.layers[0], model.layers[1], model.norm, model.drop):
        assert any(m is x for x in mods)


def test_dropout_is_identity_in_eval():
    drop = Dropout(0.7).eval()
    x = Tensor(np.random.default_rng(5).standard_normal((50, 20)).astype(np.float32))
    np.testing.assert_array_equal(drop(x).numpy(), x.numpy())


def test_dropout_in_training_zeroes_and_rescales():
    manual_seed(0)
    p = 0.25
    drop = Dropout(p)
    x = np.ones((200, 100), dtype=np.float32)
    out = drop(Tensor(x)).numpy()
    zero_frac = (out == 0).mean()
    assert abs(zero_frac - p) < 0.02
    np.testing.assert_allclose(out[out != 0], 1 / (1 - p), rtol=1e-6)


def test_dropout_bad_p():
    with pytest.raises(ValueError):
        Dropout(1.0)
    with pytest.raises(ValueError):
        Dropout(-0.1)


def test_model_eval_forward_is_deterministic(model):
    model.eval()
    x = Tensor(np.random.default_rng(6).standard_normal((5, 3)).astype(np.float32))
    np.testing.assert_array_equal(model(x).numpy(), model(x).numpy())


# ----------------------------------------------------------------------------- zero_grad, to

def test_zero_grad_clears_all_grads(model):
    model.eval()
    model(Tensor(np.ones((2, 3), np.float32))).sum().backward()
    assert all(p.grad is not None for p in model.parameters())
    model.zero_grad()
    assert all(p.grad is None for p in model.parameters())


def test_to_float64_keeps_values_and_returns_self(model):
    before = model.state_dict()
    assert model.to(dtype=np.float64) is model
    after = model.state_dict()
    assert all(p.dtype == np.float64 for p in model.parameters())
    for k in before:
        assert after[k].dtype == np.float64
        np.testing.assert_array_equal(after[k], before[k].astype(np.float64))
    model.eval()
    out = model(Tensor(np.ones((2, 3)), dtype=np.float64))
    assert out.dtype == np.float64


def test_to_cpu_is_a_noop_on_values(model):
    before = model.state_dict()
    assert model.to(device="cpu") is model
    for k, v in model.state_dict().items():
        np.testing.assert_array_equal(v, before[k])


def test_to_unknown_device_raises(model):
    with pytest.raises(Exception, match="device"):
        model.to(device="tpu")


def test_call_runs_forward(model):
    model.eval()
    x = Tensor(np.ones((1, 3), np.float32))
    np.testing.assert_array_equal(model(x).numpy(), model.forward(x).numpy())


# ----------------------------------------------------------------------------- state dicts

def test_state_dict_names_are_copies_in_module_dtype(model):
    sd = model.state_dict()
    assert list(sd) == EXPECTED_NAMES
    assert all(isinstance(v, np.ndarray) and v.dtype == np.float32 for v in sd.values())
    sd["first.weight"][...] = 123.0
    assert not np.any(model.first.weight.numpy() == 123.0)


def test_load_state_dict_roundtrip(model):
    new = _random_state(model)
    assert model.load_state_dict(new) is model
    for k, v in model.state_dict().items():
        np.testing.assert_array_equal(v, new[k])
    manual_seed(99)
    other = TwoLayer().load_state_dict(model.state_dict())
    x = Tensor(np.random.default_rng(7).standard_normal((3, 3)).astype(np.float32))
    np.testing.assert_array_equal(other.eval()(x).numpy(), model.eval()(x).numpy())


def test_load_state_dict_keeps_module_dtype(model):
    sd64 = {k: v.astype(np.float64) for k, v in _random_state(model).items()}
    model.load_state_dict(sd64)
    assert all(p.dtype == np.float32 for p in model.parameters())
    model.to(dtype=np.float64)
    model.load_state_dict({k: v.astype(np.float32) for k, v in sd64.items()})
    assert all(p.dtype == np.float64 for p in model.parameters())


def test_load_state_dict_does_not_alias_source(model):
    sd = _random_state(model)
    model.load_state_dict(sd)
    sd["norm.weight"][...] = 7.0
    assert not np.any(model.norm.weight.numpy() == 7.0)


def test_load_state_dict_clears_grads(model):
    model.eval()
    model(Tensor(np.ones((2, 3), np.float32))).sum().backward()
    model.load_state_dict(_random_state(model))
    assert all(p.grad is None for p in model.parameters())


def _assert_untouched(model, before):
    for k, v in model.state_dict().items():
        np.testing.assert_array_equal(v, before[k])
        assert v.dtype == before[k].dtype


def test_load_state_dict_missing_key(model):
    before = model.state_dict()
    sd = _random_state(model)
    del sd["layers.1.bias"]
    with pytest.raises(ValueError, match=r"missing.*layers\.1\.bias"):
        model.load_state_dict(sd)
    _assert_untouched(model, before)


def test_load_state_dict_unexpected_key(model):
    before = model.state_dict()
    sd = _random_state(model)
    sd["layers.2.weight"] = np.zeros((2, 2), np.float32)
    with pytest.raises(ValueError, match=r"unexpected.*layers\.2\.weight"):
        model.load_state_dict(sd)
    _assert_untouched(model, before)


def test_load_state_dict_shape_mismatch(model):
    before = model.state_dict()
    sd = _random_state(model)
    sd["first.weight"] = sd["first.weight"].T.copy()  # (4, 3) instead of (3, 4)
    with pytest.raises(ValueError, match=r"first\.weight") as info:
        model.load_state_dict(sd)
    assert "(3, 4)" in str(info.value) and "(4, 3)" in str(info.value)
    _assert_untouched(model, before)


def test_load_state_dict_reports_every_problem(model):
    sd = _random_state(model)
    del sd["act_scale"]
    sd["extra"] = np.zeros(1, np.float32)
    sd["norm.bias"] = np.zeros(3, np.float32)
    with pytest.raises(ValueError) as info:
        model.load_state_dict(sd)
    msg = str(info.value)
    assert "act_scale" in msg and "extra" in msg and "norm.bias" in msg


def test_load_state_dict_failure_late_in_order_changes_nothing(model):
    """The bad key sorts last, so a load that copied as it checked would change earlier keys."""
    before = model.state_dict()
    sd = _random_state(model)
    sd["norm.weight"] = np.zeros(5, np.float32)
    with pytest.raises(ValueError):
        model.load_state_dict(sd)
    _assert_untouched(model, before)


def test_load_state_dict_accepts_tensors(model):
    sd = {k: Tensor(v) for k, v in _random_state(model).items()}
    model.load_state_dict(sd)
    np.testing.assert_array_equal(model.first.weight.numpy(), sd["first.weight"].numpy())
