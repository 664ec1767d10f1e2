"""A character-level tokenizer: one token per distinct character of a text.

    >>> tok = CharTokenizer.from_text("hello")
    >>> tok.vocab_size
    4
    >>> tok.encode("hell")
    [1, 0, 2, 2]
    >>> tok.decode([1, 0, 2, 2, 3])
    'hello'

The vocabulary is the sorted set of characters, as in nanoGPT's
``shakespeare_char``. It saves to a small JSON file, never a pickle.
"""
import json

import numpy as np

from .storage.fileio import file_op, write_atomic
from .text.bpe import BPETokenizer  # byte-level BPE, as GPT-2 does it (in bpe.py)


class CharTokenizer:
    """Maps each character of a fixed alphabet to an id in ``range(vocab_size)``."""

    def __init__(self, chars):
        """Build from a sequence of distinct characters; id ``i`` is ``chars[i]``.

            >>> CharTokenizer(["a", "b"]).encode("ba")
            [1, 0]
        """
        chars = list(chars)
        for i, c in enumerate(chars):
            if not isinstance(c, str) or len(c) != 1:
                raise ValueError(f"tokenizer entry {i} must be a single character, got {c!r}")
        if len(set(chars)) != len(chars):
            raise ValueError("tokenizer characters must be distinct")
        self.chars = chars
        self.stoi = {c: i for i, c in enumerate(chars)}
        # Code point -> id lookup table (-1 = unknown) for the vectorised encoder.
        size = max((ord(c) for c in chars), default=-1) + 1
        self._table = np.full(size, -1, dtype=np.int32)
        self._table[[ord(c) for c in chars]] = np.arange(len(chars))

    @classmethod
    def from_text(cls, text):
        """The tokenizer whose vocabulary is the sorted set of characters in ``text``.

            >>> CharTokenizer.from_text("banana").chars
            ['a', 'b', 'n']
        """
        return cls(sorted(set(text)))

    @property
    def vocab_size(self):
        """Number of distinct tokens.

            >>> CharTokenizer.from_text("aab").vocab_size
            2
        """
        return len(self.chars)

    def encode_array(self, text):
        """Encode ``text`` into a 1-D int64 NumPy array (fast: one table lookup per character).

            >>> CharTokenizer.from_text("ab").encode_array("abba").tolist()
            [0, 1, 1, 0]
        """
        if not isinstance(text, str):
            raise TypeError(f"encode expects a str, got {type(text).__name__}")
        # UTF-32 gives one fixed-width code point per character, so NumPy can index the table.
        # "surrogatepass" keeps a lone surrogate as its code point, to be reported below.
        points = np.frombuffer(text.encode("utf-32-le", "surrogatepass"), dtype="<u4")
        ids = np.full(points.shape, -1, dtype=np.int64)
        known = points < len(self._table)
        ids[known] = self._table[points[known]]  # unknown code points stay -1
        bad = np.flatnonzero(ids < 0)
        if bad.size:
            pos = int(bad[0])
            raise ValueError(f"cannot encode character {text[pos]!r} at position {pos}: "
                             f"it is not in the tokenizer's vocabulary of {self.vocab_size}")
        return ids

    def encode(self, text):
        """Encode ``text`` into a list of ids.

            >>> CharTokenizer.from_text("ab").encode("ba")
            [1, 0]
        """
        return self.encode_array(text).tolist()

    def decode(self, ids):
        """Turn ids (a list, or a 1-D integer NumPy array) back into text.

            >>> CharTokenizer.from_text("ab").decode([1, 0])
            'ba'
        """
        ids = np.asarray(ids)
        if ids.size == 0:
            return ""
        if ids.ndim != 1 or not np.issubdtype(ids.dtype, np.integer):
            raise ValueError(f"decode expects a 1-D sequence of integer ids, "
                             f"got shape {ids.shape} of {ids.dtype}")
        bad = np.flatnonzero((ids < 0) | (ids >= self.vocab_size))
        if bad.size:
            pos = int(bad[0])
            raise ValueError(f"cannot decode id {int(ids[pos])} at position {pos}: "
                             f"ids must be in [0, {self.vocab_size})")
        chars = self.chars
        return "".join([chars[i] for i in ids.tolist()])

    def to_dict(self):
        """A JSON-friendly description of the tokenizer.

            >>> CharTokenizer.from_text("ba").to_dict()
            {'type': 'char', 'chars': ['a', 'b']}
        """
        return {"type": "char", "chars": list(self.chars)}

    @classmethod
    def from_dict(cls, d):
        """Rebuild a tokenizer from ``to_dict()``'s output.

            >>> CharTokenizer.from_dict({"type": "char", "chars": ["x"]}).encode("xx")
            [0, 0]
        """
        if not isinstance(d, dict) or d.get("type") != "char" or not isinstance(d.get("chars"), list):
            raise ValueError(f"not a char tokenizer description: expected "
                             f"{{'type': 'char', 'chars': [...]}}, got {str(d)[:80]}")
        return cls(d["chars"])

    def save(self, path):
        """Write the tokenizer to ``path`` as UTF-8 JSON.

            >>> CharTokenizer.from_text("ab").save("tok.json")  # doctest: +SKIP
        """
        with file_op("writing", path):
            write_atomic(path, [(json.dumps(self.to_dict(), ensure_ascii=False) + "\n").encode("utf-8")])

    @classmethod
    def load(cls, path):
        """Read a tokenizer written by ``save``.

            >>> CharTokenizer.load("tok.json").vocab_size  # doctest: +SKIP
            2
        """
        try:
            with open(path, encoding="utf-8") as f:
                d = json.load(f)
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
            raise ValueError(f"cannot read tokenizer from {path}: {e}") from None
        return cls.from_dict(d)

    def __repr__(self):
        return f"CharTokenizer(vocab_size={self.vocab_size})"


def tokenizer_from_dict(d):
    """A CharTokenizer or BPETokenizer from its ``to_dict()`` output (its "type" decides), as
    checkpoints store it.

        >>> tokenizer_from_dict({"type": "char", "chars": ["a", "b"]})
        CharTokenizer(vocab_size=2)
    """
    kind = d.get("type") if isinstance(d, dict) else None
    if kind == "bpe":
        return BPETokenizer.from_dict(d)
    if kind == "char":
        return CharTokenizer.from_dict(d)
    if kind == "ids":  # shards that came without a tokenizer (text/folder.py)
        from .text.folder import IdTokenizer
        return IdTokenizer.from_dict(d)
    raise ValueError(f"unknown tokenizer description: expected type 'char', 'bpe' or 'ids', got {str(d)[:80]}")


def load_tokenizer(path):
    """The tokenizer of a prepared folder, a saved tokenizer file, or a GPT-2 folder (text/folder.py)."""
    from .text.folder import load_tokenizer as load
    return load(path)
