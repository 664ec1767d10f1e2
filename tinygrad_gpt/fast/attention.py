"""Fast attention: the rule of ``rules.Attention`` in query tiles, and in blocks that stay in cache.

``Attention`` computes the weights one tile of queries at a time: with the causal mask a
tile sees only the keys up to its last query, so the keys after those are never multiplied.
``BlockedAttention`` never holds the whole (..., Tq, Tk) weights: a few (batch, head) rows at a
time, rebuilt in the backward from each row's log-sum-exp (the idea of FlashAttention). Both
skip the softmax's max shift when every score is small (``_scores``), and write products
straight into their slices (NumPy's ``matmul(out=)``).
"""
import math

import numpy as np

from .. import rules
from ..backend import device_of, get_array_module, random_uniform
from ..function import sum_to
from .chunks import CHUNK, CHUNKED_MIN
from . import workspace
from .layers import _row_dots, _row_sums, _softmax


SMALL_SCORE = 60.0  # e^60 ~ 1e26: exp neither overflows nor underflows float32, even summed over 1e10 keys
SCORE_CHECK_MIN = 4096  # below this many scores, the max shift costs less than checking for it


def _scores(q, k, scale, mask, check=True):
    """s = q @ k^T * scale, plus the additive causal mask if there is one: (..., Tq, Tk).

    Also returns (if ``check``) whether every score is within +-SMALL_SCORE, so that the softmax may skip its
    max shift (a slow row-wise reduction and a whole pass). Two reductions over the whole
    array (global max and min, before the mask) tell; they are checked where they pay: on the
    CPU (on the GPU, reading them back would make the host wait for the device) and for
    SCORE_CHECK_MIN scores or more (not in a generation step's tiny score arrays).
    """
    xp = get_array_module(q, k)
    att = workspace.matmul(q, xp.swapaxes(k, -1, -2))
    att *= scale
    small = (check and att.size >= SCORE_CHECK_MIN and device_of(att) == "cpu"
             and float(att.max()) <= SMALL_SCORE and float(att.min()) >= -SMALL_SCORE)
    if mask is not None:
        att += mask
    return att, small


_mask_cache = {}


def causal_mask(xp, Tq, Tk, dtype):
    """``rules.causal_mask``, cached per shape, dtype and device."""
    key = (xp.__name__, Tq, Tk, str(dtype))
    mask = _mask_cache.get(key)
    if mask is None:
        if len(_mask_cache) >= 64:  # many shapes (generation): keep the cache small
            _mask_cache.clear()
        mask = rules.causal_mask(xp, Tq, Tk, dtype)
        _mask_cache[key] = mask
    return mask


QUERY_TILE = 64  # causal queries a tile, at 128 queries and more (measured: benchmarks/RESULTS.md)
TILED_MIN = 64    # below this many queries, one tile


def _matmul_into(a, b, out):
    """out[...] = a @ b: straight into ``out`` with NumPy; through a temporary elsewhere, so
    the GPU relies on nothing beyond the plain product."""
    if device_of(out) == "cpu":
        get_array_module(out).matmul(a, b, out=out)
    else:
        out[...] = a @ b


