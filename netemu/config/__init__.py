"""Reading configuration: the one line-tracking YAML loader and field validator used by
scenarios, app manifests, agent configs and ``expect:`` sections.

:mod:`netemu.config.yamlfile` parses YAML into dicts and lists that remember the line of
every key and item; :mod:`netemu.config.fields` checks their fields and raises
:class:`~netemu.errors.InputError` naming ``file:line``, the dotted field and the fix.
"""

from netemu.config.fields import Fields, describe, join_path, suggest
from netemu.config.yamlfile import (
    LineList,
    LineMap,
    load_yaml,
    parse_yaml,
    path_lines,
    read_text,
    with_lines,
)

__all__ = [
    "Fields",
    "LineList",
    "LineMap",
    "describe",
    "join_path",
    "load_yaml",
    "parse_yaml",
    "path_lines",
    "read_text",
    "suggest",
    "with_lines",
]
