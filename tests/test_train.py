"""The training loop, run in-process on tiny configs: the log, the checkpoint, exact resume,
gradient accumulation, float64, and stopping on a non-finite loss."""
import json
import math
import random
from dataclasses import asdict

import numpy as np
import pytest

from test_cli import released
from tinygrad_gpt import backend
from tinygrad_gpt.run import train as train_mod
from tinygrad_gpt.storage.checkpoint import CKPT_NAME, load_checkpoint
from tinygrad_gpt.text.data import Dataset, pydoc_text
from tinygrad_gpt.model import GPT, GPTConfig
from tinygrad_gpt.optim import cosine_lr
from tinygrad_gpt.storage.serialization import CheckpointError, load_file, save_file
from tinygrad_gpt.tokenizer import CharTokenizer
from tinygrad_gpt.errors import ConfigError, TrainingError
from tinygrad_gpt.run.streams import stream
from tinygrad_gpt.run.train import TrainConfig, train

TRAIN_KEYS = {"iter", "loss", "lr", "ms", "tokens_per_s", "mfu"}  # tokens_per_s and mfu: run/telemetry.py
EVAL_KEYS = {"iter", "train_loss", "val_loss"}


@pytest.fixture(scope="module")
def text_file(tmp_path_factory):
    """About 12 kB of made-up sentences: enough for both splits at block_size 16."""
    rng = random.Random(0)
    words = "the quick brown fox jumps over a lazy dog, and then it runs away!".split()
    text = "\n".join(" ".join(rng.choice(words) for _ in range(8)) for _ in range(300)) + "\n"
    path = tmp_path_factory.mktemp("data") / "input.txt"
    path.write_text(text, encoding="utf-8")
    return path


def tiny(tmp_path, text_file, device=None, out="out", **changes):
    """A tiny run's config, on the device the suite runs on unless told otherwise."""
    device = device or backend.default_device()
    options = dict(data=str(text_file), out_dir=str(tmp_path / out), n_layer=1, n_head=2, n_embd=16,
                   block_size=16, batch_size=4, max_iters=20, eval_interval=10, eval_iters=2,
                   warmup_iters=5, sample_tokens=20, device=device, progress=False)
    options.update(changes)
    return TrainConfig(**options)


def read_log(cfg):
    with open(f"{cfg.out_dir}/log.jsonl", encoding="utf-8") as f:
        records = [json.loads(line) for line in f]
    return ([r for r in records if "loss" in r], [r for r in records if "val_loss" in r])


def run(cfg):
    lines = []
    result = train(cfg, print_fn=lines.append)
    return result, lines


# ----------------------------------------------------------------------------- one run

@pytest.fixture(scope="module")
def finished(tmp_path_factory, text_file):
    """One tiny run of 20 iterations, shared by the tests that only read its outputs."""
    cfg = tiny(tmp_path_factory.mktemp("run"), text_file)
    result, lines = run(cfg)
    return cfg, result, lines


def test_log_records(finished):
    cfg, result, _ = finished
    steps, evals = read_log(cfg)
    assert [r["iter"] for r in steps] == list(range(cfg.max_iters))
    assert [r["iter"] for r in evals] == [0, 10, 20]
    for r in steps:
        assert set(r) == TRAIN_KEYS
        assert type(r["iter"]) is int and type(r["loss"]) is float and type(r["ms"]) is float
        assert math.isfinite(r["loss"]) and r["ms"] >= 0
        assert r["lr"] == cosine_lr(r["iter"], cfg.learning_rate, cfg.warmup_iters, cfg.max_iters, cfg.min_lr)
    for r in evals:
        assert set(r) == EVAL_KEYS
        assert type(r["train_loss"]) is float and type(r["val_loss"]) is float
    assert result == {"train": evals[-1]["train_loss"], "val": evals[-1]["val_loss"]}
    # a character model starts near ln(vocab) and 20 steps at lr 1e-3 must not make it worse by much
    assert abs(evals[0]["val_loss"] - math.log(len(set(open(cfg.data).read())))) < 0.3


def test_printed_progress_and_sample(finished, text_file):
    cfg, _, lines = finished
    text = text_file.read_text(encoding="utf-8")
    assert lines[0].startswith("data: input.txt")
    assert any(line.startswith("step 20: train loss") for line in lines)
    assert any(line.startswith("iter 10: loss") for line in lines)
    assert "A sample from the trained model (20 tokens)" in lines[-2]
    sample = lines[-1]
    assert len(sample) == 1 + cfg.sample_tokens and sample[0] == "\n"  # the prompt, then 20 tokens
    assert set(sample) <= set(text)


