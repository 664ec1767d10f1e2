import math

import numpy as np
import pytest

from tinygrad_gpt import Tensor, manual_seed
from tinygrad_gpt.backend import to_device, to_numpy
from tinygrad_gpt.gradcheck import check_grads
from tinygrad_gpt.model import GPT, GPTConfig, LayerCache, parameter_shapes
from tinygrad_gpt.optim import AdamW

V, BLOCK = 11, 8


def tiny_config(**overrides):
    options = dict(block_size=BLOCK, vocab_size=V, n_layer=2, n_head=2, n_embd=16)
    options.update(overrides)
    return GPTConfig(**options)


def tiny_gpt(seed=0, **overrides):
    manual_seed(seed)
    return GPT(tiny_config(**overrides))


def batch(B=2, T=BLOCK, seed=0):
    rng = np.random.default_rng(seed)
    return rng.integers(0, V, (B, T)), rng.integers(0, V, (B, T))


def peaky_gpt(seed=0, **overrides):
    """A tiny GPT with large random weights, so its next-token distributions are far from
    uniform and a wrong logit (say, from a broken KV cache) shows up in the sampled tokens."""
    model = tiny_gpt(seed, **overrides)
    rng = np.random.default_rng(seed + 100)
    sd = {}
    for name, value in model.state_dict().items():
        if name.endswith("wte.weight") or name.endswith("wpe.weight"):
            sd[name] = rng.standard_normal(value.shape)
        elif name.endswith("bias"):
            sd[name] = 0.1 * rng.standard_normal(value.shape)
        elif ".ln_" in name:
            sd[name] = 1 + 0.1 * rng.standard_normal(value.shape)
        else:
            sd[name] = 0.4 * rng.standard_normal(value.shape)
    return model.load_state_dict(sd).eval()


def expected_state_shapes(n_layer, C, vocab, block, bias):
    shapes = {"transformer.wte.weight": (vocab, C), "transformer.wpe.weight": (block, C)}
    for i in range(n_layer):
        p = f"transformer.h.{i}."
        shapes.update({p + "ln_1.weight": (C,), p + "attn.c_attn.weight": (C, 3 * C),
                       p + "attn.c_proj.weight": (C, C), p + "ln_2.weight": (C,),
                       p + "mlp.c_fc.weight": (C, 4 * C), p + "mlp.c_proj.weight": (4 * C, C)})
        if bias:
            shapes.update({p + "ln_1.bias": (C,), p + "attn.c_attn.bias": (3 * C,),
                           p + "attn.c_proj.bias": (C,), p + "ln_2.bias": (C,),
                           p + "mlp.c_fc.bias": (4 * C,), p + "mlp.c_proj.bias": (C,)})
    shapes["transformer.ln_f.weight"] = (C,)
    if bias:
        shapes["transformer.ln_f.bias"] = (C,)
    return shapes


# ----------------------------------------------------------------------------- config

@pytest.mark.parametrize("bad", [dict(n_embd=15), dict(n_layer=0), dict(block_size=2.0),
                                 dict(dropout=1.0), dict(vocab_size=True)])
def test_config_rejects_bad_values(bad):
    with pytest.raises(ValueError):
        tiny_config(**bad)


# ----------------------------------------------------------------------------- state dict, init

@pytest.mark.parametrize("bias", [True, False])
def test_state_dict_names_and_shapes(bias):
    model = GPT(GPTConfig(block_size=8, vocab_size=11, n_layer=3, n_head=2, n_embd=16, bias=bias))
    sd = model.state_dict()
    assert {k: v.shape for k, v in sd.items()} == expected_state_shapes(3, 16, 11, 8, bias)
    assert not any("lm_head" in k for k in sd)
    assert not bias or all(v.dtype == np.float32 for v in sd.values())
    if not bias:
        assert not any(k.endswith(".bias") for k in sd)


def test_state_dict_order_is_gpt2_order():
    names = list(tiny_gpt().state_dict())
    assert names[:2] == ["transformer.wte.weight", "transformer.wpe.weight"]
    assert names[2:8] == ["transformer.h.0.ln_1.weight", "transformer.h.0.ln_1.bias",
                          "transformer.h.0.attn.c_attn.weight", "transformer.h.0.attn.c_attn.bias",
                          "transformer.h.0.attn.c_proj.weight", "transformer.h.0.attn.c_proj.bias"]
    assert names[-2:] == ["transformer.ln_f.weight", "transformer.ln_f.bias"]


