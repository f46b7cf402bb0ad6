"""Checking the fields of a configuration document, with errors that say where.

A :class:`Fields` is one value of a document (usually a mapping) together with the file
it came from, its dotted path (``satellites[0].walker``) and its line. Its getters check
keys and types and raise :class:`~netemu.errors.InputError` naming ``file:line``, the
field and what was expected; a misspelt key or choice gets a did-you-mean suggestion.
Line numbers come from :mod:`netemu.config.yamlfile` documents; plain dicts and lists
built in code work too (errors then name the nearest line known).
"""

from __future__ import annotations

import difflib
import math
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

from netemu.config.yamlfile import LineList, LineMap, load_yaml, with_lines
from netemu.errors import InputError


def suggest(word: str, allowed: Sequence[str]) -> str:
    """``"; did you mean 'x'?"`` for the closest of ``allowed``, else the list of them."""
    close = difflib.get_close_matches(str(word), [str(a) for a in allowed], n=1, cutoff=0.6)
    if close:
        return f"; did you mean {close[0]!r}?"
    return f"; expected one of: {', '.join(str(a) for a in allowed)}"


def describe(value: Any) -> str:
    """A value as an error message names it: ``a mapping``, ``nothing``, ``str 'x'``."""
    if isinstance(value, dict):
        return "a mapping"
    if isinstance(value, list):
        return "a list"
    if value is None:
        return "nothing"
    return f"{type(value).__name__} {value!r}"


def join_path(path: str, key: str | int) -> str:
    """``join_path("a", "b") == "a.b"``, ``join_path("a", 0) == "a[0]"``."""
    if isinstance(key, int):
        return f"{path}[{key}]"
    return f"{path}.{key}" if path else key


