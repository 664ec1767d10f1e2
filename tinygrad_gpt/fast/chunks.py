"""Work in cache-sized chunks, on two threads for large arrays (CPU only).

An op that makes several passes over a large array reads it from memory each time; cut into
chunks of about 256 KiB, the later passes read it from cache.
"""
from ..backend import device_of
from ..run.settings import cpu_threads

CHUNK = 1 << 16  # elements (256 KiB of float32): a chunk and its temporaries stay in cache
CHUNKED_MIN = 1 << 20  # below this, a second thread costs more than it saves (measured on 2 cores)
_pool = None


def for_chunks(fn, n, array, chunk=CHUNK):
    """Call ``fn(s)`` for slices ``s`` that cover range(n); return the list of results.

    On the CPU, work of two chunks or more is cut into cache-sized chunks, so an op that
    makes several passes over its data reads it from cache. On arrays of CHUNKED_MIN
    elements or more, two threads share the chunks (NumPy releases the GIL inside its
    loops), unless this process may use one thread only (``threads.cpu_threads``); below
    that, the main thread runs them in turn. On the GPU, or for work of
    less than two chunks, it is a single call ``fn(slice(0, n))``. ``array``
    tells the device and the size of the work; ``chunk`` is the slice length (rows, for
    row-wise work).

        >>> for_chunks(lambda s: s.stop - s.start, 10, np.zeros(10))
        [10]
    """
    if device_of(array) == "cuda" or n < 2 * chunk:
        return [fn(slice(0, n))]
    if array.size < CHUNKED_MIN or cpu_threads() < 2:
        return [fn(slice(i, min(i + chunk, n))) for i in range(0, n, chunk)]
    global _pool
    if _pool is None:
        from concurrent.futures import ThreadPoolExecutor
        _pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="tinygrad_gpt")
    slices = [slice(i, min(i + chunk, n)) for i in range(0, n, chunk)]
    half = (len(slices) + 1) // 2
    other = _pool.submit(lambda: [fn(s) for s in slices[half:]])  # the second core
    return [fn(s) for s in slices[:half]] + other.result()
