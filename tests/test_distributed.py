"""Data-parallel training: the communicator alone, the gradient sums, and real MPI jobs.

The MPI tests launch ``mpiexec`` (Open MPI or MPICH) with tiny float64 models for a few
steps; they skip when mpiexec or mpi4py is missing (``pip install -e ".[mpi]"``). The
reference for every comparison is the same training run in one process.
"""
import hashlib
import json
import os
import shutil
import signal
import subprocess
import sys
import time

import numpy as np
import pytest

from test_cli import released
from tinygrad_gpt import backend
from tinygrad_gpt.run import distributed
from tinygrad_gpt.storage.checkpoint import load_checkpoint
from tinygrad_gpt.commands.cli import main as cli_main
from tinygrad_gpt.model import GPT, GPTConfig
from tinygrad_gpt.nn import Parameter
from tinygrad_gpt.run.train import TrainConfig, train

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _has_mpi():
    if shutil.which("mpiexec") is None:
        return False
    try:
        import mpi4py  # noqa: F401  (only whether it is there)
    except ImportError:
        return False
    return True


needs_mpi = pytest.mark.skipif(not _has_mpi(), reason="needs mpiexec and mpi4py (pip install -e '.[mpi]')")


# ----------------------------------------------------------------------------- alone, without MPI

def test_alone_is_rank_0_of_1_and_every_exchange_is_a_no_op():
    comm = distributed.world()
    assert isinstance(comm, distributed.Single) and (comm.rank, comm.size) == (0, 1)
    buf = np.arange(4.0)
    assert comm.allreduce_(buf) is buf and buf.tolist() == [0, 1, 2, 3]
    assert comm.bcast_json({"a": [1, 2.5, "x"]}) == {"a": [1, 2.5, "x"]}
    assert comm.gather_json({"s": 1}) == [{"s": 1}]
    assert comm.allgather_ints([7, 8]).tolist() == [[7, 8]]


@pytest.mark.parametrize("env, expected", [({}, False), ({"OMPI_COMM_WORLD_SIZE": "2"}, True),
                                           ({"PMI_SIZE": "4"}, True), ({"PMIX_RANK": "0"}, True),
                                           ({"SLURM_PROCID": "0"}, False)])
def test_launched_by_mpi_reads_the_launchers_variables(env, expected):
    assert distributed.launched_by_mpi(env) is expected


def test_post_accumulate_grad_hook_sees_the_whole_gradient_once_per_backward():
    w = Parameter(np.array([1.0, 2.0]))
    seen = []
    handle = w.register_post_accumulate_grad_hook(lambda t: seen.append(t.grad.copy()))
    ((w * w).sum() + (w * 3.0).sum()).backward()  # w used twice: one call, with the sum 2w + 3
    assert len(seen) == 1 and seen[0].tolist() == [5.0, 7.0]
    handle.remove()
    (w * w).sum().backward()
    assert len(seen) == 1


@pytest.mark.parametrize("overlap", [False, True])
def test_grad_sync_alone_leaves_gradients_and_loss_as_they_were(overlap):
    """With one rank the allreduce is the identity: the buffers' round trip (packing into
    flat buffers or buckets, then views of them) must give back every gradient exactly."""
    backend.manual_seed(0)
    model = GPT(GPTConfig(block_size=8, vocab_size=11, n_layer=2, n_head=2, n_embd=8)).to(dtype=np.float64)
    optimizer = model.configure_optimizers(0.1, 1e-3, (0.9, 0.99))
    x = np.random.default_rng(0).integers(0, 11, size=(2, 8))
    _, loss = model(x, x)
    loss.backward()
    expected = {name: p.grad.copy() for name, p in model.named_parameters()}
    model.zero_grad()
    sync = distributed.GradSync(distributed.Single(), optimizer, overlap=overlap, bucket_size=100)
    assert len(sync.buckets) > 3 if overlap else len(sync.buckets) == 2  # buckets, or AdamW's two groups
    _, loss = model(x, x)
    sync.arm(loss.item())
    loss.backward()
    assert sync.finish() == loss.item()
    for name, p in model.named_parameters():
        got, want = backend.to_numpy(p.grad), backend.to_numpy(expected[name])  # device arrays under --device=cuda
        np.testing.assert_array_equal(got, want, err_msg=name)
    sync.close()


