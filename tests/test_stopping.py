"""A stop that saves: SIGTERM and the first Ctrl-C finish the step, write its checkpoint, say how to
resume and exit 143 or 130; a second Ctrl-C aborts without writing; the resumed run gives exactly
the losses of a run that was never stopped.

Two tests stop a real `python -m tinygrad_gpt train` subprocess at random steps; the rest signal
this process from inside a training step.
"""
import json
import os
import random
import re
import signal
import subprocess
import sys
import time

import pytest

from test_cli import released, write_text
from tinygrad_gpt.commands import cli
from tinygrad_gpt.storage import fileio
from tinygrad_gpt.run import train as train_mod
from tinygrad_gpt.storage.checkpoint import CKPT_NAME, load_checkpoint
from tinygrad_gpt.storage.lock import LOCK_NAME
from tinygrad_gpt.run.stopping import Abort, StopSignals, Stopped
from tinygrad_gpt.run.train import TrainConfig, train

pytestmark = pytest.mark.skipif(os.name == "nt" or not os.path.isdir("/proc/self/fd"),
                                reason="POSIX signals, and /proc to see which file a descriptor writes")

TINY = dict(n_layer=1, n_head=2, n_embd=16, block_size=16, batch_size=4, eval_iters=2, warmup_iters=5,
            sample_tokens=0, device="cpu", progress=False, dropout=0.1)


def config(folder, out, **changes):
    return TrainConfig(**{**TINY, "data": str(folder / "input.txt"), "out_dir": str(folder / out),
                          "max_iters": 40, "eval_interval": 10, **changes})


def records(out_dir, name="log.jsonl"):
    with open(os.path.join(out_dir, name), encoding="utf-8") as f:
        return [json.loads(line) for line in f.read().splitlines()]


TIMED = ("ms", "tokens_per_s", "mfu")  # what a step's timing decides


def without_times(recs):
    """The records without timings; a run's start record (the measured peak_flops) left out too."""
    return [{k: v for k, v in r.items() if k not in TIMED} for r in recs if "peak_flops" not in r]


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    """An uninterrupted run: its folder and its log without the step times."""
    folder = tmp_path_factory.mktemp("stop")
    write_text(folder / "input.txt")
    train(config(folder, "ref"), print_fn=lambda *a: None)
    return folder, without_times(records(folder / "ref"))


def signal_at_step(monkeypatch, steps, signum=signal.SIGTERM):
    """Send ``signum`` to this process during each training step numbered in ``steps`` (0-based calls)."""
    real, calls = train_mod._train_step, []

    def step(*args):
        out = real(*args)
        if len(calls) in steps:
            os.kill(os.getpid(), signum)
        calls.append(1)
        return out
    monkeypatch.setattr(train_mod, "_train_step", step)


def main(argv, capsys):
    code = cli.main(argv)
    out, err = capsys.readouterr()
    return code, out, err


@pytest.mark.parametrize("signum, code, step", [(signal.SIGTERM, 143, 13), (signal.SIGINT, 130, 9)])
def test_a_signal_saves_the_step_and_resume_is_exact(reference, monkeypatch, capsys, signum, code, step):
    """Step 9 ends right before the evaluation of iteration 10: the stop saves without it, and the
    resumed run makes it, as the uninterrupted run did."""
    folder, expected = reference
    out = folder / f"stopped{signum}"
    signal_at_step(monkeypatch, {step}, signum)
    argv = ["train", f"--data={folder / 'input.txt'}", f"--out_dir={out}", "--max_iters=40", "--eval_interval=10",
            *[f"--{k}={v}" for k, v in TINY.items()]]
    result, _, err = main(argv, capsys)
    assert result == code
    lines = err.splitlines()
    assert len(lines) == 1 and lines[0].startswith("stopped by "), err
    assert f"saved iteration {step + 1} to {out / CKPT_NAME}" in lines[0]
    assert lines[0].endswith(" --init_from=resume") and "python -m tinygrad_gpt train" in lines[0]
    assert load_checkpoint(out).extra["iter"] == step + 1
    assert released(out) == [CKPT_NAME, "log.jsonl"]  # lock released, no temporary file
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler  # handlers put back
    monkeypatch.undo()
    assert main([*argv, "--init_from=resume"], capsys)[0] == 0
    assert without_times(records(out)) == expected


