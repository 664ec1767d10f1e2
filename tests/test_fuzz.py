"""Fuzzing every file the project reads: checkpoints, GPT-2 folders and text data.

Each case takes a valid file that the project itself wrote, mutates one part of it (a header
byte, a tensor entry, one field of one JSON document, a line of merges.txt, ...), runs one
command through ``cli.main`` as ``python -m tinygrad_gpt`` would, and checks that

- the exit code is 0, 1 or 2 and no exception escapes;
- a refusal is exactly one ``error:`` line on stderr that names the mutated file (and, for a
  mutated field, the field); a success prints nothing on stderr, not even a warning;
- the case ends within CASE_SECONDS;
- a refused resume leaves out_dir byte for byte as it was (besides the lock file, which a run
  that took the lock keeps, empty), a refused fine-tune or scratch run writes nothing, and a
  scratch run into an out_dir that holds a checkpoint is refused and changes nothing at all.

The mutations are in ``mutations.py``. The default is a few hundred cases;
``TINYGRAD_GPT_FUZZ_CASES=5000`` runs more, and ``TINYGRAD_GPT_FUZZ_SEED`` picks other ones.
A failure lists every bad case with its mutation and command, so it can be replayed.
"""
import contextlib
import hashlib
import io
import json
import os
import random
import shutil
import signal
import subprocess
import sys
import time
import tracemalloc
import traceback
import warnings
from pathlib import Path

import pytest

from mutations import (data_values, dumps, header_bytes, header_bytes_text, merges_txt, metadata_field, shard_file,
                       mutate_json, prefer_checkpoint, read_st, st_bytes, tensor_entry, text_data, vocab_json)
from test_cli import write_text
from tinygrad_gpt import backend
from tinygrad_gpt.commands import cli
from tinygrad_gpt.storage.lock import LOCK_NAME

CASES = int(os.environ.get("TINYGRAD_GPT_FUZZ_CASES", "500"))
SEED = int(os.environ.get("TINYGRAD_GPT_FUZZ_SEED", "0"))
CASE_SECONDS = 20  # a hang is a failure; the slowest honest case takes well under a second
# each family's share of the cases
SHARES = {"ckpt_bytes": 30, "ckpt_entries": 40, "ckpt_meta": 100, "ckpt_bpe": 20, "ckpt_data": 10,
          "hf_config": 30, "hf_weights": 30, "hf_vocab": 25, "hf_merges": 25, "text": 20, "overwrite": 20}
MODEL = ["--n_layer=2", "--n_head=2", "--n_embd=8", "--block_size=8"]
RUN = ["--batch_size=2", "--eval_iters=1", "--warmup_iters=1", "--sample_tokens=0", "--progress=False",
       "--device=cpu"]


# ----------------------------------------------------------------------------- running a command

class Hang(BaseException):
    """Raised by the alarm when a case runs past its time limit."""


@contextlib.contextmanager
def time_limit(seconds):
    def on_alarm(signum, frame):
        raise Hang(f"still running after {seconds} s")
    old = signal.signal(signal.SIGALRM, on_alarm)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, old)


def run_cli(argv, seconds=CASE_SECONDS):
    """(exit code or a string saying what escaped, stderr with any warnings) of ``cli.main(argv)``."""
    out, err = io.StringIO(), io.StringIO()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            with time_limit(seconds), contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
                code = cli.main(argv)
        except Hang as e:
            code = f"hang: {e}"
        except BaseException:  # noqa: B036 -- anything escaping the CLI is what this test looks for
            code = "escaped: " + traceback.format_exc(limit=-3)
    stderr = err.getvalue() + "".join(f"warning: {w.category.__name__}: {w.message}\n" for w in caught)
    return code, stderr


def tree_hash(folder, lock=False):
    """A digest of every path and file's bytes under ``folder`` (None when it does not exist);
    an empty lock file (``storage/lock.py`` keeps it) counts only with ``lock=True``."""
    folder = Path(folder)
    if not folder.exists():
        return None
    h = hashlib.sha256()
    for path in sorted(folder.rglob("*")):
        if path.name == LOCK_NAME and not lock and path.is_file() and path.stat().st_size == 0:
            continue
        h.update(str(path.relative_to(folder)).encode())
        if path.is_file():
            h.update(path.read_bytes())
    return h.hexdigest()


