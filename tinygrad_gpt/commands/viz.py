"""Pictures: computation graphs (Graphviz or matplotlib), loss curves and attention maps (matplotlib).

``to_dot`` needs nothing: it returns the DOT text of a tensor's graph. ``draw``
turns that text into an SVG or PNG with the Graphviz ``dot`` program, or, where
Graphviz is not installed, lays the graph out itself (layout.py) and draws it
with matplotlib. The plots need matplotlib (``pip install 'tinygrad_gpt[plot]'``), imported only when a
plot is made, and drawn with the Agg backend so no window ever opens.

    >>> from tinygrad_gpt import Tensor
    >>> a = Tensor([1.0, 2.0], requires_grad=True)
    >>> print(to_dot((a * a).sum(), names={"a": a}).splitlines()[0])
    digraph tinygrad_gpt {

``backward()`` frees the graph as it goes, so call ``to_dot`` before backward,
or after ``backward(retain_graph=True)``, which keeps the graph and gives every
intermediate tensor a ``.grad`` too, so the picture shows all gradient norms.
"""
import io
import json
import os
import shutil
import subprocess
from dataclasses import dataclass
from typing import ClassVar

import numpy as np

from .. import backend
from ..backend import to_numpy
from .layout import layered_layout
from ..storage.checkpoint import CKPT_NAME, checkpoint_tokenizer, load_checkpoint
from ..errors import ConfigError, VizError
from ..storage.fileio import file_op, write_atomic
from ..tensor import no_grad, _RELEASED
from ..run.telemetry import plot_health


# ----------------------------------------------------------------------------- computation graphs

def graph_nodes(tensor):
    """Every tensor reachable through ``_ctx.parents``, constants too, inputs first: the same
    walk that backward makes (``Tensor._topo``)."""
    order = tensor._topo(constants=True)
    if any(t._ctx is _RELEASED for t in order):
        raise VizError("this graph was freed by backward(); build it again and call to_dot "
                       "before backward, or run backward(retain_graph=True)")
    return order


def _grad_norm(t):
    g = t.grad
    return None if g is None else float(np.sqrt((to_numpy(g).astype(np.float64) ** 2).sum()))


def _escape(text):
    """Text made safe inside a double-quoted DOT string."""
    return text.replace("\\", "\\\\").replace('"', '\\"')


def to_dot(tensor, names=None, rankdir="LR"):
    """Graphviz DOT text of the graph that computed ``tensor``.

    One node per tensor. A tensor made by an op is labelled with the op's name
    (``Mul``, ``Softmax``, ...) and its shape; a leaf with its name, if ``names``
    (a dict name -> tensor, or pairs such as ``model.named_parameters()``) has one,
    else ``leaf`` (needs a gradient) or ``const``. Tensors holding a ``.grad``
    show its L2 norm. Edges run from each input to the tensor computed from it.
    """
    nodes, edges = _graph(tensor, names)
    lines = ["digraph tinygrad_gpt {", f"  rankdir={rankdir};",
             '  node [fontname="Helvetica", fontsize=10];']
    for i, (kind, parts) in enumerate(nodes):
        style = 'style="rounded,filled"' if kind == "op" else "style=filled"
        label = "\\n".join(_escape(part) for part in parts)  # \n: a line break inside a DOT label
        lines.append(f'  n{i} [label="{label}", shape=box, {style}, fillcolor="{COLORS[kind]}"];')
    lines += [f"  n{i} -> n{j};" for i, j in edges]
    lines.append("}")
    return "\n".join(lines) + "\n"


COLORS = {"op": "#dbe8f6", "leaf": "#fbe3c0", "const": "#eeeeee"}  # the fill of each kind of box


def _graph(tensor, names):
    """([(kind, label lines)] per tensor, [(i, j)] per edge from input i to output j)."""
    label_of = {id(t): name for name, t in dict(names or {}).items()}
    tensors = graph_nodes(tensor)
    index = {id(t): i for i, t in enumerate(tensors)}
    nodes, edges = [], []
    for t in tensors:
        if t._ctx is not None:
            kind, head = "op", t._ctx.name
        else:
            kind = "leaf" if t.requires_grad else "const"
            head = label_of.get(id(t), kind)
        parts = [head, str(t.shape)]
        if kind == "const" and t.numel() == 1 and id(t) not in label_of:
            parts[0] = f"const {to_numpy(t.data).item():.4g}"  # a lifted Python number
        norm = _grad_norm(t)
        if norm is not None:
            parts.append(f"|grad| = {norm:.4g}")
        nodes.append((kind, parts))
        if t._ctx is not None:
            edges += [(index[id(p)], index[id(t)]) for p in t._ctx.parents if p is not None]
    return nodes, edges


