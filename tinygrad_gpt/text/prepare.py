"""``python -m tinygrad_gpt prepare INPUT... --out_dir=DIR``: text in, llm.c shards out, in bounded memory.

The inputs are UTF-8 text files, folders (every ``.txt`` and ``.jsonl`` inside), ``.jsonl`` files
(the ``"text"`` field of each line is one document), and ``.gz`` of either. Each text file is a
document; documents are separated by the end-of-text token where the tokenizer has one.

The text streams through in chunks of about a million characters, each cut where GPT-2's
pre-tokenizer never joins across: between a character that is not whitespace and one that is.
Every piece of the pattern (``'s``, `` ?\\p{L}+``, `` ?\\p{N}+``, `` ?[^\\s\\p{L}\\p{N}]+``,
``\\s+(?!\\S)``, ``\\s+``) holds whitespace only at its start or only, so no word spans such a
place and its lookahead sees the same thing on both sides. So the ids of a single file are
exactly the ids of encoding the whole file at once. Worker processes encode the chunks on
every core (``workers.py``); the shards are written as they fill (``shards.ShardWriter``).

The last ``--val_fraction`` of the input (by bytes, moved back to the nearest such place) is
the val split. The folder gets ``NAME_train_NNNNNN.bin``, ``NAME_val_NNNNNN.bin``,
``tokenizer.json`` and ``meta.json``, which also records the settings: a rerun with the same
settings starts again cleanly, and one with other settings is refused.

    python -m tinygrad_gpt prepare input.txt --out_dir=data/shakespeare --tokenizer=char
    python -m tinygrad_gpt prepare stories/ --out_dir=data/stories --tokenizer=bpe --vocab_size=4096
"""
import ctypes
import hashlib
import json
import os
import sys
import time
from dataclasses import dataclass
from typing import Optional

import regex

from .bpe import ENDOFTEXT, BPETokenizer
from ..errors import ConfigError, DataError
from ..storage.fileio import file_op, write_atomic
from ..storage.lock import LOCK_NAME, RunLock
from ..tokenizer import CharTokenizer
from .folder import IdTokenizer, load_tokenizer, read_json
from .shards import (MAX_SHARD_TOKENS, META_FORMAT, META_NAME, SHARD_RE, SPLITS, TOKENIZER_NAME, ShardWriter,
                     token_dtype)
from .stream import Reader, chunks, input_size, list_inputs
from .workers import ChunkError, cores, encode_all


@dataclass
class PrepareConfig:
    out_dir: str = "data"           # the folder that gets the shards, tokenizer.json and meta.json
    tokenizer: str = "char"         # char, bpe, or a saved tokenizer, prepared folder or GPT-2 folder
    vocab_size: int = 1024          # the BPE's size for --tokenizer=bpe
    bpe_sample_mb: float = 8.0      # --tokenizer=bpe learns its merges from the first this many MB (~20x in memory)
    val_fraction: float = 0.1       # the last this fraction of the input (by bytes) is the val split
    shard_tokens: int = 100_000_000  # tokens per shard (llm.c's 10^8)
    name: Optional[str] = None      # shard names start with this (None: the out_dir's name)
    workers: int = 0                # encoding processes (0: one per core this process may use)
    progress: bool = True           # a progress bar with MB/s and time left, on a terminal
    inputs: tuple = ()              # INPUT...: the arguments (text, .jsonl, .gz, folders)

    def validate(self):
        if isinstance(self.inputs, str):  # --inputs=PATH
            self.inputs = (self.inputs,)
        if not self.inputs:
            raise ConfigError("prepare needs at least one input: python -m tinygrad_gpt prepare INPUT... "
                              "--out_dir=DIR")
        if self.tokenizer == "bpe" and not 257 <= self.vocab_size <= 2 ** 32:
            raise ConfigError(f"--vocab_size must be in [257, 2**32] for --tokenizer=bpe, got {self.vocab_size}")
        if not 0 < self.val_fraction < 1:
            raise ConfigError(f"--val_fraction must be between 0 and 1, got {self.val_fraction}")
        if not 1 <= self.shard_tokens <= MAX_SHARD_TOKENS:
            raise ConfigError(f"--shard_tokens must be in [1, {MAX_SHARD_TOKENS}], got {self.shard_tokens}")
        if not 0 < self.bpe_sample_mb < 1e6:
            raise ConfigError(f"--bpe_sample_mb must be a positive number of MB, got {self.bpe_sample_mb}")
        if self.workers < 0:
            raise ConfigError(f"--workers must be >= 0, got {self.workers}")
        prefix = self.prefix()
        if not prefix or prefix in (".", "..") or os.sep in prefix or "/" in prefix or \
                not SHARD_RE.match(f"{prefix}_train_000000.bin"):
            raise ConfigError(f"--name={prefix!r} cannot start a file name")
        return self

    def prefix(self):
        return self.name if self.name is not None else os.path.basename(os.path.abspath(self.out_dir))