def problems_of(code, stderr, path, words):
    """What is wrong with one case's outcome (an empty list when nothing is)."""
    if not isinstance(code, int):
        return [code]
    if code not in (0, 1, 2):
        return [f"exit code {code}"]
    lines = stderr.splitlines()
    if code == 0:
        return [f"exit code 0 but stderr says {stderr!r}"] if stderr else []
    if len(lines) != 1 or not lines[0].startswith("error: "):
        return [f"stderr is not one error line: {stderr!r}"]
    found = []
    if str(path) not in lines[0]:
        found.append(f"the error does not name {path}: {lines[0]!r}")
    if words and not any(str(w) in lines[0] for w in words):
        found.append(f"the error names none of {words}: {lines[0]!r}")
    return found


# ----------------------------------------------------------------------------- the valid files

@pytest.fixture(scope="module", autouse=True)
def keep_global_rng():
    state = backend.rng_state()
    yield
    backend.set_rng_state(state)


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    """A text file, a char-tokenizer checkpoint, a BPE checkpoint and the GPT-2 folder exported from it."""
    root = tmp_path_factory.mktemp("fuzz")
    text = write_text(root / "input.txt")
    for name, more in (("char", []), ("bpe", ["--tokenizer=bpe", "--vocab_size=300"])):
        code, err = run_cli(["train", f"--data={text}", f"--out_dir={root / name}", *MODEL, *RUN,
                             "--max_iters=2", "--eval_interval=2", *more], seconds=120)
        assert code == 0, err
    code, err = run_cli(["export", f"--out_dir={root / 'bpe'}", f"--hf_dir={root / 'hf'}"])
    assert code == 0, err
    return {"text": text, "char": root / "char" / "ckpt.safetensors", "bpe": root / "bpe" / "ckpt.safetensors",
            "hf": root / "hf"}


def commands_for_checkpoint(out_dir, text):
    return {"sample": ["sample", f"--out_dir={out_dir}", "--num_samples=1", "--max_new_tokens=3", "--start=the",
                       "--device=cpu"],
            "resume": ["train", "--init_from=resume", f"--out_dir={out_dir}", f"--data={text}", "--max_iters=2",
                       "--eval_interval=2", *RUN]}


def commands_for_folder(folder, new_out, text):
    return {"sample": ["sample", f"--init_from={folder}", "--num_samples=1", "--max_new_tokens=3",
                       "--start=the", "--device=cpu"],
            "finetune": ["train", f"--init_from={folder}", f"--out_dir={new_out}", f"--data={text}",
                         "--block_size=8", "--max_iters=1", "--eval_interval=1", *RUN]}


# ----------------------------------------------------------------------------- one case

def checkpoint_case(rng, case_dir, files, family):
    source = files["bpe" if family == "ckpt_bpe" else "char"]
    out = case_dir / "out"
    out.mkdir(parents=True)
    target = out / "ckpt.safetensors"
    shutil.copyfile(source, target)
    (out / "log.jsonl").write_text('{"iter": 0, "loss": 3.0}\n', encoding="utf-8")
    if family == "ckpt_bytes":
        what, words = header_bytes(rng, target)
    elif family == "ckpt_entries":
        what, words = tensor_entry(rng, target)
    elif family == "ckpt_data":
        what, words = data_values(rng, target)
    elif family == "ckpt_bpe":
        what, words = metadata_field(rng, target, prefer=lambda p: "tokenizer" in p, fields=["extra"])
    else:
        what, words = metadata_field(rng, target, prefer=prefer_checkpoint)
    command = rng.choice(["sample", "resume"])
    return what, commands_for_checkpoint(out, files["text"])[command], target, words, out, out


