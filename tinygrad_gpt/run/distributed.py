"""Data-parallel training on MPI: the communicator, and the gradient allreduce.

``mpiexec -n 2 python -m tinygrad_gpt train ...`` starts two processes (ranks). Each one
runs the same training loop on its share of every step's micro-batches; after backward
the ranks add their gradients together with one MPI allreduce, so each takes the same
optimizer step. The transport is MPI's, through mpi4py (``pip install "tinygrad_gpt[mpi]"``):
nothing here sends bytes by itself.

``world()`` is the communicator of this process: ``Single`` (rank 0 of 1, every call a
no-op) unless an MPI launcher started the process, and only then is mpi4py imported.
Everything crossing between ranks is a NumPy buffer (mpi4py's upper-case methods) or JSON;
nothing is pickled.

    >>> comm = world()          # outside mpiexec: one process
    >>> comm.rank, comm.size
    (0, 1)
    >>> comm.bcast_json({"vocab": 65})
    {'vocab': 65}
"""
import json
import os
import sys
import time
import traceback
import zlib

import numpy as np

from .. import backend
from ..errors import DistributedError
from . import settings

# set by the launchers that start MPI processes: Open MPI, MPICH/Intel MPI (Hydra), PMIx (srun --mpi=pmix)
LAUNCHER_VARS = ("OMPI_COMM_WORLD_SIZE", "PMI_SIZE", "PMI_RANK", "PMIX_RANK")
THREAD_VARS = ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS", "NUMBA_NUM_THREADS")


def launched_by_mpi(environ=os.environ):
    """True when an MPI launcher (mpiexec, mpirun, srun with an MPI plugin) started this process."""
    return any(name in environ for name in LAUNCHER_VARS)


class Single:
    """The communicator of a process that runs alone: rank 0 of 1; every exchange is a no-op."""

    rank, size, local_rank, local_size = 0, 1, 0, 1

    def allreduce_(self, buf):
        """Sum ``buf`` (a NumPy array) over all ranks, in place."""
        return buf

    def iallreduce_(self, buf):
        """Start summing ``buf`` in place; returns a request whose ``Wait()`` finishes it."""
        return _Done()

    def bcast_(self, buf, root=0):
        """Overwrite ``buf`` on every rank with root's ``buf``, in place."""
        return buf

    def bcast_json(self, obj, root=0):
        """Root's ``obj`` (JSON-serialisable) on every rank."""
        return json.loads(json.dumps(obj))

    def gather_json(self, obj, root=0):
        """Every rank's ``obj`` in rank order on root, None elsewhere."""
        return [json.loads(json.dumps(obj))]

    def allgather_ints(self, values):
        """Every rank's list of ints, as an int64 array of shape (size, len(values))."""
        return np.asarray([values], dtype=np.int64)

    def abort(self, code):
        raise SystemExit(code)


class _Done:
    """A finished request (Single's non-blocking allreduce)."""

    def Wait(self):
        return None

    def Test(self):
        return True