def test_state_dict_roundtrip_gives_same_logits():
    a, b = tiny_gpt(seed=0), tiny_gpt(seed=1)
    x, _ = batch()
    assert not np.allclose(a(x)[0].numpy(), b(x)[0].numpy())
    b.load_state_dict(a.state_dict())
    np.testing.assert_array_equal(a(x)[0].numpy(), b(x)[0].numpy())


def test_bias_state_dict_does_not_load_into_bias_free_model():
    no_bias = tiny_gpt(bias=False)
    with pytest.raises(ValueError, match=r"unexpected.*transformer\.h\.0\.attn\.c_attn\.bias"):
        no_bias.load_state_dict(tiny_gpt(bias=True).state_dict())


def test_gpt2_init_statistics():
    n_layer, C = 4, 128
    manual_seed(0)
    model = GPT(GPTConfig(block_size=256, vocab_size=512, n_layer=n_layer, n_head=4, n_embd=C))
    proj_std = 0.02 / math.sqrt(2 * n_layer)
    checked = set()
    for name, value in model.state_dict().items():
        if name.endswith(".bias"):
            np.testing.assert_array_equal(value, 0.0)
        elif ".ln_" in name:
            np.testing.assert_array_equal(value, 1.0)
        else:
            want = proj_std if name.endswith("c_proj.weight") else 0.02
            assert value.std() == pytest.approx(want, rel=0.05), name
            assert abs(value.mean()) < 0.1 * want, name
            checked.add(name.split(".")[-2])
    assert checked == {"wte", "wpe", "c_attn", "c_proj", "c_fc"}


def test_head_is_tied_to_wte():
    model = tiny_gpt()
    assert all("lm_head" not in n for n, _ in model.named_parameters())
    x, _ = batch(B=1, T=3)
    wte = model.transformer.wte.weight
    logits_before = model(x)[0].numpy()
    wte.data = wte.data * 2.0  # scaling the embedding must change the head as well
    assert not np.allclose(model(x)[0].numpy(), logits_before)


def test_num_parameters_excludes_positions_by_default():
    model = tiny_gpt()
    total = sum(v.size for v in model.state_dict().values())
    assert model.num_parameters(non_embedding=False) == total
    assert model.num_parameters() == total - BLOCK * 16


# ----------------------------------------------------------------------------- forward

def test_forward_shapes_and_loss():
    model = tiny_gpt()
    x, y = batch(B=3, T=5)
    logits, loss = model(x)
    assert logits.shape == (3, 5, V) and loss is None
    logits, loss = model(x, y)
    assert loss.shape in ((), (1,))


def test_float32_model_stays_float32():
    model = tiny_gpt()
    x, y = batch(B=2, T=4)
    logits, loss = model(x, y)
    assert logits.dtype == np.float32 and loss.dtype == np.float32
    loss.backward()
    assert all(p.grad.dtype == np.float32 for p in model.parameters())


def test_loss_is_mean_cross_entropy_of_logits():
    model = tiny_gpt().to(dtype=np.float64)
    x, y = batch(B=2, T=6)
    y[0, 2] = -1  # ignored position
    logits, loss = model(x, y)
    z = logits.numpy()
    logp = z - z.max(-1, keepdims=True)
    logp = logp - np.log(np.exp(logp).sum(-1, keepdims=True))
    keep = y != -1
    picked = np.take_along_axis(logp, np.where(keep, y, 0)[..., None], -1)[..., 0]
    want = -picked[keep].mean()
    assert loss.item() == pytest.approx(want, rel=1e-12)


def test_initial_loss_is_about_log_vocab():
    model = tiny_gpt(seed=3)
    x, y = batch(B=8, T=BLOCK, seed=3)
    _, loss = model(x, y)
    assert abs(loss.item() - math.log(V)) < 0.1


def test_attention_is_causal():
    model = peaky_gpt()
    x, _ = batch(B=2, T=BLOCK)
    changed = x.copy()
    changed[:, 5:] = (changed[:, 5:] + 1) % V
    a, b = model(x)[0].numpy(), model(changed)[0].numpy()
    np.testing.assert_allclose(a[:, :5], b[:, :5], rtol=1e-5, atol=1e-6)
    assert not np.allclose(a[:, 5:], b[:, 5:])


