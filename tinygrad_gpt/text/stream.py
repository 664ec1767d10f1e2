"""Reading the inputs of ``prepare`` as a stream: files, folders, JSON lines, gzip; then chunks.

``Reader(files).pieces()`` yields the text a block or a document at a time and counts the
input bytes read (``pos``); ``chunks(reader, cut, eot)`` packs the pieces into chunks of about
``CHUNK_CHARS`` characters, each ending where ``cut`` says the text may be split, with the
end-of-text token's text between documents. Neither ever holds more than a chunk or a document.

    >>> files = list_inputs(["notes.txt", "stories/"])          # doctest: +SKIP
    >>> for (split, where), text in chunks(Reader(files), safe_cut(tokenizer), None):  # doctest: +SKIP
    ...     pass
"""
import gzip
import json
import os
import zlib

from ..errors import DataError
from ..storage.fileio import file_op
from .shards import _regular_size

BLOCK_BYTES = 1 << 20         # bytes read from a file at a time
CHUNK_CHARS = 1 << 20         # characters per chunk of encoding work
MAX_CHUNK_CHARS = 64 << 20    # text with no place to split it this long is refused
MAX_LINE = 64 << 20           # the longest line of a .jsonl file (one document)
BOM = b"\xef\xbb\xbf"


def _kind(name):
    """"jsonl" or "text" from a file name (a .gz counts by the name inside), None for other names."""
    base = name[:-3] if name.endswith(".gz") else name
    return "jsonl" if base.endswith(".jsonl") else "text" if base.endswith(".txt") else None


def list_inputs(inputs):
    """[(path, kind)] of every input file: a folder gives every .txt and .jsonl (and their .gz) in
    it and below, sorted; a file given by name is JSON lines if it is called .jsonl, else text."""
    found = []
    for given in inputs:
        path = os.fspath(given)
        if not os.path.exists(path):
            raise DataError(f"{path}: no such file or folder")
        if os.path.isdir(path):
            inside = []
            for root, dirs, names in os.walk(path):
                dirs[:] = sorted(d for d in dirs if not d.startswith("."))
                inside += sorted(os.path.join(root, n) for n in names if _kind(n) and not n.startswith("."))
            if not inside:
                raise DataError(f"{path}: no .txt or .jsonl files (or .gz of them) inside")
            found += [(p, _kind(p)) for p in inside]
        else:
            found.append((path, _kind(os.path.basename(path)) or "text"))
    for path, _ in found:
        _regular_size(path)  # a pipe or a device would never end
    return found


def _open(path):
    with file_op("opening", path):
        return gzip.open(path, "rb") if path.endswith(".gz") else open(path, "rb")


def _complete(data):
    """The length of ``data`` without a UTF-8 character cut off at its end."""
    n = len(data)
    for back in range(1, min(4, n) + 1):
        b = data[n - back]
        if b & 0xC0 != 0x80:  # the first byte of the last character
            need = 2 if b >> 5 == 0b110 else 3 if b >> 4 == 0b1110 else 4 if b >> 3 == 0b11110 else 1
            return n - back if need > back else n
    return n


