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
import json
import os
from dataclasses import dataclass, field

from .model import GPT, GPTConfig
from .serialization import CheckpointError, load_file, save_file, read_metadata

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
    """Write model, optimizer and ``extra`` (JSON-serialisable) to ``path`` atomically."""
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


def _check_format(meta, path):
    if meta.get("format") != FORMAT:
        raise CheckpointError(f"{path}: not a tinygrad_gpt checkpoint (a safetensors file without "
                              f"the {FORMAT!r} format tag)")
    if meta.get("version") != VERSION:
        raise CheckpointError(f"{path}: checkpoint version {meta.get('version')!r} is not supported "
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
    try:
        config = GPTConfig(**_json_field(meta, "model_config", path))
    except (TypeError, ValueError) as e:
        raise CheckpointError(f"{path}: bad model config: {e}") from None
    model_state = {k[len("model."):]: v for k, v in tensors.items() if k.startswith("model.")}
    check_model_state(model_state, config, path)
    optimizer_state = None
    if "optimizer" in meta:
        optimizer_state = _optimizer_state(_json_field(meta, "optimizer", path), tensors, path)
    extra = _json_field(meta, "extra", path)
    return Checkpoint(path, config, model_state, optimizer_state, extra)


def check_model_state(state, config, path, source="the config"):
    """Every name and shape of GPT(config), no more and no less, and a float dtype;
    otherwise CheckpointError naming ``path`` and the first problem (``source`` names
    where the config came from, for the message)."""
    expected = expected_shapes(config)
    missing = sorted(set(expected) - set(state))
    unexpected = sorted(set(state) - set(expected))
    if missing or unexpected:
        raise CheckpointError(f"{path}: model tensors do not match {source} (missing: "
                              f"{', '.join(missing[:8]) or 'none'}; unexpected: {', '.join(unexpected[:8]) or 'none'})")
    for name, shape in expected.items():
        if tuple(state[name].shape) != shape:
            raise CheckpointError(f"{path}: {name} has shape {tuple(state[name].shape)}, "
                                  f"{source} needs {shape}")
        if state[name].dtype.kind != "f":
            raise CheckpointError(f"{path}: {name} has dtype {state[name].dtype}, expected floats")


def expected_shapes(config):
    """GPT-2 parameter names and shapes for a config, without building the model."""
    C, V, bias = config.n_embd, config.vocab_size, config.bias
    shapes = {"transformer.wte.weight": (V, C), "transformer.wpe.weight": (config.block_size, C)}
    for i in range(config.n_layer):
        p = f"transformer.h.{i}."
        layer = {"ln_1.weight": (C,), "ln_1.bias": (C,),
                 "attn.c_attn.weight": (C, 3 * C), "attn.c_attn.bias": (3 * C,),
                 "attn.c_proj.weight": (C, C), "attn.c_proj.bias": (C,),
                 "ln_2.weight": (C,), "ln_2.bias": (C,),
                 "mlp.c_fc.weight": (C, 4 * C), "mlp.c_fc.bias": (4 * C,),
                 "mlp.c_proj.weight": (4 * C, C), "mlp.c_proj.bias": (C,)}
        shapes.update({p + k: v for k, v in layer.items() if bias or not k.endswith("bias")})
    shapes["transformer.ln_f.weight"] = (C,)
    if bias:
        shapes["transformer.ln_f.bias"] = (C,)
    return shapes


def _optimizer_state(info, tensors, path):
    """Rebuild an optimizer ``state_dict`` from the metadata and ``optim.*`` tensors."""
    try:
        groups, steps = info["param_groups"], info["steps"]
        state = {int(i): {"step": int(s)} for i, s in steps.items()}
        if not isinstance(groups, list) or not all(isinstance(g, dict) for g in groups):
            raise TypeError("param_groups is not a list of dicts")
    except (KeyError, TypeError, ValueError, AttributeError) as e:
        raise CheckpointError(f"{path}: bad optimizer metadata ({e})") from None
    for name, array in tensors.items():
        if name.startswith("optim."):
            parts = name.split(".", 2)
            if len(parts) != 3 or not parts[1].isdigit() or int(parts[1]) not in state:
                raise CheckpointError(f"{path}: optimizer tensor {name} has no step count")
            state[int(parts[1])][parts[2]] = array
    return {"type": info.get("type"), "state": state, "param_groups": groups}
