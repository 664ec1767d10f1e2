"""An independent GPT-2 in PyTorch: the reference the parity tests and benchmarks compare against.

Written from the architecture description (GPT-2 / nanoGPT), not from
tinygrad_gpt, and it imports nothing from it:

- token embedding + learned position embedding, dropout;
- n_layer pre-LayerNorm blocks: x + attn(ln_1(x)), then x + mlp(ln_2(x));
- causal multi-head self-attention with one fused q/k/v projection;
- an MLP of width 4 * n_embd with the tanh approximation of GELU;
- a final LayerNorm and an output head tied to the token embedding.

torch's ``nn.Linear`` stores its weight as (out, in); tinygrad_gpt (like GPT-2's
Conv1D) stores (in, out). ``load_from_state_dict`` and ``state_dict_in_our_layout``
translate between the two, using GPT-2's parameter names.

    >>> import torch
    >>> m = TorchGPT(block_size=8, vocab_size=11, n_layer=2, n_head=2, n_embd=16)
    >>> logits, loss = m(torch.zeros(1, 3, dtype=torch.long))
    >>> tuple(logits.shape), loss
    ((1, 3, 11), None)
"""
import math

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F


class _SelfAttention(nn.Module):
    def __init__(self, n_embd, n_head, bias, dropout, use_sdpa):
        super().__init__()
        assert n_embd % n_head == 0, "n_embd must be divisible by n_head"
        self.n_head, self.dropout, self.use_sdpa = n_head, dropout, use_sdpa
        self.qkv = nn.Linear(n_embd, 3 * n_embd, bias=bias)   # q, k, v side by side
        self.out = nn.Linear(n_embd, n_embd, bias=bias)
        self.attn_drop = nn.Dropout(dropout)
        self.resid_drop = nn.Dropout(dropout)

    def forward(self, x):
        B, T, C = x.shape
        hs = C // self.n_head
        q, k, v = self.qkv(x).split(C, dim=2)                       # each (B, T, C)
        q, k, v = (t.view(B, T, self.n_head, hs).transpose(1, 2) for t in (q, k, v))  # (B, nh, T, hs)
        if self.use_sdpa:
            p = self.dropout if self.training else 0.0
            y = F.scaled_dot_product_attention(q, k, v, dropout_p=p, is_causal=True)
        else:
            scores = (q @ k.transpose(-2, -1)) / math.sqrt(hs)     # (B, nh, T, T)
            future = torch.ones(T, T, dtype=torch.bool, device=x.device).triu(1)
            weights = scores.masked_fill(future, float("-inf")).softmax(dim=-1)
            y = self.attn_drop(weights) @ v                         # (B, nh, T, hs)
        y = y.transpose(1, 2).contiguous().view(B, T, C)            # heads side by side again
        return self.resid_drop(self.out(y))


class _FeedForward(nn.Module):
    def __init__(self, n_embd, bias, dropout):
        super().__init__()
        self.up = nn.Linear(n_embd, 4 * n_embd, bias=bias)
        self.down = nn.Linear(4 * n_embd, n_embd, bias=bias)
        self.drop = nn.Dropout(dropout)

    def forward(self, x):
        return self.drop(self.down(F.gelu(self.up(x), approximate="tanh")))


class _Block(nn.Module):
    def __init__(self, n_embd, n_head, bias, dropout, use_sdpa):
        super().__init__()
        self.norm_attn = nn.LayerNorm(n_embd, bias=bias)
        self.attn = _SelfAttention(n_embd, n_head, bias, dropout, use_sdpa)
        self.norm_mlp = nn.LayerNorm(n_embd, bias=bias)
        self.mlp = _FeedForward(n_embd, bias, dropout)

    def forward(self, x):
        x = x + self.attn(self.norm_attn(x))   # pre-norm residuals
        return x + self.mlp(self.norm_mlp(x))


