"""Mutations for tests/test_fuzz.py: hostile JSON values, safetensors files edited by hand, and one
mutation function per kind of file. Each takes a ``random.Random`` and a file, changes the file in
place, and returns (a description, words that an error about it should contain)."""
import hashlib
import json
import struct
from pathlib import Path

# ----------------------------------------------------------------------------- safetensors by hand

def read_st(path):
    raw = Path(path).read_bytes()
    (n,) = struct.unpack("<Q", raw[:8])
    return json.loads(raw[8:8 + n]), raw[8 + n:]


def st_bytes(header, data, header_text=None):
    text = header_text if header_text is not None else dumps(header)
    raw = text.encode("utf-8", "surrogatepass")
    raw += b" " * (-len(raw) % 8)
    return struct.pack("<Q", len(raw)) + raw + data


# ----------------------------------------------------------------------------- hostile values

class Raw:
    """JSON text spliced in as it is (numbers and nesting that Python's json would not write)."""

    def __init__(self, text):
        self.text = text


def dumps(value):
    """json.dumps that also writes NaN, Infinity, lone surrogates and Raw text."""
    raws = []

    def default(v):
        if isinstance(v, Raw):
            raws.append(v.text)
            return f"@@raw{len(raws) - 1}@@"
        raise TypeError(type(v))
    text = json.dumps(value, default=default)
    for i, raw in enumerate(raws):
        text = text.replace(f'"@@raw{i}@@"', raw)
    return text


HOSTILE = [None, True, False, 0, -1, 1, 3, 2 ** 31, 2 ** 40, 2 ** 63, 2 ** 64, 2 ** 128, -2 ** 63, 10 ** 30,
           0.5, -0.5, 1e-300, 1e308, float("nan"), float("inf"), float("-inf"), "", "x", "0", "1.5",
           "\ud800", "a b c", [], {}, [0], [1, 2], [0.9, 0.999, 1], [[]], {"a": 1}, "a" * 5000,
           Raw("1" * 5000), Raw("[" * 50000 + "]" * 50000), Raw("1e999")]


def json_paths(tree, path=()):
    """Every (path, node) of a JSON tree, the root included."""
    yield path, tree
    if isinstance(tree, dict):
        for k, v in tree.items():
            yield from json_paths(v, path + (k,))
    elif isinstance(tree, list):
        for i, v in enumerate(tree):
            yield from json_paths(v, path + (i,))


def get_at(tree, path):
    for k in path:
        tree = tree[k]
    return tree


def mutate_json(tree, rng, prefer=None):
    """A copy of ``tree`` with one node replaced, removed or added; and a description.

    ``prefer`` (a function of a path) makes matching paths likelier to be picked.
    Returns (new tree, path, words that an error about it should contain).
    """
    tree = json.loads(json.dumps(tree))
    paths = [p for p, _ in json_paths(tree)]
    if prefer is not None and rng.random() < 0.6:
        paths = [p for p in paths if prefer(p)] or paths
    path = rng.choice(paths)
    node = get_at(tree, path)
    kind = rng.choice(["replace", "replace", "replace", "nudge", "delete", "add"])
    words = [k for k in path if isinstance(k, str)][-2:]
    if kind == "nudge" and isinstance(node, (int, float)) and not isinstance(node, bool):
        value = rng.choice([node + 1, node - 1, -node, node * 2, node * 2 ** 40, node + 0.5])
    elif kind == "delete" and path:
        parent = get_at(tree, path[:-1])
        del parent[path[-1]]
        return tree, path, words
    elif kind == "add" and isinstance(node, dict):
        key = rng.choice(["zzz_unknown", "", "__class__"])
        node[key] = value = rng.choice(HOSTILE)
        return tree, path + (key,), ["JSON"] if isinstance(value, Raw) and not parses(value.text) else \
            words + [repr(key), key or "''"]
    elif kind == "add" and isinstance(node, list):
        node.append(value := rng.choice(HOSTILE + node[:1] * 3))
        return tree, path + ("+",), ["JSON"] if isinstance(value, Raw) and not parses(value.text) else words
    else:
        value = rng.choice(HOSTILE)
    if isinstance(value, Raw) and not parses(value.text):  # the whole document is refused, and named
        words = ["JSON"]
    if not path:
        return value, path, words
    get_at(tree, path[:-1])[path[-1]] = value
    return tree, path, words


