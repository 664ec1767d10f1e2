"""A folder of shards, as ``train --data=DIR`` reads it: which files, which tokenizer, checked.

Three layouts are read:

- made by ``prepare``: ``meta.json`` lists every shard and its token count and names the
  tokenizer file with its sha256; the shards are llm.c's;
- llm.c's own: ``*_train_NNNNNN.bin`` and ``*_val_NNNNNN.bin``, or ``*_train.bin`` and
  ``*_val.bin`` (a GPT-2 ``vocab.json`` and ``merges.txt`` beside them are its tokenizer);
- nanoGPT's: headerless uint16 ``train.bin`` and ``val.bin``.

A folder without a tokenizer trains with ``IdTokenizer(--vocab_size)``: ids written as numbers.

    >>> ds, tok, name = open_folder("data/shakespeare", block_size=64)   # doctest: +SKIP
    >>> x, y = ds.get_batch("train", 4, np.random.default_rng(0))         # doctest: +SKIP
"""
import hashlib
import json
import os

import numpy as np

from ..errors import DataError
from ..storage.fileio import file_op
from .shards import (MAX_SHARD_TOKENS, MAX_SMALL_FILE, META_FORMAT, META_NAME, SHARD_RE, SPLITS,
                     TOKENIZER_NAME, ShardDataset, Split, _regular_size, check_ids, map_tokens, read_header,
                     token_dtype)

NANOGPT_FILES = {"train": "train.bin", "val": "val.bin"}


class IdTokenizer:
    """The tokenizer of shards that came without one: each id written as a number, spaces between.

        >>> tok = IdTokenizer(100)
        >>> tok.encode("5 7"), tok.decode([5, 7])
        ([5, 7], '5 7')
    """

    chars, stoi = ["0"], {}  # the training loop starts its closing sample from chars[0]

    def __init__(self, vocab_size):
        if not isinstance(vocab_size, (int, np.integer)) or isinstance(vocab_size, bool) or not \
                0 < vocab_size <= 2 ** 32:
            raise ValueError(f"an id tokenizer needs a vocabulary size in [1, 2**32], got {vocab_size!r}")
        self.vocab_size = int(vocab_size)

    def encode(self, text):
        try:
            ids = [int(word) for word in text.split()]
        except ValueError:
            raise ValueError(f"this data has no tokenizer: text must be ids written as numbers, "
                             f"got {text[:40]!r}") from None
        bad = [i for i in ids if not 0 <= i < self.vocab_size]
        if bad:
            raise ValueError(f"id {bad[0]} is outside the vocabulary of {self.vocab_size}")
        return ids

    def encode_array(self, text):
        return np.asarray(self.encode(text), dtype=np.int64)

    def decode(self, ids):
        return " ".join(str(int(i)) for i in np.asarray(ids).reshape(-1))

    def to_dict(self):
        return {"type": "ids", "vocab_size": self.vocab_size}

    @classmethod
    def from_dict(cls, d):
        if not isinstance(d, dict) or d.get("type") != "ids":
            raise ValueError(f"not an id tokenizer description: {str(d)[:80]}")
        return cls(d.get("vocab_size"))

    def __repr__(self):
        return f"IdTokenizer(vocab_size={self.vocab_size})"


# ----------------------------------------------------------------------------- small JSON files

def read_small(path):
    """The bytes of a small file (meta.json, a tokenizer), refusing one too large to be such."""
    if _regular_size(path) > MAX_SMALL_FILE:
        raise DataError(f"{path}: larger than {MAX_SMALL_FILE >> 20} MiB, too large for this kind of file")
    with file_op("reading", path), open(path, "rb") as f:
        return f.read(MAX_SMALL_FILE + 1)


def read_json(path):
    try:
        return json.loads(read_small(path).decode("utf-8"))
    except (ValueError, RecursionError) as e:  # bad UTF-8 or JSON, 5000-digit numbers, deep nesting
        problem = "nested too deeply" if isinstance(e, RecursionError) else str(e)[:80]
        raise DataError(f"{path}: not a JSON document ({problem})") from None


def read_tokenizer_file(path, raw=None):
    """A tokenizer saved as JSON (``to_dict()``: char, bpe or ids); returns (tokenizer, its bytes)."""
    from ..tokenizer import tokenizer_from_dict
    raw = read_small(path) if raw is None else raw
    try:
        return tokenizer_from_dict(json.loads(raw.decode("utf-8"))), raw
    except (ValueError, TypeError, KeyError, RecursionError) as e:
        raise DataError(f"{path}: not a tokenizer file ({str(e)[:100]})") from None


