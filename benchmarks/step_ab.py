"""The train command's step time in two source trees, alternating fresh processes.

    python benchmarks/step_ab.py --a=../tinygrad_gpt-before --b=. --rounds=5

Each round runs ``python -m tinygrad_gpt train`` on nanoGPT's CPU config (B12 T64 L4 C128) for
``--iters`` iterations in tree A, then in tree B (the order alternates every round), each in a
fresh process with that tree first on PYTHONPATH, and takes the median of the per-step ``ms``
that the run's log.jsonl holds, leaving out the first ``--skip`` steps. It prints each round and,
at the end, the median over rounds of each tree and of the per-round ratio B / A. The machine's
load moves both trees' times alike within a round, so the per-round ratio is the figure to read.
"""
import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile

HERE = os.path.dirname(os.path.abspath(__file__))
DATA = os.path.join(HERE, "..", "..", "shared", "data", "tinyshakespeare.txt")
CPU_CONFIG = ["--batch_size=12", "--block_size=64", "--n_layer=4", "--n_head=4", "--n_embd=128",
              "--dropout=0.0", "--eval_interval=100000", "--eval_iters=1", "--sample_tokens=0",
              "--progress=False", "--log_interval=1000"]


def step_ms(tree, data, iters, skip):
    """The median step time (ms) of one fresh train run in ``tree``."""
    with tempfile.TemporaryDirectory() as out:
        env = dict(os.environ, PYTHONPATH=os.path.abspath(tree))
        subprocess.run([sys.executable, "-m", "tinygrad_gpt", "train", f"--data={data}", f"--out_dir={out}",
                        f"--max_iters={iters}", *CPU_CONFIG], check=True, env=env, cwd=out,
                       stdout=subprocess.DEVNULL)
        with open(os.path.join(out, "log.jsonl"), encoding="utf-8") as f:
            ms = [r["ms"] for r in map(json.loads, f) if "ms" in r]
    return statistics.median(ms[skip:])


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--a", required=True, help="the first source tree (the one before)")
    ap.add_argument("--b", default=".", help="the second source tree (the one after)")
    ap.add_argument("--data", default=DATA)
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--iters", type=int, default=80)
    ap.add_argument("--skip", type=int, default=20, help="first steps left out (warm-up)")
    a = ap.parse_args()
    times = {"a": [], "b": []}
    for r in range(a.rounds):
        order = ("a", "b") if r % 2 == 0 else ("b", "a")
        for name in order:
            times[name].append(step_ms(getattr(a, name), a.data, a.iters, a.skip))
        ratio = times["b"][-1] / times["a"][-1]
        print(f"round {r}: A {times['a'][-1]:.1f} ms, B {times['b'][-1]:.1f} ms, B/A {ratio:.3f}", flush=True)
    ratios = [b / x for x, b in zip(times["a"], times["b"])]
    print(f"median: A {statistics.median(times['a']):.1f} ms, B {statistics.median(times['b']):.1f} ms, "
          f"B/A per round {statistics.median(ratios):.3f} (min {min(ratios):.3f}, max {max(ratios):.3f})")


if __name__ == "__main__":
    main()
