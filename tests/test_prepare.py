"""prepare: exact ids (the chunks are cut where the BPE never joins across), every kind of input,
worker processes, atomic shards, reruns, refusals, a progress bar, and memory that does not
grow with the input."""
import gzip
import hashlib
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings, strategies as st, HealthCheck

import memwatch
from tinygrad_gpt.commands import cli
from tinygrad_gpt.text.bpe import ENDOFTEXT
from tinygrad_gpt.text.data import default_cache_dir, read_text_file
from tinygrad_gpt.text import stream
from tinygrad_gpt.text.folder import open_folder
from tinygrad_gpt.text.prepare import PrepareConfig, Progress, prepare, safe_cut
from tinygrad_gpt.text.stream import Reader, chunks, list_inputs
from tinygrad_gpt.tokenizer import CharTokenizer

ROOT = Path(__file__).resolve().parents[1]
SHAKESPEARE = next((p for p in (ROOT.parent / "shared" / "data" / "tinyshakespeare.txt",
                                 Path(default_cache_dir()) / "tinyshakespeare.txt") if p.exists()), Path("absent"))
WORDS = ("the quick brown fox jumps over a lazy dog; it's 42 o'clock, and \u00e9t\u00e9 \u4e2d\u6587 "
         "\U0001f44b isn't  here\t!\n\n").split(" ")


def quiet(*args):
    pass


def ids_of(folder):
    ds, tok, _ = open_folder(folder, 1)
    return np.concatenate([ds.train[:len(ds.train)], ds.val[:len(ds.val)]]), tok, ds


def run(out, *inputs, **flags):
    return prepare(PrepareConfig(out_dir=str(out), inputs=tuple(map(str, inputs)), **flags), print_fn=quiet)


def sample_text(n_words, seed=0):
    rng = np.random.default_rng(seed)
    return "".join(w + rng.choice([" ", "  ", "\n", "\r\n", "\t", "", " \n "]) for w in rng.choice(WORDS, n_words))


@pytest.fixture(scope="module")
def bpe(tmp_path_factory):
    """A small BPE tokenizer saved as a prepared folder's tokenizer.json, and its path."""
    folder = tmp_path_factory.mktemp("bpe")
    text = sample_text(3000, seed=1)
    (folder / "t.txt").write_text(text, encoding="utf-8")
    run(folder / "tok", folder / "t.txt", tokenizer="bpe", vocab_size=300)
    return folder / "tok" / "tokenizer.json"


# ----------------------------------------------------------------------------- exact ids

@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.lists(st.sampled_from(WORDS + ["\u00a0", "\u2003", "\r", "x" * 30, "''s", "<|endoftext|>"]), max_size=80),
       st.integers(0, 400))
def test_a_safe_cut_does_not_change_the_ids(bpe, words, at):
    """encode(text[:c]) + encode(text[c:]) == encode(text) wherever safe_cut puts c."""
    from tinygrad_gpt.text.folder import read_tokenizer_file
    tok = read_tokenizer_file(bpe)[0]
    text = "".join(words)
    c = safe_cut(tok)(text[:at])
    assert 0 <= c <= min(at, len(text))
    assert tok.encode(text[:c]) + tok.encode(text[c:]) == tok.encode(text)


