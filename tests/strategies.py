"""Hypothesis strategies shared by the engine tests.

Everything here draws small arrays (sides up to 4, ranks up to 3 or 4) so that a
property test with ~30 examples, each running a float64 gradient check, stays fast.

    shapes()                 any small shape, rank 0..3
    broadcastable_shapes()   a pair (shape_x, shape_y) that broadcasts (size-1 dims, differing ranks)
    matmul_shapes()          a pair following np.matmul's signature (1-D, 2-D, batched, broadcast batch)
    float_arrays(shape)      float64 values in [-bound, bound]
    positive_arrays(shape)   values in [low, high] with low > 0 (log, sqrt, pow)
    nonzero_arrays(shape)    |values| in [low, high] (divisors, relu away from its kink)
    distinct_arrays(shape)   all values distinct and at least `gap` apart (max without ties)
    axis_args(ndim)          None, an int (possibly negative) or a tuple of axes
    index_arrays(n)          integer ids into an axis of length n, always with a repeat
"""
import numpy as np
from hypothesis import settings, HealthCheck
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

# One settings object for every property test of the engine suite: few examples
# (the machine is small and shared) and no deadline (gradient checks vary in time).
SETTINGS = settings(max_examples=30, deadline=None,
                    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
FEW = settings(max_examples=15, deadline=None,
               suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])

MAX_SIDE = 4


def shapes(min_dims=0, max_dims=3, min_side=1, max_side=MAX_SIDE):
    """A shape tuple such as (), (3,), (2, 1, 4)."""
    return hnp.array_shapes(min_dims=min_dims, max_dims=max_dims, min_side=min_side, max_side=max_side)


def broadcastable_shapes(min_dims=0, max_dims=3, max_side=MAX_SIDE):
    """Two shapes that broadcast together, e.g. ((2, 1, 3), (4, 1)) or ((), (3,))."""
    return hnp.mutually_broadcastable_shapes(
        num_shapes=2, min_dims=min_dims, max_dims=max_dims, min_side=1, max_side=max_side,
    ).map(lambda b: tuple(b.input_shapes))


def matmul_shapes(max_dims=2, max_side=MAX_SIDE):
    """Operand shapes for x @ y: (k,)@(k,), (n,k)@(k,), (k,)@(k,m), (n,k)@(k,m), and batched
    operands whose batch dimensions broadcast (up to ``max_dims`` batch dims)."""
    return hnp.mutually_broadcastable_shapes(
        signature=np.matmul.signature, max_dims=max_dims, min_side=1, max_side=max_side,
    ).map(lambda b: tuple(b.input_shapes))


def _floats(low, high, width=64):
    return st.floats(low, high, allow_nan=False, allow_infinity=False, allow_subnormal=False,
                     width=width)


def float_arrays(shape, bound=3.0, dtype=np.float64):
    """Arrays of ``dtype`` with values in [-bound, bound]."""
    return hnp.arrays(dtype, shape, elements=_floats(-bound, bound, np.dtype(dtype).itemsize * 8))


def positive_arrays(shape, low=0.2, high=4.0, dtype=np.float64):
    """Arrays with values in [low, high], low > 0: safe for log, sqrt and fractional powers."""
    assert low > 0
    return hnp.arrays(dtype, shape, elements=_floats(low, high, np.dtype(dtype).itemsize * 8))


def nonzero_arrays(shape, low=0.5, high=3.0, dtype=np.float64):
    """Arrays whose values have magnitude in [low, high], either sign: safe divisors, and
    inputs kept away from relu's kink at 0."""
    width = np.dtype(dtype).itemsize * 8
    return hnp.arrays(dtype, shape, elements=st.one_of(_floats(-high, -low, width),
                                                        _floats(low, high, width)))


@st.composite
def distinct_arrays(draw, shape, gap=0.05, dtype=np.float64):
    """Arrays whose values are all distinct and at least ``gap`` apart (no max ties,
    nothing within a finite-difference step of a kink), in a random order."""
    shape = tuple(shape)
    n = int(np.prod(shape, dtype=np.int64))
    order = draw(st.permutations(range(n)))
    spacing = draw(st.floats(1.0, 3.0)) * gap
    offset = draw(_floats(-1.0, 1.0))
    values = (np.asarray(order, dtype=np.float64) - (n - 1) / 2) * spacing + offset
    return values.reshape(shape).astype(dtype)


@st.composite
def axis_args(draw, ndim):
    """An ``axis`` argument valid for ``ndim`` dims: None, an int, or a tuple of
    distinct axes; negative forms are drawn as well as positive ones."""
    if ndim == 0:
        return None
    kind = draw(st.sampled_from(["none", "int", "tuple"]))
    if kind == "none":
        return None
    if kind == "int":
        return draw(st.integers(-ndim, ndim - 1))
    axes = draw(st.lists(st.integers(0, ndim - 1), min_size=1, max_size=ndim, unique=True))
    negate = draw(st.lists(st.booleans(), min_size=len(axes), max_size=len(axes)))
    return tuple(a - ndim if neg else a for a, neg in zip(axes, negate))


@st.composite
def index_arrays(draw, n, max_size=8, negative=True, repeat=True):
    """A 1-D int64 array of ids into an axis of length ``n``; with ``repeat`` at least one
    position appears twice (so gradients must accumulate), with ``negative`` ids in [-n, n)."""
    low = -n if negative else 0
    ids = draw(st.lists(st.integers(low, n - 1), min_size=1, max_size=max_size))
    if repeat:
        ids = ids + [ids[0]]
    ids = draw(st.permutations(ids))
    return np.asarray(ids, dtype=np.int64)


@st.composite
def permutations_of(draw, ndim):
    """A permutation of range(ndim), as a tuple."""
    return tuple(draw(st.permutations(range(ndim))))