def test_a_second_ctrl_c_aborts_without_writing(reference, monkeypatch):
    """The first Ctrl-C asks for a stop; the second lands inside the checkpoint write (after its data,
    before the rename): nothing is written, the previous checkpoint stays, no temporary file is left."""
    folder, _ = reference
    cfg = config(folder, "twice")
    signal_at_step(monkeypatch, {13}, signal.SIGINT)
    real_fsync, armed = os.fsync, []

    def fsync(fd):
        ckpt, writing = os.path.join(cfg.out_dir, CKPT_NAME), os.readlink(f"/proc/self/fd/{fd}").endswith(".tmp")
        if writing and os.path.exists(ckpt) and load_checkpoint(ckpt).extra["iter"] == 10 and not armed:
            armed.append(1)
            os.kill(os.getpid(), signal.SIGINT)
        return real_fsync(fd)
    monkeypatch.setattr(os, "fsync", fsync)
    with pytest.raises(Stopped) as info:
        train(cfg, print_fn=lambda *a: None)
    assert armed and info.value.exit_code == 130 and not info.value.saved
    assert re.search(r"Ctrl-C again at iteration 14: stopped at once without saving; the previous checkpoint "
                     r"\(iteration 10\) is intact", str(info.value))
    assert load_checkpoint(cfg.out_dir).extra["iter"] == 10
    assert released(cfg.out_dir) == [CKPT_NAME, "log.jsonl"]


def test_a_signal_before_training_starts_aborts_and_leaves_nothing(tmp_path, monkeypatch, capsys):
    write_text(tmp_path / "input.txt")
    from tinygrad_gpt.run import inputs
    real = inputs.load_data

    def load(*args):
        os.kill(os.getpid(), signal.SIGTERM)
        return real(*args)
    monkeypatch.setattr(inputs, "load_data", load)
    result, _, err = main(["train", f"--data={tmp_path / 'input.txt'}", f"--out_dir={tmp_path / 'out'}"], capsys)
    assert result == 143 and err == "error: interrupted by SIGTERM; nothing was saved\n"
    assert os.listdir(tmp_path) == ["input.txt"]


def test_stop_signals_outside_the_loop_abort_at_once():
    with StopSignals() as signals:
        with pytest.raises(Abort):
            os.kill(os.getpid(), signal.SIGTERM)
            time.sleep(1)
        signals.armed = True
        os.kill(os.getpid(), signal.SIGTERM)
        assert signals.requested == signal.SIGTERM
        with pytest.raises(Abort):
            os.kill(os.getpid(), signal.SIGINT)
            time.sleep(1)
    assert signal.getsignal(signal.SIGTERM) == signal.SIG_DFL


def test_should_stop_is_the_one_question(reference, monkeypatch):
    """The loop asks should_stop() once per iteration, and only it: a stop can be decided there alone."""
    folder, _ = reference
    asked = []
    monkeypatch.setattr(train_mod, "should_stop",
                        lambda signals, comm: asked.append(1) or (signal.SIGTERM if len(asked) == 7 else None))
    with pytest.raises(Stopped, match="saved iteration 6"):
        train(config(folder, "asked"), print_fn=lambda *a: None)
    assert len(asked) == 7


def _wait_for_step(out_dir, step, child, deadline):
    path = os.path.join(out_dir, "log.jsonl")
    while True:
        assert child.poll() is None and time.time() < deadline, "the run ended before it could be stopped"
        try:
            with open(path, encoding="utf-8") as f:
                if any(f'"iter": {step}, "loss"' in line for line in f):
                    return
        except FileNotFoundError:
            pass
        time.sleep(0.002)


def test_sigterm_and_ctrl_c_to_a_real_run_at_random_steps(reference, tmp_path):
    """A subprocess is stopped twice at random steps (SIGTERM, then SIGINT) and resumed each time; the
    records of the whole run equal those of the run that was never stopped."""
    folder, expected = reference
    seed = random.randrange(10**6)
    rng = random.Random(seed)
    first = rng.randrange(2, 18)
    second = rng.randrange(first + 3, 36)
    flags = [f"--data={folder / 'input.txt'}", f"--out_dir={tmp_path / 'out'}", "--max_iters=40",
             "--eval_interval=10", *[f"--{k}={v}" for k, v in TINY.items()]]
    for step, signum, code, resume in ((first, signal.SIGTERM, 143, []),
                                       (second, signal.SIGINT, 130, ["--init_from=resume"])):
        child = subprocess.Popen([sys.executable, "-m", "tinygrad_gpt", "train", *flags, *resume],
                                 stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        try:
            _wait_for_step(tmp_path / "out", step, child, time.time() + 120)
            child.send_signal(signum)
            _, err = child.communicate(timeout=120)
        finally:
            child.kill()
            child.wait()
        assert child.returncode == code, (seed, err)
        lines = err.splitlines()
        assert len(lines) == 1 and lines[0].startswith("stopped by "), (seed, err)
        saved = int(re.search(r"saved iteration (\d+)", lines[0]).group(1))
        assert saved > step and load_checkpoint(tmp_path / "out").extra["iter"] == saved, seed
        assert (tmp_path / "out" / LOCK_NAME).read_text() == "", seed  # kept, naming no holder
        assert not [n for n in os.listdir(tmp_path / "out") if n.endswith(".tmp")], seed
    cfg = TrainConfig(**{**TINY, "data": str(folder / "input.txt"), "out_dir": str(tmp_path / "out"),
                         "max_iters": 40, "eval_interval": 10, "init_from": "resume"})
    train(cfg, print_fn=lambda *a: None)
    assert without_times(records(tmp_path / "out")) == expected, seed
