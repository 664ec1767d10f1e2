"""Draw a computation graph: every op the forward pass recorded, with gradient norms.

A two-layer MLP on a small batch with a cross-entropy loss. ``backward`` usually
frees the graph as it goes; ``backward(retain_graph=True)`` keeps it and leaves a
``.grad`` on every tensor, so the picture shows how large the gradient is at each
step of the way back. With the Graphviz ``dot`` program installed it draws the
picture; without it, matplotlib (``pip install 'tinygrad_gpt[plot]'``) draws it from
a layout of its own. Pictures go to out/ (ignored by git) unless --out says otherwise.

    python examples/06_draw_graph.py                                 # out/graph.png
    python examples/06_draw_graph.py --what=gpt --out=out/gpt.svg    # one tiny transformer block
"""
import argparse
import collections
import os

import numpy as np

import tinygrad_gpt.functional as F
from tinygrad_gpt import Tensor, manual_seed
from tinygrad_gpt.model import GPT, GPTConfig
from tinygrad_gpt.nn import Linear, Module
from tinygrad_gpt.commands.viz import DEFAULT_GRAPH_PATH, VizError, draw, graph_nodes, to_dot


class MLP(Module):
    def __init__(self, n_in, n_hidden, n_out):
        self.fc1 = Linear(n_in, n_hidden)
        self.fc2 = Linear(n_hidden, n_out)

    def forward(self, x):
        return self.fc2(self.fc1(x).gelu())


def build(what, seed):
    """(model, loss) for a small MLP or a one-layer GPT."""
    manual_seed(seed)
    rng = np.random.default_rng(seed)
    if what == "mlp":
        model = MLP(4, 8, 3)
        x = Tensor(rng.standard_normal((5, 4)).astype(np.float32))
        return model, F.cross_entropy(model(x), rng.integers(0, 3, size=5))
    model = GPT(GPTConfig(block_size=4, vocab_size=6, n_layer=1, n_head=2, n_embd=8))
    ids = rng.integers(0, 6, size=(1, 5))
    return model, model(ids[:, :-1], ids[:, 1:])[1]


def main(argv=None):
    p = argparse.ArgumentParser(description="Draw the computation graph of a small model's loss.")
    p.add_argument("--what", choices=("mlp", "gpt"), default="mlp")
    p.add_argument("--out", default=DEFAULT_GRAPH_PATH, help="where to write it: .svg, .png, .pdf or .dot")
    p.add_argument("--seed", type=int, default=0)
    a = p.parse_args(argv)

    model, loss = build(a.what, a.seed)
    loss.backward(retain_graph=True)  # keep the graph, and a .grad on every tensor
    names = dict(model.named_parameters())
    nodes = graph_nodes(loss)
    ops = collections.Counter(t._ctx.name for t in nodes if t._ctx is not None)
    print(f"loss {loss.item():.4f}; the graph has {len(nodes)} tensors, {len(names)} of them parameters")
    print("  ops: " + ", ".join(f"{k} x{n}" for k, n in sorted(ops.items())))
    for name, prm in names.items():
        print(f"  |grad| of {name:<28} {np.sqrt((prm.grad.astype(np.float64) ** 2).sum()):.4f}")
    try:
        print(f"wrote {draw(loss, a.out, names=names)}")
    except VizError as e:
        path = os.path.splitext(a.out)[0] + ".dot"
        os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
        with open(path, "w", encoding="utf-8") as f:
            f.write(to_dot(loss, names=names))
        print(f"{e}\nwrote the DOT text to {path} instead (render it with: dot -Tsvg {path} -o graph.svg)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
