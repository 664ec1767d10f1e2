import hashlib
import io
import os
import urllib.error
import urllib.request

import numpy as np
import pytest

from tinygrad_gpt.text import data
from tinygrad_gpt.text.data import DataError, Dataset, load_text, split_tokens
from tinygrad_gpt.tokenizer import CharTokenizer


def _real_shakespeare():
    """A local copy of tiny Shakespeare: $TINYGRAD_GPT_SHAKESPEARE, else the download cache, else None."""
    for path in (os.environ.get("TINYGRAD_GPT_SHAKESPEARE"),
                 os.path.join(data.default_cache_dir(), data.SHAKESPEARE_FILE)):
        if path and os.path.isfile(path):
            return path
    return None


# ----------------------------------------------------------------------------- load_text

def test_pydoc_is_the_default():
    from pydoc_data.topics import topics
    text, name = load_text()
    assert name == "pydoc"
    assert text == "\n\n".join(topics[k] for k in sorted(topics))
    assert len(text) > 100_000 and "assert" in text


def test_local_file(tmp_path):
    path = tmp_path / "notes.txt"
    path.write_bytes("\ufeffhello wörld\n".encode("utf-8"))
    text, name = load_text(data=path)
    assert text == "hello wörld\n" and name == "notes.txt"


def test_local_file_errors(tmp_path):
    with pytest.raises(DataError, match="missing.txt.*does not exist"):
        load_text(data=tmp_path / "missing.txt")
    with pytest.raises(DataError, match="directory"):
        load_text(data=tmp_path)
    empty = tmp_path / "empty.txt"
    empty.write_bytes(b"")
    with pytest.raises(DataError, match="empty.txt is empty"):
        load_text(data=empty)
    latin = tmp_path / "latin.txt"
    latin.write_bytes("abc café".encode("latin-1"))
    with pytest.raises(DataError, match=r"latin.txt is not UTF-8.*0xe9 at byte offset 7"):
        load_text(data=latin)
    assert issubclass(DataError, ValueError)


def test_unknown_dataset():
    with pytest.raises(DataError, match="unknown dataset 'wiki'.*--data=PATH"):
        load_text("wiki")


# ----------------------------------------------------------------------------- shakespeare download

class _Response(io.BytesIO):
    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False


@pytest.fixture
def fake_shakespeare(monkeypatch):
    """Pretend the expected hash is that of a small fake file, and serve it through urlopen."""
    raw = "First Citizen:\nBefore we proceed any further, hear me speak.\n".encode("utf-8")
    monkeypatch.setattr(data, "SHAKESPEARE_SHA256", hashlib.sha256(raw).hexdigest())
    calls = []

    def urlopen(url, timeout=None):
        calls.append(url)
        return _Response(raw)
    monkeypatch.setattr(urllib.request, "urlopen", urlopen)
    return raw, calls


def test_download_once_then_cache(tmp_path, fake_shakespeare):
    raw, calls = fake_shakespeare
    text, name = load_text("shakespeare", cache_dir=tmp_path)
    assert name == "shakespeare" and text == raw.decode()
    assert calls == [data.SHAKESPEARE_URL]
    assert (tmp_path / data.SHAKESPEARE_FILE).read_bytes() == raw
    assert sorted(os.listdir(tmp_path)) == [data.SHAKESPEARE_FILE]  # no temp files left
    text2, _ = load_text("shakespeare", cache_dir=tmp_path)
    assert text2 == text and len(calls) == 1  # served from the cache


def test_cache_dir_from_env(tmp_path, monkeypatch, fake_shakespeare):
    monkeypatch.setenv("TINYGRAD_GPT_CACHE", str(tmp_path / "cache"))
    load_text("shakespeare")
    assert (tmp_path / "cache" / data.SHAKESPEARE_FILE).exists()


def test_bad_cached_copy_is_replaced(tmp_path, fake_shakespeare):
    raw, calls = fake_shakespeare
    (tmp_path / data.SHAKESPEARE_FILE).write_bytes(b"tampered")
    text, _ = load_text("shakespeare", cache_dir=tmp_path)
    assert text == raw.decode() and len(calls) == 1
    assert (tmp_path / data.SHAKESPEARE_FILE).read_bytes() == raw


def test_hash_mismatch_is_an_error(tmp_path, monkeypatch, fake_shakespeare):
    monkeypatch.setattr(data, "SHAKESPEARE_SHA256", "0" * 64)
    with pytest.raises(DataError, match="sha256"):
        load_text("shakespeare", cache_dir=tmp_path)
    assert os.listdir(tmp_path) == []  # nothing bad kept