def test_rows_of_a_batch_are_independent():
    # float64: a matrix product over 18 rows and one over 6 round differently in float32
    model = peaky_gpt().to(dtype=np.float64)
    x, _ = batch(B=3, T=6)
    together = model(x)[0].numpy()
    for i in range(3):
        np.testing.assert_allclose(model(x[i:i + 1])[0].numpy()[0], together[i], rtol=1e-10, atol=1e-12)


def test_shorter_sequence_matches_prefix_of_longer():
    # float64, so that rounding differences between the two lengths' code paths (such as the
    # attention softmax's max shift, taken or skipped) stay far below the tolerance
    model = peaky_gpt().to(dtype=np.float64)
    x, _ = batch(B=2, T=BLOCK)
    np.testing.assert_allclose(model(x[:, :3])[0].numpy(), model(x)[0].numpy()[:, :3],
                               rtol=1e-10, atol=1e-12)


def test_accepts_tensor_and_list_ids():
    model = tiny_gpt()
    x, _ = batch(B=1, T=4)
    want = model(x)[0].numpy()
    np.testing.assert_array_equal(model(Tensor(x, dtype=np.int64))[0].numpy(), want)
    np.testing.assert_array_equal(model(x.tolist())[0].numpy(), want)


@pytest.mark.parametrize("idx, what", [
    (np.array([[0, 1, V]]), r"\[0, 11\)"),
    (np.array([[0, -1, 2]]), r"\[0, 11\)"),
    (np.zeros((1, BLOCK + 1), dtype=np.int64), "block_size"),
    (np.array([[0.0, 1.0, 2.0]]), "integer"),
    (np.array([0, 1, 2]), "shape"),
    (np.zeros((1, 2, 3), dtype=np.int64), "shape"),
])
def test_bad_idx_raises_value_error(idx, what):
    model = tiny_gpt()
    with pytest.raises(ValueError, match=what):
        model(idx)


def test_float_tensor_ids_raise():
    with pytest.raises(ValueError, match="integer"):
        tiny_gpt()(Tensor(np.zeros((1, 3), np.float32)))


def test_bad_targets_raise():
    model = tiny_gpt()
    x, y = batch(B=2, T=4)
    with pytest.raises(ValueError):
        model(x, y[:, :3])
    with pytest.raises(ValueError):
        model(x, y.astype(np.float32))
    y[0, 0] = V
    with pytest.raises(ValueError):
        model(x, y)


def test_dropout_only_in_training():
    model = tiny_gpt(dropout=0.3)
    x, y = batch()
    a, b = model(x, y)[1].item(), model(x, y)[1].item()
    assert a != b
    model.eval()
    assert model(x, y)[1].item() == model(x, y)[1].item()


# ----------------------------------------------------------------------------- gradients

def _param_by_name(model, name):
    return dict(model.named_parameters())[name]


def _set_attr(model, name, value):
    """Replace the parameter at a dotted name (ModuleList parts are indices) with ``value``."""
    *path, leaf = name.split(".")
    obj = model
    for part in path:
        obj = obj[int(part)] if part.isdigit() else getattr(obj, part)
    setattr(obj, leaf, value)


@pytest.mark.parametrize("bias", [True, False])
def test_loss_gradcheck_float64(bias):
    """check_grads through the whole GPT with respect to a few parameter tensors."""
    model = peaky_gpt(bias=bias).train().to(dtype=np.float64)
    x, y = batch(B=2, T=6, seed=1)
    names = ["transformer.wte.weight", "transformer.wpe.weight", "transformer.h.0.attn.c_attn.weight",
             "transformer.h.1.mlp.c_proj.weight", "transformer.ln_f.weight"]
    if bias:
        names += ["transformer.h.0.ln_1.bias", "transformer.h.1.attn.c_proj.bias"]
    originals = {n: _param_by_name(model, n) for n in names}
    inputs = [Tensor(originals[n].data.copy(), requires_grad=True) for n in names]

    def loss_fn(*tensors):
        for n, t in zip(names, tensors):
            _set_attr(model, n, t)
        return model(x, y)[1]

    try:
        assert check_grads(loss_fn, inputs, eps=1e-6, atol=1e-8, rtol=1e-6, n_directions=3)
    finally:
        for n, p in originals.items():
            _set_attr(model, n, p)


