"""Byte-level BPE, the tokenizer of GPT-2: train it, encode and decode with it, and read and
write GPT-2's ``vocab.json`` and ``merges.txt``.

Text becomes UTF-8 bytes, so every string can be encoded and nothing is ever unknown.
Three steps turn text into ids:

1. special tokens such as ``<|endoftext|>`` are cut out and become one id each;
2. GPT-2's regular expression splits the rest into words: contractions, letters,
   digits, punctuation and whitespace, each with at most one leading space;
3. each word's bytes start as one token per byte, and the learned merges join
   neighbouring tokens, the merge learned first (lowest rank) first.

    >>> tok = BPETokenizer.train("the cat sat on the mat, the end", vocab_size=270)
    >>> ids = tok.encode("the mat<|endoftext|>")
    >>> tok.decode(ids)
    'the mat<|endoftext|>'
    >>> ids[-1] == tok.special_tokens["<|endoftext|>"]
    True

In the files, a token is written as text through GPT-2's byte-to-unicode table,
which gives each of the 256 bytes a printable character (a space is ``Ġ``).
"""
import collections
import heapq
import json
import os

import numpy as np

from ..storage.fileio import file_op, write_atomic

try:
    import regex
except ImportError:  # pragma: no cover - regex is a dependency; this names it when it is missing
    regex = None

# GPT-2's pre-tokenization pattern: contractions, letters, digits and other symbols with an
# optional leading space, then whitespace (a run before a word leaves its last space to the word).
GPT2_PATTERN = r"""'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+"""
ENDOFTEXT = "<|endoftext|>"
MERGES_HEADER = "#version: 0.2"
_CACHE_LIMIT = 1 << 17  # words kept in the per-word encoding cache before it is cleared


def bytes_to_unicode():
    """GPT-2's table: byte value -> a printable character standing for it in the files.

    Printable Latin-1 bytes stand for themselves; the other 68 (controls, space, ...)
    are shifted to code points 256 and up, so no token is written with whitespace.

        >>> table = bytes_to_unicode()
        >>> table[ord("a")], table[ord(" ")], table[ord("\\n")]
        ('a', 'Ġ', 'Ċ')
    """
    bs = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) \
        + list(range(ord("®"), ord("ÿ") + 1))
    cs = bs[:]
    n = 0
    for b in range(256):
        if b not in bs:
            bs.append(b)
            cs.append(256 + n)
            n += 1
    return dict(zip(bs, map(chr, cs)))


BYTE_ENCODER = bytes_to_unicode()
BYTE_DECODER = {c: b for b, c in BYTE_ENCODER.items()}


def _pattern():
    if regex is None:
        raise ImportError("BPETokenizer needs the 'regex' package (pip install regex) for GPT-2's "
                          "pre-tokenization pattern")
    return regex.compile(GPT2_PATTERN)


def _to_text(token_bytes):
    """Bytes -> the token's spelling in vocab.json and merges.txt."""
    return "".join(BYTE_ENCODER[b] for b in token_bytes)


def _utf8(text, what="text"):
    if not isinstance(text, str):
        raise TypeError(f"{what} must be a str, got {type(text).__name__}")
    try:
        return text.encode("utf-8")
    except UnicodeEncodeError as e:
        raise ValueError(f"{what} holds a lone surrogate {text[e.start]!r} at position {e.start}: "
                         f"it is not valid Unicode text and has no UTF-8 bytes") from None


