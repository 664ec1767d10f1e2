"""Shared pytest setup: the device the suite runs on, and the ``gpu`` marker.

    pytest tests                      # on the CPU (or on $TINYGRAD_GPT_DEVICE)
    pytest tests --device=cuda        # the same op suite through CuPy

The op tests are written once over the ``xp`` fixture (NumPy or CuPy) and make
their Tensors on the ``device`` fixture's device, which is also put in effect as
the default device with ``tinygrad_gpt.device(name)`` for the whole session.
Asking for ``cuda`` on a machine without a usable GPU skips every test with the
reason, and tests marked ``gpu`` skip whenever no GPU is available.
"""
import os

import pytest

import tinygrad_gpt
from tinygrad_gpt import backend

DEVICE_CHOICES = ("cpu", "cuda")


def pytest_addoption(parser):
    parser.addoption(
        "--device", action="store", default=None, choices=DEVICE_CHOICES,
        help="device the engine tests run on: cpu or cuda "
             "(default: $TINYGRAD_GPT_DEVICE, else cpu)")


def pytest_configure(config):
    # setup.cfg registers the markers too; registering again is harmless and keeps
    # `--strict-markers` working when the tests run from another config.
    config.addinivalue_line("markers", "gpu: runs on a CUDA device through CuPy (skipped without one)")


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
    if backend.cuda_available():
        return
    name = requested_device(config)
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