def folder_case(rng, case_dir, files, family):
    folder = case_dir / "hf"
    shutil.copytree(files["hf"], folder)
    if family == "hf_config":
        target = folder / "config.json"
        if rng.random() < 0.15:
            what, words = header_bytes_text(rng, target), []
        else:
            tree, where, words = mutate_json(json.loads(target.read_text(encoding="utf-8")), rng,
                                             prefer=lambda p: any(k in p for k in ("n_layer", "n_embd", "n_head",
                                                                                   "n_positions", "vocab_size",
                                                                                   "layer_norm_epsilon", "n_inner")))
            target.write_text(dumps(tree), encoding="utf-8", errors="surrogatepass")
            what = f"config.json {list(where)}"
    elif family == "hf_weights":
        target = folder / "model.safetensors"
        mutate = rng.choice([header_bytes, header_bytes, tensor_entry, tensor_entry, data_values])
        what, words = mutate(rng, target)
    elif family == "hf_vocab":
        target = folder / "vocab.json"
        what, words = (header_bytes_text(rng, target), []) if rng.random() < 0.15 else vocab_json(rng, target)
    else:
        target = folder / "merges.txt"
        what, words = merges_txt(rng, target)
    new_out = case_dir / "new_out"
    command = rng.choice(["sample", "finetune"])
    return what, commands_for_folder(folder, new_out, files["text"])[command], target, words, folder, new_out


def text_case(rng, case_dir, files, family):
    case_dir.mkdir(parents=True)
    target = case_dir / "data.txt"
    shutil.copyfile(files["text"], target)
    what, words = text_data(rng, target)
    out = case_dir / "out"
    command = rng.choice(["scratch", "resume", "sample"])
    if command != "scratch":
        out.mkdir(parents=True)
        shutil.copyfile(files["char"], out / "ckpt.safetensors")
    argv = {"scratch": ["train", f"--data={target}", f"--out_dir={out}", *MODEL, "--max_iters=1",
                        "--eval_interval=1", *RUN],
            "resume": commands_for_checkpoint(out, target)["resume"],
            "sample": ["sample", f"--out_dir={out}", "--num_samples=1", "--max_new_tokens=3",
                       f"--start=FILE:{target}", "--device=cpu"]}[command]
    return what, argv, target, words, out, out


def overwrite_case(rng, case_dir, files, family):
    """A new run (from scratch or a GPT-2 folder) into an out_dir that holds a checkpoint, good or
    damaged, a log and a killed run's leftover: always refused, and nothing in the folder changes."""
    out = case_dir / "out"
    out.mkdir(parents=True)
    target = out / "ckpt.safetensors"
    shutil.copyfile(files[rng.choice(["char", "bpe"])], target)
    (out / "log.jsonl").write_text('{"iter": 0, "loss": 3.0}\n', encoding="utf-8")
    (out / ".ckpt.safetensors.abc.tmp").write_bytes(b"half a checkpoint")
    what = "intact"
    if rng.random() < 0.7:
        mutate = rng.choice([header_bytes, metadata_field, metadata_field, tensor_entry])
        what = mutate(rng, target)[0]
    start = rng.choice(["scratch", str(files["hf"])])
    argv = ["train", f"--data={files['text']}", f"--out_dir={out}", f"--init_from={start}", *MODEL,
            "--max_iters=1", "--eval_interval=1", *RUN]
    return f"{what}, --init_from={start}", argv, target, ["--init_from=resume"], out, out


def run_case(rng, case_dir, files, family):
    """Make one mutated file, run one command on it; return a list of problems (empty: passed)."""
    make = (checkpoint_case if family.startswith("ckpt") else text_case if family == "text" else
            overwrite_case if family == "overwrite" else folder_case)
    what, argv, target, words, watched, out = make(rng, case_dir, files, family)
    lock = family == "overwrite"  # refused before the lock: not even a lock file appears
    before = tree_hash(watched, lock)
    created = tree_hash(out) if out != watched else before
    t0 = time.perf_counter()
    code, stderr = run_cli(argv)
    seconds = time.perf_counter() - t0
    problems = problems_of(code, stderr, target, words)
    if family == "overwrite" and not (code == 2 and "--overwrite=True" in stderr):
        problems.append(f"not refused as an overwrite: exit {code}, {stderr!r}")
    if code in (1, 2) and tree_hash(watched, lock) != before:
        problems.append(f"the refusal changed {watched}")
    if code in (1, 2) and out != watched and tree_hash(out) != created:
        problems.append(f"the refusal wrote into {out}")
    return [f"{family} [{what}] `{' '.join(argv[:2])}` ({seconds:.1f} s): {p}" for p in problems], code


