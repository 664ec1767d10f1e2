"""What a run shows while it trains: a one-line progress bar on a terminal, and time left."""
import sys
import time


class Progress:
    """A one-line progress bar on a terminal; on anything else, nothing (the log lines remain)."""

    def __init__(self, total, start, enabled, stream=sys.stderr):
        self.total, self.start = total, start
        self.enabled = enabled and stream.isatty()
        self.stream, self.t0 = stream, time.time()

    def eta(self, it):
        """Seconds left after step ``it``, extrapolated from the time so far (evaluations included)."""
        done = (it - self.start + 1) / max(1, self.total - self.start)
        return (time.time() - self.t0) / max(done, 1e-9) * (1 - done)

    def update(self, it, loss, speed=""):
        if not self.enabled:
            return
        done = (it - self.start + 1) / max(1, self.total - self.start)
        bar = "#" * int(30 * done)
        self.stream.write(f"\r[{bar:<30}] {it + 1}/{self.total} loss {loss:.4f} {speed} eta {self.eta(it):4.0f}s ")
        self.stream.flush()

    def clear(self):
        if self.enabled:
            self.stream.write("\r" + " " * 110 + "\r")
            self.stream.flush()


def duration(seconds):
    """``1h02m``, ``3m05s`` or ``12s``.

        >>> duration(3725), duration(185), duration(12)
        ('1h02m', '3m05s', '12s')
    """
    seconds = int(seconds)
    if seconds >= 3600:
        return f"{seconds // 3600}h{seconds % 3600 // 60:02d}m"
    return f"{seconds // 60}m{seconds % 60:02d}s" if seconds >= 60 else f"{seconds}s"
