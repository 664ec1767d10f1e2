"""Training checkpoints: model weights, optimizer state, and everything needed to resume.

One safetensors file holds it all, and nothing in it is ever unpickled:

- tensors ``model.<name>`` (GPT-2's parameter names) and ``optim.<index>.<key>``
  (AdamW's moment estimates);
- metadata (JSON strings): the format tag, the model config, the optimizer's
  options and step counts, and a free ``extra`` dict (iteration, RNG states,
  tokenizer, training config).

Writes are atomic (``serialization.save_file``), and a load checks every name,
shape and metadata field before it returns, so a bad file never half-loads.

    >>> save_checkpoint("out/ckpt.safetensors", model, optimizer, {"iter": 100})  # doctest: +SKIP
    >>> ckpt = load_checkpoint("out/ckpt.safetensors")                          # doctest: +SKIP
    >>> model = ckpt.build_model()                                               # doctest: +SKIP
"""
import dataclasses
import json
import math
import os
import re
from dataclasses import dataclass, field

import numpy as np

from .. import modes
from ..backend import check_rng_state
from ..model import GPT, GPTConfig, parameter_shapes
from ..optim import MAX_STEP
from .serialization import CheckpointError, is_int, json_problem, load_file, read_metadata, save_file
from ..tokenizer import tokenizer_from_dict

FORMAT = "tinygrad_gpt.checkpoint"
VERSION = "1"
CKPT_NAME = "ckpt.safetensors"


@dataclass
class Checkpoint:
    path: str
    config: GPTConfig
    model_state: dict
    optimizer_state: dict = None
    extra: dict = field(default_factory=dict)

    def build_model(self, device=None, dtype=None):
        """A new GPT with these weights (in the saved dtype unless ``dtype`` is given)."""
        model = GPT(self.config)
        saved_dtype = next(iter(self.model_state.values())).dtype
        model.to(device=device, dtype=dtype or saved_dtype)
        model.load_state_dict(self.model_state)
        return model


def save_checkpoint(path, model, optimizer=None, extra=None):
    """Write model, optimizer and ``extra`` (JSON-serialisable) to ``path`` atomically.

    The fast layer's idle buffers are let go first (``modes.release_buffers``), so that the
    copies written here reuse their memory instead of raising the process's peak."""
    modes.release_buffers()
    tensors = {f"model.{k}": v for k, v in model.state_dict().items()}
    meta = {"format": FORMAT, "version": VERSION,
            "model_config": json.dumps(model.config.to_dict()),
            "extra": json.dumps(extra or {})}
    if optimizer is not None:
        sd = optimizer.state_dict()
        steps = {}
        for i, state in sd["state"].items():
            steps[str(i)] = state["step"]
            for key, array in state.items():
                if key != "step":
                    tensors[f"optim.{i}.{key}"] = array
        meta["optimizer"] = json.dumps({"type": type(optimizer).__name__,
                                        "param_groups": sd["param_groups"], "steps": steps})
    save_file(tensors, path, meta)


def _json_field(meta, key, path):
    try:
        return json.loads(meta[key])
    except KeyError:
        raise CheckpointError(f"{path}: the checkpoint has no {key!r} entry") from None
    except json.JSONDecodeError as e:
        raise CheckpointError(f"{path}: the {key!r} entry is not valid JSON ({e.msg})") from None
    except (ValueError, RecursionError) as e:
        raise CheckpointError(f"{path}: the {key!r} entry is not valid JSON ({json_problem(e)})") from None


def _check_format(meta, path):
    if meta.get("format") != FORMAT:
        raise CheckpointError(f"{path}: not a tinygrad_gpt checkpoint (a safetensors file without "
                              f"the {FORMAT!r} format tag)")
    if meta.get("version") != VERSION:
        raise CheckpointError(f"{path}: checkpoint version {str(meta.get('version'))[:20]!r} is not supported "
                              f"(this tinygrad_gpt reads version {VERSION})")


def load_checkpoint(path):
    """Read and validate a checkpoint file; raises CheckpointError naming the file and problem."""
    path = os.fspath(path)
    if os.path.isdir(path):
        path = os.path.join(path, CKPT_NAME)
    if not os.path.exists(path):
        raise CheckpointError(f"{path}: no checkpoint there (train one first with "
                              f"`python -m tinygrad_gpt train --out_dir=...`)")
    _check_format(read_metadata(path), path)  # refuse foreign files before reading their data
    tensors, meta = load_file(path)
    config = config_from_dict(_json_field(meta, "model_config", path), path)
    model_state = {k[len("model."):]: v for k, v in tensors.items() if k.startswith("model.")}
    check_model_state(model_state, config, path)
    optimizer_state = None
    if "optimizer" in meta:
        optimizer_state = _optimizer_state(_json_field(meta, "optimizer", path), tensors, path)
    stray = [k for k in tensors if not k.startswith("model.") and (optimizer_state is None or
                                                                   not k.startswith("optim."))]
    if stray:
        lacking = " (there is no 'optimizer' entry for it)" if stray[0].startswith("optim.") else ""
        raise CheckpointError(f"{path}: unexpected tensor {stray[0]!r}{lacking}")
    extra = _json_field(meta, "extra", path)
    if not isinstance(extra, dict):
        raise CheckpointError(f"{path}: the 'extra' entry must be a JSON object, got {type(extra).__name__}")
    return Checkpoint(path, config, model_state, optimizer_state, extra)


