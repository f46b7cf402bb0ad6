"""The reference IP routes (tests/unit/iproute_oracle.py): shortest delay, loop-free,
against networkx."""

from __future__ import annotations

from datetime import datetime, timezone

import networkx as nx
from hypothesis import given, settings
from hypothesis import strategies as st
from iproute_oracle import ip_next_hops, path_delay_s, snapshot_edges

from netemu.plan.contacts import Contact, ContactPlan, Node


def test_snapshot_uses_contacts_up_at_t_and_their_delay_then():
    nodes = {n: Node(n, i + 1) for i, n in enumerate("abc")}
    plan = ContactPlan(datetime(2026, 1, 1, tzinfo=timezone.utc), nodes, [
        Contact("a", "b", 0, 100, 1e6, 0.010, owlt_samples=((0, 0.002), (100, 0.010))),
        Contact("b", "c", 0, 100, 1e6, 0.003),
        Contact("a", "c", 50, 100, 1e6, 0.001),
    ])
    assert sorted(snapshot_edges(plan, 10)) == [("a", "b", 0.0028), ("b", "c", 0.003)]
    hops = ip_next_hops(plan, 10)
    assert hops["a"] == {"b": "b", "c": "b"}
    assert hops["c"] == {}
    assert ip_next_hops(plan, 60)["a"]["c"] == "c"


def test_ties_give_fewer_hops_and_consistent_trees():
    edges = [("a", "b", 1), ("b", "d", 1), ("a", "d", 2), ("a", "c", 1), ("c", "d", 1)]
    for method in ("scipy", "python"):
        assert ip_next_hops(edges, method=method)["a"]["d"] == "d"


edge_st = st.tuples(st.integers(0, 7), st.integers(0, 7), st.integers(0, 5))


@settings(max_examples=150, deadline=None)
@given(st.lists(edge_st, max_size=30), st.sampled_from(["scipy", "python"]))
def test_next_hops_follow_shortest_delay_paths(raw, method):
    edges = [(f"n{a}", f"n{b}", float(w)) for a, b, w in raw if a != b]
    g = nx.DiGraph()
    for a, b, w in edges:
        if not g.has_edge(a, b) or g[a][b]["weight"] > w:
            g.add_edge(a, b, weight=w)
    hops = ip_next_hops(edges, method=method)
    for s in g.nodes:
        lengths = nx.single_source_dijkstra_path_length(g, s)
        assert set(hops[s]) == set(lengths) - {s}
        for d, want in lengths.items():
            if d != s:
                assert path_delay_s(hops, edges, s, d) == want
                # equal delay: never more hops than the fewest possible
                fewest = min(len(p) - 1 for p in nx.all_shortest_paths(g, s, d, weight="weight"))
                hops_taken, node = 0, s
                while node != d:
                    node = hops[node][d]
                    hops_taken += 1
                assert hops_taken == fewest


def test_destinations_limit_and_methods_agree():
    edges = [("a", "b", 0.01), ("b", "c", 0.01), ("c", "a", 0.05), ("a", "c", 0.03)]
    assert ip_next_hops(edges, method="scipy") == ip_next_hops(edges, method="python")
    only = ip_next_hops(edges, destinations=["c"])
    assert only["a"] == {"c": "b"} and only["b"] == {"c": "c"} and only["c"] == {}
