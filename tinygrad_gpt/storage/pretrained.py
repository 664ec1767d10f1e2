"""GPT-2 checkpoints in the Hugging Face layout: load them into our GPT, and write them back.

A Hugging Face GPT-2 folder holds ``config.json`` (sizes), ``model.safetensors``
(weights; big models split it into shards listed in ``model.safetensors.index.json``)
and the tokenizer's ``vocab.json`` and ``merges.txt`` (a character-level model that ``export``
wrote holds ``char_tokenizer.json`` instead, which ``transformers`` ignores). GPT-2 stores its linear
weights as (in, out), as ours are, and its names are ours, so loading is a renaming
(``h.0.attn.c_attn.weight`` -> ``transformer.h.0.attn.c_attn.weight``) and no transpose.

    >>> model = from_pretrained("gpt2")                    # doctest: +SKIP
    >>> tokenizer = load_hf_tokenizer("gpt2")              # doctest: +SKIP
    >>> save_pretrained(model, "gpt2-mine", tokenizer)     # doctest: +SKIP

Weights are read with our safetensors reader, never with pickle: a ``pytorch_model.bin``
is refused, because unpickling a file can run any code it contains.
"""
import json
import os
import re
from dataclasses import dataclass

import numpy as np

from .. import backend, nn
from ..text.bpe import BPETokenizer, ENDOFTEXT
from ..tokenizer import CharTokenizer
from .checkpoint import CKPT_NAME, check_model_state, checkpoint_tokenizer, load_checkpoint
from ..model import GPT, GPTConfig
from .fileio import file_op, write_atomic
from .serialization import CheckpointError, json_problem, load_file, save_file

CONFIG_NAME, WEIGHTS_NAME, INDEX_NAME = "config.json", "model.safetensors", "model.safetensors.index.json"
CHAR_TOKENIZER_NAME = "char_tokenizer.json"  # beside an exported character-level model's weights
PICKLE_NAMES = ("pytorch_model.bin", "pytorch_model.bin.index.json", "tf_model.h5", "flax_model.msgpack")
TANH_GELUS = ("gelu_new", "gelu_pytorch_tanh", "gelu_fast")  # all tanh-approximate GELU, as ours is
# buffers that older exports store beside the weights: the causal mask, not parameters
_BUFFER = re.compile(r"(transformer\.)?h\.\d+\.attn\.(bias|masked_bias)")

GET_GPT2 = (
    "to get GPT-2's files into a folder, run once where the internet is reachable: python -c \"from "
    "transformers import GPT2LMHeadModel as M, GPT2TokenizerFast as T; M.from_pretrained('gpt2')"
    ".save_pretrained('gpt2'); T.from_pretrained('gpt2').save_pretrained('gpt2')\" (the save_pretrained "
    "layout: config.json, model.safetensors, vocab.json, merges.txt), then copy the folder here")


def missing_folder(value, others):
    """The message for ``--init_from=value`` that is none of ``others`` and no folder either."""
    shown = value if value.isprintable() else repr(value)  # one line, whatever the value holds
    return (f"--init_from={shown}: no folder {value!r} here; --init_from takes {others} or a Hugging Face "
            f"GPT-2 folder; {GET_GPT2}")


PICKLE_MESSAGE = (
    "{folder} has no model.safetensors, only {found}. That is a pickle file, and loading a pickle "
    "can run arbitrary code hidden in it, so tinygrad_gpt does not read it. Get the safetensors "
    "weights instead: the Hugging Face hub offers model.safetensors for GPT-2 (e.g. `hf download "
    "openai-community/gpt2 config.json model.safetensors vocab.json merges.txt --local-dir gpt2`), or, "
    "where you trust the file, convert it once with transformers: "
    "`GPT2LMHeadModel.from_pretrained(folder).save_pretrained(folder, safe_serialization=True)`.")


# ----------------------------------------------------------------------------- config

