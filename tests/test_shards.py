"""Token shards: llm.c's format byte for byte, windows through memory maps, the three folder
layouts, hostile shards refused with one line naming the file and the field, and training from
a folder (one process, two MPI ranks, bounded memory)."""
import hashlib
import json
import os
import pickle
import sys
import tracemalloc

import numpy as np
import pytest

import memwatch
from test_distributed import assert_same_run, flags, in_process, mpi_command, mpi_env, mpirun, needs_mpi, ok
from tinygrad_gpt.commands import cli
from tinygrad_gpt.text.data import Dataset
from tinygrad_gpt.errors import DataError
from tinygrad_gpt.text import shards
from tinygrad_gpt.text.folder import IdTokenizer, load_tokenizer, open_folder
from tinygrad_gpt.text.prepare import PrepareConfig, prepare
from tinygrad_gpt.text.shards import ShardDataset, ShardWriter, Split, read_header, write_shard
from tinygrad_gpt.tokenizer import CharTokenizer, tokenizer_from_dict

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def raw_shard(path, ids, magic=20240520, version=1, count=None, dtype="<u2"):
    """A shard written by hand, as llm.c's ``write_datafile`` does, with any header."""
    header = np.zeros(256, dtype="<i4")
    header[:3] = magic, version, len(ids) if count is None else count
    with open(path, "wb") as f:
        f.write(header.tobytes())
        f.write(np.asarray(ids, dtype=dtype).tobytes())
    return path


def llmc_folder(folder, train, val, **kw):
    folder.mkdir(parents=True, exist_ok=True)
    raw_shard(folder / "x_val_000000.bin", val, **kw)
    raw_shard(folder / "x_train_000001.bin", train, **kw)
    return folder


# ----------------------------------------------------------------------------- the format

@pytest.mark.parametrize("vocab, magic, version, dtype", [(65, 20240520, 1, "<u2"), (65536, 20240520, 1, "<u2"),
                                                          (70000, 20240801, 7, "<u4")])
