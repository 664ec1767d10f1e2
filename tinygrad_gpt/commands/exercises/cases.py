"""The inputs each exercise is graded on: random shapes (batch dimensions included) and edge cases.

A case builder takes a ``Draw``: ``draw.int(lo, hi)`` picks a size, ``draw.array(shape)`` the
values. The grader draws from a seeded NumPy generator; the tests drive the same builders from
hypothesis, so one property test covers every shape a builder can make.
"""
import numpy as np


class Draw:
    """Sizes and float64 values from a NumPy generator (``ints`` may be given by a test)."""

    def __init__(self, seed=0, ints=None):
        self.rng = np.random.default_rng(seed)
        self.ints = ints

    def int(self, lo, hi):
        """An integer in [lo, hi]."""
        return self.ints(lo, hi) if self.ints else int(self.rng.integers(lo, hi + 1))

    def array(self, shape, scale=1.0):
        return self.rng.standard_normal(shape) * scale

    def lead(self, most=2):
        """0 to ``most`` leading batch dimensions: (), (B,) or (B, T)."""
        return tuple(self.int(1, 3) for _ in range(self.int(0, most)))


class Case:
    """One call: ``inputs`` are (parameter name, array) in forward's order, ``kwargs`` its options,
    ``dims`` the named sizes (for "off by a factor equal to a dimension")."""

    def __init__(self, inputs, kwargs=None, dims=None, grads=None):
        self.inputs, self.kwargs, self.dims = list(inputs), dict(kwargs or {}), dict(dims or {})
        # which inputs get a gradient: the float arrays, unless told
        self.grads = grads if grads is not None else [
            v is not None and getattr(v, "dtype", None) is not None and v.dtype.kind == "f" for _, v in self.inputs]

    def arrays(self):
        return [None if v is None else v.copy() if hasattr(v, "copy") else v for _, v in self.inputs]

    def shapes(self):
        return ", ".join(f"{n} {tuple(v.shape)}" for n, v in self.inputs if hasattr(v, "shape"))


def elementwise(draw, scale=1.5):
    shape = draw.lead(3) + (draw.int(1, 5),)
    return Case([("x", draw.array(shape, scale))], dims=_dims(shape))


def matmul(draw):
    n, k, m = draw.int(1, 4), draw.int(1, 4), draw.int(1, 4)
    batch = draw.lead(2)
    kind = draw.int(0, 2)  # 0: both batched alike, 1: y is one shared matrix, 2: y broadcast over x's batch
    ybatch = batch if kind == 0 else () if kind == 1 else tuple(1 for _ in batch[:1]) + batch[1:]
    x, y = draw.array(batch + (n, k)), draw.array(ybatch + (k, m))
    return Case([("x", x), ("y", y)], dims={"n": n, "k": k, "m": m, **_dims(batch, "B")})


def softmax(draw):
    shape = draw.lead(2) + (draw.int(2, 5),)
    return Case([("x", draw.array(shape, 2.0))], {"axis": -1}, _dims(shape))


def cross_entropy(draw):
    N, V = draw.int(2, 6), draw.int(2, 6)
    targets = draw.rng.integers(0, V, N)
    targets[draw.rng.random(N) < 0.3] = -1
    targets[0] = draw.rng.integers(0, V)  # at least one row counts
    count = int((targets != -1).sum())
    return Case([("logits", draw.array((N, V), 2.0)), ("targets", targets)], {"ignore_index": -1},
                {"the number of counted rows": count, "N": N, "V": V})


def layer_norm(draw):
    shape = draw.lead(2) + (draw.int(2, 6),)
    C = shape[-1]
    return Case([("x", draw.array(shape, 2.0) + 1.0), ("weight", draw.array(C) + 1.0), ("bias", draw.array(C))],
                dims=_dims(shape))


def attention(draw):
    batch, hs, Tk = draw.lead(2), draw.int(1, 4), draw.int(1, 4)
    Tq = draw.int(1, Tk)
    q, k, v = draw.array(batch + (Tq, hs)), draw.array(batch + (Tk, hs)), draw.array(batch + (Tk, hs))
    return Case([("q", q), ("k", k), ("v", v)], {"causal": True},
                {"1 / scale = sqrt(hs)": hs ** 0.5, "Tq": Tq, "Tk": Tk, "hs": hs, **_dims(batch, "B")})


def embedding(draw):
    V, C = draw.int(2, 6), draw.int(1, 4)
    ids = draw.rng.integers(0, V, draw.lead(1) + (draw.int(2, 6),))
    ids.flat[-1] = ids.flat[0]  # an id used twice
    return Case([("x", draw.array((V, C))), ("index", ids)], dims={"V": V, "C": C})


def _dims(shape, prefix="d"):
    return {f"{prefix}{i}": n for i, n in enumerate(shape)}


def fixed(builder, ints):
    """An edge case: ``builder`` with its sizes given in order (the last repeats)."""
    def make(draw):
        sizes = list(ints)

        def pick(lo, hi):
            return min(max(sizes.pop(0) if len(sizes) > 1 else sizes[0], lo), hi)
        return builder(Draw(int(draw.rng.integers(1 << 30)), ints=pick))
    return make
