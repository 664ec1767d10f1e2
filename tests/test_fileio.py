"""When the machine misbehaves: every OS error at every write of the project's files gives one
`error:` line naming the file, the operation and the cause; the previous checkpoint stays intact,
no temporary file is left, and log.jsonl holds only what the checkpoint holds.

A fault-injecting layer (monkeypatched ``open``, ``os.fdopen``, ``os.replace``, ``os.fsync``,
``tempfile.mkstemp``, ``os.truncate``) raises a chosen errno at a chosen operation on a chosen
file; one real full-disk test runs on a small tmpfs where this process may mount one.
"""
import builtins
import errno
import os
import shutil
import subprocess
import tempfile

import numpy as np
import pytest

from test_cli import released, write_text
from tinygrad_gpt.commands import cli
from tinygrad_gpt.storage import fileio
from tinygrad_gpt.run import train as train_mod
from tinygrad_gpt.storage.checkpoint import CKPT_NAME, load_checkpoint
from tinygrad_gpt.storage.fileio import FileError, file_op, write_atomic
from tinygrad_gpt.storage.lock import LOCK_NAME
from tinygrad_gpt.run.runlog import held_by_checkpoint
from tinygrad_gpt.tokenizer import CharTokenizer

pytestmark = pytest.mark.skipif(not os.path.isdir("/proc/self/fd"),
                                reason="the fault layer finds a descriptor's file through /proc")
ERRNOS = [errno.ENOSPC, errno.EACCES, errno.EPERM, errno.EROFS, errno.EIO]
TINY = ["--n_layer=1", "--n_head=2", "--n_embd=16", "--block_size=16", "--batch_size=4", "--eval_iters=2",
        "--warmup_iters=5", "--sample_tokens=0", "--max_iters=12", "--eval_interval=10", "--progress=False"]


def _path_of(fd):
    try:
        return os.readlink(f"/proc/self/fd/{fd}")
    except OSError:
        return ""


class Faults:
    """Raise OSError(``code``) at ``operation`` on files whose name contains ``target``, once armed."""

    def __init__(self, monkeypatch, target, operation, code):
        self.target, self.operation, self.code, self.armed, self.fired = target, operation, code, False, 0
        real_open, real_fdopen, real_replace = builtins.open, os.fdopen, os.replace
        real_fsync, real_mkstemp, real_truncate = os.fsync, tempfile.mkstemp, os.truncate
        faults = self

        class FaultyFile:
            def __init__(self, f, path):
                self._f, self._path = f, path

            def write(self, data):
                faults.check(self._path, "write")
                return self._f.write(data)

            def __enter__(self):
                return self

            def __exit__(self, *exc):
                self._f.close()

            def __getattr__(self, name):
                return getattr(self._f, name)

        def open_(path, mode="r", *args, **kwargs):
            if isinstance(path, (str, os.PathLike)):
                self.check(os.fspath(path), "open" if set(mode) & set("wax+") else "read")
                f = real_open(path, mode, *args, **kwargs)
                return FaultyFile(f, os.fspath(path)) if set(mode) & set("wax+") else f
            return real_open(path, mode, *args, **kwargs)

        def fdopen(fd, *args, **kwargs):
            return FaultyFile(real_fdopen(fd, *args, **kwargs), _path_of(fd))

        def replace(src, dst, *args, **kwargs):
            self.check(os.fspath(dst), "replace", (src, dst))
            return real_replace(src, dst, *args, **kwargs)

        def fsync(fd):
            self.check(_path_of(fd), "fsync")
            return real_fsync(fd)

        def mkstemp(*args, dir=None, prefix=None, **kwargs):
            self.check(os.path.join(dir or "", prefix or ""), "create")
            return real_mkstemp(*args, dir=dir, prefix=prefix, **kwargs)

        def truncate(path, length):
            self.check(os.fspath(path), "truncate")
            return real_truncate(path, length)

        monkeypatch.setattr(builtins, "open", open_)
        monkeypatch.setattr(os, "fdopen", fdopen)
        monkeypatch.setattr(os, "replace", replace)
        monkeypatch.setattr(os, "fsync", fsync)
        monkeypatch.setattr(os, "truncate", truncate)
        monkeypatch.setattr(tempfile, "mkstemp", mkstemp)

    def check(self, path, operation, names=None):
        if self.armed and operation == self.operation and self.target in os.path.basename(path):
            self.fired += 1
            filenames = names or (path if operation in ("open", "read", "truncate", "create") else None,)
            raise OSError(self.code, os.strerror(self.code), *filenames)


