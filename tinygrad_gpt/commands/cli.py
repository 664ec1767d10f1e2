"""Command line: ``python -m tinygrad_gpt {train,sample,...} [RECIPE] [--key=value ...]``.

Flags are nanoGPT's ``--key=value``, typed from the config dataclasses: ints,
floats, booleans written True/False, strings, and None for optional values.
``-h`` explains each flag with the comment written beside its field. A RECIPE
(a TOML file, or a shipped recipe's name: see ``recipe.py``) sets flags first.
Mistakes get one line on stderr and exit code 2; nothing else is printed.

``mpiexec -n N python -m tinygrad_gpt train ...`` trains on N processes (distributed.py);
there an error on any rank ends the whole job with one ``error:`` line.
"""
import dataclasses
import difflib
import inspect
import io
import shlex
import sys
import textwrap
import tokenize
import typing

from ..run import distributed
from ..errors import (CheckpointError, ConfigError, DataError, DeviceError, DistributedError, FileError,
                     GradcheckFailure, LockError, RecipeError, Stopped, TrainingError, UsageError, VizError)
from ..storage.fileio import describe
from .recipe import read_recipe, suggestion
from ..run.stopping import EXIT_CODES, Abort, signal_name
from ..run.train import TrainConfig, train
from .sample import SampleConfig, sample
from ..storage.pretrained import ExportConfig, export
from .gradcheck import GradcheckConfig, gradcheck
from .viz import AttentionConfig, PlotConfig, attention, plot
from ..text.prepare import PrepareConfig, prepare, with_inputs

COMMANDS = {"train": (TrainConfig, train, "train a GPT (the main job)"),
            "sample": (SampleConfig, sample, "generate text from a trained checkpoint"),
            "prepare": (PrepareConfig, prepare, "turn text files into token shards for train --data=DIR"),
            "export": (ExportConfig, export, "write a checkpoint as a Hugging Face GPT-2 folder"),
            "gradcheck": (GradcheckConfig, gradcheck, "check every op's backward against central differences"),
            "plot": (PlotConfig, plot, "draw out_dir/loss.png from out_dir/log.jsonl"),
            "attention": (AttentionConfig, attention, "draw out_dir/attention.png: a checkpoint's attention on --text")}
# commands with subcommands of their own, parsed by their module
SUBCOMMANDS = {"exercise": "write a gradient rule yourself and have it graded (exercise -h)"}
OPS_NOTE = ("--ops picks how the ops run: fast (the default), rules (each op's hand-derived rule, plain "
            "array code)\nor composed (primitive ops only); all three give the same numbers.")
NOTES = {"train": "The fast ops keep their large arrays from step to step, so no process-wide setting is needed.\n"
                  "TINYGRAD_GPT_TUNE_MALLOC=1 also tunes glibc's allocator for this whole process (an opt-in:\n"
                  "freed memory is kept for reuse; the process keeps its peak).\n" + OPS_NOTE,
         "prepare": "A folder gives every .txt and .jsonl inside (and .gz of them). Each text file, and each line\n"
                    "of a .jsonl file, is one document; the BPE's end-of-text token separates documents. Encoding\n"
                    "runs on every core, in bounded memory.",
         "sample": OPS_NOTE,
         "gradcheck": OPS_NOTE + "\n--cases picks the cases to check, comma-separated (None: all)."}


def _field_type(field):
    """The base type of a config field and whether it may be None."""
    hint = field.type if not isinstance(field.type, str) else eval_type(field.type)
    args = typing.get_args(hint)
    if args and type(None) in args:
        return next(a for a in args if a is not type(None)), True
    return hint, False


def eval_type(name):
    """Resolve the few annotation strings the configs use, without eval."""
    table = {"int": int, "float": float, "bool": bool, "str": str,
             "Optional[int]": typing.Optional[int], "Optional[float]": typing.Optional[float],
             "Optional[str]": typing.Optional[str]}
    return table[name]


def parse_value(key, text, field):
    """Turn the text of ``--key=text`` into the field's type, or raise UsageError."""
    kind, optional = _field_type(field)
    if optional and text == "None":
        return None
    if kind is bool:
        if text not in ("True", "False"):
            raise UsageError(f"--{key} takes True or False, got {text!r}")
        return text == "True"
    if kind is int:
        try:
            return int(text)
        except ValueError:
            raise UsageError(f"--{key} takes an integer, got {text!r}") from None
    if kind is float:
        try:
            return float(text)
        except ValueError:
            raise UsageError(f"--{key} takes a number, got {text!r}") from None
    return text