def with_inputs(cfg, argv):
    """``cfg`` with the positional arguments of ``argv`` added to its inputs (the command line's INPUT...)."""
    cfg.inputs = tuple(cfg.inputs if not isinstance(cfg.inputs, str) else (cfg.inputs,)) + \
        tuple(a for a in argv if not a.startswith("-"))
    return cfg


# ----------------------------------------------------------------------------- the tokenizer

def safe_cut(tokenizer):
    """``cut(text, limit=None)``: where ``text`` may be split without changing its ids: the last such
    place up to ``limit`` (default: the end), else the first after it; 0 when there is none."""
    if isinstance(tokenizer, CharTokenizer):
        return lambda text, limit=None: len(text) if limit is None else min(limit, len(text))
    spaced = [s for s in tokenizer.special_tokens if regex.search(r"\s", s)]
    if spaced:
        raise ConfigError(f"--tokenizer={tokenizer!r}: the special token {spaced[0]!r} holds whitespace, so "
                          f"the text cannot be split safely for encoding")
    last, first = regex.compile(r"(?r)\S(?=\s)"), regex.compile(r"\S(?=\s)")  # GPT-2's \s (the regex module's)

    def cut(text, limit=None):
        limit = len(text) if limit is None else min(limit, len(text))
        m = last.search(text, 0, limit + 1) or first.search(text, limit)
        return m.end() if m else 0
    return cut


def make_tokenizer(cfg, files, print_fn):
    """(tokenizer, how it was made, total input bytes or None) for --tokenizer."""
    if cfg.tokenizer == "char":
        reader, seen = Reader(files), set()
        for text, *_ in reader.pieces():
            seen.update(text)  # the alphabet, in one streaming pass
        if not seen:
            raise DataError(f"{files[0][0]}: the input holds no text")
        return CharTokenizer(sorted(seen)), f"char, {len(seen)} characters", reader.pos
    if cfg.tokenizer == "bpe":
        limit, reader, parts = int(cfg.bpe_sample_mb * 1e6), Reader(files), []
        for text, new_doc, *_ in reader.pieces():
            parts += [ENDOFTEXT, text] if new_doc and parts else [text]
            if reader.pos >= limit:
                break
        sample = "".join(parts)[:limit]
        t0 = time.perf_counter()
        tokenizer = BPETokenizer.train(sample, cfg.vocab_size)
        print_fn(f"trained the BPE (vocab {tokenizer.vocab_size}) on a sample of the first "
                 f"{len(sample.encode('utf-8')) / 1e6:.1f} MB of the input in {time.perf_counter() - t0:.1f} s")
        return tokenizer, f"bpe, vocab {tokenizer.vocab_size}", None
    tokenizer = load_tokenizer(cfg.tokenizer)
    if isinstance(tokenizer, IdTokenizer):
        raise ConfigError(f"--tokenizer={cfg.tokenizer}: an id tokenizer cannot encode text")
    return tokenizer, f"{cfg.tokenizer} ({tokenizer!r})", None


# ----------------------------------------------------------------------------- the folder

def settings_of(cfg, files):
    """What makes two prepared folders the same: a rerun with other settings is refused."""
    out = {"inputs": [os.path.abspath(p) for p, _ in files], "val_fraction": cfg.val_fraction,
           "shard_tokens": cfg.shard_tokens, "name": cfg.prefix()}
    if cfg.tokenizer == "bpe":
        out["tokenizer"] = {"bpe": cfg.vocab_size, "sample_mb": cfg.bpe_sample_mb}
    else:
        out["tokenizer"] = cfg.tokenizer if cfg.tokenizer == "char" else os.path.abspath(cfg.tokenizer)
    return out


def ours(name):
    """True for the files prepare writes (or leaves half-written) in its folder."""
    return bool(SHARD_RE.match(name)) or name in (META_NAME, TOKENIZER_NAME) or \
        (name.startswith(".") and name.endswith(".tmp") and name != LOCK_NAME)