def config_from_hf(hf, dropout=0.0, path=CONFIG_NAME):
    """A Hugging Face GPT-2 ``config.json`` dict -> (GPTConfig, layer-norm epsilon).

    Raises CheckpointError naming ``path`` for GPT-2 variants this model cannot express and
    for values of the wrong type or range.

        >>> config_from_hf({"n_positions": 8, "n_embd": 4, "n_layer": 1, "n_head": 2, "vocab_size": 10})
        (GPTConfig(block_size=8, vocab_size=10, n_layer=1, n_head=2, n_embd=4, dropout=0.0, bias=True), 1e-05)
    """
    def unsupported(what):
        return CheckpointError(f"{path}: {what}; tinygrad_gpt's GPT cannot run this model")

    if hf.get("model_type", "gpt2") != "gpt2":
        raise unsupported(f"model_type is {str(hf['model_type'])[:40]!r}, not 'gpt2'")
    if hf.get("activation_function", "gelu_new") not in TANH_GELUS:
        raise unsupported(f"activation_function is {str(hf['activation_function'])[:40]!r} (the tanh GELU is "
                          f"one of {', '.join(TANH_GELUS)})")
    n_embd = hf.get("n_embd")
    if hf.get("n_inner") not in (None, 4 * n_embd if isinstance(n_embd, int) else None):
        raise unsupported(f"n_inner is {str(hf['n_inner'])[:40]}, not 4 * n_embd")
    for key, ok in (("scale_attn_weights", True), ("scale_attn_by_inverse_layer_idx", False),
                    ("add_cross_attention", False), ("tie_word_embeddings", True)):
        if hf.get(key, ok) != ok:
            raise unsupported(f"{key} is {str(hf[key])[:40]}")
    eps = hf.get("layer_norm_epsilon", 1e-5)
    if isinstance(eps, bool) or not isinstance(eps, (int, float)) or not 0 < eps < 1:
        raise CheckpointError(f"{path}: layer_norm_epsilon must be a number in (0, 1), got {str(eps)[:40]}")
    block_size = hf.get("n_positions", hf.get("n_ctx"))
    try:
        config = GPTConfig(block_size=block_size, vocab_size=hf.get("vocab_size"), n_layer=hf.get("n_layer"),
                           n_head=hf.get("n_head"), n_embd=n_embd, dropout=dropout, bias=True)
    except ValueError as e:
        raise CheckpointError(f"{path}: {e} (it needs n_positions, n_embd, n_layer, n_head and "
                              f"vocab_size)") from None
    return config, float(eps)


def config_to_hf(model, eos_token_id=None):
    """The ``config.json`` dict that makes ``transformers`` build this model as GPT2LMHeadModel."""
    c = model.config
    if not c.bias:
        raise ValueError("save_pretrained: GPT-2 has biases in every Linear and LayerNorm; a model "
                         "built with bias=False has no GPT-2 equivalent")
    dtype = str(model.transformer.wte.weight.dtype)
    return {"architectures": ["GPT2LMHeadModel"], "model_type": "gpt2",
            "vocab_size": c.vocab_size, "n_positions": c.block_size, "n_ctx": c.block_size,
            "n_embd": c.n_embd, "n_layer": c.n_layer, "n_head": c.n_head, "n_inner": None,
            "activation_function": "gelu_new", "layer_norm_epsilon": model.transformer.ln_f.eps,
            "resid_pdrop": c.dropout, "embd_pdrop": c.dropout, "attn_pdrop": c.dropout,
            "initializer_range": 0.02, "scale_attn_weights": True, "tie_word_embeddings": True,
            "bos_token_id": eos_token_id, "eos_token_id": eos_token_id,
            "torch_dtype": dtype, "dtype": dtype}


def _read_config(folder):
    path = os.path.join(folder, CONFIG_NAME)
    try:
        with open(path, encoding="utf-8") as f:
            hf = json.load(f)
    except FileNotFoundError:
        raise CheckpointError(f"{folder}: no {CONFIG_NAME} there (is it a Hugging Face GPT-2 folder?)") from None
    except (OSError, ValueError, RecursionError) as e:  # ValueError: bad UTF-8, bad JSON, 5000-digit ints
        raise CheckpointError(f"{path}: cannot read it as JSON ({json_problem(e)})") from None
    if not isinstance(hf, dict):
        raise CheckpointError(f"{path}: expected a JSON object")
    return hf


# ----------------------------------------------------------------------------- weights