def family_cases(family):
    return max(1, round(CASES * SHARES[family] / sum(SHARES.values())))


@pytest.mark.parametrize("family", list(SHARES))
def test_fuzz(family, files, tmp_path):
    rng = random.Random(f"{SEED}-{family}")
    failures, codes = [], {}
    for i in range(family_cases(family)):
        case_dir = tmp_path / str(i)
        problems, code = run_case(rng, case_dir, files, family)
        failures += [f"case {i}: {p}" for p in problems]
        codes[code if isinstance(code, int) else "bad"] = codes.get(code if isinstance(code, int) else "bad", 0) + 1
        shutil.rmtree(case_dir, ignore_errors=True)
    assert not failures, f"{len(failures)} bad cases of {family_cases(family)} (exit codes {codes}):\n" + \
        "\n".join(failures[:25])


# ----------------------------------------------------------------------------- the cases that started it

def edited(source, folder, key, edit):
    """A copy of checkpoint ``source`` in ``folder/out`` whose JSON metadata entry ``key`` went through ``edit``."""
    out = folder / "out"
    out.mkdir(parents=True)
    header, data = read_st(source)
    tree = json.loads(header["__metadata__"][key])
    edit(tree)
    header["__metadata__"][key] = dumps(tree)
    (out / "ckpt.safetensors").write_bytes(st_bytes(header, data))
    return out


def one_error(code, stderr, *words):
    assert code == 1, (code, stderr)
    lines = stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), stderr
    for word in words:
        assert str(word) in lines[0], (word, lines[0])
    return lines[0]


@pytest.mark.parametrize("command", ["sample", "resume"])
def test_a_config_with_2_40_layers_is_refused_at_once(files, tmp_path, command):
    out = edited(files["char"], tmp_path, "model_config", lambda c: c.update(n_layer=2 ** 40))
    tracemalloc.start()
    t0 = time.perf_counter()
    code, stderr = run_cli(commands_for_checkpoint(out, files["text"])[command], seconds=10)
    seconds, (_, peak) = time.perf_counter() - t0, tracemalloc.get_traced_memory()
    tracemalloc.stop()
    one_error(code, stderr, out / "ckpt.safetensors", "n_layer=1099511627776")
    assert seconds < 5 and peak < 50 * 2 ** 20, (seconds, peak)


def test_a_config_json_with_2_40_layers_is_refused_at_once(files, tmp_path):
    folder = tmp_path / "hf"
    shutil.copytree(files["hf"], folder)
    config = json.loads((folder / "config.json").read_text(encoding="utf-8"))
    (folder / "config.json").write_text(json.dumps({**config, "n_layer": 2 ** 40}), encoding="utf-8")
    t0 = time.perf_counter()
    code, stderr = run_cli(commands_for_folder(folder, tmp_path / "new", files["text"])["sample"], seconds=10)
    one_error(code, stderr, folder / "config.json", "n_layer=1099511627776")
    assert time.perf_counter() - t0 < 5


@pytest.mark.parametrize("family", ["ckpt", "hf"])
def test_a_header_claiming_a_2_40_element_tensor_is_refused_at_once(files, tmp_path, family):
    """Shape and offsets agree with each other, so only the file's real size can refuse them."""
    if family == "ckpt":
        target, folder = tmp_path / "out" / "ckpt.safetensors", tmp_path / "out"
        folder.mkdir()
        shutil.copyfile(files["char"], target)
        argv = commands_for_checkpoint(folder, files["text"])["sample"]
    else:
        folder = tmp_path / "hf"
        shutil.copytree(files["hf"], folder)
        target = folder / "model.safetensors"
        argv = commands_for_folder(folder, tmp_path / "new", files["text"])["sample"]
    header, data = read_st(target)
    name = next(k for k in header if k != "__metadata__")
    begin = header[name]["data_offsets"][0]
    header[name].update(shape=[2 ** 20, 2 ** 20], data_offsets=[begin, begin + 4 * 2 ** 40])
    target.write_bytes(st_bytes(header, data))
    tracemalloc.start()
    code, stderr = run_cli(argv, seconds=10)
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    one_error(code, stderr, target, name)
    assert peak < 50 * 2 ** 20, peak


