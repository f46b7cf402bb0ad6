"""Node selectors: which nodes a scenario section means, in one syntax for every section.

A selector list picks nodes of a scenario (or of a contact plan) for ``emulation.agents:``,
traffic endpoints and app placement. Each selector is one of:

- an exact node name: ``bangalore``;
- a glob over names: ``sat-3-*``, ``sl-1?-*`` (``*``, ``?``, ``[...]``);
- a kind: ``kind:satellite``, ``kind:ground``, ``kind:other`` (and the bare words apps have
  always accepted: ``satellites``, ``sats``, ``ground``, ``stations``, ``all``, ``*``);
- an orbital plane of a constellation: ``plane:3`` or a range ``plane:0-5`` (planes are
  numbered from 0, as in Walker node names ``sat-P-S``);
- a slot within the plane: ``slot:0`` or ``slot:0-3``;
- a group of satellites: ``group:0`` (the first entry of the ``satellites:`` list);
- an ipn node number: ``ipn:12`` (or a range ``ipn:1-10``);
- ``!SELECTOR``: drop what SELECTOR matches from the nodes chosen so far (a list that
  starts with an exclusion starts from every node).

The nodes come back in plan order (satellites first, then ground stations), each once.
A name that is not a node, or a selector that matches nothing, is an
:class:`~netemu.errors.InputError` naming ``file:line`` and the field.
"""

from __future__ import annotations

import fnmatch
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, cast

from netemu.config import Fields, describe, suggest
from netemu.errors import InputError
from netemu.plan.contacts import ContactPlan

if TYPE_CHECKING:
    from netemu.plan.scenario import Scenario

KINDS = ("satellite", "ground", "other")

KIND_WORDS: dict[str, frozenset[str]] = {
    "satellites": frozenset({"satellite"}),
    "satellite": frozenset({"satellite"}),
    "sats": frozenset({"satellite"}),
    "ground": frozenset({"ground"}),
    "grounds": frozenset({"ground"}),
    "ground-stations": frozenset({"ground"}),
    "stations": frozenset({"ground"}),
    "all": frozenset(KINDS),
    "*": frozenset(KINDS),
}
"""Bare words that select by kind (app manifests have used them from the start)."""

KIND_VALUES: dict[str, str] = {
    "satellite": "satellite", "satellites": "satellite", "sat": "satellite",
    "ground": "ground", "station": "ground", "stations": "ground",
    "other": "other",
}
"""What ``kind:`` accepts."""

ATTRIBUTES = ("kind", "plane", "slot", "group", "ipn")
"""The ``NAME:VALUE`` selector forms."""

GLOB_CHARS = frozenset("*?[")


@dataclass(frozen=True, slots=True)
class NodeRef:
    """What selectors know of a node: name, kind, and where a satellite sits in its
    constellation (``group``: index in ``satellites:``, ``plane``, ``slot``; None for
    ground stations and plan-file nodes), its ipn node number (None when unknown)."""

    name: str
    kind: str
    group: int | None = None
    plane: int | None = None
    slot: int | None = None
    ipn: int | None = None


def node_refs(nodes: Scenario | ContactPlan | Iterable[Any]) -> list[NodeRef]:
    """The nodes of a scenario (plan order), of a contact plan (its node order), or of a
    sequence of objects with ``name`` and ``kind`` (``NodeRef``, apps' ``NodeInfo``,
    plan ``Node``)."""
    groups = getattr(nodes, "groups", None)
    stations = getattr(nodes, "ground_stations", None)
    if groups is not None and stations is not None:  # a Scenario
        ipn: dict[str, int] = getattr(nodes, "ipn", {}) or {}
        sats = [NodeRef(s.name, "satellite", s.group, s.plane, s.slot, ipn.get(s.name))
                for g in groups for s in g.satellites]
        return sats + [NodeRef(g.name, "ground", ipn=ipn.get(g.name)) for g in stations]
    if isinstance(nodes, ContactPlan):
        return [NodeRef(n.name, n.kind, ipn=n.ipn) for n in nodes.nodes.values()]
    out: list[NodeRef] = []
    for n in cast("Iterable[Any]", nodes):
        if isinstance(n, NodeRef):
            out.append(n)
        else:
            out.append(NodeRef(n.name, getattr(n, "kind", "other"),
                               getattr(n, "group", None), getattr(n, "plane", None),
                               getattr(n, "slot", None), getattr(n, "ipn", None)))
    return out


class SelectorError(InputError):
    """A selector that names no node or matches nothing; ``selector`` is its text."""

    def __init__(self, message: str, *, selector: str, source: str | None = None,
                 line: int | None = None, field: str | None = None) -> None:
        self.selector = selector
        super().__init__(message, source=source, line=line, field=field)


