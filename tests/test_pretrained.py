"""GPT-2 checkpoints in the Hugging Face layout: parity with ``transformers`` both ways."""
import json
import tracemalloc

import numpy as np
import pytest

from tinygrad_gpt import backend
from tinygrad_gpt.backend import to_numpy
from tinygrad_gpt.text.bpe import BPETokenizer, ENDOFTEXT
from tinygrad_gpt.model import GPT, GPTConfig
from tinygrad_gpt.storage.pretrained import (config_from_hf, from_pretrained, load_hf_tokenizer,
                                     save_pretrained)
from tinygrad_gpt.storage.serialization import CheckpointError
from tinygrad_gpt.tensor import no_grad

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")
try:
    from transformers import GPT2Config, GPT2LMHeadModel
except ImportError as e:  # e.g. a transformers that does not accept this torch
    pytest.skip(f"transformers' GPT-2 is unavailable: {e}", allow_module_level=True)
safetensors_numpy = pytest.importorskip("safetensors.numpy")

V, T = 97, 24


def hf_model(n_layer=2, n_head=4, n_embd=32, eps=1e-5, seed=0):
    """A small GPT2LMHeadModel with every parameter random (biases and layer norms too)."""
    torch.manual_seed(seed)
    config = GPT2Config(n_positions=T, n_embd=n_embd, n_layer=n_layer, n_head=n_head, vocab_size=V,
                        layer_norm_epsilon=eps, bos_token_id=0, eos_token_id=0)
    model = GPT2LMHeadModel(config).eval()
    with torch.no_grad():
        for p in model.parameters():
            p.copy_(torch.randn_like(p) * 0.2)
    return model


@pytest.fixture(scope="module")
def hf():
    return hf_model()


@pytest.fixture(scope="module")
def hf_dir(hf, tmp_path_factory):
    folder = tmp_path_factory.mktemp("hf_gpt2")
    hf.save_pretrained(folder, safe_serialization=True)
    return folder


def ids(B=2, T_=T, seed=1):
    return np.random.default_rng(seed).integers(0, V, (B, T_))


def our_logits(model, idx):
    model.eval()
    with no_grad():
        return model(idx)[0].numpy()


def hf_logits(model, idx):
    with torch.no_grad():
        return model(torch.tensor(idx)).logits.numpy()


# ----------------------------------------------------------------------------- loading

def test_logits_match_in_float32(hf, hf_dir):
    model = from_pretrained(hf_dir)
    assert model.transformer.wte.weight.dtype == np.float32
    np.testing.assert_allclose(our_logits(model, ids()), hf_logits(hf, ids()), atol=1e-4, rtol=0)


def test_logits_match_in_float64(hf, hf_dir):
    model = from_pretrained(hf_dir, dtype="float64")
    ref = hf_logits(hf.double(), ids())
    hf.float()
    np.testing.assert_allclose(our_logits(model, ids()), ref, atol=1e-10, rtol=0)


def test_layer_norm_epsilon_is_used(tmp_path):
    hf = hf_model(eps=1e-2, n_layer=1)
    hf.save_pretrained(tmp_path, safe_serialization=True)
    model = from_pretrained(tmp_path)
    assert model.transformer.ln_f.eps == 1e-2
    np.testing.assert_allclose(our_logits(model, ids()), hf_logits(hf, ids()), atol=1e-4, rtol=0)


def test_openai_layout_with_buffers_and_head(hf, hf_dir, tmp_path):
    """Names without ``transformer.``, the attention mask buffers and a stored (tied) lm_head."""
    tensors = safetensors_numpy.load_file(str(hf_dir / "model.safetensors"))
    old = {k.removeprefix("transformer."): v for k, v in tensors.items()}
    for i in range(hf.config.n_layer):
        old[f"h.{i}.attn.bias"] = np.tril(np.ones((T, T), np.float32))[None, None]
        old[f"h.{i}.attn.masked_bias"] = np.array(-1e4, np.float32)
    old["lm_head.weight"] = old["wte.weight"].copy()
    safetensors_numpy.save_file(old, str(tmp_path / "model.safetensors"), metadata={"format": "pt"})
    (tmp_path / "config.json").write_text((hf_dir / "config.json").read_text())
    model = from_pretrained(tmp_path)
    np.testing.assert_allclose(our_logits(model, ids()), hf_logits(hf, ids()), atol=1e-4, rtol=0)

    old["lm_head.weight"] = old["lm_head.weight"] + 1
    safetensors_numpy.save_file(old, str(tmp_path / "model.safetensors"), metadata={"format": "pt"})
    with pytest.raises(CheckpointError, match="lm_head.weight differs"):
        from_pretrained(tmp_path)