DEFAULT_GRAPH_PATH = os.path.join("out", "graph.png")  # out/ is in .gitignore


def draw(tensor, path=DEFAULT_GRAPH_PATH, names=None, rankdir="LR", engine="auto"):
    """Write the graph of ``tensor`` to ``path`` (.svg, .png or .pdf; .dot for the DOT text).

    ``engine="graphviz"`` renders with the Graphviz ``dot`` program, ``"matplotlib"`` with
    the layered layout of layout.py and matplotlib (the ``plot`` extra); ``"auto"`` uses
    Graphviz when ``dot`` is on PATH and matplotlib otherwise. Missing folders of ``path``
    are made. Raises VizError (a RuntimeError) when the engine is not installed. Returns ``path``.
    """
    if engine not in ("auto", "graphviz", "matplotlib"):
        raise ValueError(f"draw: engine must be 'auto', 'graphviz' or 'matplotlib', got {engine!r}")
    fmt = os.path.splitext(os.fspath(path))[1].lower().lstrip(".")
    if fmt not in ("svg", "png", "pdf", "dot"):
        raise ValueError(f"draw: {path} should end in .svg, .png, .pdf or .dot")
    if fmt == "dot":
        text = to_dot(tensor, names, rankdir)
        _make_folder(path)
        with open(path, "w", encoding="utf-8") as f:
            f.write(text)
        return path
    exe = shutil.which("dot") if engine != "matplotlib" else None
    if exe is None and engine == "graphviz":
        raise VizError("Graphviz is not installed: the `dot` program was not found on PATH "
                       "(install the graphviz package, or draw with engine='matplotlib')")
    if exe is None:
        try:
            draw_with_matplotlib(tensor, path, names, rankdir)
        except VizError as e:
            raise VizError(f"no Graphviz `dot` program on PATH, and {e}") if engine == "auto" else e
        return path
    text = to_dot(tensor, names, rankdir)
    _make_folder(path)
    result = subprocess.run([exe, f"-T{fmt}", "-o", os.fspath(path)], input=text.encode(),
                            capture_output=True, timeout=120)
    if result.returncode != 0:
        raise VizError(f"dot failed: {result.stderr.decode(errors='replace').strip()}")
    return path


@dataclass
class GraphPicture:
    """What ``draw_with_matplotlib`` drew: one box per tensor, and where it is in the image."""
    labels: list    # the text lines of each box, as in to_dot
    kinds: list     # "op", "leaf" or "const" (the fill colour: COLORS)
    edges: list     # (i, j): box i is an input of box j
    boxes: list     # (x0, y0, x1, y1) of each box in pixels of the saved image, from the top left
    size: tuple     # (width, height) of the image in pixels


# box and gap sizes in inches; a box is as wide as its graph's longest label needs
_BOX_H, _GAP_LAYER, _GAP_SLOT, _GAP_BAND, _MARGIN, _MAX_PIXELS = 0.62, 0.55, 0.22, 0.6, 0.25, 16000
_FOLD_ABOVE, _ASPECT = 16.0, 1.6  # a picture longer than 16 inches is folded to about 1.6 : 1


