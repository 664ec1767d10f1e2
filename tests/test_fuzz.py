"""Fuzzing every file the project reads: checkpoints, GPT-2 folders and text data.

Each case takes a valid file that the project itself wrote, mutates one part of it (a header
byte, a tensor entry, one field of one JSON document, a line of merges.txt, ...), runs one
command through ``cli.main`` as ``python -m tinygrad_gpt`` would, and checks that

- the exit code is 0, 1 or 2 and no exception escapes;
- a refusal is exactly one ``error:`` line on stderr that names the mutated file (and, for a
  mutated field, the field); a success prints nothing on stderr, not even a warning;
- the case ends within CASE_SECONDS;
- a refused resume leaves out_dir byte for byte as it was, and a refused fine-tune or
  scratch run writes nothing.

The default is a few hundred cases; ``TINYGRAD_GPT_FUZZ_CASES=5000`` runs more, and
``TINYGRAD_GPT_FUZZ_SEED`` picks other ones. A failure lists every bad case with its
mutation and command, so it can be replayed.
"""
import contextlib
import hashlib
import io
import json
import math
import os
import random
import shutil
import signal
import struct
import subprocess
import sys
import time
import tracemalloc
import traceback
import warnings
from pathlib import Path

import pytest

from test_cli import write_text
from tinygrad_gpt import backend, cli

CASES = int(os.environ.get("TINYGRAD_GPT_FUZZ_CASES", "500"))
SEED = int(os.environ.get("TINYGRAD_GPT_FUZZ_SEED", "0"))
CASE_SECONDS = 20  # a hang is a failure; the slowest honest case takes well under a second
# each family's share of the cases
SHARES = {"ckpt_bytes": 30, "ckpt_entries": 40, "ckpt_meta": 100, "ckpt_bpe": 20, "ckpt_data": 10,
          "hf_config": 30, "hf_weights": 30, "hf_vocab": 25, "hf_merges": 25, "text": 20}
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


def tree_hash(folder):
    """A digest of every path and file's bytes under ``folder`` (None when it does not exist)."""
    folder = Path(folder)
    if not folder.exists():
        return None
    h = hashlib.sha256()
    for path in sorted(folder.rglob("*")):
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


# ----------------------------------------------------------------------------- safetensors by hand

def read_st(path):
    raw = Path(path).read_bytes()
    (n,) = struct.unpack("<Q", raw[:8])
    return json.loads(raw[8:8 + n]), raw[8 + n:]


def st_bytes(header, data, header_text=None):
    text = header_text if header_text is not None else dumps(header)
    raw = text.encode("utf-8", "surrogatepass")
    raw += b" " * (-len(raw) % 8)
    return struct.pack("<Q", len(raw)) + raw + data


# ----------------------------------------------------------------------------- hostile values

class Raw:
    """JSON text spliced in as it is (numbers and nesting that Python's json would not write)."""

    def __init__(self, text):
        self.text = text


def dumps(value):
    """json.dumps that also writes NaN, Infinity, lone surrogates and Raw text."""
    raws = []

    def default(v):
        if isinstance(v, Raw):
            raws.append(v.text)
            return f"@@raw{len(raws) - 1}@@"
        raise TypeError(type(v))
    text = json.dumps(value, default=default)
    for i, raw in enumerate(raws):
        text = text.replace(f'"@@raw{i}@@"', raw)
    return text


HOSTILE = [None, True, False, 0, -1, 1, 3, 2 ** 31, 2 ** 40, 2 ** 63, 2 ** 64, 2 ** 128, -2 ** 63, 10 ** 30,
           0.5, -0.5, 1e-300, 1e308, float("nan"), float("inf"), float("-inf"), "", "x", "0", "1.5",
           "\ud800", "a b c", [], {}, [0], [1, 2], [0.9, 0.999, 1], [[]], {"a": 1}, "a" * 5000,
           Raw("1" * 5000), Raw("[" * 50000 + "]" * 50000), Raw("1e999")]


def json_paths(tree, path=()):
    """Every (path, node) of a JSON tree, the root included."""
    yield path, tree
    if isinstance(tree, dict):
        for k, v in tree.items():
            yield from json_paths(v, path + (k,))
    elif isinstance(tree, list):
        for i, v in enumerate(tree):
            yield from json_paths(v, path + (i,))


def get_at(tree, path):
    for k in path:
        tree = tree[k]
    return tree