def test_half_precision_and_shards(tmp_path):
    hf = hf_model(n_layer=3)
    hf.half().save_pretrained(tmp_path, safe_serialization=True, max_shard_size="40KB")
    assert (tmp_path / "model.safetensors.index.json").exists()
    model = from_pretrained(tmp_path)
    assert model.transformer.wte.weight.dtype == np.float32
    np.testing.assert_allclose(our_logits(model, ids()), hf_logits(hf.float(), ids()), atol=1e-4, rtol=0)


def test_loading_draws_no_random_numbers_and_keeps_one_copy(hf_dir):
    state = backend.rng_state()
    model = from_pretrained(hf_dir)
    assert backend.rng_state() == state
    for _, p in model.named_parameters():
        assert p.data.flags.owndata and p.data.flags.writeable  # real arrays, not placeholders
    weights = sum(p.data.nbytes for p in model.parameters())
    tracemalloc.start()
    from_pretrained(hf_dir)
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    assert peak < 1.5 * weights, (peak, weights)


def test_a_gpt_without_init_has_placeholders_and_draws_nothing():
    from tinygrad_gpt import backend
    state = backend.rng_state()
    model = GPT(GPTConfig(block_size=8, vocab_size=11, n_layer=1, n_head=2, n_embd=8), init=False)
    assert backend.rng_state() == state  # no random number drawn
    assert [n for n, _ in model.named_parameters()] == [n for n, _ in GPT(model.config).named_parameters()]
    assert all(p.data.strides == (0,) * p.ndim and p.device == "cpu" for p in model.parameters())


def test_pickle_only_folder_is_refused(hf_dir, tmp_path):
    (tmp_path / "config.json").write_text((hf_dir / "config.json").read_text())
    (tmp_path / "pytorch_model.bin").write_bytes(b"\x80\x02}q\x00.")
    with pytest.raises(CheckpointError, match="pickle can run arbitrary code") as e:
        from_pretrained(tmp_path)
    assert "safetensors" in str(e.value) and "pytorch_model.bin" in str(e.value)


def test_bad_folders(hf_dir, tmp_path):
    with pytest.raises(CheckpointError, match="not a folder"):
        from_pretrained(tmp_path / "nowhere")
    with pytest.raises(CheckpointError, match="no config.json"):
        from_pretrained(tmp_path)
    config = json.loads((hf_dir / "config.json").read_text())
    (tmp_path / "config.json").write_text(json.dumps(config))
    with pytest.raises(CheckpointError, match="no model.safetensors"):
        from_pretrained(tmp_path)
    (tmp_path / "model.safetensors").write_bytes((hf_dir / "model.safetensors").read_bytes())
    (tmp_path / "config.json").write_text(json.dumps({**config, "n_layer": 3}))
    with pytest.raises(CheckpointError, match="config.json says n_layer=3, but the file holds tensors of 2 layers"):
        from_pretrained(tmp_path)
    (tmp_path / "config.json").write_text(json.dumps({**config, "n_embd": 16, "n_head": 2}))
    with pytest.raises(CheckpointError, match="has shape"):
        from_pretrained(tmp_path)


@pytest.mark.parametrize("change, message", [
    ({"activation_function": "relu"}, "activation_function"), ({"model_type": "llama"}, "model_type"),
    ({"n_inner": 7}, "n_inner"), ({"scale_attn_by_inverse_layer_idx": True}, "inverse_layer_idx"),
    ({"n_head": 5}, "divisible"), ({"vocab_size": None}, "vocab_size")])