def test_every_parameter_gradient_directional_float64():
    """Backward's gradient of every parameter along random directions vs central differences."""
    model = peaky_gpt().train().to(dtype=np.float64)
    x, y = batch(B=2, T=BLOCK, seed=2)
    params = model.parameters()
    model(x, y)[1].backward()
    grads = [to_numpy(p.grad) for p in params]
    assert all(np.abs(g).max() > 0 for g in grads)
    rng = np.random.default_rng(0)
    base = [to_numpy(p.data) for p in params]
    eps = 1e-6
    for _ in range(3):
        vs = [rng.standard_normal(p.shape) for p in params]
        analytic = sum(float((g * v).sum()) for g, v in zip(grads, vs))
        losses = []
        for sign in (1, -1):
            for p, b, v in zip(params, base, vs):
                p.data = to_device(b + sign * eps * v, p.device)
            losses.append(model(x, y)[1].item())
        numeric = (losses[0] - losses[1]) / (2 * eps)
        assert analytic == pytest.approx(numeric, rel=1e-6, abs=1e-8)
    for p, b in zip(params, base):
        p.data = to_device(b, p.device)


def test_wte_gradient_includes_head_contribution():
    """Tokens that never appear in the input still get a wte gradient, through the tied head."""
    model = tiny_gpt().to(dtype=np.float64)
    x = np.array([[0, 1, 2, 1]])
    y = np.array([[1, 2, 1, 3]])
    model(x, y)[1].backward()
    g = to_numpy(model.transformer.wte.weight.grad)
    assert np.abs(g[4:]).min() > 0  # ids 4..10 are only in the head
    # the head's share of row v is sum_n (p_nv - [y_n = v]) h_n / N: rows of ids that are
    # neither inputs nor targets are pushed one way (p > 0), so they are not all equal to zero
    assert not np.allclose(g[4:], 0.0)


def test_wte_gradient_matches_torch():
    torch = pytest.importorskip("torch")
    from torch_gpt import TorchGPT, load_from_state_dict
    model = peaky_gpt().train().to(dtype=np.float64)
    x, y = batch(B=2, T=6, seed=4)
    model(x, y)[1].backward()
    ref = TorchGPT(BLOCK, V, 2, 2, 16).double()
    load_from_state_dict(ref, model.state_dict())
    ref(torch.tensor(x), torch.tensor(y))[1].backward()
    np.testing.assert_allclose(to_numpy(model.transformer.wte.weight.grad), ref.tok_emb.weight.grad.numpy(),
                               rtol=1e-9, atol=1e-12)


def test_overfits_one_batch():
    model = tiny_gpt(seed=1)
    x, y = batch(B=2, T=BLOCK, seed=5)
    opt = AdamW(model.parameters(), lr=1e-2, weight_decay=0.0)
    first = None
    for _ in range(200):
        opt.zero_grad()
        _, loss = model(x, y)
        first = loss.item() if first is None else first
        loss.backward()
        opt.step()
    assert first > 2.0
    assert model(x, y)[1].item() < 0.1


def test_configure_optimizers_decays_only_matrices():
    model = tiny_gpt()
    opt = model.configure_optimizers(weight_decay=0.1, learning_rate=1e-3, betas=(0.9, 0.95))
    decay, no_decay = opt.param_groups
    assert decay["weight_decay"] == 0.1 and no_decay["weight_decay"] == 0.0
    assert all(p.ndim == 2 for p in decay["params"]) and all(p.ndim == 1 for p in no_decay["params"])
    assert len(decay["params"]) + len(no_decay["params"]) == len(model.parameters())


# ----------------------------------------------------------------------------- generate

PROMPT = np.array([[1, 2, 3], [4, 5, 6]])


def test_generate_shape_dtype_and_prompt_kept():
    model = tiny_gpt()
    out = model.generate(PROMPT, 5, seed=0)
    assert isinstance(out, np.ndarray) and out.shape == (2, 3 + 5)
    assert np.issubdtype(out.dtype, np.integer)
    np.testing.assert_array_equal(out[:, :3], PROMPT)
    assert out.min() >= 0 and out.max() < V


def test_generate_zero_new_tokens():
    out = tiny_gpt().generate(PROMPT, 0)
    np.testing.assert_array_equal(out, PROMPT)


