"""Pictures: DOT text of known graphs, rendered graphs, loss curves and attention maps.

PNGs made here are loaded back and must be real pictures: a sensible size and
not blank. Plot tests skip without matplotlib; rendering skips without Graphviz.
"""
import json
import os
import re
import shutil

import numpy as np
import pytest

from tinygrad_gpt import Tensor, functional as F, manual_seed
from tinygrad_gpt.commands import viz
from tinygrad_gpt.storage.checkpoint import save_checkpoint
from tinygrad_gpt.commands.cli import main
from tinygrad_gpt.model import GPT, GPTConfig
from tinygrad_gpt.nn import Linear
from tinygrad_gpt.tokenizer import CharTokenizer
from tinygrad_gpt.commands.viz import VizError, attention_weights, draw, plot_attention, plot_losses, to_dot

needs_dot = pytest.mark.skipif(shutil.which("dot") is None, reason="Graphviz `dot` is not installed")


def parse_dot(text):
    """({node id: label lines}, [(from label, to label)]) of to_dot's output."""
    labels = {m[0]: m[1].split("\\n") for m in re.findall(r'(n\d+) \[label="((?:[^"\\]|\\.)*)"', text)}
    edges = [(labels[a][0], labels[b][0]) for a, b in re.findall(r"(n\d+) -> (n\d+);", text)]
    return labels, edges


def check_png(path, min_side=100):
    """The file is a PNG of a sensible size with some content (not one flat colour)."""
    with open(path, "rb") as f:
        assert f.read(8) == b"\x89PNG\r\n\x1a\n", f"{path} is not a PNG"
    image = pytest.importorskip("matplotlib.image").imread(path)
    assert image.ndim == 3 and min(image.shape[:2]) >= min_side, image.shape
    assert image[..., :3].var() > 0, f"{path} is blank"
    return image


# ----------------------------------------------------------------------------- to_dot

def test_dot_of_a_known_expression_has_its_nodes_and_edges():
    a = Tensor(np.ones((2, 3)), requires_grad=True)
    b = Tensor(np.ones(3), requires_grad=True)
    text = to_dot((a * b).sum(), names={"a": a, "b": b})
    assert text.startswith("digraph") and text.rstrip().endswith("}")
    labels, edges = parse_dot(text)
    assert sorted(tuple(v) for v in labels.values()) == [
        ("Mul", "(2, 3)"), ("Sum", "()"), ("a", "(2, 3)"), ("b", "(3,)")]
    assert sorted(edges) == [("Mul", "Sum"), ("a", "Mul"), ("b", "Mul")]


def test_unnamed_leaves_and_constants():
    x = Tensor(np.ones(2), requires_grad=True)
    labels, edges = parse_dot(to_dot((x * 3.0).tanh()))
    heads = sorted(v[0] for v in labels.values())
    assert heads == ["Mul", "Tanh", "const 3", "leaf"]
    assert sorted(edges) == [("Mul", "Tanh"), ("const 3", "Mul"), ("leaf", "Mul")]


def test_a_tensor_used_twice_is_one_node_with_two_edges():
    x = Tensor(np.ones(3), requires_grad=True)
    labels, edges = parse_dot(to_dot(x * x, names={"x": x}))
    assert len(labels) == 2
    assert edges == [("x", "Mul"), ("x", "Mul")]


def test_gradient_norms_after_backward_with_retain_graph():
    x = Tensor(np.array([3.0, 4.0]), requires_grad=True)
    y = x * 2.0
    loss = y.sum()
    loss.backward(retain_graph=True)
    labels, _ = parse_dot(to_dot(loss, names={"x": x}))
    by_head = {v[0]: v for v in labels.values()}
    assert by_head["x"][2] == "|grad| = 2.828"    # |[2, 2]|
    assert by_head["Mul"][2] == "|grad| = 1.414"  # |[1, 1]|
    assert by_head["Sum"][2] == "|grad| = 1"


def test_dot_after_backward_without_retain_graph_says_how_to_fix_it():
    x = Tensor(np.ones(2), requires_grad=True)
    loss = (x * x).sum()
    loss.backward()
    with pytest.raises(VizError, match="retain_graph=True"):
        to_dot(loss)


