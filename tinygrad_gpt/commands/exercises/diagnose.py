"""Compare a learner's array with the expected one, and name the likely mistake.

``compare`` returns None when they agree, else a few lines: the shape, the worst element (yours
against the expected value) and, where a known pattern fits, the likely mistake: a wrong sign, a
factor equal to a dimension, a missing sum over broadcast axes, or an exercise's own patterns
(``candidates``: arrays that a known mistake would give, each with its explanation).
"""
import numpy as np

from ...function import sum_to


def close(a, e, rtol=1e-7, atol=1e-9):
    """True when ``a`` equals ``e`` to float64 rounding (scaled by e's size)."""
    a, e = np.asarray(a, dtype=np.float64), np.asarray(e, dtype=np.float64)
    if a.shape != e.shape:
        return False
    both_nan = np.isnan(a) & np.isnan(e)
    scale = atol * max(1.0, float(np.nanmax(np.abs(e))) if e.size and not np.isnan(e).all() else 1.0)
    return bool(np.all(both_nan | (np.abs(a - e) <= scale + rtol * np.abs(e))))


def worst(a, e):
    """The index of the worst element, and the line that shows it."""
    diff = np.abs(np.nan_to_num(a - e, nan=np.inf))
    i = np.unravel_index(int(np.argmax(diff)), e.shape) if e.size else ()
    where = "[" + ", ".join(str(int(j)) for j in i) + "]"
    return f"worst element {where}: yours {a[i]:.10g}, expected {e[i]:.10g}"


def compare(what, a, e, dims=None, candidates=()):
    """None if ``a`` matches ``e``; else the diagnosis lines for ``what`` (e.g. "the gradient of `x`")."""
    if a is None:
        return [f"{what}: you returned None", "likely mistake: return one gradient per input of forward, "
                "in forward's order"]
    a = np.asarray(a)
    e = np.asarray(e)
    if a.shape != e.shape:
        return _shape(what, a, e)
    if close(a, e):
        return None
    lines = [f"{what} is wrong at shape {e.shape}", worst(a, e)]
    if not np.isfinite(a).all() and np.isfinite(e).all():
        lines.append("likely mistake: yours overflows to inf or nan; subtract the row maximum before exp")
        return lines
    guess = _pattern(a, e, dims or {}, candidates)
    if guess:
        lines.append("likely mistake: " + guess)
    return lines


def _shape(what, a, e):
    lines = [f"{what} has shape {a.shape}, expected {e.shape}"]
    try:
        summed = sum_to(a, e.shape) if a.ndim >= e.ndim else None
    except ValueError:
        summed = None
    if summed is not None and summed.shape == e.shape and close(summed, e):
        lines.append("likely mistake: it needs the sum over the broadcast axes (sum_to, docs/03-broadcasting.md)")
    elif a.size == e.size and close(a.reshape(e.shape), e):
        lines.append(f"likely mistake: the values are right; reshape it to {e.shape}")
    elif a.ndim < e.ndim and a.size < e.size:
        lines.append("likely mistake: keep the summed axes (keepdims=True), or sum over fewer axes")
    elif e.ndim > 2 or a.ndim > 2:
        lines.append("likely mistake: a formula written for 2-d arrays; with batch dimensions, transpose "
                     "the last two axes only (swapaxes(-1, -2)) and sum over every batch axis")
    return lines


def _pattern(a, e, dims, candidates):
    """The known mistake that turns ``e`` into ``a``, or None."""
    if close(a, -e):
        return "the gradient has the wrong sign"
    for array, why in candidates:
        if array is not None and np.shape(array) == a.shape and close(a, array):
            return why
    nonzero = np.abs(e) > 1e-9 * max(1.0, float(np.abs(e).max()))
    if not nonzero.any():
        return None
    ratio = a[nonzero] / e[nonzero]
    k = float(np.median(ratio))
    if not np.allclose(ratio, k, rtol=1e-6) or abs(k - 1) < 1e-9:
        return None
    for name, n in dims.items():
        for factor, how in ((n, "a factor"), (1 / n if n else 0, "a factor 1 /")):
            if n != 1 and abs(k - factor) <= 1e-6 * abs(factor):
                size = f"{n:g}"
                if "scale" in name:
                    return (f"the gradient is off by {how} {size}, which equals {name}: the scale is missing "
                            f"from q or k (gq = gs @ k * scale, gk = gs^T @ q * scale)")
                return (f"the gradient is off by {how} {size}, which equals {name}: a mean where a sum "
                        f"belongs (or the other way round), or a missing or extra scale")
    return f"the gradient is off by a constant factor {k:.6g}"
