"""Command line: ``python -m tinygrad_gpt {train,sample,gradcheck,plot,attention} --key=value ...``.

Flags are nanoGPT's ``--key=value``, typed from the config dataclasses: ints,
floats, booleans written True/False, strings, and None for optional values.
Mistakes get one line on stderr and exit code 2; nothing else is printed.

``mpiexec -n N python -m tinygrad_gpt train ...`` trains on N processes (distributed.py);
there an error on any rank ends the whole job with one ``error:`` line.
"""
import dataclasses
import difflib
import sys
import typing

from . import distributed
from .errors import (CheckpointError, ConfigError, DataError, DeviceError, DistributedError, GradcheckFailure,
                     LockError, TrainingError, UsageError, VizError)
from .train import TrainConfig, train
from .sample import SampleConfig, sample
from .pretrained import ExportConfig, export
from .gradcheck_cli import GradcheckConfig, gradcheck
from .viz import AttentionConfig, PlotConfig, attention, plot

COMMANDS = {"train": (TrainConfig, train, "train a GPT (the main job)"),
            "sample": (SampleConfig, sample, "generate text from a trained checkpoint"),
            "export": (ExportConfig, export, "write a checkpoint as a Hugging Face GPT-2 folder"),
            "gradcheck": (GradcheckConfig, gradcheck, "check every op's backward against central differences"),
            "plot": (PlotConfig, plot, "draw out_dir/loss.png from out_dir/log.jsonl"),
            "attention": (AttentionConfig, attention, "draw out_dir/attention.png: a checkpoint's attention on --text")}
OPS_NOTE = ("--ops picks how the ops run: fast (the default), rules (each op's hand-derived rule, plain "
            "array code)\nor composed (primitive ops only); all three give the same numbers.")
NOTES = {"train": "Training tunes glibc's allocator for this whole process: freed memory is kept for reuse (faster\n"
                  "steps; the process keeps its peak). TINYGRAD_GPT_TUNE_MALLOC=0 turns that off.\n" + OPS_NOTE,
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


def parse_flags(config_cls, argv):
    """Build ``config_cls`` from ``--key=value`` strings."""
    fields = {f.name: f for f in dataclasses.fields(config_cls)}
    values = {}
    for arg in argv:
        if not arg.startswith("--") or "=" not in arg:
            raise UsageError(f"unexpected argument {arg!r}: flags look like --key=value")
        key, text = arg[2:].split("=", 1)
        if key not in fields:
            close = difflib.get_close_matches(key, fields, n=1)
            hint = f" (did you mean --{close[0]}?)" if close else ""
            raise UsageError(f"unknown flag {'--' + key!r}{hint}")
        values[key] = parse_value(key, text, fields[key])
    return config_cls(**values)


def help_text(command):
    config_cls, _, about = COMMANDS[command]
    lines = [f"usage: python -m tinygrad_gpt {command} [--key=value ...]", "", about, "", "flags:"]
    defaults = config_cls()
    for f in dataclasses.fields(config_cls):
        lines.append(f"  --{f.name}={getattr(defaults, f.name)!r}")
    if command in NOTES:
        lines += ["", NOTES[command]]
    return "\n".join(lines)


def main(argv=None):
    """Entry point of ``python -m tinygrad_gpt`` and the ``tinygrad-gpt`` script."""
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ("-h", "--help"):
        print("usage: python -m tinygrad_gpt {" + ",".join(COMMANDS) + "} [--key=value ...]\n")
        for name, (_, _, about) in COMMANDS.items():
            print(f"  {name:10s} {about}")
        return 0
    command, flags = argv[0], argv[1:]
    if command not in COMMANDS:
        return _fail(f"unknown command {command!r}: expected one of {', '.join(COMMANDS)}", 2)
    if "-h" in flags or "--help" in flags:
        print(help_text(command))
        return 0
    config_cls, run, _ = COMMANDS[command]
    try:
        if distributed.world().size > 1 and command != "train":
            raise UsageError(f"{command} runs in one process; only train runs on several (under MPI)")
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
            DistributedError) as e:
        return _fail(str(e), 1, getattr(e, "every_rank", False))
    except KeyboardInterrupt:
        return _fail("interrupted", 130)
    return 0


def _fail(message, code, every_rank=False):
    """One ``error:`` line and the exit code; under MPI it ends every rank (distributed.fail)."""
    return distributed.fail(message, code, every_rank)