def recipe_value(key, value, field):
    """Check a value read from a recipe against the field's type; returns it, or raises ValueError."""
    kind, optional = _field_type(field)
    if optional and value == "None":
        return None
    if kind is float and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if type(value) is not kind:
        words = {int: "an integer", float: "a number", bool: "true or false", str: "a string"}
        also = ' or "None"' if optional else ""
        got = f"the string {value!r}" if isinstance(value, str) else repr(value)
        raise ValueError(f"{key} takes {words[kind]}{also}, got {got}{_unquoted(key, value, kind)}")
    return value


def _unquoted(key, value, kind):
    """For a number or boolean written in quotes (``max_iters = "10"``): how to write it."""
    if not isinstance(value, str):
        return ""
    literal = {"true": "true", "false": "false"}.get(value.strip().lower()) if kind is bool else None
    if kind in (int, float):
        try:
            literal = repr(kind(value.strip()))
        except ValueError:
            literal = None
    return f"; without the quotes it is one: {key} = {literal}" if literal else ""


def recipe_values(config_cls, name):
    """The flag values a recipe sets, checked against ``config_cls``."""
    fields = {f.name: f for f in dataclasses.fields(config_cls)}
    try:
        path, values = read_recipe(name, list(fields))
        out = {}
        for key, (value, line) in values.items():
            try:
                out[key] = recipe_value(key, value, fields[key])
            except ValueError as e:
                raise RecipeError(f"{path}, line {line}: {e}") from None
    except RecipeError as e:
        raise UsageError(str(e)) from None
    return out


def parse_flags(config_cls, argv):
    """Build ``config_cls`` from an optional recipe and ``--key=value`` strings (flags win)."""
    fields = {f.name: f for f in dataclasses.fields(config_cls)}
    recipes = [arg for arg in argv if not arg.startswith("-")]
    if len(recipes) > 1:
        raise UsageError(f"unexpected argument {recipes[1]!r}: one recipe at most, then flags like --key=value")
    values = recipe_values(config_cls, recipes[0]) if recipes else {}
    for arg in argv:
        if arg in recipes:
            continue
        if not arg.startswith("--") or "=" not in arg:
            raise UsageError(f"unexpected argument {arg!r}: flags look like --key=value")
        key, text = arg[2:].split("=", 1)
        if key not in fields:
            close = suggestion(key, list(fields))
            hint = f" (did you mean --{close}?)" if close else ""
            raise UsageError(f"unknown flag {'--' + key!r}{hint}")
        values[key] = parse_value(key, text, fields[key])
    return config_cls(**values)


def field_help(config_cls):
    """{field name: the comment written beside it} for a config dataclass, read from its source."""
    try:
        source = textwrap.dedent(inspect.getsource(config_cls))
    except (OSError, TypeError):  # no source (a frozen build): flags without their explanations
        return {}
    rows = {}
    for tok in tokenize.generate_tokens(io.StringIO(source).readline):
        if tok.type not in (tokenize.NL, tokenize.NEWLINE, tokenize.INDENT, tokenize.DEDENT):
            rows.setdefault(tok.start[0], []).append(tok)
    names = {f.name for f in dataclasses.fields(config_cls)}
    helps = {}
    for toks in rows.values():
        if (len(toks) > 2 and toks[0].string in names and toks[1].string == ":"
                and toks[-1].type == tokenize.COMMENT):
            helps[toks[0].string] = toks[-1].string.lstrip("#").strip()
    return helps


def _shown(value):
    """A default as it would be typed after ``--key=``."""
    return value if isinstance(value, str) and value.isprintable() and " " not in value else repr(value)


