"""Tokens in and tokens out: byte-level BPE step by step, and how temperature, top-k
and top-p reshape one distribution.

The BPE part trains the project's ``BPETokenizer`` on a tiny text, lists the merges
it learned in order, and replays the encoding of one word merge by merge. The
sampling part works on five fixed logits: the exact distribution each setting
gives, and the frequencies ``sample_token`` (the sampler ``GPT.generate`` uses)
draws from it.

    python examples/12_tokens_and_sampling.py
"""
import argparse

import numpy as np

from tinygrad_gpt.text.bpe import BPETokenizer
from tinygrad_gpt.model import sample_token

TEXT = "low low low low low lower lower newest newest newest newest newest newest widest widest widest"


def spell(tok, i):
    return tok.vocab[i].decode("utf-8", errors="replace")


def bpe(n_merges, word):
    print(f"1. byte-level BPE trained on {TEXT!r}")
    tok = BPETokenizer.train(TEXT, vocab_size=256 + n_merges, special_tokens=())
    print(f"   256 byte tokens, then {len(tok.merges)} merges (the most frequent neighbouring pair each time):")
    for rank, (a, b) in enumerate(tok.merges):
        print(f"     merge {rank}: {spell(tok, a)!r} + {spell(tok, b)!r} -> {spell(tok, 256 + rank)!r} (id {256 + rank})")
    ids = list(word.encode("utf-8"))
    print(f"   encoding {word!r}: its UTF-8 bytes {ids}")
    while len(ids) > 1:
        ranked = [(tok.ranks[p][0], i) for i, p in enumerate(zip(ids, ids[1:])) if p in tok.ranks]
        if not ranked:
            break
        rank, i = min(ranked)
        ids = ids[:i] + [256 + rank] + ids[i + 2:]
        print(f"     merge {rank} applies: {[spell(tok, t) for t in ids]}")
    assert ids == tok.encode(word), "the replay disagrees with BPETokenizer.encode"
    print(f"   BPETokenizer.encode({word!r}) = {tok.encode(word)}")
    odd = "wüst 👋"
    enc = tok.encode(odd)
    print(f"   unseen text {odd!r}: {len(odd.encode('utf-8'))} bytes -> {len(enc)} ids {enc}; "
          f"decodes back: {tok.decode(enc) == odd}")


def distributions(logits, settings):
    """The distribution each (temperature, top_k, top_p) setting samples from, by the rules of
    ``sample_token``: divide by T, keep the k largest, keep the smallest top set reaching p."""
    out = {}
    for name, (T, k, p) in settings.items():
        if T == 0:
            q = np.eye(len(logits))[logits.argmax()]
        else:
            z = logits / T
            if k is not None:
                z = np.where(z < np.sort(z)[-k], -np.inf, z)
            q = np.exp(z - z.max())
            q /= q.sum()
            if p is not None:
                order = np.argsort(-q, kind="stable")
                before = np.cumsum(q[order]) - q[order]  # mass of the tokens ranked above
                keep = np.zeros_like(q)
                keep[order] = before < p
                q = q * keep / (q * keep).sum()
        out[name] = q
    return out


def sampling(logits, draws, seed):
    print(f"\n2. sampling from the logits {logits.tolist()}")
    settings = {"T=1": (1.0, None, None), "T=0.5": (0.5, None, None), "T=2": (2.0, None, None),
                "greedy (T=0)": (0.0, None, None), "T=1, top_k=2": (1.0, 2, None),
                "T=1, top_p=0.9": (1.0, None, 0.9)}
    exact = distributions(logits, settings)
    rng = np.random.default_rng(seed)
    print(f"   {'setting':<16}{'exact probabilities':<42}sample_token, {draws} draws")
    worst = 0.0
    for name, (T, k, p) in settings.items():
        ids = sample_token(np.tile(logits, (draws, 1)), T, k, p, rng)
        freq = np.bincount(ids, minlength=len(logits)) / draws
        worst = max(worst, np.abs(freq - exact[name]).max())
        print(f"   {name:<16}{' '.join(f'{x:.3f}' for x in exact[name]):<42}"
              f"{' '.join(f'{x:.3f}' for x in freq)}")
    p1 = exact["T=1"]
    print("   running totals at T=1: " + " ".join(f"{x:.3f}" for x in np.cumsum(np.sort(p1)[::-1])))
    print(f"   entropy at T=0.5, 1, 2: " + ", ".join(
        f"{-(q[q > 0] * np.log(q[q > 0])).sum():.3f}" for q in (exact["T=0.5"], p1, exact["T=2"])) + " nats")
    print(f"   largest gap between a frequency and its probability: {worst:.3f}")
    return worst < 5 / np.sqrt(draws)


def main(argv=None):
    p = argparse.ArgumentParser(description="Byte-level BPE step by step; temperature, top-k, top-p.")
    p.add_argument("--merges", type=int, default=10)
    p.add_argument("--word", default="lowest")
    p.add_argument("--draws", type=int, default=20000)
    p.add_argument("--seed", type=int, default=0)
    a = p.parse_args(argv)
    bpe(a.merges, a.word)
    ok = sampling(np.array([3.0, 2.0, 1.0, 0.5, -1.0]), a.draws, a.seed)
    print("\nthe sampler draws the distributions above" if ok else "\nMISMATCH between sampler and formula")
    return 0 if ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
