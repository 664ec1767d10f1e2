"""What a training run says about itself: its speed, its MFU, and the health of each parameter.

- ``peak_flops``: the float32 FLOP/s of the run's device, measured once at the start by timing a
  large matmul there (not read from a table of card names). Under MPI every rank measures at
  once and the job's peak is their sum.
- Every step's record carries ``tokens_per_s`` and ``mfu``:

      mfu = flops_per_token * tokens_per_s / peak_flops,
      flops_per_token = 6 N + 12 n_layer n_embd block_size      (page 09a; N without the position table)

  so the log's start record (``peak_flops``, ``flops_per_token``) and any step record give the
  MFU back.
- Every ``health_interval`` steps, a record of each parameter's gradient norm (before clipping)
  and update ratio |Δw| / |w|, as dicts keyed by parameter name (a parameter that is all zeros,
  such as a bias at the start, has no update ratio).

    >>> meter = Meter(flops_per_token=6e6, tokens_per_iter=768, peak_flops=1e11)
    >>> meter.step(0.5)
    {'tokens_per_s': 1536.0, 'mfu': 0.09216}
"""
import math
import time

import numpy as np

from .. import backend

MAX_PEAK_SIZE = 8192  # the largest matmul timed: n x n float32 times n x n, 2 n^3 FLOPs
PEAK_SECONDS = 0.5   # a larger size is tried only while its product would take less than this
_peaks = {}  # (device, n, threads) -> FLOP/s, measured once per process


def measure_peak_flops(device, n=None, repeats=3):
    """Float32 FLOP/s of ``device``: the fastest of ``repeats`` timed n x n matmuls (2 n^3 FLOPs
    each). Without ``n``, n doubles from 512 while the next size's product would take less than
    PEAK_SECONDS (8 times this one's), up to MAX_PEAK_SIZE, and the best rate counts: a small
    product on a CPU shows the threads' start-up more than the arithmetic. Kept for the process.

        >>> measure_peak_flops("cpu", n=256) > 1e8
        True
    """
    from .settings import cpu_threads
    key = (device, n, cpu_threads())
    if key not in _peaks:
        best, size = 0.0, n or 512
        while True:
            seconds = _timed_product(device, size, repeats)
            best = max(best, 2.0 * size ** 3 / seconds)
            if n is not None or size >= MAX_PEAK_SIZE or 8 * seconds > PEAK_SECONDS:
                break
            size *= 2
        _peaks[key] = best
    return _peaks[key]


def _timed_product(device, n, repeats):
    """The fastest of ``repeats`` products of two random n x n float32 matrices on ``device``, in
    seconds, after a first product that warms up (a GPU's kernels, the BLAS threads)."""
    xp = backend.xp_for(device)
    rng = np.random.default_rng(0)
    a, b = (backend.to_device(rng.standard_normal((n, n), dtype=np.float32), device) for _ in range(2))
    out = xp.matmul(a, b)
    backend.synchronize(device)
    best = math.inf
    for _ in range(repeats):
        t0 = time.perf_counter()
        xp.matmul(a, b, out=out)
        backend.synchronize(device)
        best = min(best, time.perf_counter() - t0)
    return best


def job_peak_flops(comm, device):
    """The peak of the whole job: every rank measures its own at the same time; the sum."""
    peak = measure_peak_flops(device)
    if comm.size == 1:
        return peak
    return float(comm.allreduce_(np.array([peak], dtype=np.float64))[0])


class Meter:
    """Turns a step's seconds into tokens/s and MFU."""

    def __init__(self, flops_per_token, tokens_per_iter, peak_flops):
        self.flops_per_token, self.tokens_per_iter = float(flops_per_token), int(tokens_per_iter)
        self.peak_flops = float(peak_flops)

    @classmethod
    def for_run(cls, model, cfg, comm):
        """The meter of a training run: its model's FLOPs per token, every rank's tokens, the job's peak."""
        tokens = cfg.batch_size * model.config.block_size * cfg.gradient_accumulation_steps
        return cls(model.flops_per_token(), tokens, job_peak_flops(comm, cfg.device))

    def start_record(self, it, device):
        """The log's record of the run's constants, written once at the start."""
        return {"iter": it, "peak_flops": self.peak_flops, "flops_per_token": self.flops_per_token,
                "tokens_per_iter": self.tokens_per_iter, "device": device}

    def step(self, seconds):
        """{"tokens_per_s", "mfu"} of a step that took ``seconds``."""
        tokens_per_s = self.tokens_per_iter / max(seconds, 1e-9)
        return {"tokens_per_s": tokens_per_s, "mfu": self.flops_per_token * tokens_per_s / self.peak_flops}


def shown(speed):
    """``"12,345 tok/s, MFU 3.1%"`` for the progress line."""
    return f"{speed['tokens_per_s']:,.0f} tok/s, MFU {speed['mfu']:.1%}"