def draw_with_matplotlib(tensor, path, names=None, rankdir="LR"):
    """Lay the graph out in layers (layout.py) and draw it with matplotlib; returns a GraphPicture.

    No system program is needed, only ``pip install 'tinygrad_gpt[plot]'``. Layers run left
    to right (``rankdir="LR"``) or top to bottom (``"TB"``); a long graph is folded into bands.
    """
    if rankdir not in ("LR", "TB"):
        raise ValueError(f"draw: rankdir must be 'LR' or 'TB' without Graphviz, got {rankdir!r}")
    nodes, edges = _graph(tensor, names)
    box = (max(1.1, 0.2 + 0.062 * max(len(line) for _, parts in nodes for line in parts)), _BOX_H)
    (W, H), centres, band = _box_centres(layered_layout(len(nodes), edges), box, rankdir)
    dpi = min(100.0, _MAX_PIXELS / max(W, H))  # a huge graph gets a smaller scale, not a huge file

    fig = _figure(W, H)  # first: without matplotlib it raises VizError naming the extra
    from matplotlib.patches import FancyArrowPatch, FancyBboxPatch
    ax = fig.add_axes((0, 0, 1, 1))
    ax.set_xlim(0, W)
    ax.set_ylim(0, H)
    ax.axis("off")
    half_w, half_h = box[0] / 2, box[1] / 2
    for i, j in edges:  # from the input's box to the output's: its far side, or on to a later band
        (xi, yi), (xj, yj) = centres[i], centres[j]
        start, end = ((xi + half_w, yi), (xj - half_w, yj)) if (rankdir == "LR") == (band[i] == band[j]) \
            else ((xi, yi - half_h), (xj, yj + half_h))
        ax.add_patch(FancyArrowPatch(start, end, arrowstyle="-|>", mutation_scale=8,
                                     color="#777777", linewidth=0.7, shrinkA=0, shrinkB=1))
    boxes = []
    for (kind, parts), (x, y) in zip(nodes, centres):
        style = "round,pad=0,rounding_size=0.06" if kind == "op" else "square,pad=0"
        ax.add_patch(FancyBboxPatch((x - half_w, y - half_h), *box, boxstyle=style, linewidth=0.8,
                                    facecolor=COLORS[kind], edgecolor="#555555"))
        ax.text(x, y, "\n".join(parts), ha="center", va="center", fontsize=7,
                fontweight="bold" if kind == "op" else "normal")
        corners = (x - half_w, H - y - half_h, x + half_w, H - y + half_h)  # from the top left
        boxes.append(tuple(round(v * dpi) for v in corners))
    _make_folder(path)
    fig.set_dpi(dpi)  # savefig's resolution is the figure's
    save_figure(fig, path)
    return GraphPicture([p for _, p in nodes], [k for k, _ in nodes], edges, boxes,
                        fig.canvas.get_width_height())  # as Agg sizes the image: whole pixels, cut


