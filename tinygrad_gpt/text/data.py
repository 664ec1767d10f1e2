"""Training text and random batches of tokens.

Two built-in datasets and any local UTF-8 file:

- ``pydoc`` (the default): the English text of Python's reference documentation,
  which ships with every CPython as ``pydoc_data.topics`` (~465 kB, no download).
- ``shakespeare``: tiny Shakespeare (~1.1 MB), downloaded once and cached.
- ``data=PATH``: any UTF-8 text file.

    >>> text, name = load_text("pydoc")
    >>> name, len(text) > 100_000
    ('pydoc', True)

Batches come back as NumPy int64 arrays; the caller moves them to a device.
"""
import hashlib
import http.client
import os
import urllib.error
import urllib.request

import numpy as np

from ..errors import DataError
from ..storage.fileio import file_op, write_atomic

DATASETS = ("pydoc", "shakespeare")
SHAKESPEARE_URL = "https://raw.githubusercontent.com/karpathy/char-rnn/master/data/tinyshakespeare/input.txt"
SHAKESPEARE_SHA256 = "86c4e6aa9db7c042ec79f339dcb96d42b0075e16b8fc2e86bf0ca57e2dc565ed"
SHAKESPEARE_FILE = "tinyshakespeare.txt"


# ----------------------------------------------------------------------------- loading text

def load_text(dataset="pydoc", data=None, cache_dir=None):
    """Return ``(text, name)`` for a built-in dataset, or for the file ``data`` when given.

        >>> load_text("pydoc")[1]
        'pydoc'
        >>> load_text(data="notes.txt")[1]  # doctest: +SKIP
        'notes.txt'
    """
    if data is not None:
        return read_text_file(data), os.path.basename(os.fspath(data))
    if dataset == "pydoc":
        return pydoc_text(), "pydoc"
    if dataset == "shakespeare":
        return shakespeare_text(cache_dir), "shakespeare"
    raise DataError(f"unknown dataset {dataset!r}: expected one of {', '.join(DATASETS)}, "
                    f"or a text file with --data=PATH")


def read_text_file(path):
    """Read a non-empty UTF-8 text file (a leading byte-order mark is dropped).

        >>> read_text_file("input.txt")[:5]  # doctest: +SKIP
        'First'
    """
    path = os.fspath(path)
    if not os.path.exists(path):
        raise DataError(f"data file {path} does not exist")
    if os.path.isdir(path):
        raise DataError(f"data file {path} is a directory, not a text file")
    if not os.path.isfile(path):  # a device or a pipe could be read forever
        raise DataError(f"data file {path} is not a regular file")
    try:
        with open(path, "rb") as f:
            raw = f.read()
    except OSError as e:
        raise DataError(f"cannot read data file {path}: {e.strerror or e}") from None
    if not raw:
        raise DataError(f"data file {path} is empty")
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as e:
        raise DataError(f"data file {path} is not UTF-8 text: invalid byte 0x{raw[e.start]:02x} "
                        f"at byte offset {e.start}") from None
    text = text.removeprefix("\ufeff")
    if not text:
        raise DataError(f"data file {path} holds nothing but a byte-order mark")
    return text


def pydoc_text():
    """Python's reference documentation topics, joined in sorted order by blank lines.

        >>> "assert" in pydoc_text()
        True
    """
    try:
        from pydoc_data.topics import topics
    except ImportError:
        raise DataError("this Python has no pydoc_data module (some distributions strip it); "
                        "use dataset 'shakespeare' or pass a text file with --data=PATH") from None
    return "\n\n".join(topics[key] for key in sorted(topics))


def default_cache_dir():
    """Where downloads are kept: ``$TINYGRAD_GPT_CACHE``, else ``~/.cache/tinygrad_gpt``.

        >>> default_cache_dir().endswith("tinygrad_gpt")  # doctest: +SKIP
        True
    """
    return os.environ.get("TINYGRAD_GPT_CACHE") or os.path.join(os.path.expanduser("~"), ".cache",
                                                                 "tinygrad_gpt")


def shakespeare_text(cache_dir=None):
    """Tiny Shakespeare, from the cache if a verified copy is there, else downloaded once.

        >>> shakespeare_text()[:9]  # doctest: +SKIP
        'First Cit'
    """
    cache_dir = os.fspath(cache_dir) if cache_dir is not None else default_cache_dir()
    path = os.path.join(cache_dir, SHAKESPEARE_FILE)
    if os.path.isfile(path):
        with open(path, "rb") as f:
            raw = f.read()
        if _sha256(raw) == SHAKESPEARE_SHA256:
            return raw.decode("utf-8")
        os.remove(path)  # a damaged or foreign copy: drop it and fetch a fresh one
    raw = _download(SHAKESPEARE_URL, path)
    if _sha256(raw) != SHAKESPEARE_SHA256:
        raise DataError(f"downloaded {SHAKESPEARE_URL} but its sha256 {_sha256(raw)} does not match "
                        f"the expected {SHAKESPEARE_SHA256}; nothing was saved. Pass a trusted "
                        f"copy with --data=PATH")
    with file_op("writing", path):
        os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
        write_atomic(path, [raw])
    return raw.decode("utf-8")


