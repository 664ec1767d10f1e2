"""Run the cases of tests/test_fuzz.py against the tinygrad_gpt on PYTHONPATH and count the bad ones
by class (an exception escaping, a hang, more than one line, a refusal that changed files, the file
or the field at fault not named). It is how the table in RESULTS.md was made:

    PYTHONPATH=. python benchmarks/fuzz_tally.py --cases=2000 --seed=7

Point PYTHONPATH at another checkout to count what the same cases do to that code.
"""
import argparse
import collections
import random
import shutil
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
import test_fuzz as fuzz  # noqa: E402 -- the suite's own mutations and checks


def classify(problem):
    if problem.startswith("escaped"):
        return "escaped " + [line for line in problem.splitlines() if line.strip()][-1].split(":")[0].strip()
    for words, name in ((("changed", "wrote into"), "a refusal changed or wrote files"), (("hang",), "hang"),
                        (("not one error line", "stderr says"), "not one line (warnings or several lines)"),
                        (("does not name",), "the file at fault not named"),
                        (("names none of",), "the field not named")):
        if any(w in problem for w in words):
            return name
    return problem[:60]


class _Folders:
    def mktemp(self, name):
        return Path(tempfile.mkdtemp(prefix=name))


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cases", type=int, default=fuzz.CASES)
    parser.add_argument("--seed", default=str(fuzz.SEED))
    parser.add_argument("--limit", type=float, default=fuzz.CASE_SECONDS, help="seconds before a case is a hang")
    args = parser.parse_args()
    fuzz.run_cli.__defaults__ = (args.limit,)
    files = fuzz.files._get_wrapped_function()(_Folders())
    total, classes, examples, t0 = 0, collections.Counter(), {}, time.time()
    for family, share in fuzz.SHARES.items():
        rng = random.Random(f"{args.seed}-{family}")
        for _ in range(max(1, round(args.cases * share / sum(fuzz.SHARES.values())))):
            folder = Path(tempfile.mkdtemp())
            problems, _ = fuzz.run_case(rng, folder / "case", files, family)
            shutil.rmtree(folder, ignore_errors=True)
            total += 1
            if problems:
                problem = problems[0].split(" s): ", 1)[1]  # after "family [mutation] `command` (time s): "
                key = (family.split("_")[0], classify(problem))
                classes[key] += 1
                examples.setdefault(key, problems[0][:240].replace("\n", " | "))
    print(f"{total} cases, {sum(classes.values())} bad, {time.time() - t0:.0f} s")
    for (family, name), n in sorted(classes.items()):
        print(f"{n:6d}  {family:5s} {name}")
    for (family, name), example in examples.items():
        print(f"e.g. {family} {name}: {example}")


if __name__ == "__main__":
    main()
