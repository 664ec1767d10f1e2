"""Tests of the array backend: array modules, devices, moving arrays, random numbers."""
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, strategies as st

import tinygrad_gpt as tg
from tinygrad_gpt import backend
from tinygrad_gpt.fast import chunks
from tinygrad_gpt.backend import (DeviceError, get_array_module, to_numpy, to_device, device_of,
                                  is_array, xp_for, require_device, cuda_available, scatter_add)

import strategies as S

REPO = Path(__file__).resolve().parents[1]
no_gpu_only = pytest.mark.skipif(cuda_available(), reason="checks the behaviour without a GPU")


# ----------------------------------------------------------------------------- array modules

def test_get_array_module_numpy():
    assert get_array_module(np.ones(2)) is np
    assert get_array_module(np.ones(2), np.zeros((3, 1))) is np
    assert get_array_module() is np                 # nothing given: NumPy
    assert get_array_module(None, np.ones(1)) is np  # None (an absent input) is skipped
    assert get_array_module(3.0) is np               # plain Python values count as host data


def test_is_array_and_device_of():
    assert is_array(np.ones(2)) and is_array(np.ones(()))
    assert not is_array([1, 2]) and not is_array(1.0) and not is_array(tg.Tensor([1.0]))
    assert device_of(np.ones(2)) == "cpu"
    assert xp_for("cpu") is np


@pytest.mark.gpu
def test_get_array_module_cupy_and_mixing():
    import cupy
    a, b = np.ones(2), cupy.ones(2)
    assert get_array_module(b) is cupy and device_of(b) == "cuda"
    with pytest.raises(DeviceError, match="different devices"):
        get_array_module(a, b)


# ----------------------------------------------------------------------------- moving arrays

def test_to_numpy():
    a = np.arange(3.0)
    assert to_numpy(a) is a
    out = to_numpy([1, 2])
    assert isinstance(out, np.ndarray)
    np.testing.assert_array_equal(out, [1, 2])
    np.testing.assert_array_equal(to_numpy(tg.Tensor([1.5, 2.5]).data), np.array([1.5, 2.5], dtype=np.float32))


def test_to_device_cpu_is_a_no_op():
    a = np.arange(3.0)
    assert to_device(a, "cpu") is a


@pytest.mark.gpu
def test_to_device_round_trip():
    import cupy
    a = np.arange(6.0).reshape(2, 3)
    g = to_device(a, "cuda")
    assert isinstance(g, cupy.ndarray) and device_of(g) == "cuda"
    back = to_device(g, "cpu")
    assert isinstance(back, np.ndarray)
    np.testing.assert_array_equal(back, a)
    np.testing.assert_array_equal(to_numpy(g), a)


# ----------------------------------------------------------------------------- devices

@no_gpu_only
def test_cuda_without_gpu_is_a_device_error():
    for call in (lambda: require_device("cuda"), lambda: xp_for("cuda"),
                 lambda: to_device(np.ones(2), "cuda")):
        with pytest.raises(DeviceError) as e:
            call()
        msg = str(e.value)
        assert "'cuda'" in msg and ("CuPy is not installed" in msg or "no CUDA GPU" in msg)


def test_unknown_device_names():
    for name in ("tpu", "gpu", "cuda:0", None):
        with pytest.raises(DeviceError, match="unknown device"):
            require_device(name)
    assert require_device("cpu") == "cpu"
    assert tg.DeviceError is DeviceError


def test_device_context_manager_sets_and_restores(monkeypatch):
    # pretend another device is the default, so restoring is observable without a GPU
    monkeypatch.setattr(backend, "_default_device", "elsewhere")
    with tg.device("cpu") as name:
        assert name == "cpu"
        assert tg.default_device() == "cpu"
        assert tg.Tensor([1.0]).device == "cpu"
    assert tg.default_device() == "elsewhere"


def test_device_context_manager_restores_after_an_exception(monkeypatch):
    monkeypatch.setattr(backend, "_default_device", "elsewhere")
    with pytest.raises(ZeroDivisionError):
        with tg.device("cpu"):
            1 / 0
    assert tg.default_device() == "elsewhere"


def test_device_context_manager_nests():
    before = tg.default_device()
    with tg.device("cpu"):
        with tg.device("cpu"):
            assert tg.default_device() == "cpu"
        assert tg.default_device() == "cpu"
    assert tg.default_device() == before


def test_failed_device_switch_leaves_the_default_alone():
    before = tg.default_device()
    with pytest.raises(DeviceError):
        with tg.device("tpu"):
            pass
    assert tg.default_device() == before


def _fresh_python(code, device_env):
    """Run ``code`` in a new interpreter with TINYGRAD_GPT_DEVICE set (or unset for None)."""
    env = {k: v for k, v in os.environ.items() if k != "TINYGRAD_GPT_DEVICE"}
    if device_env is not None:
        env["TINYGRAD_GPT_DEVICE"] = device_env
    env["PYTHONPATH"] = str(REPO) + os.pathsep + env.get("PYTHONPATH", "")
    return subprocess.run([sys.executable, "-c", code], env=env, cwd=REPO,
                          capture_output=True, text=True, timeout=60)


