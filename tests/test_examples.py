"""Every example runs with tiny settings, exits 0, and prints what it teaches.

The docs are checked too: every relative link resolves, every ``Class.method``
they name exists in the package, every function linked to a file is defined in
that file, and every test they cite exists.
"""
import importlib
import os
import re
import shutil
import subprocess
import sys

import pytest

from test_viz import check_png

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
EXAMPLES = os.path.join(ROOT, "examples")
DOCS = os.path.join(ROOT, "docs")
TINY_GPT = ["--n_layer=1", "--n_head=2", "--n_embd=16", "--block_size=16", "--batch_size=4"]

try:
    import matplotlib  # noqa: F401
    HAVE_MATPLOTLIB = True
except ImportError:
    HAVE_MATPLOTLIB = False


def run_example(name, *args, cwd):
    result = subprocess.run([sys.executable, os.path.join(EXAMPLES, name), *args], cwd=cwd,
                            capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, f"{name} failed:\n{result.stdout}\n{result.stderr}"
    return result.stdout


@pytest.fixture(scope="module")
def ckpt_dir(tmp_path_factory):
    """One folder shared by the sampling and attention examples: the first trains, the second loads."""
    return tmp_path_factory.mktemp("ckpt")


def test_every_example_has_a_test():
    tested = set(re.findall(r'"(\d\d_\w+\.py)"', open(__file__, encoding="utf-8").read()))
    assert sorted(f for f in os.listdir(EXAMPLES) if f.endswith(".py")) == sorted(tested)


def test_01_backprop_by_hand(tmp_path):
    out = run_example("01_backprop_by_hand.py", cwd=tmp_path)
    assert "all gradients agree" in out and "MISMATCH" not in out
    # the numbers of the worked example in docs/02-autodiff.md
    for number in ("0.289318", "-1.075766", "-0.846033", "-1.692067", "-0.423017"):
        assert number in out
    out = run_example("01_backprop_by_hand.py", "--x=-1", "--w=3", "--b=0.25", "--t=-0.5", cwd=tmp_path)
    assert "all gradients agree" in out


def test_02_new_op(tmp_path):
    out = run_example("02_new_op.py", "--n=4", cwd=tmp_path)
    assert "check_grads(softplus): PASS" in out
    assert "check_grads(softplus with a slip): FAIL, as it should" in out


def test_03_train_char_gpt(tmp_path):
    out = run_example("03_train_char_gpt.py", "--iters=12", "--sample_tokens=20", *TINY_GPT, cwd=tmp_path)
    assert "a uniform guess has loss ln(" in out
    losses = [float(x) for x in re.findall(r"train loss (\d+\.\d+)", out)]
    assert len(losses) >= 2 and losses[-1] < losses[0]
    assert "val loss" in out and "sample:" in out


def test_04_sampling(tmp_path, ckpt_dir):
    out = run_example("04_sampling.py", f"--out_dir={ckpt_dir}", "--iters=4", "--draws=300",
                      "--tokens=12", cwd=tmp_path)
    table = {line[:16].strip(): [float(v) for v in line[16:].split()]
             for line in out.splitlines() if re.match(r"^(greedy|T=)", line) and "---" not in line}
    assert table["greedy (T=0)"] == [1.0, 0.0, 0.0, 0.0, 0.0]
    assert table["T=1, top_k=2"][2:] == [0.0, 0.0, 0.0]
    assert table["T=1, top_p=0.8"][3:] == [0.0, 0.0]
    assert table["T=2"][4] > table["T=0.5"][4]  # a higher temperature picks the rare word more
    assert out.count("--- ") == 6 and (ckpt_dir / "ckpt.safetensors").exists()


def test_05_train_on_gpu(tmp_path):
    out = run_example("05_train_on_gpu.py", "--iters=3", *TINY_GPT, cwd=tmp_path)
    assert re.search(r"cpu: loss \d+\.\d+ -> \d+\.\d+ in 3 steps", out)
    assert "no GPU here" in out or "cuda: loss" in out


@pytest.mark.parametrize("what", ["mlp", "gpt"])
def test_06_draw_graph(tmp_path, what):
    out = run_example("06_draw_graph.py", f"--what={what}", "--out=graph.png", cwd=tmp_path)
    assert "ops: " in out and "Linear" in out and "|grad| of" in out
    if shutil.which("dot"):
        assert "wrote graph.png" in out
        check_png(tmp_path / "graph.png", min_side=50)
    else:
        assert "Graphviz is not installed" in out and (tmp_path / "graph.dot").exists()


def test_07_attention_maps(tmp_path, ckpt_dir):
    out = run_example("07_attention_maps.py", f"--out_dir={ckpt_dir}", "--iters=4",
                      "--text=The import", f"--out={tmp_path / 'att.png'}", cwd=tmp_path)
    assert "every row sums to 1: True; nothing above the diagonal: True" in out
    assert "head 0:" in out and "'T'->'T'" in out  # the first character can only see itself
    if HAVE_MATPLOTLIB:
        check_png(tmp_path / "att.png")
    else:
        assert "tinygrad_gpt[plot]" in out


# ----------------------------------------------------------------------------- the docs

def _docs():
    return {name: open(os.path.join(DOCS, name), encoding="utf-8").read()
            for name in sorted(os.listdir(DOCS)) if name.endswith(".md")}


def test_docs_links_resolve():
    docs = _docs()
    assert "README.md" in docs and len(docs) > 5
    broken = []
    for name, text in docs.items():
        for target in re.findall(r"\]\(([^)\s]+)\)", text):
            if re.match(r"[a-z]+:", target) or target.startswith("#"):
                continue
            path = os.path.normpath(os.path.join(DOCS, target.split("#")[0]))
            if not os.path.exists(path):
                broken.append(f"{name}: {target}")
    assert not broken, broken


def test_docs_name_real_functions():
    modules = [importlib.import_module(f"tinygrad_gpt.{m[:-3]}") for m in os.listdir(
        os.path.join(ROOT, "tinygrad_gpt")) if m.endswith(".py") and not m.startswith("__")]
    classes = {}
    for m in modules:
        for k, v in vars(m).items():
            if isinstance(v, type) and v.__module__ == m.__name__:
                classes.setdefault(k, []).append(v)
    missing = []
    for name, text in _docs().items():
        for cls, attr in re.findall(r"`([A-Z]\w*)\.(\w+)`", text):
            if cls in classes and not any(hasattr(c, attr) for c in classes[cls]):
                missing.append(f"{name}: {cls}.{attr}")
    assert not missing, missing


def test_docs_link_functions_to_the_files_that_define_them():
    """[`LayerNorm.backward`](../tinygrad_gpt/rules.py) needs `class LayerNorm` in rules.py."""
    wrong = []
    for name, text in _docs().items():
        for ident, target in re.findall(r"\[`(\w+)[^`]*`\]\(([^)#]+\.py)\)", text):
            source = open(os.path.normpath(os.path.join(DOCS, target)), encoding="utf-8").read()
            if not re.search(rf"^\s*(def|class) {ident}\b", source, re.M):
                wrong.append(f"{name}: {ident} is not defined in {target}")
    assert not wrong, wrong


def test_docs_cite_tests_that_exist():
    defined = set()
    for f in os.listdir(os.path.join(ROOT, "tests")):
        if f.endswith(".py"):
            defined |= set(re.findall(r"def (test_\w+)", open(os.path.join(ROOT, "tests", f),
                                                                 encoding="utf-8").read()))
    cited = {t for text in _docs().values() for t in re.findall(r"`(test_\w+)`", text)}
    assert cited and not cited - defined, sorted(cited - defined)
