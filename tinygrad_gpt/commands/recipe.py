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
        raise RecipeError(f"{path}: not a valid TOML recipe: {e}") from None
    lines = text.splitlines()
    values = {}
    for key, value in table.items():
        line = _line_of(lines, key)
        if isinstance(value, dict):
            raise RecipeError(f"{path}, line {line}: [{key}] sections are not used in a recipe; "
                              f"write one key = value line per flag")
        if key not in keys:
            close = difflib.get_close_matches(key, keys, n=1)
            hint = f" (did you mean {close[0]}?)" if close else ""
            raise RecipeError(f"{path}, line {line}: unknown key {key!r}{hint}")
        values[key] = (value, line)
    return path, values


def _line_of(lines, key):
    """The 1-based line where a top-level ``key = ...`` or ``[key]`` is written."""
    quoted = re.escape(key)
    pattern = re.compile(rf"""^\s*(\[\s*)?(?:{quoted}|"{quoted}"|'{quoted}')\s*(=|\])""")
    return next((n for n, line in enumerate(lines, 1) if pattern.match(line)), "?")
