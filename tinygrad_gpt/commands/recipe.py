"""Recipe files: a whole training setup in a TOML file, ``python -m tinygrad_gpt train RECIPE``.

A recipe is a file of ``key = value`` lines, the same keys as the ``--key=value`` flags,
or the name of a recipe shipped with the package (``tinygrad_gpt/commands/recipes/NAME.toml``).
Flags given with it override it. It is read as data (TOML), never run as code, and a key
the command does not know is an error that names the file and the line. TOML has no
null: write ``"None"`` for a flag that takes None.

    >>> sorted(shipped_recipes())[:2]
    ['finetune_gpt2', 'shakespeare_char_cpu']
    >>> values = read_recipe("shakespeare_char_cpu", ["dataset", "max_iters", "out_dir"])  # doctest: +SKIP
"""
import difflib
import os
import re

from ..errors import RecipeError

RECIPE_DIR = os.path.join(os.path.dirname(os.path.abspath(__file__)), "recipes")


# the short names of nanoGPT, PyTorch and Hugging Face scripts -> the flag that means the same here
HABITS = {
    "lr": "learning_rate", "bs": "batch_size", "batch": "batch_size", "wd": "weight_decay",
    "iters": "max_iters", "steps": "max_iters", "max_steps": "max_iters", "num_iters": "max_iters",
    "n_layers": "n_layer", "num_layers": "n_layer", "num_hidden_layers": "n_layer",
    "n_heads": "n_head", "num_heads": "n_head", "num_attention_heads": "n_head",
    "d_model": "n_embd", "hidden_size": "n_embd", "n_embed": "n_embd", "embed_dim": "n_embd",
    "context_length": "block_size", "seq_len": "block_size", "n_ctx": "block_size",
    "n_positions": "block_size", "max_seq_len": "block_size",
    "grad_accum": "gradient_accumulation_steps", "gradient_accumulation": "gradient_accumulation_steps",
    "warmup": "warmup_iters", "warmup_steps": "warmup_iters", "lr_decay_steps": "lr_decay_iters",
    "max_grad_norm": "grad_clip", "clip_grad_norm": "grad_clip", "min_learning_rate": "min_lr",
    "eval_every": "eval_interval", "log_every": "log_interval", "output_dir": "out_dir",
    "temp": "temperature", "n_samples": "num_samples", "max_tokens": "max_new_tokens",
    "prompt": "start", "topk": "top_k", "topp": "top_p",
}


def suggestion(key, names):
    """The name among ``names`` that ``key`` most likely meant: a habit from another project
    (``lr``: ``learning_rate``), else the closest spelling; None when nothing is close."""
    if HABITS.get(key) in names:
        return HABITS[key]
    close = difflib.get_close_matches(key, names, n=1)
    return close[0] if close else None


def shipped_recipes():
    """The names of the recipes that come with the package."""
    return sorted(name[:-len(".toml")] for name in os.listdir(RECIPE_DIR) if name.endswith(".toml"))


def find_recipe(name):
    """The path of a recipe file, or of the shipped recipe called ``name``."""
    if os.path.isfile(name):
        return name
    if os.sep not in name and os.path.isfile(os.path.join(RECIPE_DIR, name + ".toml")):
        return os.path.join(RECIPE_DIR, name + ".toml")
    raise RecipeError(f"{name!r}: no such recipe file, and no shipped recipe of that name "
                      f"(shipped: {', '.join(shipped_recipes())}); flags look like --key=value")


def _toml():
    try:
        import tomllib
    except ImportError:  # Python 3.10
        try:
            import tomli as tomllib
        except ImportError:
            raise RecipeError("reading a recipe on Python 3.10 needs the tomli package "
                              "(pip install tomli)") from None
    return tomllib


def read_recipe(name, keys):
    """``{key: (value, line)}`` from the recipe ``name`` (a path or a shipped name); every key
    must be one of ``keys``. Returns ``(path, values)``."""
    path = find_recipe(name)
    tomllib = _toml()
    try:
        with open(path, "rb") as f:
            raw = f.read()
    except OSError as e:
        raise RecipeError(f"{path}: cannot read the recipe ({e.strerror})") from None
    try:
        text = raw.decode("utf-8")
        table = tomllib.loads(text)
    except UnicodeDecodeError as e:
        raise RecipeError(f"{path}: not UTF-8 text (byte offset {e.start})") from None
    except tomllib.TOMLDecodeError as e:
        raise RecipeError(_no_null(path, text) or f"{path}: not a valid TOML recipe: {e}") from None
    lines = text.splitlines()
    values = {}
    for key, value in table.items():
        line = _line_of(lines, key)
        if isinstance(value, dict):
            raise RecipeError(f"{path}, line {line}: [{key}] sections are not used in a recipe; "
                              f"write one key = value line per flag")
        if key not in keys:
            close = suggestion(key, keys)
            hint = f" (did you mean {close}?)" if close else ""
            raise RecipeError(f"{path}, line {line}: unknown key {key!r}{hint}")
        values[key] = (value, line)
    return path, values


def _line_of(lines, key):
    """The 1-based line where a top-level ``key = ...`` or ``[key]`` is written."""
    quoted = re.escape(key)
    pattern = re.compile(rf"""^\s*(\[\s*)?(?:{quoted}|"{quoted}"|'{quoted}')\s*(=|\])""")
    return next((n for n, line in enumerate(lines, 1) if pattern.match(line)), "?")


_NULL = re.compile(r"""^\s*([\w.-]+|"[^"]*"|'[^']*')\s*=\s*(None|none|null|NULL|Null|nil)\s*(#.*)?$""")


def _no_null(path, text):
    """The message for ``key = None``, which TOML cannot read: it has no None (or null)."""
    for n, line in enumerate(text.splitlines(), 1):
        found = _NULL.match(line)
        if found:
            key, word = found.group(1).strip("\"'"), found.group(2)
            return (f"{path}, line {n}: {key} = {word}: TOML has no None (or null); leave the key out "
                    f"to keep its default, or write the value you mean (for a flag that takes None, "
                    f"{key} = \"None\" in quotes)")
    return None
