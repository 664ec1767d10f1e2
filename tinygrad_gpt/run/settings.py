"""Process-wide settings for a training run: how many threads its CPU work may use, and how the
C heap keeps freed blocks.

Both change the whole process, not just tinygrad_gpt's arrays, so importing the package never
touches them: the ``train`` command sets the threads (``run/train.py``), and tunes the
allocator only when TINYGRAD_GPT_TUNE_MALLOC=1 asks for it. This
module imports nothing from the package; the fast layer reads ``cpu_threads()`` from here.

Several processes on one machine (data-parallel ranks) each take their share of the cores,
so that 2 ranks on 2 cores do not run 4 busy threads. ``OMP_NUM_THREADS=1`` means one thread,
the helper thread of ``fast.chunks.for_chunks`` included.
"""
import ctypes
import ctypes.util
import os
import sys

_threads = None
tuned = False  # True once tune_allocator() has run in this process


def cpu_cores():
    """The cores this process may run on (its affinity mask where the OS has one).

        >>> cpu_cores() >= 1
        True
    """
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)


def cpu_threads():
    """``set_cpu_threads``'s number, else $OMP_NUM_THREADS when set, else ``cpu_cores()``.
    ``fast.chunks.for_chunks`` adds its second thread only when this is 2 or more.

        >>> cpu_threads() >= 1
        True
    """
    global _threads
    if _threads is None:
        text = os.environ.get("OMP_NUM_THREADS", "").split(",")[0].strip()
        _threads = int(text) if text.isdigit() and int(text) > 0 else cpu_cores()
    return _threads


def set_cpu_threads(n):
    """Let this process's CPU work use ``n`` threads: the helper thread, and the BLAS library's
    threads when NumPy's OpenBLAS can be told at run time (returns True if it could)."""
    global _threads
    _threads = max(1, int(n))
    return _set_openblas_threads(_threads)


def _set_openblas_threads(n):
    """openblas_set_num_threads(n) on the OpenBLAS loaded into this process (NumPy's wheels
    bundle one, with prefixed names), found through /proc/self/maps; False if there is none.

    OpenBLAS reads OPENBLAS_NUM_THREADS once, when NumPy loads it, which is before any of
    this package's code runs; its run-time setter is the way to change it afterwards."""
    try:
        with open("/proc/self/maps", encoding="utf-8", errors="replace") as f:
            libs = {line.split()[-1] for line in f if "openblas" in line.lower() and "/" in line}
    except OSError:
        return False
    done = False
    for path in sorted(libs):
        try:
            lib = ctypes.CDLL(path)
        except OSError:
            continue
        for name in ("scipy_openblas_set_num_threads64_", "scipy_openblas_set_num_threads",
                     "openblas_set_num_threads64_", "openblas_set_num_threads"):
            setter = getattr(lib, name, None)
            if setter is not None:
                setter(ctypes.c_int(n))
                done = True
                break
    return done


def tune_allocator():
    """Let the C heap keep freed blocks for reuse (glibc only); returns True if it did.

    NumPy makes a fresh array for every intermediate result. By default glibc serves
    blocks above 128 KiB with mmap and gives them back to the OS when freed, so each
    new activation of a training step pays page faults on every 4 KiB page it touches.
    Raising M_MMAP_THRESHOLD to 32 MiB (glibc's maximum), setting M_MMAP_MAX to 0 (so
    even larger arrays come from the heap, not from fresh mmaps) and turning off trimming
    (M_TRIM_THRESHOLD -1) keeps those blocks in the heap for the next step (the training
    steps it saves are measured in benchmarks/RESULTS.md). With a finite trim threshold, whether the end of a
    step frees enough memory at the heap's top to be trimmed depends on where the last
    long-lived arrays happened to land, and a trimmed heap is faulted in again at every
    step. Freed memory is kept for reuse rather than returned to the OS: the process keeps
    its peak. It changes the whole process, so importing tinygrad_gpt never calls it, and
    the fast layer no longer needs it (its large arrays come from ``fast.workspace``, which
    keeps them across steps): the ``train`` command calls it only when the environment sets
    TINYGRAD_GPT_TUNE_MALLOC=1.
    """
    global tuned
    tuned = True
    name = ctypes.util.find_library("c")
    if not name or not sys.platform.startswith("linux"):
        return False
    try:
        mallopt = ctypes.CDLL(name).mallopt
    except (OSError, AttributeError):  # not glibc (musl has no mallopt)
        return False
    M_TRIM_THRESHOLD, M_MMAP_THRESHOLD, M_MMAP_MAX = -1, -3, -4
    return (bool(mallopt(M_MMAP_THRESHOLD, 32 * 2 ** 20)) and bool(mallopt(M_MMAP_MAX, 0))
            and bool(mallopt(M_TRIM_THRESHOLD, -1)))


def tune_allocator_for_training():
    """``tune_allocator()`` if the environment sets TINYGRAD_GPT_TUNE_MALLOC=1 (an opt-in);
    returns whether it was applied."""
    return os.environ.get("TINYGRAD_GPT_TUNE_MALLOC", "0") == "1" and tune_allocator()