def test_parameter_names_from_a_module():
    layer = Linear(3, 2)
    out = layer(Tensor(np.ones((4, 3), dtype=np.float32)))
    labels, edges = parse_dot(to_dot(out, names=dict(layer.named_parameters())))
    assert ("weight", "Linear") in edges and ("bias", "Linear") in edges
    assert to_dot(out, names=layer.named_parameters()) == to_dot(out, names=dict(layer.named_parameters()))


def test_names_are_escaped():
    x = Tensor(np.ones(2), requires_grad=True)
    text = to_dot(x * 1.0, names={'say "hi" \\ bye': x})
    assert 'say \\"hi\\" \\\\ bye' in text


def test_a_deep_graph_needs_no_recursion():
    x = Tensor(np.ones(2), requires_grad=True)
    y = x
    for _ in range(3000):
        y = y + 1.0
    labels, edges = parse_dot(to_dot(y))
    assert len(labels) == 3000 * 2 + 1 and len(edges) == 6000


def test_to_dot_of_a_gpt_loss_names_the_fused_ops():
    manual_seed(0)
    model = GPT(GPTConfig(block_size=4, vocab_size=5, n_layer=1, n_head=2, n_embd=4))
    _, loss = model(np.array([[0, 1, 2, 3]]), np.array([[1, 2, 3, 4]]))
    labels, edges = parse_dot(to_dot(loss, names=dict(model.named_parameters())))
    heads = {v[0] for v in labels.values()}
    assert {"Attention", "LayerNorm", "CrossEntropy", "Linear+GELU", "transformer.wte.weight"} <= heads
    # weight tying: the token embedding feeds the lookup and the output head
    assert {b for a, b in edges if a == "transformer.wte.weight"} == {"GetItem", "Transpose"}


# ----------------------------------------------------------------------------- draw

def _expression():
    a = Tensor(np.ones((2, 3)), requires_grad=True)
    b = Tensor(np.ones(3), requires_grad=True)
    out = ((a * b).tanh() * 2.0).sum()
    out.backward(retain_graph=True)
    return out, {"a": a, "b": b}


@needs_dot
def test_draw_png_is_a_real_picture(tmp_path):
    out, names = _expression()
    path = draw(out, tmp_path / "graph.png", names=names)
    check_png(path, min_side=50)


@needs_dot
def test_draw_svg(tmp_path):
    out, names = _expression()
    text = open(draw(out, tmp_path / "graph.svg", names=names), encoding="utf-8").read()
    assert "<svg" in text and "Tanh" in text and "|grad|" in text


def test_draw_asking_for_graphviz_without_it_is_a_clear_runtime_error(tmp_path, monkeypatch):
    monkeypatch.setattr(viz.shutil, "which", lambda name: None)
    out, names = _expression()
    with pytest.raises(RuntimeError, match="Graphviz is not installed"):
        draw(out, tmp_path / "graph.png", engine="graphviz")
    assert not (tmp_path / "graph.png").exists()


def _box_colours(image, picture, inset=4):
    """The most common colour inside each drawn box (its fill; the label covers less)."""
    rgb = np.round(image[..., :3] * 255).astype(int)
    colours = []
    for x0, y0, x1, y1 in picture.boxes:
        patch = rgb[y0 + inset:y1 - inset, x0 + inset:x1 - inset].reshape(-1, 3)
        values, counts = np.unique(patch, axis=0, return_counts=True)
        colours.append("#%02x%02x%02x" % tuple(values[counts.argmax()]))
    return colours


@pytest.mark.parametrize("rankdir", ["LR", "TB"])
def test_without_graphviz_draw_lays_out_and_renders_with_matplotlib(tmp_path, monkeypatch, rankdir):
    pytest.importorskip("matplotlib")
    monkeypatch.setattr(viz.shutil, "which", lambda name: None)
    out, names = _expression()
    assert draw(out, tmp_path / "graph.png", names=names, rankdir=rankdir) == tmp_path / "graph.png"
    image = check_png(tmp_path / "graph.png", min_side=50)
    picture = viz.draw_with_matplotlib(out, tmp_path / "again.png", names=names, rankdir=rankdir)
    np.testing.assert_array_equal(check_png(tmp_path / "again.png", min_side=50), image)
    # one box per tensor of the graph, each in the picture with its kind's fill colour
    labels, edges = parse_dot(to_dot(out, names=names))
    assert len(picture.boxes) == len(labels) == 7 and len(picture.edges) == len(edges) == 6
    assert sorted(p[0] for p in picture.labels) == sorted(v[0] for v in labels.values())
    assert image.shape[1::-1] == picture.size
    assert _box_colours(image, picture) == [viz.COLORS[k] for k in picture.kinds]
    assert picture.kinds.count("op") == 4 and picture.kinds.count("leaf") == 2
    for i, (a0, b0, a1, b1) in enumerate(picture.boxes):  # no two boxes overlap
        for x0, y0, x1, y1 in picture.boxes[:i]:
            assert a1 <= x0 or x1 <= a0 or b1 <= y0 or y1 <= b0
    for i, j in picture.edges:  # every edge runs forward, along the layers
        k = 0 if rankdir == "LR" else 1
        assert picture.boxes[i][k + 2] < picture.boxes[j][k]