def test_a_negative_batch_rng_state_is_refused(files, tmp_path):
    out = edited(files["char"], tmp_path, "extra", lambda e: e["batch_rng"]["state"].update(state=-1))
    code, stderr = run_cli(commands_for_checkpoint(out, files["text"])["resume"])
    one_error(code, stderr, out / "ckpt.safetensors", "batch_rng", "state.state")


def test_an_optimizer_eps_that_is_a_list_is_refused(files, tmp_path):
    out = edited(files["char"], tmp_path, "optimizer", lambda o: o["param_groups"][0].update(eps=[1e-8]))
    code, stderr = run_cli(commands_for_checkpoint(out, files["text"])["resume"])
    one_error(code, stderr, out / "ckpt.safetensors", "eps")


def test_a_list_as_a_dtype_in_a_gpt2_folder_is_refused(files, tmp_path):
    folder = tmp_path / "hf"
    shutil.copytree(files["hf"], folder)
    header, data = read_st(folder / "model.safetensors")
    header["transformer.wte.weight"]["dtype"] = ["F32"]
    (folder / "model.safetensors").write_bytes(st_bytes(header, data))
    code, stderr = run_cli(commands_for_folder(folder, tmp_path / "new", files["text"])["sample"])
    one_error(code, stderr, folder / "model.safetensors", "transformer.wte.weight", "dtype")


@pytest.mark.parametrize("line, words", [("a b c", ["merges.txt: merge", "line 3", "'a b c'"]),
                                         ("Ġ xyz", ["merges.txt: merge", "line 3", "'xyz' is not a token of",
                                                    "vocab.json"])])
def test_a_bad_merges_line_names_merges_txt(files, tmp_path, line, words):
    folder = tmp_path / "hf"
    shutil.copytree(files["hf"], folder)
    lines = (folder / "merges.txt").read_text(encoding="utf-8").split("\n")
    (folder / "merges.txt").write_text("\n".join(lines[:2] + [line] + lines[2:]), encoding="utf-8")
    code, stderr = run_cli(commands_for_folder(folder, tmp_path / "new", files["text"])["sample"])
    message = one_error(code, stderr, folder / "merges.txt", *words)
    assert "vocab.json:" not in message  # the file at fault comes first


def test_a_merge_making_an_unknown_token_names_both_files(files, tmp_path):
    folder = tmp_path / "hf"
    shutil.copytree(files["hf"], folder)
    vocab = json.loads((folder / "vocab.json").read_text(encoding="utf-8"))
    lines = (folder / "merges.txt").read_text(encoding="utf-8").split("\n")
    made = "".join(lines[1].split(" "))
    vocab[made + "x"] = vocab.pop(made)  # the first merge's token, misspelled in vocab.json
    (folder / "vocab.json").write_text(json.dumps(vocab), encoding="utf-8")
    code, stderr = run_cli(commands_for_folder(folder, tmp_path / "new", files["text"])["sample"])
    one_error(code, stderr, f"{folder / 'merges.txt'}: merge 0 (line 2)", "makes a token", folder / "vocab.json")


def test_a_vocab_json_that_is_not_json_names_vocab_json(files, tmp_path):
    folder = tmp_path / "hf"
    shutil.copytree(files["hf"], folder)
    (folder / "vocab.json").write_text('{"a": 0,', encoding="utf-8")
    code, stderr = run_cli(commands_for_folder(folder, tmp_path / "new", files["text"])["finetune"])
    one_error(code, stderr, f"{folder / 'vocab.json'}: cannot read")
    assert not (tmp_path / "new").exists()


# ----------------------------------------------------------------------------- nothing lost

def test_a_refused_resume_leaves_out_dir_byte_for_byte(files, tmp_path):
    out = edited(files["char"], tmp_path, "extra", lambda e: e.update(iter=-5))
    (out / "log.jsonl").write_text('{"iter": 0, "loss": 3.0}\n', encoding="utf-8")
    (out / ".ckpt.safetensors.abc.tmp").write_bytes(b"half a checkpoint")  # a killed run's leftover
    before = tree_hash(out)
    code, stderr = run_cli(commands_for_checkpoint(out, files["text"])["resume"])
    one_error(code, stderr, out / "ckpt.safetensors", "iter")
    assert tree_hash(out) == before


