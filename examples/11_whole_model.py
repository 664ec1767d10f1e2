"""The whole GPT on one screen: every shape of the forward pass, the parameter count,
the FLOPs per token, what weight tying saves, and the memory of the KV cache.

The shapes come from running the model's own modules one step at a time on a
(B, T) batch. The parameter count is worked out by formula and compared with the
model's own count; the FLOPs per token by formula and compared with
``GPT.flops_per_token``. GPT-2 small is too big to build casually, so its
figures use the formula that the small configs have just confirmed.

    python examples/11_whole_model.py
"""
import argparse

import numpy as np

import tinygrad_gpt.functional as F
from tinygrad_gpt import Tensor, manual_seed, no_grad
from tinygrad_gpt.text.data import Dataset, load_text
from tinygrad_gpt.model import GPT, GPTConfig, LayerCache
from tinygrad_gpt.tokenizer import CharTokenizer

CONFIGS = {  # name: (vocab V, block_size T, layers L, heads, width C)
    "default (pydoc)": (103, 64, 4, 4, 128),
    "tiny Shakespeare": (65, 64, 4, 4, 128),
    "GPT-2 small": (50257, 1024, 12, 12, 768),
}


def hidden(model, idx, caches=None):
    """The stream after every block and ln_f, (B, T, C), from the model's public modules
    (what ``GPT.forward`` multiplies by the tied head); each block fills its cache if given."""
    tr = model.transformer
    x = tr.wte.weight[idx] + tr.wpe.weight[0:idx.shape[1]]
    for i, block in enumerate(tr.h):
        x = block(x, None if caches is None else caches[i])
    return tr.ln_f(x)


def count(V, T, L, C):
    """Parameters of a GPT with biases and a tied head, term by term."""
    block = (2 * C) + (C * 3 * C + 3 * C) + (C * C + C) + (2 * C) + (C * 4 * C + 4 * C) + (4 * C * C + C)
    return {"wte (V C)": V * C, "wpe (T C)": T * C, "blocks n_layer(12C^2+13C)": L * block, "ln_f (2 C)": 2 * C}


