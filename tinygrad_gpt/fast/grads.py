"""In-place gradient sums: the fast twin of ``function.Gradients``.

The rule adds up the gradients of a tensor used more than once with ``+``, a new array each
time. Here the second gradient makes a new array, which the engine then owns, and later ones
are added into it in place; the gradient of a slice (``SliceGrad``) is added into just its
slice, so q, k and v, cut from one qkv tensor, write their gradients into one array.
"""
import numpy as np

from ..backend import get_array_module
from ..function import Gradients
from . import workspace


class SliceGrad:
    """The gradient of ``x[index]`` for an index that picks each element at most once:
    ``values`` at ``index`` and zero elsewhere, in an array of ``shape``, not yet written out.

    The fast ``GetItem.backward`` returns one (the rule, ``ops.GetItem``, writes the zeros
    out), so that when several slices of one tensor are used (q, k
    and v cut from one qkv tensor) the engine adds each slice's values straight into one
    gradient array, instead of making a zero-filled array per slice and adding those up.
    ``order`` lists x's axes from the outermost in memory to the innermost: the dense array
    gets x's layout, so that the gradient of a transposed view reshapes back without a copy.
    """

    def __init__(self, values, index, shape, order):
        self.values, self.index, self.shape, self.order = values, index, tuple(shape), order

    @property
    def dtype(self):
        return self.values.dtype

    def astype(self, dtype):
        return SliceGrad(self.values.astype(dtype), self.index, self.shape, self.order)

    def dense(self):
        xp = get_array_module(self.values)
        inverse = sorted(range(len(self.order)), key=self.order.__getitem__)
        shape = [self.shape[i] for i in self.order]
        if xp is np:  # from the pool, zeroed
            out = workspace.empty(shape, self.dtype)
            out.fill(0)
            out = out.transpose(inverse)
        else:
            out = xp.zeros(shape, self.dtype).transpose(inverse)
        out[self.index] = self.values
        return out

    def add_to(self, array):
        """array[index] += values, in place."""
        array[self.index] += self.values


def memory_order(x):
    """x's axes from the largest stride to the smallest: (0, 1, ...) for a C-contiguous array."""
    return sorted(range(x.ndim), key=lambda i: -abs(x.strides[i]))


class InPlaceGradients(Gradients):
    """``Gradients`` that add in place where that is safe, and take SliceGrads.

    The first gradient to reach a tensor is stored as it is (other nodes may hold that array
    too); the second makes a new array, the sum, which is owned here, and later ones are added
    into it in place. A SliceGrad adds only its slice.
    """

    def __init__(self, *args):
        super().__init__(*args)
        self.owned = set()

    def add(self, key, gx):
        if key in self.owned:
            if isinstance(gx, SliceGrad):
                gx.add_to(self[key])
            else:
                self[key] += gx
        elif key not in self:
            self[key] = gx
        else:  # the second gradient: a new array, the sum
            earlier = self[key]
            if isinstance(earlier, SliceGrad):
                earlier, gx = gx, earlier
            if isinstance(gx, SliceGrad):  # write out one slice, add the other gradient into it
                total = gx.dense()
                if isinstance(earlier, SliceGrad):
                    earlier.add_to(total)
                else:
                    total += earlier
            else:
                total = workspace.add(earlier, gx)
            self[key] = total
            self.owned.add(key)

    def take(self, key):
        g = self.pop(key, None)
        self.owned.discard(key)
        return g.dense() if isinstance(g, SliceGrad) else g

    def leaf_copy(self, g, dtype):
        """``g`` copied into a pooled array (``workspace``) when it is a C-ordered NumPy array
        of ``dtype``: a parameter's ``.grad`` is dropped by ``zero_grad`` and lent again."""
        if isinstance(g, np.ndarray) and g.dtype == dtype and g.flags.c_contiguous:
            out = workspace.empty(g.shape, dtype)
            np.copyto(out, g)
            return out
        return super().leaf_copy(g, dtype)
