"""The GPT: config, causal self-attention, MLP, Block, and the model with KV-cache generation.

It follows GPT-2 (and nanoGPT): pre-LayerNorm blocks, learned position
embeddings, a tanh-GELU MLP of width 4 * n_embd, and an output head tied to the
token embedding. Parameter names and shapes are GPT-2's own, so its checkpoints
map on one to one (Linear weights are stored (in, out), as in GPT-2's Conv1D).
"""
import math
from dataclasses import dataclass, asdict

import numpy as np

from . import backend, functional as F, modes
from .backend import get_array_module, to_numpy
from .nn import Module, ModuleList, Linear, Embedding, LayerNorm, Dropout
from .tensor import Tensor, no_grad
from .optim import AdamW


@dataclass
class GPTConfig:
    block_size: int
    vocab_size: int
    n_layer: int
    n_head: int
    n_embd: int
    dropout: float = 0.0
    bias: bool = True  # biases in Linear and LayerNorm layers, as in GPT-2

    def __post_init__(self):
        for name in ("block_size", "vocab_size", "n_layer", "n_head", "n_embd"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value <= 0:
                raise ValueError(f"GPTConfig: {name} must be a positive integer, got {value!r}")
        if heads_problem(self.n_embd, self.n_head):
            raise ValueError(f"GPTConfig: {heads_problem(self.n_embd, self.n_head)}")
        if (isinstance(self.dropout, bool) or not isinstance(self.dropout, (int, float, np.floating))
                or not 0 <= self.dropout < 1):
            raise ValueError(f"GPTConfig: dropout must be a number in [0, 1), got {self.dropout!r}")
        if not isinstance(self.bias, bool):
            raise ValueError(f"GPTConfig: bias must be true or false, got {self.bias!r}")

    def to_dict(self):
        return asdict(self)


def heads_problem(n_embd, n_head, flag=""):
    """Why ``n_embd`` cannot be split into ``n_head`` heads, or None: the one check, used by
    GPTConfig and by the train command's flags (``flag="--"``).

        >>> heads_problem(130, 4, flag="--")
        '--n_embd=130 is not divisible by --n_head=4'
    """
    return f"{flag}n_embd={n_embd} is not divisible by {flag}n_head={n_head}" if n_embd % n_head else None


class CausalSelfAttention(Module):
    def __init__(self, config, init=True):
        self.n_head, self.n_embd, self.dropout = config.n_head, config.n_embd, config.dropout
        # query, key and value projections for all heads, in one matmul
        self.c_attn = Linear(config.n_embd, 3 * config.n_embd, bias=config.bias, init=init)
        self.c_proj = Linear(config.n_embd, config.n_embd, bias=config.bias, init=init)
        self.resid_dropout = Dropout(config.dropout)
        self.record_weights = False  # True: keep the attention weights of each forward in .weights
        self.weights = None          # (B, nh, Tq, Tk), for the attention pictures (commands/viz.py)

    def forward(self, x, cache=None, newest_only=False):
        B, T, C = x.shape
        nh, hs = self.n_head, C // self.n_head
        # (B, T, 3C) -> (3, B, nh, T, hs): q, k, v for every head
        qkv = self.c_attn(x).reshape(B, T, 3, nh, hs).permute(2, 0, 3, 1, 4)
        q, k, v = qkv[0], qkv[1], qkv[2]  # each (B, nh, T, hs)
        if cache is not None:  # generation: prepend the keys and values of earlier tokens
            k, v = cache.extend(k, v)      # (B, nh, T_past + T, hs)
        if newest_only:  # generation: only the newest position's output is needed
            q = q[:, :, -1:]               # (B, nh, 1, hs); it still sees every key
        if self.record_weights:
            self.weights = self._attention_weights(q, k)
        p = self.dropout if self.training else 0.0
        y = F.scaled_dot_product_attention(q, k, v, causal=True, dropout_p=p)  # (B, nh, Tq, hs)
        y = y.permute(0, 2, 1, 3).reshape(B, q.shape[2], C)  # re-assemble the heads side by side
        return self.resid_dropout(self.c_proj(y))

    @staticmethod
    def _attention_weights(q, k):
        """The softmax weights A (B, nh, Tq, Tk) that the attention below applies, as a host array:
        the same op with the identity as values returns them, softmax(q k^T / sqrt(hs) + mask) @ I = A."""
        xp = get_array_module(k.data)
        B, nh, Tk, _ = k.shape
        eye = Tensor._wrap(xp.broadcast_to(xp.eye(Tk, dtype=k.dtype), (B, nh, Tk, Tk)).copy())
        with no_grad():
            return to_numpy(F.scaled_dot_product_attention(q, k, eye, causal=True).data)


class MLP(Module):
    def __init__(self, config, init=True):
        self.c_fc = Linear(config.n_embd, 4 * config.n_embd, bias=config.bias, init=init)
        self.c_proj = Linear(4 * config.n_embd, config.n_embd, bias=config.bias, init=init)
        self.dropout = Dropout(config.dropout)

    def forward(self, x):
        h = self.c_fc(x, activation="gelu")  # (B, T, 4C): gelu(x @ W + b), fused
        return self.dropout(self.c_proj(h))  # (B, T, C)


class Block(Module):
    """One transformer block: x + attn(ln(x)), then x + mlp(ln(x)) (pre-norm residuals)."""

    def __init__(self, config, init=True):
        self.ln_1 = LayerNorm(config.n_embd, bias=config.bias, init=init)
        self.attn = CausalSelfAttention(config, init)
        self.ln_2 = LayerNorm(config.n_embd, bias=config.bias, init=init)
        self.mlp = MLP(config, init)

    def forward(self, x, cache=None, newest_only=False):
        residual = x[:, -1:] if newest_only else x  # newest_only: (B, 1, C) from here on
        x = residual + self.attn(self.ln_1(x), cache, newest_only)
        return x + self.mlp(self.ln_2(x))


class Transformer(Module):
    """The body of the GPT, named as GPT-2 names it (``transformer.*``)."""

    def __init__(self, config, init=True):
        self.wte = Embedding(config.vocab_size, config.n_embd, init=init)  # token embeddings
        self.wpe = Embedding(config.block_size, config.n_embd, init=init)  # position embeddings
        self.drop = Dropout(config.dropout)
        self.h = ModuleList(Block(config, init) for _ in range(config.n_layer))
        self.ln_f = LayerNorm(config.n_embd, bias=config.bias, init=init)


class LayerCache:
    """Keys and values of one attention layer for the tokens seen so far (no gradients)."""

    def __init__(self):
        self.k = self.v = None

    def extend(self, k, v):
        xp = get_array_module(k.data)
        if self.k is not None:
            k = Tensor._wrap(xp.concatenate([self.k, k.data], axis=2))
            v = Tensor._wrap(xp.concatenate([self.v, v.data], axis=2))
        self.k, self.v = k.data, v.data
        return k, v

    @property
    def length(self):
        return 0 if self.k is None else self.k.shape[2]


class GPT(Module):
    def __init__(self, config, init=True):
        """``init=False`` builds the shape alone: every parameter is a read-only placeholder on the
        host (a broadcast zero, no memory, no random numbers drawn), to be assigned before use,
        as when a checkpoint is loaded into it."""
        self.config = config
        self.transformer = Transformer(config, init)
        if init:
            self._init_weights()

    def _init_weights(self):
        """GPT-2's init: N(0, 0.02), zero biases, and N(0, 0.02 / sqrt(2 n_layer)) for the
        projections that write into the residual stream, so its variance does not grow with depth."""
        rng = backend.rng()
        for name, p in self.named_parameters():
            if name.endswith("bias"):
                value = np.zeros(p.shape)
            elif name.endswith("ln_1.weight") or name.endswith("ln_2.weight") or name.endswith("ln_f.weight"):
                value = np.ones(p.shape)
            else:
                std = 0.02 / math.sqrt(2 * self.config.n_layer) if name.endswith("c_proj.weight") else 0.02
                value = rng.standard_normal(p.shape) * std
            p.data = backend.to_device(value.astype(p.dtype), p.device)

    def num_parameters(self, non_embedding=True):
        """Parameter count; by default without the position embeddings (as nanoGPT reports it)."""
        n = super().num_parameters()
        return n - self.transformer.wpe.weight.numel() if non_embedding else n

    # ------------------------------------------------------------------ forward
    def _check_idx(self, idx, what="idx"):
        """idx as an integer array of shape (B, T), or ValueError; the token embedding checks
        the ids' range (``F.embedding``), where they are."""
        data = idx.data if isinstance(idx, Tensor) else idx
        if not backend.is_array(data):
            data = np.asarray(data)
        if data.dtype.kind not in "iu":
            raise ValueError(f"{what} must hold integer token ids, got dtype {data.dtype}")
        if data.ndim != 2:
            raise ValueError(f"{what} must have shape (B, T), got {tuple(data.shape)}")
        return data

    def forward(self, idx, targets=None):
        """idx (B, T) integer ids -> (logits (B, T, vocab), mean cross-entropy loss or None)."""
        idx = self._check_idx(idx)
        T = idx.shape[1]
        if T > self.config.block_size:
            raise ValueError(f"sequence length {T} is longer than block_size={self.config.block_size}")
        if targets is not None:
            targets = self._check_targets(targets, idx.shape)
        x = self._body(idx, start=0, caches=None)
        # the output head is the token embedding, transposed (weight tying)
        logits = x @ self.transformer.wte.weight.T  # (B, T, vocab)
        loss = None if targets is None else F.cross_entropy(logits, targets, ignore_index=-1)
        return logits, loss

    def _check_targets(self, targets, shape):
        data = targets.data if isinstance(targets, Tensor) else targets
        data = data if backend.is_array(data) else np.asarray(data)
        if data.dtype.kind not in "iu":
            raise ValueError(f"targets must hold integer token ids, got dtype {data.dtype}")
        if tuple(data.shape) != tuple(shape):
            raise ValueError(f"targets must have the shape of idx {tuple(shape)}, got {tuple(data.shape)}")
        return data  # cross_entropy checks the ids where they are (on the host: no device sync)

    def _body(self, idx, start, caches, newest_only=False):
        """Embeddings, blocks and the final layer norm: (B, T) ids -> (B, T, C).

        With ``newest_only`` the last block computes (B, 1, C) for the newest position
        alone (the earlier blocks, and every key and value, are still computed in full).
        """
        tr = self.transformer
        T = idx.shape[1]
        tok = tr.wte(idx)                             # (B, T, C); the ids' range is checked here
        pos = tr.wpe.weight[start:start + T]          # (T, C), positions start .. start+T-1
        x = tr.drop(tok + pos)
        last = len(tr.h) - 1
        for i, block in enumerate(tr.h):
            x = block(x, None if caches is None else caches[i], newest_only and i == last)
        return tr.ln_f(x)

    # ------------------------------------------------------------------ optimizer
    def configure_optimizers(self, weight_decay, learning_rate, betas):
        """AdamW with weight decay on 2-D weights (matmuls, embeddings) only, as nanoGPT does:
        the fast layer's in the "fast" mode, the rule of optim.py in the others."""
        params = self.parameters()
        decay = [p for p in params if p.ndim >= 2]
        no_decay = [p for p in params if p.ndim < 2]
        groups = [{"params": decay, "weight_decay": weight_decay},
                  {"params": no_decay, "weight_decay": 0.0}]
        return modes.current().implementation(AdamW)(groups, lr=learning_rate, betas=betas)

    def flops_per_token(self):
        """Training FLOPs per token (forward + backward), PaLM's estimate used by nanoGPT."""
        c = self.config
        return 6 * self.num_parameters() + 12 * c.n_layer * c.n_embd * c.block_size

    # ------------------------------------------------------------------ generation
    def _next_logits(self, idx, caches):
        """Logits (B, vocab) for the token after ``idx``, using and filling ``caches`` if given."""
        block = self.config.block_size
        if caches is None:  # the plain path: run the whole window (at most block_size tokens)
            x = self._body(idx[:, -block:], 0, None)
        elif caches[0].length + 1 <= block and caches[0].length == idx.shape[1] - 1:
            x = self._body(idx[:, -1:], caches[0].length, caches)  # only the newest token
        else:  # first call, or the window slid: positions shifted, so rebuild the cache
            for c in caches:
                c.k = c.v = None
            x = self._body(idx[:, -block:], 0, caches, newest_only=True)
        return (x[:, -1, :] @ self.transformer.wte.weight.T).data  # (B, vocab)

    def generate(self, idx, max_new_tokens, temperature=1.0, top_k=None, top_p=None,
                 use_cache=True, seed=None):
        """Extend each row of ``idx`` (B, T) by ``max_new_tokens`` sampled tokens.

        temperature=0 picks the most likely token. ``top_k`` keeps the k likeliest,
        ``top_p`` the smallest set whose probability reaches p. With the same seed,
        the KV cache gives exactly the tokens of the plain path. Returns a host
        NumPy int64 array of shape (B, T + max_new_tokens).
        """
        problem = sampling_problem(temperature, top_k, top_p)
        if problem is not None:
            raise ValueError(problem)
        idx = self._check_idx(idx)
        if idx.shape[1] == 0:
            raise ValueError("generate needs at least one token of context per row")
        xp = get_array_module(idx)
        rng = np.random.default_rng(seed) if seed is not None else backend.rng()
        caches = [LayerCache() for _ in self.transformer.h] if use_cache else None
        was_training = self.training
        self.eval()
        try:
            with no_grad():
                for _ in range(max_new_tokens):
                    logits = to_numpy(self._next_logits(idx, caches)).astype(np.float64)
                    if not np.isfinite(logits).all():  # weights that overflow: no token can be drawn
                        raise FloatingPointError("the model's logits are not finite (nan or inf)")
                    nxt = sample_token(logits, temperature, top_k, top_p, rng)  # (B,)
                    idx = xp.concatenate([idx, xp.asarray(nxt[:, None], dtype=idx.dtype)], axis=1)
        finally:
            self.train(was_training)
        return to_numpy(idx).astype(np.int64)


# ----------------------------------------------------------------------------- shapes without weights

def parameter_shapes(config):
    """Parameter name -> shape of ``GPT(config)``, read off a placeholder model (no weights).

    It builds ``config.n_layer`` blocks, so a config read from a file is checked against the
    tensors the file holds first (``checkpoint.check_model_state`` does).

        >>> shapes = parameter_shapes(GPTConfig(block_size=8, vocab_size=10, n_layer=1, n_head=2, n_embd=4))
        >>> shapes["transformer.wte.weight"], shapes["transformer.h.0.mlp.c_fc.weight"]
        ((10, 4), (4, 16))
    """
    return {name: tuple(p.shape) for name, p in GPT(config, init=False).named_parameters()}


def sampling_problem(temperature, top_k, top_p):
    """What is wrong with these sampling arguments, or None: the one check, used by ``generate``
    and by the ``sample`` command's flags.

        >>> sampling_problem(0.8, 0, None)
        'top_k must be >= 1, got 0'
    """
    if not temperature >= 0:  # also refuses nan
        return f"temperature must be >= 0, got {temperature}"
    if top_k is not None and top_k < 1:
        return f"top_k must be >= 1, got {top_k}"
    if top_p is not None and not 0 < top_p <= 1:
        return f"top_p must be in (0, 1], got {top_p}"
    return None


def sample_token(logits, temperature, top_k, top_p, rng):
    """Pick one token id per row of host logits (B, V), drawing one uniform number per row."""
    if temperature == 0:
        return logits.argmax(axis=-1)
    logits = logits / temperature
    if top_k is not None and top_k < logits.shape[-1]:
        kth = np.sort(logits, axis=-1)[:, -top_k][:, None]
        logits = np.where(logits < kth, -np.inf, logits)
    probs = np.exp(logits - logits.max(axis=-1, keepdims=True))
    probs /= probs.sum(axis=-1, keepdims=True)
    if top_p is not None and top_p < 1:
        order = np.argsort(-probs, axis=-1, kind="stable")
        sorted_p = np.take_along_axis(probs, order, axis=-1)
        # keep a token if the mass before it is still below top_p (the top token always stays)
        drop = (np.cumsum(sorted_p, axis=-1) - sorted_p) >= top_p
        keep = np.zeros_like(probs)
        np.put_along_axis(keep, order, ~drop * 1.0, axis=-1)  # back to vocabulary order
        probs = probs * keep
        probs /= probs.sum(axis=-1, keepdims=True)
    cdf = np.cumsum(probs, axis=-1)
    u = rng.random((logits.shape[0], 1)) * cdf[:, -1:]
    return np.minimum((cdf <= u).sum(axis=-1), logits.shape[-1] - 1)
