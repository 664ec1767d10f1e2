"""Read and write tensors in the safetensors format, with NumPy only and no pickle.

A safetensors file is three parts::

    8 bytes       little-endian u64: the header length N
    N bytes       UTF-8 JSON: {"name": {"dtype": "F32", "shape": [2, 3], "data_offsets": [0, 24]},
                               ..., "__metadata__": {"key": "value"}}
    the rest      the raw little-endian bytes of every tensor, offsets relative to this section

    >>> save_file({"w": np.ones((2, 3), np.float32)}, "model.safetensors")  # doctest: +SKIP
    >>> tensors, metadata = load_file("model.safetensors")                  # doctest: +SKIP
    >>> tensors["w"].shape                                                  # doctest: +SKIP
    (2, 3)

Unlike pickle, loading never runs code. Every file is validated before anything is
returned, and ``save_file`` adds a sha256 of the data section to the metadata, so a
flipped bit is caught on load. Writes are atomic: a crash leaves the old file intact.
"""
import hashlib
import json
import math
import os
import struct

import numpy as np

from ..backend import to_device, to_numpy
from ..errors import CheckpointError
from .fileio import describe, write_atomic

# safetensors dtype name -> little-endian NumPy dtype. BF16 has no NumPy dtype: it is
# read as raw 16-bit words and widened to float32 (and never written).
DTYPES = {"F64": "<f8", "F32": "<f4", "F16": "<f2", "BF16": "<u2",
          "I64": "<i8", "I32": "<i4", "I16": "<i2", "I8": "i1",
          "U64": "<u8", "U32": "<u4", "U16": "<u2", "U8": "u1", "BOOL": "?"}
_WRITE_NAMES = {np.dtype(code).str: name for name, code in DTYPES.items() if name != "BF16"}
SHA_KEY = "sha256"
MAX_HEADER_BYTES = 100 * 1024 * 1024  # the same limit as the reference implementation
MAX_NDIM = 64  # NumPy's limit on dimensions


# ----------------------------------------------------------------------------- writing

def save_file(tensors, path, metadata=None):
    """Write ``tensors`` (a dict of name -> array) to ``path`` atomically.

    ``metadata`` is an optional dict of str -> str; the key "sha256" is reserved
    and set to the checksum of the data section.

        >>> save_file({"b": np.zeros(4, np.float32)}, "b.safetensors", {"step": "10"})  # doctest: +SKIP
    """
    path = os.fspath(path)
    arrays = _check_tensors(tensors, path)
    metadata = _check_metadata(metadata, path)
    header, blobs, offset = {}, [], 0
    for name, x in arrays.items():
        blob = x.tobytes()
        header[name] = {"dtype": _WRITE_NAMES[x.dtype.str], "shape": list(x.shape),
                        "data_offsets": [offset, offset + len(blob)]}
        blobs.append(blob)
        offset += len(blob)
    sha = hashlib.sha256()
    for blob in blobs:
        sha.update(blob)
    header["__metadata__"] = {**metadata, SHA_KEY: sha.hexdigest()}
    raw = json.dumps(header, separators=(",", ":"), ensure_ascii=False).encode("utf-8")
    raw += b" " * (-len(raw) % 8)  # pad so the data section starts 8-byte aligned
    write_atomic(path, [struct.pack("<Q", len(raw)), raw, *blobs])


def _check_tensors(tensors, path):
    """Validate names and dtypes; return name -> contiguous little-endian NumPy array."""
    if not isinstance(tensors, dict):
        raise CheckpointError(f"{path}: tensors must be a dict of name -> array, got {type(tensors).__name__}")
    arrays = {}
    for name, x in tensors.items():
        if not isinstance(name, str) or not name or name == "__metadata__":
            raise CheckpointError(f"{path}: invalid tensor name {name!r}")
        x = to_numpy(x)
        if x.dtype.str.replace(">", "<") not in _WRITE_NAMES:
            raise CheckpointError(f"{path}: tensor {name!r} has unsupported dtype {x.dtype}; "
                                  f"supported: {', '.join(n for n in DTYPES if n != 'BF16')}")
        arrays[name] = np.asarray(x, dtype=x.dtype.newbyteorder("<"), order="C")  # keeps 0-d shapes
    return arrays