class NodeIndex:
    """Nodes prepared for selection: build once, select many times (a traffic section
    with many flows, or agents and apps on one scenario)."""

    def __init__(self, nodes: Scenario | ContactPlan | Iterable[Any] | NodeIndex) -> None:
        refs = nodes.refs if isinstance(nodes, NodeIndex) else node_refs(nodes)
        self.refs: list[NodeRef] = refs
        self.names: list[str] = [r.name for r in refs]
        self.position: dict[str, int] = {r.name: i for i, r in enumerate(refs)}

    def __len__(self) -> int:
        return len(self.refs)

    def match(self, selector: str) -> list[int]:
        """Positions of the nodes ``selector`` (without ``!``) matches; ``ValueError``
        with the reason when it is malformed, names no node or matches nothing."""
        s = selector.strip()
        if not s:
            raise ValueError("an empty selector")
        pos = self.position.get(s)
        if pos is not None:
            return [pos]
        kinds = KIND_WORDS.get(s)
        if kinds is not None:
            hits = [i for i, r in enumerate(self.refs) if r.kind in kinds]
        elif GLOB_CHARS.intersection(s):
            hits = [i for i, n in enumerate(self.names) if fnmatch.fnmatchcase(n, s)]
        elif ":" in s:
            hits = self._attribute(s)
        else:
            raise ValueError(f"no node named {s!r}{suggest(s, self.names) if self.names else ''}")
        if not hits:
            raise ValueError(f"selector {s!r} matches no node")
        return hits

    def _attribute(self, s: str) -> list[int]:
        attr, _, value = s.partition(":")
        attr, value = attr.strip(), value.strip()
        if attr == "kind":
            kind = KIND_VALUES.get(value)
            if kind is None:
                raise ValueError(f"unknown kind {value!r}{suggest(value, KINDS)}")
            return [i for i, r in enumerate(self.refs) if r.kind == kind]
        if attr not in ATTRIBUTES:
            raise ValueError(f"unknown selector {attr + ':'!r}"
                             f"{suggest(attr, ATTRIBUTES)} (or a node name or glob)")
        lo, hi = _int_range(attr, value)
        return [i for i, r in enumerate(self.refs)
                if (v := getattr(r, attr)) is not None and lo <= v <= hi]

    def select(self, selectors: Sequence[str]) -> list[str]:
        """Names chosen by ``selectors`` in plan order; ``(index, reason)`` as
        ``ValueError.args`` when one of them fails."""
        chosen = bytearray(len(self.refs))
        for k, sel in enumerate(selectors):
            if not isinstance(sel, str):
                raise ValueError(k, f"expected a node selector (text), got {describe(sel)}")
            drop = sel.startswith("!")
            if drop and k == 0:
                chosen = bytearray(b"\x01" * len(self.refs))
            try:
                hits = self.match(sel[1:] if drop else sel)
            except ValueError as e:
                raise ValueError(k, str(e)) from None
            flag = 0 if drop else 1
            for i in hits:
                chosen[i] = flag
        return [n for n, c in zip(self.names, chosen, strict=True) if c]


def _int_range(attr: str, value: str) -> tuple[int, int]:
    a, sep, b = value.partition("-")
    try:
        lo = int(a)
        hi = int(b) if sep else lo
    except ValueError:
        raise ValueError(f"{attr}: takes a number or a range like {attr}:0-3, "
                         f"got {value!r}") from None
    if lo < 0 or hi < lo:
        raise ValueError(f"{attr}: range {value!r} is empty or negative")
    return lo, hi


def _as_list(value: Any) -> list[Any] | None:
    if isinstance(value, str):
        return [value]
    if isinstance(value, list):
        return list(value)
    return None


def select(selectors: Fields | str | Sequence[str],
           nodes: Scenario | ContactPlan | Iterable[Any] | NodeIndex, *,
           where: Fields | None = None) -> list[str]:
    """Names of the nodes ``selectors`` choose, in plan order.

    ``selectors`` is one selector, a list of them, or a :class:`Fields` holding either
    (then errors name its file, line and field: the line of the failing item). For
    plain text, ``where`` (if given) is the field errors name. Raises
    :class:`SelectorError` for a name that is not a node or a selector matching nothing.
    """
    index = nodes if isinstance(nodes, NodeIndex) else NodeIndex(nodes)
    f = selectors if isinstance(selectors, Fields) else where
    value = selectors.value if isinstance(selectors, Fields) else selectors
    items = _as_list(value) if not isinstance(value, tuple) else list(value)
    if items is None:
        msg = f"expected a node selector or a list of them, got {describe(value)}"
        if f is None:
            raise SelectorError(msg, selector=str(value))
        raise SelectorError(msg, selector=str(value), source=f.source, line=f.line_of(),
                            field=f.field())
    if not items:
        msg = "selects no node (an empty list)"
        if f is None:
            raise SelectorError(msg, selector="")
        raise SelectorError(msg, selector="", source=f.source, line=f.line_of(),
                            field=f.field())
    try:
        return index.select(items)
    except ValueError as e:
        k, reason = e.args
        sel = str(items[k])
        if f is None:
            raise SelectorError(reason, selector=sel) from None
        if isinstance(f.value, list):
            raise SelectorError(reason, selector=sel, source=f.source, line=f.line_of(k),
                                field=f.field(k)) from None
        raise SelectorError(reason, selector=sel, source=f.source, line=f.line_of(),
                            field=f.field()) from None


def node_set(f: Fields, key: str,
             nodes: Scenario | ContactPlan | Iterable[Any] | NodeIndex, *,
             default: str = "all") -> list[str]:
    """``key`` of mapping ``f`` as a set of nodes, the form ``emulation.agents:`` takes:
    ``all`` (or true), ``none`` (or false), one selector or a list of them; absent (or
    empty) gives ``default`` ("all" or "none")."""
    index = nodes if isinstance(nodes, NodeIndex) else NodeIndex(nodes)
    v = f.get(key) if key in f else None
    if v is None:
        v = default
    if v is True or v == "all":
        return list(index.names)
    if v is False or v == "none":
        return []
    return select(f.child(key), index)
