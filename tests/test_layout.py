"""The layered layout that draws graphs without Graphviz: every edge points forward, one
node per slot, inputs next to their first use, and fewer crossings than the input order."""
import pytest
from hypothesis import given, strategies as st

from tinygrad_gpt.commands.layout import layered_layout

import strategies as S


@st.composite
def dags(draw, max_nodes=25):
    """(n, edges) of a random DAG in topological order: each edge (i, j) has i < j."""
    n = draw(st.integers(1, max_nodes))
    edges = []
    for j in range(1, n):
        edges += [(i, j) for i in draw(st.lists(st.integers(0, j - 1), max_size=3))]
    return n, edges


@S.SETTINGS
@given(dags())
def test_edges_point_forward_and_slots_are_distinct(dag):
    n, edges = dag
    places = layered_layout(n, edges)
    assert len(places) == n
    for i, j in edges:
        assert places[i][0] < places[j][0]
    assert len(set(places)) == n  # no two nodes share a place
    for layer in {p[0] for p in places}:  # the slots of a layer are 0, 1, 2, ...
        assert sorted(s for l, s in places if l == layer) == list(range(sum(l == layer for l, _ in places)))


def test_a_chain_is_a_line_and_inputs_sit_next_to_their_use():
    assert layered_layout(4, [(0, 1), (1, 2), (2, 3)]) == [(0, 0), (1, 0), (2, 0), (3, 0)]
    # node 3 is a parameter used only by the last op: it sits one layer before it
    places = layered_layout(5, [(0, 1), (1, 2), (2, 4), (3, 4)])
    assert places[3][0] == places[4][0] - 1 == 2


def _crossings(places, edges):
    return sum(1 for a, (i, j) in enumerate(edges) for k, l in edges[:a]
               if places[i][0] == places[k][0] and places[j][0] == places[l][0]
               and (places[i][1] - places[k][1]) * (places[j][1] - places[l][1]) < 0)


def test_sweeps_remove_crossings():
    edges = [(0, 3), (1, 2), (2, 5), (3, 4)]  # two chains drawn crossed in index order
    assert _crossings(layered_layout(6, edges, sweeps=0), edges) > 0
    assert _crossings(layered_layout(6, edges), edges) == 0


def test_rejects_edges_that_do_not_point_forward():
    with pytest.raises(ValueError, match="forward"):
        layered_layout(3, [(2, 1)])
