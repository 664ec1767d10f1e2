"""Honest resume: the log tells the story of the checkpoint beside it, a longer resumed run keeps the
checkpoint's learning-rate schedule (or says what a new one does), and a run that fails before it
saves anything leaves no out_dir behind.
"""
import json
import os

import pytest

from test_cli import released, write_text
from tinygrad_gpt.text.data import DataError
from tinygrad_gpt.optim import cosine_lr
from tinygrad_gpt.run.runlog import OLD_LOG_NAME, RunLog, held_by_checkpoint
from tinygrad_gpt.run.train import TrainConfig, train

TINY = dict(n_layer=1, n_head=2, n_embd=16, block_size=16, batch_size=4, eval_iters=2, warmup_iters=5,
            sample_tokens=0, device="cpu", progress=False, log_interval=5)


def config(folder, **changes):
    return TrainConfig(**{**TINY, "data": str(folder / "input.txt"), "out_dir": str(folder / "out"),
                          "max_iters": 20, "eval_interval": 10, **changes})


def run(cfg):
    lines = []
    train(cfg, print_fn=lines.append)
    return lines


def records(path):
    with open(path, encoding="utf-8") as f:
        return [json.loads(line) for line in f.read().splitlines()]


TIMED = ("ms", "tokens_per_s", "mfu")  # what a step's timing decides


def without_times(recs):
    """The records without timings; a run's start record (the measured peak_flops) left out too."""
    return [{k: v for k, v in r.items() if k not in TIMED} for r in recs if "peak_flops" not in r]


@pytest.fixture
def folder(tmp_path):
    write_text(tmp_path / "input.txt")
    return tmp_path


def test_held_by_checkpoint():
    assert held_by_checkpoint({"iter": 9, "loss": 1.0}, 10)
    assert not held_by_checkpoint({"iter": 10, "loss": 1.0}, 10)  # the step of iteration 10 comes after it
    assert held_by_checkpoint({"iter": 10, "train_loss": 1.0, "val_loss": 1.0}, 10)
    assert not held_by_checkpoint({"iter": 0, "loss": 1.0}, None)


def test_resume_sets_aside_what_the_checkpoint_does_not_hold(folder):
    """A run killed at iteration 14 after its checkpoint at 10: its records 10-14 and a half-written
    line go to log.old.jsonl, and the finished log equals an uninterrupted run's."""
    reference = folder / "ref"
    run(config(folder, out_dir=str(reference), lr_decay_iters=20))
    run(config(folder, max_iters=10, lr_decay_iters=20))
    out = folder / "out"
    stale = [{"iter": i, "loss": 9.0, "lr": 0.1, "ms": 1.0} for i in range(10, 15)]
    with open(out / "log.jsonl", "a", encoding="utf-8") as f:
        f.write("".join(json.dumps(r) + "\n" for r in stale) + '{"iter": 15, "lo')
    lines = run(config(folder, init_from="resume", lr_decay_iters=20))
    assert f"moved 6 records that the checkpoint does not hold from {out / 'log.jsonl'} to {out / OLD_LOG_NAME}" \
        in lines
    assert without_times(records(out / "log.jsonl")) == without_times(records(reference / "log.jsonl"))
    with open(out / OLD_LOG_NAME, encoding="utf-8") as f:
        assert f.read() == "".join(json.dumps(r) + "\n" for r in stale) + '{"iter": 15, "lo\n'


def test_a_new_run_sets_aside_the_log_of_an_earlier_one(folder):
    run(config(folder, max_iters=3))
    first = records(folder / "out" / "log.jsonl")
    run(config(folder, max_iters=2, seed=7, overwrite=True))
    assert records(folder / "out" / OLD_LOG_NAME) == first  # kept, never deleted
    assert max(r["iter"] for r in records(folder / "out" / "log.jsonl")) == 2


def test_set_aside_keeps_a_consistent_prefix(tmp_path):
    log = RunLog(tmp_path)
    recs = [{"iter": 0, "train_loss": 1, "val_loss": 1}, {"iter": 0, "loss": 1}, {"iter": 1, "loss": 1},
            {"iter": 2, "train_loss": 1, "val_loss": 1}, {"iter": 2, "loss": 1}, {"iter": 0, "loss": 5}]
    (tmp_path / "log.jsonl").write_text("".join(json.dumps(r) + "\n" for r in recs))
    assert log.set_aside_past(2) == 2
    assert records(tmp_path / "log.jsonl") == recs[:4]
    assert log.set_aside_past(2) == 0  # nothing more to move
    assert records(tmp_path / OLD_LOG_NAME) == recs[4:]


def test_a_longer_resume_keeps_the_checkpoints_schedule(folder):
    """Raising --max_iters without --lr_decay_iters: the decay still ends where the checkpoint's run
    planned it, the note says so, and the learning rate never jumps back up."""
    run(config(folder))
    lines = run(config(folder, init_from="resume", max_iters=30))
    note = [line for line in lines if line.startswith("note:")]
    assert len(note) == 1 and "decays to --min_lr=0.0001 at iteration 20" in note[0]
    assert "iterations 20-30 run at min_lr" in note[0] and "--lr_decay_iters=30" in note[0]
    steps = [r for r in records(folder / "out" / "log.jsonl") if "loss" in r]
    for r in steps:
        assert r["lr"] == cosine_lr(r["iter"], 1e-3, 5, 20, 1e-4)
    assert [r["lr"] for r in steps if r["iter"] >= 20] == [1e-4] * 10
    # and the checkpoint now names its decay length, so a third resume keeps it too
    lines = run(config(folder, init_from="resume", max_iters=32))
    assert any("decays to --min_lr=0.0001 at iteration 20" in line for line in lines)


def test_a_new_decay_length_on_resume_is_announced(folder):
    run(config(folder, max_iters=10))
    lines = run(config(folder, init_from="resume", max_iters=20, lr_decay_iters=40))
    old, new = cosine_lr(10, 1e-3, 5, 10, 1e-4), cosine_lr(10, 1e-3, 5, 40, 1e-4)
    assert (f"note: --lr_decay_iters=40 changes the schedule the checkpoint followed (decay over 10 "
            f"iterations): the learning rate at iteration 10 becomes {new:.3g} instead of {old:.3g}") in lines
    steps = [r for r in records(folder / "out" / "log.jsonl") if "loss" in r and r["iter"] >= 10]
    assert [r["lr"] for r in steps] == [cosine_lr(i, 1e-3, 5, 40, 1e-4) for i in range(10, 20)]


@pytest.mark.parametrize("out", ["out", "a/b/out"])
def test_a_run_that_fails_before_its_first_step_leaves_no_out_dir(folder, out):
    (folder / "empty.txt").write_text("")
    with pytest.raises(DataError):
        train(config(folder, data=str(folder / "empty.txt"), out_dir=str(folder / out)))
    assert sorted(os.listdir(folder)) == ["empty.txt", "input.txt"]


def test_a_failed_run_leaves_a_folder_it_found_as_it_was(folder):
    (folder / "out").mkdir()
    (folder / "out" / "notes.txt").write_text("mine")
    (folder / "empty.txt").write_text("")
    with pytest.raises(DataError):
        train(config(folder, data=str(folder / "empty.txt")))
    assert released(folder / "out") == ["notes.txt"]  # and an empty lock file, kept


def test_without_a_terminal_the_loss_lines_say_the_time_left(folder):
    lines = run(config(folder, max_iters=11))
    steps = [line for line in lines if line.startswith("iter ")]
    assert steps and all(line.endswith(" left") for line in steps), steps
