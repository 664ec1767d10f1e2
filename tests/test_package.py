"""The package's shape: the engine and the GPT at the top, every other role in a room of its own,
the rooms importing downwards only, and small modules and functions throughout."""
import ast
import os
import subprocess
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PKG = os.path.join(ROOT, "tinygrad_gpt")
MAX_TOP = 16  # top-level modules, __init__ and __main__ included
MAX_MODULE_LINES = 450
MAX_BODY_LINES = 60  # a function's body; a function nested in it counts as its own
ROOMS = ["engine", "fast", "text", "storage", "run", "commands"]
# what each room may import: a room or the top level ("") not listed here is out of bounds
MAY_IMPORT = {
    "": {"", "engine", "fast", "text", "storage"},  # only modes.py reaches fast/, tokenizer.py text/ and storage/
    "engine": {"", "engine"},  # tensor.py's bookkeeping: backend only
    "fast": {"", "fast", "run"},  # run/settings.py only: the thread count (checked below)
    "text": {"", "text", "storage"},
    "storage": {"", "storage", "text"},
    "run": {"", "fast", "text", "storage", "run"},
    "commands": {"", "fast", "text", "storage", "run", "commands"},
}


def modules():
    """(dotted name, path) of every module in the package."""
    found = []
    for folder, _, files in os.walk(PKG):
        for f in sorted(files):
            if f.endswith(".py"):
                path = os.path.join(folder, f)
                rel = os.path.relpath(path, ROOT)[:-3].replace(os.sep, ".")
                found.append((rel[:-len(".__init__")] if rel.endswith(".__init__") else rel, path))
    return found


def room(name):
    """The room of a dotted module name: '' for the top level."""
    parts = name.split(".")
    return parts[1] if len(parts) > 2 and parts[1] in ROOMS else ("" if len(parts) <= 2 else parts[1])


def imports(name, path, at_import=False):
    """The dotted package modules that ``path`` imports, at any depth of the file; with
    ``at_import``, only those imported when the module itself is (not inside a function)."""
    tree = ast.parse(open(path, encoding="utf-8").read())
    package = name if path.endswith("__init__.py") else name.rpartition(".")[0]
    out = set()
    nodes = ast.walk(tree)
    if at_import:
        nodes = [n for top in tree.body if not isinstance(top, (ast.FunctionDef, ast.ClassDef))
                 for n in ast.walk(top)]
        nodes += [n for top in tree.body if isinstance(top, ast.ClassDef) for item in top.body
                  if not isinstance(item, ast.FunctionDef) for n in ast.walk(item)]
    for node in nodes:
        if isinstance(node, ast.Import):
            out |= {a.name for a in node.names if a.name.startswith("tinygrad_gpt")}
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[:len(package.split(".")) - node.level + 1]
                mod = ".".join(base + ([node.module] if node.module else []))
            elif node.module and node.module.startswith("tinygrad_gpt"):
                mod = node.module
            else:
                continue
            out.add(mod)
            out |= {f"{mod}.{a.name}" for a in node.names
                    if os.path.exists(os.path.join(ROOT, *f"{mod}.{a.name}".split("."))) or
                    os.path.exists(os.path.join(ROOT, *f"{mod}.{a.name}".split(".")) + ".py")}
    return out


def test_the_top_level_holds_at_most_16_modules():
    top = sorted(f for f in os.listdir(PKG) if f.endswith(".py"))
    assert len(top) <= MAX_TOP, top
    folders = sorted(d for d in os.listdir(PKG) if os.path.isfile(os.path.join(PKG, d, "__init__.py")))
    assert folders == sorted(ROOMS), folders


@pytest.mark.parametrize("name", ROOMS)
def test_each_room_says_what_it_holds_and_does_nothing_on_import(name):
    path = os.path.join(PKG, name, "__init__.py")
    tree = ast.parse(open(path, encoding="utf-8").read())
    assert ast.get_docstring(tree), f"{name}/__init__.py has no docstring"
    # a docstring, imports, and constant assignments: nothing runs on import
    for node in tree.body[1:]:
        assert isinstance(node, (ast.Import, ast.ImportFrom, ast.Assign)), \
            f"{name}/__init__.py line {node.lineno}: {type(node).__name__} runs on import"