def test_matplotlib_picture_of_a_gpt_loss_and_svg(tmp_path):
    pytest.importorskip("matplotlib")
    manual_seed(0)
    model = GPT(GPTConfig(block_size=4, vocab_size=5, n_layer=1, n_head=2, n_embd=4))
    _, loss = model(np.array([[0, 1, 2, 3]]), np.array([[1, 2, 3, 4]]))
    names = dict(model.named_parameters())
    picture = viz.draw_with_matplotlib(loss, tmp_path / "gpt.png", names=names)
    image = check_png(tmp_path / "gpt.png")
    assert len(picture.boxes) == len(parse_dot(to_dot(loss, names=names))[0])
    assert _box_colours(image, picture) == [viz.COLORS[k] for k in picture.kinds]
    text = open(draw(loss, tmp_path / "gpt.svg", names=names, engine="matplotlib"), encoding="utf-8").read()
    assert "<svg" in text


@pytest.mark.parametrize("rankdir, n_layer", [("LR", 1), ("LR", 2), ("TB", 1)])
def test_a_long_graph_is_folded_into_bands_a_person_can_read(tmp_path, rankdir, n_layer):
    pytest.importorskip("matplotlib")
    manual_seed(0)
    model = GPT(GPTConfig(block_size=4, vocab_size=6, n_layer=n_layer, n_head=2, n_embd=8))
    _, loss = model(np.array([[0, 1, 2, 3]]), np.array([[1, 2, 3, 4]]))
    loss.backward(retain_graph=True)
    picture = viz.draw_with_matplotlib(loss, tmp_path / "gpt.png", dict(model.named_parameters()), rankdir)
    image = check_png(tmp_path / "gpt.png")
    width, height = picture.size
    assert image.shape[1::-1] == picture.size
    assert 0.5 <= width / height <= 3, picture.size  # not a strip thousands of pixels long
    assert len(picture.boxes) == len(parse_dot(to_dot(loss))[0])
    # the text is drawn at full size: every box keeps its height in pixels
    assert {b[3] - b[1] for b in picture.boxes} == {round(viz._BOX_H * 100)}
    assert _box_colours(image, picture) == [viz.COLORS[k] for k in picture.kinds]
    for i, (a0, b0, a1, b1) in enumerate(picture.boxes):  # inside the picture, no two overlap
        assert 0 <= a0 < a1 <= width and 0 <= b0 < b1 <= height
        for x0, y0, x1, y1 in picture.boxes[:i]:
            assert a1 <= x0 or x1 <= a0 or b1 <= y0 or y1 <= b0
    for i, j in picture.edges:  # every edge runs on in reading order: along its band, or to a later one
        assert picture.boxes[i][2] < picture.boxes[j][0] or picture.boxes[i][3] < picture.boxes[j][1]


def test_draw_goes_to_an_ignored_folder_by_default(tmp_path, monkeypatch):
    pytest.importorskip("matplotlib")
    monkeypatch.setattr(viz.shutil, "which", lambda name: None)
    monkeypatch.chdir(tmp_path)
    out, names = _expression()
    assert draw(out, names=names) == viz.DEFAULT_GRAPH_PATH
    check_png(tmp_path / "out" / "graph.png", min_side=50)
    assert draw(out, tmp_path / "new" / "folder" / "g.dot") == tmp_path / "new" / "folder" / "g.dot"
    gitignore = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), ".gitignore")
    folder = viz.DEFAULT_GRAPH_PATH.split(os.sep)[0] + "/"
    assert folder in open(gitignore, encoding="utf-8").read().split()