class BPETokenizer:
    """GPT-2-style byte-level BPE. Ids index ``vocab`` (token bytes); ``merges`` are in rank order."""

    def __init__(self, vocab, merges, special_tokens=()):
        """Build from ``vocab`` (a list: id -> token bytes), ``merges`` (a list of (left id, right id)
        pairs, rank order) and ``special_tokens`` (names whose ids are their place in ``vocab``).

        Most users call ``train``, ``load`` or ``from_files`` instead.
        """
        self.vocab = [bytes(t) for t in vocab]
        index = {t: i for i, t in enumerate(self.vocab)}
        self.special_tokens = {}
        for name in special_tokens:
            i = index.get(name.encode("utf-8"))
            if i is None:
                raise ValueError(f"special token {name!r} is not in the vocabulary")
            self.special_tokens[name] = i
        # (left id, right id) -> (rank, merged id): the lower the rank, the earlier it was learned
        self.ranks = {}
        for rank, (a, b) in enumerate(merges):
            merged = index.get(self.vocab[a] + self.vocab[b])
            if merged is None:
                raise ValueError(f"merge {rank} ({_to_text(self.vocab[a])} {_to_text(self.vocab[b])}) "
                                 f"makes a token that is not in the vocabulary")
            self.ranks.setdefault((a, b), (rank, merged))
        self.merges = [tuple(m) for m in merges]
        # byte value -> id of the one-byte token (-1 when the vocabulary lacks that byte)
        self._byte_ids = [index.get(bytes([b]), -1) for b in range(256)]
        self._pattern = _pattern()
        names = sorted(self.special_tokens, key=len, reverse=True)  # longest first, if one contains another
        self._special_re = regex.compile("(" + "|".join(map(regex.escape, names)) + ")") if names else None
        self._cache = {}

    # ------------------------------------------------------------------ training
    @classmethod
    def train(cls, text, vocab_size, special_tokens=(ENDOFTEXT,)):
        """Learn merges from ``text`` until the vocabulary holds ``vocab_size`` tokens.

        The vocabulary is the 256 bytes (id ``b`` is byte ``b``), then one token per merge,
        then the special tokens.
        Words (pre-tokens) are counted once; each merge then updates only the pair counts of
        the words that contain the merged pair. Ties between equally frequent pairs go to the
        pair of smaller ids, so training is deterministic.

            >>> tok = BPETokenizer.train("aaab aaab", vocab_size=258, special_tokens=())
            >>> [tok.vocab[i] for i in tok.encode("aaab")]
            [b'aa', b'ab']
        """
        special_tokens = tuple(special_tokens)
        if not isinstance(vocab_size, (int, np.integer)) or vocab_size < 256 + len(special_tokens):
            raise ValueError(f"vocab_size must be an integer >= {256 + len(special_tokens)} (256 bytes "
                             f"+ {len(special_tokens)} special tokens), got {vocab_size!r}")
        _utf8(text)
        pattern = _pattern()
        pieces = [text]
        if special_tokens:  # special tokens are not text to learn from
            pieces = regex.split("|".join(map(regex.escape, special_tokens)), text)
        counts = collections.Counter(w for piece in pieces for w in pattern.findall(piece))
        words = [list(w.encode("utf-8")) for w in counts]  # byte values are the first 256 ids
        freqs = list(counts.values())
        vocab = [bytes([b]) for b in range(256)]
        merges = _learn_merges(words, freqs, vocab, vocab_size - len(special_tokens))
        # a special token whose text a merge already produced would make two ids for one string
        vocab += [s.encode("utf-8") for s in special_tokens if s.encode("utf-8") not in vocab]
        return cls(vocab, merges, special_tokens)

    # ------------------------------------------------------------------ encoding
    @property
    def vocab_size(self):
        """Number of ids, special tokens included."""
        return len(self.vocab)

    def encode(self, text, allow_special=True):
        """Text -> list of ids. Special tokens in the text become their own id unless
        ``allow_special`` is False, in which case they are encoded as ordinary text.

            >>> tok = BPETokenizer.train("hello world", vocab_size=260)
            >>> tok.decode(tok.encode("hello, wörld! 👋"))
            'hello, wörld! 👋'
        """
        _utf8(text)
        if self._special_re is None or not allow_special:
            return self._encode_ordinary(text)
        out = []
        for i, piece in enumerate(self._special_re.split(text)):
            if i % 2:  # split() with one group puts the matched special tokens at odd places
                out.append(self.special_tokens[piece])
            elif piece:
                out.extend(self._encode_ordinary(piece))
        return out

    def encode_array(self, text, allow_special=True):
        """Like ``encode``, as a 1-D int64 NumPy array (the form datasets use)."""
        return np.asarray(self.encode(text, allow_special), dtype=np.int64)

    def _encode_ordinary(self, text):
        out, cache = [], self._cache
        for word in self._pattern.findall(text):
            ids = cache.get(word)
            if ids is None:
                if len(cache) >= _CACHE_LIMIT:
                    cache.clear()
                ids = cache[word] = self._encode_word(word)
            out.extend(ids)
        return out

    def _encode_word(self, word):
        """One pre-token -> ids: start from its bytes, apply the lowest-ranked merge until none applies."""
        ids = [self._byte_ids[b] for b in word.encode("utf-8")]
        if -1 in ids:
            b = word.encode("utf-8")[ids.index(-1)]
            raise ValueError(f"cannot encode {word!r}: the vocabulary has no token for byte 0x{b:02x}")
        ranks = self.ranks
        while len(ids) > 1:
            best = min(ranks.get(pair, (np.inf, 0)) for pair in zip(ids, ids[1:]))
            if best[0] == np.inf:
                break
            rank, merged = best
            ids = _merge_pair(ids, self.merges[rank], merged)
        return tuple(ids)

    def decode(self, ids):
        """Ids (a list or 1-D integer array) -> text. Byte sequences that are not valid UTF-8
        (a sample cut inside a character) become U+FFFD, as in GPT-2.

            >>> tok = BPETokenizer.train("abc", vocab_size=256, special_tokens=())
            >>> tok.decode([97, 98])
            'ab'
        """
        return self.decode_bytes(ids).decode("utf-8", errors="replace")

    def decode_bytes(self, ids):
        """Ids -> the raw bytes they stand for."""
        ids = np.asarray(ids)
        if ids.size == 0:
            return b""
        if ids.ndim != 1 or not np.issubdtype(ids.dtype, np.integer):
            raise ValueError(f"decode expects a 1-D sequence of integer ids, got shape {ids.shape} of {ids.dtype}")
        bad = np.flatnonzero((ids < 0) | (ids >= self.vocab_size))
        if bad.size:
            pos = int(bad[0])
            raise ValueError(f"cannot decode id {int(ids[pos])} at position {pos}: "
                             f"ids must be in [0, {self.vocab_size})")
        vocab = self.vocab
        return b"".join([vocab[i] for i in ids.tolist()])

    # ------------------------------------------------------------------ files
    def to_dict(self):
        """A JSON-friendly description (token spellings as in vocab.json), for checkpoints."""
        return {"type": "bpe", "vocab": [_to_text(t) for t in self.vocab],
                "merges": [f"{_to_text(self.vocab[a])} {_to_text(self.vocab[b])}" for a, b in self.merges],
                "special_tokens": list(self.special_tokens)}

    @classmethod
    def from_dict(cls, d):
        """Rebuild a tokenizer from ``to_dict()``'s output."""
        if not isinstance(d, dict) or d.get("type") != "bpe" or not isinstance(d.get("vocab"), list) \
                or not isinstance(d.get("merges"), list):
            raise ValueError(f"not a BPE tokenizer description: expected {{'type': 'bpe', 'vocab': [...], "
                             f"'merges': [...]}}, got {str(d)[:80]}")
        source, vocab, special = "tokenizer description", d["vocab"], d.get("special_tokens", [])
        if not all(isinstance(t, str) for t in vocab):
            raise ValueError(f"{source}: vocab must be a list of token strings")
        if not isinstance(special, list) or not all(isinstance(t, str) for t in special):
            raise ValueError(f"{source}: special_tokens must be a list of strings")
        ids = dict(zip(vocab, range(len(vocab))))
        if len(ids) != len(vocab):
            raise ValueError(f"{source}: vocab holds a token twice")
        return cls._from_spellings(ids, [(None, m) for m in d["merges"]], special, source, source)
    def save(self, folder):
        """Write GPT-2's ``vocab.json`` and ``merges.txt`` into ``folder`` (created if needed)."""
        with file_op("creating", folder):
            os.makedirs(folder, exist_ok=True)
        vocab = {_to_text(t): i for i, t in enumerate(self.vocab)}
        lines = [MERGES_HEADER] + self.to_dict()["merges"]
        for name, text in (("vocab.json", json.dumps(vocab, ensure_ascii=False)),
                           ("merges.txt", "\n".join(lines) + "\n")):
            with file_op("writing", os.path.join(folder, name)):
                write_atomic(os.path.join(folder, name), [text.encode("utf-8")])

    @classmethod
    def load(cls, folder):
        """Read ``vocab.json`` and ``merges.txt`` from ``folder``."""
        return cls.from_files(os.path.join(folder, "vocab.json"), os.path.join(folder, "merges.txt"))

    @classmethod
    def from_files(cls, vocab_json, merges_txt, special_tokens=None):
        """Read GPT-2's files (as written by OpenAI, Hugging Face ``tokenizers`` or ``save``).

        Tokens in the vocabulary that no merge can make and that are longer than one byte,
        such as ``<|endoftext|>``, are the special tokens, unless ``special_tokens`` names them.
        A bad file raises ValueError naming that file (and the line of merges.txt).
        """
        try:
            with open(vocab_json, encoding="utf-8") as f:
                vocab = json.load(f)
        except (OSError, ValueError, RecursionError) as e:  # ValueError: bad UTF-8 or JSON, huge numbers
            problem = "nested too deeply" if isinstance(e, RecursionError) else str(e)[:100]
            raise ValueError(f"{vocab_json}: cannot read a BPE vocabulary from it ({problem})") from None
        try:
            with open(merges_txt, encoding="utf-8") as f:
                lines = list(enumerate(f.read().splitlines(), start=1))
        except (OSError, ValueError) as e:
            raise ValueError(f"{merges_txt}: cannot read BPE merges from it ({str(e)[:100]})") from None
        if lines and lines[0][1].startswith("#version"):
            lines = lines[1:]
        merges = [(n, line) for n, line in lines if line.strip()]
        return cls._from_spellings(vocab, merges, special_tokens, os.fspath(vocab_json), os.fspath(merges_txt))

    @classmethod
    def _from_spellings(cls, vocab, merges, special_tokens, vocab_source, merges_source):
        """Validate a {spelling: id} vocabulary and (line number, "left right") merges, then build.
        Every problem is a ValueError naming the source at fault."""
        if not isinstance(vocab, dict) or not all(isinstance(k, str) and type(v) is int for k, v in vocab.items()):
            raise ValueError(f"{vocab_source}: the vocabulary must map token strings to integer ids")
        if sorted(vocab.values()) != list(range(len(vocab))):
            raise ValueError(f"{vocab_source}: vocabulary ids must be 0 .. {len(vocab) - 1}, each used once")
        tokens = [None] * len(vocab)
        for spelling, i in vocab.items():
            tokens[i] = spelling
        token_bytes = [_spelling_bytes(t, i, vocab_source) for i, t in enumerate(tokens)]
        index = {b: i for i, b in enumerate(token_bytes)}
        missing = sorted(set(range(256)) - {b[0] for b in token_bytes if len(b) == 1})
        if missing:
            raise ValueError(f"{vocab_source}: no token for byte 0x{missing[0]:02x} (a byte-level BPE "
                             f"vocabulary holds all 256 bytes)")
        pairs = []
        for rank, (line_number, line) in enumerate(merges):
            where = f"{merges_source}: merge {rank}" + (f" (line {line_number})" if line_number else "")
            parts = line.split(" ") if isinstance(line, str) else [None]
            if len(parts) != 2 or not all(parts):
                raise ValueError(f"{where}: {str(line)[:60]!r} is not two tokens separated by one space")
            for part in parts:
                if part not in vocab:
                    raise ValueError(f"{where}: {part[:40]!r} is not a token of {vocab_source}")
            a, b = vocab[parts[0]], vocab[parts[1]]
            if token_bytes[a] + token_bytes[b] not in index:
                raise ValueError(f"{where}: merging {parts[0][:40]!r} and {parts[1][:40]!r} makes a token "
                                 f"that {vocab_source} lacks")
            pairs.append((a, b))
        if special_tokens is None:  # tokens that BPE cannot build are added (special) tokens
            made = {tokens[a] + tokens[b] for a, b in pairs}
            special_tokens = [t for t in tokens if t not in made and len(t) > 1]
            for t in special_tokens:  # a special token is spelled as its plain text, not in GPT-2's table
                if _utf8_or_none(t) != token_bytes[vocab[t]]:
                    raise ValueError(f"{merges_source}: no merge makes the token {t[:40]!r} of {vocab_source} "
                                     f"(is {merges_source} cut short, or the token misspelled?)")
        for name in special_tokens:
            if _utf8_or_none(name) not in index:
                raise ValueError(f"{vocab_source}: special token {name[:40]!r} is not in the vocabulary")
        return cls(token_bytes, pairs, special_tokens)

    def __repr__(self):
        return f"BPETokenizer(vocab_size={self.vocab_size}, merges={len(self.merges)})"