def _sha256(raw):
    return hashlib.sha256(raw).hexdigest()


def _download(url, path):
    """The bytes at ``url``; any network failure becomes a DataError that says what to do."""
    try:
        with urllib.request.urlopen(url, timeout=30) as response:
            return response.read()
    except (urllib.error.URLError, http.client.HTTPException, OSError) as e:
        reason = getattr(e, "reason", None) or e
        raise DataError(f"could not download {url} ({reason}); if you are offline, pass a local "
                        f"copy with --data=PATH or place it at {path}") from None


# ----------------------------------------------------------------------------- batches

def window_starts(split, n, T, batch_size, rng):
    """``batch_size`` random start positions of (T + 1)-token windows in a split of ``n`` tokens,
    as nanoGPT draws them; a split too short, a bad rng or batch size is refused."""
    if n < T + 1:
        raise DataError(f"the {split} split has {n} tokens, too few for block_size {T} "
                        f"(it needs at least {T + 1}); use a smaller block_size or more text")
    if not isinstance(rng, np.random.Generator):
        raise TypeError(f"rng must be a numpy.random.Generator, got {type(rng).__name__}")
    if not isinstance(batch_size, (int, np.integer)) or batch_size < 1:
        raise DataError(f"batch_size must be a positive integer, got {batch_size!r}")
    return rng.integers(0, n - T, size=batch_size)


def split_tokens(ids, train_fraction=0.9):
    """Split a token array into (train, val): the first ``train_fraction`` and the rest.

        >>> train, val = split_tokens(np.arange(10))
        >>> train.tolist(), val.tolist()
        ([0, 1, 2, 3, 4, 5, 6, 7, 8], [9])
    """
    if not 0.0 < train_fraction < 1.0:
        raise ValueError(f"train_fraction must be between 0 and 1, got {train_fraction}")
    n = int(train_fraction * len(ids))  # the same rounding as nanoGPT
    return ids[:n], ids[n:]


class Dataset:
    """Train and val token streams with random (x, y) batches of ``block_size`` tokens.

        >>> ds = Dataset(np.arange(100), block_size=4)
        >>> x, y = ds.get_batch("train", 2, np.random.default_rng(0))
        >>> x.shape, bool((y[:, :-1] == x[:, 1:]).all())
        ((2, 4), True)
    """

    SPLITS = ("train", "val")

    def __init__(self, ids, block_size, train_fraction=0.9):
        ids = np.asarray(ids)
        if ids.ndim != 1 or not np.issubdtype(ids.dtype, np.integer):
            raise DataError(f"token ids must be a 1-D integer array, got shape {ids.shape} of {ids.dtype}")
        if not isinstance(block_size, (int, np.integer)) or block_size < 1:
            raise DataError(f"block_size must be a positive integer, got {block_size!r}")
        self.block_size = int(block_size)
        self.train, self.val = split_tokens(ids, train_fraction)

    def split(self, name):
        """The token array of split ``name`` ("train" or "val")."""
        if name not in self.SPLITS:
            raise DataError(f"unknown split {name!r}: expected 'train' or 'val'")
        return self.train if name == "train" else self.val

    def skip_batch(self, split, batch_size, rng):
        """Draw a batch's window starts as ``get_batch`` does, and read nothing (another rank's batch)."""
        return window_starts(split, len(self.split(split)), self.block_size, batch_size, rng)

    def get_batch(self, split, batch_size, rng):
        """Sample ``batch_size`` windows uniformly; return int64 arrays x, y of shape (B, T).

        ``y`` is ``x`` shifted left by one token: the targets for next-token prediction.
        The same seeded ``numpy.random.Generator`` gives the same batches.
        """
        data, T = self.split(split), self.block_size
        ix = window_starts(split, len(data), T, batch_size, rng)
        idx = ix[:, None] + np.arange(T)                        # (B, T)
        x = data[idx].astype(np.int64)
        y = data[idx + 1].astype(np.int64)
        return x, y

    def __repr__(self):
        return f"Dataset(train={len(self.train)}, val={len(self.val)}, block_size={self.block_size})"