def _greedy_by_hand(model, idx, n):
    idx = idx.copy()
    for _ in range(n):
        logits = model(idx[:, -BLOCK:])[0].numpy()[:, -1]
        idx = np.concatenate([idx, logits.argmax(-1)[:, None]], axis=1)
    return idx


def test_greedy_is_argmax_and_deterministic():
    model = peaky_gpt()
    a = model.generate(PROMPT, 10, temperature=0)
    b = model.generate(PROMPT, 10, temperature=0, seed=123)
    np.testing.assert_array_equal(a, b)
    np.testing.assert_array_equal(a, _greedy_by_hand(model, PROMPT, 10))  # also past block_size
    assert len(set(a[:, 3:].ravel().tolist())) > 1  # not a degenerate constant continuation


def test_top_k_1_equals_greedy():
    model = peaky_gpt()
    greedy = model.generate(PROMPT, 8, temperature=0)
    for seed in range(3):
        np.testing.assert_array_equal(model.generate(PROMPT, 8, temperature=1.3, top_k=1, seed=seed),
                                      greedy)


def test_seed_reproducible_and_seeds_differ():
    model = peaky_gpt()
    a = model.generate(PROMPT, 12, seed=7)
    np.testing.assert_array_equal(a, model.generate(PROMPT, 12, seed=7))
    outs = {model.generate(PROMPT, 12, seed=s).tobytes() for s in range(5)}
    assert len(outs) > 1


SAMPLING = [dict(temperature=1.0), dict(temperature=0.5), dict(temperature=2.0),
            dict(top_k=3), dict(top_p=0.8), dict(temperature=0.7, top_k=4, top_p=0.9),
            dict(temperature=0)]


@pytest.mark.parametrize("options", SAMPLING, ids=lambda o: ",".join(f"{k}={v}" for k, v in o.items()))
def test_kv_cache_gives_the_uncached_tokens(options):
    model = peaky_gpt()
    for seed in range(3):
        # 3 + 14 tokens: the window slides past block_size=8 on the way
        cached = model.generate(PROMPT, 14, use_cache=True, seed=seed, **options)
        plain = model.generate(PROMPT, 14, use_cache=False, seed=seed, **options)
        np.testing.assert_array_equal(cached, plain)


@pytest.mark.parametrize("T", [BLOCK - 1, BLOCK, BLOCK + 3])
def test_kv_cache_with_prompt_at_or_past_block(T):
    model = peaky_gpt()
    prompt = np.random.default_rng(T).integers(0, V, (2, T))
    for seed in range(3):
        cached = model.generate(prompt, 6, seed=seed)
        np.testing.assert_array_equal(cached, model.generate(prompt, 6, use_cache=False, seed=seed))
        np.testing.assert_array_equal(cached[:, :T], prompt)


@pytest.mark.parametrize("T", [1, 5, BLOCK])
def test_newest_only_body_is_the_last_row_of_the_full_body(T):
    """Rebuilding the cache computes the last block for the newest position only: its output
    equals the full body's last row, and every layer caches the keys and values of all T."""
    model = tiny_gpt(seed=3).to(dtype=np.float64)
    idx = np.random.default_rng(T).integers(0, V, (2, T))
    full_caches = [LayerCache() for _ in model.transformer.h]
    newest_caches = [LayerCache() for _ in model.transformer.h]
    full = model._body(idx, 0, full_caches).numpy()
    newest = model._body(idx, 0, newest_caches, newest_only=True).numpy()
    assert newest.shape == (2, 1, model.config.n_embd)
    np.testing.assert_allclose(newest, full[:, -1:], rtol=1e-12, atol=1e-12)
    for a, b in zip(full_caches, newest_caches):
        assert b.length == T
        np.testing.assert_array_equal(to_numpy(a.k), to_numpy(b.k))
        np.testing.assert_array_equal(to_numpy(a.v), to_numpy(b.v))


def test_kv_cache_in_float64():
    model = peaky_gpt().to(dtype=np.float64)
    for seed in range(3):
        np.testing.assert_array_equal(model.generate(PROMPT, 12, seed=seed),
                                      model.generate(PROMPT, 12, use_cache=False, seed=seed))


def test_generate_without_seed_follows_manual_seed():
    model = peaky_gpt()
    manual_seed(5)
    a = model.generate(PROMPT, 8)
    manual_seed(5)
    np.testing.assert_array_equal(a, model.generate(PROMPT, 8))