def _weight_files(folder):
    """The safetensors file(s) of a folder, or a CheckpointError that explains a pickle."""
    single, index = os.path.join(folder, WEIGHTS_NAME), os.path.join(folder, INDEX_NAME)
    if os.path.isfile(single):
        return [single]
    if os.path.isfile(index):  # sharded: {"weight_map": {tensor name: shard file}}
        try:
            with open(index, encoding="utf-8") as f:
                shards = sorted(set(json.load(f)["weight_map"].values()))
        except (OSError, ValueError, KeyError, TypeError, AttributeError, RecursionError) as e:
            raise CheckpointError(f"{index}: cannot read the shard list ({e})") from None
        return [os.path.join(folder, os.path.basename(s)) for s in shards]
    found = [n for n in PICKLE_NAMES if os.path.exists(os.path.join(folder, n))]
    if found:
        raise CheckpointError(PICKLE_MESSAGE.format(folder=folder, found=", ".join(found)))
    raise CheckpointError(f"{folder}: no {WEIGHTS_NAME} there")


def _our_name(key):
    """A Hugging Face tensor name -> ours; None for buffers and the (tied) output head."""
    if _BUFFER.fullmatch(key) or key == "lm_head.weight":
        return None
    return key if key.startswith("transformer.") else "transformer." + key


def _read_weights(files, config, dtype, config_path=CONFIG_NAME):
    """Every parameter of ``config``'s GPT, as host arrays of ``dtype`` keyed by our names."""
    state, head = {}, None
    for path in files:
        tensors, _ = load_file(path)
        for key in list(tensors):
            x = tensors.pop(key)  # pop as we go: a cast never holds two copies of the whole model
            name = _our_name(key)
            if x.dtype.kind != "f" and (name is not None or key == "lm_head.weight"):
                raise CheckpointError(f"{path}: {key} has dtype {x.dtype}, expected floats")
            if key == "lm_head.weight":
                head = x
            elif name is not None:
                if name in state:
                    raise CheckpointError(f"{path}: {key} is also in another shard")
                state[name] = x if x.dtype == dtype else x.astype(dtype)
    check_model_state(state, config, files[0], source=config_path, names={"block_size": "n_positions"})
    wte = state["transformer.wte.weight"]
    if head is not None and (head.shape != wte.shape or not np.array_equal(head.astype(dtype), wte)):
        raise CheckpointError(f"{files[0]}: lm_head.weight differs from the token embedding; this GPT "
                              f"ties its output head to the embedding and cannot hold a separate one")
    return state


# ----------------------------------------------------------------------------- loading

def from_pretrained(folder, dtype="float32", device=None, dropout=0.0):
    """Load a Hugging Face GPT-2 folder (``config.json`` + safetensors weights) as our GPT.

    ``dtype`` is the parameters' dtype (float16 and bfloat16 files are widened);
    ``device`` moves the model (e.g. "cuda"); ``dropout`` is for fine-tuning.
    Peak memory is about one copy of the weights.

        >>> model = from_pretrained("gpt2")  # doctest: +SKIP
        >>> model.config.n_layer, model.config.vocab_size  # doctest: +SKIP
        (12, 50257)
    """
    folder = os.fspath(folder)
    if not os.path.isdir(folder):
        raise CheckpointError(f"{folder}: not a folder (from_pretrained wants a Hugging Face GPT-2 folder "
                              f"holding {CONFIG_NAME} and {WEIGHTS_NAME})")
    config_path = os.path.join(folder, CONFIG_NAME)
    config, eps = config_from_hf(_read_config(folder), dropout, config_path)
    dtype = np.dtype(dtype)
    state = _read_weights(_weight_files(folder), config, dtype, config_path)
    model = GPT(config, init=False)  # placeholders: the weights come next, with no copy
    for name, p in model.named_parameters():
        p.data = state.pop(name)  # the loaded array itself: no copy
    for m in model.modules():
        if isinstance(m, nn.LayerNorm):
            m.eps = eps
    if device is not None:
        model.to(device=device)
    return model


def crop_block_size(model, block_size):
    """Shrink the context to ``block_size`` positions in place (fine-tuning with shorter windows
    than GPT-2's 1024); returns the model. Only the position embedding depends on it."""
    wpe = model.transformer.wpe.weight
    if not 0 < block_size <= model.config.block_size:
        raise ValueError(f"block_size must be in [1, {model.config.block_size}], got {block_size}")
    wpe.data = wpe.data[:block_size].copy()
    wpe.grad = None
    model.config.block_size = block_size
    return model