def mutate_json(tree, rng, prefer=None):
    """A copy of ``tree`` with one node replaced, removed or added; and a description.

    ``prefer`` (a function of a path) makes matching paths likelier to be picked.
    Returns (new tree, path, words that an error about it should contain).
    """
    tree = json.loads(json.dumps(tree))
    paths = [p for p, _ in json_paths(tree)]
    if prefer is not None and rng.random() < 0.6:
        paths = [p for p in paths if prefer(p)] or paths
    path = rng.choice(paths)
    node = get_at(tree, path)
    kind = rng.choice(["replace", "replace", "replace", "nudge", "delete", "add"])
    words = [k for k in path if isinstance(k, str)][-2:]
    if kind == "nudge" and isinstance(node, (int, float)) and not isinstance(node, bool):
        value = rng.choice([node + 1, node - 1, -node, node * 2, node * 2 ** 40, node + 0.5])
    elif kind == "delete" and path:
        parent = get_at(tree, path[:-1])
        del parent[path[-1]]
        return tree, path, words
    elif kind == "add" and isinstance(node, dict):
        key = rng.choice(["zzz_unknown", "", "__class__"])
        node[key] = value = rng.choice(HOSTILE)
        return tree, path + (key,), ["JSON"] if isinstance(value, Raw) and not parses(value.text) else \
            words + [repr(key), key or "''"]
    elif kind == "add" and isinstance(node, list):
        node.append(value := rng.choice(HOSTILE + node[:1] * 3))
        return tree, path + ("+",), ["JSON"] if isinstance(value, Raw) and not parses(value.text) else words
    else:
        value = rng.choice(HOSTILE)
    if isinstance(value, Raw) and not parses(value.text):  # the whole document is refused, and named
        words = ["JSON"]
    if not path:
        return value, path, words
    get_at(tree, path[:-1])[path[-1]] = value
    return tree, path, words


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


# ----------------------------------------------------------------------------- mutations, by family