def test_checkpoint_written_and_loads(finished, text_file):
    cfg, _, _ = finished
    assert released(cfg.out_dir) == [CKPT_NAME, "log.jsonl"]  # no temporary files left, the lock free
    ckpt = load_checkpoint(f"{cfg.out_dir}/{CKPT_NAME}")
    text = text_file.read_text(encoding="utf-8")
    assert ckpt.config == GPTConfig(block_size=16, vocab_size=len(set(text)), n_layer=1, n_head=2, n_embd=16)
    assert ckpt.extra["iter"] == cfg.max_iters
    assert ckpt.extra["tokenizer"] == CharTokenizer.from_text(text).to_dict()
    assert ckpt.extra["train_config"] == asdict(cfg)
    _, evals = read_log(cfg)
    assert ckpt.extra["best_val_loss"] == min(r["val_loss"] for r in evals)
    assert {s["step"] for s in ckpt.optimizer_state["state"].values()} == {cfg.max_iters}
    assert {v.dtype for v in ckpt.model_state.values()} == {np.dtype(np.float32)}
    model = ckpt.build_model()
    x = np.zeros((1, 4), np.int64)
    assert np.isfinite(model(x)[0].numpy()).all()


def test_no_sample_when_sample_tokens_is_zero(tmp_path, text_file):
    _, lines = run(tiny(tmp_path, text_file, max_iters=2, sample_tokens=0))
    assert not any("A sample" in line for line in lines)
    assert lines[-1].startswith("step 2:")


# ----------------------------------------------------------------------------- exact resume

@pytest.mark.parametrize("half, dropout", [(10, 0.0), (10, 0.1), (7, 0.1)])
def test_resume_matches_an_uninterrupted_run(tmp_path, text_file, device, half, dropout):
    """Stop at ``half`` (on or off an eval iteration, with or without dropout), resume, and get
    bit for bit the losses, evals and final weights of a run that never stopped."""
    n = 20
    a = tiny(tmp_path, text_file, device, out="a", max_iters=n, eval_interval=5, dropout=dropout)
    run(a)
    b = tiny(tmp_path, text_file, device, out="b", max_iters=half, lr_decay_iters=n, eval_interval=5,
             dropout=dropout)
    run(b)
    _, lines = run(tiny(tmp_path, text_file, device, out="b", max_iters=n, lr_decay_iters=n,
                        eval_interval=5, dropout=dropout, init_from="resume"))
    assert f"resuming from {b.out_dir}/{CKPT_NAME} at iteration {half}" in lines

    steps_a, evals_a = read_log(a)
    steps_b, evals_b = read_log(b)
    assert [r["iter"] for r in steps_b] == list(range(n))
    assert [(r["iter"], r["loss"], r["lr"]) for r in steps_b] == [(r["iter"], r["loss"], r["lr"]) for r in steps_a]
    evals_b = [r for r in evals_b if r["iter"] % 5 == 0]  # b also evaluated where it stopped
    assert evals_b == evals_a
    ckpt_a, ckpt_b = load_checkpoint(a.out_dir), load_checkpoint(b.out_dir)
    for name, value in ckpt_a.model_state.items():
        np.testing.assert_array_equal(ckpt_b.model_state[name], value, err_msg=name)
    assert ckpt_b.extra["rng"] == ckpt_a.extra["rng"] and ckpt_b.extra["batch_rng"] == ckpt_a.extra["batch_rng"]


def test_resume_takes_the_model_shape_from_the_checkpoint(tmp_path, text_file):
    run(tiny(tmp_path, text_file, max_iters=2))
    cfg = tiny(tmp_path, text_file, max_iters=4, block_size=8, n_layer=3, n_embd=32, init_from="resume")
    run(cfg)
    ckpt = load_checkpoint(cfg.out_dir)
    assert (ckpt.config.block_size, ckpt.config.n_layer, ckpt.config.n_embd) == (16, 1, 16)
    assert [r["iter"] for r in read_log(cfg)[0]] == [0, 1, 2, 3]


def test_resume_without_checkpoint(tmp_path, text_file):
    with pytest.raises(CheckpointError, match="no checkpoint"):
        run(tiny(tmp_path, text_file, init_from="resume"))


def test_resume_refuses_optimizer_state_of_the_wrong_shape(tmp_path, text_file):
    """A checkpoint whose AdamW moments do not fit the model is a CheckpointError naming the file,
    not a bare ValueError from deep inside the optimizer."""
    cfg = tiny(tmp_path, text_file, max_iters=2)
    run(cfg)
    path = f"{cfg.out_dir}/{CKPT_NAME}"
    tensors, meta = load_file(path)
    tensors["optim.0.exp_avg"] = np.zeros(3, np.float32)
    save_file(tensors, path, meta)
    with pytest.raises(CheckpointError, match=CKPT_NAME):
        run(tiny(tmp_path, text_file, max_iters=4, init_from="resume"))


# ----------------------------------------------------------------------------- options