@pytest.mark.parametrize("target", [7, 50, 1000])
def test_chunks_give_the_ids_of_the_whole_text(tmp_path, bpe, target):
    from tinygrad_gpt.text.folder import read_tokenizer_file
    tok = read_tokenizer_file(bpe)[0]
    text = sample_text(2000, seed=target)
    (tmp_path / "a.txt").write_text(text, encoding="utf-8")
    pieces = list(chunks(Reader(list_inputs([tmp_path / "a.txt"]), val_at=len(text.encode()) // 2),
                         safe_cut(tok), ENDOFTEXT, target=target))
    assert len(pieces) > 3 and "".join(t for _, t in pieces) == text
    splits = [s for (s, _), _ in pieces]
    assert splits == ["train"] * splits.count("train") + ["val"] * splits.count("val")  # train, then val
    assert sum(len(tok.encode(t)) for _, t in pieces) == len(tok.encode(text))
    assert [i for _, t in pieces for i in tok.encode(t)] == tok.encode(text)


@pytest.mark.parametrize("workers", [1, 2])
def test_one_file_gives_exactly_the_ids_of_encoding_it_whole(tmp_path, bpe, workers, monkeypatch):
    monkeypatch.setattr(stream, "CHUNK_CHARS", 5000)  # many chunks from a small file
    monkeypatch.setattr(stream, "BLOCK_BYTES", 3001)
    text = "\ufeff" + sample_text(20000, seed=3)  # a byte-order mark is dropped, as read_text_file does
    (tmp_path / "a.txt").write_text(text, encoding="utf-8")
    meta = run(tmp_path / "out", tmp_path / "a.txt", tokenizer=str(bpe), workers=workers, shard_tokens=7000,
               val_fraction=0.25)
    ids, tok, ds = ids_of(tmp_path / "out")
    assert ids.tolist() == tok.encode(read_text_file(tmp_path / "a.txt"))
    assert len(meta["splits"]["train"]) > 1 and all(s["tokens"] == 7000 for s in meta["splits"]["train"][:-1])
    assert 0.2 < len(ds.val) / len(ids) < 0.3


@pytest.mark.skipif(not SHAKESPEARE.exists(), reason="tiny Shakespeare is not there")
def test_tiny_shakespeare_gives_hugging_face_s_ids(tmp_path):
    """The same vocab.json and merges.txt in both; the shards equal tokenizers' encode of the file."""
    tokenizers = pytest.importorskip("tokenizers")
    from tokenizers import models, pre_tokenizers
    run(tmp_path / "a", SHAKESPEARE, tokenizer="bpe", vocab_size=1000, workers=2)
    ids, tok, _ = ids_of(tmp_path / "a")
    tok.save(tmp_path / "gpt2")
    hf = tokenizers.Tokenizer(models.BPE.from_file(str(tmp_path / "gpt2" / "vocab.json"),
                                                   str(tmp_path / "gpt2" / "merges.txt")))
    hf.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, trim_offsets=True)
    hf.add_special_tokens([ENDOFTEXT])
    assert ids.tolist() == hf.encode(SHAKESPEARE.read_text(encoding="utf-8")).ids
    run(tmp_path / "b", SHAKESPEARE, tokenizer=str(tmp_path / "gpt2"), workers=2)  # a GPT-2 folder as --tokenizer
    assert ids_of(tmp_path / "b")[0].tolist() == ids.tolist()


# ----------------------------------------------------------------------------- every kind of input

def test_folders_jsonl_and_gzip_are_documents_separated_by_end_of_text(tmp_path, bpe):
    docs = [sample_text(50, seed=s) for s in range(6)]
    (tmp_path / "in" / "sub").mkdir(parents=True)
    (tmp_path / "in" / "a.txt").write_text(docs[0], encoding="utf-8")
    with gzip.open(tmp_path / "in" / "sub" / "b.txt.gz", "wt", encoding="utf-8") as f:
        f.write(docs[1])
    (tmp_path / "in" / "skip.md").write_text("not an input", encoding="utf-8")
    lines = "".join(json.dumps({"text": d, "id": i}) + "\n" for i, d in enumerate(docs[2:4]))
    (tmp_path / "c.jsonl").write_text(lines + "\n", encoding="utf-8")
    with gzip.open(tmp_path / "d.jsonl.gz", "wt", encoding="utf-8") as f:
        f.write("".join(json.dumps({"text": d}) + "\n" for d in docs[4:]))
    meta = run(tmp_path / "out", tmp_path / "in", tmp_path / "c.jsonl", tmp_path / "d.jsonl.gz", tokenizer=str(bpe))
    ids, tok, _ = ids_of(tmp_path / "out")
    assert meta["documents"] == 6 and meta["eot"] == tok.special_tokens[ENDOFTEXT]
    assert ids.tolist() == tok.encode(ENDOFTEXT.join(docs))


def test_the_char_tokenizer_collects_the_alphabet_first(tmp_path):
    (tmp_path / "a.txt").write_text("abc\n", encoding="utf-8")
    (tmp_path / "b.txt").write_text("\u00e9\U0001f44bz" * 50, encoding="utf-8")
    run(tmp_path / "out", tmp_path / "a.txt", tmp_path / "b.txt")
    ids, tok, _ = ids_of(tmp_path / "out")
    assert isinstance(tok, CharTokenizer) and tok.chars == sorted("abc\n\u00e9\U0001f44bz")
    assert tok.decode(ids) == "abc\n" + "\u00e9\U0001f44bz" * 50  # no end-of-text token: joined as they are


def test_bpe_is_trained_on_a_bounded_sample_and_says_how_large(tmp_path):
    (tmp_path / "a.txt").write_text(sample_text(40000), encoding="utf-8")
    printed = []
    prepare(PrepareConfig(out_dir=str(tmp_path / "out"), inputs=(str(tmp_path / "a.txt"),), tokenizer="bpe",
                          vocab_size=280, bpe_sample_mb=0.05), print_fn=printed.append)
    assert "on a sample of the first 0.1 MB of the input" in printed[0]  # 50,000 bytes
    ids, tok, _ = ids_of(tmp_path / "out")
    assert tok.vocab_size == 280 and ids.tolist() == tok.encode(read_text_file(tmp_path / "a.txt"))