# ----------------------------------------------------------------------------- mutations, by family

def header_bytes(rng, path):
    """Damage the raw bytes of a safetensors file: its length prefix, its header text, its size."""
    raw = bytearray(path.read_bytes())
    (n,) = struct.unpack("<Q", raw[:8])
    kind = rng.choice(["flip", "flip", "length", "truncate", "append", "splice"])
    if kind == "flip":
        for _ in range(rng.randint(1, 3)):
            raw[rng.randrange(8, 8 + n)] = rng.randrange(256)
    elif kind == "length":
        value = rng.choice([0, 1, 2, n - 1, n + 1, n + 8, 2 ** 40, 2 ** 63, 2 ** 64 - 1, len(raw), 100 * 2 ** 20 + 1])
        raw[:8] = struct.pack("<Q", value)
    elif kind == "truncate":
        raw = raw[:rng.choice([0, 3, 8, 9, n // 2, 8 + n, len(raw) - 1])]
    elif kind == "append":
        raw += bytes(rng.randrange(256) for _ in range(rng.choice([1, 7, 8, 64])))
    else:  # a piece of the header text repeated or cut out
        a, b = sorted(rng.randrange(8, 8 + n) for _ in range(2))
        raw = raw[:a] + raw[b:] if rng.random() < 0.5 else raw[:b] + raw[a:b] + raw[b:]
    path.write_bytes(bytes(raw))
    return f"bytes: {kind}", []


def tensor_entry(rng, path, names=None):
    """Change one tensor entry of the header: its dtype, shape or data offsets, or the entry itself."""
    header, data = read_st(path)
    name = rng.choice([k for k in header if k != "__metadata__" and (names is None or k in names)])
    entry = header[name]
    field = rng.choice(["dtype", "shape", "shape", "data_offsets", "data_offsets", "entry"])
    if field == "dtype":
        entry["dtype"] = rng.choice(["F64", "F16", "BF16", "I32", "U32", "BOOL", "I8", "f32", "", None, 32,
                                     ["F32"], {"F32": 1}])
    elif field == "shape":
        shape = list(entry["shape"])
        choice = rng.randrange(6)
        if choice == 0 and shape:
            shape[rng.randrange(len(shape))] = rng.choice([0, 1, -1, 2 ** 40, 2 ** 64, 1.0, "8", None, [8]])
        elif choice == 1:
            shape.append(rng.choice([1, 2, 0]))
        elif choice == 2:
            shape = shape[:-1]
        elif choice == 3:
            shape = [2 ** 20, 2 ** 20]  # a 2**40-element tensor
        elif choice == 4:
            shape = [1] * rng.choice([65, 100000])
        else:
            shape = rng.choice([None, 8, "8", {}, [[8]]])
        entry["shape"] = shape
    elif field == "data_offsets":
        b, e = entry["data_offsets"]
        entry["data_offsets"] = rng.choice([[e, b], [b + 4, e + 4], [b, e + 4], [b - 4, e], [b, 2 ** 40],
                                            [0, 2 ** 64], [-1, e], [b], [b, e, e], None, [str(b), e],
                                            [b + 0.0, e]])
    else:
        header[name] = rng.choice([None, [], "x", 1, {}, {"dtype": "F32"}])
        if rng.random() < 0.3:  # gone: the file cannot say which tensor it lacks, only that bytes are unused
            del header[name]
            path.write_bytes(st_bytes(header, data))
            return f"tensor {name!r} deleted", []
    path.write_bytes(st_bytes(header, data))
    return f"tensor {name!r} {field}", [name, field]


def metadata_field(rng, path, prefer=None, fields=None):
    """Mutate one node of one JSON document in ``__metadata__`` (or the metadata itself)."""
    header, data = read_st(path)
    meta = header["__metadata__"]
    fields = fields or sorted(meta)
    key = rng.choice(fields)
    if rng.random() < 0.1:  # the metadata entry itself: not a string, not JSON, gone
        value = rng.choice([None, 1, ["x"], "", "{", "not json", "[]", "null", dumps(float("nan"))])
        if value is None and rng.random() < 0.5:
            del meta[key]
        else:
            meta[key] = value
        path.write_bytes(st_bytes(header, data))
        return f"metadata {key!r} = {value!r}", [key]
    document = json_or_none(meta[key])
    if isinstance(document, (dict, list)):  # a JSON document: mutate inside it
        tree, where, words = mutate_json(document, rng, prefer)
        meta[key] = dumps(tree)
    else:  # a plain string such as the format tag or the checksum: any value in its place
        meta[key], where, words = mutate_json(meta[key], rng)
    path.write_bytes(st_bytes(header, data))
    return f"metadata {key}{list(where)}", words or [key]


def parses(text):
    try:
        json.loads(text)
        return True
    except (ValueError, RecursionError):
        return False


def json_or_none(text):
    try:
        return json.loads(text)
    except (ValueError, TypeError):
        return None


def data_values(rng, path):
    """Write non-finite or huge values into the data section and fix the checksum, as a crafted file would."""
    header, data = read_st(path)
    data = bytearray(data)
    name = rng.choice([k for k in header if k != "__metadata__" and header[k]["dtype"] == "F32"])
    begin, end = header[name]["data_offsets"]
    value = rng.choice([float("nan"), float("inf"), float("-inf"), 3e38, -3e38])
    for _ in range(rng.randint(1, 3)):
        at = begin + 4 * rng.randrange((end - begin) // 4)
        data[at:at + 4] = struct.pack("<f", value)
    header["__metadata__"]["sha256"] = hashlib.sha256(bytes(data)).hexdigest()
    path.write_bytes(st_bytes(header, bytes(data)))
    words = [name, name.removeprefix("model."), "not finite"]  # an overflow names no tensor
    if name.startswith("optim."):  # the optimizer names its arrays by key and parameter index
        words.append(f"{name.split('.')[2]} of parameter {name.split('.')[1]}")
    return f"tensor {name!r} holds {value}", words


def prefer_checkpoint(path):
    """The fields most likely to drive a loop, an allocation or a type error."""
    return any(k in path for k in ("n_layer", "n_embd", "block_size", "vocab_size", "batch_rng", "rng",
                                   "param_groups", "steps", "iter", "best_val_loss", "skipped", "eps", "betas"))


def vocab_json(rng, path):
    vocab = json.loads(path.read_text(encoding="utf-8"))
    if rng.random() < 0.3:  # rename a token, or give two tokens one id
        tokens = list(vocab)
        token = rng.choice(tokens)
        if rng.random() < 0.5:
            vocab[token + rng.choice(["x", "Ġ", "\ud800", ""])] = vocab.pop(token)
        else:
            vocab[token] = vocab[rng.choice(tokens)]
        path.write_text(dumps(vocab), encoding="utf-8", errors="surrogatepass")
        return f"vocab.json token {token!r}", []
    vocab, where, _ = mutate_json(vocab, rng)
    path.write_text(dumps(vocab), encoding="utf-8", errors="surrogatepass")
    return f"vocab.json {list(where)[:1]}", []


def merges_txt(rng, path):
    lines = path.read_text(encoding="utf-8").split("\n")
    body = range(1, len(lines) - 1)
    kind = rng.choice(["swap", "delete", "duplicate", "garbage", "shuffle", "header", "cut", "bytes"])
    if kind == "swap":
        i, j = rng.sample(list(body), 2)
        lines[i], lines[j] = lines[j], lines[i]
    elif kind == "delete":
        del lines[rng.choice(body)]
    elif kind == "duplicate":
        i = rng.choice(body)
        lines.insert(rng.choice(body), lines[i])
    elif kind == "garbage":
        lines.insert(rng.choice(body), rng.choice(["a b c", "x", " ", "Ġ", "zz yy", "\t", "Ġ Ġ Ġ", "#version: 0.2",
                                                  "a  b", "\ud800 a", "\x00 \x00", "t h e"]))
    elif kind == "shuffle":
        middle = lines[1:-1]
        rng.shuffle(middle)
        lines = lines[:1] + middle + lines[-1:]
    elif kind == "header":
        lines = lines[1:]
    if kind in ("cut", "bytes"):
        raw = bytearray("\n".join(lines).encode("utf-8"))
        at = rng.randrange(len(raw))
        raw = raw[:at] if kind == "cut" else raw[:at] + bytes([rng.choice([0xff, 0xc3, 0x80, 0x00])]) + raw[at:]
        path.write_bytes(bytes(raw))
    else:
        path.write_text("\n".join(lines), encoding="utf-8", errors="surrogatepass")
    return f"merges.txt {kind}", []


def text_data(rng, path):
    raw = bytearray(path.read_bytes())
    kind = rng.choice(["invalid", "empty", "bom", "short", "nul", "random", "surrogate", "unicode"])
    if kind == "invalid":
        at = rng.randrange(len(raw))
        raw[at:at] = bytes([rng.choice([0xff, 0xfe, 0xc3, 0x80, 0xed])])
    elif kind == "empty":
        raw = bytearray()
    elif kind == "bom":
        raw = bytearray(b"\xef\xbb\xbf")
    elif kind == "short":
        raw = raw[:rng.choice([1, 5, 9, 20, 90])]
    elif kind == "nul":
        raw = bytearray(b"\x00" * rng.choice([1, 100, 1000]))
    elif kind == "random":
        raw = bytearray(rng.randrange(256) for _ in range(rng.choice([10, 200, 2000])))
    elif kind == "surrogate":
        raw += b"\xed\xa0\x80"  # a UTF-8-encoded lone surrogate: not valid UTF-8
    else:
        raw += "€ 𝔘 ñ\u200b".encode("utf-8") * 20
    path.write_bytes(bytes(raw))
    return f"text {kind}", []


def header_bytes_text(rng, path):
    """Cut a text file short, or put an invalid UTF-8 byte in it."""
    raw = path.read_bytes()
    at = rng.randrange(len(raw))
    path.write_bytes(raw[:at] if rng.random() < 0.5 else raw[:at] + b"\xff" + raw[at:])
    return f"{path.name} bytes at {at}"


# ----------------------------------------------------------------------------- shard folders

def shard_file(rng, path, vocab_size):
    """Damage one llm.c shard: its header (magic, version, token count), its length, one token, or
    the file itself (removed, or a folder in its place)."""
    raw = bytearray(path.read_bytes())
    kind = rng.choice(["header", "header", "count", "truncate", "append", "token", "token", "gone", "folder"])
    if kind == "header":  # magic, version or token count: the first 12 bytes
        for _ in range(rng.randint(1, 2)):
            raw[rng.randrange(12)] = rng.randrange(256)
        words = ["header field"]
    elif kind == "count":
        count = rng.choice([-1, 0, 1, 2 ** 31 - 1, (len(raw) - 1024) // 2 + 1, (len(raw) - 1024) // 2 - 1])
        raw[8:12] = struct.pack("<i", count)
        words = ["token count"]
    elif kind == "truncate":
        raw = raw[:rng.choice([0, 3, 12, 1023, 1024, 1025, len(raw) - 1, len(raw) - 2])]
        words = ["header"]
    elif kind == "append":
        raw += bytes(rng.randrange(256) for _ in range(rng.choice([1, 2, 7, 1024])))
        words = ["token count"]
    elif kind == "token":
        at = 1024 + 2 * rng.randrange((len(raw) - 1024) // 2)
        value = rng.choice([vocab_size, vocab_size + 1, 65535, rng.randrange(vocab_size)])
        raw[at:at + 2] = struct.pack("<H", value)
        words = ["outside the vocabulary"]
    elif kind == "gone":
        path.unlink()
        return "shard removed", ["missing"]
    else:
        path.unlink()
        path.mkdir()
        return "a folder in the shard's place", ["not a regular file"]
    path.write_bytes(bytes(raw))
    return f"shard {kind}", words
