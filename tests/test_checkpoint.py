"""Checkpoints: a save/load round trip is exact, and every bad file is refused with a CheckpointError
that names the file."""
import json
import pickle

import numpy as np
import pytest

from tinygrad_gpt import backend
from tinygrad_gpt.storage.checkpoint import CKPT_NAME, load_checkpoint, save_checkpoint
from tinygrad_gpt.model import GPT, GPTConfig, parameter_shapes
from tinygrad_gpt.storage.serialization import CheckpointError, load_file, save_file

CONFIG = GPTConfig(block_size=8, vocab_size=11, n_layer=2, n_head=2, n_embd=8)
EXTRA = {"iter": 7, "best_val_loss": 1.25, "tokenizer": {"type": "char", "chars": list("abc")},
         "nested": {"list": [1, 2.5, None, "x"], "flag": True}}


def _batch(seed=0, B=3, T=8):
    rng = np.random.default_rng(seed)
    return rng.integers(0, CONFIG.vocab_size, (B, T)), rng.integers(0, CONFIG.vocab_size, (B, T))


def _trained(config=CONFIG, dtype=np.float32, steps=2):
    """A small GPT and its AdamW after ``steps`` updates, so the optimizer has moments and step counts."""
    backend.manual_seed(0)
    model = GPT(config).to(dtype=dtype)
    optimizer = model.configure_optimizers(weight_decay=0.1, learning_rate=1e-2, betas=(0.9, 0.95))
    for i in range(steps):
        x, y = _batch(i)
        model(x, y)[1].backward()
        optimizer.step()
        model.zero_grad()
    return model, optimizer


@pytest.fixture
def saved(tmp_path):
    model, optimizer = _trained()
    path = tmp_path / CKPT_NAME
    save_checkpoint(path, model, optimizer, EXTRA)
    return path, model, optimizer


def _rewrite(path, edit_tensors=None, edit_meta=None):
    """Load a checkpoint file raw, edit its tensors or metadata, and write it back (a valid safetensors file)."""
    tensors, meta = load_file(path)
    if edit_tensors:
        edit_tensors(tensors)
    if edit_meta:
        edit_meta(meta)
    save_file(tensors, path, meta)


# ----------------------------------------------------------------------------- round trip

def test_round_trip_model_optimizer_and_extra(saved):
    path, model, optimizer = saved
    ckpt = load_checkpoint(path)
    assert ckpt.path == str(path)
    assert ckpt.config == CONFIG
    assert ckpt.extra == EXTRA
    expected = model.state_dict()
    assert set(ckpt.model_state) == set(expected) == set(parameter_shapes(CONFIG))
    for name, value in expected.items():
        assert ckpt.model_state[name].dtype == value.dtype
        np.testing.assert_array_equal(ckpt.model_state[name], value)

    sd = optimizer.state_dict()
    assert ckpt.optimizer_state["type"] == "AdamW"
    assert set(ckpt.optimizer_state["state"]) == set(sd["state"]) and sd["state"]
    for i, state in sd["state"].items():
        loaded = ckpt.optimizer_state["state"][i]
        assert loaded["step"] == state["step"] == 2
        for key in ("exp_avg", "exp_avg_sq"):
            np.testing.assert_array_equal(loaded[key], state[key])
    for saved_group, group in zip(ckpt.optimizer_state["param_groups"], sd["param_groups"]):
        assert saved_group["params"] == group["params"]
        assert tuple(saved_group["betas"]) == tuple(group["betas"])
        assert saved_group["weight_decay"] == group["weight_decay"]
        assert saved_group["lr"] == group["lr"] and saved_group["eps"] == group["eps"]


def test_a_directory_means_its_ckpt_file(saved):
    path, _, _ = saved
    assert load_checkpoint(path.parent).path == str(path)


def test_build_model_gives_identical_logits(saved):
    path, model, _ = saved
    rebuilt = load_checkpoint(path).build_model()
    x, _ = _batch(5)
    model.eval()
    rebuilt.eval()
    np.testing.assert_array_equal(rebuilt(x)[0].numpy(), model(x)[0].numpy())


