"""The fast layer: what makes the rules fast, kept out of the rules themselves.

Each op here subclasses the rule it speeds up and overrides its ``forward`` and ``backward``
with the same maths, done faster: query tiles and blocked attention (``attention.py``), GELU,
layer norm and Linear in cache-sized chunks, with BLAS row sums and in-place products
(``layers.py``), optional numba kernels compiled on first use (``kernels.py``), gradients
added in place (``grads.py``), and AdamW a parameter group at a time (``adamw.py``).
tests/test_fast.py holds every fast op to its rule, values and gradients.

``OPS`` maps each rule to its fast op. The "fast" mode (modes.py, the default) uses it; modes.py
is the only module outside this package that imports it. Importing it imports no numba and
changes no process-wide setting.
"""
from .. import ops, rules
from .adamw import AdamW
from .attention import Attention, BlockedAttention, weights_outgrow_caches
from .grads import InPlaceGradients, SliceGrad
from .layers import Add, Gelu, GetItem, LayerNorm, Linear, Reshape, Softmax, gelu_arrays

OPS = {
    ops.Add: Add,
    ops.Reshape: Reshape,
    ops.Gelu: Gelu,
    ops.GetItem: GetItem,
    rules.Linear: Linear,
    rules.Softmax: Softmax,
    rules.LayerNorm: LayerNorm,
    rules.Attention: Attention,
}

__all__ = ["OPS", "AdamW", "Add", "Attention", "BlockedAttention", "Gelu", "GetItem", "InPlaceGradients", "LayerNorm",
           "Linear", "Reshape", "SliceGrad", "Softmax", "gelu_arrays", "weights_outgrow_caches"]
