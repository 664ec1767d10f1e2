"""The array backend: NumPy on the CPU, CuPy on CUDA GPUs.

This is the only module that knows CuPy exists. Everything else asks an array
for its module (``xp = get_array_module(x)``) and calls ``xp.exp``, ``xp.matmul``
and so on, so the same op code runs on both devices.

    >>> import numpy as np
    >>> get_array_module(np.ones(3)) is np
    True
"""
import contextlib
import os

import numpy as np

from .errors import DeviceError

try:  # CuPy is optional: without it only the "cpu" device exists.
    import cupy as _cupy
except Exception:  # ImportError, or a CuPy that cannot find its CUDA libraries
    _cupy = None

DEVICES = ("cpu", "cuda")


def _check_device_name(device):
    if device not in DEVICES:
        raise DeviceError(f"unknown device {device!r}: expected one of {', '.join(DEVICES)}")
    return device


def cuda_available():
    """True when CuPy is installed and sees at least one GPU."""
    if _cupy is None:
        return False
    try:
        return _cupy.cuda.runtime.getDeviceCount() > 0
    except Exception:
        return False


def require_device(device):
    """Check that ``device`` can be used here; return it, or raise DeviceError."""
    _check_device_name(device)
    if device == "cuda" and not cuda_available():
        why = "CuPy is not installed (pip install 'tinygrad_gpt[cuda]')" if _cupy is None \
            else "CuPy found no CUDA GPU"
        raise DeviceError(f"device 'cuda' was requested but {why}")
    return device


_default_device = _check_device_name(os.environ.get("TINYGRAD_GPT_DEVICE", "cpu") or "cpu")


def default_device():
    """The device new tensors go to when none is given (env TINYGRAD_GPT_DEVICE, else "cpu")."""
    return _default_device


@contextlib.contextmanager
def device(name):
    """Context manager that changes the default device for new tensors.

        >>> with device("cpu"):
        ...     default_device()
        'cpu'
    """
    global _default_device
    previous, _default_device = _default_device, require_device(name)
    try:
        yield name
    finally:
        _default_device = previous


def get_array_module(*arrays):
    """NumPy or CuPy, whichever owns the arrays. Mixing the two is a DeviceError.

    Given a Tensor (a rule's backward run on Tensors, for gradients of gradients), the Tensor's
    ``__array_namespace__()``: the same functions, differentiable (engine/namespace.py)."""
    for a in arrays:
        if type(a) is not np.ndarray and hasattr(a, "__array_namespace__") and not is_array(a) \
                and not isinstance(a, np.generic):
            return a.__array_namespace__()
    if _cupy is None:  # without CuPy every array is NumPy's (this runs for every op)
        return np
    modules = {_module_of(a) for a in arrays if a is not None}
    if len(modules) > 1:
        raise DeviceError("arrays on different devices (cpu and cuda) used in one op; "
                          "move them with .to(device) first")
    return modules.pop() if modules else np


def _module_of(array):
    if _cupy is not None and isinstance(array, _cupy.ndarray):
        return _cupy
    return np


def device_of(array):
    """"cuda" for a CuPy array, "cpu" for anything else."""
    return "cuda" if _module_of(array) is not np else "cpu"


def xp_for(device_name):
    """The array module of a device."""
    return _cupy if require_device(device_name) == "cuda" else np


def to_device(array, device_name):
    """Move an array to a device (a no-op when it is already there)."""
    if device_of(array) == device_name:
        return array
    if require_device(device_name) == "cuda":
        return _cupy.asarray(array)
    return to_numpy(array)


def to_numpy(array):
    """A host NumPy array for any backend array (copies from the GPU)."""
    if _cupy is not None and isinstance(array, _cupy.ndarray):
        return _cupy.asnumpy(array)
    return np.asarray(array)


def is_array(obj):
    """True for a NumPy or CuPy ndarray."""
    return isinstance(obj, np.ndarray) or (_cupy is not None and isinstance(obj, _cupy.ndarray))


_constants = {}  # (repr of the number, dtype) -> 0-d device array of a Python number operand


def device_constant(xp, value, dtype):
    """A 0-d device array holding ``value``, copied to the device on first use only.

    Ops never write into their inputs, so one array serves every use of the number."""
    key = (repr(value), dtype.str)  # repr tells 0.0 from -0.0, and 1 from 1.0 and True
    array = _constants.get(key)
    if array is None:
        if len(_constants) >= 1024:  # a run uses a few dozen numbers; stay bounded anyway
            _constants.clear()
        array = _constants[key] = xp.asarray(value, dtype=dtype)
    return array


def scatter_add(out, index, values):
    """out[index] += values, adding up repeated indices, in place on either device."""
    xp = get_array_module(out)
    rows = (is_array(index) and index.dtype.kind in "iu" and index.size and out.flags.c_contiguous
            and tuple(getattr(values, "shape", ())) == tuple(index.shape) + tuple(out.shape[1:]))
    if xp is not np:
        if rows:  # an embedding's backward: the same bits on every run
            _scatter_add_rows_sorted(out, index, values, xp)
        else:  # atomicAdd: repeated indices are summed in no fixed order
            import cupyx  # the scatter-add kernel for CuPy arrays
            cupyx.scatter_add(out, index, values)
    elif rows:
        _scatter_add_rows(out, index, values)
    else:
        np.add.at(out, index, values)
    return out


