"""The command line: `python -m tinygrad_gpt train|sample --key=value ...` run as a subprocess,
and a property test of the flag parser in-process.

Every mistake must give exactly one line `error: ...` on stderr, no traceback, exit code 2 for a
bad command line and 1 for bad data, checkpoints or devices.
"""
import contextlib
import os
import dataclasses
import io
import pickle
import random
import subprocess
import sys
import typing
from pathlib import Path

import pytest
from hypothesis import given, settings, HealthCheck
from hypothesis import strategies as st

from tinygrad_gpt import backend
from tinygrad_gpt.commands import cli
from tinygrad_gpt.storage.checkpoint import CKPT_NAME, load_checkpoint, save_checkpoint
from tinygrad_gpt.commands.cli import UsageError, parse_flags
from tinygrad_gpt.commands.sample import SampleConfig
from tinygrad_gpt.errors import ConfigError
from tinygrad_gpt.storage.lock import LOCK_NAME
from tinygrad_gpt.run.train import TrainConfig

pytestmark = pytest.mark.host_only(
    "the commands run in subprocesses on the CPU; the device run covers what they call")

TINY = ["--n_layer=1", "--n_head=2", "--n_embd=16", "--block_size=16", "--batch_size=4", "--max_iters=20",
        "--eval_interval=10", "--eval_iters=2", "--sample_tokens=20", "--warmup_iters=5"]
SEPARATOR = "\n---------------\n"


def tinygrad_gpt(*args, cwd, timeout=120):
    return subprocess.run([sys.executable, "-m", "tinygrad_gpt", *map(str, args)], cwd=cwd,
                          capture_output=True, text=True, timeout=timeout)


def released(out_dir):
    """The names in ``out_dir`` besides its lock file, which must name no holder (kept, emptied)."""
    lock = os.path.join(out_dir, LOCK_NAME)
    assert not os.path.exists(lock) or open(lock, encoding="utf-8").read() == ""
    return sorted(n for n in os.listdir(out_dir) if n != LOCK_NAME)


def assert_one_error_line(result, code, *words):
    """Exit ``code``, and stderr is exactly one line `error: ...` containing ``words``."""
    assert result.returncode == code, (result.returncode, result.stderr)
    assert "Traceback" not in result.stderr
    lines = result.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), result.stderr
    for word in words:
        assert str(word) in lines[0]
    return lines[0]


def write_text(path):
    rng = random.Random(0)
    words = "the quick brown fox jumps over a lazy dog, and then it runs away!".split()
    path.write_text("\n".join(" ".join(rng.choice(words) for _ in range(8)) for _ in range(300)) + "\n",
                    encoding="utf-8")
    return path


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """A folder holding input.txt and out/ from one tiny `train` run, and that run's result."""
    folder = tmp_path_factory.mktemp("cli")
    write_text(folder / "input.txt")
    result = tinygrad_gpt("train", "--data=input.txt", *TINY, cwd=folder)
    return folder, result


def samples_of(stdout):
    parts = stdout.split(SEPARATOR)
    assert parts[-1] == "", stdout  # every sample ends with the separator line
    return parts[:-1]


# ----------------------------------------------------------------------------- train and sample

def test_train(trained):
    folder, result = trained
    assert result.returncode == 0, result.stderr
    assert result.stderr == ""
    out = result.stdout
    assert "step 0: train loss" in out and "step 20: train loss" in out and "iter 10: loss" in out
    assert "A sample from the trained model (20 tokens):" in out
    sample = out.split("(20 tokens):\n\n", 1)[1]
    assert len(sample) == 1 + 20 + 1  # the "\n" prompt, 20 tokens, print's newline
    assert (folder / "out" / CKPT_NAME).is_file() and (folder / "out" / "log.jsonl").is_file()


def test_sample_with_start_text(trained):
    folder, _ = trained
    result = tinygrad_gpt("sample", "--start=the lazy", "--num_samples=3", "--max_new_tokens=15", cwd=folder)
    assert result.returncode == 0, result.stderr
    samples = samples_of(result.stdout)
    assert len(samples) == 3
    for s in samples:
        assert s.startswith("the lazy") and len(s) == len("the lazy") + 15


