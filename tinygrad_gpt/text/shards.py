"""Token shards on disk in llm.c's format, and training windows read through memory maps.

A shard is a header of 256 little-endian int32, then the tokens:

    header[0]  magic        20240520 (uint16 tokens) or 20240801 (uint32 tokens, vocabularies over 65,536)
    header[1]  version      1 with magic 20240520, 7 with magic 20240801
    header[2]  token count  n
    then n tokens, little-endian

A folder made by ``prepare`` holds ``NAME_train_000000.bin, ...`` and ``NAME_val_000000.bin, ...``,
the tokenizer (``tokenizer.json``) and ``meta.json``. ``open_folder`` also reads llm.c's own shard
folders, and nanoGPT's headerless uint16 ``train.bin``/``val.bin`` when told the vocabulary size
(nanoGPT's ``meta.pkl`` is a pickle, and is never read). Every file is checked before use: the
header against the file's size, and every id against the vocabulary, streamed in chunks.

Training draws random windows from memory maps, as nanoGPT does: the pages belong to the files,
so a corpus of any size adds no anonymous memory to the process.

    >>> write_shard("d/x_train_000000.bin", np.arange(10), vocab_size=65)   # doctest: +SKIP
    >>> read_header("d/x_train_000000.bin")                                  # doctest: +SKIP
    (dtype('uint16'), 10)
"""
import mmap
import os
import re
import stat

import numpy as np

from ..errors import DataError
from ..storage.fileio import file_op, fsync_dir, write_atomic
from .data import window_starts

HEADER_INTS, HEADER_BYTES = 256, 1024
MAGICS = {20240520: (1, np.dtype("<u2")), 20240801: (7, np.dtype("<u4"))}  # magic -> (version, token type)
META_NAME, TOKENIZER_NAME, META_FORMAT = "meta.json", "tokenizer.json", "tinygrad_gpt shards"
SHARD_RE = re.compile(r"^(?P<prefix>.+)_(?P<split>train|val)(?:_(?P<n>\d{6}))?\.bin$")  # llm.c: _NNNNNN optional
SPLITS = ("train", "val")
MAX_SHARD_TOKENS = 2 ** 31 - 1   # the header's int32 count
CHECK_TOKENS = 1 << 22           # tokens per read when checking ids: a bounded buffer, whatever the file
MAX_SMALL_FILE = 256 * 2 ** 20   # meta.json and tokenizer.json are read whole; larger ones are refused


def token_dtype(vocab_size):
    """uint16 when every id fits (vocabularies up to 65,536), else uint32 (llm.c's version 7).

        >>> token_dtype(50257), token_dtype(128256)
        (dtype('uint16'), dtype('uint32'))
    """
    return np.dtype("<u2") if vocab_size <= 1 << 16 else np.dtype("<u4")


def shard_header(count, dtype):
    """The 1,024 header bytes of a shard of ``count`` tokens of ``dtype``."""
    magic = 20240520 if np.dtype(dtype).itemsize == 2 else 20240801
    header = np.zeros(HEADER_INTS, dtype="<i4")
    header[:3] = magic, MAGICS[magic][0], count
    return header.tobytes()


def write_shard(path, ids, vocab_size):
    """Write ``ids`` as one shard at ``path``, atomically (llm.c's ``write_datafile``)."""
    dtype = token_dtype(vocab_size)
    ids = np.asarray(ids)
    if ids.size > MAX_SHARD_TOKENS or (ids.size and (ids.min() < 0 or ids.max() >= vocab_size)):
        raise ValueError(f"write_shard: ids must be in [0, {vocab_size}) and at most {MAX_SHARD_TOKENS} of them")
    with file_op("writing", path):
        write_atomic(path, [shard_header(ids.size, dtype), ids.astype(dtype).tobytes()])