def _check_metadata(metadata, path):
    metadata = {} if metadata is None else metadata
    if not isinstance(metadata, dict) or not all(isinstance(k, str) and isinstance(v, str)
                                                 for k, v in metadata.items()):
        raise CheckpointError(f"{path}: metadata must be a dict of str -> str")
    return dict(metadata)


# ----------------------------------------------------------------------------- reading

def read_metadata(path):
    """The ``__metadata__`` dict of a file, after validating its header and size (data not hashed).

        >>> read_metadata("model.safetensors")["step"]  # doctest: +SKIP
        '10'
    """
    _, _, metadata = _read_header(os.fspath(path))
    return metadata


def load_file(path, device=None):
    """Load and fully validate a file; return ``(tensors, metadata)``.

    Tensors are new, writable, native-byte-order NumPy arrays (or moved to ``device``
    when one is given, e.g. "cuda"). BF16 tensors come back as float32. The metadata
    includes the "sha256" entry when the file has one.

        >>> tensors, metadata = load_file("model.safetensors")  # doctest: +SKIP
    """
    path = os.fspath(path)
    data_start, entries, metadata = _read_header(path)
    tensors, sha = {}, hashlib.sha256()
    with open(path, "rb") as f:
        f.seek(data_start)
        # Entries are contiguous and sorted by offset, so reading them in order hashes the data section.
        for name, dtype, shape, (begin, end) in sorted(entries, key=lambda e: e[3][0]):
            x = np.empty(shape, dtype=np.dtype(DTYPES[dtype]))
            buf = x.reshape(-1).view(np.uint8)
            if f.readinto(buf) != end - begin:
                raise CheckpointError(f"{path}: file ended while reading tensor {name!r} (was it truncated?)")
            sha.update(buf)
            tensors[name] = _to_native(x, dtype)
    expected = metadata.get(SHA_KEY)
    if expected is not None and sha.hexdigest() != expected:
        raise CheckpointError(f"{path}: data checksum mismatch (sha256 {sha.hexdigest()}, header says "
                              f"{expected}): the file is corrupted")
    tensors = {name: tensors[name] for name, *_ in entries}  # back to header order
    if device is not None:
        tensors = {name: to_device(x, device) for name, x in tensors.items()}
    return tensors, metadata


def _to_native(x, dtype):
    if dtype == "BF16":  # bfloat16 is the top half of a float32
        return (x.astype(np.uint32) << 16).view(np.float32)
    return x.astype(x.dtype.newbyteorder("="), copy=False)


def _read_header(path):
    """Validate everything but the data bytes; return (data_start, entries, metadata)."""
    def fail(problem):
        return CheckpointError(f"{path}: {problem}")

    if not os.path.exists(path):
        raise fail("no such file")
    if not os.path.isfile(path):
        raise fail("not a regular file")
    size = os.path.getsize(path)
    try:
        with open(path, "rb") as f:
            head = f.read(8)
            n = struct.unpack("<Q", head)[0] if len(head) == 8 else 0
            raw = f.read(n) if n <= min(size - 8, MAX_HEADER_BYTES) else b""  # the length is checked first
    except OSError as e:  # e.g. no permission to read it, an I/O error: as every file error says it
        raise CheckpointError(describe(e, "reading", path)) from None
    if len(head) < 8:
        raise fail(f"file is only {size} bytes, too short to be a safetensors file")
    if not raw.startswith(b"{"):
        _refuse_foreign(head, fail)
        if n > size - 8:
            raise fail(f"header length {n} is larger than the file ({size} bytes): truncated or not safetensors")
        if n > MAX_HEADER_BYTES:
            raise fail(f"header length {n} exceeds the {MAX_HEADER_BYTES}-byte limit")
    header = _parse_json(raw, fail)
    metadata = header.pop("__metadata__", None)
    metadata = {} if metadata is None else metadata
    if not isinstance(metadata, dict):
        raise fail(f"__metadata__ must be an object of string -> string, got {type(metadata).__name__}")
    for key, value in metadata.items():
        if not isinstance(value, str):
            raise fail(f"__metadata__ entry {key!r} must be a string, got {type(value).__name__}")
    entries = [_check_entry(name, info, fail) for name, info in header.items()]
    _check_layout(entries, size - 8 - n, fail)
    return 8 + n, entries, metadata