def test_kv_cache_single_token_prompt():
    model = peaky_gpt()
    prompt = np.array([[3]])
    for seed in range(3):
        np.testing.assert_array_equal(model.generate(prompt, 12, seed=seed),
                                      model.generate(prompt, 12, use_cache=False, seed=seed))


def _step_logits(model, out, prompt_len):
    """Logits the model gives for each generated position, computed without generate."""
    for t in range(prompt_len, out.shape[1]):
        yield t, model(out[:, max(0, t - BLOCK):t])[0].numpy()[:, -1].astype(np.float64)


def test_top_k_only_picks_from_the_k_likeliest():
    model = peaky_gpt()
    k = 3
    for seed in range(3):
        out = model.generate(PROMPT, 10, top_k=k, temperature=3.0, seed=seed)
        for t, logits in _step_logits(model, out, 3):
            kth = np.sort(logits, -1)[:, -k]
            assert np.all(logits[np.arange(2), out[:, t]] >= kth)


def test_top_p_only_picks_from_the_nucleus():
    model = peaky_gpt()
    top_p = 0.6
    for seed in range(3):
        out = model.generate(PROMPT, 10, top_p=top_p, temperature=2.0, seed=seed)
        for t, logits in _step_logits(model, out, 3):
            z = logits / 2.0
            probs = np.exp(z - z.max(-1, keepdims=True))
            probs /= probs.sum(-1, keepdims=True)
            for row in range(2):
                p = probs[row]
                chosen = p[out[row, t]]
                # the mass of tokens strictly likelier than the chosen one is below top_p
                assert p[p > chosen].sum() < top_p + 1e-9


def test_sampling_follows_softmax_with_temperature():
    """Many rows with one prompt: the first sampled token's frequencies match softmax(z / T)."""
    model = peaky_gpt()
    n, temperature = 4000, 1.5
    prompt = np.tile(np.array([[2, 7]]), (n, 1))
    out = model.generate(prompt, 1, temperature=temperature, seed=0)
    z = model(prompt[:1])[0].numpy()[0, -1].astype(np.float64) / temperature
    probs = np.exp(z - z.max())
    probs /= probs.sum()
    freq = np.bincount(out[:, -1], minlength=V) / n
    assert probs.max() < 0.97  # the check below is not trivial
    np.testing.assert_allclose(freq, probs, atol=4 * np.sqrt(0.25 / n))


def test_generate_with_dropout_is_deterministic_and_restores_mode():
    model = peaky_gpt(dropout=0.5).train()
    a = model.generate(PROMPT, 10, temperature=0)
    b = model.generate(PROMPT, 10, temperature=0, use_cache=False)
    np.testing.assert_array_equal(a, b)
    np.testing.assert_array_equal(a, model.generate(PROMPT, 10, temperature=0))
    np.testing.assert_array_equal(model.generate(PROMPT, 10, seed=3), model.generate(PROMPT, 10, seed=3))
    assert model.training and all(m.training for m in model.modules())
    np.testing.assert_array_equal(a, _greedy_by_hand(model.eval(), PROMPT, 10))


def test_generate_builds_no_gradients():
    model = tiny_gpt()
    model.generate(PROMPT, 4, seed=0)
    assert all(p.grad is None for p in model.parameters())


@pytest.mark.parametrize("bad", [dict(temperature=-1.0), dict(top_k=0), dict(top_p=0.0), dict(top_p=1.5)])
def test_generate_rejects_bad_options(bad):
    with pytest.raises(ValueError):
        tiny_gpt().generate(PROMPT, 2, **bad)


def test_generate_rejects_bad_prompts():
    model = tiny_gpt()
    with pytest.raises(ValueError):
        model.generate(np.array([[0, V]]), 2)
    with pytest.raises(ValueError):
        model.generate(np.zeros((2, 0), dtype=np.int64), 2)
    with pytest.raises(ValueError):
        model.generate(np.array([[0.0, 1.0]]), 2)


def test_parameter_shapes_are_the_models_own():
    config = tiny_config(bias=False)
    shapes = parameter_shapes(config)
    assert shapes == {name: p.shape for name, p in GPT(config).named_parameters()}
    assert shapes["transformer.h.1.mlp.c_proj.weight"] == (64, 16) and "transformer.ln_f.bias" not in shapes
    assert all(not p.data.flags.writeable for p in GPT(config, init=False).parameters())  # placeholders, no memory