def test_a_new_run_never_replaces_a_checkpoint(files, tmp_path):
    """A scratch run into an out_dir that holds a checkpoint is refused in one line naming the
    checkpoint, its iteration, its data and the two ways on; the folder stays byte for byte."""
    out = tmp_path / "out"
    out.mkdir()
    shutil.copyfile(files["char"], out / "ckpt.safetensors")
    (out / "log.jsonl").write_text('{"iter": 0, "loss": 3.0}\n', encoding="utf-8")
    before = tree_hash(out, lock=True)
    argv = ["train", f"--data={files['text']}", f"--out_dir={out}", *MODEL, "--max_iters=1", *RUN]
    code, stderr = run_cli(argv)
    assert code == 2, stderr
    one_error(1, stderr, out / "ckpt.safetensors", "iteration 2", f"trained on {files['text']}",
              "--init_from=resume", "--overwrite=True")
    assert tree_hash(out, lock=True) == before and sorted(os.listdir(out)) == ["ckpt.safetensors", "log.jsonl"]
    code, stderr = run_cli(argv + ["--overwrite=True"])  # said so: the new run replaces it
    assert code == 0 and stderr == "", stderr
    assert (out / "log.old.jsonl").exists() and tree_hash(out) != before


def test_a_refused_fine_tune_writes_nothing(files, tmp_path):
    folder = tmp_path / "hf"
    shutil.copytree(files["hf"], folder)
    config = json.loads((folder / "config.json").read_text(encoding="utf-8"))
    (folder / "config.json").write_text(json.dumps({**config, "layer_norm_epsilon": "tiny"}), encoding="utf-8")
    new = tmp_path / "runs" / "new"  # neither folder exists yet
    code, stderr = run_cli(commands_for_folder(folder, new, files["text"])["finetune"])
    one_error(code, stderr, folder / "config.json", "layer_norm_epsilon")
    assert not (tmp_path / "runs").exists()


def test_a_good_fine_tune_still_runs(files, tmp_path):
    code, stderr = run_cli(commands_for_folder(files["hf"], tmp_path / "new", files["text"])["finetune"])
    assert code == 0 and stderr == "", stderr
    assert (tmp_path / "new" / "ckpt.safetensors").exists()


# ----------------------------------------------------------------------------- as a real process

SUBPROCESS_CASES = {
    "n_layer": ("model_config", lambda c: c.update(n_layer=2 ** 40), "n_layer"),
    "batch_rng": ("extra", lambda e: e["batch_rng"]["state"].update(state=-1), "batch_rng"),
    "eps": ("optimizer", lambda o: o["param_groups"][0].update(eps=[1e-8]), "eps"),
    "tokenizer": ("extra", lambda e: e["tokenizer"]["chars"].append(["x"]), "tokenizer"),
}


@pytest.mark.parametrize("case", list(SUBPROCESS_CASES))
def test_as_a_process(files, tmp_path, case):
    key, edit, word = SUBPROCESS_CASES[case]
    out = edited(files["char"], tmp_path, key, edit)
    argv = commands_for_checkpoint(out, files["text"])["resume"][1:]
    env = {**os.environ, "PYTHONPATH": str(Path(cli.__file__).parents[2])}  # this tinygrad_gpt
    result = subprocess.run([sys.executable, "-m", "tinygrad_gpt", "train", *argv], capture_output=True,
                            text=True, timeout=120, env=env)
    assert result.returncode == 1 and "Traceback" not in result.stderr, result.stderr
    lines = result.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and word in lines[0], result.stderr


@pytest.mark.parametrize("log", [b'{"iter": 0, "loss": 3.0}\n\xff\xfe\n', b'[1, 2]\n{"iter": 1, "loss": 2.0}\n',
                                 b'{"iter": 0, "loss": "3.0"}\n{"iter": 1, "loss": 2.0}\n',
                                 b"[" * 50000 + b"\n" + b'{"iter": 1, "loss": 2.0}\n'])