def test_sample_with_start_file(trained, tmp_path):
    folder, _ = trained
    prompt = tmp_path / "prompt.txt"
    prompt.write_text("a quick fox\n", encoding="utf-8")
    result = tinygrad_gpt("sample", f"--start=FILE:{prompt}", "--num_samples=2", "--max_new_tokens=30",
                          "--out_dir=out", cwd=folder)
    assert result.returncode == 0, result.stderr
    samples = samples_of(result.stdout)
    assert len(samples) == 2
    assert all(s.startswith("a quick fox\n") and len(s) == 12 + 30 for s in samples)


def test_sample_is_reproducible_and_seeded(trained):
    folder, _ = trained
    flags = ["--start=the", "--num_samples=2", "--max_new_tokens=40"]
    first = tinygrad_gpt("sample", *flags, "--seed=7", cwd=folder)
    again = tinygrad_gpt("sample", *flags, "--seed=7", "--use_cache=False", cwd=folder)
    other = tinygrad_gpt("sample", *flags, "--seed=8", cwd=folder)
    assert first.returncode == again.returncode == other.returncode == 0
    assert first.stdout == again.stdout  # the KV cache changes nothing
    assert first.stdout != other.stdout


def test_greedy_samples_are_identical(trained):
    folder, _ = trained
    result = tinygrad_gpt("sample", "--start=the", "--num_samples=3", "--max_new_tokens=10",
                          "--temperature=0", "--top_k=None", cwd=folder)
    assert result.returncode == 0, result.stderr
    samples = samples_of(result.stdout)
    assert len(samples) == 3 and len(set(samples)) == 1