def check_out_dir(folder, settings):
    """Refuse a folder that holds shards made otherwise; then remove what an earlier run of the same
    settings left (a rerun starts cleanly)."""
    with file_op("listing", folder):
        names = sorted(os.listdir(folder))
    meta_path = os.path.join(folder, META_NAME)
    if META_NAME in names:
        try:
            meta = read_json(meta_path)
        except DataError as e:
            raise DataError(f"{e}; it is not a meta.json that prepare wrote: use another --out_dir") from None
        old = meta.get("settings") if isinstance(meta, dict) and meta.get("format") == META_FORMAT else None
        if old != settings:
            keys = [k for k in settings if not isinstance(old, dict) or old.get(k) != settings[k]]
            what = f" ({', '.join(keys)} differ)" if isinstance(old, dict) else ""
            raise DataError(f"{meta_path}: this folder was prepared differently{what}; use another --out_dir, "
                            f"or delete the folder first")
    elif any(SHARD_RE.match(n) or n in ("train.bin", "val.bin") for n in names):
        raise DataError(f"{folder}: holds shards without a meta.json (made by another program); use another "
                        f"--out_dir")
    remove_ours(folder)


def remove_ours(folder):
    with file_op("listing", folder):
        names = os.listdir(folder)
    for name in names:
        if ours(name):
            with file_op("removing", os.path.join(folder, name)):
                os.remove(os.path.join(folder, name))


def write_json(path, obj):
    with file_op("writing", path):
        write_atomic(path, [(json.dumps(obj, ensure_ascii=False, indent=1) + "\n").encode("utf-8")])


# ----------------------------------------------------------------------------- the command

MMAP_THRESHOLD = 256 * 1024  # glibc: blocks this large come from mmap and go back to the OS when freed


def keep_heap_flat():
    """Fix glibc's mmap threshold for this process (as MALLOC_MMAP_THRESHOLD_ does for the workers).

    By default glibc raises the threshold each time a large block is freed, up to 32 MiB, so
    the chunks of text that stream through come from the heap, which fragments and grows with
    the input; a fixed threshold keeps every process of prepare at the same peak for 4 MB or
    1 GB of text (benchmarks/RESULTS.md, section 11). It changes the whole process, so importing
    does nothing: the prepare command calls it. Returns True where it took effect (glibc)."""
    if not sys.platform.startswith("linux"):
        return False
    try:
        mallopt = ctypes.CDLL(None).mallopt  # the C library already loaded
    except (OSError, AttributeError):  # not glibc (musl has no mallopt)
        return False
    M_MMAP_THRESHOLD = -3
    return bool(mallopt(M_MMAP_THRESHOLD, MMAP_THRESHOLD))


def prepare(cfg, print_fn=print):
    """Prepare ``cfg.inputs`` into ``cfg.out_dir``; returns the meta.json written."""
    cfg.validate()
    keep_heap_flat()
    files = list_inputs(cfg.inputs)
    folder, settings = cfg.out_dir, settings_of(cfg, files)
    made = not os.path.exists(folder)
    try:
        with file_op("creating", folder):
            os.makedirs(folder, exist_ok=True)
        if not os.path.isdir(folder):
            raise DataError(f"--out_dir={folder}: not a folder")
        with RunLock(folder):
            check_out_dir(folder, settings)
            try:
                return _prepare(cfg, files, settings, print_fn)
            except BaseException:
                remove_ours(folder)  # a refusal or an interruption leaves no shard behind
                raise
    except BaseException:
        if made:
            remove_if_empty(folder)
        raise


def remove_if_empty(folder):
    """Remove ``folder`` (a folder this run made) and the lock file it left there, if nothing else
    is in it: a refused run leaves no folder it made."""
    for remove, path in ((os.remove, os.path.join(folder, LOCK_NAME)), (os.rmdir, folder)):
        try:
            remove(path)
        except OSError:
            pass