class Fields:
    """One value of a configuration document, checked field by field.

    ``value`` is the value (a mapping for the key getters), ``source`` the file or other
    origin, ``path`` its dotted field path ("" for the document itself) and ``line`` the
    line errors about the value itself name (for a nested value: the line of its key).
    """

    def __init__(self, value: Any, *, source: str, path: str = "", line: int | None = None) -> None:
        self.value = value
        self.source = source
        self.path = path
        self.line = line if line is not None else (getattr(value, "line", 0) or None)

    @classmethod
    def load(cls, path: str | Path) -> Fields:
        """The document of a YAML (or JSON) file; an empty file is an error."""
        doc = load_yaml(path)
        if doc is None:
            raise InputError("the file is empty", source=str(path))
        return cls(doc, source=str(path), line=1)

    def __repr__(self) -> str:
        return f"Fields({self.source}:{self.line} {self.path or '<document>'})"

    # --- where ------------------------------------------------------------------------

    def field(self, key: str | int | None = None) -> str | None:
        """The dotted path of ``key`` (or of this value), None for the document itself."""
        if key is None:
            return self.path or None
        return join_path(self.path, key)

    def line_of(self, key: str | int | None = None) -> int | None:
        """The line of ``key`` (or of this value), the nearest known when it has none."""
        if key is None:
            return self.line
        if isinstance(self.value, (LineMap, LineList)) and self.value.line:
            return self.value.line_of(key)  # type: ignore[arg-type]
        return self.line

    def error(self, message: str, key: str | int | None = None) -> InputError:
        """An error about ``key`` of this value (or about the value itself)."""
        return InputError(message, source=self.source, line=self.line_of(key),
                          field=self.field(key))

    # --- structure --------------------------------------------------------------------

    def __contains__(self, key: object) -> bool:
        return isinstance(self.value, dict) and key in self.value

    def __iter__(self) -> Iterator[str]:
        return iter(self._map())

    def get(self, key: str, default: Any = None) -> Any:
        """The raw value of ``key``, unchecked."""
        return self._map().get(key, default)

    def is_none(self) -> bool:
        return self.value is None

    def child(self, key: str | int) -> Fields:
        """The value of ``key`` (a mapping key or a list index) as a :class:`Fields`;
        a missing key gives a Fields of ``None``."""
        if isinstance(key, int):
            seq = self._list()
            v = seq[key] if 0 <= key < len(seq) else None
        else:
            v = self._map().get(key)
        return Fields(v, source=self.source, path=join_path(self.path, key), line=self.line_of(key))

    def check_keys(self, allowed: Sequence[str], *, required: Sequence[str] = ()) -> Fields:
        """Refuse a value that is not a mapping, unknown keys (suggesting the closest
        allowed one) and missing required keys. Returns self, for chaining."""
        m = self._map()
        for k in m:
            if k not in allowed:
                raise self.error(f"unknown key {k!r}{suggest(k, allowed)}", k)
        for k in required:
            if k not in m:
                raise self._missing(k)
        return self

    def mapping(self, key: str, allowed: Sequence[str] | None = None, *,
                required: Sequence[str] = (), optional: bool = True) -> Fields:
        """``key``'s value, which must be a mapping (keys checked against ``allowed``);
        an absent key gives an empty mapping unless ``optional`` is false."""
        if key not in self._map():
            if not optional:
                raise self._missing(key)
            sub = Fields(LineMap(line=self.line_of(key) or 0), source=self.source,
                         path=join_path(self.path, key), line=self.line_of(key))
        else:
            sub = self.child(key)
            sub._map()
        if allowed is not None:
            sub.check_keys(allowed, required=required)
        return sub

    def items(self, key: str | None = None, *, required: bool = False,
              non_empty: bool = False) -> list[Fields]:
        """The items of a list (``key``'s value, or this value) as :class:`Fields`;
        an absent key or an empty value (``key:`` alone) gives no items."""
        if key is None:
            seq = self._list()
            where = self
        else:
            if key not in self._map() and required:
                raise self._missing(key)
            where = self.child(key)
            if where.value is None:
                if non_empty:
                    raise where.error(f"at least one {key} entry is needed")
                return []
            seq = where._list()
        if non_empty and not seq:
            raise where.error(f"at least one {key or 'list'} entry is needed")
        return [Fields(v, source=self.source, path=join_path(where.path, i),
                       line=where.line_of(i)) for i, v in enumerate(seq)]

    # --- typed getters ----------------------------------------------------------------

    def number(self, key: str, *, default: float | None = None, lo: float | None = None,
               hi: float | None = None, lo_open: bool = False, hi_open: bool = False,
               required: bool = False) -> float | None:
        """``key`` as a finite float within [lo, hi] (open ends if ``lo_open``/``hi_open``).
        Text that reads as a number is accepted (YAML 1.1 reads ``1e9`` as text)."""
        if not self._has(key, required):
            return default
        v = self._map()[key]
        if isinstance(v, bool):
            raise self.error(f"expected a number, got {v!r}", key)
        if isinstance(v, str):
            try:
                v = float(v.replace("_", ""))
            except ValueError:
                raise self.error(f"expected a number, got {v!r}", key) from None
        if not isinstance(v, (int, float)) or not math.isfinite(v):
            raise self.error(f"expected a number, got {describe(v)}", key)
        self._bounds(key, v, lo, hi, lo_open, hi_open)
        return float(v)

    def integer(self, key: str, *, default: int | None = None, lo: int | None = None,
                hi: int | None = None, required: bool = False) -> int | None:
        """``key`` as a whole number within [lo, hi]."""
        if not self._has(key, required):
            return default
        v = self._map()[key]
        if isinstance(v, bool) or not isinstance(v, int):
            raise self.error(f"expected a whole number, got {describe(v)}", key)
        if lo is not None and v < lo:
            raise self.error(f"must be ≥ {lo}, got {v}", key)
        if hi is not None and v > hi:
            raise self.error(f"must be ≤ {hi}, got {v}", key)
        return v

    def string(self, key: str, *, default: str | None = None,
               choices: Sequence[str] | None = None, required: bool = False) -> str | None:
        """``key`` as text, one of ``choices`` if given (a near miss gets a suggestion)."""
        if not self._has(key, required):
            return default
        v = self._map()[key]
        if not isinstance(v, str):
            raise self.error(f"expected text, got {describe(v)}", key)
        if choices is not None and v not in choices:
            raise self.error(f"{v!r} is not allowed{suggest(v, choices)}", key)
        return v

    def enum(self, key: str, choices: Sequence[str], *, default: str | None = None,
             required: bool = False) -> str | None:
        """``key`` as one of ``choices``."""
        return self.string(key, default=default, choices=choices, required=required)

    def boolean(self, key: str, *, default: bool | None = None,
                required: bool = False) -> bool | None:
        """``key`` as true or false (``key:`` alone gives ``default`` when that is None)."""
        if not self._has(key, required):
            return default
        v = self._map()[key]
        if v is None and default is None:
            return None
        if not isinstance(v, bool):
            raise self.error(f"expected true or false, got {describe(v)}", key)
        return v

    def string_list(self, key: str, *, default: Sequence[str] = (),
                    required: bool = False) -> list[str]:
        """``key`` as a list of text (a single text is a list of one)."""
        if not self._has(key, required):
            return list(default)
        v = self._map()[key]
        if isinstance(v, str):
            return [v]
        if not isinstance(v, list) or not all(isinstance(x, str) for x in v):
            raise self.error(f"expected a list of text, got {describe(v)}", key)
        return list(v)

    # --- helpers ----------------------------------------------------------------------

    def _map(self) -> LineMap:
        if not isinstance(self.value, dict):
            raise self.error(f"expected a mapping, got {describe(self.value)}")
        if not isinstance(self.value, LineMap):  # built in code, not read from a file
            self.value = with_lines(self.value, self.line or 0)
        return self.value

    def _list(self) -> LineList:
        if not isinstance(self.value, list):
            raise self.error(f"expected a list, got {describe(self.value)}")
        if not isinstance(self.value, LineList):
            self.value = with_lines(self.value, self.line or 0)
        return self.value

    def _missing(self, key: str) -> InputError:
        m = self.value
        line = (m.line if isinstance(m, LineMap) and m.line else None) or self.line
        return InputError(f"missing required key {key!r}", source=self.source, line=line,
                          field=join_path(self.path, key))

    def _has(self, key: str, required: bool) -> bool:
        if key in self._map():
            return True
        if required:
            raise self._missing(key)
        return False

    def _bounds(self, key: str, v: float, lo: float | None, hi: float | None,
                lo_open: bool, hi_open: bool) -> None:
        if lo is not None and (v < lo or (lo_open and v == lo)):
            raise self.error(f"must be {'>' if lo_open else '≥'} {lo:g}, got {v:g}", key)
        if hi is not None and (v > hi or (hi_open and v == hi)):
            raise self.error(f"must be {'<' if hi_open else '≤'} {hi:g}, got {v:g}", key)