# ----------------------------------------------------------------------------- health

class Health:
    """Every ``interval`` steps, what the optimizer was given and what it did, per parameter.

    ``watch(optimizer, model, it)`` returns the optimizer itself on other steps, and on a health
    step a ``Watched`` optimizer that notes each gradient's norm and each weight before its
    ``step()`` and the update after it; ``record(it, norm)`` then gives the log record, with the
    norms put back to before clipping (``norm`` is the step's total norm before clipping).
    """

    def __init__(self, interval):
        self.interval, self.watched = int(interval), None

    def watch(self, optimizer, model, it):
        if self.interval <= 0 or it % self.interval:
            return optimizer
        self.watched = Watched(optimizer, model)
        return self.watched

    def record(self, it, norm):
        """The health record of step ``it`` (None when none was due, or the step was not taken)."""
        watched, self.watched = self.watched, None
        if watched is None or watched.update_ratio is None:
            return None
        post = math.sqrt(sum(v * v for v in watched.grad_norm.values()))
        scale = norm / post if post > 0 and math.isfinite(norm) else 1.0  # undo the clipping
        return {"iter": it, "grad_norm": {k: v * scale for k, v in watched.grad_norm.items()},
                "update_ratio": watched.update_ratio}


class Watched:
    """An optimizer that notes its gradients' norms and its updates' sizes as it steps."""

    def __init__(self, optimizer, model):
        self.optimizer, self.model = optimizer, model
        self.grad_norm = self.update_ratio = None

    @property
    def param_groups(self):
        return self.optimizer.param_groups

    def step(self):
        named = [(name, p) for name, p in self.model.named_parameters() if p.grad is not None]
        self.grad_norm = {name: _norm(p.grad) for name, p in named}
        before = {name: p.data.copy() for name, p in named}
        self.optimizer.step()
        sizes = {name: _norm(w) for name, w in before.items()}
        self.update_ratio = {name: _norm(p.data - before[name]) / sizes[name]  # undefined where w = 0
                             for name, p in named if sizes[name] > 0}


def _norm(x):
    xp = backend.get_array_module(x)
    return float(xp.sqrt(xp.vdot(x.ravel(), x.ravel())))


# ----------------------------------------------------------------------------- the picture

def health_records(records, path):
    """The health records of a log, each value checked to be a number; ValueError names the line."""
    out = []
    for r in records:
        if "update_ratio" not in r and "grad_norm" not in r:
            continue
        for key in ("grad_norm", "update_ratio"):
            values = r.get(key)
            if not isinstance(values, dict) or not all(
                    isinstance(v, (int, float)) and not isinstance(v, bool) for v in values.values()):
                raise ValueError(f"{path}: the health record of iteration {r.get('iter')}: {key} must map "
                                 f"parameter names to numbers")
        out.append(r)
    return out


KINDS = (("wte", "token embedding", "#1f5fa8"), ("wpe", "position embedding", "#8c564b"),
         ("attn", "attention", "#d9534f"), ("mlp", "MLP", "#2ca02c"), ("ln", "layer norm", "#9467bd"))


def _kind(name):
    """(label, colour) of a parameter's kind, from its name."""
    return next(((label, colour) for key, label, colour in KINDS if key in name), ("other", "#7f7f7f"))


def plot_health(records, figure, save, out_png, path="log.jsonl"):
    """Draw each parameter's gradient norm and update ratio against iteration into ``out_png``, one
    line per parameter, coloured by its kind; ``figure(width, height)`` and ``save(fig, path)`` are
    the caller's (viz.py's) matplotlib helpers. Returns ``out_png``, or None without health records."""
    health = health_records(records, path)
    if not health:
        return None
    fig = figure(10, 7)
    axes = fig.subplots(2, 1, sharex=True)
    names = sorted({name for r in health for name in r["grad_norm"]})
    for ax, key, title in ((axes[0], "grad_norm", "gradient norm (before clipping)"),
                           (axes[1], "update_ratio", "update ratio |Δw| / |w| of each step")):
        labelled = set()
        for name in names:
            pts = [(r["iter"], r[key][name]) for r in health if r[key].get(name, 0) > 0]
            label, colour = _kind(name)
            if pts:
                ax.plot(*zip(*pts), color=colour, linewidth=0.8, alpha=0.7,
                        label=None if label in labelled else label)
                labelled.add(label)
        ax.set_yscale("log")
        ax.set_title(title, fontsize=10)
        ax.grid(alpha=0.3, which="both")
    axes[1].axhline(1e-3, color="k", linestyle="--", linewidth=0.8, label="1e-3 (rule of thumb)")
    axes[1].set_xlabel("iteration")
    for ax in axes:
        if ax.get_legend_handles_labels()[0]:
            ax.legend(fontsize=7, ncol=3)
    fig.suptitle("parameter health: one line per parameter")
    fig.tight_layout()
    return save(fig, out_png)