class Reader:
    """The inputs as pieces of text: ``(text, new_document, split, where)``.

    ``pos`` counts the (decompressed) input bytes read so far. A piece that ends by byte ``val_at``
    belongs to the train split and the rest to val; text blocks never straddle it (a document of
    JSON lines that does goes to val).
    """

    def __init__(self, files, val_at=None):
        self.files, self.val_at = files, val_at
        self.pos, self.documents = 0, 0

    def pieces(self):
        for path, kind in self.files:
            try:
                yield from (self._jsonl if kind == "jsonl" else self._text)(path)
            except (EOFError, zlib.error, gzip.BadGzipFile) as e:
                raise DataError(f"{path}: not a readable gzip file ({str(e)[:80] or type(e).__name__})") from None

    def _split(self):
        """The split of the piece just read: train when it ends at or before ``val_at``."""
        return "train" if self.val_at is None or self.pos <= self.val_at else "val"

    def _want(self):
        if self.val_at is not None and self.pos < self.val_at:
            return min(BLOCK_BYTES, self.val_at - self.pos)
        return BLOCK_BYTES

    def _text(self, path):
        pending, offset, first = b"", 0, True
        with _open(path) as f:
            while True:
                with file_op("reading", path):
                    block = f.read(self._want())
                self.pos += len(block)
                split = self._split()
                data = pending + block
                if first and (len(data) >= len(BOM) or not block) and data.startswith(BOM):
                    data, offset = data[len(BOM):], offset + len(BOM)  # a byte-order mark is not text
                end = _complete(data) if block else len(data)
                try:
                    text = data[:end].decode("utf-8")
                except UnicodeDecodeError as e:
                    raise DataError(f"{path}: not UTF-8 text: invalid byte 0x{data[e.start]:02x} at byte offset "
                                    f"{offset + e.start}") from None
                pending, where = data[end:], f"{path} (from byte {offset})"
                offset += end
                if text:
                    self.documents += first
                    yield text, first, split, where
                    first = False
                if not block:
                    return

    def _jsonl(self, path):
        with _open(path) as f:
            number = 0
            while True:
                with file_op("reading", path):
                    line = f.readline(MAX_LINE + 1)
                if not line:
                    return
                number, self.pos = number + 1, self.pos + len(line)
                split = self._split()
                if len(line) > MAX_LINE:
                    raise DataError(f"{path}, line {number}: longer than {MAX_LINE >> 20} MiB")
                if number == 1 and line.startswith(BOM):
                    line = line[len(BOM):]
                if not line.strip():
                    continue
                text = _document(path, number, line)
                self.documents += 1
                yield text, True, split, f"{path}, line {number}"


def _document(path, number, line):
    """The "text" field of one JSON line."""
    try:
        doc = json.loads(line)
    except (ValueError, RecursionError) as e:  # bad UTF-8 or JSON, deep nesting, huge numbers
        problem = "nested too deeply" if isinstance(e, RecursionError) else str(e)[:80]
        raise DataError(f"{path}, line {number}: not a JSON document ({problem})") from None
    text = doc.get("text") if isinstance(doc, dict) else None
    if not isinstance(text, str):
        raise DataError(f'{path}, line {number}: no "text" field holding a string')
    try:
        text.encode("utf-8")
    except UnicodeEncodeError as e:
        raise DataError(f'{path}, line {number}: field "text" holds a lone surrogate at character {e.start}, '
                        f"which is not text") from None
    return text


def input_size(files):
    """The input's size in bytes, decompressing the .gz files once to count theirs."""
    total = 0
    for path, _ in files:
        if not path.endswith(".gz"):
            total += _regular_size(path)
            continue
        try:
            with _open(path) as f, file_op("reading", path):
                while block := f.read(BLOCK_BYTES * 4):
                    total += len(block)
        except (EOFError, zlib.error, gzip.BadGzipFile) as e:
            raise DataError(f"{path}: not a readable gzip file ({str(e)[:80] or type(e).__name__})") from None
    return total


def chunks(reader, cut, eot, target=CHUNK_CHARS):
    """Yield ``((split, where), text)``: the reader's pieces packed into chunks of about ``target``
    characters, each ending where ``cut(text, target)`` allows, none spanning the val boundary.

    ``eot`` (the end-of-text token's text, or None) goes between documents. A chunk's ids are the
    same whether it is encoded alone or inside the whole text.
    """
    buf, size, split, where, docs, check_at = [], 0, None, None, 0, target
    for text, new_doc, piece_split, piece_where in reader.pieces():
        if split is not None and piece_split != split and size:  # the val split starts here
            joined = "".join(buf)
            end = len(joined) if new_doc and eot is not None else cut(joined)
            if end:
                yield (split, where), joined[:end]
            buf, size, check_at = [joined[end:]], len(joined) - end, target
        if not size:
            where = piece_where
        split = piece_split
        if new_doc and docs and eot is not None:
            buf.append(eot)
            size += len(eot)
        docs += new_doc
        buf.append(text)
        size += len(text)
        if size >= check_at:
            joined, start = "".join(buf), 0
            while len(joined) - start >= check_at:
                end = cut(joined[start:], target)
                if not end:
                    if len(joined) - start > MAX_CHUNK_CHARS:
                        raise DataError(f"{where}: {len(joined) - start:,} characters without whitespace after a "
                                        f"word: no place to split the text for encoding")
                    check_at = 2 * (len(joined) - start)  # look again when twice as much has come
                    break
                yield (split, where), joined[start:start + end]
                start, where, check_at = start + end, piece_where, target
            buf, size = [joined[start:]], len(joined) - start
    if size:
        yield (split, where), "".join(buf)