def _refuse_foreign(head, fail):
    """Give pickles and torch zip archives a clear message instead of a parse error."""
    if head.startswith(b"PK"):
        raise fail("looks like a zip archive (a torch .bin/.pt file); such files hold pickles, "
                   "which are refused because loading a pickle can run arbitrary code")
    if head[0] == 0x80 and 2 <= head[1] <= 5:  # the PROTO opcode, then protocol 2..5
        raise fail(f"looks like a pickle file (protocol {head[1]}); pickle is refused because "
                   "loading it can run arbitrary code")


def _parse_json(raw, fail):
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as e:
        raise fail(f"header is not valid UTF-8 (byte offset {8 + e.start})") from None

    def no_duplicates(pairs):
        keys = [k for k, _ in pairs]
        if len(set(keys)) != len(keys):
            raise fail(f"header has duplicate key {next(k for k in keys if keys.count(k) > 1)!r}")
        return dict(pairs)
    try:
        header = json.loads(text, object_pairs_hook=no_duplicates)
    except json.JSONDecodeError as e:
        raise fail(f"header is not valid JSON ({e.msg} at header position {e.pos})") from None
    except CheckpointError:  # a duplicate key, from no_duplicates
        raise
    except (ValueError, RecursionError) as e:
        raise fail(f"header is not valid JSON ({json_problem(e)})") from None
    if not isinstance(header, dict):
        raise fail(f"header must be a JSON object, got {type(header).__name__}")
    return header


def json_problem(e):
    """What Python's json refused beyond a syntax error: a number too long, nesting too deep."""
    if isinstance(e, RecursionError):
        return "it is nested too deeply"
    if "digits" in str(e):
        return "it holds an integer of thousands of digits"
    return str(e)[:100]


def is_int(v):
    """A JSON integer: an int that is not a bool (``True`` is an int to Python).

        >>> is_int(3), is_int(True), is_int(3.0)
        (True, False, False)
    """
    return isinstance(v, int) and not isinstance(v, bool)


def _check_entry(name, info, fail):
    """One header entry -> (name, dtype, shape, (begin, end)), or a CheckpointError."""
    if not isinstance(info, dict):
        raise fail(f"tensor {name!r}: entry must be an object")
    dtype, shape, offsets = info.get("dtype"), info.get("shape"), info.get("data_offsets")
    if not isinstance(dtype, str) or dtype not in DTYPES:
        raise fail(f"tensor {name!r}: unknown dtype {str(dtype)[:40]!r}")
    if (not isinstance(shape, list) or len(shape) > MAX_NDIM
            or not all(is_int(d) and d >= 0 for d in shape)):
        raise fail(f"tensor {name!r}: shape must be a list of at most {MAX_NDIM} non-negative integers, "
                   f"got {str(shape)[:60]}")
    if math.prod(d for d in shape if d) >= 2 ** 62 // 8:  # an empty tensor still needs a shape NumPy can hold
        raise fail(f"tensor {name!r}: shape {shape} is too large")
    if (not isinstance(offsets, list) or len(offsets) != 2 or not all(is_int(o) for o in offsets)
            or not 0 <= offsets[0] <= offsets[1]):
        raise fail(f"tensor {name!r}: data_offsets must be [begin, end] with 0 <= begin <= end, "
                   f"got {str(offsets)[:60]}")
    nbytes = math.prod(shape) * np.dtype(DTYPES[dtype]).itemsize
    if offsets[1] - offsets[0] != nbytes:
        raise fail(f"tensor {name!r}: data_offsets {offsets} span {offsets[1] - offsets[0]} bytes "
                   f"but {dtype} {shape} needs {nbytes}")
    return name, dtype, tuple(shape), tuple(offsets)


def _check_layout(entries, data_len, fail):
    """Tensors must tile the data section exactly: no overlaps, no gaps, nothing past the end."""
    pos, prev = 0, None
    for name, _, _, (begin, end) in sorted(entries, key=lambda e: (e[3][0], e[3][1])):
        if end > data_len:
            raise fail(f"tensor {name!r}: data_offsets end {end} is past the data section "
                       f"({data_len} bytes): the file is truncated")
        if begin < pos:
            raise fail(f"tensor {name!r}: data_offsets [{begin}, {end}] overlap tensor {prev!r}")
        if begin > pos:
            raise fail(f"{begin - pos} unused bytes before tensor {name!r} in the data section")
        pos, prev = end, name
    if pos != data_len:
        raise fail(f"file size does not match the header: tensors use {pos} data bytes "
                   f"but the file has {data_len}")
