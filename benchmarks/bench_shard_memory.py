"""Training from shards: the anonymous memory of each process, for a large folder and a small one.

    python benchmarks/bench_shard_memory.py --data=DIR [--ranks=2] [--max_iters=50]

``DIR`` is a prepared folder (``bench_prepare.py --keep=DIR`` makes one from ``--mb`` of text).
A small folder with the same tokenizer is made from its first val shard's first megabyte of
tokens (its first 0.5 MB as train, the rest as val). The same tiny model trains on each, in one
process and under ``mpiexec -n RANKS``; /proc is read every few milliseconds for the peak
RssAnon (anonymous memory: the heap and arrays, not the pages of the memory-mapped shards) and
VmHWM (the peak resident set, the mapped pages included) of every rank.
"""
import argparse
import json
import os
import shutil
import sys
import tempfile

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "tests"))
import memwatch  # noqa: E402
from test_distributed import mpi_command, mpi_env  # noqa: E402

from tinygrad_gpt.text.folder import open_folder  # noqa: E402
from tinygrad_gpt.text.shards import write_shard  # noqa: E402


def small_copy(folder, out):
    """A prepared folder of about 1 MB of tokens, with ``folder``'s tokenizer."""
    ds, tok, _ = open_folder(folder, 1)
    os.makedirs(out)
    ids = ds.val[:min(len(ds.val), 500_000)]
    half = len(ids) // 2
    shutil.copy(os.path.join(folder, "tokenizer.json"), out)
    with open(os.path.join(folder, "meta.json"), encoding="utf-8") as f:
        meta = json.load(f)
    meta["splits"] = {}
    for split, part in (("train", ids[:half]), ("val", ids[half:])):
        name = f"small_{split}_000000.bin"
        write_shard(os.path.join(out, name), part, tok.vocab_size)
        meta["splits"][split] = [{"name": name, "tokens": len(part)}]
    with open(os.path.join(out, "meta.json"), "w", encoding="utf-8") as f:
        json.dump(meta, f)
    return out


def train(folder, out, ranks, max_iters):
    options = {"data": folder, "out_dir": out, "n_layer": 2, "n_head": 2, "n_embd": 64, "block_size": 128,
               "batch_size": 8, "max_iters": max_iters, "eval_interval": max_iters, "eval_iters": 4,
               "gradient_accumulation_steps": 2, "sample_tokens": 0, "progress": False}
    if ranks == 1:
        argv = [sys.executable, "-m", "tinygrad_gpt", "train"] + [f"--{k}={v}" for k, v in options.items()]
        env = dict(os.environ, PYTHONPATH=os.path.join(HERE, ".."))
    else:
        argv, env = mpi_command(ranks, options), mpi_env()
    result, peaks = memwatch.run_watched(argv, env=env)
    if result.returncode != 0:
        raise SystemExit(result.stderr[-3000:])
    ranks_seen = memwatch.top(peaks, sys.executable + " -m tinygrad_gpt train")
    return sorted((p["anon_mb"], p["hwm_mb"]) for p in ranks_seen), result.stdout


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data", required=True, help="a prepared folder")
    p.add_argument("--ranks", type=int, default=2)
    p.add_argument("--max_iters", type=int, default=50)
    args = p.parse_args()
    work = tempfile.mkdtemp(prefix="bench_shard_memory_")
    try:
        small = small_copy(args.data, os.path.join(work, "small"))
        sizes = {name: sum(os.path.getsize(os.path.join(d, f)) for f in os.listdir(d) if f.endswith(".bin"))
                 for name, d in (("large", args.data), ("small", small))}
        print(f"shards: large {sizes['large'] / 1e6:,.1f} MB, small {sizes['small'] / 1e6:,.1f} MB")
        for ranks in (1, args.ranks):
            for name, folder in (("small", small), ("large", args.data)):
                peaks, stdout = train(folder, os.path.join(work, f"out_{name}_{ranks}"), ranks, args.max_iters)
                shown = ", ".join(f"RssAnon {a:.0f} MB (VmHWM {h:.0f} MB)" for a, h in peaks)
                print(f"{ranks} process{'es' * (ranks > 1)}, {name:5s}: {shown}")
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