# ----------------------------------------------------------------------------- refusals

def one_error(argv, capsys):
    code = cli.main(argv)
    err = capsys.readouterr().err.splitlines()
    assert code in (1, 2) and len(err) == 1 and err[0].startswith("error: "), err
    return err[0]


@pytest.mark.parametrize("content, words", [
    (b"good text\n\xff\xfe more", ["not UTF-8 text: invalid byte 0xff at byte offset 10"]),
    (b"", ["the input holds no text"])])
def test_bad_text_is_one_line_and_writes_nothing(tmp_path, capsys, content, words):
    (tmp_path / "a.txt").write_bytes(content)
    line = one_error(["prepare", str(tmp_path / "a.txt"), f"--out_dir={tmp_path / 'out'}"], capsys)
    assert str(tmp_path / "a.txt") in line and all(w in line for w in words), line
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("line, words", [("{\"text\": 3}", 'no "text" field'), ("{\"text\"", "not a JSON document"),
                                         ('{"text": "\\ud800"}', "lone surrogate"), ("[" * 5000, "not a JSON")])
def test_a_bad_json_line_names_file_and_line(tmp_path, capsys, line, words):
    (tmp_path / "a.jsonl").write_text('{"text": "fine"}\n' + line + "\n", encoding="utf-8")
    err = one_error(["prepare", str(tmp_path / "a.jsonl"), f"--out_dir={tmp_path / 'out'}", "--tokenizer=bpe",
                     "--vocab_size=260"], capsys)
    assert f"{tmp_path / 'a.jsonl'}, line 2" in err and words in err, err


def test_missing_inputs_and_empty_folders_are_refused(tmp_path, capsys):
    assert "no such file or folder" in one_error(["prepare", str(tmp_path / "nope.txt")], capsys)
    (tmp_path / "empty").mkdir()
    assert "no .txt or .jsonl files" in one_error(["prepare", str(tmp_path / "empty")], capsys)
    assert "needs at least one input" in one_error(["prepare", f"--out_dir={tmp_path / 'o'}"], capsys)


def test_a_character_outside_a_given_tokenizer_names_the_file(tmp_path, capsys):
    (tmp_path / "tok.json").write_text(json.dumps({"type": "char", "chars": list("ab\n")}), encoding="utf-8")
    (tmp_path / "a.txt").write_text("abba\nabc\n", encoding="utf-8")
    err = one_error(["prepare", str(tmp_path / "a.txt"), f"--out_dir={tmp_path / 'out'}",
                     f"--tokenizer={tmp_path / 'tok.json'}"], capsys)
    assert str(tmp_path / "a.txt") in err and "'c'" in err
    assert not (tmp_path / "out").exists()


def tree(folder):
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(Path(folder).iterdir())}


def test_a_rerun_starts_cleanly_and_other_settings_are_refused(tmp_path, capsys):
    (tmp_path / "a.txt").write_text(sample_text(3000), encoding="utf-8")
    run(tmp_path / "out", tmp_path / "a.txt", shard_tokens=2000)
    first = tree(tmp_path / "out")
    (tmp_path / "out" / ".out_train_000000.bin.tmp").write_bytes(b"left by a killed run")
    run(tmp_path / "out", tmp_path / "a.txt", shard_tokens=2000)
    again = tree(tmp_path / "out")
    assert set(again) == set(first) and all(again[k] == first[k] for k in first if k.endswith(".bin"))
    err = one_error(["prepare", str(tmp_path / "a.txt"), f"--out_dir={tmp_path / 'out'}", "--shard_tokens=3000"],
                    capsys)
    assert f"{tmp_path / 'out' / 'meta.json'}: this folder was prepared differently (shard_tokens differ)" in err
    assert tree(tmp_path / "out") == again
    (tmp_path / "foreign").mkdir()
    np.arange(10, dtype="<u2").tofile(tmp_path / "foreign" / "train.bin")
    assert "holds shards without a meta.json" in one_error(
        ["prepare", str(tmp_path / "a.txt"), f"--out_dir={tmp_path / 'foreign'}"], capsys)


