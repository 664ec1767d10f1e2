"""``cupy.cuda`` of the stand-in: one device, streams that finish at once, a memory pool."""
from . import curand, runtime  # noqa: F401
from .._core import _Device


class Device(_Device):
    def __init__(self, device=None):
        if device not in (None, 0):
            raise RuntimeError(f"cudaErrorInvalidDevice: device {device} of 1")

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False

    def use(self):
        pass


class MemoryPool:
    def used_bytes(self):
        return 0

    def total_bytes(self):
        return 0

    def free_all_blocks(self):
        pass


_pool = MemoryPool()


def get_device_id():
    return 0


def get_default_memory_pool():
    return _pool


def is_available():
    return True