def test_resume_from_the_command_line(trained, tmp_path):
    folder, _ = trained
    out = tmp_path / "out"
    out.mkdir()
    (out / CKPT_NAME).write_bytes((folder / "out" / CKPT_NAME).read_bytes())
    result = tinygrad_gpt("train", f"--data={folder / 'input.txt'}", *TINY, "--max_iters=25",
                          "--lr_decay_iters=20", "--init_from=resume", "--sample_tokens=0", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert "at iteration 20" in result.stdout and "step 25: train loss" in result.stdout
    assert load_checkpoint(out).extra["iter"] == 25


def test_console_script(tmp_path):
    script = Path(sys.executable).parent / "tinygrad-gpt"
    if not script.exists():
        pytest.skip("the tinygrad-gpt console script is not installed next to this Python")
    result = subprocess.run([str(script), "sample", "-h"], cwd=tmp_path, capture_output=True, text=True,
                            timeout=60)
    assert result.returncode == 0 and "--temperature=0.8" in result.stdout


# ----------------------------------------------------------------------------- help

@pytest.mark.parametrize("args", [[], ["-h"], ["--help"]])
def test_top_level_help(tmp_path, args):
    """-h prints the usage and exits 0; no command at all prints it on stderr and exits 2."""
    result = tinygrad_gpt(*args, cwd=tmp_path)
    assert result.returncode == (0 if args else 2)
    text = result.stdout if args else result.stderr
    assert (result.stderr if args else result.stdout) == ""
    first, *rest = text.splitlines()
    names = [*cli.COMMANDS, *cli.SUBCOMMANDS]
    assert first == "usage: python -m tinygrad_gpt {" + ",".join(names) + "} [RECIPE] [--key=value ...]"
    listed = [line.split()[0] for line in rest if line.startswith("  ")]
    assert listed == names and listed[:2] == ["train", "sample"] and "exercise" in names


@pytest.mark.parametrize("command, config_cls", [("train", TrainConfig), ("sample", SampleConfig)])
def test_command_help(tmp_path, command, config_cls):
    result = tinygrad_gpt(command, "--batch_size=oops", "-h", cwd=tmp_path)  # -h wins over bad flags
    assert result.returncode == 0 and result.stderr == ""
    assert result.stdout.startswith(f"usage: python -m tinygrad_gpt {command} [RECIPE] [--key=value ...]")
    for f in dataclasses.fields(config_cls):
        assert f"  --{f.name}=" in result.stdout
    assert not (tmp_path / "out").exists()


# ----------------------------------------------------------------------------- usage errors: exit 2

@pytest.mark.parametrize("args, word", [
    (["train", "--bogus_key=1"], "--bogus_key"),
    (["train", "--batchsize=4"], "did you mean --batch_size"),
    (["train", "--lr=1e-3"], "did you mean --learning_rate"),
    (["train", "--bs=8"], "did you mean --batch_size"),
    (["train", "--steps=10"], "did you mean --max_iters"),
    (["train", "--max_steps=10"], "did you mean --max_iters"),
    (["train", "--wd=0.1"], "did you mean --weight_decay"),
    (["train", "--n_layers=2"], "did you mean --n_layer"),
    (["train", "--d_model=64"], "did you mean --n_embd"),
    (["train", "--hidden_size=64"], "did you mean --n_embd"),
    (["sample", "--temp=0.8"], "did you mean --temperature"),
    (["train", "--batch_size=abc"], "--batch_size"),
    (["train", "--batch_size=2.5"], "--batch_size"),
    (["train", "--bias=yes"], "--bias"),
    (["train", "--bias=true"], "--bias"),
    (["train", "--n_embd=30", "--n_head=4"], "--n_embd=30"),
    (["train", "--batch_size=0"], "--batch_size"),
    (["train", "--max_iters=-1"], "--max_iters"),
    (["train", "--learning_rate=nan"], "--learning_rate"),
    (["train", "--device=tpu"], "--device"),
    (["train", "--init_from=foo"], "--init_from"),
    (["train", "--dtype=float16"], "--dtype"),
    (["train", "junk"], "junk"),
    (["train", "--max_iters"], "--max_iters"),
    (["train", "-max_iters=3"], "-max_iters=3"),
    (["sample", "--temperature=-1"], "--temperature"),
    (["sample", "--top_k=0"], "--top_k"),
    (["sample", "--top_p=1.5"], "--top_p"),
    (["sample", "--num_samples=x"], "--num_samples"),
    (["sample", "--block_size=8"], "--block_size"),
    (["frobnicate"], "frobnicate"),
])
def test_usage_errors(tmp_path, args, word):
    command, flags = args[0], args[1:]
    tiny = [f"--data={write_text(tmp_path / 'input.txt')}", *TINY] if command == "train" else []
    result = tinygrad_gpt(command, *tiny, *flags, cwd=tmp_path)  # the bad flag comes last and wins
    assert_one_error_line(result, 2, word)
    assert result.stdout == ""
    assert not (tmp_path / "out").exists()  # nothing was started


# ----------------------------------------------------------------------------- runtime errors: exit 1

def test_sample_without_checkpoint(tmp_path):
    result = tinygrad_gpt("sample", "--out_dir=nothing", cwd=tmp_path)
    assert result.returncode != 0
    assert_one_error_line(result, 1, "nothing", "no checkpoint")


def test_sample_from_a_foreign_file(tmp_path):
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / CKPT_NAME).write_bytes(pickle.dumps({"model": list(range(100))}, protocol=4))
    assert_one_error_line(tinygrad_gpt("sample", cwd=tmp_path), 1, CKPT_NAME, "pickle")


@pytest.mark.parametrize("name, content", [("missing.txt", None), ("empty.txt", b""),
                                           ("latin1.txt", "caf\u00e9 au lait\n".encode("latin-1")),
                                           ("folder", "mkdir")])
def test_bad_data_file(tmp_path, name, content):
    path = tmp_path / name
    if content == "mkdir":
        path.mkdir()
    elif content is not None:
        path.write_bytes(content)
    result = tinygrad_gpt("train", f"--data={name}", *TINY, cwd=tmp_path)
    assert_one_error_line(result, 1, name)


def test_data_too_short(tmp_path):
    (tmp_path / "short.txt").write_text("abcdefghij", encoding="utf-8")
    assert_one_error_line(tinygrad_gpt("train", "--data=short.txt", *TINY, cwd=tmp_path), 1, "block_size")


def test_sample_prompt_file_missing(trained):
    folder, _ = trained
    assert_one_error_line(tinygrad_gpt("sample", "--start=FILE:nope.txt", cwd=folder), 1, "nope.txt")