def test_a_shard_is_llm_c_s_header_then_the_tokens(tmp_path, vocab, magic, version, dtype):
    ids = np.arange(0, vocab, max(1, vocab // 1000))
    write_shard(tmp_path / "s.bin", ids, vocab_size=vocab)
    raw = (tmp_path / "s.bin").read_bytes()
    header = np.frombuffer(raw[:1024], dtype="<i4")  # as llm.c's dataloader reads it
    assert header[:3].tolist() == [magic, version, len(ids)] and not header[3:].any()
    assert len(raw) == 1024 + len(ids) * np.dtype(dtype).itemsize
    assert np.frombuffer(raw[1024:], dtype=dtype).tolist() == ids.tolist()
    assert read_header(tmp_path / "s.bin") == (np.dtype(dtype), len(ids))


def test_the_writer_fills_shards_in_order_and_names_them_only_when_committed(tmp_path):
    w = ShardWriter(tmp_path, "abc", "train", np.uint16, shard_tokens=100)
    ids = np.arange(250) % 7
    w.write(ids[:30])
    w.write(ids[30:])
    assert w.close() == [("abc_train_000000.bin", 100), ("abc_train_000001.bin", 100), ("abc_train_000002.bin", 50)]
    assert not any(shards.SHARD_RE.match(n) for n in os.listdir(tmp_path))  # temporary names until commit
    w.commit()
    assert sorted(os.listdir(tmp_path)) == ["abc_train_000000.bin", "abc_train_000001.bin", "abc_train_000002.bin"]
    got = np.concatenate([np.fromfile(tmp_path / n, dtype="<u2", offset=1024) for n in sorted(os.listdir(tmp_path))])
    assert got.tolist() == ids.tolist()


def test_a_split_reads_windows_across_shard_boundaries():
    parts = [np.arange(0, 5), np.arange(5, 6), np.arange(6, 20)]
    split = Split(parts + [np.arange(0)])
    assert len(split) == 20
    for start in range(20):
        for n in range(0, 21 - start):
            assert split.read(start, n).tolist() == list(range(start, start + n))
    assert split[3:9].tolist() == list(range(3, 9)) and split[:2].dtype == np.int64
    with pytest.raises(IndexError):
        split.read(15, 6)


def test_batches_are_the_in_memory_dataset_s_batches(tmp_path):
    """The same seeded generator gives the same windows of the same tokens as data.Dataset."""
    ids = np.random.default_rng(1).integers(0, 300, size=5000)
    parts = np.split(ids, [1000, 1001, 3500])
    ds = ShardDataset(Split(parts), Split([ids[:100]]), block_size=16)
    ref = Dataset(np.arange(1), block_size=16)
    ref.train = ids  # the in-memory dataset over the same stream
    a, b = np.random.default_rng(7), np.random.default_rng(7)
    for _ in range(5):
        (x, y), (rx, ry) = ds.get_batch("train", 8, a), ref.get_batch("train", 8, b)
        assert x.dtype == np.int64 and x.shape == (8, 16)
        assert (x == rx).all() and (y == ry).all()
    ds.skip_batch("train", 8, a)
    ref.skip_batch("train", 8, b)
    assert a.bit_generator.state == b.bit_generator.state  # skipping draws what reading draws


# ----------------------------------------------------------------------------- the three layouts

def test_llm_c_s_own_folders_train_with_an_id_tokenizer(tmp_path):
    folder = llmc_folder(tmp_path / "d", np.arange(100) % 50, np.arange(40) % 50)
    ds, tok, name = open_folder(folder, block_size=8, vocab_size=50)
    assert isinstance(tok, IdTokenizer) and tok.vocab_size == 50 and "llm.c" in name
    assert ds.train[:5].tolist() == [0, 1, 2, 3, 4] and len(ds.val) == 40
    assert tokenizer_from_dict(tok.to_dict()).vocab_size == 50  # a checkpoint can keep it
    with pytest.raises(DataError, match=r"x_train_000001.bin: token 40 is id 40, outside the vocabulary of 40 "
                                        r"\(--vocab_size=40\)"):
        open_folder(folder, block_size=8, vocab_size=40)


def test_llm_c_s_unnumbered_names_are_read(tmp_path):
    """llm.c's tinyshakespeare.py writes tiny_shakespeare_train.bin and tiny_shakespeare_val.bin."""
    (tmp_path / "d").mkdir()
    raw_shard(tmp_path / "d" / "tiny_shakespeare_val.bin", [7] * 20)
    raw_shard(tmp_path / "d" / "tiny_shakespeare_train.bin", [8] * 30)
    ds, _, _ = open_folder(tmp_path / "d", block_size=4, vocab_size=50257)
    assert ds.train[:2].tolist() == [8, 8] and len(ds.val) == 20


def test_llm_c_s_uint32_shards_are_read(tmp_path):
    folder = llmc_folder(tmp_path / "d", [70000, 3, 69999] * 10, [1, 2, 3] * 10, magic=20240801, version=7,
                         dtype="<u4")
    ds, tok, _ = open_folder(folder, block_size=4, vocab_size=70001)
    assert ds.train[:3].tolist() == [70000, 3, 69999]


def test_nanogpt_s_headerless_files_and_no_pickle(tmp_path, monkeypatch):
    (tmp_path / "d").mkdir()
    np.arange(200, dtype="<u2").tofile(tmp_path / "d" / "train.bin")
    np.arange(50, dtype="<u2").tofile(tmp_path / "d" / "val.bin")
    (tmp_path / "d" / "meta.pkl").write_bytes(b"not read")

    def refuse(*args, **kwargs):
        raise AssertionError("a pickle was read")
    monkeypatch.setattr(pickle, "load", refuse)
    monkeypatch.setattr(pickle, "loads", refuse)
    ds, tok, name = open_folder(tmp_path / "d", block_size=8, vocab_size=256)
    assert "nanoGPT" in name and ds.val[:3].tolist() == [0, 1, 2] and len(ds.train) == 200


def test_a_prepared_folder_brings_its_tokenizer(tmp_path):
    text = tmp_path / "in.txt"
    text.write_text("hello there, general kenobi\n" * 200, encoding="utf-8")
    prepare(PrepareConfig(out_dir=str(tmp_path / "d"), inputs=(str(text),)), print_fn=lambda *a: None)
    ds, tok, name = open_folder(tmp_path / "d", block_size=8)
    assert isinstance(tok, CharTokenizer) and tok.decode(ds.train[:5]) == "hello"
    assert load_tokenizer(tmp_path / "d").to_dict() == tok.to_dict()
    assert load_tokenizer(tmp_path / "d" / "tokenizer.json").to_dict() == tok.to_dict()
    with pytest.raises(DataError, match="not the one of the checkpoint"):
        open_folder(tmp_path / "d", 8, tokenizer=CharTokenizer.from_text("helo"), tokenizer_source="the checkpoint")


# ----------------------------------------------------------------------------- hostile shards

def hostile(folder, make):
    """make(folder) spoils a good llm.c folder; returns the path the error must name."""
    llmc_folder(folder, np.arange(300) % 60, np.arange(100) % 60)
    return make(folder)


CASES = {
    "magic": (lambda f: raw_shard(f / "x_train_000001.bin", range(300), magic=1234), ["magic is 1234"]),
    "version": (lambda f: raw_shard(f / "x_train_000001.bin", range(300), version=7), ["version is 7"]),
    "size": (lambda f: raw_shard(f / "x_train_000001.bin", range(300), count=301), ["token count says 301"]),
    "huge count": (lambda f: raw_shard(f / "x_val_000000.bin", range(100), count=2 ** 31 - 1),
                   ["token count says 2,147,483,647"]),
    "negative": (lambda f: raw_shard(f / "x_val_000000.bin", range(100), count=-5), ["token count is -5"]),
    "truncated": (lambda f: (f / "x_val_000000.bin").write_bytes((f / "x_val_000000.bin").read_bytes()[:500])
                  and f / "x_val_000000.bin", ["shorter than llm.c's 1024-byte header"]),
    "odd tail": (lambda f: (f / "x_train_000001.bin").open("ab").write(b"\0") and f / "x_train_000001.bin",
                 ["601 bytes after it"]),
    "id": (lambda f: raw_shard(f / "x_train_000001.bin", [5] * 299 + [60]), ["token 299 is id 60"]),
    "no val": (lambda f: (f / "x_val_000000.bin").unlink() or f, ["no val shards"]),
    "a pipe": (lambda f: (f / "x_val_000000.bin").unlink() or os.mkfifo(f / "x_val_000000.bin")
               or f / "x_val_000000.bin", ["not a regular file"]),
}


@pytest.mark.parametrize("case", list(CASES))
def test_a_hostile_shard_is_one_error_line_naming_file_and_field(tmp_path, case, capsys):
    make, words = CASES[case]
    if case == "a pipe" and not hasattr(os, "mkfifo"):
        pytest.skip("no named pipes here")
    target = hostile(tmp_path / "d", make)
    out = tmp_path / "out"
    tracemalloc.start()
    code = cli.main(["train", f"--data={tmp_path / 'd'}", f"--out_dir={out}", "--vocab_size=60", "--n_layer=1",
                     "--n_head=1", "--n_embd=8", "--block_size=8", "--max_iters=1", "--sample_tokens=0",
                     "--progress=False"])
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    err = capsys.readouterr().err.splitlines()
    assert code == 1 and len(err) == 1 and err[0].startswith("error: "), err
    assert str(target) in err[0] and all(w in err[0] for w in words), err[0]
    assert not out.exists() and peak < 20 * 2 ** 20


def prepared(tmp_path, name="d"):
    text = tmp_path / "in.txt"
    text.write_text("to be, or not to be: that is the question\n" * 100, encoding="utf-8")
    prepare(PrepareConfig(out_dir=str(tmp_path / name), inputs=(str(text),)), print_fn=lambda *a: None)
    return tmp_path / name


META_CASES = {
    "not json": (lambda d, m: "{", "meta.json: not a JSON document"),
    "incomplete": (lambda d, m: {**m, "complete": False}, "field 'complete' is not true"),
    "vocab": (lambda d, m: {**m, "vocab_size": "65"}, "field 'vocab_size'"),
    "dtype": (lambda d, m: {**m, "dtype": "uint32"}, "field 'dtype'"),
    "tokenizer path": (lambda d, m: {**m, "tokenizer": "../x.json"}, "field 'tokenizer'"),
    "count": (lambda d, m: {**m, "splits": {**m["splits"], "val": [{**m["splits"]["val"][0], "tokens": 3}]}},
              "meta.json lists 3 tokens"),
    "missing shard": (lambda d, m: {**m, "splits": {**m["splits"], "train": m["splits"]["train"] + [
        {"name": "d_train_000009.bin", "tokens": 4}]}}, "d_train_000009.bin: missing"),
    "no val": (lambda d, m: {**m, "splits": {"train": m["splits"]["train"]}}, "field 'splits.val'"),
    "deep": (lambda d, m: "[" * 100000, "nested too deeply"),
}


@pytest.mark.parametrize("case", list(META_CASES))
def test_a_hostile_meta_json_names_its_field(tmp_path, case):
    folder = prepared(tmp_path)
    meta = json.loads((folder / "meta.json").read_text())
    new, words = META_CASES[case]
    new = new(folder, meta)
    (folder / "meta.json").write_text(new if isinstance(new, str) else json.dumps(new))
    with pytest.raises(DataError, match=None) as info:
        open_folder(folder, 8)
    assert words in str(info.value) and str(folder) in str(info.value), str(info.value)


def test_a_tokenizer_that_does_not_match_the_shards_is_refused(tmp_path):
    folder = prepared(tmp_path)
    tok = json.loads((folder / "tokenizer.json").read_text())
    tok["chars"][0], tok["chars"][1] = tok["chars"][1], tok["chars"][0]  # same size, other ids
    (folder / "tokenizer.json").write_text(json.dumps(tok))
    with pytest.raises(DataError, match="tokenizer.json: its sha256 is not the tokenizer_sha256 in .*meta.json"):
        open_folder(folder, 8)


def test_a_shard_that_meta_json_does_not_list_is_refused(tmp_path):
    folder = prepared(tmp_path)
    write_shard(folder / "d_train_000001.bin", [1, 2, 3], 65)
    with pytest.raises(DataError, match="d_train_000001.bin: a shard that .*meta.json does not list"):
        open_folder(folder, 8)


def test_ids_are_checked_in_bounded_chunks(tmp_path, monkeypatch):
    monkeypatch.setattr(shards, "CHECK_TOKENS", 1000)
    ids = np.zeros(200_000, dtype=np.int64)
    ids[-1] = 9
    write_shard(tmp_path / "s.bin", ids, 65536)
    tracemalloc.start()
    with pytest.raises(DataError, match="token 199,999 is id 9, outside the vocabulary of 9"):
        shards.check_ids(tmp_path / "s.bin", np.dtype("<u2"), ids.size, 1024, 9, "test")
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    assert peak < 100_000  # a 2,000-byte buffer, not the 400 kB of the file


# ----------------------------------------------------------------------------- training from a folder

TINY = ["--n_layer=1", "--n_head=2", "--n_embd=16", "--block_size=16", "--batch_size=4", "--eval_iters=2",
        "--warmup_iters=1", "--sample_tokens=10", "--progress=False"]


def test_train_and_resume_from_a_prepared_folder(tmp_path, capsys):
    folder = prepared(tmp_path)
    out = tmp_path / "out"
    argv = ["train", f"--data={folder}", f"--out_dir={out}", "--eval_interval=2", *TINY]
    assert cli.main([*argv, "--max_iters=4"]) == 0
    printed = capsys.readouterr().out
    vocab = len(set((tmp_path / "in.txt").read_text()))
    assert "(prepared: 1 train and 1 val shard)" in printed and f"vocab {vocab}" in printed
    assert cli.main([*argv, "--max_iters=6", "--init_from=resume"]) == 0
    assert "resuming from" in capsys.readouterr().out
    other = prepared(tmp_path, "e")  # same text, but a folder whose tokenizer differs
    tok = json.loads((other / "tokenizer.json").read_text())
    meta = json.loads((other / "meta.json").read_text())
    tok["chars"].append("~")
    raw = (json.dumps(tok, ensure_ascii=False) + "\n").encode()
    (other / "tokenizer.json").write_bytes(raw)
    meta.update(vocab_size=len(tok["chars"]), tokenizer_sha256=hashlib.sha256(raw).hexdigest())
    (other / "meta.json").write_text(json.dumps(meta))
    code = cli.main(["train", f"--data={other}", f"--out_dir={out}", "--max_iters=8", "--init_from=resume", *TINY])
    err = capsys.readouterr().err
    assert code == 1 and f"{other / 'tokenizer.json'}: the shards' tokenizer" in err and "ckpt.safetensors" in err


def losses(out):
    with open(out / "log.jsonl", encoding="utf-8") as f:
        return {(r["iter"], k): r[k] for r in map(json.loads, f) for k in ("loss", "val_loss") if k in r}


def test_a_resumed_run_from_shards_is_the_uninterrupted_run(tmp_path):
    folder = prepared(tmp_path)
    flags = [f"--data={folder}", "--eval_interval=3", "--lr_decay_iters=6", "--max_iters=6", "--dtype=float64", *TINY]
    assert cli.main(["train", f"--out_dir={tmp_path / 'a'}", *flags]) == 0
    assert cli.main(["train", f"--out_dir={tmp_path / 'b'}", *flags[:-len(TINY)], "--max_iters=3", *TINY]) == 0
    assert cli.main(["train", f"--out_dir={tmp_path / 'b'}", *flags, "--init_from=resume"]) == 0
    a, b = losses(tmp_path / "a"), losses(tmp_path / "b")
    assert a.keys() == b.keys() and all(a[k] == pytest.approx(b[k], rel=1e-12) for k in a), (a, b)


def test_fine_tuning_a_gpt2_folder_on_shards_made_with_its_tokenizer(tmp_path, capsys):
    from test_cli import write_text
    text = write_text(tmp_path / "input.txt")
    model = ["--n_layer=1", "--n_head=2", "--n_embd=16", "--block_size=16", "--max_iters=1", "--eval_interval=1",
             "--eval_iters=1", "--sample_tokens=0", "--progress=False"]
    assert cli.main(["train", f"--data={text}", f"--out_dir={tmp_path / 'bpe'}", "--tokenizer=bpe",
                     "--vocab_size=300", *model]) == 0
    assert cli.main(["export", f"--out_dir={tmp_path / 'bpe'}", f"--hf_dir={tmp_path / 'hf'}"]) == 0
    assert cli.main(["prepare", str(text), f"--out_dir={tmp_path / 'd'}", f"--tokenizer={tmp_path / 'hf'}"]) == 0
    assert cli.main(["train", f"--init_from={tmp_path / 'hf'}", f"--data={tmp_path / 'd'}",
                     f"--out_dir={tmp_path / 'ft'}", *model]) == 0
    assert cli.main(["prepare", str(text), f"--out_dir={tmp_path / 'c'}"]) == 0  # characters: other ids
    capsys.readouterr()
    assert cli.main(["train", f"--init_from={tmp_path / 'hf'}", f"--data={tmp_path / 'c'}",
                     f"--out_dir={tmp_path / 'ft2'}", *model]) == 1
    err = capsys.readouterr().err
    assert f"{tmp_path / 'c' / 'tokenizer.json'}: the shards' tokenizer" in err and str(tmp_path / "hf") in err
    assert not (tmp_path / "ft2").exists()


def test_another_rank_s_micro_batches_are_drawn_but_not_read(tmp_path):
    """A rank reads only its own windows; the batch stream advances as if it read them all."""
    from tinygrad_gpt.run import train as train_mod
    folder = prepared(tmp_path)
    ds, tok, _ = open_folder(folder, 16)
    reads = []
    real = Split.read

    def counting(self, start, n):
        reads.append(start)
        return real(self, start, n)

    class Comm:
        rank, size = 1, 2

    class Sync:
        comm = Comm()

        def arm(self, total):
            self.total = total

        def finish(self):
            return self.total
    from tinygrad_gpt.model import GPT, GPTConfig
    model = GPT(GPTConfig(block_size=16, vocab_size=tok.vocab_size, n_layer=1, n_head=2, n_embd=16))
    opt = model.configure_optimizers(0.1, 1e-3, (0.9, 0.99))
    cfg = train_mod.TrainConfig(batch_size=3, block_size=16, gradient_accumulation_steps=4)
    rng, ref = np.random.default_rng(0), np.random.default_rng(0)
    Split.read = counting
    try:
        train_mod._train_step(model, opt, ds, cfg, 1e-3, rng, sync=Sync())
    finally:
        Split.read = real
    starts = [ds.skip_batch("train", 3, ref) for _ in range(4)]
    assert reads == [int(i) for j in (1, 3) for i in starts[j]]  # micro-batches 1 and 3: this rank's
    assert rng.bit_generator.state == ref.bit_generator.state


@needs_mpi
def test_two_ranks_train_from_shards_exactly_as_one_process(tmp_path):
    folder = prepared(tmp_path)
    ref, two = tmp_path / "ref", tmp_path / "two"
    in_process(flags(folder, ref))
    proc, _ = mpirun(2, flags(folder, two))
    ok(proc)
    assert_same_run(ref, two, rtol=1e-9)


def big_folder(folder, tokens, vocab=4096):
    """A folder of llm.c shards (no tokenizer: ids only), ``tokens`` in all."""
    folder.mkdir(parents=True)
    pattern = np.random.default_rng(0).integers(0, vocab, 1 << 20)
    per = 20_000_000
    for k, start in enumerate(range(0, tokens, per)):
        write_shard(folder / f"big_train_{k:06d}.bin", np.resize(pattern, min(per, tokens - start)), vocab)
    write_shard(folder / "big_val_000000.bin", pattern[:100_000], vocab)
    return folder


def train_peaks(folder, out, ranks=1):
    options = {"data": folder, "out_dir": out, "vocab_size": 4096, "n_layer": 1, "n_head": 2, "n_embd": 16,
               "block_size": 32, "batch_size": 4, "max_iters": 10, "eval_interval": 5, "eval_iters": 2,
               "sample_tokens": 0, "progress": False, "gradient_accumulation_steps": 2}
    if ranks == 1:
        argv = [sys.executable, "-m", "tinygrad_gpt", "train"] + [f"--{k}={v}" for k, v in options.items()]
        env = dict(os.environ, PYTHONPATH=ROOT)
    else:
        argv, env = mpi_command(ranks, options), mpi_env()
    result, peaks = memwatch.run_watched(argv, env=env)
    assert result.returncode == 0, result.stderr[-2000:]
    return sorted(p["anon_mb"] for p in memwatch.top(peaks, sys.executable + " -m tinygrad_gpt train"))


@pytest.fixture(scope="module")
def small_and_large(tmp_path_factory):
    root = tmp_path_factory.mktemp("sizes")
    return big_folder(root / "small", 100_000), big_folder(root / "large", 40_000_000)


@pytest.mark.host_only("it measures a CPU training process's host memory; the CuPy stand-in keeps its "
                       "device arrays in host memory too")
@pytest.mark.skipif(not memwatch.available(), reason="needs Linux /proc")
@pytest.mark.parametrize("ranks", [1, pytest.param(2, marks=needs_mpi)])
def test_training_memory_does_not_grow_with_the_corpus(tmp_path, small_and_large, ranks):
    """80 MB of shards cost no more anonymous memory than 0.2 MB: windows come from memory maps,
    and the ids are checked through a bounded buffer."""
    small, large = (train_peaks(folder, tmp_path / name, ranks) for folder, name in zip(small_and_large, "ab"))
    assert len(small) == len(large) == ranks
    for s, l in zip(small, large):
        assert l < s + 16, (small, large)