def load_tokenizer(path):
    """The tokenizer of a prepared folder, a saved tokenizer file, or a GPT-2 folder
    (``vocab.json`` and ``merges.txt``)."""
    from .bpe import BPETokenizer
    path = os.fspath(path)
    if not os.path.exists(path):
        raise DataError(f"{path}: no such tokenizer file or folder")
    if not os.path.isdir(path):
        return read_tokenizer_file(path)[0]
    if os.path.isfile(os.path.join(path, META_NAME)):
        return _meta_tokenizer(path, read_meta(path))[0]
    if all(os.path.isfile(os.path.join(path, n)) for n in ("vocab.json", "merges.txt")):
        try:
            return BPETokenizer.load(path)
        except ValueError as e:  # the message names the file at fault
            raise DataError(str(e)) from None
    if os.path.isfile(os.path.join(path, TOKENIZER_NAME)):
        return read_tokenizer_file(os.path.join(path, TOKENIZER_NAME))[0]
    raise DataError(f"{path}: no tokenizer there (a prepared folder's meta.json, GPT-2's vocab.json and "
                    f"merges.txt, or {TOKENIZER_NAME})")


# ----------------------------------------------------------------------------- meta.json

def _is_int(v, lo, hi):
    return isinstance(v, int) and not isinstance(v, bool) and lo <= v <= hi


def read_meta(folder):
    """meta.json of a prepared folder, every field this module uses checked; DataError names the field."""
    path = os.path.join(folder, META_NAME)
    meta = read_json(path)

    def bad(field, want):
        shown = str(meta.get(field) if isinstance(meta, dict) else meta)[:60]
        return DataError(f"{path}: field {field!r} must be {want}, got {shown}")

    if not isinstance(meta, dict) or meta.get("format") != META_FORMAT:
        raise bad("format", repr(META_FORMAT))
    if meta.get("complete") is not True:
        raise DataError(f"{path}: field 'complete' is not true: prepare did not finish here; run it again")
    if not _is_int(meta.get("vocab_size"), 1, 2 ** 32):
        raise bad("vocab_size", "an integer in [1, 2**32]")
    if meta.get("dtype") != token_dtype(meta["vocab_size"]).name:
        raise bad("dtype", f"{token_dtype(meta['vocab_size']).name!r} for vocab_size {meta['vocab_size']}")
    name = meta.get("tokenizer")
    if not isinstance(name, str) or not name or name != os.path.basename(name) or name in (".", ".."):
        raise bad("tokenizer", "a file name in the folder")
    sha = meta.get("tokenizer_sha256")
    if not (isinstance(sha, str) and len(sha) == 64 and all(c in "0123456789abcdef" for c in sha)):
        raise bad("tokenizer_sha256", "64 hexadecimal digits")
    splits = meta.get("splits")
    if not isinstance(splits, dict):
        raise bad("splits", "an object with train and val")
    for split in SPLITS:
        shards = splits.get(split)
        if not isinstance(shards, list) or not shards:
            raise DataError(f"{path}: field 'splits.{split}' must be a non-empty list of shards")
        for i, entry in enumerate(shards):
            where = f"{path}: field 'splits.{split}[{i}]'"
            if not isinstance(entry, dict) or not _is_int(entry.get("tokens"), 0, MAX_SHARD_TOKENS):
                raise DataError(f"{where} must be {{'name': ..., 'tokens': an integer in [0, 2**31)}}")
            m = SHARD_RE.match(entry.get("name")) if isinstance(entry.get("name"), str) else None
            if m is None or m["split"] != split or "/" in entry["name"] or os.sep in entry["name"]:
                raise DataError(f"{where}: 'name' must be a {split} shard's file name (NAME_{split}_NNNNNN.bin)")
    return meta


def _meta_tokenizer(folder, meta):
    """The tokenizer meta.json names, whose bytes must have the sha256 meta.json records."""
    path, meta_path = os.path.join(folder, meta["tokenizer"]), os.path.join(folder, META_NAME)
    if not os.path.exists(path):
        raise DataError(f"{path}: missing; {meta_path} names it as the shards' tokenizer")
    raw = read_small(path)
    if hashlib.sha256(raw).hexdigest() != meta["tokenizer_sha256"]:
        raise DataError(f"{path}: its sha256 is not the tokenizer_sha256 in {meta_path}: it is not the "
                        f"tokenizer the shards were made with")
    tokenizer = read_tokenizer_file(path, raw)[0]
    if tokenizer.vocab_size != meta["vocab_size"]:
        raise DataError(f"{path}: {tokenizer.vocab_size} tokens, but {meta_path} says vocab_size={meta['vocab_size']}")
    return tokenizer, path


# ----------------------------------------------------------------------------- finding the shards

def _listing(folder):
    with file_op("listing", folder):
        return sorted(os.listdir(folder))


def _prepared_files(folder, meta, names):
    """{split: [(path, dtype, count, offset)]} from meta.json, each header matching its entry."""
    listed = {entry["name"] for split in SPLITS for entry in meta["splits"][split]}
    meta_path = os.path.join(folder, META_NAME)
    stray = [n for n in names if SHARD_RE.match(n) and n not in listed]
    if stray:
        raise DataError(f"{os.path.join(folder, stray[0])}: a shard that {meta_path} does not list (was the "
                        f"folder prepared twice?)")
    files = {}
    for split in SPLITS:
        files[split] = []
        for entry in meta["splits"][split]:
            path = os.path.join(folder, entry["name"])
            if not os.path.lexists(path):
                raise DataError(f"{path}: missing; {os.path.join(folder, META_NAME)} lists it")
            dtype, count = read_header(path)
            if dtype.name != meta["dtype"]:
                raise DataError(f"{path}: header field magic says {dtype.name} tokens, but {meta_path} says "
                                f"{meta['dtype']}")
            if count != entry["tokens"]:
                raise DataError(f"{path}: header field token count is {count:,} but {meta_path} lists "
                                f"{entry['tokens']:,} tokens for it")
            files[split].append((path, dtype, count, 1024))
    return files