def test_restored_optimizer_continues_exactly(saved):
    """Loading the optimizer state into a fresh AdamW gives exactly the next step of the original."""
    path, model, optimizer = saved
    ckpt = load_checkpoint(path)
    twin = ckpt.build_model()
    twin_opt = twin.configure_optimizers(weight_decay=0.0, learning_rate=123.0, betas=(0.5, 0.5))
    twin_opt.load_state_dict(ckpt.optimizer_state)  # options come from the checkpoint too
    for m, opt in ((model, optimizer), (twin, twin_opt)):
        x, y = _batch(9)
        m(x, y)[1].backward()
        opt.step()
    for (name, p), (_, q) in zip(model.named_parameters(), twin.named_parameters()):
        np.testing.assert_array_equal(p.numpy(), q.numpy(), err_msg=name)


def test_model_only_checkpoint(tmp_path):
    model, _ = _trained(steps=0)
    save_checkpoint(tmp_path / "m.safetensors", model)
    ckpt = load_checkpoint(tmp_path / "m.safetensors")
    assert ckpt.optimizer_state is None and ckpt.extra == {}


def test_float64_stays_float64(tmp_path):
    model, optimizer = _trained(dtype=np.float64)
    save_checkpoint(tmp_path / CKPT_NAME, model, optimizer, {"iter": 1})
    ckpt = load_checkpoint(tmp_path / CKPT_NAME)
    assert {v.dtype for v in ckpt.model_state.values()} == {np.dtype(np.float64)}
    assert {a.dtype for s in ckpt.optimizer_state["state"].values()
            for k, a in s.items() if k != "step"} == {np.dtype(np.float64)}
    rebuilt = ckpt.build_model()
    assert {p.dtype for p in rebuilt.parameters()} == {np.dtype(np.float64)}
    x, _ = _batch(1)
    np.testing.assert_array_equal(rebuilt(x)[0].numpy(), model(x)[0].numpy())


def test_build_model_can_cast(saved):
    path, _, _ = saved
    rebuilt = load_checkpoint(path).build_model(dtype=np.float64)
    assert {p.dtype for p in rebuilt.parameters()} == {np.dtype(np.float64)}


def test_no_bias_config_round_trips(tmp_path):
    config = GPTConfig(block_size=4, vocab_size=5, n_layer=1, n_head=1, n_embd=4, bias=False)
    model, optimizer = _trained(config, steps=0)
    save_checkpoint(tmp_path / CKPT_NAME, model, optimizer)
    ckpt = load_checkpoint(tmp_path / CKPT_NAME)
    assert ckpt.config == config
    assert not any(k.endswith("bias") for k in ckpt.model_state)


def test_file_is_safetensors_without_pickle(saved):
    path, _, _ = saved
    raw = path.read_bytes()
    n = int.from_bytes(raw[:8], "little")
    header = json.loads(raw[8:8 + n])
    assert header["__metadata__"]["format"] == "tinygrad_gpt.checkpoint"
    assert all(name.startswith(("model.", "optim.")) for name in header if name != "__metadata__")
    assert b"\x80\x04\x95" not in raw and b"\x80\x05\x95" not in raw  # no pickle frames
    assert sorted(p.name for p in path.parent.iterdir()) == [CKPT_NAME]  # no temporary file left


# ----------------------------------------------------------------------------- refusing bad files

def _refused(path, *words):
    with pytest.raises(CheckpointError) as info:
        load_checkpoint(path)
    message = str(info.value)
    assert str(path) in message
    for word in words:
        assert word in message
    return message


def test_missing_file(tmp_path):
    path = tmp_path / "nowhere" / CKPT_NAME
    _refused(path, "no checkpoint", "train")


def test_empty_directory(tmp_path):
    _refused(tmp_path / CKPT_NAME, "no checkpoint")
    with pytest.raises(CheckpointError, match=CKPT_NAME):
        load_checkpoint(tmp_path)


