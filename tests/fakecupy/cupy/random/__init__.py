"""``cupy.random.RandomState`` of the stand-in, with CuPy's semantics, not its numbers.

As in CuPy: creating one makes a generator (counted in COUNTS["generators"]);
``seed(s)`` takes s as a uint64, restarts the stream from its beginning and makes no new
generator; the same seed gives the same numbers; ``random_sample`` makes float32 or
float64 in [0, 1) on the device, and other dtypes are a TypeError.
"""
import os

import numpy as _np

from ..cuda import curand
from .._core import COUNTS, ndarray


class RandomState:
    def __init__(self, seed=None, method=curand.CURAND_RNG_PSEUDO_DEFAULT):
        COUNTS["generators"] += 1
        self.method = method
        self.seed(seed)

    def seed(self, seed=None):
        if seed is None:
            seed = int.from_bytes(os.urandom(8), "little")
        elif isinstance(seed, ndarray):
            raise TypeError("seed must be an integer")
        seed = int(_np.asarray(seed).astype(_np.uint64))
        self._gen = _np.random.Generator(_np.random.Philox(key=seed))

    def random_sample(self, size=None, dtype=float):
        dtype = _np.dtype(dtype)
        if dtype.char not in "fd":
            raise TypeError(f"cupy.random only supports float32 and float64, got {dtype}")
        return ndarray._from(_np.asarray(self._gen.random(size, dtype=dtype)))

    def standard_normal(self, size=None, dtype=float):
        dtype = _np.dtype(dtype)
        if dtype.char not in "fd":
            raise TypeError(f"cupy.random only supports float32 and float64, got {dtype}")
        return ndarray._from(_np.asarray(self._gen.standard_normal(size, dtype=dtype)))


_state = None


def get_random_state():
    global _state
    if _state is None:
        _state = RandomState()
    return _state


def seed(seed=None):
    get_random_state().seed(seed)


def random_sample(size=None, dtype=float):
    return get_random_state().random_sample(size, dtype)