class MPIComm(Single):
    """MPI_COMM_WORLD through mpi4py's buffer methods."""

    def __init__(self):
        try:
            from mpi4py import MPI
        except ImportError as e:
            raise DistributedError(f"an MPI launcher started this process, but mpi4py cannot be "
                                   f"imported ({e}); install it with pip install 'tinygrad_gpt[mpi]'") from None
        self.MPI, self.comm = MPI, MPI.COMM_WORLD
        self.rank, self.size = self.comm.Get_rank(), self.comm.Get_size()
        node = self.comm.Split_type(MPI.COMM_TYPE_SHARED)  # the ranks on this machine
        self.local_rank, self.local_size = node.Get_rank(), node.Get_size()
        node.Free()

    def allreduce_(self, buf):
        self.comm.Allreduce(self.MPI.IN_PLACE, buf, op=self.MPI.SUM)
        return buf

    def iallreduce_(self, buf):
        return self.comm.Iallreduce(self.MPI.IN_PLACE, buf, op=self.MPI.SUM)

    def bcast_(self, buf, root=0):
        self.comm.Bcast(buf, root=root)
        return buf

    def bcast_json(self, obj, root=0):
        data = np.frombuffer(json.dumps(obj).encode(), dtype=np.uint8) if self.rank == root else None
        n = np.array([data.size if data is not None else 0], dtype=np.int64)
        self.comm.Bcast(n, root=root)
        if data is None:
            data = np.empty(int(n[0]), dtype=np.uint8)
        self.comm.Bcast(data, root=root)
        return json.loads(data.tobytes())

    def gather_json(self, obj, root=0):
        data = np.frombuffer(json.dumps(obj).encode(), dtype=np.uint8)
        counts = np.zeros(self.size, dtype=np.int64)
        self.comm.Gather(np.array([data.size], dtype=np.int64), counts, root=root)
        recv = np.empty(int(counts.sum()), dtype=np.uint8) if self.rank == root else None
        self.comm.Gatherv(data, [recv, counts.tolist()] if self.rank == root else None, root=root)
        if self.rank != root:
            return None
        ends = np.cumsum(counts)
        return [json.loads(recv[end - n:end].tobytes()) for n, end in zip(counts, ends)]

    def allgather_ints(self, values):
        mine = np.asarray(values, dtype=np.int64)
        out = np.empty((self.size, mine.size), dtype=np.int64)
        self.comm.Allgather(mine, out)
        return out

    def abort(self, code):
        sys.stdout.flush()
        sys.stderr.flush()
        self.comm.Abort(code)


_world = None


def world():
    """This process's communicator: MPIComm when an MPI launcher started it, else Single.

    Made once; under MPI it also installs an exception hook that ends the whole job
    (MPI_Abort) on an uncaught exception, since a rank that dies alone leaves the others
    waiting in their next collective for ever.
    """
    global _world
    if _world is None:
        if not launched_by_mpi():
            _world = Single()
        else:
            _world = MPIComm()
            sys.excepthook = _abort_on_uncaught
            ntasks = os.environ.get("SLURM_NTASKS", "")
            if _world.size == 1 and ntasks.isdigit() and int(ntasks) > 1:
                raise DistributedError(f"Slurm started {ntasks} tasks but MPI sees one process: each would "
                                       f"train alone; launch with srun --mpi=pmix (or mpiexec)")
    return _world


def _abort_on_uncaught(kind, value, tb):
    traceback.print_exception(kind, value, tb)
    print(f"error: rank {_world.rank}: {kind.__name__}: {value}", file=sys.stderr, flush=True)
    time.sleep(0.5)
    _world.abort(1)


def fail(message, code, every_rank=False, label="error: "):
    """Report an error and end the job with exit ``code``; returns ``code`` when running alone.

    Alone: one ``error:`` line on stderr (``label=""``: the plain line, for a stop that is no
    error). Under MPI the failing rank prints the line and
    calls MPI_Abort, which ends every rank within seconds whatever the launcher. An error
    that ``every_rank`` meets at the same point (a bad flag, a NaN loss after the allreduce)
    is printed by rank 0 alone, and rank 0's abort ends the others.
    """
    message = " ".join(str(message).splitlines())  # one line, whatever a file's names hold
    comm = _world if _world is not None else Single()
    if comm.size == 1:
        print(f"{label}{message}", file=sys.stderr)
        return code
    if comm.rank == 0 or not every_rank:
        where = "" if every_rank else f"rank {comm.rank}: "
        print(f"{label}{where}{message}", file=sys.stderr, flush=True)
        time.sleep(0.5)  # the launcher forwards the line before its own report of the abort
    else:
        time.sleep(10)  # rank 0 prints the line and aborts; this is only a fallback
    comm.abort(code)
    return code


