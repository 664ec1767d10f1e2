"""The fast layer: what makes the rules fast, kept out of the rules themselves.

Each op here subclasses the rule it speeds up and overrides its ``forward`` and ``backward``
with the same maths, done faster: query tiles and blocked attention (``attention.py``), GELU,
layer norm and Linear in cache-sized chunks, with BLAS row sums and in-place products
(``layers.py``), optional numba kernels compiled on first use (``kernels.py``), gradients
added in place (``grads.py``), and glibc allocator tuning for a training process
(``allocator.py``); ``threads.py`` says how many threads the CPU work of this process may use. tests/test_fast.py holds every fast op to its rule, values and gradients.

``OPS`` maps each rule to its fast op. ``functional.mode("fast")``, the default, makes the
engine use it; the rule files never import this package. Importing it imports no numba and
changes no process-wide setting.
"""
from .. import ops, rules
from .attention import Attention, BlockedAttention, weights_outgrow_caches
from .grads import InPlaceGradients, SliceGrad
from .layers import Gelu, GetItem, LayerNorm, Linear, Softmax, gelu_arrays

OPS = {
    ops.Gelu: Gelu,
    ops.GetItem: GetItem,
    rules.Linear: Linear,
    rules.Softmax: Softmax,
    rules.LayerNorm: LayerNorm,
    rules.Attention: Attention,
}

__all__ = ["OPS", "Attention", "BlockedAttention", "Gelu", "GetItem", "InPlaceGradients", "LayerNorm",
           "Linear", "SliceGrad", "Softmax", "gelu_arrays", "weights_outgrow_caches"]