def test_unsupported_configs(change, message):
    base = {"n_positions": 8, "n_embd": 8, "n_layer": 1, "n_head": 2, "vocab_size": 10}
    with pytest.raises(CheckpointError, match=message):
        config_from_hf({**base, **change})


# ----------------------------------------------------------------------------- saving

def test_save_pretrained_loads_in_transformers(tmp_path):
    backend.manual_seed(3)
    model = GPT(GPTConfig(block_size=T, vocab_size=V, n_layer=2, n_head=2, n_embd=16))
    for p in model.parameters():  # random biases and layer norms, so every tensor is checked
        p.data = p.data + backend.to_device(
            np.float32(0.1) * backend.rng().standard_normal(p.shape).astype(np.float32), p.device)
    save_pretrained(model, tmp_path)
    hf = GPT2LMHeadModel.from_pretrained(tmp_path).eval()
    np.testing.assert_allclose(hf_logits(hf, ids()), our_logits(model, ids()), atol=1e-4, rtol=0)
    again = from_pretrained(tmp_path)
    for (name, p), (_, q) in zip(model.named_parameters(), again.named_parameters()):
        np.testing.assert_array_equal(to_numpy(p.data), to_numpy(q.data), err_msg=name)


def test_save_pretrained_with_tokenizer(tmp_path):
    tok = BPETokenizer.train("hello there, general kenobi " * 20, vocab_size=300)
    n = tok.vocab_size  # training stops early once every word is one token
    model = GPT(GPTConfig(block_size=T, vocab_size=n, n_layer=1, n_head=2, n_embd=8))
    save_pretrained(model, tmp_path, tok)
    config = json.loads((tmp_path / "config.json").read_text())
    assert config["eos_token_id"] == tok.special_tokens[ENDOFTEXT] == n - 1
    again = load_hf_tokenizer(tmp_path)
    assert again.encode("hello kenobi<|endoftext|>") == tok.encode("hello kenobi<|endoftext|>")
    with pytest.raises(ValueError, match="vocab_size"):
        save_pretrained(GPT(GPTConfig(block_size=T, vocab_size=n + 1, n_layer=1, n_head=2, n_embd=8)),
                        tmp_path, tok)
    with pytest.raises(CheckpointError, match="vocab.json"):
        load_hf_tokenizer(tmp_path / "none")


def test_bias_free_model_cannot_be_saved(tmp_path):
    model = GPT(GPTConfig(block_size=T, vocab_size=V, n_layer=1, n_head=2, n_embd=8, bias=False))
    with pytest.raises(ValueError, match="bias"):
        save_pretrained(model, tmp_path)


# ----------------------------------------------------------------------------- sampling

def test_kv_cache_sampling_on_loaded_model(hf, hf_dir):
    model = from_pretrained(hf_dir)
    prompt = ids(B=1, T_=5)
    greedy = model.generate(prompt, 12, temperature=0)
    with torch.no_grad():
        ref = hf.generate(torch.tensor(prompt), max_new_tokens=12, do_sample=False,
                          pad_token_id=0).numpy()
    np.testing.assert_array_equal(greedy, ref)
    cached = model.generate(prompt, 30, top_k=20, seed=7)  # runs past block_size: the window slides
    plain = model.generate(prompt, 30, top_k=20, seed=7, use_cache=False)
    np.testing.assert_array_equal(cached, plain)
    assert cached.shape == (1, 35)


def test_crop_block_size(hf_dir, hf):
    from tinygrad_gpt.storage.pretrained import crop_block_size
    model = crop_block_size(from_pretrained(hf_dir), 10)
    assert model.config.block_size == 10 and model.transformer.wpe.weight.shape == (10, 32)
    np.testing.assert_allclose(our_logits(model, ids(T_=10)), hf_logits(hf, ids(T_=10)), atol=1e-4, rtol=0)
    with pytest.raises(ValueError, match="block_size"):
        crop_block_size(model, 11)