def share_cores(comm):
    """Give this rank its share of the cores: the BLAS threads and the package's helper thread.

    The ranks on one machine split the cores this process may run on (a launcher that
    binds each rank to its cores has already split them). A thread count the user set in
    the environment (OMP_NUM_THREADS, OPENBLAS_NUM_THREADS) is kept. Returns the count.
    """
    if any(name in os.environ for name in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS")):
        return settings.cpu_threads()
    cores = settings.cpu_cores()
    total = os.cpu_count() or cores
    n = max(1, min(cores, total // comm.local_size))
    for name in THREAD_VARS:  # for anything that starts threads later (and child processes)
        os.environ.setdefault(name, str(n))
    settings.set_cpu_threads(n)  # NumPy's OpenBLAS has started its threads already: told at run time
    return n


# ----------------------------------------------------------------------------- moving weights and state

def bcast_arrays(comm, arrays, root=0):
    """Overwrite each array (NumPy or CuPy) on every rank with root's, through host memory."""
    for a in arrays:
        host = np.ascontiguousarray(backend.to_numpy(a))
        comm.bcast_(host, root=root)
        if backend.device_of(a) == "cuda":
            a[...] = backend.to_device(host, "cuda")
        elif host is not a:
            a[...] = host


def bcast_parameters(comm, model, root=0):
    """Root's weights into every rank's model."""
    bcast_arrays(comm, [p.data for p in model.parameters()], root)


def bcast_optimizer(comm, optimizer, root=0):
    """Root's optimizer state (steps, options, moment arrays) into every rank's optimizer."""
    sd = optimizer.state_dict() if comm.rank == root else None
    layout = comm.bcast_json(None if sd is None else {  # which arrays each parameter's state has
        "param_groups": sd["param_groups"],
        "state": {str(i): sorted(k for k in s if k != "step") for i, s in sd["state"].items()},
        "steps": {str(i): s["step"] for i, s in sd["state"].items()}})
    params = [p for group in optimizer.param_groups for p in group["params"]]
    state = {}
    for i, keys in sorted(layout["state"].items(), key=lambda kv: int(kv[0])):
        p, entry = params[int(i)], {"step": layout["steps"][i]}
        for key in keys:
            array = sd["state"][int(i)][key] if sd is not None else np.empty(p.shape, dtype=p.dtype)
            entry[key] = comm.bcast_(np.ascontiguousarray(array), root)
        state[int(i)] = entry
    optimizer.load_state_dict({"state": state, "param_groups": layout["param_groups"]})


def bcast_ids(comm, ids, root=0):
    """Root's 1-D token array on every rank."""
    head = comm.bcast_json(None if ids is None else {"n": int(ids.size), "dtype": ids.dtype.str}, root)
    if comm.rank != root:
        ids = np.empty(head["n"], dtype=np.dtype(head["dtype"]))
    return comm.bcast_(np.ascontiguousarray(ids), root)


def checksum(model):
    """A CRC-32 of every weight's bytes: equal weights, equal checksums."""
    crc = 0
    for p in model.parameters():
        crc = zlib.crc32(np.ascontiguousarray(backend.to_numpy(p.data)).view(np.uint8), crc)
    return crc


def check_same_weights(comm, model, when):
    """Every rank's weights are rank 0's, bit for bit; otherwise DistributedError naming the ranks."""
    sums = comm.allgather_ints([checksum(model)])[:, 0]
    bad = [r for r in range(comm.size) if sums[r] != sums[0]]
    if bad:
        err = DistributedError(f"{when}: the weights of rank{'s' if len(bad) > 1 else ''} "
                               f"{', '.join(map(str, bad))} differ from rank 0's (checksums "
                               f"{', '.join(f'{s:08x}' for s in sums)})")
        err.every_rank = True
        raise err


def any_rank(comm, flag):
    """True on every rank when ``flag`` is true on any rank (a one-number allreduce)."""
    buf = np.array([1.0 if flag else 0.0])
    return bool(comm.allreduce_(buf)[0] > 0)


# ----------------------------------------------------------------------------- the gradient allreduce

class _Bucket:
    """Parameters whose gradients travel together in one flat host buffer (plus ``extra`` slots)."""

    def __init__(self, params, extra=0):
        self.params = params
        self.ends = np.cumsum([p.data.size for p in params]).tolist()
        self.buf = np.zeros(self.ends[-1] + extra, dtype=backend.to_numpy(params[0].data[:0]).dtype)
        self.ready, self.request = 0, None

    def pack(self, p, start, end):
        """Copy p.grad (or zeros, if p got none) into its slice of the buffer."""
        view = self.buf[start:end].reshape(p.shape)
        if p.grad is None:
            view[...] = 0
        elif backend.device_of(p.grad) == "cuda":
            view[...] = backend.to_numpy(p.grad)
        else:
            np.copyto(view, p.grad)

    def slices(self):
        return zip(self.params, [0] + self.ends[:-1], self.ends)


class GradSync:
    """Sums the ranks' gradients and the step's loss with MPI allreduce.

    Without overlap there is one flat buffer per optimizer parameter group (AdamW's flat
    layout): after the last backward, pack every gradient into it, allreduce it in place,
    and hand each parameter a view of its slice as its summed gradient (on the GPU, a copy
    back to the device). With ``overlap=True`` the buffers are buckets of about
    ``bucket_size`` elements in reverse parameter order, as in PyTorch's DDP: during the last
    micro-step's backward, each bucket starts a non-blocking allreduce (``Iallreduce``) as
    soon as its last gradient is final, while backward goes on with the earlier layers.
    ``times`` adds up the seconds spent packing, in the allreduce (waiting, with overlap)
    and unpacking, for benchmarks.
    """

    def __init__(self, comm, optimizer, overlap=False, bucket_size=1 << 18):
        self.comm, self.overlap = comm, overlap
        groups = [list(g["params"]) for g in optimizer.param_groups]
        if overlap:
            flat = [p for group in groups for p in group][::-1]
            groups, size = [[]], 0
            for p in flat:
                if size >= bucket_size:
                    groups, size = groups + [[]], 0
                groups[-1].append(p)
                size += p.data.size
        self.buckets = [_Bucket(params, extra=1 if i == len(groups) - 1 else 0)
                        for i, params in enumerate(groups) if params]
        self.where = {id(p): (b, s, e) for b in self.buckets for p, s, e in b.slices()}
        self.armed = False
        self.times = {"pack": 0.0, "allreduce": 0.0, "unpack": 0.0}
        self.handles = [p.register_post_accumulate_grad_hook(self._ready)
                        for b in self.buckets for p in b.params] if overlap else []

    def arm(self, loss_sum):
        """Before this rank's last backward of the step: its summed loss goes into the last slot."""
        self.buckets[-1].buf[-1] = loss_sum
        for b in self.buckets:
            b.ready, b.request = 0, None
        self.armed = self.overlap

    def _ready(self, p):
        """A gradient is final (overlap only): pack it, and start its bucket's allreduce if full."""
        if not self.armed:
            return
        t0 = time.perf_counter()
        bucket, start, end = self.where[id(p)]
        bucket.pack(p, start, end)
        bucket.ready += 1
        self.times["pack"] += time.perf_counter() - t0
        if bucket.ready == len(bucket.params):
            self._start(bucket)
        t0 = time.perf_counter()
        for started in self.buckets:  # MPI moves a non-blocking collective on only when called
            if started.request is not None:
                started.request.Test()
        self.times["allreduce"] += time.perf_counter() - t0

    def _start(self, bucket):
        t0 = time.perf_counter()
        bucket.request = self.comm.iallreduce_(bucket.buf)
        self.times["allreduce"] += time.perf_counter() - t0

    def finish(self):
        """After this rank's last backward: sum everything; returns the loss summed over ranks."""
        self.armed = False
        for bucket in self.buckets:
            if bucket.request is None:  # no overlap, or a parameter that got no gradient
                t0 = time.perf_counter()
                for p, start, end in bucket.slices():
                    if not self.overlap or p.grad is None:
                        bucket.pack(p, start, end)
                self.times["pack"] += time.perf_counter() - t0
                if self.overlap:
                    self._start(bucket)
                else:
                    t0 = time.perf_counter()
                    self.comm.allreduce_(bucket.buf)
                    self.times["allreduce"] += time.perf_counter() - t0
        t0 = time.perf_counter()
        for bucket in self.buckets:
            if bucket.request is not None:
                bucket.request.Wait()
        self.times["allreduce"] += time.perf_counter() - t0
        t0 = time.perf_counter()
        for bucket in self.buckets:
            for p, start, end in bucket.slices():
                view = bucket.buf[start:end].reshape(p.shape)
                p.grad = backend.to_device(view, "cuda") if backend.device_of(p.data) == "cuda" else view
        self.times["unpack"] += time.perf_counter() - t0
        return float(self.buckets[-1].buf[-1])

    def close(self):
        """Take the backward hooks off the parameters."""
        for handle in self.handles:
            handle.remove()
        self.handles = []