def test_sample_prompt_outside_vocabulary(trained):
    folder, _ = trained
    assert_one_error_line(tinygrad_gpt("sample", "--start=Q", cwd=folder), 2, "--start", "'Q'")


def test_resume_on_text_the_tokenizer_cannot_encode(trained, tmp_path):
    folder, _ = trained
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / CKPT_NAME).write_bytes((folder / "out" / CKPT_NAME).read_bytes())
    (tmp_path / "other.txt").write_text((folder / "input.txt").read_text() + "ZZZ\n", encoding="utf-8")
    result = tinygrad_gpt("train", "--data=other.txt", *TINY, "--init_from=resume", cwd=tmp_path)
    assert_one_error_line(result, 1, "other.txt", "'Z'")


def test_resume_from_a_model_only_checkpoint(trained, tmp_path):
    """A checkpoint without optimizer state or training extras cannot be resumed: a clean error."""
    folder, _ = trained
    model = load_checkpoint(folder / "out").build_model()
    (tmp_path / "out").mkdir()
    save_checkpoint(tmp_path / "out" / CKPT_NAME, model)
    result = tinygrad_gpt("train", f"--data={folder / 'input.txt'}", *TINY, "--init_from=resume", cwd=tmp_path)
    assert_one_error_line(result, 1, CKPT_NAME)


def test_sample_from_a_checkpoint_without_tokenizer(trained, tmp_path):
    """A checkpoint that lacks its tokenizer is a bad checkpoint (exit 1), not a bad flag (exit 2)."""
    folder, _ = trained
    model = load_checkpoint(folder / "out").build_model()
    (tmp_path / "out").mkdir()
    save_checkpoint(tmp_path / "out" / CKPT_NAME, model, extra={"iter": 20})
    assert_one_error_line(tinygrad_gpt("sample", cwd=tmp_path), 1, CKPT_NAME, "tokenizer")


@pytest.mark.skipif(backend.cuda_available(), reason="this machine has a GPU")
@pytest.mark.parametrize("command", ["train", "sample"])
def test_cuda_without_gpu(trained, command):
    folder, _ = trained
    flags = ["--data=input.txt", *TINY, "--out_dir=cuda_out"] if command == "train" else []
    assert_one_error_line(tinygrad_gpt(command, *flags, "--device=cuda", cwd=folder), 1, "cuda")
    assert not (folder / "cuda_out").exists()


# ----------------------------------------------------------------------------- main() in-process

def _fake_commands(monkeypatch_ctx, calls, error=None):
    for name, (config_cls, _, about) in list(cli.COMMANDS.items()):
        def run(cfg, _error=error):
            calls.append(cfg)
            if _error is not None:
                raise _error
        monkeypatch_ctx.setitem(cli.COMMANDS, name, (config_cls, run, about))


def _main(argv):
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = cli.main(argv)
    return code, out.getvalue(), err.getvalue()


@pytest.mark.parametrize("error, code", [(KeyboardInterrupt(), 130), (ConfigError("--x bad"), 2),
                                         (backend.DeviceError("no such device"), 1)])
def test_main_maps_errors_to_exit_codes(error, code):
    calls = []
    with pytest.MonkeyPatch.context() as mp:
        _fake_commands(mp, calls, error)
        result, out, err = _main(["sample", "--seed=3"])
    assert (result, out) == (code, "")
    assert len(calls) == 1 and calls[0].seed == 3
    assert err.count("\n") == 1 and err.startswith("error: ")


def _base_type(field):
    hint = field.type
    args = [a for a in typing.get_args(hint) if a is not type(None)]
    return (args[0] if args else hint), type(None) in typing.get_args(hint)


def _check_types(cfg):
    for f in dataclasses.fields(cfg):
        kind, optional = _base_type(f)
        value = getattr(cfg, f.name)
        if value is None:
            assert optional, f.name
        else:
            assert type(value) is kind, (f.name, value)


