"""Our GPT against the independent PyTorch GPT-2 in tests/torch_gpt.py, in float64.

Same weights in both: logits, loss and every parameter's gradient must agree to ~1e-9.
"""
import numpy as np
import pytest

torch = pytest.importorskip("torch")

from tinygrad_gpt import manual_seed  # noqa: E402
from tinygrad_gpt.backend import to_numpy  # noqa: E402
from tinygrad_gpt.model import GPT, GPTConfig  # noqa: E402
from torch_gpt import TorchGPT, load_from_state_dict, state_dict_in_our_layout  # noqa: E402

BLOCK, V, N_LAYER, N_HEAD, C = 8, 11, 2, 2, 16
RTOL, ATOL = 1e-9, 1e-12


def _random_weights(model, seed):
    """Random (not GPT-2-init) weights: large enough that every term of the gradient matters."""
    rng = np.random.default_rng(seed)
    sd = {}
    for name, value in model.state_dict().items():
        scale = 1.0 if "wte" in name or "wpe" in name else 0.3
        sd[name] = (1.0 if ".ln_" in name and name.endswith("weight") else 0.0) \
            + scale * rng.standard_normal(value.shape)
    return sd


def _pair(bias=True, dropout=0.0, seed=0, use_sdpa=False):
    manual_seed(seed)
    ours = GPT(GPTConfig(block_size=BLOCK, vocab_size=V, n_layer=N_LAYER, n_head=N_HEAD, n_embd=C,
                         dropout=dropout, bias=bias)).to(dtype=np.float64)
    ours.load_state_dict(_random_weights(ours, seed))
    ref = TorchGPT(BLOCK, V, N_LAYER, N_HEAD, C, bias=bias, dropout=dropout, use_sdpa=use_sdpa).double()
    load_from_state_dict(ref, ours.state_dict())
    return ours, ref


def _data(B, T, seed=0, ignore=False):
    rng = np.random.default_rng(seed)
    x, y = rng.integers(0, V, (B, T)), rng.integers(0, V, (B, T))
    if ignore:
        y[0, 0] = -1
    return x, y


def _compare(ours, ref, x, y):
    logits, loss = ours(x, y)
    loss.backward()
    ref_logits, ref_loss = ref(torch.from_numpy(x), torch.from_numpy(y))
    ref_loss.backward()
    assert logits.dtype == np.float64
    np.testing.assert_allclose(logits.numpy(), ref_logits.detach().numpy(), rtol=RTOL, atol=ATOL)
    assert loss.item() == pytest.approx(ref_loss.item(), rel=RTOL)
    ref_grads = state_dict_in_our_layout(ref, grads=True)
    our_grads = {name: to_numpy(p.grad) for name, p in ours.named_parameters()}
    assert set(our_grads) == set(ref_grads)
    for name, g in our_grads.items():
        assert g is not None and ref_grads[name] is not None, name
        assert g.shape == ref_grads[name].shape, name
        assert np.abs(g).max() > 0, name
        np.testing.assert_allclose(g, ref_grads[name], rtol=RTOL, atol=ATOL, err_msg=name)


def test_mapping_roundtrip_is_exact():
    ours, ref = _pair()
    back = state_dict_in_our_layout(ref)
    for name, value in ours.state_dict().items():
        np.testing.assert_array_equal(back[name], value)


@pytest.mark.parametrize("bias", [True, False], ids=["bias", "no_bias"])
@pytest.mark.parametrize("T", [BLOCK, 5])
def test_logits_loss_and_every_gradient_match_torch(bias, T):
    ours, ref = _pair(bias=bias, seed=T)
    ours.train(), ref.train()
    _compare(ours, ref, *_data(2, T, seed=T))


def test_ignored_targets_match_torch():
    ours, ref = _pair(seed=3)
    _compare(ours, ref, *_data(2, BLOCK, seed=3, ignore=True))


def test_eval_mode_with_dropout_configured_matches_torch():
    ours, ref = _pair(dropout=0.4, seed=4)
    ours.eval(), ref.eval()
    _compare(ours, ref, *_data(2, 6, seed=4))


def test_train_mode_with_zero_dropout_matches_torch():
    ours, ref = _pair(dropout=0.0, seed=5)
    assert ours.training and ref.training
    _compare(ours, ref, *_data(2, BLOCK, seed=5))


def test_torch_sdpa_variant_matches_too():
    ours, ref = _pair(seed=6, use_sdpa=True)
    ref.eval()  # sdpa path; values equal the explicit path's up to rounding
    _compare(ours, ref, *_data(2, BLOCK, seed=6))


def test_gpt2_init_in_torch_reference_matches_spec():
    ref = TorchGPT(64, 256, 4, 4, 128)
    sd = state_dict_in_our_layout(ref)
    assert sd["transformer.h.0.attn.c_proj.weight"].std() == pytest.approx(0.02 / np.sqrt(8), rel=0.05)
    assert sd["transformer.h.0.mlp.c_fc.weight"].std() == pytest.approx(0.02, rel=0.05)
    assert np.all(sd["transformer.h.0.ln_1.weight"] == 1) and np.all(sd["transformer.ln_f.bias"] == 0)