def header_bytes(rng, path):
    """Damage the raw bytes of a safetensors file: its length prefix, its header text, its size."""
    raw = bytearray(path.read_bytes())
    (n,) = struct.unpack("<Q", raw[:8])
    kind = rng.choice(["flip", "flip", "length", "truncate", "append", "splice"])
    if kind == "flip":
        for _ in range(rng.randint(1, 3)):
            raw[rng.randrange(8, 8 + n)] = rng.randrange(256)
    elif kind == "length":
        value = rng.choice([0, 1, 2, n - 1, n + 1, n + 8, 2 ** 40, 2 ** 63, 2 ** 64 - 1, len(raw), 100 * 2 ** 20 + 1])
        raw[:8] = struct.pack("<Q", value)
    elif kind == "truncate":
        raw = raw[:rng.choice([0, 3, 8, 9, n // 2, 8 + n, len(raw) - 1])]
    elif kind == "append":
        raw += bytes(rng.randrange(256) for _ in range(rng.choice([1, 7, 8, 64])))
    else:  # a piece of the header text repeated or cut out
        a, b = sorted(rng.randrange(8, 8 + n) for _ in range(2))
        raw = raw[:a] + raw[b:] if rng.random() < 0.5 else raw[:b] + raw[a:b] + raw[b:]
    path.write_bytes(bytes(raw))
    return f"bytes: {kind}", []


def tensor_entry(rng, path, names=None):
    """Change one tensor entry of the header: its dtype, shape or data offsets, or the entry itself."""
    header, data = read_st(path)
    name = rng.choice([k for k in header if k != "__metadata__" and (names is None or k in names)])
    entry = header[name]
    field = rng.choice(["dtype", "shape", "shape", "data_offsets", "data_offsets", "entry"])
    if field == "dtype":
        entry["dtype"] = rng.choice(["F64", "F16", "BF16", "I32", "U32", "BOOL", "I8", "f32", "", None, 32,
                                     ["F32"], {"F32": 1}])
    elif field == "shape":
        shape = list(entry["shape"])
        choice = rng.randrange(6)
        if choice == 0 and shape:
            shape[rng.randrange(len(shape))] = rng.choice([0, 1, -1, 2 ** 40, 2 ** 64, 1.0, "8", None, [8]])
        elif choice == 1:
            shape.append(rng.choice([1, 2, 0]))
        elif choice == 2:
            shape = shape[:-1]
        elif choice == 3:
            shape = [2 ** 20, 2 ** 20]  # a 2**40-element tensor
        elif choice == 4:
            shape = [1] * rng.choice([65, 100000])
        else:
            shape = rng.choice([None, 8, "8", {}, [[8]]])
        entry["shape"] = shape
    elif field == "data_offsets":
        b, e = entry["data_offsets"]
        entry["data_offsets"] = rng.choice([[e, b], [b + 4, e + 4], [b, e + 4], [b - 4, e], [b, 2 ** 40],
                                            [0, 2 ** 64], [-1, e], [b], [b, e, e], None, [str(b), e],
                                            [b + 0.0, e]])
    else:
        header[name] = rng.choice([None, [], "x", 1, {}, {"dtype": "F32"}])
        if rng.random() < 0.3:  # gone: the file cannot say which tensor it lacks, only that bytes are unused
            del header[name]
            path.write_bytes(st_bytes(header, data))
            return f"tensor {name!r} deleted", []
    path.write_bytes(st_bytes(header, data))
    return f"tensor {name!r} {field}", [name, field]


def metadata_field(rng, path, prefer=None, fields=None):
    """Mutate one node of one JSON document in ``__metadata__`` (or the metadata itself)."""
    header, data = read_st(path)
    meta = header["__metadata__"]
    fields = fields or sorted(meta)
    key = rng.choice(fields)
    if rng.random() < 0.1:  # the metadata entry itself: not a string, not JSON, gone
        value = rng.choice([None, 1, ["x"], "", "{", "not json", "[]", "null", dumps(float("nan"))])
        if value is None and rng.random() < 0.5:
            del meta[key]
        else:
            meta[key] = value
        path.write_bytes(st_bytes(header, data))
        return f"metadata {key!r} = {value!r}", [key]
    document = json_or_none(meta[key])
    if isinstance(document, (dict, list)):  # a JSON document: mutate inside it
        tree, where, words = mutate_json(document, rng, prefer)
        meta[key] = dumps(tree)
    else:  # a plain string such as the format tag or the checksum: any value in its place
        meta[key], where, words = mutate_json(meta[key], rng)
    path.write_bytes(st_bytes(header, data))
    return f"metadata {key}{list(where)}", words or [key]


def parses(text):
    try:
        json.loads(text)
        return True
    except (ValueError, RecursionError):
        return False


def json_or_none(text):
    try:
        return json.loads(text)
    except (ValueError, TypeError):
        return None


def data_values(rng, path):
    """Write non-finite or huge values into the data section and fix the checksum, as a crafted file would."""
    header, data = read_st(path)
    data = bytearray(data)
    name = rng.choice([k for k in header if k != "__metadata__" and header[k]["dtype"] == "F32"])
    begin, end = header[name]["data_offsets"]
    value = rng.choice([float("nan"), float("inf"), float("-inf"), 3e38, -3e38])
    for _ in range(rng.randint(1, 3)):
        at = begin + 4 * rng.randrange((end - begin) // 4)
        data[at:at + 4] = struct.pack("<f", value)
    header["__metadata__"]["sha256"] = hashlib.sha256(bytes(data)).hexdigest()
    path.write_bytes(st_bytes(header, bytes(data)))
    words = [name, name.removeprefix("model."), "logits are not finite"]  # an overflow names no tensor
    if name.startswith("optim."):  # the optimizer names its arrays by key and parameter index
        words.append(f"{name.split('.')[2]} of parameter {name.split('.')[1]}")
    return f"tensor {name!r} holds {value}", words


def prefer_checkpoint(path):
    """The fields most likely to drive a loop, an allocation or a type error."""
    return any(k in path for k in ("n_layer", "n_embd", "block_size", "vocab_size", "batch_rng", "rng",
                                   "param_groups", "steps", "iter", "best_val_loss", "skipped", "eps", "betas"))


def vocab_json(rng, path):
    vocab = json.loads(path.read_text(encoding="utf-8"))
    if rng.random() < 0.3:  # rename a token, or give two tokens one id
        tokens = list(vocab)
        token = rng.choice(tokens)
        if rng.random() < 0.5:
            vocab[token + rng.choice(["x", "Ġ", "\ud800", ""])] = vocab.pop(token)
        else:
            vocab[token] = vocab[rng.choice(tokens)]
        path.write_text(dumps(vocab), encoding="utf-8", errors="surrogatepass")
        return f"vocab.json token {token!r}", []
    vocab, where, _ = mutate_json(vocab, rng)
    path.write_text(dumps(vocab), encoding="utf-8", errors="surrogatepass")
    return f"vocab.json {list(where)[:1]}", []


def merges_txt(rng, path):
    lines = path.read_text(encoding="utf-8").split("\n")
    body = range(1, len(lines) - 1)
    kind = rng.choice(["swap", "delete", "duplicate", "garbage", "shuffle", "header", "cut", "bytes"])
    if kind == "swap":
        i, j = rng.sample(list(body), 2)
        lines[i], lines[j] = lines[j], lines[i]
    elif kind == "delete":
        del lines[rng.choice(body)]
    elif kind == "duplicate":
        i = rng.choice(body)
        lines.insert(rng.choice(body), lines[i])
    elif kind == "garbage":
        lines.insert(rng.choice(body), rng.choice(["a b c", "x", " ", "Ġ", "zz yy", "\t", "Ġ Ġ Ġ", "#version: 0.2",
                                                  "a  b", "\ud800 a", "\x00 \x00", "t h e"]))
    elif kind == "shuffle":
        middle = lines[1:-1]
        rng.shuffle(middle)
        lines = lines[:1] + middle + lines[-1:]
    elif kind == "header":
        lines = lines[1:]
    if kind in ("cut", "bytes"):
        raw = bytearray("\n".join(lines).encode("utf-8"))
        at = rng.randrange(len(raw))
        raw = raw[:at] if kind == "cut" else raw[:at] + bytes([rng.choice([0xff, 0xc3, 0x80, 0x00])]) + raw[at:]
        path.write_bytes(bytes(raw))
    else:
        path.write_text("\n".join(lines), encoding="utf-8", errors="surrogatepass")
    return f"merges.txt {kind}", []


def text_data(rng, path):
    raw = bytearray(path.read_bytes())
    kind = rng.choice(["invalid", "empty", "bom", "short", "nul", "random", "surrogate", "unicode"])
    if kind == "invalid":
        at = rng.randrange(len(raw))
        raw[at:at] = bytes([rng.choice([0xff, 0xfe, 0xc3, 0x80, 0xed])])
    elif kind == "empty":
        raw = bytearray()
    elif kind == "bom":
        raw = bytearray(b"\xef\xbb\xbf")
    elif kind == "short":
        raw = raw[:rng.choice([1, 5, 9, 20, 90])]
    elif kind == "nul":
        raw = bytearray(b"\x00" * rng.choice([1, 100, 1000]))
    elif kind == "random":
        raw = bytearray(rng.randrange(256) for _ in range(rng.choice([10, 200, 2000])))
    elif kind == "surrogate":
        raw += b"\xed\xa0\x80"  # a UTF-8-encoded lone surrogate: not valid UTF-8
    else:
        raw += "€ 𝔘 ñ\u200b".encode("utf-8") * 20
    path.write_bytes(bytes(raw))
    return f"text {kind}", []


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
        if rng.random() < 0.5:
            what, words = header_bytes(rng, target)
        else:
            what, words = tensor_entry(rng, target)
    elif family == "hf_vocab":
        target = folder / "vocab.json"
        what, words = (header_bytes_text(rng, target), []) if rng.random() < 0.15 else vocab_json(rng, target)
    else:
        target = folder / "merges.txt"
        what, words = merges_txt(rng, target)
    new_out = case_dir / "new_out"
    command = rng.choice(["sample", "finetune"])
    return what, commands_for_folder(folder, new_out, files["text"])[command], target, words, folder, new_out


def header_bytes_text(rng, path):
    """Cut a text file short, or put an invalid UTF-8 byte in it."""
    raw = path.read_bytes()
    at = rng.randrange(len(raw))
    path.write_bytes(raw[:at] if rng.random() < 0.5 else raw[:at] + b"\xff" + raw[at:])
    return f"{path.name} bytes at {at}"


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


def run_case(rng, case_dir, files, family):
    """Make one mutated file, run one command on it; return a list of problems (empty: passed)."""
    make = (checkpoint_case if family.startswith("ckpt") else text_case if family == "text" else folder_case)
    what, argv, target, words, watched, out = make(rng, case_dir, files, family)
    before = tree_hash(watched)
    created = tree_hash(out) if out != watched else before
    t0 = time.perf_counter()
    code, stderr = run_cli(argv)
    seconds = time.perf_counter() - t0
    problems = problems_of(code, stderr, target, words)
    if code in (1, 2) and tree_hash(watched) != before:
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
    env = {**os.environ, "PYTHONPATH": str(Path(cli.__file__).parents[1])}  # this tinygrad_gpt
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