def problems(name, targets):
    """The imports of module ``name`` (dotted targets) that break the rooms' order."""
    here, wrong = room(name), []
    for target in sorted(targets):
        there = room(target)
        if target == "tinygrad_gpt" or name == "tinygrad_gpt.__main__":  # __main__ starts the commands
            continue
        if there not in MAY_IMPORT[here]:
            wrong.append(f"{name} imports {target}")
        elif here == "" and there in ("text", "storage") and name != "tinygrad_gpt.tokenizer":
            wrong.append(f"{name} imports {target} (only tokenizer.py may reach a room)")
        elif here == "" and there == "fast" and name not in ("tinygrad_gpt.modes", "tinygrad_gpt.fast"):
            wrong.append(f"{name} imports {target} (only modes.py may reach the fast layer)")
        elif here == "fast" and there == "run" and target != "tinygrad_gpt.run.settings":
            wrong.append(f"{name} imports {target} (the fast layer reads run/settings.py only)")
    return wrong


def test_rooms_import_downwards_only():
    wrong = [w for name, path in modules() for w in problems(name, imports(name, path))]
    assert not wrong, wrong


def test_the_import_check_sees_a_wrong_import(tmp_path):
    """The check can fail: upward imports, written relative or absolute, are caught."""
    path = tmp_path / "nn.py"
    path.write_text("def f():\n    from .run import train\nimport tinygrad_gpt.commands.cli\n")
    found = imports("tinygrad_gpt.nn", str(path))
    assert {"tinygrad_gpt.run.train", "tinygrad_gpt.commands.cli"} <= found
    assert len(problems("tinygrad_gpt.nn", found)) == 2
    assert problems("tinygrad_gpt.text.bpe", {"tinygrad_gpt.run.lock"})
    assert problems("tinygrad_gpt.fast.chunks", {"tinygrad_gpt.run.train"})
    assert not problems("tinygrad_gpt.fast.chunks", {"tinygrad_gpt.run.settings"})


def test_no_import_cycles_and_the_model_builds_on_the_engine_only():
    """The Hugging Face layout lives in storage/pretrained.py, which builds on model.py and
    storage/checkpoint.py; model.py itself knows only the engine."""
    graph = {name: {t for t in imports(name, path) if t != "tinygrad_gpt"} for name, path in modules()}
    loading = {name: {t for t in imports(name, path, at_import=True) if t != "tinygrad_gpt"}
               for name, path in modules()}
    engine = {f"tinygrad_gpt.{m}" for m in ("backend", "functional", "nn", "tensor", "optim", "modes")}
    assert graph["tinygrad_gpt.model"] <= engine, graph["tinygrad_gpt.model"]
    assert "tinygrad_gpt.storage.pretrained" not in graph["tinygrad_gpt.storage.checkpoint"]
    done, active = set(), []

    def visit(name):
        assert name not in active, f"import cycle: {' -> '.join(active[active.index(name):] + [name])}"
        if name in done or name not in graph:
            return
        active.append(name)
        for dep in sorted(loading[name]):  # imports made inside a function run later: no cycle
            if not name.startswith(dep + "."):  # a module's own package (its __init__) is no cycle
                visit(dep)
        active.pop()
        done.add(name)
    for name in sorted(graph):
        visit(name)


def test_only_modes_imports_the_fast_layer():
    """Outside fast/ itself, one module chooses between the rules and the fast layer."""
    users = {name for name, path in modules() if not name.startswith("tinygrad_gpt.fast")
             and any(t == "tinygrad_gpt.fast" or t.startswith("tinygrad_gpt.fast.") for t in imports(name, path))}
    assert users == {"tinygrad_gpt.modes"}, users