def help_text(command):
    config_cls, _, about = COMMANDS[command]
    lines = [f"usage: python -m tinygrad_gpt {command} [RECIPE] [--key=value ...]", "", about, "",
             "RECIPE: a TOML file of key = value lines, or a shipped recipe's name; flags override it", "",
             "flags (with their defaults):"]
    if command == "prepare":  # INPUT... instead of a recipe
        lines[0], lines[4] = "usage: python -m tinygrad_gpt prepare INPUT... --out_dir=DIR [--key=value ...]", \
            "INPUT: UTF-8 text files, folders, .jsonl files (the \"text\" of each line), .gz of either"
    defaults, helps = config_cls(), field_help(config_cls)
    choices = getattr(config_cls, "CHOICES", {})
    flags = [(f"--{f.name}={_shown(getattr(defaults, f.name))}", f.name) for f in dataclasses.fields(config_cls)]
    width = min(30, max(len(flag) for flag, _ in flags))
    for flag, name in flags:
        text = helps.get(name, "")
        if name in choices:
            text += f" (choices: {', '.join(choices[name])})"
        lines.append(f"  {flag:<{width}}  {text.strip()}".rstrip() if len(flag) <= width
                     else f"  {flag}\n  {'':<{width}}  {text.strip()}".rstrip())
    if command in NOTES:
        lines += ["", NOTES[command]]
    return "\n".join(lines)


def usage():
    names = ",".join([*COMMANDS, *SUBCOMMANDS])
    lines = ["usage: python -m tinygrad_gpt {" + names + "} [RECIPE] [--key=value ...]", ""]
    lines += [f"  {name:10s} {about}" for name, (_, _, about) in COMMANDS.items()]
    lines += [f"  {name:10s} {about}" for name, about in SUBCOMMANDS.items()]
    lines += ["", "python -m tinygrad_gpt COMMAND -h explains every flag of a command."]
    return "\n".join(lines)


def main(argv=None):
    """Entry point of ``python -m tinygrad_gpt`` and the ``tinygrad-gpt`` script."""
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv:
        print(usage(), file=sys.stderr)
        return 2
    if argv[0] in ("-h", "--help"):
        print(usage())
        return 0
    command, flags = argv[0], argv[1:]
    if command == "exercise":  # subcommands of its own: exercise.py
        from .exercise import main as exercise_main
        return exercise_main(flags)
    if command not in COMMANDS:
        close = difflib.get_close_matches(command, COMMANDS, n=1)
        hint = f" (did you mean {close[0]}?)" if close else ""
        return _fail(f"unknown command {command!r}{hint}: expected one of {', '.join(COMMANDS)}", 2)
    if "-h" in flags or "--help" in flags:
        print(help_text(command))
        return 0
    config_cls, run, _ = COMMANDS[command]
    try:
        if distributed.world().size > 1 and command != "train":
            raise UsageError(f"{command} runs in one process; only train runs on several (under MPI)")
        if command == "prepare":  # its arguments are its inputs, not a recipe
            cfg = with_inputs(parse_flags(config_cls, [f for f in flags if f.startswith("-")]), flags)
        else:
            cfg = parse_flags(config_cls, flags)
        cfg.validate()
    except DistributedError as e:
        return _fail(str(e), 1)
    except (UsageError, ConfigError) as e:
        return _fail(str(e), 2, every_rank=True)
    try:
        run(cfg)
    except ConfigError as e:
        return _fail(str(e), 2, getattr(e, "every_rank", False))
    except (DataError, CheckpointError, DeviceError, LockError, TrainingError, GradcheckFailure, VizError,
            FileError, DistributedError) as e:
        return _fail(str(e), 1, getattr(e, "every_rank", False))
    except Stopped as e:  # every rank stops at the same step; a stop that saved is no error
        if e.saved:
            return distributed.fail(f"{e.what}; resume with: {_resume_command(command, flags)}",
                                    e.exit_code, every_rank=True, label="")
        return _fail(str(e), e.exit_code, every_rank=True)
    except Abort as e:
        return _fail(f"interrupted by {signal_name(e.signum)}; nothing was saved", EXIT_CODES[e.signum])
    except KeyboardInterrupt:
        return _fail("interrupted", 130)
    except OSError as e:  # an OS error no command named more precisely
        return _fail(describe(e, "accessing"), 1)
    return 0


def _resume_command(command, flags):
    """The command line that continues a stopped run."""
    kept = [f for f in flags if not f.startswith("--init_from=")]
    return "python -m tinygrad_gpt " + shlex.join([command, *kept, "--init_from=resume"])


def _fail(message, code, every_rank=False):
    """One ``error:`` line and the exit code; under MPI it ends every rank (distributed.fail)."""
    return distributed.fail(message, code, every_rank)
