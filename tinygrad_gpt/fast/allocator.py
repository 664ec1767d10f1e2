"""Allocator tuning for a whole training process (glibc's mallopt).

This changes the C heap of the process, not just tinygrad_gpt's arrays, so nothing calls it on
import: the ``train`` command turns it on (``train.train``), and so do the benchmarks.
"""
import ctypes
import ctypes.util
import os
import sys

tuned = False  # True once tune_allocator() has run in this process


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
    its peak. It changes the whole process, so importing tinygrad_gpt never calls it: the
    ``train`` command does (unless the environment sets TINYGRAD_GPT_TUNE_MALLOC=0).
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
    """``tune_allocator()`` unless the environment sets TINYGRAD_GPT_TUNE_MALLOC=0."""
    return os.environ.get("TINYGRAD_GPT_TUNE_MALLOC", "1") != "0" and tune_allocator()
