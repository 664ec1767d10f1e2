"""Robust runs: kill -9 and exact resume, a kill in the middle of a checkpoint write, corrupt
checkpoints, the out_dir lock, non-finite losses and gradients, anomaly mode, and flat memory.

The kill tests run `python -m tinygrad_gpt train` as a subprocess on a tiny model; the rest run
in-process. On the CPU, a resumed run must give bit for bit the losses of an uninterrupted one.
"""
import gc
import json
import os
import pickle
import re
import signal
import socket
import subprocess
import sys
import time
import tracemalloc
import weakref
from pathlib import Path

import numpy as np
import pytest

from test_cli import assert_one_error_line, released, tinygrad_gpt, write_text
from tinygrad_gpt import backend
from tinygrad_gpt import functional as F
from tinygrad_gpt import tensor as tensor_mod
from tinygrad_gpt.run import train as train_mod
from tinygrad_gpt.anomaly import AnomalyError, detect_anomaly
from tinygrad_gpt.storage.checkpoint import CKPT_NAME, load_checkpoint, save_checkpoint
from tinygrad_gpt.storage.lock import LOCK_NAME, LockError, RunLock
from tinygrad_gpt.model import GPT, GPTConfig
from tinygrad_gpt.storage.serialization import CheckpointError, save_file
from tinygrad_gpt.tensor import Tensor
from tinygrad_gpt.errors import TrainingError
from tinygrad_gpt.run.train import TrainConfig, train

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TINY = ["--n_layer=1", "--n_head=2", "--n_embd=16", "--block_size=16", "--batch_size=4", "--eval_iters=2",
        "--warmup_iters=5", "--sample_tokens=0"]


@pytest.fixture(scope="module")
def text_file(tmp_path_factory):
    return write_text(tmp_path_factory.mktemp("data") / "input.txt")


def tiny(folder, text_file, out="out", **changes):
    options = dict(data=str(text_file), out_dir=str(folder / out), n_layer=1, n_head=2, n_embd=16,
                   block_size=16, batch_size=4, max_iters=20, eval_interval=10, eval_iters=2,
                   warmup_iters=5, sample_tokens=0, device="cpu", progress=False)
    options.update(changes)
    return TrainConfig(**options)


def run(cfg):
    lines = []
    return train(cfg, print_fn=lines.append), lines


def log_records(out_dir):
    """The records of out_dir/log.jsonl; a half-written last line (a killed run) is dropped."""
    try:
        with open(os.path.join(out_dir, "log.jsonl"), encoding="utf-8") as f:
            text = f.read()
    except FileNotFoundError:
        return []
    return [json.loads(line) for line in text.split("\n")[:-1]]


def last_by_iter(records, key):
    """For each iteration, the last record that has ``key`` (a resumed run appends to the log)."""
    return {r["iter"]: r[key] for r in records if key in r}


def dead_pid():
    """The pid of a process that has exited and been reaped."""
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    child.wait()
    return child.pid


def assert_all_finite(out_dir):
    for name, value in load_checkpoint(out_dir).model_state.items():
        assert np.isfinite(value).all(), name


# ----------------------------------------------------------------------------- kill -9 and resume