CONFIGS = {"train": TrainConfig, "sample": SampleConfig}
KEYS = sorted({f.name for cls in CONFIGS.values() for f in dataclasses.fields(cls)})
JUNK_KEYS = ["", "x", "batch-size", "BATCH_SIZE", "batch_size ", "help", "__init__", "validate", "h"]
WORDS = ["True", "False", "None", "true", "yes", "", "nan", "inf", "-inf", "1e3", "0x10", "1_000", " 7",
         "-0", "cpu", "cuda", "tpu", "float64", "float16", "resume", "scratch", "pydoc", "shakespeare",
         "FILE:x", "=", "--"]
# keys without line breaks: test_unknown_key_with_a_line_break covers those on its own
ONE_LINE = st.characters(blacklist_characters="\n\r\x0b\x0c\x1c\x1d\x1e\x85\u2028\u2029")
any_text = st.one_of(st.integers().map(str), st.floats().map(repr), st.floats(0, 2).map(str),
                     st.sampled_from(WORDS), st.text(max_size=8))
# text that is often right for a field of each type, so that many drawn command lines are valid
likely_text = {bool: st.sampled_from(["True", "False"]),
               int: st.one_of(st.integers(1, 64), st.integers(-3, 10**6)).map(str),
               float: st.one_of(st.floats(0, 0.99).map(repr), st.floats(0, 5).map(str)),
               str: st.sampled_from(["cpu", "cuda", "float32", "float64", "scratch", "resume", "pydoc",
                                     "shakespeare", "out", "input.txt", "hello"])}


@st.composite
def command_lines(draw):
    """(command, argv): mostly --key=value flags of the command's own fields with plausible
    values, sometimes another command's keys, junk keys, junk values or malformed arguments."""
    command = draw(st.sampled_from(sorted(CONFIGS)))
    fields = {f.name: f for f in dataclasses.fields(CONFIGS[command])}
    clean = draw(st.booleans())  # half the lines use only the command's keys with plausible values
    argv = []
    for _ in range(draw(st.integers(0, 5))):
        kind = "own" if clean else draw(st.sampled_from(["own"] * 4 + ["other", "junk_key", "no_value",
                                                                         "one_dash", "bare"]))
        if kind == "own":
            field = fields[draw(st.sampled_from(sorted(fields)))]
            base, optional = _base_type(field)
            good = likely_text[base] if not optional else st.one_of(likely_text[base], st.just("None"))
            value = draw(good if clean else st.one_of(good, any_text))
            argv.append(f"--{field.name}={value}")
        else:
            key = draw(st.sampled_from(KEYS) if kind == "other" else
                       st.one_of(st.sampled_from(JUNK_KEYS), st.text(ONE_LINE, max_size=6)))
            value = draw(any_text)
            argv.append({"other": f"--{key}={value}", "junk_key": f"--{key}={value}", "no_value": f"--{key}",
                         "one_dash": f"-{key}={value}", "bare": value}[kind])
    return command, argv


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(command_lines())
def test_fuzz_flags(case):
    """Any command line is either a valid, well-typed config handed to the command, or one
    `error:` line and exit code 2; nothing else ever escapes."""
    command, argv = case
    config_cls = CONFIGS[command]
    calls = []
    with pytest.MonkeyPatch.context() as mp:
        _fake_commands(mp, calls)
        code, out, err = _main([command, *argv])
    if "-h" in argv or "--help" in argv:
        assert code == 0 and out.startswith(f"usage: python -m tinygrad_gpt {command}") and not calls
        return
    try:
        expected = parse_flags(config_cls, argv).validate()
    except (UsageError, ConfigError) as e:
        assert (code, out, calls) == (2, "", [])
        assert err == f"error: {e}\n" and len(str(e).splitlines()) == 1
        return
    assert (code, out, err) == (0, "", "")
    assert len(calls) == 1 and calls[0] == expected
    _check_types(calls[0])


def _typed_values(field):
    kind, optional = _base_type(field)
    strategy = {bool: st.booleans(), int: st.integers(), str: st.text(),
                float: st.floats(allow_nan=False)}[kind]
    return st.one_of(st.none(), strategy) if optional else strategy


@st.composite
def field_and_value(draw):
    config_cls = draw(st.sampled_from([TrainConfig, SampleConfig]))
    field = draw(st.sampled_from(dataclasses.fields(config_cls)))
    value = draw(_typed_values(field))
    if isinstance(value, str) and value == "None" and _base_type(field)[1]:
        value = None  # "None" spells None for an optional string
    return config_cls, field, value


