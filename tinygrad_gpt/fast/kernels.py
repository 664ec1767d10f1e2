"""Optional compiled kernels for the CPU, with numba (``pip install tinygrad_gpt[numba]``):
layer norm's forward and backward, AdamW's step, and GELU with its derivative (float32).

NumPy runs one ufunc at a time, so an op like layer norm makes a dozen passes over its
data. A compiled loop makes one or two, row by row, while the row is in cache
(benchmarks/RESULTS.md has the timings). The rules in rules.py and ops.py stay the
reference; the fast layer's NumPy code is used when numba is missing. These kernels are used
only when numba imports, the arrays are NumPy float32 or float64, and the environment does
not set TINYGRAD_GPT_NUMBA=0 (which also skips importing numba). The tests run both paths
against each other and the gradient checks.

Nothing is imported or compiled when tinygrad_gpt is imported: the first op that can use a
kernel calls ``load()``, which imports numba and compiles the kernels once, or loads them
from numba's on-disk cache (``cache=True``), so the first training step absorbs that time.

Each kernel works on C-contiguous arrays (rows of a 2-D array, or a flat slice) and
releases the GIL, so ``chunks.for_chunks`` can hand blocks of them to two threads. If
numba is there but compiling fails, a warning says so and NumPy does the work.
"""
import os
import warnings

import numpy as np

numba = None  # the numba module, once load() has imported it
layer_norm_forward = layer_norm_backward = adamw = gelu = None
enabled = None  # None until load() has run; then True when the kernels are there


def load():
    """Import numba and compile the kernels, the first time only; True when they are on."""
    global numba, enabled, layer_norm_forward, layer_norm_backward, adamw, gelu
    if enabled is not None:
        return enabled
    enabled = False
    if os.environ.get("TINYGRAD_GPT_NUMBA", "1") == "0":
        return enabled
    try:
        import numba
    except Exception:  # not installed, or a numba that does not fit this NumPy
        numba = None
        return enabled
    try:
        layer_norm_forward, layer_norm_backward, adamw, gelu = _compile()
        enabled = True
    except Exception as e:  # a numba that cannot compile these: NumPy does the work
        warnings.warn(f"tinygrad_gpt: the numba kernels are off, compiling them failed: {e}")
        numba = None
    return enabled


def usable(*arrays):
    """True when the arrays are writable NumPy arrays in C order, all float32 or all float64,
    and the kernels are on (loading them the first time).

    The kernels' signatures are for writable C-order arrays only: numba refuses a read-only one
    (a broadcast gradient from a sum's backward, a leaf made from a read-only array) even where
    the kernel only reads it. Such arrays, and strided or zero-stride ones, take the NumPy path.
    """
    return (all(isinstance(a, np.ndarray) and a.flags.c_contiguous and a.flags.writeable for a in arrays)
            and len({a.dtype for a in arrays}) == 1 and arrays[0].dtype in (np.float32, np.float64)
            and (enabled if enabled is not None else load()))