def _llmc_files(folder, names):
    """{split: [...]} of llm.c's shards, in the order of their numbers."""
    found = {split: sorted((m["n"] or "", m["prefix"], n) for n in names if (m := SHARD_RE.match(n)) and
                           m["split"] == split) for split in SPLITS}
    for split in SPLITS:
        if not found[split]:
            raise DataError(f"{folder}: no {split} shards there (NAME_{split}_NNNNNN.bin or NAME_{split}.bin, "
                            f"as llm.c names them)")
    return {split: [(p, *read_header(p), 1024) for p in (os.path.join(folder, n) for *_, n in found[split])]
            for split in SPLITS}


def _nanogpt_files(folder):
    """{split: [...]} of nanoGPT's headerless uint16 train.bin and val.bin."""
    files = {}
    for split, name in NANOGPT_FILES.items():
        path = os.path.join(folder, name)
        if not os.path.lexists(path):
            raise DataError(f"{path}: missing (nanoGPT's layout has train.bin and val.bin)")
        size = _regular_size(path)
        if size % 2:
            raise DataError(f"{path}: {size:,} bytes, an odd number: not nanoGPT's uint16 tokens")
        files[split] = [(path, np.dtype("<u2"), size // 2, 0)]
    return files


def find_files(folder):
    """(layout, {split: [(path, dtype, count, offset)]}, meta or None) of a folder of shards."""
    names = _listing(folder)
    if META_NAME in names:
        meta = read_meta(folder)
        return "prepared", _prepared_files(folder, meta, names), meta
    if any(SHARD_RE.match(n) for n in names):
        return "llm.c", _llmc_files(folder, names), None
    if any(n in names for n in NANOGPT_FILES.values()):
        return "nanoGPT", _nanogpt_files(folder), None
    raise DataError(f"{folder}: no shards there: expected a folder made by `prepare` (meta.json), llm.c's "
                    f"NAME_train_NNNNNN.bin and NAME_val_NNNNNN.bin, or nanoGPT's train.bin and val.bin")


def folder_tokenizer(folder, meta):
    """(tokenizer, its path) that came with the shards, or (None, None)."""
    from .bpe import BPETokenizer
    if meta is not None:
        return _meta_tokenizer(folder, meta)
    vocab, merges = os.path.join(folder, "vocab.json"), os.path.join(folder, "merges.txt")
    if os.path.isfile(vocab) and os.path.isfile(merges):
        try:
            return BPETokenizer.from_files(vocab, merges), vocab
        except ValueError as e:
            raise DataError(str(e)) from None
    return None, None


def open_folder(folder, block_size, tokenizer=None, tokenizer_source=None, vocab_size=None, check=True):
    """(ShardDataset, tokenizer, description) of a folder of shards.

    ``tokenizer`` (a checkpoint's or a GPT-2 folder's, named by ``tokenizer_source``) must be the
    folder's own where it has one; a folder without one uses it, or ``IdTokenizer(vocab_size)``.
    With ``check``, every id of every shard is compared with the vocabulary (streamed in chunks).
    """
    folder = os.fspath(folder)
    layout, files, meta = find_files(folder)
    own, own_path = folder_tokenizer(folder, meta)
    if own is not None and tokenizer is not None and own.to_dict() != tokenizer.to_dict():
        raise DataError(f"{own_path}: the shards' tokenizer ({own!r}) is not the one of {tokenizer_source} "
                        f"({tokenizer!r}): the shards hold other ids")
    if own is not None:
        tokenizer, source = own, own_path
    elif tokenizer is not None:
        source = tokenizer_source
    elif vocab_size is None:
        raise DataError(f"{folder}: the shards came without a tokenizer; give the vocabulary size (--vocab_size)")
    else:
        tokenizer, source = IdTokenizer(vocab_size), f"--vocab_size={vocab_size}"
    splits = {}
    for split in SPLITS:
        if check:
            for path, dtype, count, offset in files[split]:
                check_ids(path, dtype, count, offset, tokenizer.vocab_size, source)
        splits[split] = Split([map_tokens(*f) for f in files[split]], [f[0] for f in files[split]])
        if len(splits[split]) < block_size + 1:
            raise DataError(f"{files[split][0][0]}: the {split} split has {len(splits[split]):,} tokens, too few "
                            f"for block_size {block_size} (it needs at least {block_size + 1})")
    n = {split: len(files[split]) for split in SPLITS}
    name = f"{folder} ({layout}: {n['train']} train and {n['val']} val shard{'s' * (n['val'] > 1)})"
    return ShardDataset(splits["train"], splits["val"], block_size, name), tokenizer, name