def _scatter_add_rows(out, index, values):
    """out[index] += values for an integer array picking rows of ``out`` (an embedding's
    backward): sort the picks by row, sum each run of equal rows with one reduceat, and
    add the sums once per distinct row. np.add.at does the same one pick at a time, and
    is several times slower."""
    flat = index.ravel()
    flat = np.where(flat < 0, flat + out.shape[0], flat)  # -1 and n-1 are the same row
    rows = values.reshape(flat.size, -1)                  # (picks, row size)
    order = np.argsort(flat, kind="stable")
    ids = flat[order]
    starts = np.flatnonzero(np.concatenate(([True], ids[1:] != ids[:-1])))  # first pick of each row
    out.reshape(out.shape[0], -1)[ids[starts]] += np.add.reduceat(rows[order], starts, axis=0)


def _scatter_add_rows_sorted(out, index, values, xp):
    """The same as _scatter_add_rows on the GPU, in a fixed order and with no host sync.

    cupyx.scatter_add adds with atomics, so repeated rows are summed in whatever order
    the threads arrive, and the result changes from run to run. Here the picks are sorted
    by row, and each run of equal rows is summed by doubling (a segmented scan: at step d
    every pick adds the partial sum d places back, when it belongs to the same row), which
    leaves each row's total on its last pick; doubling again copies that total back over
    the run. Every pick of a row then writes the same value, out[row] + total, so which
    write lands last does not matter. (reduceat, as on the CPU, would need the number of
    distinct rows on the host: one sync per step.) log2(picks) passes of (picks, row size).
    """
    n = index.size
    flat = index.ravel()
    flat = xp.where(flat < 0, flat + out.shape[0], flat)  # -1 and n-1 are the same row
    order = xp.argsort(flat, kind="stable")
    ids = flat[order]
    s = values.reshape(n, -1)[order]                      # (picks, row size), sorted by row
    d = 1
    while d < n:  # s[i] = sum of s[j] for j <= i in i's run
        s[d:] = s[d:] + xp.where((ids[d:] == ids[:-d])[:, None], s[:-d], s.dtype.type(0))
        d *= 2
    d = 1
    while d < n:  # s[i] = the run's total, held by its last pick
        s[:-d] = xp.where((ids[:-d] == ids[d:])[:, None], s[d:], s[:-d])
        d *= 2
    out2 = out.reshape(out.shape[0], -1)
    out2[ids] = out2[ids] + s


# ----------------------------------------------------------------------------- random numbers
# One seeded NumPy generator drives everything random (init, dropout, batches),
# so a run is reproducible and its state can be saved into a checkpoint.

_rng = np.random.default_rng(1337)


def manual_seed(seed):
    """Reseed the generator behind init, dropout and sampling."""
    global _rng
    _rng = np.random.default_rng(seed)


def rng():
    """The global NumPy Generator."""
    return _rng


def rng_state():
    """The generator's state as a JSON-friendly dict."""
    return _rng.bit_generator.state


def set_rng_state(state):
    """Restore a state from ``rng_state()`` (checked first: a bad one raises ValueError)."""
    check_rng_state(state)
    _rng.bit_generator.state = state


def check_rng_state(state):
    """Raise ValueError naming the field unless ``state`` is a PCG64 state as ``rng_state()``
    (or any ``default_rng().bit_generator.state``) gives it.

        >>> check_rng_state(rng_state())
    """
    if not isinstance(state, dict) or set(state) != {"bit_generator", "state", "has_uint32", "uinteger"}:
        raise ValueError("expected an object with bit_generator, state, has_uint32 and uinteger")
    if state["bit_generator"] != "PCG64":
        raise ValueError(f"bit_generator must be 'PCG64', got {str(state['bit_generator'])[:40]}")
    inner = state["state"]
    if not isinstance(inner, dict) or set(inner) != {"state", "inc"}:
        raise ValueError("state must be an object with state and inc")
    for name, value, end in (("state.state", inner["state"], 2 ** 128), ("state.inc", inner["inc"], 2 ** 128),
                             ("has_uint32", state["has_uint32"], 2), ("uinteger", state["uinteger"], 2 ** 32)):
        if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value < end:
            raise ValueError(f"{name} must be an integer in [0, {end}), got {str(value)[:40]}")


def random_uniform(shape, dtype, device_name):
    """Uniform [0, 1) numbers of ``dtype`` made on ``device_name``.

    On the CPU they come from the global generator above. On the GPU they are made
    by CuPy, seeded with a number drawn from the global generator, so the host
    generator's state alone decides every random number, on either device (and a
    checkpoint that saves it resumes exactly), with no host-to-device copy.
    """
    if device_name == "cuda":
        return _cuda_rng(int(_rng.integers(2 ** 63))).random_sample(shape, dtype=dtype)
    return _rng.random(shape, dtype=np.dtype(dtype))


def use_gpu(index):
    """Make GPU number ``index`` this process's CUDA device (one process per GPU); returns it."""
    require_device("cuda")
    count = _cupy.cuda.runtime.getDeviceCount()
    if not 0 <= index < count:
        raise DeviceError(f"this process needs GPU {index} (one per process on each machine), but this "
                          f"machine has {count}; start at most {count} processes per machine with --device=cuda")
    _cupy.cuda.Device(index).use()
    return index


_cuda_generator = None


def _cuda_rng(seed):
    """The one CuPy generator of this process, reseeded with ``seed``.

    cuRAND's Philox generator is counter-based: reseeding it only sets its key and
    offset, so a call costs no new generator and no state setup on the device."""
    global _cuda_generator
    if _cuda_generator is None:
        from cupy.cuda import curand
        _cuda_generator = _cupy.random.RandomState(seed, method=curand.CURAND_RNG_PSEUDO_PHILOX4_32_10)
    else:
        _cuda_generator.seed(seed)
    return _cuda_generator


def synchronize(device_name=None):
    """Wait for queued GPU work to finish (for timing); a no-op on the CPU."""
    if (device_name or _default_device) == "cuda" and _cupy is not None:
        _cupy.cuda.Device().synchronize()