def main(argv, capsys):
    code = cli.main(argv)
    out, err = capsys.readouterr()
    return code, out, err


def one_error_line(err, *words):
    lines = err.splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), err
    for word in words:
        assert word in lines[0], (word, lines[0])
    assert "Traceback" not in err
    return lines[0]


def leftovers(folder):
    """Temporary files, and a lock that still names a holder, which a run must not leave behind
    (the lock file itself is kept, empty)."""
    return [n for n in os.listdir(folder) if n.endswith(".tmp") or
            n == LOCK_NAME and open(os.path.join(folder, n), encoding="utf-8").read()]


def arm_after_steps(monkeypatch, faults, n):
    """Arm the faults once ``n`` training steps have run (after the checkpoint of iteration 0)."""
    real, calls = train_mod._train_step, []

    def step(*args):
        calls.append(1)
        if len(calls) == n:
            faults.armed = True
        return real(*args)
    monkeypatch.setattr(train_mod, "_train_step", step)


def assert_log_matches_checkpoint(out):
    ckpt_iter = load_checkpoint(out).extra["iter"]
    with open(os.path.join(out, "log.jsonl"), encoding="utf-8") as f:
        import json
        records = [json.loads(line) for line in f.read().splitlines()]
    assert records and all(held_by_checkpoint(r, ckpt_iter) for r in records), records


# ----------------------------------------------------------------------------- training

@pytest.mark.parametrize("code", ERRNOS, ids=errno.errorcode.get)
@pytest.mark.parametrize("target, operation, words", [
    ("ckpt", "create", "writing"), ("ckpt", "write", "writing"), ("ckpt", "fsync", "writing"),
    ("ckpt", "replace", "writing"), ("log.jsonl", "write", "writing"),
])
def test_an_os_error_while_training_is_one_line_and_loses_nothing(tmp_path, monkeypatch, capsys,
                                                                   code, target, operation, words):
    data = write_text(tmp_path / "input.txt")
    out = tmp_path / "out"
    faults = Faults(monkeypatch, target, operation, code)
    arm_after_steps(monkeypatch, faults, 5)  # the checkpoint of iteration 0 is on disk; step 4 runs next
    result, _, err = main(["train", f"--data={data}", *TINY, f"--out_dir={out}"], capsys)
    assert result == 1 and faults.fired >= 1
    path = str(out / (CKPT_NAME if target == "ckpt" else "log.jsonl"))
    one_error_line(err, os.strerror(code).lower(), f"while {words} {path}",
                   f"the previous checkpoint (iteration 0) is intact in {out / CKPT_NAME}")
    faults.armed = False
    assert load_checkpoint(out).extra["iter"] == 0
    assert leftovers(out) == []
    assert_log_matches_checkpoint(out)
    # and the run goes on from there, to the losses of a run that met no fault
    assert main(["train", f"--data={data}", *TINY, f"--out_dir={out}", "--init_from=resume"], capsys)[0] == 0
    assert load_checkpoint(out).extra["iter"] == 12


def test_a_log_that_cannot_be_opened_leaves_no_out_dir(tmp_path, monkeypatch, capsys):
    data = write_text(tmp_path / "input.txt")
    faults = Faults(monkeypatch, "log.jsonl", "open", errno.EACCES)
    faults.armed = True
    result, _, err = main(["train", f"--data={data}", *TINY, f"--out_dir={tmp_path / 'a' / 'out'}"], capsys)
    assert result == 1
    one_error_line(err, "permission denied while opening", "log.jsonl", "no checkpoint was saved")
    assert os.listdir(tmp_path) == ["input.txt"]  # both folders it made are gone


