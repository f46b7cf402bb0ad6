"""IP routes from a user's Python function (``ip_routing: {plugin: module:function}``).

At every topology change the function gets the links up now as a networkx graph and the
contact plan, and returns forwarding tables::

    def compute(graph: networkx.Graph, plan: ContactPlan) -> dict[str, dict[str, str]]:
        # graph.nodes[n]: kind ("satellite" | "ground" | "other"), addr (node address)
        # graph.edges[a, b]: delay_s, rate_bps (the slower direction), kind ("isl" | "gsl")
        # graph.graph["t_s"]: scenario time of the topology
        return {"sat1": {"sat3": "sat2", ...}, ...}  # {node: {destination: next hop}}

netemu turns the table into the same next-hop array the oracle produces, so the existing
netlink writer (:class:`netemu.emulator.iproute.RouteInstaller`) installs only what
changed. A destination left out has no route. A plug-in that raises, or returns a table
naming an unknown node or a next hop that is not a neighbour now, installs nothing: the
routes in place stay and the error is reported, the run goes on.
"""

from __future__ import annotations

import importlib
import sys
import traceback
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import Any

import networkx as nx
import numpy as np

from netemu.emulator.layout import Layout
from netemu.errors import InputError
from netemu.plan.contacts import ContactPlan
from netemu.routing.iproutes import IntArray, Links

RouteFunction = Callable[[nx.Graph, ContactPlan], Mapping[str, Mapping[str, str]]]


def load_route_function(ref: str, *, search: Iterable[str | Path] = (),
                        field: str = "ip_routing.plugin", source: str | None = None,
                        line: int | None = None) -> RouteFunction:
    """Import ``module:function``; ``search`` directories (e.g. the scenario's) are tried
    after ``sys.path``. Any failure is an :class:`InputError` naming the plug-in."""
    mod_name, _, fn_name = ref.partition(":")
    for d in search:
        if str(d) not in sys.path:
            sys.path.append(str(d))
    try:
        mod = importlib.import_module(mod_name)
    except Exception as e:  # ImportError, or whatever its top level raises
        raise InputError(f"cannot import the routing plug-in module {mod_name!r}: "
                         f"{type(e).__name__}: {e}", source=source, line=line,
                         field=field) from None
    fn = getattr(mod, fn_name, None)
    if not callable(fn):
        raise InputError(f"module {mod_name!r} has no function {fn_name!r}", source=source,
                         line=line, field=field)
    return fn  # type: ignore[no-any-return,unused-ignore]


class PluginRoutes:
    """Adapts a :data:`RouteFunction` to the oracle's interface: ``compute`` returns the
    (N, N) ``endpoint * N + next_hop`` table, or None when the plug-in failed (after
    calling ``on_error`` with what went wrong)."""

    def __init__(self, fn: RouteFunction, ref: str, layout: Layout, plan: ContactPlan,
                 on_error: Callable[[float, str], None]) -> None:
        self.fn = fn
        self.ref = ref
        self.layout = layout
        self.plan = plan
        self.nodes = list(layout.nodes)
        self.index = {n: i for i, n in enumerate(self.nodes)}
        self.on_error = on_error
        self.errors = 0

    def graph(self, links: Links, info: Mapping[tuple[int, int], tuple[float, str]],
              t_s: float) -> nx.Graph:
        """The links up now: ``info`` gives (rate_bps, kind) per node pair of ``links``."""
        g = nx.Graph(t_s=t_s)
        for n in self.nodes:
            node = self.plan.nodes.get(n)
            g.add_node(n, kind=node.kind if node else "other", addr=self.layout.node_addr[n])
        for (u, v), (w, _eu, _ev) in links.items():
            rate, kind = info.get((u, v), (0.0, ""))
            g.add_edge(self.nodes[u], self.nodes[v], delay_s=w, rate_bps=rate, kind=kind)
        return g

    def compute(self, links: Links, info: Mapping[tuple[int, int], tuple[float, str]],
                t_s: float) -> IntArray | None:
        g = self.graph(links, info, t_s)
        try:
            tables = self.fn(g, self.plan)
        except Exception as e:
            tb = traceback.extract_tb(e.__traceback__)[-1]
            self._fail(t_s, f"{type(e).__name__}: {e} (at {Path(tb.filename).name}:"
                            f"{tb.lineno})")
            return None
        try:
            return self.table(tables, links)
        except ValueError as e:
            self._fail(t_s, f"bad table: {e}")
            return None

    def _fail(self, t_s: float, message: str) -> None:
        self.errors += 1
        self.on_error(t_s, f"routing plug-in {self.ref}: {message}")

    def table(self, tables: Any, links: Links) -> IntArray:
        """``{node: {destination: next hop}}`` → the next-hop array; ValueError names the
        first entry that is wrong."""
        n = len(self.nodes)
        eg: dict[tuple[int, int], int] = {}
        best: dict[tuple[int, int], float] = {}
        for (u, v), (w, eu, ev) in links.items():
            if w < best.get((u, v), np.inf):
                best[(u, v)] = best[(v, u)] = w
                eg[(u, v)], eg[(v, u)] = eu, ev
        if not isinstance(tables, Mapping):
            raise ValueError(f"expected {{node: {{destination: next hop}}}}, got "
                             f"{type(tables).__name__}")
        out = np.full((n, n), -1, dtype=np.int64)
        for src, row in tables.items():
            s = self._node(src, "node")
            if not isinstance(row, Mapping):
                raise ValueError(f"{src}: expected {{destination: next hop}}, got "
                                 f"{type(row).__name__}")
            for dst, hop in row.items():
                d = self._node(dst, f"{src}: destination")
                h = self._node(hop, f"{src} → {dst}: next hop")
                if d == s:
                    continue
                ep = eg.get((s, h))
                if ep is None:
                    raise ValueError(f"{src} → {dst}: next hop {hop} is not a neighbour of "
                                     f"{src} now")
                out[s, d] = ep * n + h
        return out

    def _node(self, name: Any, what: str) -> int:
        i = self.index.get(name) if isinstance(name, str) else None
        if i is None:
            raise ValueError(f"{what} {name!r} is not a node")
        return i
