"""Shared pytest setup: the device the suite runs on, and the ``gpu`` marker.

    pytest tests                      # on the CPU (or on $TINYGRAD_GPT_DEVICE)
    pytest tests --device=cuda        # the same op suite through CuPy
    TINYGRAD_GPT_FAKE_CUPY=1 pytest tests --device=cuda   # the same, on the CuPy stand-in

The op tests are written once over the ``xp`` fixture (NumPy or CuPy) and make
their Tensors on the ``device`` fixture's device, which is also put in effect as
the default device with ``tinygrad_gpt.device(name)`` for the whole session.
Asking for ``cuda`` on a machine without a usable GPU skips every test with the
reason, and tests marked ``gpu`` skip whenever no GPU is available.

With TINYGRAD_GPT_FAKE_CUPY=1, ``tests/fakecupy`` (a strict CuPy stand-in that runs on
the CPU) goes first on ``sys.path`` before the package is imported, so ``cuda`` is the
stand-in. Tests marked ``host_only`` skip under ``--device=cuda``; the summary says how
many tests ran on the device.
"""
import os
import sys

import pytest

if os.environ.get("TINYGRAD_GPT_FAKE_CUPY") == "1":  # before the package imports CuPy
    sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "fakecupy"))
    os.environ["PYTHONPATH"] = os.pathsep.join(
        p for p in (sys.path[0], os.environ.get("PYTHONPATH")) if p)  # for subprocesses too

import tinygrad_gpt  # noqa: E402
from tinygrad_gpt import backend  # noqa: E402

DEVICE_CHOICES = ("cpu", "cuda")


def pytest_addoption(parser):
    parser.addoption(
        "--device", action="store", default=None, choices=DEVICE_CHOICES,
        help="device the engine tests run on: cpu or cuda "
             "(default: $TINYGRAD_GPT_DEVICE, else cpu)")
    parser.addoption(
        "--runslow", action="store_true", default=False,
        help="also run the tests marked slow: long end-to-end runs of the examples that check the "
             "docs' figures (CI runs them)")


def pytest_configure(config):
    # setup.cfg registers the markers too; registering again is harmless and keeps
    # `--strict-markers` working when the tests run from another config.
    config.addinivalue_line("markers", "gpu: runs on a CUDA device through CuPy (skipped without one)")
    config.addinivalue_line("markers", "host_only(why): runs on the host only; skipped under --device=cuda")
    config._device_ran = 0


def requested_device(config):
    """The device named by --device, else $TINYGRAD_GPT_DEVICE, else "cpu"."""
    name = config.getoption("--device") or os.environ.get("TINYGRAD_GPT_DEVICE") or "cpu"
    if name not in DEVICE_CHOICES:
        raise pytest.UsageError(f"unknown device {name!r} (from TINYGRAD_GPT_DEVICE): "
                                f"expected one of {', '.join(DEVICE_CHOICES)}")
    return name


def _why_no_gpu():
    if backend._cupy is None:
        return "CuPy is not installed"
    return "CuPy found no CUDA GPU"


def pytest_collection_modifyitems(config, items):
    if not config.getoption("--runslow"):
        skip_slow = pytest.mark.skip(reason="a long end-to-end check: run it with --runslow")
        for item in items:
            if item.get_closest_marker("slow") is not None:
                item.add_marker(skip_slow)
    name = requested_device(config)
    if name == "cuda":
        for item in items:
            marker = item.get_closest_marker("host_only")
            if marker is not None:
                why = marker.args[0] if marker.args else "it runs on the host"
                item.add_marker(pytest.mark.skip(reason=f"host only: {why}"))
    if backend.cuda_available():
        return
    if name == "cuda":
        skip_all = pytest.mark.skip(reason=f"--device=cuda requested but {_why_no_gpu()}")
        for item in items:
            item.add_marker(skip_all)
        return
    skip_gpu = pytest.mark.skip(reason=f"needs a CUDA GPU: {_why_no_gpu()}")
    for item in items:
        if item.get_closest_marker("gpu") is not None:
            item.add_marker(skip_gpu)


@pytest.fixture(scope="session", autouse=True)
def device(request):
    """The device name ("cpu" or "cuda"), in effect as the default device for new tensors."""
    name = requested_device(request.config)
    if name == "cuda" and not backend.cuda_available():  # normally skipped at collection already
        pytest.skip(f"--device=cuda requested but {_why_no_gpu()}")
    with tinygrad_gpt.device(name):
        yield name


@pytest.fixture(scope="session")
def xp(device):
    """The array module of the device under test: numpy, or cupy for --device=cuda."""
    return backend.xp_for(device)


def pytest_runtest_logreport(report):
    """Count the tests whose body ran with ``cuda`` as the default device."""
    config = _CONFIG[0]
    if (report.when == "call" and not report.skipped and requested_device(config) == "cuda"
            and backend.cuda_available()):
        config._device_ran += 1


_CONFIG = [None]


def pytest_sessionstart(session):
    _CONFIG[0] = session.config


def pytest_terminal_summary(terminalreporter, config):
    """Say how many tests ran on the device."""
    if requested_device(config) != "cuda":
        terminalreporter.write_line("tests run on the device: 0 (the suite ran on the host, NumPy)")
        return
    which = "the CuPy stand-in" if getattr(backend._cupy, "STAND_IN", False) else "CuPy"
    terminalreporter.write_line(f"tests run on the device (cuda, {which}): {config._device_ran}")


# the optional extra that installs each module a test may import and skip without
EXTRAS = {"torch": "parity", "transformers": "parity", "tokenizers": "parity", "safetensors": "parity",
          "matplotlib": "plot", "numba": "numba", "mpi4py": "mpi", "cupy": "cuda"}


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    """A test skipped for a missing optional module says which extra installs it."""
    outcome = yield
    report = outcome.get_result()
    if report.skipped and isinstance(report.longrepr, tuple) and len(report.longrepr) == 3:
        path, line, reason = report.longrepr
        for module, extra in EXTRAS.items():
            if f"could not import '{module}" in reason:
                report.longrepr = (path, line, f"{reason} (the {extra} extra: pip install -e \".[{extra}]\")")
                break