@settings(max_examples=300, deadline=None)
@given(field_and_value())
def test_flag_values_round_trip(case):
    """`--key=<str or repr of a value>` parses back to exactly that value, of the field's type."""
    config_cls, field, value = case
    text = repr(value) if isinstance(value, float) else str(value)
    cfg = parse_flags(config_cls, [f"--{field.name}={text}"])
    assert getattr(cfg, field.name) == value
    assert type(getattr(cfg, field.name)) is type(value)


def test_last_flag_wins_and_defaults_stay():
    cfg = parse_flags(TrainConfig, ["--batch_size=3", "--batch_size=5", "--bias=False", "--lr_decay_iters=None"])
    assert (cfg.batch_size, cfg.bias, cfg.lr_decay_iters) == (5, False, None)
    assert cfg.n_layer == TrainConfig().n_layer and cfg.out_dir == "out"
    assert parse_flags(SampleConfig, ["--start=a=b", "--top_p=0.9"]).start == "a=b"


@pytest.mark.parametrize("arg", ["--batch\nsize=4", "--\n=0"])
def test_unknown_key_with_a_line_break(arg):
    """The error for an unknown key is still one line when the key holds a line break."""
    code, out, err = _main(["train", arg])
    assert code == 2 and out == ""
    assert err.startswith("error: ") and len(err.splitlines()) == 1, err


# ----------------------------------------------------------------------------- -h and commands

@pytest.mark.parametrize("command", list(cli.COMMANDS))
def test_help_explains_every_flag_from_its_comment(command):
    """One line per flag: the default, then the comment written beside the field (the only copy)."""
    config_cls = cli.COMMANDS[command][0]
    helps = cli.field_help(config_cls)
    lines = cli.help_text(command).splitlines() + [""]
    for f in dataclasses.fields(config_cls):
        assert helps.get(f.name), f"{command} --{f.name} has no comment beside its field"
        n = next(n for n, line in enumerate(lines) if line.startswith(f"  --{f.name}="))
        assert helps[f.name] in lines[n] or helps[f.name] in lines[n + 1]  # a long flag puts it below
    text = "\n".join(lines)
    for name, allowed in getattr(config_cls, "CHOICES", {}).items():
        line = next(line for line in text.splitlines() if line.startswith(f"  --{name}="))
        assert f"(choices: {', '.join(allowed)})" in line


def test_help_says_what_lr_decay_iters_none_means():
    line = next(line for line in cli.help_text("train").splitlines() if line.startswith("  --lr_decay_iters="))
    assert line.startswith("  --lr_decay_iters=None") and "None: max_iters" in line and "resume" in line


def test_a_misspelt_command_gets_a_suggestion():
    code, out, err = _main(["sampel", "--seed=1"])
    assert (code, out) == (2, "")
    assert err == ("error: unknown command 'sampel' (did you mean sample?): expected one of "
                   f"{', '.join(cli.COMMANDS)}\n")


def test_one_check_for_the_sampling_arguments():
    """The sample command's flags and GPT.generate ask the same function."""
    from tinygrad_gpt.model import GPT, GPTConfig, sampling_problem
    for args, problem in (((-1, None, None), "temperature must be >= 0, got -1"),
                          ((float("nan"), None, None), "temperature must be >= 0, got nan"),
                          ((1.0, 0, None), "top_k must be >= 1, got 0"), ((1.0, None, 0.0), "top_p must be in")):
        assert sampling_problem(*args).startswith(problem)
        with pytest.raises(ConfigError, match="^--" + problem.replace("(", r"\(").replace(")", r"\)")):
            SampleConfig(temperature=args[0], top_k=args[1], top_p=args[2]).validate()
        with pytest.raises(ValueError, match="^" + problem.replace("(", r"\(").replace(")", r"\)")):
            GPT(GPTConfig(block_size=4, vocab_size=5, n_layer=1, n_head=1, n_embd=4)).generate(
                [[1]], 1, temperature=args[0], top_k=args[1], top_p=args[2])
    assert sampling_problem(0.8, 200, 0.9) is None