def checkpoint_summary(path):
    """"iteration N, trained on DATA" from a checkpoint's metadata alone (no tensor is read), or what
    keeps the file from being read as a checkpoint.

        >>> checkpoint_summary("out/ckpt.safetensors")  # doctest: +SKIP
        'iteration 1153, trained on input.txt'
    """
    try:
        meta = read_metadata(path)
        _check_format(meta, path)
        extra = _json_field(meta, "extra", path)
    except (CheckpointError, OSError) as e:
        return f"unreadable as a checkpoint: {str(e).removeprefix(f'{path}: ')}"
    extra = extra if isinstance(extra, dict) else {}
    cfg = extra.get("train_config") if isinstance(extra.get("train_config"), dict) else {}
    data = cfg.get("data") or (f"the {cfg['dataset']} dataset" if cfg.get("dataset") else "unknown data")
    start = cfg.get("init_from")
    origin = f", fine-tuned from {start}" if isinstance(start, str) and start not in ("scratch", "resume") else ""
    return f"iteration {extra.get('iter', 'unknown')}, trained on {data}{origin}"


def config_from_dict(d, path, source="model_config"):
    """A GPTConfig from a JSON object, or CheckpointError naming ``path``, ``source`` and the field."""
    if not isinstance(d, dict):
        raise CheckpointError(f"{path}: {source} must be a JSON object, got {type(d).__name__}")
    names = {f.name for f in dataclasses.fields(GPTConfig)}
    unknown = sorted(set(d) - names)
    if unknown:
        raise CheckpointError(f"{path}: {source} has an unknown field {unknown[0][:40]!r}")
    try:
        return GPTConfig(**d)
    except (TypeError, ValueError) as e:
        raise CheckpointError(f"{path}: bad {source}: {e}") from None


def check_model_state(state, config, path, source="model_config", names=None):
    """Every name and shape of GPT(config), no more and no less, float and finite; otherwise
    CheckpointError naming ``path`` and the first problem (``source`` names where the config
    came from, and ``names`` how it spells GPTConfig's fields, e.g. {"block_size": "n_positions"}).

    The config's sizes are first checked against the tensors present, which the file's size
    bounds; only then are the expected shapes built from the model, layer by layer.
    """
    _check_sizes(state, config, path, source, names or {})
    expected = parameter_shapes(config)
    missing = sorted(set(expected) - set(state))
    unexpected = sorted(set(state) - set(expected))
    if missing or unexpected:
        raise CheckpointError(f"{path}: model tensors do not match {source} (missing: "
                              f"{', '.join(missing[:8]) or 'none'}; unexpected: "
                              f"{', '.join(repr(n) for n in unexpected[:8]) or 'none'})")
    for name, shape in expected.items():
        if tuple(state[name].shape) != shape:
            raise CheckpointError(f"{path}: {name} has shape {tuple(state[name].shape)}, "
                                  f"{source} needs {shape}")
        _check_floats(state[name], name, path)


def _check_sizes(state, config, path, source, names):
    """The config's sizes against the embeddings and layers present, with no loop over a size."""
    for name, (a, b) in (("transformer.wte.weight", ("vocab_size", "n_embd")),
                         ("transformer.wpe.weight", ("block_size", "n_embd"))):
        want = (getattr(config, a), getattr(config, b))
        if name not in state:
            raise CheckpointError(f"{path}: there is no {name} tensor")
        if tuple(state[name].shape) != want:
            raise CheckpointError(f"{path}: {name} has shape {tuple(state[name].shape)}, but {source} says "
                                  f"{names.get(a, a)}={want[0]} and {names.get(b, b)}={want[1]}")
    # more layers than the file has tensors for is refused here; a stray layer is named below
    layers = {int(m.group(1)) for m in map(_LAYER.match, state) if m}
    contiguous = bool(layers) and min(layers) == 0 and max(layers) == len(layers) - 1
    if config.n_layer > len(layers) or (contiguous and len(layers) != config.n_layer):
        raise CheckpointError(f"{path}: {source} says n_layer={config.n_layer}, but the file holds "
                              f"tensors of {len(layers)} layers (transformer.h.*)")
    if config.bias != ("transformer.ln_f.bias" in state):
        raise CheckpointError(f"{path}: {source} says bias={config.bias}, but the file "
                              f"{'lacks' if config.bias else 'holds'} transformer.ln_f.bias")


