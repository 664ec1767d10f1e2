"""A stop that saves: SIGTERM and the first Ctrl-C ask a training run to stop after its step.

``kill``, Slurm, Kubernetes and a laptop shutting down send SIGTERM; a person presses
Ctrl-C (SIGINT). While ``StopSignals`` is active and ``armed``, the first of them only sets
``requested``; the training loop sees it after the current step, writes a checkpoint and
raises ``Stopped`` (exit code 143 for SIGTERM, 130 for Ctrl-C). A second signal, or one
that arrives before the loop is armed, raises ``Abort`` (a KeyboardInterrupt) at once.

    >>> with StopSignals() as signals:  # doctest: +SKIP
    ...     signals.armed = True
    ...     while signals.requested is None:
    ...         step()
"""
import signal
import threading

from ..errors import Stopped  # noqa: F401 (raised by train.py; kept importable from here)
from .distributed import any_rank

NAMES = {signal.SIGINT: "Ctrl-C", signal.SIGTERM: "SIGTERM"}
EXIT_CODES = {signal.SIGINT: 130, signal.SIGTERM: 143}  # 128 + the signal number, as shells report


def signal_name(signum):
    return NAMES.get(signum, f"signal {signum}")


class Abort(KeyboardInterrupt):
    """A signal that ends the run at once, without saving; ``signum`` says which."""

    def __init__(self, signum):
        super().__init__(signal_name(signum))
        self.signum = signum


class StopSignals:
    """Catch SIGINT and SIGTERM while the ``with`` block runs (in the main thread; elsewhere nothing)."""

    def __init__(self):
        self.requested = None  # the signal number that asked for a stop
        self.armed = False     # False: a signal aborts at once (nothing to save yet)
        self._old = {}

    def __enter__(self):
        if threading.current_thread() is threading.main_thread():
            for signum in NAMES:
                self._old[signum] = signal.signal(signum, self._handle)
        return self

    def __exit__(self, *exc):
        for signum, handler in self._old.items():
            signal.signal(signum, handler if handler is not None else signal.SIG_DFL)
        self._old.clear()
        return False

    def _handle(self, signum, frame):
        if self.armed and self.requested is None:
            self.requested = signum
            return
        raise Abort(signum)


def should_stop(signals, comm):
    """The number of the signal (SIGTERM, SIGINT) that asks the run to stop before its next step,
    or None to go on.

    The loop asks here, and only here, once per iteration; every process of one run must
    get the same answer, so they all stop at the same step.
    """
    signum = None if signals is None else signals.requested
    if comm.size == 1:
        return signum
    if not any_rank(comm, signum is not None):  # a one-number allreduce: all agree
        return None
    return signum or signal.SIGTERM  # the signal this rank got, or the one another rank got