def test_draw_without_graphviz_or_matplotlib_names_both(tmp_path, monkeypatch):
    monkeypatch.setattr(viz.shutil, "which", lambda name: None)
    monkeypatch.setitem(__import__("sys").modules, "matplotlib.figure", None)  # import now fails
    out, names = _expression()
    with pytest.raises(VizError, match=r"no Graphviz `dot`.*tinygrad_gpt\[plot\]"):
        draw(out, tmp_path / "graph.png")
    assert not (tmp_path / "graph.png").exists()
    with pytest.raises(ValueError, match="engine"):
        draw(out, tmp_path / "graph.png", engine="tikz")


def test_draw_dot_file_needs_no_graphviz(tmp_path, monkeypatch):
    monkeypatch.setattr(viz.shutil, "which", lambda name: None)
    out, names = _expression()
    path = draw(out, tmp_path / "graph.dot", names=names)
    assert open(path, encoding="utf-8").read() == to_dot(out, names=names)


def test_draw_unknown_suffix(tmp_path):
    out, _ = _expression()
    with pytest.raises(ValueError, match=".svg"):
        draw(out, tmp_path / "graph.jpg")


# ----------------------------------------------------------------------------- loss curves

def write_log(path, n=60, eval_every=20):
    rng = np.random.default_rng(0)
    with open(path, "w", encoding="utf-8") as f:
        for it in range(n + 1):
            if it % eval_every == 0:
                f.write(json.dumps({"iter": it, "train_loss": 4.5 - it / 30, "val_loss": 4.6 - it / 35}) + "\n")
            if it < n:
                loss = 4.6 - it / 30 + 0.1 * rng.standard_normal()
                f.write(json.dumps({"iter": it, "loss": loss, "lr": 1e-3, "ms": 5.0}) + "\n")


def test_plot_losses_png_is_a_real_picture(tmp_path):
    pytest.importorskip("matplotlib")
    write_log(tmp_path / "log.jsonl")
    image = check_png(plot_losses(tmp_path / "log.jsonl", tmp_path / "loss.png"))
    assert image.shape[1] > image.shape[0]  # a wide chart


def test_plot_losses_accepts_a_half_written_last_line(tmp_path):
    pytest.importorskip("matplotlib")
    write_log(tmp_path / "log.jsonl")
    with open(tmp_path / "log.jsonl", "a", encoding="utf-8") as f:
        f.write('{"iter": 61, "lo')
    check_png(plot_losses(tmp_path / "log.jsonl", tmp_path / "loss.png"))


def test_plot_losses_bad_logs(tmp_path):
    with pytest.raises(VizError, match="no training log"):
        plot_losses(tmp_path / "missing.jsonl", tmp_path / "loss.png")
    (tmp_path / "empty.jsonl").write_text('{"iter": 0, "lr": 0.1}\n')
    with pytest.raises(VizError, match="no loss records"):
        plot_losses(tmp_path / "empty.jsonl", tmp_path / "loss.png")
    (tmp_path / "bad.jsonl").write_text('{"iter": 0, "loss": 1.0}\nnot json\n{"iter": 1, "loss": 0.9}\n')
    with pytest.raises(VizError, match="line 2"):
        plot_losses(tmp_path / "bad.jsonl", tmp_path / "loss.png")


def test_plots_without_matplotlib_name_the_plot_extra(tmp_path, monkeypatch):
    monkeypatch.setitem(__import__("sys").modules, "matplotlib.figure", None)  # import now fails
    write_log(tmp_path / "log.jsonl")
    with pytest.raises(VizError, match=r"tinygrad_gpt\[plot\]"):
        plot_losses(tmp_path / "log.jsonl", tmp_path / "loss.png")


# ----------------------------------------------------------------------------- attention maps

TEXT = "hello world, hello attention"


@pytest.fixture(scope="module")
def tiny():
    """A small random GPT with larger-than-usual weights, so attention is far from uniform."""
    manual_seed(3)
    tok = CharTokenizer.from_text(TEXT)
    model = GPT(GPTConfig(block_size=16, vocab_size=tok.vocab_size, n_layer=2, n_head=3, n_embd=12))
    for name, p in model.named_parameters():
        if name.endswith("c_attn.weight"):
            p.data *= 20
    return model, tok