def test_a_killed_prepare_leaves_no_shard_under_a_final_name(tmp_path):
    """Killed (SIGKILL: nothing runs after it) while its shards are being written, twice; then run
    again to the end."""
    (tmp_path / "a.txt").write_text(sample_text(200_000, seed=5), encoding="utf-8")
    out = tmp_path / "o"
    argv = [sys.executable, "-m", "tinygrad_gpt", "prepare", str(tmp_path / "a.txt"), f"--out_dir={out}",
            "--shard_tokens=25000", "--workers=2"]
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    for shard in (1, 4):
        child = subprocess.Popen(argv, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                                 start_new_session=True)
        end = time.time() + 60
        while not (out / f".o_train_{shard:06d}.bin.tmp").exists() and child.poll() is None and time.time() < end:
            time.sleep(0.001)
        os.killpg(child.pid, signal.SIGKILL)  # the workers too
        assert child.wait() == -signal.SIGKILL, "it ended before it was killed"
        names = os.listdir(out)
        assert f".o_train_{shard - 1:06d}.bin.tmp" in names  # a complete shard, under its temporary name
        assert not [n for n in names if n.endswith(".bin")], names
    assert subprocess.run(argv, env=env, capture_output=True).returncode == 0
    ids, tok, _ = ids_of(out)
    assert tok.decode(ids) == (tmp_path / "a.txt").read_bytes().decode("utf-8")
    assert not [n for n in os.listdir(out) if n.endswith(".tmp")]


# ----------------------------------------------------------------------------- what the user sees

def test_the_command_line_and_its_summary(tmp_path, capsys):
    (tmp_path / "a.txt").write_text(sample_text(2000), encoding="utf-8")
    assert cli.main(["prepare", str(tmp_path / "a.txt"), f"--out_dir={tmp_path / 'out'}", "--name=tiny"]) == 0
    out = capsys.readouterr().out
    assert "prepared 0.0 MB (1 document) with the char" in out and "1 shard" in out
    assert f"python -m tinygrad_gpt train --data={tmp_path / 'out'}" in out
    kept = sorted(set(os.listdir(tmp_path / "out")) - {".lock"})  # the lock file is kept, empty
    assert kept == ["meta.json", "tiny_train_000000.bin", "tiny_val_000000.bin", "tokenizer.json"]


class TTY:
    def __init__(self):
        self.text = ""

    def isatty(self):
        return True

    def write(self, s):
        self.text += s

    def flush(self):
        pass


def test_the_progress_bar_shows_mb_per_second_and_time_left(monkeypatch):
    tty, now = TTY(), [1000.0]
    monkeypatch.setattr(time, "time", lambda: now[0])
    bar = Progress(100e6, True, stream=tty)
    now[0] += 10
    bar.update(25e6)
    assert "25.0/100.0 MB 2.5 MB/s   30s left" in tty.text
    bar.close()
    assert tty.text.endswith("\r" + " " * 79 + "\r")  # the line is cleared at the end
    lines = []
    with open(os.devnull, "w") as log:  # not a terminal: a line every 30 s instead of a bar
        bar = Progress(100e6, True, stream=log, print_fn=lines.append)
        now[0] += 10
        bar.update(25e6)
        now[0] += 30
        bar.update(50e6)
    assert lines == ["prepare: 50.0/100.0 MB 1.2 MB/s   40s left"]


# ----------------------------------------------------------------------------- memory

def peaks_of(tmp_path, name, megabytes, tokenizer):
    text = (tmp_path / "words.txt").read_text(encoding="utf-8")
    path = tmp_path / f"{name}.txt"
    with open(path, "w", encoding="utf-8") as f:
        for _ in range(int(megabytes * 1e6 / len(text))):
            f.write(text)
    argv = [sys.executable, "-m", "tinygrad_gpt", "prepare", str(path), f"--out_dir={tmp_path / name}",
            f"--tokenizer={tokenizer}", "--workers=2", "--shard_tokens=1000000"]
    result, peaks = memwatch.run_watched(argv, env=dict(os.environ, PYTHONPATH=str(ROOT)))
    assert result.returncode == 0, result.stderr
    os.remove(path)
    main = memwatch.top(peaks, sys.executable + " -m tinygrad_gpt prepare")
    workers = memwatch.top(peaks, sys.executable + " -m tinygrad_gpt.text.workers")
    assert len(main) == 1 and len(workers) == 2, peaks
    return {"main": main[0]["anon_mb"], "worker": max(p["anon_mb"] for p in workers)}


@pytest.mark.skipif(not memwatch.available(), reason="needs Linux /proc")
def test_memory_does_not_grow_with_the_input(tmp_path, bpe):
    """3 MB and 12 MB of text: every process (the main one and each worker) peaks the same."""
    (tmp_path / "words.txt").write_text(sample_text(200_000, seed=9), encoding="utf-8")
    small = peaks_of(tmp_path, "small", 3, bpe)
    large = peaks_of(tmp_path, "large", 12, bpe)
    assert set(small) == set(large) == {"main", "worker"}
    for kind in small:
        assert large[kind] < small[kind] + 10 and large[kind] < 400, (small, large)