def test_export_training_checkpoint(tmp_path):
    from tinygrad_gpt.storage.checkpoint import save_checkpoint
    from tinygrad_gpt.storage.pretrained import export_checkpoint
    tok = BPETokenizer.train("to be or not to be, that is the question " * 10, vocab_size=280)
    model = GPT(GPTConfig(block_size=T, vocab_size=tok.vocab_size, n_layer=1, n_head=2, n_embd=8))
    save_checkpoint(tmp_path / "ckpt.safetensors", model, extra={"tokenizer": tok.to_dict()})
    export_checkpoint(tmp_path, tmp_path / "hf")
    hf = GPT2LMHeadModel.from_pretrained(tmp_path / "hf").eval()
    x = tok.encode_array("to be or not")[None]
    np.testing.assert_allclose(hf_logits(hf, x), our_logits(model, x), atol=1e-4, rtol=0)
    assert load_hf_tokenizer(tmp_path / "hf").encode("question") == tok.encode("question")


def test_export_command(tmp_path):
    from tinygrad_gpt.storage.checkpoint import save_checkpoint
    from tinygrad_gpt.storage.pretrained import ExportConfig, export
    from tinygrad_gpt.tokenizer import CharTokenizer
    model = GPT(GPTConfig(block_size=T, vocab_size=3, n_layer=1, n_head=2, n_embd=8))
    save_checkpoint(tmp_path / "ckpt.safetensors", model, extra={"tokenizer": CharTokenizer.from_text("abc").to_dict()})
    lines = []
    export(ExportConfig(out_dir=str(tmp_path), hf_dir=str(tmp_path / "hf")), print_fn=lines.append)
    assert "from_pretrained" in lines[0]
    assert (tmp_path / "hf" / "model.safetensors").exists()
    assert not (tmp_path / "hf" / "vocab.json").exists()  # a character tokenizer has no GPT-2 files


def test_a_character_level_export_samples_and_transformers_loads_it(tmp_path, capsys):
    """export writes the character tokenizer beside the weights; sample --init_from=FOLDER reads
    it, and transformers still loads the weights (it ignores the extra file)."""
    from tinygrad_gpt.commands.cli import main
    from tinygrad_gpt.storage.checkpoint import save_checkpoint
    from tinygrad_gpt.tokenizer import CharTokenizer
    tok = CharTokenizer.from_text("abc ")
    model = GPT(GPTConfig(block_size=T, vocab_size=tok.vocab_size, n_layer=1, n_head=2, n_embd=8))
    save_checkpoint(tmp_path / "ckpt.safetensors", model, extra={"tokenizer": tok.to_dict()})
    assert main(["export", f"--out_dir={tmp_path}", f"--hf_dir={tmp_path / 'hf'}"]) == 0
    assert load_hf_tokenizer(tmp_path / "hf").to_dict() == tok.to_dict()
    hf = GPT2LMHeadModel.from_pretrained(tmp_path / "hf").eval()
    x = tok.encode_array("ab ca")[None]
    np.testing.assert_allclose(hf_logits(hf, x), our_logits(model, x), atol=1e-4, rtol=0)
    capsys.readouterr()
    assert main(["sample", f"--init_from={tmp_path / 'hf'}", "--start=ab", "--num_samples=1",
                 "--max_new_tokens=4"]) == 0
    text = capsys.readouterr().out.splitlines()[0]
    assert text.startswith("ab") and len(text) == 6 and set(text) <= set("abc ")


@pytest.mark.parametrize("command", ["train", "sample"])
def test_init_from_a_missing_folder_says_how_to_get_gpt2(tmp_path, monkeypatch, capsys, command):
    from tinygrad_gpt.commands.cli import main
    monkeypatch.chdir(tmp_path)
    assert main([command, "--init_from=gpt2"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: --init_from=gpt2: no folder 'gpt2'") and len(err.splitlines()) == 1
    assert "save_pretrained('gpt2')" in err and "model.safetensors" in err


def test_save_and_load_round_trip_a_folder(tmp_path):
    backend.manual_seed(3)
    model = GPT(GPTConfig(block_size=8, vocab_size=11, n_layer=2, n_head=2, n_embd=16))
    save_pretrained(model, tmp_path / "mine")
    again = from_pretrained(tmp_path / "mine")
    assert again.config == model.config
    for name, value in model.state_dict().items():
        np.testing.assert_array_equal(again.state_dict()[name], value, err_msg=name)