_LAYER = re.compile(r"transformer\.h\.([0-9]{1,9})\.")


def _check_floats(x, name, path):
    if x.dtype.kind != "f":
        raise CheckpointError(f"{path}: {name} has dtype {x.dtype}, expected floats")
    if not np.isfinite(x).all():
        raise CheckpointError(f"{path}: {name} holds values that are not finite (nan or inf)")




def _optimizer_state(info, tensors, path):
    """Rebuild an optimizer ``state_dict`` from the metadata and ``optim.*`` tensors, after checking
    the structure of both (the optimizer checks the values of its options when it loads them)."""
    def bad(problem):
        return CheckpointError(f"{path}: optimizer metadata: {problem}")

    if not isinstance(info, dict):
        raise bad(f"must be a JSON object, got {type(info).__name__}")
    kind, groups, steps = info.get("type"), info.get("param_groups"), info.get("steps")
    if not isinstance(kind, str):
        raise bad(f"type must be a string, got {str(kind)[:40]}")
    if not isinstance(groups, list) or not all(isinstance(g, dict) for g in groups):
        raise bad("param_groups must be a list of objects")
    for i, group in enumerate(groups):
        params = group.get("params")
        if not isinstance(params, list) or not all(is_int(p) and p >= 0 for p in params):
            raise bad(f"param_groups[{i}] params must be a list of parameter indices")
        for key, value in group.items():
            if key != "params" and not _numbers(value):
                raise bad(f"param_groups[{i}] {key!r} must be a finite number or a list of them, "
                          f"got {str(value)[:40]}")
    if not isinstance(steps, dict):
        raise bad(f"steps must be an object of parameter index -> step count, got {type(steps).__name__}")
    state = {}
    for i, step in steps.items():
        if not _INDEX.fullmatch(i):
            raise bad(f"steps key {i[:40]!r} is not a parameter index")
        if not is_int(step) or not 0 <= step <= MAX_STEP:
            raise bad(f"steps[{i!r}] must be an integer in [0, 2**53], got {str(step)[:40]}")
        state[int(i)] = {"step": step}
    for name, array in tensors.items():
        if name.startswith("optim."):
            m = re.fullmatch(r"optim\.([0-9]{1,9})\.(\w+)", name)
            if m is None or int(m.group(1)) not in state:
                raise CheckpointError(f"{path}: optimizer tensor {name!r} has no step count")
            _check_floats(array, name, path)
            state[int(m.group(1))][m.group(2)] = array
    return {"type": kind, "state": state, "param_groups": groups}


_INDEX = re.compile(r"[0-9]{1,9}")


def _numbers(value):
    """A finite number, or a list of them (AdamW's betas)."""
    values = value if isinstance(value, list) and value else [value]
    return all(isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v) for v in values)


# ----------------------------------------------------------------------------- resuming

def checkpoint_tokenizer(ckpt):
    """The tokenizer saved in ``ckpt.extra``, checked to fit the model's vocabulary."""
    if "tokenizer" not in ckpt.extra:
        raise CheckpointError(f"{ckpt.path}: the checkpoint holds no tokenizer, so text cannot be encoded")
    try:
        tokenizer = tokenizer_from_dict(ckpt.extra["tokenizer"])
    except (ValueError, TypeError, KeyError) as e:
        raise CheckpointError(f"{ckpt.path}: the saved tokenizer is unreadable ({e})") from None
    if tokenizer.vocab_size != ckpt.config.vocab_size:
        raise CheckpointError(f"{ckpt.path}: the saved tokenizer has {tokenizer.vocab_size} tokens but "
                              f"model_config says vocab_size={ckpt.config.vocab_size}")
    return tokenizer


def check_training_state(ckpt):
    """The iteration, loss, counters and RNG states a resumed run reads from ``ckpt.extra``:
    types and ranges, or CheckpointError naming the entry. Returns the tokenizer."""
    extra = ckpt.extra

    def bad(key, want):
        return CheckpointError(f"{ckpt.path}: extra {key!r} must be {want}, got {str(extra[key])[:40]}")

    for key in ("iter", "skipped"):
        if key in extra and not (is_int(extra[key]) and 0 <= extra[key] <= MAX_STEP):
            raise bad(key, "an integer in [0, 2**53]")
    value = extra.get("best_val_loss", 0.0)
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise bad("best_val_loss", "a number")
    for key in ("batch_rng", "rng"):
        try:
            check_rng_state(extra.get(key))
        except ValueError as e:
            raise CheckpointError(f"{ckpt.path}: extra {key!r} is not a random generator state: {e}") from None
    return checkpoint_tokenizer(ckpt)
