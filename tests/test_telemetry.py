"""A run that reports on itself: the measured peak, tokens/s and MFU that add up, per-parameter
health (gradient norms before clipping, update ratios), health.png, and the progress line."""
import json
import math

import numpy as np
import pytest

from tinygrad_gpt import backend
from tinygrad_gpt.commands import cli
from tinygrad_gpt.model import GPT, GPTConfig
from tinygrad_gpt.optim import clip_grad_norm_
from tinygrad_gpt.run import telemetry
from test_cli import write_text


def test_the_peak_is_a_timed_matmul_measured_once(monkeypatch):
    peak = telemetry.measure_peak_flops("cpu", n=128)
    assert math.isfinite(peak) and peak > 1e7
    monkeypatch.setattr(telemetry, "_timed_product", lambda *a: pytest.fail("measured twice"))
    assert telemetry.measure_peak_flops("cpu", n=128) == peak


def test_mfu_is_flops_per_token_times_tokens_per_second_over_the_peak():
    meter = telemetry.Meter(flops_per_token=1000.0, tokens_per_iter=512, peak_flops=2e6)
    speed = meter.step(0.25)
    assert speed["tokens_per_s"] == 2048.0 and speed["mfu"] == pytest.approx(1000.0 * 2048.0 / 2e6, rel=1e-12)
    assert telemetry.shown(speed) == "2,048 tok/s, MFU 102.4%"


def _model(**kw):
    backend.manual_seed(0)
    return GPT(GPTConfig(block_size=8, vocab_size=20, n_layer=2, n_head=2, n_embd=16, **kw))


def test_flops_per_token_is_page_09a_s_formula():
    model = _model()
    c = model.config
    n = sum(p.data.size for name, p in model.named_parameters() if name != "transformer.wpe.weight")
    assert model.flops_per_token() == 6 * n + 12 * c.n_layer * c.n_embd * c.block_size


def test_health_notes_norms_before_clipping_and_update_ratios():
    """The record's gradient norms are those before clipping, and each ratio is |w1 - w0| / |w0|."""
    model = _model()
    opt = model.configure_optimizers(0.1, 1e-2, (0.9, 0.99))
    x = np.random.default_rng(0).integers(0, 20, (4, 8))
    _, loss = model(x, np.roll(x, -1, axis=1))
    loss.backward()
    params = dict(model.named_parameters())
    host = backend.to_numpy
    before_clip = {k: float(np.linalg.norm(host(p.grad))) for k, p in params.items()}
    w0 = {k: host(p.data).copy() for k, p in params.items()}
    norm = clip_grad_norm_(model.parameters(), 0.01)  # clips hard: every gradient scaled down
    health = telemetry.Health(interval=5)
    assert health.watch(opt, model, 3) is opt  # not a health step
    watched = health.watch(opt, model, 10)
    watched.param_groups[0]["lr"] = 1e-2
    watched.step()
    record = health.record(10, norm)
    assert record["iter"] == 10 and set(record["grad_norm"]) == set(params)
    for k in params:
        assert record["grad_norm"][k] == pytest.approx(before_clip[k], rel=1e-4), k
        if np.linalg.norm(w0[k]) > 0:
            ratio = np.linalg.norm(host(params[k].data) - w0[k]) / np.linalg.norm(w0[k])
            assert record["update_ratio"][k] == pytest.approx(ratio, rel=1e-5), k
        else:  # a bias that starts at zero has no ratio
            assert k not in record["update_ratio"]
    assert health.record(11, norm) is None


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    """A tiny run with health every 3 steps, its printed lines, and its log."""
    folder = tmp_path_factory.mktemp("tele")
    text = write_text(folder / "input.txt")
    code = cli.main(["train", f"--data={text}", f"--out_dir={folder / 'out'}", "--n_layer=1", "--n_head=2",
                     "--n_embd=16", "--block_size=16", "--batch_size=4", "--max_iters=7", "--eval_interval=7",
                     "--eval_iters=2", "--log_interval=2", "--health_interval=3", "--sample_tokens=0",
                     "--progress=False", "--device=cpu"])
    assert code == 0
    with open(folder / "out" / "log.jsonl", encoding="utf-8") as f:
        records = [json.loads(line) for line in f]
    return folder, records


def test_the_log_gives_the_mfu_back_from_its_parts(run, capsys):
    _, records = run
    start = records[0]
    assert set(start) == {"iter", "peak_flops", "flops_per_token", "tokens_per_iter", "device"}
    assert start["tokens_per_iter"] == 4 * 16 and start["peak_flops"] > 0
    steps = [r for r in records if "loss" in r]
    assert len(steps) == 7
    for r in steps:
        assert r["mfu"] == pytest.approx(start["flops_per_token"] * r["tokens_per_s"] / start["peak_flops"], rel=1e-12)
        assert r["tokens_per_s"] == pytest.approx(start["tokens_per_iter"] / (r["ms"] / 1000), rel=0.02, abs=1e3)
    health = [r for r in records if "update_ratio" in r]
    assert [r["iter"] for r in health] == [0, 3, 6]
    assert all(v > 0 for r in health for v in r["grad_norm"].values())


def test_the_progress_line_shows_tokens_per_second_and_mfu(tmp_path, capsys):
    text = write_text(tmp_path / "input.txt")
    cli.main(["train", f"--data={text}", f"--out_dir={tmp_path / 'out'}", "--n_layer=1", "--n_head=2", "--n_embd=8",
              "--block_size=8", "--batch_size=2", "--max_iters=1", "--eval_interval=1", "--eval_iters=1",
              "--sample_tokens=0", "--progress=False", "--device=cpu"])
    line = next(l for l in capsys.readouterr().out.splitlines() if l.startswith("iter 0:"))
    assert " tok/s, MFU " in line and line.split("MFU ")[1].split("%")[0].replace(".", "").isdigit(), line


def test_plot_draws_health_png_and_refuses_a_bad_health_record(run, capsys):
    pytest.importorskip("matplotlib")
    folder, records = run
    assert cli.main(["plot", f"--out_dir={folder / 'out'}"]) == 0
    assert (folder / "out" / "health.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert "health.png" in capsys.readouterr().out
    bad = folder / "bad"
    bad.mkdir()
    (bad / "log.jsonl").write_text(json.dumps({"iter": 0, "loss": 1.0}) + "\n" + json.dumps(
        {"iter": 0, "grad_norm": {"w": "big"}, "update_ratio": {}}) + "\n", encoding="utf-8")
    assert cli.main(["plot", f"--out_dir={bad}"]) == 1
    err = capsys.readouterr().err
    assert err.startswith("error: ") and str(bad / "log.jsonl") in err and "grad_norm" in err