def _prepare(cfg, files, settings, print_fn):
    t0 = time.perf_counter()
    tokenizer, how, total = make_tokenizer(cfg, files, print_fn)
    cut = safe_cut(tokenizer)
    tok_bytes = (json.dumps(tokenizer.to_dict(), ensure_ascii=False) + "\n").encode("utf-8")
    tok_path = os.path.join(cfg.out_dir, TOKENIZER_NAME)
    with file_op("writing", tok_path):
        write_atomic(tok_path, [tok_bytes])
    dtype = token_dtype(tokenizer.vocab_size)
    meta = {"format": META_FORMAT, "complete": False, "settings": settings, "vocab_size": tokenizer.vocab_size,
            "dtype": dtype.name, "tokenizer": TOKENIZER_NAME,
            "tokenizer_sha256": hashlib.sha256(tok_bytes).hexdigest()}
    write_json(os.path.join(cfg.out_dir, META_NAME), meta)
    total = total if total is not None else input_size(files)
    eot = ENDOFTEXT if isinstance(tokenizer, BPETokenizer) and ENDOFTEXT in tokenizer.special_tokens else None
    splits, reader = _encode(cfg, files, tokenizer, tok_path, cut, eot, total, print_fn)
    seconds = time.perf_counter() - t0
    meta.update(complete=True, eot=tokenizer.special_tokens[eot] if eot else None, input_bytes=reader.pos,
                documents=reader.documents, seconds=round(seconds, 2),
                splits={s: [{"name": n, "tokens": k} for n, k in splits[s]] for s in SPLITS})
    write_json(os.path.join(cfg.out_dir, META_NAME), meta)
    counts = {s: sum(k for _, k in splits[s]) for s in SPLITS}
    print_fn(f"prepared {reader.pos / 1e6:,.1f} MB ({_count(reader.documents, 'document')}) with the {how} "
             f"tokenizer: {counts['train']:,} train tokens in {_count(len(splits['train']), 'shard')}, "
             f"{counts['val']:,} val tokens in {_count(len(splits['val']), 'shard')}, {dtype.name}; "
             f"{seconds:.1f} s ({reader.pos / 1e6 / max(seconds, 1e-9):.1f} MB/s)")
    print_fn(f"train on it: python -m tinygrad_gpt train --data={cfg.out_dir}")
    return meta


def _count(n, word):
    return f"{n:,} {word}{'s' * (n != 1)}"


def _encode(cfg, files, tokenizer, tok_path, cut, eot, total, print_fn):
    """Stream the inputs through the workers into the shard writers; returns ({split: shards}, reader)."""
    dtype = token_dtype(tokenizer.vocab_size)
    writers = {s: ShardWriter(cfg.out_dir, cfg.prefix(), s, dtype, cfg.shard_tokens) for s in SPLITS}
    reader = Reader(files, val_at=total - round(total * cfg.val_fraction))
    workers = cfg.workers or cores()
    if total < 4 * (1 << 20) and not cfg.workers:
        workers = 1  # a small input: starting processes would cost more than it saves
    progress = Progress(total, cfg.progress, print_fn=print_fn)
    try:
        for (split, where), ids in encode_all(chunks(reader, cut, eot), tokenizer, tok_path, dtype, workers):
            writers[split].write(ids)
            progress.update(reader.pos)
        shards = {s: writers[s].close() for s in SPLITS}
        for s in SPLITS:
            if not sum(k for _, k in shards[s]):
                raise DataError(f"{files[0][0]}: the {s} split came out empty ({reader.pos:,} input bytes, "
                                f"--val_fraction={cfg.val_fraction}); use more text or another --val_fraction")
        for w in writers.values():
            w.commit()
    except ChunkError as e:
        raise DataError(f"{e.tag[1]}: {e.message}") from None
    finally:
        for w in writers.values():
            w.abort()
        progress.close()
    return shards, reader


class Progress:
    """A one-line bar on a terminal: MB read, MB/s and time left; elsewhere the same as a printed
    line every ``every`` seconds (none for a short run)."""

    def __init__(self, total, enabled, stream=sys.stderr, print_fn=print, every=30.0):
        self.total, self.stream, self.print_fn, self.every = max(1, total), stream, print_fn, every
        self.t0 = self.shown = time.time()
        self.tty = stream.isatty()
        self.enabled = enabled

    def update(self, done):
        now = time.time()
        if not self.enabled or now - self.shown < (0.5 if self.tty else self.every):
            return
        self.shown, seconds = now, max(now - self.t0, 1e-9)
        rate, frac = done / seconds, min(1.0, done / self.total)
        text = (f"{done / 1e6:,.1f}/{self.total / 1e6:,.1f} MB {rate / 1e6:.1f} MB/s "
                f"{(self.total - done) / max(rate, 1e-9):4.0f}s left")
        if self.tty:
            self.stream.write(f"\r[{'#' * int(30 * frac):<30}] {text} ")
            self.stream.flush()
        else:
            self.print_fn(f"prepare: {text}")

    def close(self):
        if self.enabled and self.tty:
            self.stream.write("\r" + " " * 79 + "\r")
            self.stream.flush()