def _compile():
    """Compile the kernels now, for float32 and float64 (or load them from numba's cache)."""
    # reassociation lets the row sums vectorise; inf and NaN keep their IEEE meaning (no
    # "nnan"/"ninf" flags, and division by zero gives inf as in NumPy), so a diverging
    # run still shows NaN where it would without the kernels
    def _jit(*signatures):
        """Compile now, for float32 and float64 (from numba's cache after the first time)."""
        return numba.njit([sig.format(t) for sig in signatures for t in ("float32", "float64")],
                          nogil=True, cache=True, error_model="numpy",
                          fastmath={"reassoc", "nsz", "arcp", "contract"})

    @_jit("void({0}[:, ::1], {0}[::1], {0}[::1], float64, {0}[:, ::1], {0}[:, ::1], {0}[:, ::1])")
    def layer_norm_forward(x, weight, bias, eps, out, xhat, rstd):
        """Per row: xhat = (x - mean) / sqrt(var + eps), out = xhat * weight + bias."""
        n, c = x.shape
        for i in range(n):
            mean = 0.0
            for j in range(c):
                mean += x[i, j]
            mean /= c
            var = 0.0
            for j in range(c):
                d = x[i, j] - mean
                var += d * d
            r = 1.0 / np.sqrt(var / c + eps)
            rstd[i, 0] = r
            for j in range(c):
                h = (x[i, j] - mean) * r
                xhat[i, j] = h
                out[i, j] = h * weight[j] + bias[j]

    @_jit("void({0}[:, ::1], {0}[:, ::1], {0}[:, ::1], {0}[::1], {0}[:, ::1], {0}[::1], {0}[::1])")
    def layer_norm_backward(g, xhat, rstd, weight, gx, gw, gb):
        """gx = rstd * (gh - mean(gh) - xhat * mean(gh * xhat)) with gh = g * weight, per row;
        gw and gb get the rows' sums of g * xhat and g added in."""
        n, c = g.shape
        for i in range(n):
            mean_gh = 0.0
            mean_ghx = 0.0
            for j in range(c):
                gh = g[i, j] * weight[j]
                mean_gh += gh
                mean_ghx += gh * xhat[i, j]
            mean_gh /= c
            mean_ghx /= c
            r = rstd[i, 0]
            for j in range(c):
                gx[i, j] = r * (g[i, j] * weight[j] - mean_gh - xhat[i, j] * mean_ghx)
                gw[j] += g[i, j] * xhat[i, j]
                gb[j] += g[i, j]

    @numba.njit(["void({0}[::1], {0}[::1], {0}[::1], {0}[::1], {0}[::1])".format(t)
                 for t in ("float32", "float64")], nogil=True, cache=True, error_model="numpy")
    def adamw(g, m, v, p, c):
        """One parameter's AdamW step in one pass: adamw._adam, then adamw._apply_update, step
        for step in the arrays' dtype (no fast-math: the same roundings as the NumPy path).
        c = (b1, 1 - b1, b2, 1 - b2, 1 / sqrt(1 - b2^t), eps, lr / (1 - b1^t), 1 - lr wd), in
        the arrays' dtype."""
        for i in range(g.size):
            gi = g[i]
            mi = m[i] * c[0] + gi * c[1]         # m = b1 m + (1 - b1) g
            vi = v[i] * c[2] + (gi * gi) * c[3]  # v = b2 v + (1 - b2) g^2
            m[i] = mi
            v[i] = vi
            update = mi / (np.sqrt(vi) * c[4] + c[5]) * c[6]
            p[i] = p[i] * c[7] - update          # decoupled weight decay, then the step

    @numba.njit("void(float32[::1], float32[::1], float32[::1])", nogil=True, cache=True,
                error_model="numpy")
    def gelu(x, out, d):
        """fast.gelu_arrays for float32 in one pass: out = x p with p = (1 + tanh u) / 2,
        u = c x (1 + 0.044715 x^2), and d = p + 2 out (1 - p) u' if d is not empty.
        ``out`` may be ``x`` itself.

        tanh is a rational function here (odd degree-13 numerator over even degree-6
        denominator, on u clamped to +-7.9), the float32 approximation Eigen and XLA use:
        plain multiply-adds and one division, so the loop vectorises, where numba's tanh is
        a scalar call. It stays within 4e-7 of tanh (test_gelu_kernel_is_close_to_exact).
        """
        c = np.float32(0.7978845608028654)  # sqrt(2 / pi)
        ac = np.float32(0.044715 * 0.7978845608028654)
        derivative = d.size > 0
        for i in range(x.size):
            xi = x[i]
            x2 = xi * xi
            u = (x2 * ac + c) * xi
            u = min(max(u, np.float32(-7.90531110763549805)), np.float32(7.90531110763549805))
            u2 = u * u
            num = u2 * np.float32(-2.76076847742355e-16) + np.float32(2.00018790482477e-13)
            num = num * u2 + np.float32(-8.60467152213735e-11)
            num = num * u2 + np.float32(5.12229709037114e-08)
            num = num * u2 + np.float32(1.48572235717979e-05)
            num = num * u2 + np.float32(6.37261928875436e-04)
            num = num * u2 + np.float32(4.89352455891786e-03)
            den = u2 * np.float32(1.19825839466702e-06) + np.float32(1.18534705686654e-04)
            den = den * u2 + np.float32(2.26843463243900e-03)
            den = den * u2 + np.float32(4.89352518554385e-03)
            p = np.float32(0.5) * (num * u / den) + np.float32(0.5)  # (1 + tanh u) / 2
            o = xi * p
            out[i] = o
            if derivative:  # 2 u' = 2 c + 6 * 0.044715 c x^2
                d[i] = p + o * (np.float32(1) - p) * (x2 * (np.float32(6) * ac) + np.float32(2) * c)

    return layer_norm_forward, layer_norm_backward, adamw, gelu