def _spelling_bytes(spelling, i, source):
    """A token's spelling in the files -> its bytes (special tokens are spelled as plain text)."""
    try:
        out = bytes(BYTE_DECODER[c] for c in spelling)
    except KeyError:
        out = _utf8_or_none(spelling)  # e.g. a special token with characters outside the table
    if not out:
        raise ValueError(f"{source}: token {i} ({spelling[:40]!r}) is empty or not valid Unicode")
    return out


def _utf8_or_none(text):
    try:
        return text.encode("utf-8")
    except UnicodeEncodeError:  # a lone surrogate, which JSON can spell
        return None


def _learn_merges(words, freqs, vocab, vocab_size):
    """The BPE loop. ``words`` are lists of ids (changed in place), ``freqs`` their counts;
    ``vocab`` (id -> bytes) grows by one token per merge. Returns the merges in rank order."""
    pair_counts = collections.Counter()
    where = collections.defaultdict(set)  # pair -> indices of the words that (may) contain it
    for i, (w, n) in enumerate(zip(words, freqs)):
        for pair in zip(w, w[1:]):
            pair_counts[pair] += n
            where[pair].add(i)
    # a max-heap of (-count, pair); entries go stale when a count changes and are skipped then
    heap = [(-n, pair) for pair, n in pair_counts.items()]
    heapq.heapify(heap)
    merges = []
    while len(vocab) < vocab_size and heap:
        neg, pair = heapq.heappop(heap)
        if pair_counts.get(pair, 0) != -neg or -neg <= 0:
            continue  # stale entry
        new_id = len(vocab)
        vocab.append(vocab[pair[0]] + vocab[pair[1]])
        merges.append(pair)
        changed = set()
        for i in where.pop(pair):
            _merge_word(words, i, freqs[i], pair, new_id, pair_counts, where, changed)
        for p in changed:
            if pair_counts[p] > 0:
                heapq.heappush(heap, (-pair_counts[p], p))
            else:
                del pair_counts[p]
    return merges


def _merge_pair(ids, pair, new_id):
    """``ids`` with every occurrence of ``pair`` replaced by ``new_id``, left to right."""
    a, b = pair
    out, i = [], 0
    while i < len(ids):
        if i + 1 < len(ids) and ids[i] == a and ids[i + 1] == b:
            out.append(new_id)
            i += 2
        else:
            out.append(ids[i])
            i += 1
    return out


def _merge_word(words, i, n, pair, new_id, pair_counts, where, changed):
    """Replace ``pair`` by ``new_id`` in word ``i`` (seen ``n`` times), updating the pair counts."""
    w = words[i]
    out = _merge_pair(w, pair, new_id)
    if len(out) == len(w):
        return  # a stale index: the word no longer holds the pair
    for p in zip(w, w[1:]):  # remove the word's old pairs, then add its new ones
        pair_counts[p] -= n
        changed.add(p)
    for p in zip(out, out[1:]):
        pair_counts[p] += n
        changed.add(p)
        where[p].add(i)
    words[i] = out