def test_foreign_safetensors_file(tmp_path):
    path = tmp_path / "weights.safetensors"
    save_file({"transformer.wte.weight": np.zeros((11, 8), np.float32)}, path, {"author": "someone"})
    _refused(path, "not a tinygrad_gpt checkpoint")


def test_pickle_file_refused(tmp_path):
    path = tmp_path / CKPT_NAME
    path.write_bytes(pickle.dumps({"model": [1, 2, 3]}, protocol=4))
    _refused(path, "pickle")


@pytest.mark.parametrize("cut", [4, 20, -1, -100])
def test_truncated_file(saved, cut):
    path, _, _ = saved
    raw = path.read_bytes()
    path.write_bytes(raw[:cut])
    _refused(path)


def test_flipped_data_byte(saved):
    path, _, _ = saved
    raw = bytearray(path.read_bytes())
    raw[-5] ^= 0xFF
    path.write_bytes(bytes(raw))
    _refused(path)


def test_unsupported_version(saved):
    path, _, _ = saved
    _rewrite(path, edit_meta=lambda m: m.update(version="99"))
    _refused(path, "'99'")


def _drop_tensor(t):
    del t["model.transformer.ln_f.weight"]


def _extra_tensor(t):
    t["model.transformer.h.9.attn.c_proj.weight"] = np.zeros((8, 8), np.float32)


def _reshape_tensor(t):
    t["model.transformer.wpe.weight"] = np.zeros((4, 8), np.float32)


def _integer_tensor(t):
    t["model.transformer.ln_f.weight"] = np.ones(8, np.int32)


@pytest.mark.parametrize("edit, word", [(_drop_tensor, "transformer.ln_f.weight"),
                                        (_extra_tensor, "transformer.h.9.attn.c_proj.weight"),
                                        (_reshape_tensor, "transformer.wpe.weight"),
                                        (_integer_tensor, "int32")])
def test_model_tensors_not_matching_config(saved, edit, word):
    path, _, _ = saved
    _rewrite(path, edit_tensors=edit)
    _refused(path, word)


def _set_config(**changes):
    def edit(meta):
        config = json.loads(meta["model_config"])
        config.update(changes)
        meta["model_config"] = json.dumps(config)
    return edit


@pytest.mark.parametrize("edit", [_set_config(n_embd=16), _set_config(n_layer=3), _set_config(bias=False),
                                  _set_config(vocab_size=12)])
def test_config_not_matching_model_tensors(saved, edit):
    path, _, _ = saved
    _rewrite(path, edit_meta=edit)
    _refused(path, "config")


@pytest.mark.parametrize("edit", [_set_config(n_layer=0), _set_config(n_head=3), _set_config(flash=True),
                                  _set_config(dropout=2.0), _set_config(n_layer="2"),
                                  lambda m: m.update(model_config="[1, 2]"),
                                  lambda m: m.update(model_config="{not json"),
                                  lambda m: m.pop("model_config"),
                                  lambda m: m.update(extra="{oops")])
def test_bad_metadata(saved, edit):
    path, _, _ = saved
    _rewrite(path, edit_meta=edit)
    _refused(path)


def _steps_as_list(meta):
    info = json.loads(meta["optimizer"])
    info["steps"] = list(info["steps"].values())
    meta["optimizer"] = json.dumps(info)


def _bare_optim_name(tensors):
    tensors["optim.0"] = tensors.pop("optim.0.exp_avg")


def _unknown_optim_index(tensors):
    tensors["optim.999.exp_avg"] = np.zeros(3, np.float32)


@pytest.mark.parametrize("edit_tensors, edit_meta", [
    (None, _steps_as_list),
    (None, lambda m: m.update(optimizer='"AdamW"')),
    (None, lambda m: m.update(optimizer="{broken")),
    (_bare_optim_name, None),
    (_unknown_optim_index, None),
])
def test_bad_optimizer_state(saved, edit_tensors, edit_meta):
    """Damaged optimizer entries are a CheckpointError too, never a bare ValueError or AttributeError."""
    path, _, _ = saved
    _rewrite(path, edit_tensors, edit_meta)
    _refused(path)
