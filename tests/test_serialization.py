import hashlib
import json
import os
import pickle
import struct
import zipfile

import numpy as np
import pytest

from tinygrad_gpt.storage import serialization
from tinygrad_gpt.storage.serialization import CheckpointError, load_file, read_metadata, save_file

WRITABLE = [np.float64, np.float32, np.float16, np.int64, np.int32, np.int16, np.int8,
            np.uint64, np.uint32, np.uint16, np.uint8, np.bool_]


def _sample(dtype, shape, seed=0):
    rng = np.random.default_rng(seed)
    if dtype == np.bool_:
        return rng.random(shape) < 0.5
    if np.issubdtype(dtype, np.integer):
        info = np.iinfo(dtype)
        return rng.integers(info.min, info.max, size=shape, dtype=dtype, endpoint=True)
    return rng.standard_normal(shape).astype(dtype)


def _write_raw(path, header, data=b""):
    """A safetensors file with an arbitrary header, written by hand (no sha unless given)."""
    raw = json.dumps(header).encode("utf-8")
    path.write_bytes(struct.pack("<Q", len(raw)) + raw + data)
    return path


# ----------------------------------------------------------------------------- round trips

@pytest.mark.parametrize("dtype", WRITABLE, ids=lambda d: np.dtype(d).name)
def test_round_trip_each_dtype(tmp_path, dtype):
    tensors = {"a": _sample(dtype, (3, 5)), "scalar": _sample(dtype, ()), "empty": _sample(dtype, (0, 4))}
    path = tmp_path / "t.safetensors"
    save_file(tensors, path)
    back, _ = load_file(path)
    assert list(back) == ["a", "scalar", "empty"]
    for name, x in tensors.items():
        assert back[name].dtype == x.dtype and back[name].shape == x.shape
        assert np.array_equal(back[name], x)
        assert back[name].flags.writeable and back[name].flags.owndata


def test_arrays_are_independent_and_writable(tmp_path):
    path = tmp_path / "t.safetensors"
    save_file({"a": np.zeros(4, np.float32), "b": np.ones(4, np.float32)}, path)
    back, _ = load_file(path)
    back["a"] += 5
    assert np.array_equal(back["b"], np.ones(4)) and np.array_equal(back["a"], np.full(4, 5))


def test_big_endian_and_non_contiguous_inputs(tmp_path):
    x = np.arange(12, dtype=">f4").reshape(3, 4)
    save_file({"be": x, "t": x.T, "step": x[:, ::2]}, tmp_path / "t.safetensors")
    back, _ = load_file(tmp_path / "t.safetensors")
    assert back["be"].dtype == np.float32 and np.array_equal(back["be"], x)
    assert np.array_equal(back["t"], x.T) and np.array_equal(back["step"], x[:, ::2])


def test_layout_is_standard(tmp_path):
    path = tmp_path / "t.safetensors"
    save_file({"w": np.arange(6, dtype=np.float32).reshape(2, 3)}, path, {"step": "7"})
    raw = path.read_bytes()
    (n,) = struct.unpack("<Q", raw[:8])
    assert n % 8 == 0  # the data section is 8-byte aligned
    header = json.loads(raw[8:8 + n])
    assert header["w"] == {"dtype": "F32", "shape": [2, 3], "data_offsets": [0, 24]}
    assert raw[8 + n:] == np.arange(6, dtype="<f4").tobytes()
    assert header["__metadata__"]["sha256"] == hashlib.sha256(raw[8 + n:]).hexdigest()


def test_metadata_round_trip(tmp_path):
    path = tmp_path / "t.safetensors"
    meta = {"step": "100", "config": json.dumps({"n_layer": 2}), "note": "ünïcode"}
    save_file({"x": np.ones(2, np.float32)}, path, meta)
    _, back = load_file(path)
    assert {k: back[k] for k in meta} == meta and set(back) == set(meta) | {"sha256"}
    assert read_metadata(path) == back
    save_file({"x": np.ones(3, np.float32)}, path, back)  # re-saving recomputes the sha
    assert load_file(path)[0]["x"].shape == (3,)


def test_bf16_is_read_as_float32(tmp_path):
    values = np.array([1.0, -2.5, 3.140625, 0.0], dtype=np.float32)
    words = (values.view(np.uint32) >> 16).astype("<u2")  # these values are exact in bfloat16
    path = _write_raw(tmp_path / "bf.safetensors",
                      {"h": {"dtype": "BF16", "shape": [2, 2], "data_offsets": [0, 8]}}, words.tobytes())
    back, meta = load_file(path)
    assert meta == {} and back["h"].dtype == np.float32
    assert np.array_equal(back["h"], values.reshape(2, 2))