def _query_tiles(Tq, Tk, causal, tile=None):
    """Tiles of queries for attention, widest first: (a, b, kb) for the queries a .. b-1, which
    see the keys 0 .. kb-1.

    With the causal mask query i sees the keys up to i + Tk - Tq, so a tile's scores need
    only the keys up to its last query's: at four tiles, 5/8 of the (Tq, Tk) square. Tiles
    are ``tile`` rows, by default QUERY_TILE, or two halves from TILED_MIN queries to
    2 QUERY_TILE; below that, and without the mask, one tile of every query and key (the
    sizes were measured: benchmarks/RESULTS.md).
    """
    if tile is None:
        tile = QUERY_TILE if Tq >= 2 * QUERY_TILE else -(-Tq // 2) if Tq >= TILED_MIN else Tq
    if not causal or tile >= Tq:
        return [(0, Tq, Tk)]
    ends = [(a, min(a + tile, Tq)) for a in reversed(range(0, Tq, tile))]
    return [(a, b, b + Tk - Tq) for a, b in ends]


class Attention(rules.Attention):
    """``rules.Attention`` in query tiles, with the softmax in place.

    With the causal mask, on the CPU, the queries go in tiles (``_query_tiles``): a tile of
    queries sees only the keys up to its last query, so the keys after those are never
    multiplied. The weights of each tile are kept for the backward.
    """

    @staticmethod
    def choose(arrays, kwargs):
        """The op for these inputs: BlockedAttention where the weights outgrow the caches."""
        if kwargs.get("dropout_p", 0) == 0 and weights_outgrow_caches(*arrays):
            return BlockedAttention
        return Attention

    def forward(self, q, k, v, causal=True, scale=None, dropout_p=0.0):
        xp = get_array_module(q, k, v)
        Tq, Tk = q.shape[-2], k.shape[-2]
        self.scale = q.shape[-1] ** -0.5 if scale is None else scale
        self.dropout_p = dropout_p
        mask = None  # a single (newest) query may see every key
        if causal and Tq > 1:
            mask = causal_mask(xp, Tq, Tk, q.dtype)
        # tiles on the CPU, where they were measured; one tile with dropout, so that its
        # random draws do not depend on the tiling
        self.tiles = _query_tiles(Tq, Tk, mask is not None and dropout_p == 0
                                  and device_of(q) == "cpu")
        lead = np.broadcast_shapes(q.shape[:-2], k.shape[:-2], v.shape[:-2])
        out = workspace.empty(lead + (Tq, v.shape[-1]), q.dtype, like=q)  # (..., Tq, hv)
        weights = []
        for a, b, kb in self.tiles:
            att, small = _scores(q[..., a:b, :], k[..., :kb, :], self.scale,
                                 None if mask is None else mask[a:b, :kb])  # (..., b - a, kb)
            # the scores are not needed again: the softmax reuses their memory
            _softmax(att, axis=-1, out=att, shift=not small)
            keep = None
            if dropout_p > 0:
                keep = random_uniform(att.shape, att.dtype, device_of(att)) >= dropout_p
                _matmul_into(att * keep * (1 / (1 - dropout_p)), v[..., :kb, :], out[..., a:b, :])
            else:
                _matmul_into(att, v[..., :kb, :], out[..., a:b, :])
            weights.append((att, keep))
        self.save_for_backward(q, k, v, weights, out)
        return out

    def backward(self, g):
        xp = get_array_module(g)
        q, k, v, weights, out = self.saved
        # softmax backward row by row: gs = A * (gA - sum_j gA_j A_j). That row sum equals
        # g . out (sum_j (g . v_j) A_d_j = g . out), a (..., Tq, 1) product over hs, not Tk.
        row = _row_dots(g, out)
        lead = g.shape[:-2]
        gq, gk, gv = (workspace.empty(lead + a.shape[-2:], g.dtype, like=g) for a in (q, k, v))
        for i, ((a, b, kb), (att, keep)) in enumerate(zip(self.tiles, weights)):
            g_t, q_t, k_t, v_t = g[..., a:b, :], q[..., a:b, :], k[..., :kb, :], v[..., :kb, :]
            # out = A_d @ v with A_d = A * keep / (1 - p):  gv = A_d^T @ g,  gA_d = g @ v^T
            att_d = att if keep is None else att * keep * (1 / (1 - self.dropout_p))
            ga = workspace.matmul(g_t, xp.swapaxes(v_t, -1, -2))
            if keep is not None:  # dropout: d/dA (A * keep / (1 - p)) = keep / (1 - p)
                ga *= keep
                ga *= 1 / (1 - self.dropout_p)
            gs = ga
            gs -= row[..., a:b, :]
            gs *= att  # masked entries have A = 0, so their gradient is 0
            gs *= self.scale
            # s = q @ k^T:  gq = gs @ k,  gk = gs^T @ q. The first tile sees every key, so it
            # writes gk and gv; the later tiles add their share
            _matmul_into(gs, k_t, gq[..., a:b, :])
            if i == 0:
                _matmul_into(xp.swapaxes(att_d, -1, -2), g_t, gv[..., :kb, :])
                _matmul_into(xp.swapaxes(gs, -1, -2), q_t, gk[..., :kb, :])
            else:
                gv[..., :kb, :] += xp.swapaxes(att_d, -1, -2) @ g_t
                gk[..., :kb, :] += xp.swapaxes(gs, -1, -2) @ q_t
        return sum_to(gq, q.shape), sum_to(gk, k.shape), sum_to(gv, v.shape)


class BlockedAttention(rules.Attention):
    """The same attention as ``Attention`` (without dropout), in blocks of (batch, head) rows.

    For long sequences the (..., Tq, Tk) weights are the largest arrays of a step. Here they
    never exist in full: each block's scores are made, used and dropped while they sit in
    the CPU caches. The forward keeps only each row's log-sum-exp L = m + log sum_j exp(s_j - m)
    (m the row's max, or 0 when the scores are small enough to skip the shift); the backward rebuilds a block's weights as A = exp(s - L), at the price of one more
    q @ k^T (the idea of FlashAttention). q, k, v share their leading dims; ``block`` is the
    number of (Tq, Tk) matrices in one block (by default, about 4 CHUNK scores a tile).

    With the causal mask each block also goes through its queries in tiles (``_query_tiles``,
    of ``tile`` rows if given): the queries a .. b-1 see keys up to b - 1 + Tk - Tq only, so
    the keys after those are never multiplied. At four tiles that skips 3/8 of the products
    and exps (benchmarks/RESULTS.md has the timings).
    """

    def forward(self, q, k, v, causal=True, scale=None, block=None, tile=None, dropout_p=0.0):
        if dropout_p:
            raise ValueError("BlockedAttention has no dropout; use Attention")
        xp = get_array_module(q, k, v)
        Tq, Tk = q.shape[-2], k.shape[-2]
        self.scale = q.shape[-1] ** -0.5 if scale is None else scale
        self.mask = causal_mask(xp, Tq, Tk, q.dtype) if causal and Tq > 1 else None
        self.shapes = q.shape, k.shape, v.shape
        q3, k3, v3 = (a.reshape(-1, *a.shape[-2:]) for a in (q, k, v))  # (N, T, hs)
        self.tiles = _query_tiles(Tq, Tk, self.mask is not None, tile)  # (a, b, keys seen)
        rows = self.tiles[-1][1]  # queries a tile: the last tile listed, from query 0, is whole
        self.blocks = _blocks(q3.shape[0], block or max(1, 4 * CHUNK // (rows * Tk)))
        out = workspace.empty((q3.shape[0], Tq, v.shape[-1]), q.dtype, like=q)  # (N, Tq, hv)
        lse = workspace.empty((q3.shape[0], Tq, 1), q.dtype, like=q)            # (N, Tq, 1)
        for s in self.blocks:
            for a, b, kb in self.tiles:
                att, small = self._scores(q3, k3, s, a, b, kb)           # (n, b - a, kb)
                m = 0                                                    # the row max, if needed
                if not small:
                    m = att.max(axis=-1, keepdims=True)
                    att -= m
                xp.exp(att, out=att)
                total = _row_sums(att)
                att /= total                                             # the softmax, A
                xp.matmul(att, v3[s, :kb], out=out[s, a:b])
                lse[s, a:b] = xp.log(total) + m
        self.save_for_backward(q3, k3, v3, out, lse)
        return out.reshape(*q.shape[:-1], v.shape[-1])

    def _scores(self, q3, k3, s, a, b, kb, check=True):
        """The scaled, masked scores of queries a .. b-1 against keys 0 .. kb-1, block s."""
        mask = None if self.mask is None else self.mask[a:b, :kb]
        return _scores(q3[s, a:b], k3[s, :kb], self.scale, mask, check=check)

    def backward(self, g):
        xp = get_array_module(g)
        q3, k3, v3, out, lse = self.saved
        g3 = g.reshape(out.shape)
        row = _row_dots(g3, out)  # softmax's row sum, g . out, as in Attention
        gq, gk, gv = workspace.empty_like(q3), workspace.empty_like(k3), workspace.empty_like(v3)
        for s in self.blocks:
            for i, (a, b, kb) in enumerate(self.tiles):
                att, _ = self._scores(q3, k3, s, a, b, kb, check=False)
                att -= lse[s, a:b]
                xp.exp(att, out=att)                               # A = exp(s - L), the forward's weights
                gs = g3[s, a:b] @ v3[s, :kb].swapaxes(-1, -2)      # gA = g @ v^T
                gs -= row[s, a:b]
                gs *= att                                          # gs = A * (gA - g . out) * scale
                gs *= self.scale
                xp.matmul(gs, k3[s, :kb], out=gq[s, a:b])          # s = q @ k^T:  gq = gs @ k
                # out = A @ v:  gv = A^T @ g;  gk = gs^T @ q. The first tile sees every key of
                # the block, so it writes them; the later tiles add their share
                if i == 0:
                    xp.matmul(att.swapaxes(-1, -2), g3[s, a:b], out=gv[s, :kb])
                    xp.matmul(gs.swapaxes(-1, -2), q3[s, a:b], out=gk[s, :kb])
                else:
                    gv[s, :kb] += att.swapaxes(-1, -2) @ g3[s, a:b]
                    gk[s, :kb] += gs.swapaxes(-1, -2) @ q3[s, a:b]
        return tuple(grad.reshape(shape) for grad, shape in zip((gq, gk, gv), self.shapes))


def _blocks(n, size):
    """Slices of ``size`` rows that cover range(n)."""
    return [slice(i, min(i + size, n)) for i in range(0, n, size)]


def weights_outgrow_caches(q, k, v):
    """True on the CPU when the attention weights have CHUNKED_MIN elements or more: then
    blocks that stay in the caches (``BlockedAttention``) beat one pass after another over
    the whole array. q, k and v are arrays."""
    return (q.shape[:-2] == k.shape[:-2] == v.shape[:-2] and device_of(q) == "cpu"
            and math.prod(q.shape[:-1]) * k.shape[-2] >= CHUNKED_MIN)


Attention.blocked = BlockedAttention  # what functional.blocked_attention runs in this layer
