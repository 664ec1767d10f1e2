"""Soak run: thousands of training steps, printing the resident memory as they go.

    python benchmarks/soak.py                          # 3000 steps of a small GPT on the pydoc text
    python benchmarks/soak.py --max_iters=10000 --every=1000

It runs the real ``train`` (lock, log.jsonl, a checkpoint every ``--eval_interval``, the
non-finite checks) in a temporary out_dir, and at every log line reads VmRSS and VmHWM
from /proc/self/status and counts the live Tensors. Flat memory means each step's graph
and temporaries are freed: after the first log lines, RSS should move by noise only.
"""
import argparse
import gc
import re
import sys
import tempfile
import time

from tinygrad_gpt.tensor import Tensor
from tinygrad_gpt.run.train import TrainConfig, train


def proc_status(key):
    """A /proc/self/status entry in MB (Linux), or nan elsewhere."""
    try:
        with open("/proc/self/status", encoding="ascii") as f:
            for line in f:
                if line.startswith(key + ":"):
                    return int(line.split()[1]) / 1024
    except OSError:
        pass
    return float("nan")


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--max_iters", type=int, default=3000)
    parser.add_argument("--every", type=int, default=250, help="print memory every this many steps")
    parser.add_argument("--eval_interval", type=int, default=1000)
    parser.add_argument("--n_layer", type=int, default=2)
    parser.add_argument("--n_embd", type=int, default=64)
    parser.add_argument("--block_size", type=int, default=64)
    parser.add_argument("--batch_size", type=int, default=8)
    args = parser.parse_args()

    rows = []

    def on_line(line):
        match = re.match(r"iter (\d+): loss ([\d.]+)", line)
        if match is None:
            return
        gc.collect()
        tensors = sum(issubclass(type(o), Tensor) for o in gc.get_objects())
        row = (int(match.group(1)), float(match.group(2)), proc_status("VmRSS"), proc_status("VmHWM"), tensors)
        rows.append(row)
        print(f"{row[0]:>7} {row[1]:>8.4f} {row[2]:>9.1f} {row[3]:>9.1f} {row[4]:>8}", flush=True)

    with tempfile.TemporaryDirectory() as out_dir:
        cfg = TrainConfig(dataset="pydoc", out_dir=out_dir, max_iters=args.max_iters, n_layer=args.n_layer,
                          n_head=2, n_embd=args.n_embd, block_size=args.block_size, batch_size=args.batch_size,
                          eval_interval=args.eval_interval, eval_iters=20, log_interval=args.every,
                          warmup_iters=100, sample_tokens=0, progress=False, device="cpu")
        print(f"soak: {cfg.max_iters} steps, {cfg.n_layer} layers, {cfg.n_embd} wide, block {cfg.block_size}, "
              f"batch {cfg.batch_size}; python {sys.version.split()[0]}")
        print(f"{'iter':>7} {'loss':>8} {'RSS MB':>9} {'peak MB':>9} {'tensors':>8}")
        t0 = time.time()
        train(cfg, print_fn=on_line)
        seconds = time.time() - t0
    first, last = rows[1], rows[-1]  # rows[0] is before the first step has warmed anything up
    print(f"{cfg.max_iters} steps in {seconds:.0f} s (evaluations included); "
          f"RSS from iter {first[0]} to iter {last[0]}: {last[2] - first[2]:+.1f} MB; "
          f"live tensors {first[4]} -> {last[4]}")


if __name__ == "__main__":
    main()
