"""YAML documents that remember where each key and item came from.

:func:`load_yaml` / :func:`parse_yaml` build ordinary dicts and lists, but of the
subclasses :class:`LineMap` and :class:`LineList`, which also hold the 1-based line of
the collection and of each key or item; error messages can then name ``file:line``. A
syntax error or a duplicate key is an :class:`~netemu.errors.InputError` naming the line.
JSON documents load too (YAML reads them).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import yaml

from netemu.errors import InputError


class LineMap(dict[str, Any]):
    """A mapping that remembers its own line and each key's line (1-based).

    Keys are always text: YAML ``1: x`` gives the key ``"1"``.
    """

    def __init__(self, data: Mapping[str, Any] | Iterable[tuple[str, Any]] = (), *, line: int = 0,
                 key_lines: dict[str, int] | None = None) -> None:
        super().__init__(data)
        self.line = line
        self.key_lines: dict[str, int] = dict(key_lines or {})

    def line_of(self, key: str) -> int:
        """The line of ``key``, or the mapping's own line if it has none."""
        return self.key_lines.get(key, self.line)


class LineList(list[Any]):
    """A sequence that remembers its own line and each item's line (1-based)."""

    def __init__(self, data: Iterable[Any] = (), *, line: int = 0,
                 item_lines: list[int] | None = None) -> None:
        super().__init__(data)
        self.line = line
        self.item_lines: list[int] = list(item_lines) if item_lines is not None else []

    def line_of(self, index: int) -> int:
        """The line of item ``index``, or the list's own line if it has none."""
        if 0 <= index < len(self.item_lines):
            return self.item_lines[index]
        return self.line


class _Loader(yaml.SafeLoader):
    """SafeLoader building :class:`LineMap`/:class:`LineList`, refusing duplicate keys."""


def _construct_mapping(loader: _Loader, node: yaml.MappingNode) -> LineMap:
    loader.flatten_mapping(node)
    m = LineMap(line=node.start_mark.line + 1)
    for k_node, v_node in node.value:
        key = loader.construct_object(k_node, deep=True)
        if not isinstance(key, (str, int, float, bool)) or key is None:
            raise yaml.constructor.ConstructorError(
                None, None, "a mapping key must be a plain word", k_node.start_mark
            )
        key = str(key)
        if key in m:
            raise yaml.constructor.ConstructorError(
                None, None, f"duplicate key {key!r}", k_node.start_mark
            )
        m[key] = loader.construct_object(v_node, deep=True)
        m.key_lines[key] = k_node.start_mark.line + 1
    return m


def _construct_sequence(loader: _Loader, node: yaml.SequenceNode) -> LineList:
    return LineList(
        (loader.construct_object(v, deep=True) for v in node.value),
        line=node.start_mark.line + 1,
        item_lines=[v.start_mark.line + 1 for v in node.value],
    )


def _construct_timestamp(loader: _Loader, node: yaml.ScalarNode) -> Any:
    """A YAML timestamp, or its text when it names no real time (``2026-13-01``): the
    field's own check then names the file, line and field instead of a traceback."""
    try:
        return loader.construct_yaml_timestamp(node)
    except ValueError:
        return loader.construct_scalar(node)


_Loader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _construct_mapping)
_Loader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_SEQUENCE_TAG, _construct_sequence)
_Loader.add_constructor("tag:yaml.org,2002:timestamp", _construct_timestamp)


def parse_yaml(text: str, source: str) -> Any:
    """Parse YAML (or JSON) text into :class:`LineMap`/:class:`LineList`; ``source`` names
    the text in errors. An empty document is ``None``."""
    try:
        return yaml.load(text, Loader=_Loader)  # noqa: S506 - a SafeLoader subclass
    except yaml.MarkedYAMLError as e:
        mark = e.problem_mark or e.context_mark
        line = mark.line + 1 if mark is not None else None
        msg = " ".join(x for x in (e.context, e.problem) if x) or str(e)
        raise InputError(f"not valid YAML: {msg}", source=source, line=line) from None
    except yaml.YAMLError as e:
        raise InputError(f"not valid YAML: {e}", source=source) from None


def read_text(path: str | Path) -> str:
    """The text of an input file (UTF-8); an unreadable or binary file is an
    :class:`~netemu.errors.InputError` naming it."""
    p = Path(path)
    try:
        return p.read_text()
    except OSError as e:
        raise InputError(f"cannot read: {e.strerror}", source=str(p)) from None
    except UnicodeDecodeError as e:
        raise InputError(f"cannot read: not a text file (byte {e.start} is not UTF-8)",
                         source=str(p)) from None


def load_yaml(path: str | Path) -> Any:
    """Read and parse a YAML (or JSON) file; see :func:`parse_yaml`."""
    return parse_yaml(read_text(path), str(path))


def with_lines(value: Any, line: int) -> Any:
    """``value`` as a :class:`LineMap`/:class:`LineList` (at ``line``) if it is a plain
    dict or list built in code; anything else unchanged."""
    if isinstance(value, dict) and not isinstance(value, LineMap):
        return LineMap({str(k): v for k, v in value.items()}, line=line)
    if isinstance(value, list) and not isinstance(value, LineList):
        return LineList(value, line=line, item_lines=[line] * len(value))
    return value


def path_lines(doc: Any, base: tuple[Any, ...] = ()) -> dict[tuple[Any, ...], int]:
    """``{path tuple: line}`` for every mapping key and list item under ``doc`` (a key's
    line for a mapping entry, an item's line for a list entry), ``base`` prefixed."""
    out: dict[tuple[Any, ...], int] = {}

    def walk(v: Any, path: tuple[Any, ...]) -> None:
        if isinstance(v, LineMap):
            for k, item in v.items():
                out[path + (k,)] = v.line_of(k)
                walk(item, path + (k,))
        elif isinstance(v, LineList):
            for i, item in enumerate(v):
                out[path + (i,)] = v.line_of(i)
                walk(item, path + (i,))

    line = getattr(doc, "line", 0)
    if line:
        out[base] = line
    walk(doc, base)
    return out
