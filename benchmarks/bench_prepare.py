"""prepare's BPE encoding against Hugging Face ``tokenizers``' encode_batch, and its memory.

    python benchmarks/bench_prepare.py --data=tinyshakespeare.txt [--mb=22] [--vocab_size=8192] [--repeats=3]

The input is ``--mb`` MB of text made from ``--data``'s lines, drawn at random (seeded), so it
is not one text repeated. Our byte-level BPE is trained on ``--data`` and saved both as a
tokenizer file and as GPT-2's vocab.json/merges.txt, which ``tokenizers`` loads: both encode
with the same merges. Each repeat, in turn:

- ``prepare INPUT --tokenizer=...``: the whole command as a user runs it (reading, encoding on
  every core, writing the shards), in its own process; its wall time, and the peak anonymous
  memory (RssAnon) of it and of each worker process, read from /proc every few milliseconds;
- ``tokenizers`` ``encode_batch`` of the input's lines, and of the chunks prepare cuts (its
  Rust threads on every core); encoding only, in this process, the text already in memory.

The shards' ids are checked against ``encode_batch`` of those chunks (identical), and with
``--check_whole`` against ``tokenizers``' ``encode`` of the whole input at once.
"""
import argparse
import os
import shutil
import statistics
import sys
import tempfile
import time

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "tests"))  # memwatch: the memory of a process tree
import memwatch  # noqa: E402

from tinygrad_gpt.text.bpe import ENDOFTEXT  # noqa: E402
from tinygrad_gpt.text.folder import load_tokenizer, open_folder  # noqa: E402
from tinygrad_gpt.text.prepare import safe_cut  # noqa: E402
from tinygrad_gpt.text.stream import Reader, chunks, list_inputs  # noqa: E402
from tinygrad_gpt.text.workers import cores  # noqa: E402

try:
    import tokenizers
    from tokenizers import models, pre_tokenizers
except ImportError:  # the yardstick is optional; ours is timed alone then
    tokenizers = None


def make_input(source, megabytes, path, seed=0):
    """``megabytes`` MB of ``source``'s lines in a random order (with repeats)."""
    with open(source, encoding="utf-8") as f:
        lines = f.read().splitlines(keepends=True)
    rng = np.random.default_rng(seed)
    target, written = int(megabytes * 1e6), 0
    with open(path, "w", encoding="utf-8") as f:
        while written < target:
            block = "".join(lines[i] for i in rng.integers(0, len(lines), 20000))
            f.write(block)
            written += len(block.encode("utf-8"))
    return os.path.getsize(path)


def run_prepare(argv, env):
    t0 = time.perf_counter()
    result, peaks = memwatch.run_watched(argv, env=env)
    seconds = time.perf_counter() - t0
    if result.returncode != 0:
        raise SystemExit(f"prepare failed:\n{result.stderr}")
    main = memwatch.top(peaks, sys.executable + " -m tinygrad_gpt prepare")
    workers = memwatch.top(peaks, sys.executable + " -m tinygrad_gpt.text.workers")
    return seconds, main, workers


def hf_tokenizer(folder):
    hf = tokenizers.Tokenizer(models.BPE.from_file(os.path.join(folder, "vocab.json"),
                                                   os.path.join(folder, "merges.txt")))
    hf.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, trim_offsets=True)
    hf.add_special_tokens([ENDOFTEXT])
    return hf


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data", required=True, help="a UTF-8 text file (lines are drawn from it)")
    p.add_argument("--mb", type=float, default=22.0, help="megabytes of input to make")
    p.add_argument("--vocab_size", type=int, default=8192)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--check_whole", action="store_true", help="also compare with encode() of the whole input")
    p.add_argument("--keep", default=None, help="leave the prepared folder here (for training benchmarks)")
    p.add_argument("--no_hf", action="store_true", help="time prepare alone (tokenizers holds a whole large "
                   "input's encodings in memory: about 100 bytes a token)")
    args = p.parse_args()
    work = tempfile.mkdtemp(prefix="bench_prepare_")
    env = dict(os.environ, PYTHONPATH=os.path.join(HERE, ".."))
    try:
        text_path = os.path.join(work, "input.txt")
        size = make_input(args.data, args.mb, text_path)
        tok_dir = os.path.join(work, "tok")
        subprocess_ok = os.system(f"{sys.executable} -m tinygrad_gpt prepare {args.data} --out_dir={tok_dir} "
                                  f"--tokenizer=bpe --vocab_size={args.vocab_size} --progress=False > /dev/null")
        assert subprocess_ok == 0
        tok = load_tokenizer(tok_dir)
        tok.save(os.path.join(work, "gpt2"))
        print(f"input: {size / 1e6:.1f} MB drawn from {args.data}; BPE vocab {tok.vocab_size}; "
              f"{cores()} cores; python {sys.version.split()[0]}"
              + (f"; tokenizers {tokenizers.__version__}" if tokenizers else ""))
        hf = hf_tokenizer(os.path.join(work, "gpt2")) if tokenizers and not args.no_hf else None
        cut = lines = None
        if hf is not None:
            cut = [t for _, t in chunks(Reader(list_inputs([text_path])), safe_cut(tok), ENDOFTEXT)]
            with open(text_path, encoding="utf-8", newline="") as f:
                lines = f.read().splitlines(keepends=True)
        rows = {"prepare (whole command)": [], "tokenizers encode_batch(lines)": [],
                "tokenizers encode_batch(prepare's chunks)": []}
        mem_main, mem_workers = [], []
        out = os.path.join(work, "out")
        for r in range(args.repeats):
            shutil.rmtree(out, ignore_errors=True)
            seconds, main_p, workers = run_prepare(
                [sys.executable, "-m", "tinygrad_gpt", "prepare", text_path, f"--out_dir={out}",
                 f"--tokenizer={tok_dir}", "--progress=False"], env)
            rows["prepare (whole command)"].append(seconds)
            mem_main.append(max(p["anon_mb"] for p in main_p))
            mem_workers.append(max((p["anon_mb"] for p in workers), default=0.0))
            if hf is not None:
                t0 = time.perf_counter()
                hf.encode_batch(lines)
                rows["tokenizers encode_batch(lines)"].append(time.perf_counter() - t0)
                t0 = time.perf_counter()
                hf_chunks = hf.encode_batch(cut)
                rows["tokenizers encode_batch(prepare's chunks)"].append(time.perf_counter() - t0)
        ds, _, _ = open_folder(out, 1)
        n = len(ds.train) + len(ds.val)
        print(f"{n:,} tokens ({size / n:.2f} bytes per token); median of {args.repeats}")
        if hf is not None:
            ids = np.concatenate([ds.train[:len(ds.train)], ds.val[:len(ds.val)]])
            same = ids.tolist() == [i for e in hf_chunks for i in e.ids]
            print(f"shards == tokenizers encode_batch(prepare's chunks): {same}")
            if args.check_whole:
                whole = hf.encode("".join(lines)).ids
                print(f"shards == tokenizers encode(whole input): {ids.tolist() == whole}")
        print(f"{'encoder':42s} {'seconds':>8s} {'MB/s':>7s} {'tokens/s':>12s}")
        for name, times in rows.items():
            if times:
                t = statistics.median(times)
                print(f"{name:42s} {t:8.2f} {size / 1e6 / t:7.2f} {n / t:12,.0f}")
        print(f"peak anonymous memory: prepare {max(mem_main):.0f} MB, each worker at most {max(mem_workers):.0f} MB")
        if args.keep:
            shutil.copytree(out, args.keep)
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