def walk_shapes(B, T, V, L, nh, C):
    print(f"1. the forward pass, B={B}, T={T}, V={V}, C={C}, {nh} heads of hs={C // nh}, n_layer={L}")
    manual_seed(0)
    model = GPT(GPTConfig(block_size=T, vocab_size=V, n_layer=L, n_head=nh, n_embd=C)).eval()
    tr = model.transformer
    idx = np.random.default_rng(0).integers(0, V, size=(B, T))
    rows = [("idx", "token ids", idx.shape)]
    with no_grad():
        tok, pos = tr.wte.weight[idx], tr.wpe.weight[0:T]
        x = tok + pos
        rows += [("wte[idx]", "token embeddings", tok.shape), ("wpe[0:T]", "position embeddings", pos.shape),
                 ("x = tok + pos", "the residual stream", x.shape)]
        blk = tr.h[0]
        h = blk.ln_1(x)
        qkv = blk.attn.c_attn(h)
        rows += [("ln_1(x)", "block 0: normalised stream", h.shape), ("c_attn", "q, k, v of all heads", qkv.shape)]
        q = qkv.reshape(B, T, 3, nh, C // nh).permute(2, 0, 3, 1, 4)[0]
        att = F.softmax(q @ q.transpose(-2, -1))  # only the shape matters here
        rows += [("q (and k, v)", "split into heads", q.shape), ("attention weights", "one T x T per head", att.shape)]
        x = x + blk.attn(h)
        hid = blk.mlp.c_fc(blk.ln_2(x), activation="gelu")
        rows += [("x + attn", "back to the stream", x.shape), ("c_fc + gelu", "the MLP's hidden layer", hid.shape)]
        x = x + blk.mlp(blk.ln_2(x))
        rows.append(("x + mlp", "end of block 0", x.shape))
        for b in tr.h[1:]:
            x = b(x)
        x = tr.ln_f(x)
        logits = x @ tr.wte.weight.T
        rows += [("blocks 1..L-1, ln_f", "the stream after all blocks", x.shape),
                 ("x @ wte^T", "logits over the vocabulary", logits.shape)]
    for name, what, shape in rows:
        print(f"   {name:<22}{what:<30}{str(tuple(shape)):>16}")
    print(f"   largest activations of one forward: MLP hidden B T 4C = {B * T * 4 * C:,}, "
          f"attention B nh T T = {B * nh * T * T:,}, logits B T V = {B * T * V:,}")
    return model


def parameters_and_flops(build):
    print("\n2. parameters and training FLOPs per token")
    ok = True
    for name, (V, T, L, nh, C) in CONFIGS.items():
        terms = count(V, T, L, C)
        total = sum(terms.values())
        print(f"   {name}: V={V}, T={T}, n_layer={L}, C={C}")
        for term, n in terms.items():
            print(f"     {term:<26}{n:>14,}")
        line = f"     {'total':<26}{total:>14,}"
        flops = 6 * (total - T * C) + 12 * L * C * T
        if build and name != "GPT-2 small":
            model = GPT(GPTConfig(block_size=T, vocab_size=V, n_layer=L, n_head=nh, n_embd=C))
            real = model.num_parameters(non_embedding=False)
            same = real == total and model.flops_per_token() == flops
            ok &= same
            line += f"   the model counts {real:,}" + ("" if same else "  MISMATCH")
        print(line)
        print(f"     {'without wpe (as reported)':<26}{total - T * C:>14,}")
        print(f"     {'an untied head would add':<26}{V * C:>14,}  ({V * C / (total + V * C):.1%} of the untied model)")
        print(f"     FLOPs per token, 6 N + 12 n_layer C T = 6 x {total - T * C:,} + {12 * L * C * T:,} = {flops:,}")
    return ok


def kv_cache(V, T, L, nh, C):
    print("\n3. the KV cache: 2 n_layer T C numbers per sequence")
    manual_seed(0)
    model = GPT(GPTConfig(block_size=T, vocab_size=V, n_layer=L, n_head=nh, n_embd=C)).eval()
    caches = [LayerCache() for _ in range(L)]
    with no_grad():
        hidden(model, np.zeros((1, T), dtype=np.int64), caches)  # fill the caches with a full window
    held = sum(c.k.size + c.v.size for c in caches)
    print(f"   n_layer={L}, T={T}, C={C}: the caches hold {held:,} numbers; 2 n_layer T C = {2 * L * T * C:,}")
    for name, (V2, T2, L2, nh2, C2) in CONFIGS.items():
        n = 2 * L2 * T2 * C2
        print(f"   {name:<18} 2 x {L2} x {T2} x {C2} = {n:>12,} numbers, {4 * n / 1e6:8.2f} MB in float32")
    return held == 2 * L * T * C


def tied_head_at_init(batches, seed):
    print("\n4. the untrained model's loss, with the tied head and with a separate random head")
    text, name = load_text("pydoc")
    tok = CharTokenizer.from_text(text)
    data = Dataset(tok.encode_array(text), 64)
    V = tok.vocab_size
    manual_seed(seed)
    model = GPT(GPTConfig(block_size=64, vocab_size=V, n_layer=4, n_head=4, n_embd=128)).eval()
    untied = Tensor(np.random.default_rng(seed).standard_normal((V, 128)).astype(np.float32) * 0.02)
    print(f"   {name}, the default config; ln V = ln {V} = {np.log(V):.4f}")
    print(f"   {'split':<7}{'tied head':>10}{'separate head':>15}{'next = current':>16}{'logit margin':>14}")
    for split in ("train", "val"):
        rng = np.random.default_rng(seed)
        tied, sep, same, margin = [], [], [], []
        with no_grad():
            for _ in range(batches):
                x, y = data.get_batch(split, 12, rng)
                logits, loss = model(x, y)
                h = hidden(model, x)
                sep.append(F.cross_entropy(h @ untied.T, y).item())
                tied.append(loss.item())
                same.append((x == y).mean())
                z = logits.data
                own = np.take_along_axis(z, x[..., None], axis=-1)[..., 0]
                margin.append((own - z.mean(axis=-1)).mean())
        print(f"   {split:<7}{np.mean(tied):>10.4f}{np.mean(sep):>15.4f}{np.mean(same):>16.3f}{np.mean(margin):>14.2f}")


def main(argv=None):
    p = argparse.ArgumentParser(description="Shapes, parameters, FLOPs and KV-cache memory of a GPT.")
    p.add_argument("--batch", type=int, default=2)
    p.add_argument("--batches", type=int, default=20, help="batches of 12 x 64 for the untrained losses")
    p.add_argument("--no_build", action="store_true", help="skip building the small configs to check the count")
    a = p.parse_args(argv)
    walk_shapes(a.batch, 8, 103, 2, 4, 128)
    ok = parameters_and_flops(not a.no_build)
    ok &= kv_cache(103, 64, 4, 4, 128)
    tied_head_at_init(a.batches, 1337)
    print("\nevery formula matches the model" if ok else "\nMISMATCH between a formula and the model")
    return 0 if ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