def test_an_unreadable_checkpoint_on_resume_is_one_line(tmp_path, monkeypatch, capsys):
    data = write_text(tmp_path / "input.txt")
    out = tmp_path / "out"
    assert main(["train", f"--data={data}", *TINY, f"--out_dir={out}", "--max_iters=2"], capsys)[0] == 0
    faults = Faults(monkeypatch, CKPT_NAME, "read", errno.EIO)
    faults.armed = True
    for argv in (["train", f"--data={data}", *TINY, f"--out_dir={out}", "--init_from=resume"],
                 ["sample", f"--out_dir={out}", "--max_new_tokens=2"], ["export", f"--out_dir={out}"],
                 ["attention", f"--out_dir={out}"]):
        result, _, err = main(argv, capsys)
        assert result == 1, argv
        one_error_line(err, f"input/output error while reading {out / CKPT_NAME}")
    assert released(out) == [CKPT_NAME, "log.jsonl"]


# ----------------------------------------------------------------------------- the other commands

@pytest.mark.parametrize("code", ERRNOS, ids=errno.errorcode.get)
def test_plot_and_export_errors_are_one_line(tmp_path, monkeypatch, capsys, code):
    pytest.importorskip("matplotlib")
    data = write_text(tmp_path / "input.txt")
    out, hf = tmp_path / "out", tmp_path / "hf"
    assert main(["train", f"--data={data}", *TINY, f"--out_dir={out}", "--max_iters=2"], capsys)[0] == 0
    (out / "loss.png").write_bytes(b"the old picture")
    for argv, target, operation in ((["plot", f"--out_dir={out}"], "loss.png", "write"),
                                    (["plot", f"--out_dir={out}"], "loss.png", "replace"),
                                    (["export", f"--out_dir={out}", f"--hf_dir={hf}"], "model.safetensors", "write"),
                                    (["export", f"--out_dir={out}", f"--hf_dir={hf}"], "config.json", "replace")):
        with pytest.MonkeyPatch.context() as mp:
            faults = Faults(mp, target, operation, code)
            faults.armed = True
            result, _, err = main(argv, capsys)
        assert result == 1 and faults.fired == 1, (argv, operation)
        folder = out if target == "loss.png" else hf
        one_error_line(err, os.strerror(code).lower(), f"while writing {folder / target}")
        assert leftovers(folder) == []
    assert (out / "loss.png").read_bytes() == b"the old picture"  # never half replaced


@pytest.mark.parametrize("code", ERRNOS, ids=errno.errorcode.get)
def test_tokenizer_files(tmp_path, monkeypatch, code):
    tok = CharTokenizer.from_text("hello")
    tok.save(tmp_path / "tok.json")
    faults = Faults(monkeypatch, "tok.json", "write", code)
    faults.armed = True
    with pytest.raises(FileError, match=f"{os.strerror(code).lower()} while writing {tmp_path / 'tok.json'}"):
        tok.save(tmp_path / "tok.json")
    assert os.listdir(tmp_path) == ["tok.json"]
    faults.armed = False
    assert CharTokenizer.load(tmp_path / "tok.json").vocab_size == tok.vocab_size


def test_bpe_tokenizer_files(tmp_path, monkeypatch):
    from tinygrad_gpt.text.bpe import BPETokenizer
    tok = BPETokenizer.train("hello world, hello there " * 20, 260)
    faults = Faults(monkeypatch, "merges.txt", "replace", errno.ENOSPC)
    faults.armed = True
    with pytest.raises(FileError, match="no space left on device while writing .*merges.txt"):
        tok.save(tmp_path)
    assert leftovers(tmp_path) == []


def test_write_atomic_removes_its_temporary_file_on_any_failure(tmp_path, monkeypatch):
    (tmp_path / "f").write_bytes(b"old")
    for operation in ("write", "fsync", "replace"):
        with pytest.MonkeyPatch.context() as mp:
            faults = Faults(mp, "f", operation, errno.EIO)
            faults.armed = True
            with pytest.raises(FileError, match="input/output error while writing"), file_op("writing", tmp_path / "f"):
                write_atomic(str(tmp_path / "f"), [b"new", b"er"])
        assert os.listdir(tmp_path) == ["f"] and (tmp_path / "f").read_bytes() == b"old"
    write_atomic(str(tmp_path / "f"), [b"new"])
    assert (tmp_path / "f").read_bytes() == b"new"


def test_describe_names_file_operation_and_cause():
    e = OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
    assert fileio.describe(e, "writing", "out/ckpt.safetensors") == \
        "no space left on device while writing out/ckpt.safetensors"
    assert "immutable" in fileio.describe(OSError(errno.EPERM, "Operation not permitted"), "writing", "x")
    assert isinstance(FileError("x"), OSError)  # `except OSError` still catches it