@pytest.mark.host_only('runs the command in a subprocess on the CPU')
def test_kill_9_then_resume_matches_an_uninterrupted_run(tmp_path, text_file):
    """Run b is stopped (SIGSTOP) somewhere after its checkpoint at iteration 100, a third run on its
    out_dir is refused by the lock, b is killed with SIGKILL and resumed: every iteration's loss
    equals the uninterrupted run a's, bit for bit."""
    flags = [f"--data={text_file}", *TINY, "--max_iters=1000", "--eval_interval=100", "--log_interval=1000",
             "--dropout=0.1"]
    a = tinygrad_gpt("train", *flags, "--out_dir=a", cwd=tmp_path)
    assert a.returncode == 0, a.stderr

    b = subprocess.Popen([sys.executable, "-m", "tinygrad_gpt", "train", *flags, "--out_dir=b"], cwd=tmp_path,
                         stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        deadline = time.time() + 60
        while not any(r.get("iter", 0) >= 150 for r in log_records(tmp_path / "b") if "loss" in r):
            assert b.poll() is None and time.time() < deadline, "run b ended before it could be stopped"
            time.sleep(0.002)
        os.kill(b.pid, signal.SIGSTOP)  # b holds the lock, frozen mid-run
        third = tinygrad_gpt("train", *flags, "--out_dir=b", "--overwrite=True", cwd=tmp_path)
        assert_one_error_line(third, 1, "another run", f"process {b.pid}", "b")
        os.kill(b.pid, signal.SIGKILL)
    finally:
        b.kill()
        b.wait()
    assert b.returncode == -signal.SIGKILL
    stopped_at = max(r["iter"] for r in log_records(tmp_path / "b") if "loss" in r)
    assert stopped_at < 999 and load_checkpoint(tmp_path / "b").extra["iter"] >= 100

    resumed = tinygrad_gpt("train", *flags, "--out_dir=b", "--init_from=resume", cwd=tmp_path)
    assert resumed.returncode == 0, resumed.stderr
    assert f"left by a run that no longer exists (process {b.pid})" in resumed.stdout
    start = int(re.search(r"resuming from \S+ at iteration (\d+)", resumed.stdout).group(1))
    assert 100 <= start <= stopped_at and start % 100 == 0

    records_a, records_b = log_records(tmp_path / "a"), log_records(tmp_path / "b")
    losses_a, losses_b = last_by_iter(records_a, "loss"), last_by_iter(records_b, "loss")
    assert list(losses_b) == list(range(1000)) and losses_b == losses_a
    assert last_by_iter(records_b, "val_loss") == last_by_iter(records_a, "val_loss")
    final_a, final_b = load_checkpoint(tmp_path / "a"), load_checkpoint(tmp_path / "b")
    for name, value in final_a.model_state.items():
        np.testing.assert_array_equal(final_b.model_state[name], value, err_msg=name)
    assert released(tmp_path / "b") == [CKPT_NAME, "log.jsonl", "log.old.jsonl"]
    old = [json.loads(line) for line in (tmp_path / "b" / "log.old.jsonl").read_text().splitlines()]
    assert old[0]["iter"] == start and max(r["iter"] for r in old) == stopped_at  # set aside, not lost


# A child that trains, but whose second checkpoint write stops halfway through its first tensor
# and waits to be killed; it tells the parent by creating the file named in argv[1].
STALLING_WRITER = r"""
import os, sys, time
from tinygrad_gpt.commands import cli

marker, real_fdopen, opened = sys.argv[1], os.fdopen, []

class Stalling:
    def __init__(self, f):
        self.f, self.writes = f, 0
    def __enter__(self):
        return self
    def __exit__(self, *exc):
        return self.f.__exit__(*exc)
    def write(self, chunk):
        self.writes += 1
        if self.writes == 3:  # after the length and the header: half of the first tensor, then stop
            self.f.write(chunk[:len(chunk) // 2])
            self.f.flush()
            open(marker, "w").close()
            time.sleep(600)
        return self.f.write(chunk)
    def flush(self):
        self.f.flush()
    def fileno(self):
        return self.f.fileno()

def fdopen(fd, mode="r", *args, **kwargs):
    f = real_fdopen(fd, mode, *args, **kwargs)
    if mode == "wb":
        opened.append(fd)
        if len(opened) == 2:
            return Stalling(f)
    return f

os.fdopen = fdopen
sys.exit(cli.main(sys.argv[2:]))
"""


@pytest.mark.host_only('runs the command in a subprocess on the CPU')
def test_kill_during_a_checkpoint_write_keeps_the_previous_one(tmp_path, text_file):
    flags = [f"--data={text_file}", *TINY, "--max_iters=20", "--eval_interval=10"]
    marker = tmp_path / "stalled"
    child = subprocess.Popen([sys.executable, "-c", STALLING_WRITER, str(marker), "train", *flags],
                             cwd=tmp_path, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        deadline = time.time() + 60
        while not marker.exists():
            assert child.poll() is None and time.time() < deadline, child.stderr.read().decode()
            time.sleep(0.005)
        os.kill(child.pid, signal.SIGKILL)
    finally:
        child.kill()
        child.wait()
    out = tmp_path / "out"
    partial = [n for n in os.listdir(out) if n.startswith(f".{CKPT_NAME}.") and n.endswith(".tmp")]
    assert len(partial) == 1  # the write was cut off midway
    assert load_checkpoint(out).extra["iter"] == 0  # the previous checkpoint is whole

    sampled = tinygrad_gpt("sample", "--max_new_tokens=5", "--num_samples=1", cwd=tmp_path)
    assert sampled.returncode == 0 and sampled.stderr == "", sampled.stderr
    resumed = tinygrad_gpt("train", *flags, "--init_from=resume", cwd=tmp_path)
    assert resumed.returncode == 0, resumed.stderr
    assert f"(process {child.pid})" in resumed.stdout and "at iteration 0" in resumed.stdout
    # partial file and stale lock gone; the killed run's records past iteration 0 set aside
    assert released(out) == [CKPT_NAME, "log.jsonl", "log.old.jsonl"]
    assert load_checkpoint(out).extra["iter"] == 20


# ----------------------------------------------------------------------------- corrupt checkpoints

@pytest.fixture(scope="module")
def good_checkpoint(tmp_path_factory, text_file):
    cfg = tiny(tmp_path_factory.mktemp("good"), text_file, max_iters=2)
    run(cfg)
    return (Path(cfg.out_dir) / CKPT_NAME).read_bytes()


def corrupt(good, kind, path):
    """Write a damaged or foreign checkpoint of ``kind`` to ``path``; return a word its error must hold."""
    if kind == "truncated":
        path.write_bytes(good[:len(good) * 2 // 3])
        return "truncated"
    if kind == "bit-flipped":
        data = bytearray(good)
        data[-100] ^= 0x10
        path.write_bytes(bytes(data))
        return "checksum"
    if kind == "foreign":
        save_file({"weight": np.ones((4, 4), np.float32)}, path, {"format": "pt"})
        return "not a tinygrad_gpt checkpoint"
    path.write_bytes(pickle.dumps({"model": np.ones((4, 4), np.float32)}, protocol=4))
    return "pickle"


KINDS = ["truncated", "bit-flipped", "foreign", "pickle"]


@pytest.mark.host_only('runs the command in a subprocess on the CPU')
@pytest.mark.parametrize("command", ["sample", "resume"])
@pytest.mark.parametrize("kind", KINDS)
def test_corrupt_checkpoint_is_refused_with_one_line(tmp_path, text_file, good_checkpoint, kind, command):
    out = tmp_path / "out"
    out.mkdir()
    word = corrupt(good_checkpoint, kind, out / CKPT_NAME)
    (out / "log.jsonl").write_text('{"iter": 0, "loss": 3.0}\n', encoding="utf-8")
    before = {name: (out / name).read_bytes() for name in os.listdir(out)}
    args = (["sample"] if command == "sample" else
            ["train", f"--data={text_file}", *TINY, "--max_iters=4", "--init_from=resume"])
    assert_one_error_line(tinygrad_gpt(*args, cwd=tmp_path), 1, CKPT_NAME, word)
    assert {name: (out / name).read_bytes() for name in released(out)} == before  # nothing touched


@pytest.mark.parametrize("kind", KINDS)
def test_corrupt_checkpoint_leaves_the_model_untouched(tmp_path, good_checkpoint, kind):
    """A failed load raises before anything reaches the model or the optimizer."""
    model = GPT(GPTConfig(block_size=16, vocab_size=30, n_layer=1, n_head=2, n_embd=16))
    optimizer = model.configure_optimizers(0.1, 1e-3, (0.9, 0.99))
    before = {k: v.copy() for k, v in model.state_dict().items()}
    word = corrupt(good_checkpoint, kind, tmp_path / CKPT_NAME)
    with pytest.raises(CheckpointError, match=word):
        ckpt = load_checkpoint(tmp_path / CKPT_NAME)
        model.load_state_dict(ckpt.model_state)
        optimizer.load_state_dict(ckpt.optimizer_state)
    for name, value in model.state_dict().items():
        np.testing.assert_array_equal(value, before[name], err_msg=name)
    assert optimizer.state == {}


def test_checkpoint_of_another_shape_leaves_the_model_untouched(tmp_path):
    other = GPT(GPTConfig(block_size=16, vocab_size=30, n_layer=1, n_head=2, n_embd=8))
    save_checkpoint(tmp_path / CKPT_NAME, other)
    model = GPT(GPTConfig(block_size=16, vocab_size=30, n_layer=1, n_head=2, n_embd=16))
    before = {k: v.copy() for k, v in model.state_dict().items()}
    with pytest.raises(ValueError, match="shape mismatch"):
        model.load_state_dict(load_checkpoint(tmp_path / CKPT_NAME).model_state)
    for name, value in model.state_dict().items():
        np.testing.assert_array_equal(value, before[name], err_msg=name)


# ----------------------------------------------------------------------------- the out_dir lock

HOLDER = f"{os.getpid()}\n{socket.gethostname()}\n"


@pytest.mark.host_only('runs the command in a subprocess on the CPU')
def test_a_second_run_is_refused_by_the_lock(tmp_path, text_file):
    out = tmp_path / "out"
    out.mkdir()
    with RunLock(out):  # this test holds the lock
        result = tinygrad_gpt("train", f"--data={text_file}", *TINY, "--max_iters=2", cwd=tmp_path)
        assert_one_error_line(result, 1, "another run", f"process {os.getpid()}", "out")
        assert os.listdir(out) == [LOCK_NAME]
        assert (out / LOCK_NAME).read_text() == HOLDER
    assert os.listdir(out) == [LOCK_NAME] and (out / LOCK_NAME).read_text() == ""  # kept, emptied


@pytest.mark.host_only('runs the command in a subprocess on the CPU')
def test_a_stale_lock_is_taken_over(tmp_path, text_file):
    out = tmp_path / "out"
    out.mkdir()
    pid = dead_pid()
    (out / LOCK_NAME).write_text(f"{pid}\n{socket.gethostname()}\n", encoding="utf-8")
    result = tinygrad_gpt("train", f"--data={text_file}", *TINY, "--max_iters=2", cwd=tmp_path)
    assert result.returncode == 0 and result.stderr == "", result.stderr
    assert f"(process {pid})" in result.stdout
    assert sorted(os.listdir(out)) == [LOCK_NAME, CKPT_NAME, "log.jsonl"]


def test_lock_is_released_after_an_error(tmp_path, text_file, monkeypatch):
    monkeypatch.setattr(train_mod, "_train_step", lambda *args: (float("nan"), 0.0))
    cfg = tiny(tmp_path, text_file)
    with pytest.raises(TrainingError):
        run(cfg)
    assert open(os.path.join(cfg.out_dir, LOCK_NAME)).read() == ""
    monkeypatch.undo()
    run(tiny(tmp_path, text_file, max_iters=1, overwrite=True))  # and the folder can be used again


def test_run_lock_in_process(tmp_path):
    with RunLock(tmp_path) as lock:
        assert (tmp_path / LOCK_NAME).read_text() == HOLDER
        assert lock.stale_pid is None
        with pytest.raises(LockError, match=f"another run \\(process {os.getpid()}\\)"):
            RunLock(tmp_path).__enter__()
    assert (tmp_path / LOCK_NAME).read_text() == ""  # the file is kept, naming nobody
    with RunLock(tmp_path) as lock:  # a clean exit is not mistaken for a killed run
        assert lock.stale_pid is None


def test_a_lock_left_by_a_killed_run_is_taken_over(tmp_path):
    """kill -9 drops the flock; the pid it leaves in the file is reported."""
    script = (f"import os, sys; sys.path.insert(0, {ROOT!r}); from tinygrad_gpt.storage.lock import RunLock\n"
              f"RunLock({str(tmp_path)!r}).__enter__(); print('locked', flush=True); sys.stdin.read()")
    holder = subprocess.Popen([sys.executable, "-c", script], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                              text=True)
    try:
        assert holder.stdout.readline() == "locked\n"
        with pytest.raises(LockError, match=f"process {holder.pid}"):
            RunLock(tmp_path).__enter__()
        holder.kill()
        holder.wait()
        with RunLock(tmp_path) as lock:
            assert lock.stale_pid == holder.pid
            assert (tmp_path / LOCK_NAME).read_text() == HOLDER
    finally:
        holder.kill()
        holder.wait()


def test_a_flock_holder_without_a_pid_yet_is_respected(tmp_path):
    """A run between taking the flock and writing its pid: the next one is refused all the same."""
    fcntl = pytest.importorskip("fcntl")
    with open(tmp_path / LOCK_NAME, "w") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        with pytest.raises(LockError, match="starting right now"):
            RunLock(tmp_path).__enter__()
        f.write("4242\nsome-other-host\n")
        f.flush()
        with pytest.raises(LockError, match="process 4242 on host some-other-host"):
            RunLock(tmp_path).__enter__()
    with RunLock(tmp_path) as lock:  # the holder closed its file: the flock is gone
        assert lock.stale_pid == 4242


def test_without_flock_a_run_is_refused_in_one_line(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "fcntl", None)  # as on Windows: import fcntl fails
    with pytest.raises(LockError, match="no fcntl.flock") as e:
        RunLock(tmp_path).__enter__()
    assert "\n" not in str(e.value) and os.listdir(tmp_path) == []


def test_a_file_system_that_refuses_flock_is_named(tmp_path, monkeypatch):
    """ENOLCK from flock (some network mounts): one line, and the run does not go on unlocked."""
    import errno
    import types

    def flock(fd, op):
        raise OSError(errno.ENOLCK, "No locks available")
    monkeypatch.setitem(sys.modules, "fcntl", types.SimpleNamespace(LOCK_EX=2, LOCK_NB=4, flock=flock))
    with pytest.raises(LockError, match="the file system refuses flock \\(No locks available\\)") as e:
        RunLock(tmp_path).__enter__()
    assert "\n" not in str(e.value)


def test_the_lock_is_short():
    """The lock is flock and a file, nothing more."""
    assert len(open(os.path.join(ROOT, "tinygrad_gpt", "storage", "lock.py")).read().splitlines()) <= 60


# ----------------------------------------------------------------------------- non-finite losses and gradients

@pytest.mark.host_only('runs the command in a subprocess on the CPU')
def test_nan_loss_stops_the_command_with_the_iteration(tmp_path, text_file):
    """A learning rate of 1e30 blows the weights up in one step: iteration 1's loss is NaN."""
    flags = [f"--data={text_file}", *TINY, "--warmup_iters=0", "--learning_rate=1e30", "--max_iters=20"]
    result = tinygrad_gpt("train", *flags, cwd=tmp_path)
    line = assert_one_error_line(result, 1, "the loss became nan at iteration 1", CKPT_NAME)
    assert "the previous checkpoint (iteration 0) is intact" in line
    assert load_checkpoint(tmp_path / "out").extra["iter"] == 0
    assert_all_finite(tmp_path / "out")


@pytest.mark.host_only('runs the command in a subprocess on the CPU')
def test_skip_nonfinite_counts_and_goes_on_from_the_command_line(tmp_path, text_file):
    flags = [f"--data={text_file}", *TINY, "--warmup_iters=0", "--learning_rate=1e30", "--max_iters=20",
             "--eval_interval=10", "--skip_nonfinite=True"]
    result = tinygrad_gpt("train", *flags, cwd=tmp_path)
    assert result.returncode == 0 and result.stderr == "", result.stderr
    assert "19 steps skipped for a non-finite loss or gradient" in result.stdout
    records = log_records(tmp_path / "out")
    assert [r["iter"] for r in records if r.get("skipped")] == list(range(1, 20))
    assert load_checkpoint(tmp_path / "out").extra["iter"] == 0  # NaN evaluations are not saved
    assert_all_finite(tmp_path / "out")


def poison(monkeypatch, iterations, how):
    """Make the training forward at the given iterations give a NaN loss (how="loss") or a finite
    loss with a NaN gradient (how="grad": d/dx sqrt(x) at 0 is inf, times 0 is nan)."""
    forward, calls = GPT.forward, []

    def poisoned(self, idx, targets=None):
        logits, loss = forward(self, idx, targets)
        if self.training and targets is not None:
            calls.append(1)
            if len(calls) - 1 in iterations:
                w = self.transformer.wte.weight
                loss = loss * float("nan") if how == "loss" else loss + (w * 0.0).sqrt().sum()
        return logits, loss
    monkeypatch.setattr(GPT, "forward", poisoned)


@pytest.mark.parametrize("grad_clip", [1.0, 0.0])
def test_nan_gradient_with_a_finite_loss_stops_the_run(tmp_path, text_file, monkeypatch, grad_clip):
    poison(monkeypatch, {3}, "grad")
    cfg = tiny(tmp_path, text_file, grad_clip=grad_clip)
    with pytest.raises(TrainingError, match=r"the gradient norm became nan \(loss [\d.]+\) at iteration 3"):
        run(cfg)
    assert load_checkpoint(cfg.out_dir).extra["iter"] == 0
    assert [r["iter"] for r in log_records(cfg.out_dir) if "loss" in r] == [0, 1, 2]


@pytest.mark.parametrize("how", ["loss", "grad"])
def test_skip_nonfinite_drops_the_step_and_counts_it(tmp_path, text_file, monkeypatch, how):
    poison(monkeypatch, {3, 12}, how)
    cfg = tiny(tmp_path, text_file, skip_nonfinite=True)
    _, lines = run(cfg)
    assert "2 steps skipped for a non-finite loss or gradient" in lines
    assert any(line.startswith("iter 3: step skipped") for line in lines)
    records = log_records(cfg.out_dir)
    assert [r["iter"] for r in records if r.get("skipped")] == [3, 12]
    assert [r["iter"] for r in records if "loss" in r] == [i for i in range(20) if i not in (3, 12)]
    ckpt = load_checkpoint(cfg.out_dir)
    assert ckpt.extra["iter"] == 20 and ckpt.extra["skipped"] == 2
    assert {s["step"] for s in ckpt.optimizer_state["state"].values()} == {18}  # no update when skipped
    assert_all_finite(cfg.out_dir)


def test_a_skipped_step_changes_nothing(tmp_path, text_file, monkeypatch):
    """After a skipped step 0 the weights are still the initial ones and AdamW has no state."""
    poison(monkeypatch, {0}, "loss")
    cfg = tiny(tmp_path, text_file, max_iters=1, eval_interval=1, skip_nonfinite=True)
    run(cfg)
    ckpt = load_checkpoint(cfg.out_dir)
    backend.manual_seed(cfg.seed)
    initial = GPT(ckpt.config)
    for name, value in initial.state_dict().items():
        np.testing.assert_array_equal(ckpt.model_state[name], value, err_msg=name)
    assert ckpt.optimizer_state["state"] == {} and ckpt.extra["skipped"] == 1


def test_non_finite_weights_are_never_saved(tmp_path, text_file, monkeypatch):
    real_step, steps = train_mod._train_step, []

    def breaking(model, *args):
        out = real_step(model, *args)
        steps.append(1)
        if len(steps) == 10:  # iteration 9: a change from outside the step, just before an evaluation
            model.transformer.h[0].mlp.c_fc.weight.data[0, 0] = np.inf
        return out
    monkeypatch.setattr(train_mod, "_train_step", breaking)
    cfg = tiny(tmp_path, text_file)
    with pytest.raises(TrainingError, match=r"transformer.h.0.mlp.c_fc.weight is not finite at iteration 10"):
        run(cfg)
    assert load_checkpoint(cfg.out_dir).extra["iter"] == 0
    assert_all_finite(cfg.out_dir)


# ----------------------------------------------------------------------------- anomaly mode

def test_anomaly_names_the_op_in_forward():
    x = Tensor([1.0, -1.0, 2.0], requires_grad=True)
    y = x * 2.0
    with pytest.raises(AnomalyError) as info, detect_anomaly(), np.errstate(invalid="ignore"):
        y.log()
    message = str(info.value)
    assert message.startswith("Log.forward produced nan (1 of 3 values) from finite inputs of shape (3,)")
    assert "test_robust.py" in message  # the line that applied the op
    assert tensor_mod._op_hooks == []  # off again after the error


def test_anomaly_names_the_op_in_backward():
    x = Tensor([0.0, 1.0, 4.0], requires_grad=True)
    with detect_anomaly(), np.errstate(divide="ignore"):
        loss = x.sqrt().sum()  # sqrt(0) = 0 is fine; its derivative 1 / (2 sqrt(0)) is not
        with pytest.raises(AnomalyError, match=r"^Sqrt\.backward produced inf \(1 of 3 values\) in the "
                                               r"gradient of an input of shape \(3,\)"):
            loss.backward()


def test_anomaly_blames_an_input_that_arrived_non_finite():
    w = Tensor([1.0, float("nan")], requires_grad=True)  # a parameter that was already broken
    with pytest.raises(AnomalyError, match=r"Mul\.forward got nan .* shape \(2,\) that no op made"), \
            detect_anomaly():
        w * 3.0


def test_anomaly_lets_inf_pass_and_blames_the_nan_it_becomes():
    x = Tensor([1.0, 0.0])
    with detect_anomaly(), np.errstate(divide="ignore", over="ignore"):
        with pytest.raises(AnomalyError, match=r"^Log\.forward produced -inf"):
            x.log()
        big = Tensor([3e38], dtype=np.float32)
        with pytest.raises(AnomalyError, match=r"^Mul\.forward produced inf .*largest finite input "
                                               r"magnitude 3e\+38"):
            big * 10.0


def test_anomaly_mode_accepts_a_healthy_gpt(text_file):
    """Masked attention writes -inf on purpose; a normal forward and backward raise nothing."""
    model = GPT(GPTConfig(block_size=16, vocab_size=30, n_layer=1, n_head=2, n_embd=16, dropout=0.1))
    x = np.random.default_rng(0).integers(0, 30, (2, 16))
    q = Tensor(np.random.default_rng(1).standard_normal((2, 2, 5, 8)), requires_grad=True)
    with detect_anomaly():
        _, loss = model(x, x)
        loss.backward()
        F.scaled_dot_product_attention_composed(q, q, q).sum().backward()
    assert np.isfinite(loss.item()) and np.isfinite(backend.to_numpy(q.grad)).all()


def test_detect_anomaly_in_training_names_the_iteration_and_the_op(tmp_path, text_file, monkeypatch):
    poison(monkeypatch, {3}, "grad")
    cfg = tiny(tmp_path, text_file, detect_anomaly=True)
    with pytest.raises(TrainingError, match=r"^at iteration 3: Sqrt\.backward produced inf"):
        run(cfg)
    assert tensor_mod._op_hooks == []


@pytest.mark.host_only('runs the command in a subprocess on the CPU')
def test_detect_anomaly_from_the_command_line(tmp_path, text_file):
    flags = [f"--data={text_file}", *TINY, "--warmup_iters=0", "--learning_rate=1e30", "--max_iters=20",
             "--detect_anomaly=True"]
    line = assert_one_error_line(tinygrad_gpt("train", *flags, cwd=tmp_path), 1, "at iteration 1")
    assert re.search(r"at iteration 1: \w+\.(forward|backward) produced (nan|inf|-inf)", line), line


def test_anomaly_hook_is_off_by_default():
    assert tensor_mod._op_hooks == []


# ----------------------------------------------------------------------------- memory

NUMPY_DATA = tracemalloc.DomainFilter(True, np.lib.tracemalloc_domain)  # the buffers of NumPy arrays


@pytest.mark.host_only("measures the host process's memory")
def test_memory_stays_flat_and_each_graph_is_freed(tmp_path, text_file, monkeypatch):
    """From step 100 to step 300 the NumPy buffers alive (NumPy reports them to tracemalloc) are the
    same bytes, the number of live Tensors is the same, and all traced memory grows by no more than
    the interpreter's free lists; the graph of step 1 is freed by reference counting alone, the
    moment the step ends (the collector is off)."""
    real_step, forward = train_mod._train_step, GPT.forward
    seen, steps, marks = [], [], {}

    def watched_forward(self, idx, targets=None):
        logits, loss = forward(self, idx, targets)
        if not seen and self.training:
            seen.extend([weakref.ref(logits), weakref.ref(loss)])
        return logits, loss

    def watched_step(*args):
        out = real_step(*args)
        steps.append(len(steps) + 1)
        if steps[-1] == 1:
            assert [ref() for ref in seen] == [None, None]  # freed as soon as the step ended
        if steps[-1] in (100, 300):
            gc.collect()
            tensors = sum(issubclass(type(o), Tensor) for o in gc.get_objects())
            arrays = tracemalloc.take_snapshot().filter_traces([NUMPY_DATA]).statistics("filename")
            marks[steps[-1]] = (tracemalloc.get_traced_memory()[0], sum(s.size for s in arrays), tensors)
        return out
    monkeypatch.setattr(GPT, "forward", watched_forward)
    monkeypatch.setattr(train_mod, "_train_step", watched_step)
    cfg = tiny(tmp_path, text_file, max_iters=300, eval_interval=100)
    gc.disable()
    tracemalloc.start()
    try:
        run(cfg)
    finally:
        tracemalloc.stop()
        gc.enable()
    (memory_100, arrays_100, tensors_100), (memory_300, arrays_300, tensors_300) = marks[100], marks[300]
    assert tensors_300 == tensors_100
    assert arrays_300 == arrays_100  # the same array bytes alive
    assert memory_300 - memory_100 < 64 * 1024, marks  # interpreter free lists fill up: ~20 kB