def writes_into_modules(path):
    """Lines where a module assigns an attribute of a package module it imported (``tensor._hook = x``)."""
    tree = ast.parse(open(path, encoding="utf-8").read())
    bound = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            bound |= {(a.asname or a.name).split(".")[0] for a in node.names if a.name.startswith("tinygrad_gpt")}
        elif isinstance(node, ast.ImportFrom) and (node.level or (node.module or "").startswith("tinygrad_gpt")):
            bound |= {a.asname or a.name for a in node.names
                      if a.name.islower() or (a.asname or "").startswith("_")}
    found = []
    for node in ast.walk(tree):
        targets = node.targets if isinstance(node, ast.Assign) else \
            [node.target] if isinstance(node, ast.AugAssign) else []
        for t in targets:
            for sub in ast.walk(t):
                if isinstance(sub, ast.Attribute) and isinstance(sub.value, ast.Name) and sub.value.id in bound \
                        and isinstance(sub.ctx, ast.Store):
                    found.append(f"line {node.lineno}: {sub.value.id}.{sub.attr}")
    return found


def test_no_module_writes_into_another():
    """A switch is an object the engine reads, never another module's global set from outside."""
    found = {name: w for name, path in modules() for w in [writes_into_modules(path)] if w}
    assert not found, found


def test_the_write_check_can_fail(tmp_path):
    path = tmp_path / "m.py"
    path.write_text("from . import tensor as _tensor\nfrom .backend import rng\nimport os\n"
                    "_tensor._hook = 1\nrng.x = 2\nos.environ = {}\nx = 1\n")
    assert writes_into_modules(str(path)) == ["line 4: _tensor._hook", "line 5: rng.x"]


def test_run_settings_imports_nothing_from_the_package():
    path = os.path.join(PKG, "run", "settings.py")
    assert not imports("tinygrad_gpt.run.settings", path)


def test_the_old_names_keep_working():
    code = ("import tinygrad_gpt, tinygrad_gpt.functional, tinygrad_gpt.rules, tinygrad_gpt.ops, "
            "tinygrad_gpt.model, tinygrad_gpt.optim, tinygrad_gpt.tokenizer\n"
            "from tinygrad_gpt import Tensor\n"
            "from tinygrad_gpt.tokenizer import CharTokenizer, BPETokenizer\n"
            "import sys; assert 'tinygrad_gpt.run.train' not in sys.modules; print('ok')")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120,
                            env=dict(os.environ, PYTHONPATH=ROOT))
    assert result.returncode == 0 and result.stdout.strip() == "ok", result.stderr
    result = subprocess.run([sys.executable, "-m", "tinygrad_gpt", "-h"], capture_output=True, text=True,
                            timeout=120, env=dict(os.environ, PYTHONPATH=ROOT))
    assert result.returncode == 0 and "train" in result.stdout, result.stderr


def body_lines(fn):
    """The lines of a function's body (its docstring included), less those of functions and
    classes nested in it, which are measured on their own."""
    lines = set(range(fn.body[0].lineno, fn.end_lineno + 1))
    for node in ast.walk(fn):
        if node is not fn and isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            lines -= set(range(node.lineno, node.end_lineno + 1))
    return len(lines)


def test_body_lines_leave_out_nested_functions():
    tree = ast.parse("def f(x):\n    def g(y):\n        return y\n    a = 1\n    return g(a)\n")
    f = tree.body[0]
    assert body_lines(f) == 2 and body_lines(f.body[0]) == 1


MODULES = modules()


@pytest.mark.parametrize("name,path", MODULES, ids=[m[0] for m in MODULES])
def test_modules_and_functions_are_small(name, path):
    source = open(path, encoding="utf-8").read()
    assert len(source.splitlines()) <= MAX_MODULE_LINES, f"{name}: {len(source.splitlines())} lines"
    long = [f"{node.name} (line {node.lineno}): {body_lines(node)} lines" for node in ast.walk(ast.parse(source))
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)) and body_lines(node) > MAX_BODY_LINES]
    assert not long, f"{name}: " + "; ".join(long)