class TorchGPT(nn.Module):
    """GPT-2 in PyTorch. ``forward(idx, targets=None)`` returns (logits (B, T, V), loss or None).

    ``use_sdpa`` picks torch's fused attention instead of the explicit
    softmax(q k^T / sqrt(hs)) v; both give the same values up to rounding.
    """

    def __init__(self, block_size, vocab_size, n_layer, n_head, n_embd, bias=True, dropout=0.0,
                 use_sdpa=False):
        super().__init__()
        self.block_size, self.vocab_size, self.n_layer = block_size, vocab_size, n_layer
        self.tok_emb = nn.Embedding(vocab_size, n_embd)
        self.pos_emb = nn.Embedding(block_size, n_embd)
        self.drop = nn.Dropout(dropout)
        self.blocks = nn.ModuleList(_Block(n_embd, n_head, bias, dropout, use_sdpa)
                                    for _ in range(n_layer))
        self.norm_out = nn.LayerNorm(n_embd, bias=bias)
        self.reset_parameters()

    def reset_parameters(self):
        """GPT-2's init: N(0, 0.02) weights, N(0, 0.02 / sqrt(2 n_layer)) for the projections
        into the residual stream, zero biases, LayerNorm scale 1."""
        for name, p in self.named_parameters():
            if name.endswith("bias"):
                nn.init.zeros_(p)
            elif "norm" in name:
                nn.init.ones_(p)
            elif name.endswith("attn.out.weight") or name.endswith("mlp.down.weight"):
                nn.init.normal_(p, 0.0, 0.02 / math.sqrt(2 * self.n_layer))
            else:
                nn.init.normal_(p, 0.0, 0.02)

    def forward(self, idx, targets=None):
        B, T = idx.shape
        assert T <= self.block_size, f"sequence of {T} tokens is longer than block_size={self.block_size}"
        pos = torch.arange(T, device=idx.device)
        x = self.drop(self.tok_emb(idx) + self.pos_emb(pos))      # (B, T, C)
        for block in self.blocks:
            x = block(x)
        x = self.norm_out(x)
        logits = x @ self.tok_emb.weight.t()                      # tied head: (B, T, V)
        if targets is None:
            return logits, None
        loss = F.cross_entropy(logits.reshape(-1, logits.size(-1)), targets.reshape(-1), ignore_index=-1)
        return logits, loss


# ----------------------------------------------------------------------------- name mapping

def _name_map(model):
    """GPT-2 name -> (torch parameter, stored transposed?). Only parameters that exist."""
    out = {"transformer.wte.weight": (model.tok_emb.weight, False),
           "transformer.wpe.weight": (model.pos_emb.weight, False)}

    def put(name, param, transposed=False):
        if param is not None:
            out[name] = (param, transposed)

    for i, block in enumerate(model.blocks):
        pre = f"transformer.h.{i}."
        for ours, theirs in (("ln_1", block.norm_attn), ("ln_2", block.norm_mlp)):
            put(pre + ours + ".weight", theirs.weight)
            put(pre + ours + ".bias", theirs.bias)
        for ours, theirs in (("attn.c_attn", block.attn.qkv), ("attn.c_proj", block.attn.out),
                             ("mlp.c_fc", block.mlp.up), ("mlp.c_proj", block.mlp.down)):
            put(pre + ours + ".weight", theirs.weight, transposed=True)
            put(pre + ours + ".bias", theirs.bias)
    put("transformer.ln_f.weight", model.norm_out.weight)
    put("transformer.ln_f.bias", model.norm_out.bias)
    return out


def load_from_state_dict(torch_model, state_dict):
    """Copy a tinygrad_gpt / GPT-2 state dict (Linear weights (in, out)) into ``torch_model``.

    Values take the torch model's dtype. Raises KeyError/ValueError on missing or
    unexpected names and on shape mismatches.
    """
    names = _name_map(torch_model)
    missing, unexpected = sorted(set(names) - set(state_dict)), sorted(set(state_dict) - set(names))
    if missing or unexpected:
        raise KeyError(f"state dict does not fit: missing {missing}, unexpected {unexpected}")
    with torch.no_grad():
        for name, (param, transposed) in names.items():
            value = np.asarray(state_dict[name])
            value = value.T if transposed else value
            if tuple(value.shape) != tuple(param.shape):
                raise ValueError(f"{name}: expected shape {tuple(param.shape)} "
                                 f"(torch layout), got {tuple(value.shape)}")
            param.copy_(torch.from_numpy(np.ascontiguousarray(value)).to(param.dtype))
    return torch_model


def state_dict_in_our_layout(torch_model, grads=False):
    """GPT-2 name -> NumPy array of the parameter (or of its .grad), Linear weights as (in, out)."""
    out = {}
    for name, (param, transposed) in _name_map(torch_model).items():
        t = param.grad if grads else param
        if t is None:
            out[name] = None
            continue
        value = t.detach().cpu().numpy()
        out[name] = value.T.copy() if transposed else value.copy()
    return out
