"""Where to put the boxes of a graph picture when Graphviz is not installed.

A layered layout, the idea behind Graphviz's ``dot`` in its simplest form:

1. Each node goes one layer after its furthest input, so every edge points forward.
   Inputs with nothing before them (parameters, constants) then move up next to the
   first op that uses them, instead of all waiting in layer 0.
2. Within a layer, nodes start in the order of their first use, then are sorted by the
   average slot of their neighbours in the layer before (a sweep forward), then in the
   layer after (a sweep back), a few times over: the barycentre heuristic, which removes
   most edge crossings.

    >>> layered_layout(3, [(0, 2), (1, 2)])   # two inputs feeding one op
    [(0, 0), (0, 1), (1, 0)]
"""


def layered_layout(n, edges, sweeps=4):
    """(layer, slot) for nodes 0..n-1 of a DAG whose edges (i, j) all have i < j."""
    parents = [[] for _ in range(n)]
    children = [[] for _ in range(n)]
    for i, j in edges:
        if not 0 <= i < j < n:
            raise ValueError(f"layered_layout: edge ({i}, {j}) does not point forward in 0..{n - 1}")
        parents[j].append(i)
        children[i].append(j)
    layer = [0] * n
    for j in range(n):  # inputs come first, so each parent's layer is final
        if parents[j]:
            layer[j] = 1 + max(layer[i] for i in parents[j])
    for i in range(n):  # a source sits right before its first use
        if not parents[i] and children[i]:
            layer[i] = min(layer[j] for j in children[i]) - 1
    rows = [[] for _ in range(max(layer, default=-1) + 1)]
    for i in range(n):
        rows[layer[i]].append(i)
    def first_use(i):  # the order in which nodes are first used: x before y in f(x, y)
        if not children[i]:
            return n + i, 0
        j = min(children[i])
        return j, parents[j].index(i)

    for row in rows:
        row.sort(key=first_use)
    slot, pos = [0] * n, [0.0] * n  # pos: the slot measured from the middle of its layer
    for row in rows:
        _place(row, slot, pos)
    for _ in range(sweeps):
        for row in rows[1:]:
            _sort_by_neighbours(row, parents, slot, pos)
        for row in reversed(rows[:-1]):
            _sort_by_neighbours(row, children, slot, pos)
    return [(layer[i], slot[i]) for i in range(n)]


def _sort_by_neighbours(row, neighbours, slot, pos):
    """Sort one layer by the mean position of each node's neighbours (its own if it has none)."""
    def key(i):
        near = neighbours[i]
        return (sum(pos[k] for k in near) / len(near) if near else pos[i], slot[i])
    row.sort(key=key)
    _place(row, slot, pos)


def _place(row, slot, pos):
    for s, i in enumerate(row):
        slot[i], pos[i] = s, s - (len(row) - 1) / 2
