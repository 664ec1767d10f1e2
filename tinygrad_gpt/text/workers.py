"""Encoding text on every core: worker processes that turn chunks of text into token ids.

Each worker is ``python -m tinygrad_gpt.text.workers TOKENIZER_FILE DTYPE``, a process of its own
that loads the tokenizer once and then answers requests on its stdin and stdout. A message is
a status byte, an 8-byte length and the payload, both ways: UTF-8 text in, token ids (the
shards' dtype) out, or an error's text. Nothing is pickled.

``encode_all(chunks, ...)`` hands the chunks to the workers in turn and yields the ids in the
order of the chunks. At most ``depth`` chunks per worker are in flight, so the memory of the
parent is bounded however long the input is; one writer thread per worker keeps the pipes
from blocking each other.

    >>> for tag, ids in encode_all([("a", "hello"), ("b", "world")], tok, "tok.json", np.uint16, workers=2):
    ...     pass                                                          # doctest: +SKIP
"""
import collections
import os
import queue
import struct
import subprocess
import sys
import threading

import numpy as np

from ..errors import DataError

_HEAD = struct.Struct("<cQ")  # status byte, payload length


class ChunkError(ValueError):
    """The tokenizer refused a chunk: ``tag`` is the chunk's, ``message`` the tokenizer's words."""

    def __init__(self, tag, message):
        super().__init__(f"{tag}: {message}")
        self.tag, self.message = tag, message


def cores():
    """The number of cores this process may run on."""
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        return os.cpu_count() or 1


def encode_chunk(tokenizer, text, dtype):
    """One chunk of text -> its ids as an array of ``dtype``."""
    return np.asarray(tokenizer.encode(text), dtype=dtype)


def encode_all(chunks, tokenizer, tokenizer_file, dtype, workers, depth=2):
    """Yield ``(tag, ids)`` for each ``(tag, text)`` of ``chunks``, in order.

    With ``workers`` <= 1 the chunks are encoded here; otherwise by that many worker processes
    that load ``tokenizer_file``. A chunk the tokenizer refuses raises ChunkError.
    """
    if workers <= 1:
        for tag, text in chunks:
            try:
                yield tag, encode_chunk(tokenizer, text, dtype)
            except ValueError as e:
                raise ChunkError(tag, str(e)) from None
        return
    pool, done = _Pool(tokenizer_file, np.dtype(dtype), workers), False
    try:
        yield from pool.run(chunks, depth)
        done = True
    finally:
        pool.close(kill=not done)


class _Worker:
    """One worker process, and the thread that writes its requests."""

    def __init__(self, tokenizer_file, dtype):
        env = dict(os.environ)
        root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
        env["PYTHONPATH"] = os.pathsep.join(p for p in (root, env.get("PYTHONPATH")) if p)  # this package
        env.setdefault("OMP_NUM_THREADS", "1")
        env.setdefault("OPENBLAS_NUM_THREADS", "1")
        env.setdefault("MALLOC_MMAP_THRESHOLD_", "262144")  # glibc: a flat heap (prepare.keep_heap_flat)
        self.proc = subprocess.Popen([sys.executable, "-m", "tinygrad_gpt.text.workers", tokenizer_file,
                                      dtype.str], stdin=subprocess.PIPE, stdout=subprocess.PIPE, env=env)
        self.requests = queue.Queue(maxsize=1)
        self.failed = None
        self.thread = threading.Thread(target=self._write, daemon=True)
        self.thread.start()

    def _write(self):
        while True:
            data = self.requests.get()
            if data is None:
                break
            try:
                self.proc.stdin.write(_HEAD.pack(b"T", len(data)))
                self.proc.stdin.write(data)
                self.proc.stdin.flush()
            except OSError as e:  # the worker died; its reader reports it
                self.failed = e
                break
        try:
            self.proc.stdin.close()
        except OSError:
            pass

    def result(self, dtype):
        head = _read_exactly(self.proc.stdout, _HEAD.size)
        if head is None:
            code = self.proc.wait()
            raise DataError(f"an encoding worker process ended unexpectedly (exit code {code})")
        status, n = _HEAD.unpack(head)
        payload = _read_exactly(self.proc.stdout, n)
        if payload is None:
            raise DataError("an encoding worker process ended in the middle of a reply")
        if status == b"E":
            raise ChunkError(None, payload.decode("utf-8", "replace"))
        return np.frombuffer(payload, dtype=dtype)


class _Pool:
    def __init__(self, tokenizer_file, dtype, workers):
        self.dtype = dtype
        self.workers = [_Worker(tokenizer_file, dtype) for _ in range(workers)]

    def run(self, chunks, depth):
        pending = collections.deque()  # (tag, worker) in the order of the chunks
        n = len(self.workers)
        for k, (tag, text) in enumerate(chunks):
            if len(pending) >= depth * n:
                yield self._collect(pending)
            worker = self.workers[k % n]
            worker.requests.put(text.encode("utf-8"))
            pending.append((tag, worker))
        while pending:
            yield self._collect(pending)

    def _collect(self, pending):
        tag, worker = pending.popleft()
        try:
            return tag, worker.result(self.dtype)
        except ChunkError as e:
            raise ChunkError(tag, e.message) from None

    def close(self, kill):
        """End the workers: idle ones by closing their stdin, or every one at once (``kill``)."""
        for w in self.workers:
            if kill or w.proc.poll() is not None or w.failed is not None:
                w.proc.kill()
                try:  # wake the writer thread if it waits for a request
                    w.requests.put_nowait(None)
                except queue.Full:
                    pass
            else:
                w.requests.put(None)  # every reply was read: the writer thread is waiting for this
        for w in self.workers:
            try:
                w.proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                w.proc.kill()
                w.proc.wait()
            w.proc.stdout.close()


def _read_exactly(stream, n):
    """``n`` bytes from ``stream``, or None when it ends first."""
    parts, got = [], 0
    while got < n:
        part = stream.read(n - got)
        if not part:
            return None
        parts.append(part)
        got += len(part)
    return b"".join(parts)


def serve(tokenizer_file, dtype, stdin=None, stdout=None):
    """The worker's loop: read a chunk of text, answer with its ids, until stdin ends."""
    from .folder import read_tokenizer_file
    stdin = stdin or sys.stdin.buffer
    stdout = stdout or sys.stdout.buffer
    tokenizer = read_tokenizer_file(tokenizer_file)[0]
    while True:
        head = _read_exactly(stdin, _HEAD.size)
        if head is None:
            return
        _, n = _HEAD.unpack(head)
        text = _read_exactly(stdin, n).decode("utf-8")
        try:
            reply, status = memoryview(encode_chunk(tokenizer, text, dtype)).cast("B"), b"K"
        except ValueError as e:
            reply, status = str(e).encode("utf-8"), b"E"
        stdout.write(_HEAD.pack(status, len(reply)))
        stdout.write(reply)
        stdout.flush()


if __name__ == "__main__":
    try:
        serve(sys.argv[1], np.dtype(sys.argv[2]))
    except (KeyboardInterrupt, BrokenPipeError):
        pass