def test_overlap_starts_the_buckets_allreduces_during_backward():
    """With overlap, buckets (reverse parameter order) start their allreduce as soon as their
    gradients are final: most of them before the token embedding's gradient, the last one
    backward finishes, is ready."""
    events = []

    class Recording(distributed.Single):
        def iallreduce_(self, buf):
            events.append("start")
            return super().iallreduce_(buf)

    backend.manual_seed(0)
    model = GPT(GPTConfig(block_size=8, vocab_size=11, n_layer=3, n_head=2, n_embd=8)).to(dtype=np.float64)
    sync = distributed.GradSync(Recording(), model.configure_optimizers(0.1, 1e-3, (0.9, 0.99)),
                                overlap=True, bucket_size=200)
    wte = model.transformer.wte.weight
    handle = wte.register_post_accumulate_grad_hook(lambda t: events.append("wte final"))
    x = np.random.default_rng(0).integers(0, 11, size=(2, 8))
    _, loss = model(x, x)
    sync.arm(loss.item())
    loss.backward()
    sync.finish()
    assert events.count("start") == len(sync.buckets) > 3
    assert events.index("wte final") >= len(sync.buckets) - 1  # all but wte's own bucket already going
    handle.remove()
    sync.close()


def test_checksum_sees_one_changed_bit():
    backend.manual_seed(0)
    model = GPT(GPTConfig(block_size=8, vocab_size=11, n_layer=1, n_head=2, n_embd=8))
    before = distributed.checksum(model)
    w = model.transformer.h[0].mlp.c_fc.weight.data
    w.view(np.uint32)[0, 0] ^= 1
    assert distributed.checksum(model) != before


def test_one_thread_means_no_helper_thread(monkeypatch):
    """OMP_NUM_THREADS=1 (or set_cpu_threads(1)): for_chunks runs every chunk on the calling thread."""
    import threading
    from tinygrad_gpt.fast import chunks
    from tinygrad_gpt.run import settings as threads
    monkeypatch.setattr(threads, "_threads", None)
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    assert threads.cpu_threads() == 1
    seen = set()
    n = chunks.CHUNKED_MIN + 5
    chunks.for_chunks(lambda s: seen.add(threading.get_ident()), n, np.zeros(n))
    assert seen == {threading.get_ident()}


def test_accumulation_steps_must_be_a_multiple_of_the_ranks(monkeypatch, tmp_path):
    class Three(distributed.Single):
        rank, size = 0, 3
    monkeypatch.setattr(distributed, "_world", Three())
    from tinygrad_gpt.errors import ConfigError
    with pytest.raises(ConfigError, match="gradient_accumulation_steps=4 must be a multiple of the number "
                                          r"of processes \(3\)"):
        train(TrainConfig(gradient_accumulation_steps=4, out_dir=str(tmp_path)), print_fn=lambda *a: None)


# ----------------------------------------------------------------------------- real MPI jobs

TEXT_WORDS = "the quick brown fox jumps over a lazy dog, and then it runs away!".split()


@pytest.fixture(scope="module")
def text_file(tmp_path_factory):
    rng = np.random.default_rng(0)
    text = "\n".join(" ".join(rng.choice(TEXT_WORDS, 8)) for _ in range(300)) + "\n"
    path = tmp_path_factory.mktemp("data") / "input.txt"
    path.write_text(text, encoding="utf-8")
    return path


def flags(text_file, out_dir, **changes):
    options = dict(data=text_file, out_dir=out_dir, n_layer=1, n_head=2, n_embd=16, block_size=16,
                   batch_size=2, max_iters=20, lr_decay_iters=20, eval_interval=10, eval_iters=4,
                   warmup_iters=5, gradient_accumulation_steps=4, dtype="float64", sample_tokens=0,
                   progress=False, learning_rate=3e-3)
    options.update(changes)
    return options


def in_process(options):
    """The reference: the same flags, trained here in one process."""
    return train(TrainConfig(**{k: (str(v) if k in ("data", "out_dir") else v) for k, v in options.items()}),
                 print_fn=lambda *a: None)


def _open_mpi():
    version = subprocess.run(["mpiexec", "--version"], capture_output=True, text=True).stdout
    return "Open MPI" in version or "OpenRTE" in version


def mpi_command(n, options, script=None):
    launcher = ["mpiexec", "-n", str(n)]
    if _open_mpi():  # more ranks than cores, and root (as in containers), need saying so
        launcher.append("--oversubscribe")
        if hasattr(os, "geteuid") and os.geteuid() == 0:
            launcher.append("--allow-run-as-root")
    program = [sys.executable, script] if script else [sys.executable, "-m", "tinygrad_gpt"]
    return launcher + program + ["train"] + [f"--{k}={v}" for k, v in options.items()]


