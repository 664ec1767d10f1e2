"""How many threads this process's CPU work may use: the fast layer's helper thread and BLAS's.

Several processes on one machine (data-parallel ranks) each take their share of the cores,
so that 2 ranks on 2 cores do not run 4 busy threads. ``OMP_NUM_THREADS=1`` means one thread,
the helper thread of ``chunks.for_chunks`` included.
"""
import ctypes
import os

_threads = None


def cpu_threads():
    """``set_cpu_threads``'s number, else $OMP_NUM_THREADS when set, else the cores this process
    may run on. ``chunks.for_chunks`` adds its second thread only when this is 2 or more.

        >>> cpu_threads() >= 1
        True
    """
    global _threads
    if _threads is None:
        text = os.environ.get("OMP_NUM_THREADS", "").split(",")[0].strip()
        if text.isdigit() and int(text) > 0:
            _threads = int(text)
        else:
            _threads = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
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
