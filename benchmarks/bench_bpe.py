"""BPE speed: our byte-level BPE against Hugging Face ``tokenizers``, with the same merges.

    python benchmarks/bench_bpe.py --data=path/to/tinyshakespeare.txt [--vocab_size=1000] [--repeats=5]

Both tokenizers are trained on the file (timed once each). Ours is saved as
vocab.json/merges.txt and ``tokenizers`` loads those same files, so the two encode
with identical merges; the benchmark checks that they give identical ids on the
whole file, and also that ours, loaded from the files ``tokenizers`` trained, agrees
with it. Encoding is timed on the whole file as one string:

- ours, cold: a freshly loaded tokenizer, so every distinct word is merged once;
- ours, warm: the same tokenizer again, every word already in its cache;
- tokenizers, one call: ``encode(text)`` (one thread);
- tokenizers, batch: ``encode_batch(lines)`` (Rust threads, all cores).
"""
import argparse
import os
import statistics
import tempfile
import time

from tinygrad_gpt.text.bpe import BPETokenizer, ENDOFTEXT
from tinygrad_gpt.run.settings import tune_allocator_for_training

tune_allocator_for_training()  # as the train command does: glibc keeps freed blocks for reuse

try:
    import tokenizers
    from tokenizers import models, pre_tokenizers, trainers
except ImportError:  # the yardstick is optional; ours is timed alone then
    tokenizers = None


def timed(fn, repeats):
    """(median seconds, last result) over ``repeats`` calls."""
    times, out = [], None
    for _ in range(repeats):
        t0 = time.perf_counter()
        out = fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times), out


def hf_tokenizer(model):
    tok = tokenizers.Tokenizer(model)
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, trim_offsets=True)
    tok.add_special_tokens([ENDOFTEXT])
    return tok


def hf_train(text, vocab_size):
    tok = hf_tokenizer(models.BPE())
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=[ENDOFTEXT], show_progress=False,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    tok.train_from_iterator([text], trainer)
    return tok


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data", required=True, help="a UTF-8 text file")
    p.add_argument("--vocab_size", type=int, default=1000)
    p.add_argument("--repeats", type=int, default=5)
    args = p.parse_args()
    with open(args.data, encoding="utf-8") as f:
        text = f.read()
    print(f"{args.data}: {len(text):,} characters, {len(text.encode()):,} bytes; vocab_size {args.vocab_size}")

    t0 = time.perf_counter()
    ours = BPETokenizer.train(text, args.vocab_size)
    print(f"train   ours {time.perf_counter() - t0:7.2f} s", end="")
    folder = tempfile.mkdtemp()
    ours.save(folder)
    vocab, merges = os.path.join(folder, "vocab.json"), os.path.join(folder, "merges.txt")
    if tokenizers is not None:
        t0 = time.perf_counter()
        hf_trained = hf_train(text, args.vocab_size)
        print(f"   tokenizers {time.perf_counter() - t0:7.2f} s")
    else:
        print("   (tokenizers not installed)")

    cold, ids = timed(lambda: BPETokenizer.from_files(vocab, merges).encode(text), args.repeats)
    warm, _ = timed(lambda: ours.encode(text), args.repeats)
    n = len(ids)
    rows = [("ours, cold cache", cold), ("ours, warm cache", warm)]
    if tokenizers is not None:
        hf = hf_tokenizer(models.BPE.from_file(vocab, merges))
        one, hf_ids = timed(lambda: hf.encode(text).ids, args.repeats)
        lines = text.splitlines(keepends=True)
        batch, _ = timed(lambda: hf.encode_batch(lines), args.repeats)
        rows += [("tokenizers, one call", one), ("tokenizers, encode_batch", batch)]
        print(f"same ids as tokenizers on the whole file (our merges): {ids == hf_ids}")
        other_folder = tempfile.mkdtemp()
        hf_trained.model.save(other_folder)
        theirs = BPETokenizer.load(other_folder)
        print(f"same ids as tokenizers on the whole file (its merges): "
              f"{theirs.encode(text) == hf_trained.encode(text).ids}")
    print(f"{n:,} tokens ({len(text.encode()) / n:.2f} bytes per token); median of {args.repeats}")
    print(f"{'encoder':28s} {'seconds':>8s} {'tokens/s':>12s} {'speed vs ours cold':>19s}")
    for name, seconds in rows:
        print(f"{name:28s} {seconds:8.3f} {n / seconds:12,.0f} {cold / seconds:18.2f}x")


if __name__ == "__main__":
    main()