def load_hf_tokenizer(folder, vocab_size=None):
    """The BPE tokenizer of a Hugging Face GPT-2 folder (its ``vocab.json`` and ``merges.txt``),
    or the character tokenizer that ``export`` writes beside a character-level model.

    With ``vocab_size`` (the model's), a vocabulary of another size is refused: the model
    would make ids the tokenizer cannot decode, or the tokenizer ids the model cannot embed.
    """
    folder = os.fspath(folder)
    vocab, merges = os.path.join(folder, "vocab.json"), os.path.join(folder, "merges.txt")
    if os.path.isfile(os.path.join(folder, CHAR_TOKENIZER_NAME)):
        vocab = os.path.join(folder, CHAR_TOKENIZER_NAME)
        try:
            tokenizer = CharTokenizer.load(vocab)
        except ValueError as e:
            raise CheckpointError(f"{vocab}: {e}") from None
    elif not (os.path.isfile(vocab) and os.path.isfile(merges)):
        raise CheckpointError(f"{folder}: no vocab.json and merges.txt there (GPT-2's tokenizer files)")
    else:
        try:
            tokenizer = BPETokenizer.from_files(vocab, merges)
        except ValueError as e:  # the message names the file at fault
            raise CheckpointError(str(e)) from None
    if vocab_size is not None and tokenizer.vocab_size != vocab_size:
        raise CheckpointError(f"{vocab}: the vocabulary has {tokenizer.vocab_size} tokens, but "
                              f"{os.path.join(folder, CONFIG_NAME)} says vocab_size={vocab_size}")
    return tokenizer


# ----------------------------------------------------------------------------- saving

def save_pretrained(model, folder, tokenizer=None):
    """Write ``model`` (and a BPE ``tokenizer``, if given) as a Hugging Face GPT-2 folder, which
    ``transformers.GPT2LMHeadModel.from_pretrained(folder)`` loads with the same logits."""
    folder = os.fspath(folder)
    eos = None
    if tokenizer is not None:
        if tokenizer.vocab_size != model.config.vocab_size:
            raise ValueError(f"save_pretrained: the tokenizer has {tokenizer.vocab_size} tokens but the "
                             f"model's vocab_size is {model.config.vocab_size}")
        eos = tokenizer.special_tokens.get(ENDOFTEXT)
    hf = config_to_hf(model, eos)
    with file_op("creating", folder):
        os.makedirs(folder, exist_ok=True)
    tensors = {name: backend.to_numpy(p.data) for name, p in model.named_parameters()}
    path = os.path.join(folder, WEIGHTS_NAME)
    with file_op("writing", path):
        save_file(tensors, path, {"format": "pt"})  # "pt": transformers wants it
    path = os.path.join(folder, CONFIG_NAME)
    with file_op("writing", path):
        write_atomic(path, [(json.dumps(hf, indent=2) + "\n").encode("utf-8")])
    if tokenizer is not None:
        tokenizer.save(folder)


def export_checkpoint(path, folder):
    """Write a training checkpoint (file or out_dir) as a Hugging Face GPT-2 folder, with its
    tokenizer: GPT-2's files for a BPE one, ``char_tokenizer.json`` for a character one (GPT-2
    has no file format for it; ``load_hf_tokenizer`` and ``sample --init_from=folder`` read it)."""
    with file_op("reading", os.path.join(path, CKPT_NAME) if os.path.isdir(path) else path):
        ckpt = load_checkpoint(path)
    tokenizer = checkpoint_tokenizer(ckpt) if "tokenizer" in ckpt.extra else None
    model = ckpt.build_model()
    save_pretrained(model, folder, tokenizer if isinstance(tokenizer, BPETokenizer) else None)
    if isinstance(tokenizer, CharTokenizer):
        tokenizer.save(os.path.join(folder, CHAR_TOKENIZER_NAME))
    return folder


@dataclass
class ExportConfig:
    out_dir: str = "out"        # the training run whose checkpoint is exported
    hf_dir: str = "out-hf"      # the Hugging Face GPT-2 folder to write

    def validate(self):
        return self


def export(cfg, print_fn=print):
    """The ``export`` command: ``out_dir``'s checkpoint -> a folder ``transformers`` loads."""
    export_checkpoint(cfg.out_dir, cfg.hf_dir)
    print_fn(f"wrote {cfg.hf_dir}: load it with transformers.GPT2LMHeadModel.from_pretrained({cfg.hf_dir!r})")