# ----------------------------------------------------------------------------- a real full disk

@pytest.fixture
def small_disk(tmp_path):
    """A 2 MB tmpfs mounted at tmp_path/disk, where this process may mount one; else skip."""
    disk = tmp_path / "disk"
    disk.mkdir()
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=2m", "tmpfs", str(disk)],
                             capture_output=True) if hasattr(os, "geteuid") and os.geteuid() == 0 else None
    if mounted is None or mounted.returncode != 0:
        pytest.skip("cannot mount a tmpfs here (needs root and mount)")
    try:
        yield disk
    finally:
        subprocess.run(["umount", "-l", str(disk)], capture_output=True)


def fill(folder, leave):
    """Write a filler file until the disk is full, then give back ``leave`` bytes."""
    path = os.path.join(folder, "filler")
    with open(path, "wb", buffering=0) as f:
        try:
            while True:
                f.write(b"\0" * 4096)
        except OSError as e:
            assert e.errno == errno.ENOSPC
    os.truncate(path, os.path.getsize(path) - leave)
    return path


def test_a_full_disk(small_disk, tmp_path, monkeypatch, capsys):
    data = write_text(tmp_path / "input.txt")
    out = small_disk / "out"
    real, calls = train_mod._train_step, []

    def step(*args):  # after the checkpoint of iteration 0: leave room for log lines, not for a checkpoint
        calls.append(1)
        if len(calls) == 3:
            fill(small_disk, 8192)
        return real(*args)
    monkeypatch.setattr(train_mod, "_train_step", step)
    result, _, err = main(["train", f"--data={data}", *TINY, f"--out_dir={out}"], capsys)
    assert result == 1
    one_error_line(err, f"no space left on device while writing {out / CKPT_NAME}",
                   "the previous checkpoint (iteration 0) is intact")
    assert load_checkpoint(out).extra["iter"] == 0 and leftovers(out) == []
    assert_log_matches_checkpoint(out)
    os.remove(small_disk / "filler")
    monkeypatch.setattr(train_mod, "_train_step", real)
    assert main(["train", f"--data={data}", *TINY, f"--out_dir={out}", "--init_from=resume"], capsys)[0] == 0
    state = load_checkpoint(out)
    assert state.extra["iter"] == 12 and all(np.isfinite(v).all() for v in state.model_state.values())


def test_an_immutable_checkpoint(tmp_path, monkeypatch, capsys):
    """chattr +i on the checkpoint: the rename over it is refused (EPERM), for real."""
    if shutil.which("chattr") is None:
        pytest.skip("no chattr here")
    data = write_text(tmp_path / "input.txt")
    out = tmp_path / "out"
    ckpt = out / CKPT_NAME
    real, calls = train_mod._train_step, []

    def step(*args):
        calls.append(1)
        if len(calls) == 3 and subprocess.run(["chattr", "+i", str(ckpt)], capture_output=True).returncode:
            pytest.skip("chattr +i is not possible here")
        return real(*args)
    monkeypatch.setattr(train_mod, "_train_step", step)
    try:
        result, _, err = main(["train", f"--data={data}", *TINY, f"--out_dir={out}"], capsys)
    finally:
        subprocess.run(["chattr", "-i", str(ckpt)], capture_output=True)
    assert result == 1
    one_error_line(err, f"operation not permitted while writing {ckpt} (is the file or its folder immutable?",
                   "the previous checkpoint (iteration 0) is intact")
    assert load_checkpoint(out).extra["iter"] == 0 and leftovers(out) == []
    assert_log_matches_checkpoint(out)


def test_a_lock_that_cannot_be_written_is_one_line(tmp_path, monkeypatch):
    from tinygrad_gpt.storage.lock import LockError, RunLock

    def pwrite(*args):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
    monkeypatch.setattr(os, "pwrite", pwrite)
    with pytest.raises(LockError, match=r"cannot write the lock file \(No space left on device\)"):
        RunLock(tmp_path).__enter__()
    assert os.listdir(tmp_path) == [LOCK_NAME] and (tmp_path / LOCK_NAME).read_text() == ""  # kept, empty