def test_gradient_accumulation(tmp_path, text_file, monkeypatch):
    """With 2 micro-batches per step, each step draws 2 train batches and logs their mean loss."""
    calls = []
    get_batch = Dataset.get_batch

    def counting(self, split, batch_size, rng):
        calls.append(split)
        return get_batch(self, split, batch_size, rng)
    monkeypatch.setattr(Dataset, "get_batch", counting)
    cfg = tiny(tmp_path, text_file, max_iters=4, eval_interval=100, gradient_accumulation_steps=2)
    run(cfg)
    steps, evals = read_log(cfg)
    assert [r["iter"] for r in steps] == [0, 1, 2, 3] and len(evals) == 2
    assert calls.count("train") == 4 * 2 + 2 * cfg.eval_iters
    assert all(math.isfinite(r["loss"]) for r in steps)

    # the first logged loss is the mean of the two micro-batch losses of the freshly initialised model
    text = text_file.read_text(encoding="utf-8")
    tokenizer = CharTokenizer.from_text(text)
    dataset = Dataset(tokenizer.encode_array(text), cfg.block_size)
    backend.manual_seed(cfg.seed)
    model = GPT(GPTConfig(block_size=16, vocab_size=tokenizer.vocab_size, n_layer=1, n_head=2,
                          n_embd=16)).to(device="cpu", dtype=np.float32)
    batch_rng = stream(cfg.seed, "batches")
    losses = [model(*get_batch(dataset, "train", cfg.batch_size, batch_rng))[1].item() for _ in range(2)]
    assert steps[0]["loss"] == pytest.approx(np.mean(losses), rel=1e-6)


def test_float64(tmp_path, text_file):
    cfg64 = tiny(tmp_path, text_file, out="f64", max_iters=3, dtype="float64", sample_tokens=5)
    cfg32 = tiny(tmp_path, text_file, out="f32", max_iters=3, sample_tokens=0)
    _, lines = run(cfg64)
    run(cfg32)
    assert "float64" in lines[1]
    ckpt = load_checkpoint(cfg64.out_dir)
    assert {v.dtype for v in ckpt.model_state.values()} == {np.dtype(np.float64)}
    assert {a.dtype for s in ckpt.optimizer_state["state"].values()
            for k, a in s.items() if k != "step"} == {np.dtype(np.float64)}
    steps64, steps32 = read_log(cfg64)[0], read_log(cfg32)[0]
    # the same initial weights, so the first loss agrees to float32 precision, but is computed in float64
    assert steps64[0]["loss"] == pytest.approx(steps32[0]["loss"], rel=1e-5)
    assert steps64[0]["loss"] != steps32[0]["loss"]


def test_non_finite_loss_stops_with_the_iteration(tmp_path, text_file, monkeypatch):
    """A NaN weight at iteration 3 makes the loss NaN; training stops naming iteration 3, and the
    last good checkpoint (iteration 0) stays loadable."""
    real_step = train_mod._train_step
    calls = []

    def poisoned(model, optimizer, dataset, cfg, lr, batch_rng):
        calls.append(1)
        if len(calls) == 4:  # iteration 3
            model.transformer.wte.weight.data[0, 0] = np.nan
            model.transformer.ln_f.weight.data[:] = np.nan
        return real_step(model, optimizer, dataset, cfg, lr, batch_rng)
    monkeypatch.setattr(train_mod, "_train_step", poisoned)
    cfg = tiny(tmp_path, text_file)
    with pytest.raises(TrainingError, match="at iteration 3") as info:
        run(cfg)
    assert "nan" in str(info.value) and CKPT_NAME in str(info.value)
    assert load_checkpoint(cfg.out_dir).extra["iter"] == 0
    assert [r["iter"] for r in read_log(cfg)[0]] == [0, 1, 2]


def test_pydoc_dataset_loads(tmp_path):
    cfg = TrainConfig(dataset="pydoc", out_dir=str(tmp_path / "out"), n_layer=1, n_head=1, n_embd=8,
                      block_size=8, batch_size=2, max_iters=1, eval_interval=1, eval_iters=1,
                      sample_tokens=0, device="cpu", progress=False)
    _, lines = run(cfg)
    text = pydoc_text()
    assert lines[0].startswith("data: pydoc, ")
    assert lines[0].endswith(f"vocab {len(set(text))}")
    assert load_checkpoint(cfg.out_dir).extra["tokenizer"]["chars"] == sorted(set(text))


@pytest.mark.parametrize("changes, flag", [
    ({"batch_size": 0}, "--batch_size"), ({"max_iters": -1}, "--max_iters"),
    ({"n_embd": 30, "n_head": 4}, "--n_embd=30"), ({"learning_rate": float("nan")}, "--learning_rate"),
    ({"grad_clip": float("inf")}, "--grad_clip"), ({"dropout": 1.0}, "--dropout"),
    ({"beta2": -0.1}, "--beta2"), ({"lr_decay_iters": 0}, "--lr_decay_iters"),
    ({"warmup_iters": -1}, "--warmup_iters"), ({"device": "tpu"}, "--device"),
    ({"dtype": "float16"}, "--dtype"), ({"init_from": "gpt2"}, "--init_from"),
    ({"dataset": "wiki"}, "--dataset"),
])
def test_validate_names_the_flag(changes, flag):
    with pytest.raises(ConfigError) as info:
        TrainConfig(**changes).validate()
    assert flag in str(info.value)


def test_default_config_is_valid():
    assert TrainConfig().validate() == TrainConfig()
