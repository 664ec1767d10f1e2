"""``python -m tinygrad_gpt exercise {list,start,check,hint,solution} [NAME] [--dir=DIR] [--force]``.

Write a gradient rule yourself and have it graded: ``start`` writes the workbook DIR/NAME.py
(DIR defaults to exercises/), ``check`` grades it (exit 0: passed, 1: a mistake was found,
2: a usage error), ``hint`` gives the next hint, ``solution`` prints the project's own rule.
Progress is kept in DIR/progress.json. docs/13-exercises.md explains the order.
"""
import inspect
import json
import os
import sys
import textwrap

from ..errors import UsageError

ACTIONS = ("list", "start", "check", "hint", "solution")
USAGE = ("usage: python -m tinygrad_gpt exercise {list,start,check,hint,solution} [NAME] [--dir=DIR] [--force]\n\n"
         "  list              the exercises in the docs' order, and which you have passed\n"
         "  start NAME        write the workbook DIR/NAME.py (DIR defaults to exercises/); --force overwrites\n"
         "  check NAME        grade it: exit 0 passed, 1 a mistake was found, 2 a usage error\n"
         "  hint NAME         the next hint: the docs section, then the shapes, then the derivative\n"
         "  solution NAME     the project's own rule, from its source\n")


def parse(argv):
    """(action, name, dir, force) from the command line, or UsageError."""
    if not argv or argv[0] not in ACTIONS:
        got = f"unknown action {argv[0]!r}: " if argv else ""
        raise UsageError(f"exercise: {got}expected one of {', '.join(ACTIONS)}")
    action, rest = argv[0], argv[1:]
    names = [a for a in rest if not a.startswith("-")]
    folder, force = "exercises", False
    for arg in rest:
        if arg.startswith("--dir="):
            folder = arg[len("--dir="):]
            if not folder:
                raise UsageError("exercise: --dir needs a folder, as in --dir=exercises")
        elif arg == "--force" and action == "start":
            force = True
        elif arg.startswith("-"):
            raise UsageError(f"exercise {action}: unknown flag {arg!r}")
    if action == "list":
        if names:
            raise UsageError(f"exercise list takes no name, got {names[0]!r}")
        return action, None, folder, force
    if len(names) != 1:
        raise UsageError(f"exercise {action} takes one exercise name (see: exercise list)")
    return action, _exercise(names[0]), folder, force


def _exercise(name):
    from .exercises.catalog import BY_NAME
    if name not in BY_NAME:
        raise UsageError(f"exercise: unknown exercise {name!r}: expected one of {', '.join(BY_NAME)}")
    return BY_NAME[name]


def read_progress(folder):
    path = os.path.join(folder, "progress.json")
    try:
        with open(path, encoding="utf-8") as f:
            data = json.load(f)
    except FileNotFoundError:
        return {"passed": [], "hints": {}}
    except (OSError, ValueError) as e:
        raise UsageError(f"{path}: not a readable progress file ({e}); delete it to start afresh") from None
    if not isinstance(data, dict):
        raise UsageError(f"{path}: not a progress file; delete it to start afresh")
    return {"passed": list(data.get("passed", [])), "hints": dict(data.get("hints", {}))}


def write_progress(folder, progress):
    os.makedirs(folder, exist_ok=True)
    path = os.path.join(folder, "progress.json")
    with open(path + ".tmp", "w", encoding="utf-8") as f:
        json.dump(progress, f, indent=1, sort_keys=True)
    os.replace(path + ".tmp", path)


def check_command(name, folder):
    return f"python -m tinygrad_gpt exercise check {name}" + ("" if folder == "exercises" else f" --dir={folder}")


def do_list(folder):
    from .exercises.catalog import EXERCISES
    passed = set(read_progress(folder)["passed"])
    for e in EXERCISES:
        mark = "passed" if e.name in passed else "      "
        print(f"  {mark}  {e.name:14s} {e.about}  (docs/{e.page})")
    return 0


def do_start(e, folder, force):
    from .exercises.templates import render
    path = os.path.join(folder, f"{e.name}.py")
    if os.path.exists(path) and not force:
        raise UsageError(f"{path} exists: your work is kept; grade it with `{check_command(e.name, folder)}`, "
                         f"or start afresh with --force")
    os.makedirs(folder, exist_ok=True)
    with open(path, "w", encoding="utf-8") as f:
        f.write(render(e, check_command(e.name, folder)))
    print(f"wrote {path}: fill in the bodies, then run `{check_command(e.name, folder)}`")
    return 0


def do_check(e, folder):
    from .exercises.grader import grade
    path = os.path.join(folder, f"{e.name}.py")
    if not os.path.isfile(path):
        raise UsageError(f"{path} does not exist: write it with `python -m tinygrad_gpt exercise start {e.name}"
                         + ("" if folder == "exercises" else f" --dir={folder}") + "`")
    report = grade(e, path)
    for line in report.lines:
        print(line)
    if report.passed:
        progress = read_progress(folder)
        if e.name not in progress["passed"]:
            progress["passed"].append(e.name)
        write_progress(folder, progress)
    return 0 if report.passed else 1


def do_hint(e, folder):
    progress = read_progress(folder)
    n = progress["hints"].get(e.name, 0)
    print(f"hint {min(n, len(e.hints) - 1) + 1} of {len(e.hints)}: {e.hints[min(n, len(e.hints) - 1)]}")
    progress["hints"][e.name] = min(n + 1, len(e.hints))
    write_progress(folder, progress)
    return 0


def do_solution(e):
    for obj in e.solution:
        print(textwrap.dedent(inspect.getsource(obj)).rstrip() + "\n")
    return 0


def main(argv):
    """Run ``exercise ...``; returns the exit code."""
    if argv and argv[0] in ("-h", "--help"):
        print(USAGE)
        return 0
    try:
        action, e, folder, force = parse(argv)
        if action == "list":
            return do_list(folder)
        if action == "start":
            return do_start(e, folder, force)
        if action == "check":
            return do_check(e, folder)
        return do_hint(e, folder) if action == "hint" else do_solution(e)
    except UsageError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    except OSError as err:
        print(f"error: {getattr(err, 'filename', None) or folder}: {err.strerror or err}", file=sys.stderr)
        return 2