def test_a_corrupt_training_log_is_refused_by_plot(tmp_path, log):
    (tmp_path / "log.jsonl").write_bytes(log)
    code, stderr = run_cli(["plot", f"--out_dir={tmp_path}"])
    one_error(code, stderr, tmp_path / "log.jsonl")


# ----------------------------------------------------------------------------- shard folders

# A folder made by `prepare` (two train shards and a val shard, tokenizer.json, meta.json) has one
# file mutated, then `train --data=DIR` runs on it from scratch or resumes beside it. The outcome is
# judged as above: one error line naming the file (and the field), nothing written, no hang.
SHARD_CASES = int(os.environ.get("TINYGRAD_GPT_FUZZ_SHARD_CASES", "40"))


@pytest.fixture(scope="module")
def shard_files(tmp_path_factory):
    """A prepared folder and a checkpoint trained on it."""
    root = tmp_path_factory.mktemp("shards")
    text = write_text(root / "input.txt")
    code, err = run_cli(["prepare", str(text), f"--out_dir={root / 'd'}", "--shard_tokens=2500"])
    assert code == 0, err
    code, err = run_cli(["train", f"--data={root / 'd'}", f"--out_dir={root / 'out'}", *MODEL, *RUN,
                         "--max_iters=2", "--eval_interval=2"], seconds=120)
    assert code == 0, err
    return root


def shard_case(rng, case_dir, root):
    folder = case_dir / "d"
    shutil.copytree(root / "d", folder)
    meta = json.loads((folder / "meta.json").read_text(encoding="utf-8"))
    names = [e["name"] for split in ("train", "val") for e in meta["splits"][split]]
    target = rng.choice([folder / rng.choice(names)] * 5 + [folder / "meta.json"] * 3 + [folder / "tokenizer.json"])
    if target.name == "meta.json":
        tree, where, words = mutate_json(meta, rng, prefer=lambda p: "splits" in p or "vocab_size" in p)
        target.write_text(dumps(tree), encoding="utf-8", errors="surrogatepass")
        what = f"meta.json {list(where)}"
    elif target.name == "tokenizer.json":  # any change breaks the sha256 that meta.json holds
        tree, where, _ = mutate_json(json.loads(target.read_text(encoding="utf-8")), rng)
        target.write_text(dumps(tree), encoding="utf-8", errors="surrogatepass")
        what, words = f"tokenizer.json {list(where)}", []
    else:
        what, words = shard_file(rng, target, meta["vocab_size"])
    out = case_dir / "out"
    command = rng.choice(["scratch", "resume"])
    if command == "resume":
        shutil.copytree(root / "out", out)
    argv = ["train", f"--data={folder}", f"--out_dir={out}", *MODEL, *RUN, "--max_iters=3", "--eval_interval=3"]
    argv += ["--init_from=resume"] if command == "resume" else []
    return what, argv, target, words, out


def test_fuzz_shard_folders(shard_files, tmp_path):
    rng = random.Random(f"{SEED}-shards")
    failures, codes = [], {}
    for i in range(SHARD_CASES):
        case_dir = tmp_path / str(i)
        what, argv, target, words, out = shard_case(rng, case_dir, shard_files)
        data_before, out_before = tree_hash(case_dir / "d"), tree_hash(out)
        t0 = time.perf_counter()
        code, stderr = run_cli(argv)
        problems = problems_of(code, stderr, target, words)
        if code in (1, 2) and (tree_hash(out) != out_before or tree_hash(case_dir / "d") != data_before):
            problems.append("the refusal changed the data folder or out_dir")
        if tree_hash(case_dir / "d") != data_before:
            problems.append("training wrote into the data folder")
        failures += [f"case {i} [{what}] `{' '.join(argv[:2])}` ({time.perf_counter() - t0:.1f} s): {p}"
                     for p in problems]
        codes[code if isinstance(code, int) else "bad"] = codes.get(code if isinstance(code, int) else "bad", 0) + 1
        shutil.rmtree(case_dir, ignore_errors=True)
    assert not failures, f"{len(failures)} bad cases of {SHARD_CASES} (exit codes {codes}):\n" + "\n".join(failures[:25])
    assert codes.get(1, 0) >= SHARD_CASES // 3, codes  # most mutations must be refused, not slip through