class ShardWriter:
    """One split's tokens, written as shards of ``shard_tokens`` tokens named PREFIX_SPLIT_NNNNNN.bin.

    Every shard is written under a temporary name (``.NAME.tmp``) and fsynced; ``commit()``
    renames them all at the end, so a killed run leaves no shard under a final name.
    ``shards`` lists (name, tokens) of those complete.
    """

    def __init__(self, folder, prefix, split, dtype, shard_tokens):
        self.folder, self.prefix, self.split = os.fspath(folder), prefix, split
        self.dtype, self.shard_tokens = np.dtype(dtype), int(shard_tokens)
        self.shards, self.tokens = [], 0
        self._f = None
        self._n = 0

    def write(self, ids):
        """Append ``ids`` (already checked to fit the token type), starting new shards as needed."""
        ids = np.ascontiguousarray(ids, dtype=self.dtype)
        while ids.size:
            if self._f is None:
                self._open()
            take = min(ids.size, self.shard_tokens - self._n)
            with file_op("writing", self._tmp(len(self.shards))):
                self._f.write(memoryview(ids[:take]).cast("B"))
            self._n, self.tokens, ids = self._n + take, self.tokens + take, ids[take:]
            if self._n == self.shard_tokens:
                self._finish()

    def close(self):
        """Finish the last shard; returns ``shards``."""
        if self._f is not None:
            self._finish()
        return self.shards

    def commit(self):
        """Give every complete shard its final name."""
        for k, (name, _) in enumerate(self.shards):
            with file_op("renaming", self._tmp(k)):
                os.replace(self._tmp(k), os.path.join(self.folder, name))
        fsync_dir(self.folder)

    def abort(self):
        """Drop the shard in progress."""
        if self._f is not None:
            self._f.close()
            os.remove(self._tmp(len(self.shards)))
            self._f = None

    def _name(self, k):
        return f"{self.prefix}_{self.split}_{k:06d}.bin"

    def _tmp(self, k):
        return os.path.join(self.folder, f".{self._name(k)}.tmp")

    def _open(self):
        with file_op("writing", self._tmp(len(self.shards))):
            self._f = open(self._tmp(len(self.shards)), "wb")
            self._f.write(shard_header(0, self.dtype))  # the count goes in when the shard is complete
        self._n = 0

    def _finish(self):
        with file_op("writing", self._tmp(len(self.shards))):
            self._f.seek(0)
            self._f.write(shard_header(self._n, self.dtype))
            self._f.flush()
            os.fsync(self._f.fileno())
            self._f.close()
        self._f = None
        self.shards.append((self._name(len(self.shards)), self._n))


# ----------------------------------------------------------------------------- reading one file

def _regular_size(path):
    """The size of ``path``, which must be a regular file (a pipe or a device could be read for ever)."""
    with file_op("reading", path):
        st = os.stat(path)
    if not stat.S_ISREG(st.st_mode):
        raise DataError(f"{path}: not a regular file")
    return st.st_size


def read_header(path):
    """(token dtype, token count) of an llm.c shard, the header checked against the file's size.

    Nothing is allocated from the header's count: a count that disagrees with the size is refused.
    """
    size = _regular_size(path)
    if size < HEADER_BYTES:
        raise DataError(f"{path}: the file is {size} bytes, shorter than llm.c's {HEADER_BYTES}-byte header "
                        f"(a truncated shard?)")
    with file_op("reading", path), open(path, "rb") as f:
        head = np.frombuffer(f.read(HEADER_BYTES), dtype="<i4")
    if head.size != HEADER_INTS:
        raise DataError(f"{path}: the header could not be read whole (the file changed while reading?)")
    magic, version, count = (int(v) for v in head[:3])
    if magic not in MAGICS:
        raise DataError(f"{path}: header field magic is {magic}, expected 20240520 (uint16 tokens) or "
                        f"20240801 (uint32 tokens), as llm.c writes")
    want, dtype = MAGICS[magic]
    if version != want:
        raise DataError(f"{path}: header field version is {version}; magic {magic} goes with version {want}")
    if count < 0:
        raise DataError(f"{path}: header field token count is {count}, a negative number")
    body = size - HEADER_BYTES
    if body != count * dtype.itemsize:
        raise DataError(f"{path}: header field token count says {count:,} tokens ({count * dtype.itemsize:,} "
                        f"bytes after the header) but the file holds {body:,} bytes after it"
                        + (" (truncated?)" if body < count * dtype.itemsize else ""))
    return dtype, count