def test_offline_error_says_how_to_pass_a_file(tmp_path, monkeypatch):
    def urlopen(url, timeout=None):
        raise urllib.error.URLError("no network")
    monkeypatch.setattr(urllib.request, "urlopen", urlopen)
    with pytest.raises(DataError, match=r"no network.*--data=PATH") as e:
        load_text("shakespeare", cache_dir=tmp_path)
    assert "\n" not in str(e.value)
    assert not (tmp_path / data.SHAKESPEARE_FILE).exists()


def test_real_file_if_present(tmp_path):
    path = _real_shakespeare()
    if path is None:
        pytest.skip("no local copy of tiny Shakespeare (set TINYGRAD_GPT_SHAKESPEARE to use one)")
    with open(path, "rb") as f:
        raw = f.read()
    assert hashlib.sha256(raw).hexdigest() == data.SHAKESPEARE_SHA256
    (tmp_path / data.SHAKESPEARE_FILE).write_bytes(raw)  # a verified cached copy needs no network
    text, _ = load_text("shakespeare", cache_dir=tmp_path)
    tok = CharTokenizer.from_text(text)
    assert tok.vocab_size == 65 and len(text) == 1_115_394
    ds = Dataset(tok.encode_array(text), block_size=8)
    assert (len(ds.train), len(ds.val)) == (1_003_854, 111_540)  # nanoGPT's split


# ----------------------------------------------------------------------------- batches

def test_split_tokens():
    train, val = split_tokens(np.arange(100))
    assert train.tolist() == list(range(90)) and val.tolist() == list(range(90, 100))
    with pytest.raises(ValueError):
        split_tokens(np.arange(10), 1.0)


def test_get_batch_shapes_and_shift():
    ids = np.arange(1000, dtype=np.uint16)
    ds = Dataset(ids, block_size=16)
    x, y = ds.get_batch("train", 8, np.random.default_rng(0))
    assert x.shape == y.shape == (8, 16) and x.dtype == y.dtype == np.int64
    assert np.array_equal(y, x + 1)  # ids are consecutive, so targets are inputs plus one
    assert x.max() < 900 and y.max() <= 899  # train windows stay inside the train split
    xv, yv = ds.get_batch("val", 4, np.random.default_rng(0))
    assert xv.min() >= 900 and yv.max() <= 999


def test_seeded_batches_reproduce():
    ds = Dataset(np.random.default_rng(1).integers(0, 50, 5000), block_size=8)
    a = ds.get_batch("train", 4, np.random.default_rng(42))
    b = ds.get_batch("train", 4, np.random.default_rng(42))
    c = ds.get_batch("train", 4, np.random.default_rng(43))
    assert np.array_equal(a[0], b[0]) and np.array_equal(a[1], b[1])
    assert not np.array_equal(a[0], c[0])


def test_positions_are_uniform_and_reach_both_ends():
    T = 4
    ds = Dataset(np.arange(110), block_size=T)  # train = 99 tokens -> starts 0..94
    x, _ = ds.get_batch("train", 20_000, np.random.default_rng(0))
    starts = x[:, 0]
    assert starts.min() == 0 and starts.max() == 99 - T - 1
    counts = np.bincount(starts, minlength=99 - T)
    assert counts.min() > 0.6 * counts.mean() and counts.max() < 1.4 * counts.mean()


def test_short_split_error_names_split_length_and_block_size():
    ds = Dataset(np.arange(100), block_size=10)  # val has 10 tokens, needs 11
    ds.get_batch("train", 2, np.random.default_rng(0))
    with pytest.raises(DataError, match=r"val split has 10 tokens.*block_size 10"):
        ds.get_batch("val", 2, np.random.default_rng(0))


def test_bad_arguments():
    with pytest.raises(DataError, match="1-D integer"):
        Dataset(np.zeros((2, 3), dtype=np.int64), block_size=2)
    with pytest.raises(DataError, match="block_size"):
        Dataset(np.arange(10), block_size=0)
    ds = Dataset(np.arange(100), block_size=4)
    with pytest.raises(DataError, match="unknown split 'test'"):
        ds.get_batch("test", 2, np.random.default_rng(0))
    with pytest.raises(TypeError, match="Generator"):
        ds.get_batch("train", 2, 0)