@pytest.mark.parametrize("env_value,expected", [(None, "cpu"), ("", "cpu"), ("cpu", "cpu")])
def test_default_device_comes_from_the_environment(env_value, expected):
    r = _fresh_python("import tinygrad_gpt as tg; print(tg.default_device(), tg.Tensor([1.0]).device)",
                      env_value)
    assert r.returncode == 0, r.stderr
    assert r.stdout.split() == [expected, expected]


def test_unknown_device_in_the_environment_fails_at_import():
    r = _fresh_python("import tinygrad_gpt", "tpu")
    assert r.returncode != 0
    assert "DeviceError" in r.stderr and "unknown device 'tpu'" in r.stderr


@no_gpu_only
def test_cuda_in_the_environment_without_gpu_fails_clearly_on_first_tensor():
    code = ("import tinygrad_gpt as tg\n"
            "print(tg.default_device())\n"
            "try:\n"
            "    tg.Tensor([1.0])\n"
            "except tg.DeviceError as e:\n"
            "    print('DeviceError:', e)\n")
    r = _fresh_python(code, "cuda")
    assert r.returncode == 0, r.stderr
    lines = r.stdout.splitlines()
    assert lines[0] == "cuda"
    assert lines[1].startswith("DeviceError:") and "'cuda'" in lines[1]


# ----------------------------------------------------------------------------- helpers

def test_scatter_add_accumulates_repeats():
    out = np.zeros(4)
    scatter_add(out, np.array([0, 0, 3, -1]), np.array([1.0, 2.0, 3.0, 4.0]))
    np.testing.assert_array_equal(out, [3.0, 0.0, 0.0, 7.0])
    out2 = np.zeros((3, 2))
    scatter_add(out2, (np.array([1, 1]), np.array([0, 0])), np.array([5.0, 6.0]))
    np.testing.assert_array_equal(out2, [[0, 0], [11, 0], [0, 0]])


@S.SETTINGS
@given(n=st.integers(1, 6), row=st.lists(st.integers(1, 3), max_size=2).map(tuple),
       picks=st.lists(st.integers(1, 4), min_size=1, max_size=2).map(tuple), data=st.data())
def test_scatter_add_of_rows_matches_np_add_at(n, row, picks, data):
    """The sorted, segment-summed path for integer row picks (the embedding backward) against
    np.add.at, with repeats and negative indices."""
    index = np.asarray(data.draw(st.lists(st.integers(-n, n - 1), min_size=int(np.prod(picks)),
                                          max_size=int(np.prod(picks)))), dtype=np.int64).reshape(picks)
    values = np.random.default_rng(n).standard_normal(picks + row)
    expected = np.ones((n,) + row)
    np.add.at(expected, index, values)
    got = scatter_add(np.ones((n,) + row), index, values)
    np.testing.assert_allclose(got, expected, rtol=1e-12, atol=1e-12)


def test_manual_seed_and_rng_state_round_trip():
    tg.manual_seed(5)
    a = backend.random_uniform((4,), np.float32, "cpu")
    state = backend.rng_state()
    b = backend.random_uniform((4,), np.float64, "cpu")
    backend.set_rng_state(state)
    c = backend.random_uniform((4,), np.float64, "cpu")
    tg.manual_seed(5)
    a2 = backend.random_uniform((4,), np.float32, "cpu")
    assert a.dtype == np.float32 and b.dtype == np.float64
    assert np.all((a >= 0) & (a < 1))
    np.testing.assert_array_equal(b, c)
    np.testing.assert_array_equal(a, a2)
    assert not np.array_equal(a.astype(np.float64), b)


def test_tune_allocator_reports_whether_it_applied():
    import sys
    from tinygrad_gpt.run.settings import tune_allocator
    applied = tune_allocator()
    assert isinstance(applied, bool)
    if sys.platform.startswith("linux") and "glibc" in " ".join(__import__("platform").libc_ver()):
        assert applied


@pytest.mark.parametrize("size, chunk", [(10, 4), (8, 4), (7, 4), (3, 4), (chunks.CHUNKED_MIN + 9, 1 << 16)])
def test_for_chunks_covers_the_range_once_in_order(size, chunk):
    """Small work is one slice; larger work is contiguous slices of ``chunk`` (the last one
    short) that cover range(n) exactly once, in order, on one thread or two."""
    slices = chunks.for_chunks(lambda s: (s.start, s.stop), size, np.zeros(size), chunk=chunk)
    if size < 2 * chunk:
        assert slices == [(0, size)]
    else:
        assert slices[0][0] == 0 and slices[-1][1] == size
        assert all(a[1] == b[0] for a, b in zip(slices, slices[1:]))
        assert all(stop - start == chunk for start, stop in slices[:-1])
        assert 0 < slices[-1][1] - slices[-1][0] <= chunk