def test_attention_weights_are_causal_rows_that_sum_to_one(tiny):
    model, tok = tiny
    maps = attention_weights(model, np.array([tok.encode("hello wor"), tok.encode("attentio ")]))
    assert len(maps) == 2
    for att in maps:
        assert att.shape == (2, 3, 9, 9)
        np.testing.assert_allclose(att.sum(axis=-1), 1.0, rtol=1e-5)
        assert np.all(np.triu(att, k=1) == 0)
    assert maps[0].max() > 0.5  # not uniform: the picture has something to show


def test_attention_weights_reproduce_the_models_attention_output(tiny):
    """weights @ v, heads joined and projected, is exactly what CausalSelfAttention returns."""
    model, tok = tiny
    model.eval()
    ids = np.array([tok.encode("hello world")])
    B, T = ids.shape
    att = attention_weights(model, ids)[0]                                    # (B, nh, T, T)
    tr = model.transformer
    block = tr.h[0]
    x = F.embedding(ids, tr.wte.weight) + tr.wpe.weight[0:T]
    h = block.ln_1(x)
    C = h.shape[-1]
    v = block.attn.c_attn(h).numpy()[..., 2 * C:].reshape(B, T, 3, C // 3).transpose(0, 2, 1, 3)
    y = (att @ v).transpose(0, 2, 1, 3).reshape(B, T, C)
    expected = block.attn(h).numpy()
    np.testing.assert_allclose(block.attn.c_proj(Tensor(y)).numpy(), expected, rtol=1e-4, atol=1e-5)


def test_attention_weights_come_from_the_models_own_forward(tiny, monkeypatch):
    """One forward of the model, whose attention modules keep their weights while asked, and only then."""
    model, tok = tiny
    ids = np.array([tok.encode("hello")])
    calls = []
    real = type(model).forward
    monkeypatch.setattr(type(model), "forward", lambda self, *a, **k: calls.append(1) or real(self, *a, **k))
    maps = attention_weights(model, ids)
    assert len(calls) == 1 and len(maps) == len(model.transformer.h)
    assert all(not b.attn.record_weights and b.attn.weights is None for b in model.transformer.h)
    model(ids)
    assert all(b.attn.weights is None for b in model.transformer.h)  # not asked: nothing kept
    with F.mode("composed"):  # the composed attention gives the same weights
        for got, want in zip(attention_weights(model, ids), maps):
            np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)


def test_plot_attention_one_panel_per_layer_and_head(tiny, tmp_path):
    pytest.importorskip("matplotlib")
    model, tok = tiny
    image = check_png(plot_attention(model, tok, TEXT, tmp_path / "attention.png"))
    assert image.shape[1] > image.shape[0]  # 3 heads across, 2 layers down


def _checkpoint(tiny, out_dir):
    model, tok = tiny
    save_checkpoint(out_dir / "ckpt.safetensors", model, None, {"tokenizer": tok.to_dict()})


def test_attention_command(tiny, tmp_path, capsys):
    pytest.importorskip("matplotlib")
    _checkpoint(tiny, tmp_path)
    assert main(["attention", f"--out_dir={tmp_path}", f"--text={TEXT}"]) == 0
    out = capsys.readouterr().out
    assert "cut to its last 16 tokens" in out and "attention.png" in out
    check_png(tmp_path / "attention.png")


def test_attention_command_errors(tiny, tmp_path, capsys):
    assert main(["attention", f"--out_dir={tmp_path}"]) == 1  # no checkpoint yet
    assert "no checkpoint" in capsys.readouterr().err
    _checkpoint(tiny, tmp_path)
    assert main(["attention", f"--out_dir={tmp_path}", "--text=xyz"]) == 2  # not in the vocabulary
    assert "--text" in capsys.readouterr().err
    assert main(["attention", f"--out_dir={tmp_path}", "--text="]) == 2


def test_plot_command(tmp_path, capsys):
    pytest.importorskip("matplotlib")
    write_log(tmp_path / "log.jsonl")
    assert main(["plot", f"--out_dir={tmp_path}"]) == 0
    assert "loss.png" in capsys.readouterr().out
    check_png(tmp_path / "loss.png")


def test_plot_command_without_a_log(tmp_path, capsys):
    assert main(["plot", f"--out_dir={tmp_path}"]) == 1
    assert capsys.readouterr().err.startswith("error: ")
