"""Step time and minor page faults per step of the library path, with and without the allocator
setting, and of torch eager with SDPA, each contender in its own fresh process, alternating.

    python benchmarks/step_faults.py --rounds=4 --config=cpu

Contenders: ``lib`` (a plain library user: no process-wide setting), ``train`` (glibc's
allocator tuned as the train command does with TINYGRAD_GPT_TUNE_MALLOC=1,
``run.settings.tune_allocator``) and ``sdpa``
(torch eager, fused attention). Each child times ``--steps`` steps after ``--warmup`` and
prints its median ms/step, minor faults per step (getrusage) and peak RSS. The parent prints
every round and the median per-round ratios, which are what to read on a busy machine.
"""
import argparse
import os
import resource
import statistics
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))


def child(name, config, warmup, steps):
    # bench_train tunes the allocator at import unless this says no
    os.environ["TINYGRAD_GPT_TUNE_MALLOC"] = "0" if name == "lib" else "1"  # train: the opt-in
    sys.path.insert(0, HERE)
    import bench_train
    c = bench_train.CONFIGS[config]
    step, x, y = bench_train.make_contender("ours" if name != "sdpa" else "torch sdpa", c)
    for _ in range(warmup):
        step(x, y)
    times = []
    f0 = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    for _ in range(steps):
        t0 = time.perf_counter()
        step(x, y)
        times.append(time.perf_counter() - t0)
    faults = (resource.getrusage(resource.RUSAGE_SELF).ru_minflt - f0) / steps
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(statistics.median(times) * 1e3, faults, peak)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--config", default="cpu")
    ap.add_argument("--rounds", type=int, default=4)
    ap.add_argument("--steps", type=int, default=20)
    ap.add_argument("--warmup", type=int, default=3)
    ap.add_argument("--names", default="lib,train,sdpa")
    ap.add_argument("--child", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        return child(args.child, args.config, args.warmup, args.steps)
    names = args.names.split(",")
    rows = {n: [] for n in names}
    for r in range(args.rounds):
        order = names if r % 2 == 0 else names[::-1]
        for n in order:
            out = subprocess.check_output([sys.executable, os.path.abspath(__file__), f"--child={n}",
                                           f"--config={args.config}", f"--steps={args.steps}",
                                           f"--warmup={args.warmup}"], text=True)
            rows[n].append(tuple(map(float, out.split()[-3:])))
        print(f"round {r}: " + ", ".join(f"{n} {rows[n][-1][0]:.1f} ms {rows[n][-1][1]:.0f} flt "
                                         f"{rows[n][-1][2]:.0f} MiB" for n in names), flush=True)
    for n in names:
        print(f"{n}: median {statistics.median(t[0] for t in rows[n]):.1f} ms/step, "
              f"{statistics.median(t[1] for t in rows[n]):.0f} minor faults/step, "
              f"peak RSS {statistics.median(t[2] for t in rows[n]):.0f} MiB")
    for a in names[1:]:
        ratios = [x[0] / y[0] for x, y in zip(rows[names[0]], rows[a])]
        print(f"{names[0]}/{a} per round: " + " ".join(f"{q:.3f}" for q in ratios)
              + f"  median {statistics.median(ratios):.3f}")
    print("load average:", os.getloadavg())


if __name__ == "__main__":
    main()