def map_tokens(path, dtype, count, offset):
    """A read-only array of ``count`` tokens at byte ``offset`` of ``path``, backed by a memory map."""
    if count == 0:
        return np.empty(0, dtype=dtype)
    with file_op("reading", path), open(path, "rb") as f:
        mm = mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ)
    if hasattr(mm, "madvise") and hasattr(mmap, "MADV_RANDOM"):
        mm.madvise(mmap.MADV_RANDOM)  # windows are read at random places: no read-ahead
    if len(mm) != offset + count * dtype.itemsize:
        raise DataError(f"{path}: the file changed size while being opened")
    return np.frombuffer(mm, dtype=dtype, count=count, offset=offset)


def check_ids(path, dtype, count, offset, vocab_size, vocab_source):
    """Refuse the first id >= ``vocab_size``, reading the file in chunks into one bounded buffer."""
    if count == 0 or vocab_size >= 1 << (8 * dtype.itemsize):
        return
    buf = np.empty(min(count, CHECK_TOKENS), dtype=dtype)
    done = 0
    with file_op("reading", path), open(path, "rb") as f:
        f.seek(offset)
        while done < count:
            chunk = buf[:min(count - done, buf.size)]
            if f.readinto(chunk.view(np.uint8)) != chunk.nbytes:
                raise DataError(f"{path}: the file ended early (it changed while being read)")
            if int(chunk.max()) >= vocab_size:
                i = int(np.argmax(chunk >= vocab_size))
                raise DataError(f"{path}: token {done + i:,} is id {int(chunk[i])}, outside the vocabulary of "
                                f"{vocab_size} ({vocab_source})")
            done += chunk.size


# ----------------------------------------------------------------------------- windows

class Split:
    """One split's tokens: its shards' memory maps, read as one stream of ``len(split)`` tokens."""

    def __init__(self, arrays, files=()):
        self.arrays = [a for a in arrays if len(a)]
        self.files = list(files)
        self.ends = np.cumsum([len(a) for a in self.arrays], dtype=np.int64)

    def __len__(self):
        return int(self.ends[-1]) if len(self.ends) else 0

    def read(self, start, n):
        """Tokens ``start`` .. ``start + n - 1`` as int64 (a window may span two shards)."""
        if not 0 <= start <= start + n <= len(self):
            raise IndexError(f"tokens {start}..{start + n} are outside the split's {len(self)}")
        out = np.empty(n, dtype=np.int64)
        k, done = int(np.searchsorted(self.ends, start, side="right")), 0
        while done < n:
            a = self.arrays[k]
            lo = start + done - int(self.ends[k] - len(a))
            piece = a[lo:lo + n - done]
            out[done:done + len(piece)] = piece
            done, k = done + len(piece), k + 1
        return out

    def __getitem__(self, key):
        """``split[a:b]``: those tokens as an int64 array."""
        if not isinstance(key, slice):
            raise TypeError("a Split is read in slices: split[a:b]")
        start, stop, step = key.indices(len(self))
        if step != 1:
            raise ValueError("a Split is read in slices of step 1")
        return self.read(start, max(0, stop - start))


class ShardDataset:
    """Train and val token streams on disk, with random (x, y) batches of ``block_size`` tokens.

    ``get_batch`` draws its windows exactly as ``data.Dataset`` does (one ``rng.integers`` call),
    so the same seeded generator gives the same windows of the same tokens.
    """

    SPLITS = SPLITS

    def __init__(self, train, val, block_size, name="shards"):
        self.train, self.val, self.block_size, self.name = train, val, int(block_size), name

    def split(self, name):
        """The tokens of split ``name`` ("train" or "val")."""
        if name not in self.SPLITS:
            raise DataError(f"unknown split {name!r}: expected 'train' or 'val'")
        return self.train if name == "train" else self.val

    def skip_batch(self, split, batch_size, rng):
        """Draw a batch's window starts and read nothing (another MPI rank reads that batch);
        returns the starts."""
        return window_starts(split, len(self.split(split)), self.block_size, batch_size, rng)

    def get_batch(self, split, batch_size, rng):
        """``batch_size`` random windows: int64 x, y of shape (B, T), y being x shifted by one."""
        ix = self.skip_batch(split, batch_size, rng)
        data, T = self.split(split), self.block_size
        rows = np.stack([data.read(int(i), T + 1) for i in ix])  # (B, T + 1)
        return np.ascontiguousarray(rows[:, :-1]), np.ascontiguousarray(rows[:, 1:])

    def __repr__(self):
        return f"ShardDataset(train={len(self.train)}, val={len(self.val)}, block_size={self.block_size})"