def test_foreign_file_without_sha_loads(tmp_path):
    a = np.arange(4, dtype="<i4")
    b = np.array([True, False])
    header = {"__metadata__": {"format": "pt"},
              "b": {"dtype": "BOOL", "shape": [2], "data_offsets": [16, 18]},
              "a": {"dtype": "I32", "shape": [4], "data_offsets": [0, 16]}}
    path = _write_raw(tmp_path / "foreign.safetensors", header, a.tobytes() + b.tobytes())
    back, meta = load_file(path)
    assert meta == {"format": "pt"}
    assert np.array_equal(back["a"], a) and np.array_equal(back["b"], b)


def test_unsupported_dtypes_and_names_are_refused(tmp_path):
    path = tmp_path / "t.safetensors"
    with pytest.raises(CheckpointError, match="unsupported dtype complex64"):
        save_file({"c": np.zeros(2, np.complex64)}, path)
    with pytest.raises(CheckpointError, match="invalid tensor name"):
        save_file({"__metadata__": np.zeros(2)}, path)
    with pytest.raises(CheckpointError, match="str -> str"):
        save_file({"a": np.zeros(2)}, path, {"step": 3})
    assert not path.exists()


# ----------------------------------------------------------------------------- damaged and foreign files

@pytest.fixture
def good(tmp_path):
    path = tmp_path / "good.safetensors"
    save_file({"w": np.arange(64, dtype=np.float32), "b": np.ones(3, np.int64)}, path, {"step": "1"})
    return path


def _one_line_error(path, match):
    with pytest.raises(CheckpointError, match=match) as e:
        load_file(path)
    assert str(path) in str(e.value) and "\n" not in str(e.value)
    return str(e.value)


def test_missing_file(tmp_path):
    _one_line_error(tmp_path / "nope.safetensors", "no such file")


def test_too_short(tmp_path):
    path = tmp_path / "short.safetensors"
    path.write_bytes(b"\x01\x00")
    _one_line_error(path, "only 2 bytes")


def test_truncated_data(good):
    raw = good.read_bytes()
    good.write_bytes(raw[:-5])
    _one_line_error(good, "truncated")
    with pytest.raises(CheckpointError):
        read_metadata(good)


def test_truncated_inside_header(good):
    good.write_bytes(good.read_bytes()[:20])
    _one_line_error(good, "header length .* larger than the file")


def test_extra_trailing_bytes(good):
    good.write_bytes(good.read_bytes() + b"\x00" * 4)
    _one_line_error(good, "file size does not match")


def test_bit_flip_in_data_is_caught(good):
    raw = bytearray(good.read_bytes())
    raw[-20] ^= 0x04
    good.write_bytes(bytes(raw))
    _one_line_error(good, "checksum mismatch")
    assert read_metadata(good)["step"] == "1"  # the header alone is still fine


def test_bad_header_json(tmp_path):
    raw = b'{"a": {"dtype": "F32",'
    path = tmp_path / "bad.safetensors"
    path.write_bytes(struct.pack("<Q", len(raw)) + raw)
    _one_line_error(path, "not valid JSON")


def test_header_not_utf8_or_not_object(tmp_path):
    path = tmp_path / "bad.safetensors"
    path.write_bytes(struct.pack("<Q", 3) + b"{\xff}")
    _one_line_error(path, "not valid UTF-8")
    _write_raw(path, [1, 2])
    _one_line_error(path, "must be a JSON object")


def test_header_length_larger_than_file(tmp_path):
    path = tmp_path / "huge.safetensors"
    path.write_bytes(struct.pack("<Q", 10**12) + b"{}")
    _one_line_error(path, "header length 1000000000000 is larger than the file")


@pytest.mark.parametrize("entry, data, match", [
    ({"dtype": "F8", "shape": [1], "data_offsets": [0, 1]}, b"\0", "unknown dtype 'F8'"),
    ({"dtype": "F32", "shape": [-1], "data_offsets": [0, 4]}, b"\0" * 4, "non-negative"),
    ({"dtype": "F32", "shape": [1.0], "data_offsets": [0, 4]}, b"\0" * 4, "non-negative"),
    ({"dtype": "F32", "shape": [2], "data_offsets": [0, 4]}, b"\0" * 4, "needs 8"),
    ({"dtype": "F32", "shape": [1], "data_offsets": [4, 0]}, b"\0" * 4, "begin <= end"),
    ({"dtype": "F32", "shape": [1], "data_offsets": [4, 8]}, b"\0" * 8, "unused bytes"),
    ({"dtype": "F32", "shape": [2], "data_offsets": [0, 8]}, b"\0" * 4, "past the data section"),
    ({"dtype": "F32", "shape": [1]}, b"\0" * 4, "data_offsets"),
])
def test_bad_entries(tmp_path, entry, data, match):
    path = _write_raw(tmp_path / "bad.safetensors", {"x": entry}, data)
    _one_line_error(path, match)