def mpi_env():
    env = dict(os.environ, PYTHONPATH=ROOT + os.pathsep + os.environ.get("PYTHONPATH", ""),
               OMP_NUM_THREADS="1", OPENBLAS_NUM_THREADS="1")
    return {k: v for k, v in env.items() if k not in distributed.LAUNCHER_VARS}


def mpirun(n, options, script=None, timeout=120):
    t0 = time.time()
    proc = subprocess.run(mpi_command(n, options, script), env=mpi_env(), capture_output=True, text=True,
                          timeout=timeout)
    return proc, time.time() - t0


def read_log(out_dir):
    with open(os.path.join(out_dir, "log.jsonl"), encoding="utf-8") as f:
        records = [json.loads(line) for line in f]
    return {(r["iter"], key): r[key] for r in records for key in ("loss", "train_loss", "val_loss") if key in r}


def assert_same_run(a_dir, b_dir, rtol):
    a, b = read_log(a_dir), read_log(b_dir)
    assert sorted(a) == sorted(b)
    for key in a:
        assert b[key] == pytest.approx(a[key], rel=rtol), key
    wa, wb = load_checkpoint(a_dir).model_state, load_checkpoint(b_dir).model_state
    for name in wa:
        np.testing.assert_allclose(wb[name], wa[name], rtol=rtol, atol=rtol * np.abs(wa[name]).max(), err_msg=name)


def error_lines(proc):
    """The ``error:`` lines of a job's output (Open MPI's own reports can leave a NUL byte or
    spaces at a line's start)."""
    lines = (line.strip("\0 ") for line in (proc.stdout + proc.stderr).splitlines())
    return [line for line in lines if line.startswith("error:")]


def ok(proc):
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-3000:]


@pytest.fixture(scope="module")
def reference(tmp_path_factory, text_file):
    """One process, float64, A=4, 20 steps."""
    out = tmp_path_factory.mktemp("ref") / "out"
    in_process(flags(text_file, out))
    return out


@pytest.fixture(scope="module")
def two_ranks(tmp_path_factory, text_file):
    out = tmp_path_factory.mktemp("two") / "out"
    proc, _ = mpirun(2, flags(text_file, out))
    ok(proc)
    return out, proc


@needs_mpi
def test_two_ranks_train_exactly_as_one_process(reference, two_ranks):
    out, proc = two_ranks
    assert_same_run(reference, out, rtol=1e-9)
    assert "2 processes: 2 micro-batches of 2 each per step, 1 CPU thread(s) each" in proc.stdout
    assert proc.stdout.count("step 20:") == 1  # rank 0 alone prints
    assert released(out) == ["ckpt.safetensors", "log.jsonl"]  # and the lock is free


@needs_mpi
def test_four_ranks_train_as_two(tmp_path, text_file, two_ranks):
    out = tmp_path / "out"
    proc, _ = mpirun(4, flags(text_file, out))
    ok(proc)
    assert_same_run(two_ranks[0], out, rtol=1e-9)


@needs_mpi
def test_overlapped_allreduce_gives_the_same_run(tmp_path, text_file, reference):
    """--ddp_overlap with buckets of a few parameters each: the buckets' allreduces start
    during backward, and the losses and weights are those of one process."""
    out = tmp_path / "out"
    proc, _ = mpirun(2, flags(text_file, out, ddp_overlap=True, ddp_bucket_mb=0.002))
    ok(proc)
    assert_same_run(reference, out, rtol=1e-9)


@needs_mpi
def test_float32_two_ranks_as_one_process(tmp_path, text_file):
    ref, out = tmp_path / "ref", tmp_path / "out"
    in_process(flags(text_file, ref, dtype="float32", gradient_accumulation_steps=2, max_iters=10))
    proc, _ = mpirun(2, flags(text_file, out, dtype="float32", gradient_accumulation_steps=2, max_iters=10))
    ok(proc)
    assert_same_run(ref, out, rtol=1e-5)


@needs_mpi
def test_dropout_streams_of_every_rank_resume_exactly(tmp_path, text_file):
    """With dropout each rank draws its masks from its own stream; the checkpoint keeps all of
    them, so 2 ranks stopped at iteration 10 and resumed continue as if never stopped."""
    whole, part = tmp_path / "whole", tmp_path / "part"
    ok(mpirun(2, flags(text_file, whole, dropout=0.2))[0])
    ok(mpirun(2, flags(text_file, part, dropout=0.2, max_iters=10))[0])
    ok(mpirun(2, flags(text_file, part, dropout=0.2, init_from="resume"))[0])
    assert_same_run(whole, part, rtol=1e-12)