def _box_centres(places, box, rankdir):
    """((width, height), [(x, y)] box centres in inches from the bottom left, [band] of each box)
    for the (layer, slot) places of the layout; each layer is centred across its band.

    A long graph is folded so it can be read like a page: its layers are cut into bands of
    equal length, stacked top to bottom (LR) or set side by side (TB), as many as bring the
    picture closest to _ASPECT (width:height). A graph that fits in _FOLD_ABOVE inches (a
    screen's width) stays in one band.
    """
    n_layers = 1 + max(layer for layer, _ in places)
    widths = [0] * n_layers
    for layer, slot in places:
        widths[layer] = max(widths[layer], slot + 1)
    along, across = box if rankdir == "LR" else box[::-1]  # a box's size along the layers, and across
    step_layer, step_slot = along + _GAP_LAYER, across + _GAP_SLOT

    def fold(per_band):  # (per_band, [slots across each band], length, breadth)
        bands = [max(widths[b:b + per_band]) for b in range(0, n_layers, per_band)]
        breadth = 2 * _MARGIN + sum(bands) * step_slot - _GAP_SLOT + (len(bands) - 1) * _GAP_BAND
        return per_band, bands, 2 * _MARGIN + per_band * step_layer - _GAP_LAYER, breadth

    def misfit(f):  # how far the picture's width:height is from _ASPECT, as a ratio
        ratio = f[2] / f[3] if rankdir == "LR" else f[3] / f[2]
        return max(ratio / _ASPECT, _ASPECT / ratio)

    per_band, bands, length, breadth = folded = fold(n_layers)
    if length > _FOLD_ABOVE:
        per_band, bands, length, breadth = min(
            (fold(-(-n_layers // k)) for k in range(1, n_layers + 1)), key=misfit, default=folded)
    W, H = (length, breadth) if rankdir == "LR" else (breadth, length)
    start = [_MARGIN + sum(bands[:b]) * step_slot + b * _GAP_BAND for b in range(len(bands))]
    centres, band_of = [], []
    for layer, slot in places:
        band, at = divmod(layer, per_band)
        a = _MARGIN + at * step_layer + along / 2
        c = start[band] + (bands[band] - widths[layer]) * step_slot / 2 + slot * step_slot + across / 2
        centres.append((a, H - c) if rankdir == "LR" else (c, H - a))
        band_of.append(band)
    return (W, H), centres, band_of


def _make_folder(path):
    folder = os.path.dirname(os.fspath(path))
    if folder:
        os.makedirs(folder, exist_ok=True)


# ----------------------------------------------------------------------------- matplotlib

def _figure(width, height, layout=None):
    """A matplotlib Figure on an Agg canvas (no pyplot, no window, no global state)."""
    try:
        from matplotlib.figure import Figure
        from matplotlib.backends.backend_agg import FigureCanvasAgg
    except ImportError:
        raise VizError("plots need matplotlib: pip install 'tinygrad_gpt[plot]' "
                       "(the `plot` extra)") from None
    fig = Figure(figsize=(width, height), dpi=100, layout=layout)
    FigureCanvasAgg(fig)
    return fig


def read_log(path):
    """The records of a ``log.jsonl``; a half-written last line (a run in progress) is skipped."""
    if not os.path.exists(path):
        raise VizError(f"{path}: no training log there (train first with "
                       f"`python -m tinygrad_gpt train --out_dir=...`)")
    try:
        with file_op("reading", path), open(path, encoding="utf-8") as f:
            lines = [line for line in f.read().splitlines() if line.strip()]
    except ValueError as e:  # not UTF-8
        raise VizError(f"{path}: cannot read it ({str(e)[:80]})") from None
    records = []
    for n, line in enumerate(lines, 1):
        try:
            record = json.loads(line)
        except (ValueError, RecursionError):
            if n < len(lines):
                raise VizError(f"{path}, line {n}: not a JSON record") from None
            continue
        numbers = [record.get(k) for k in ("iter", "loss", "train_loss", "val_loss")
                   if isinstance(record, dict) and k in record]
        if not isinstance(record, dict) or "iter" not in record or not all(
                isinstance(v, (int, float)) and not isinstance(v, bool) for v in numbers):
            raise VizError(f"{path}, line {n}: not a training record (iter and losses as numbers)")
        records.append(record)
    return records


def plot_losses(log_jsonl_path, out_png):
    """Train and val loss against iteration from a training log; returns ``out_png``.

    Step records ``{"iter", "loss", ...}`` draw the per-step training loss (thin);
    evaluation records ``{"iter", "train_loss", "val_loss"}`` draw the estimates.
    """
    records = read_log(log_jsonl_path)
    steps = [(r["iter"], r["loss"]) for r in records if "loss" in r]
    evals = [(r["iter"], r["train_loss"], r["val_loss"]) for r in records if "val_loss" in r]
    if not steps and not evals:
        raise VizError(f"{log_jsonl_path}: no loss records in the log")
    fig = _figure(8, 4.5)
    ax = fig.add_subplot()
    if steps:
        it, loss = zip(*steps)
        ax.plot(it, loss, color="#9ab8d8", linewidth=0.8, label="train loss (each step)")
    if evals:
        it, tr, va = zip(*evals)
        ax.plot(it, tr, "o-", color="#1f5fa8", markersize=4, label="train loss (estimate)")
        ax.plot(it, va, "s-", color="#d9534f", markersize=4, label="val loss (estimate)")
    ax.set_xlabel("iteration")
    ax.set_ylabel("cross-entropy loss (nats per token)")
    ax.set_title("training progress")
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    return save_figure(fig, out_png)


def save_figure(fig, path):
    """Render ``fig`` in memory, then write it atomically: a full disk leaves no half picture."""
    buf = io.BytesIO()
    fig.savefig(buf, format=os.path.splitext(os.fspath(path))[1].lstrip(".").lower() or "png")
    with file_op("writing", path):
        write_atomic(path, [buf.getvalue()])
    return path


# ----------------------------------------------------------------------------- attention maps

def attention_weights(model, idx):
    """The softmax attention weights of every layer: a list of (B, nh, T, T) host arrays.

    They come from the model's own forward, run once under no_grad and in eval mode: each
    attention module is asked to keep the weights it applies (``record_weights``).
    """
    layers = [block.attn for block in model.transformer.h]
    was_training = model.training
    model.eval()
    try:
        for attn in layers:
            attn.record_weights = True
        with no_grad():
            model(idx)
        return [attn.weights for attn in layers]
    finally:
        for attn in layers:
            attn.record_weights, attn.weights = False, None
        model.train(was_training)


def plot_attention(model, tokenizer, text, out_png):
    """Heatmaps of attention weights for ``text``: one panel per (layer, head); returns ``out_png``.

    Row i of a panel is the query at token i, column j the key at token j; text
    longer than the model's block size is cut to its last ``block_size`` tokens.
    """
    ids = tokenizer.encode(text)[-model.config.block_size:]
    if not ids:
        raise ValueError("plot_attention needs at least one character of text")
    maps = attention_weights(model, np.asarray([ids], dtype=np.int64))
    # one label per token (a character, or a piece of a word), spaces shown as ␣
    labels = [repr(tokenizer.decode([i]))[1:-1].replace(" ", "\u2423") for i in ids]
    L, nh, T = len(maps), maps[0].shape[1], len(ids)
    panel = 1.2 + 0.12 * T
    fig = _figure(min(1.5 + panel * nh, 40), min(0.6 + panel * L, 40), layout="constrained")
    axes = fig.subplots(L, nh, squeeze=False)
    for layer, att in enumerate(maps):
        for head in range(nh):
            ax = axes[layer][head]
            im = ax.imshow(att[0, head], cmap="viridis", vmin=0.0, vmax=1.0)
            ax.set_title(f"layer {layer}, head {head}", fontsize=9)
            if T <= 48:
                size = 8 if T <= 24 else 6
                ax.set_xticks(range(T), labels, fontsize=size, rotation=90)
                ax.set_yticks(range(T), labels, fontsize=size)
            else:
                ax.set_xticks([])
                ax.set_yticks([])
    fig.colorbar(im, ax=axes.ravel().tolist(), shrink=0.8, label="attention weight")
    fig.suptitle("causal self-attention: rows are queries, columns the keys they read")
    return save_figure(fig, out_png)


# ----------------------------------------------------------------------------- commands

@dataclass
class PlotConfig:
    out_dir: str = "out"            # reads out_dir/log.jsonl, writes out_dir/loss.png (and health.png)

    def validate(self):
        return self


def plot(cfg, print_fn=print):
    """The ``plot`` command: out_dir/log.jsonl -> out_dir/loss.png."""
    cfg.validate()
    out = plot_losses(os.path.join(cfg.out_dir, "log.jsonl"), os.path.join(cfg.out_dir, "loss.png"))
    print_fn(f"wrote {out}")
    log = os.path.join(cfg.out_dir, "log.jsonl")
    try:  # each parameter's gradient norm and update ratio, when the log has them (run/telemetry.py)
        health = plot_health(read_log(log), _figure, save_figure, os.path.join(cfg.out_dir, "health.png"), log)
    except ValueError as e:
        raise VizError(str(e)) from None
    if health is not None:
        print_fn(f"wrote {health}")
    return out


@dataclass
class AttentionConfig:
    out_dir: str = "out"            # reads out_dir/ckpt.safetensors, writes out_dir/attention.png
    text: str = "The quick brown fox"  # the text whose attention is drawn
    device: str = backend.default_device()  # where the model runs (default: $TINYGRAD_GPT_DEVICE or cpu)

    CHOICES: ClassVar[dict] = {"device": backend.DEVICES}

    def validate(self):
        if not self.text:
            raise ConfigError("--text is empty: give at least one character")
        if self.device not in backend.DEVICES:
            raise ConfigError(f"--device must be one of {', '.join(backend.DEVICES)}, got {self.device!r}")
        return self


def attention(cfg, print_fn=print):
    """The ``attention`` command: a checkpoint and a text -> out_dir/attention.png."""
    cfg.validate()
    backend.require_device(cfg.device)
    path = os.path.join(cfg.out_dir, CKPT_NAME)
    with file_op("reading", path):
        ckpt = load_checkpoint(path)
    tokenizer = checkpoint_tokenizer(ckpt)  # characters, or BPE
    try:
        n = len(tokenizer.encode(cfg.text))
    except ValueError as e:
        raise ConfigError(f"--text: {e}") from None
    if n > ckpt.config.block_size:
        print_fn(f"note: the text is cut to its last {ckpt.config.block_size} tokens (the block size)")
    model = ckpt.build_model(device=cfg.device)
    out = plot_attention(model, tokenizer, cfg.text, os.path.join(cfg.out_dir, "attention.png"))
    print_fn(f"wrote {out}")
    return out