def test_overlapping_tensors(tmp_path):
    header = {"a": {"dtype": "F32", "shape": [2], "data_offsets": [0, 8]},
              "b": {"dtype": "F32", "shape": [1], "data_offsets": [4, 8]}}
    _one_line_error(_write_raw(tmp_path / "o.safetensors", header, b"\0" * 8), "overlap")


def test_bad_metadata_and_duplicates(tmp_path):
    path = _write_raw(tmp_path / "m.safetensors", {"__metadata__": {"step": 3}})
    _one_line_error(path, "__metadata__")
    raw = b'{"a": {"dtype": "U8", "shape": [0], "data_offsets": [0, 0]}, ' \
          b'"a": {"dtype": "U8", "shape": [0], "data_offsets": [0, 0]}}'
    path.write_bytes(struct.pack("<Q", len(raw)) + raw)
    _one_line_error(path, "duplicate key 'a'")


def test_pickle_is_refused(tmp_path):
    path = tmp_path / "model.pkl"
    path.write_bytes(pickle.dumps({"a": 1}))
    msg = _one_line_error(path, "pickle")
    assert "run arbitrary code" in msg


def test_torch_zip_is_refused(tmp_path):
    path = tmp_path / "pytorch_model.bin"
    with zipfile.ZipFile(path, "w") as z:
        z.writestr("archive/data.pkl", pickle.dumps({"a": 1}))
    msg = _one_line_error(path, "zip archive")
    assert "torch" in msg and "pickle" in msg


def test_header_length_starting_with_0x80_is_not_called_a_pickle(tmp_path):
    # A header of exactly 128 bytes makes the file start with b"\x80\x00": valid safetensors.
    header = {"x": {"dtype": "U8", "shape": [1], "data_offsets": [0, 1]}, "__metadata__": {"p": ""}}
    raw = json.dumps(header).encode()
    raw += b" " * (128 - len(raw))
    path = tmp_path / "x.safetensors"
    path.write_bytes(struct.pack("<Q", 128) + raw + b"\x07")
    assert path.read_bytes()[0] == 0x80
    assert load_file(path)[0]["x"].tolist() == [7]


# ----------------------------------------------------------------------------- atomic writes

def test_crash_during_replace_keeps_old_file(good, monkeypatch):
    before = good.read_bytes()

    def crash(src, dst):
        raise OSError("simulated crash")
    monkeypatch.setattr(serialization.os, "replace", crash)
    with pytest.raises(OSError, match="simulated crash"):
        save_file({"w": np.zeros(1000, np.float32)}, good)
    assert good.read_bytes() == before
    assert os.listdir(good.parent) == [good.name]  # the temp file was removed
    assert load_file(good)[0]["w"].shape == (64,)


def test_crash_midway_through_write_keeps_old_file(good, monkeypatch):
    before = good.read_bytes()
    real_fsync = os.fsync
    calls = []

    def crash(fd):
        calls.append(fd)
        raise KeyboardInterrupt  # even an interrupt must not leave a temp file behind
    monkeypatch.setattr(serialization.os, "fsync", crash)
    with pytest.raises(KeyboardInterrupt):
        save_file({"w": np.zeros(10, np.float32)}, good)
    monkeypatch.setattr(serialization.os, "fsync", real_fsync)
    assert calls and good.read_bytes() == before
    assert os.listdir(good.parent) == [good.name]


def test_save_replaces_existing_file(good):
    save_file({"new": np.arange(3, dtype=np.int8)}, good)
    back, _ = load_file(good)
    assert list(back) == ["new"] and back["new"].tolist() == [0, 1, 2]
    assert os.listdir(good.parent) == [good.name]


# ----------------------------------------------------------------------------- interoperability

def test_interop_with_safetensors_package(tmp_path):
    st = pytest.importorskip("safetensors.numpy")
    theirs = {"a": np.arange(6, dtype=np.float32).reshape(2, 3), "b": np.array([1, 2], np.int64)}
    st.save_file(theirs, str(tmp_path / "theirs.safetensors"), metadata={"k": "v"})
    back, meta = load_file(tmp_path / "theirs.safetensors")
    assert meta == {"k": "v"} and all(np.array_equal(back[k], v) for k, v in theirs.items())
    save_file(theirs, tmp_path / "ours.safetensors", {"k": "v"})
    loaded = st.load_file(str(tmp_path / "ours.safetensors"))
    assert all(np.array_equal(loaded[k], v) for k, v in theirs.items())