def _pid_of_rank(rank, out_dir):
    """The process of ``rank`` in the job training into ``out_dir`` (from /proc)."""
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            with open(f"/proc/{pid}/cmdline", "rb") as f:
                if f"--out_dir={out_dir}".encode() not in f.read().split(b"\0"):
                    continue
            with open(f"/proc/{pid}/environ", "rb") as f:
                env = dict(item.split(b"=", 1) for item in f.read().split(b"\0") if b"=" in item)
        except OSError:
            continue
        if env.get(b"OMPI_COMM_WORLD_RANK", env.get(b"PMI_RANK")) == str(rank).encode():
            return int(pid)
    return None


@needs_mpi
@pytest.mark.skipif(not os.path.isdir("/proc"), reason="finds the rank's process in /proc")
def test_kill_one_rank_ends_the_job_and_resuming_with_1_or_2_ranks_continues_the_run(tmp_path, text_file):
    out, long_ref = tmp_path / "out", tmp_path / "ref"
    proc = subprocess.Popen(mpi_command(2, flags(text_file, out, max_iters=100000)), env=mpi_env(),
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.time() + 90
        while time.time() < deadline and ((out / "log.jsonl").exists() is False or
                                          (0, "loss") not in _safe_log(out) or (11, "loss") not in _safe_log(out)):
            time.sleep(0.05)
        pid = _pid_of_rank(1, out)
        assert pid is not None, "rank 1 was not found"
        os.kill(pid, signal.SIGKILL)
        t0 = time.time()
        _, err = proc.communicate(timeout=30)
        assert time.time() - t0 < 10 and proc.returncode != 0, (proc.returncode, err[-2000:])
    finally:
        if proc.poll() is None:
            proc.kill()
    saved = load_checkpoint(out).extra["iter"]
    assert saved >= 10 and saved % 10 == 0
    in_process(flags(text_file, long_ref, max_iters=saved + 10))
    expected = read_log(long_ref)
    for n in (1, 2):
        again = tmp_path / f"resume{n}"
        shutil.copytree(out, again)
        options = flags(text_file, again, max_iters=saved + 5, init_from="resume")
        if n == 1:
            in_process(options)
        else:
            ok(mpirun(2, options)[0])
        resumed = read_log(again)
        losses = [(it, "loss") for it in range(saved, saved + 5)]
        assert all(key in resumed for key in losses)
        for key in losses:
            assert resumed[key] == pytest.approx(expected[key], rel=1e-9), (n, key)


def _safe_log(out):
    try:
        return read_log(out)
    except (OSError, ValueError):  # being written
        return {}


FAILING_RANK_1 = """
import os, sys
from tinygrad_gpt.commands import cli
from tinygrad_gpt.run import train
from tinygrad_gpt.text.data import DataError
real = train._train_step
calls = []
def failing(*args, **kwargs):
    calls.append(1)
    if len(calls) == 3 and os.environ.get("OMPI_COMM_WORLD_RANK", os.environ.get("PMI_RANK")) == "1":
        if {kind!r} == "diverge":  # rank 1's weights drift away from rank 0's
            args[0].transformer.ln_f.weight.data[0] += 1e-3
            return real(*args, **kwargs)
        if {kind!r} == "DataError":
            raise DataError("data file shard-1.txt does not exist")
        raise RuntimeError("something unforeseen")
    return real(*args, **kwargs)
train._train_step = failing
sys.exit(cli.main())
"""


@needs_mpi
@pytest.mark.parametrize("kind", ["DataError", "RuntimeError"])
def test_an_error_on_rank_1_alone_ends_the_job_with_one_error_line(tmp_path, text_file, kind):
    """A project error (one line) and an unforeseen exception (its traceback, then the line):
    both end every rank at once, with exit code 1."""
    script = tmp_path / "failing.py"
    script.write_text(FAILING_RANK_1.format(kind=kind), encoding="utf-8")
    proc, seconds = mpirun(2, flags(text_file, tmp_path / "out", max_iters=1000), script=str(script), timeout=60)
    errors = error_lines(proc)
    assert proc.returncode == 1 and len(errors) == 1, proc.stderr[-3000:]
    expected = ("data file shard-1.txt does not exist" if kind == "DataError"
                else "RuntimeError: something unforeseen")
    assert errors[0].startswith("error: rank 1: ") and expected in errors[0]
    assert seconds < 10 + 15  # the job's own end within 10 s, plus two Python start-ups under load


@needs_mpi
def test_weights_that_differ_between_ranks_stop_the_job_at_the_next_evaluation(tmp_path, text_file):
    script = tmp_path / "failing.py"
    script.write_text(FAILING_RANK_1.format(kind="diverge"), encoding="utf-8")
    proc, _ = mpirun(2, flags(text_file, tmp_path / "out", max_iters=1000), script=str(script), timeout=60)
    errors = error_lines(proc)
    assert proc.returncode == 1 and len(errors) == 1, proc.stderr[-3000:]
    assert errors[0].startswith("error: at iteration 10: the weights of rank 1 differ from rank 0's")
    assert load_checkpoint(tmp_path / "out").extra["iter"] == 0  # nothing saved from the drifted run


@needs_mpi
def test_an_error_of_every_rank_is_printed_once(tmp_path, text_file):
    proc, _ = mpirun(2, flags(text_file, tmp_path / "out", gradient_accumulation_steps=3), timeout=60)
    errors = error_lines(proc)
    assert proc.returncode == 2 and errors == [
        "error: --gradient_accumulation_steps=3 must be a multiple of the number of processes (2): "
        "each step's micro-batches are shared out among them"], proc.stderr[-3000:]


@needs_mpi
def test_a_two_rank_checkpoint_samples_in_one_process(two_ranks, capsys):
    out, _ = two_ranks
    ckpt = load_checkpoint(out)
    assert len(ckpt.extra["rank_rngs"]) == 1  # rank 1's dropout stream
    assert cli_main(["sample", f"--out_dir={out}", "--num_samples=1", "--max_new_tokens=8"]) == 0
    assert capsys.readouterr().out.strip()


def _craft(path, change):
    """Rewrite a checkpoint as a crafted file would: ``change(header, data)`` gives the new data,
    and the data checksum is made to match it."""
    from mutations import read_st, st_bytes  # the fuzz suite's safetensors helpers
    header, data = read_st(path)
    data = bytearray(change(header, bytearray(data)))
    header["__metadata__"]["sha256"] = hashlib.sha256(bytes(data)).hexdigest()
    path.write_bytes(st_bytes(header, bytes(data)))


def _huge_embedding(header, data):
    begin, end = header["model.transformer.wte.weight"]["data_offsets"]
    signs = np.where(np.arange((end - begin) // 4) % 2, 1, -1)
    data[begin:end] = (signs * 3e38).astype(np.float32).tobytes()  # finite weights, logits that are not
    return data


def _bad_rank_stream(header, data):
    extra = json.loads(header["__metadata__"]["extra"])
    extra["rank_rngs"][0]["state"]["state"] = -1
    header["__metadata__"]["extra"] = json.dumps(extra)
    return data


@needs_mpi
@pytest.mark.parametrize("craft, expected", [
    (_huge_embedding, "the weights give a loss or gradients that are not finite"),
    (_bad_rank_stream, "extra 'rank_rngs' entry 1 is not a random generator state: state.state must be")])
def test_a_refused_resume_ends_every_rank_and_changes_nothing(tmp_path, text_file, craft, expected):
    """Rank 0 alone reads and checks the checkpoint while the others wait for its broadcast:
    its refusal ends them all, with one line, and the checkpoint and log stay as they were."""
    out = tmp_path / "out"
    ok(mpirun(2, flags(text_file, out, max_iters=2, eval_interval=2, dtype="float32"))[0])
    ckpt = out / "ckpt.safetensors"
    _craft(ckpt, craft)
    before = {name: (out / name).read_bytes() for name in released(out)}
    proc, seconds = mpirun(2, flags(text_file, out, max_iters=4, eval_interval=2, dtype="float32",
                                    init_from="resume"), timeout=60)
    errors = error_lines(proc)
    assert proc.returncode == 1 and len(errors) == 1, proc.stderr[-3000:]
    assert errors[0].startswith(f"error: rank 0: {ckpt}: ") and expected in errors[0], errors[0]
    assert seconds < 10 + 15  # the job's own end within 10 s, plus two Python start-ups under load
    assert {name: (out / name).read_bytes() for name in released(out)} == before
