"""netemu.config: the line-tracking YAML loader and the field checker every config
reader uses; each error names file, line and dotted field."""

from __future__ import annotations

import pickle
import textwrap
from pathlib import Path

import pytest

from netemu.config import (
    Fields,
    LineList,
    LineMap,
    load_yaml,
    parse_yaml,
    path_lines,
    suggest,
    with_lines,
)
from netemu.errors import InputError

DOC = textwrap.dedent("""
    name: demo
    rate: 1e9
    count: 3
    flag: true
    mode: fast
    items:
      - {a: 1}
      - b: 2
        c: [x, y]
    nested:
      inner: 5
    """).lstrip("\n")


def doc() -> Fields:
    return Fields(parse_yaml(DOC, "d.yaml"), source="d.yaml", line=1)


def test_lines_of_keys_and_items() -> None:
    d = parse_yaml(DOC, "d.yaml")
    assert isinstance(d, LineMap) and d.line == 1
    assert d.line_of("items") == 6 and d.line_of("nested") == 10
    assert isinstance(d["items"], LineList) and d["items"].item_lines == [7, 8]
    assert d["items"][1].line_of("c") == 9
    assert d == {"name": "demo", "rate": "1e9", "count": 3, "flag": True, "mode": "fast",
                 "items": [{"a": 1}, {"b": 2, "c": ["x", "y"]}], "nested": {"inner": 5}}
    lines = path_lines(d)
    assert lines[("items", 1, "c")] == 9 and lines[("nested", "inner")] == 11
    assert pickle.loads(pickle.dumps(d)).line_of("nested") == 10


def test_yaml_errors_name_the_line(tmp_path: Path) -> None:
    with pytest.raises(InputError, match="duplicate key 'a'") as ei:
        parse_yaml("a: 1\nb: 2\na: 3\n", "x.yaml")
    assert ei.value.line == 3 and str(ei.value).startswith("x.yaml:3: ")
    with pytest.raises(InputError, match="not valid YAML") as ei:
        parse_yaml("a: [1,\n", "x.yaml")
    assert ei.value.line == 2
    with pytest.raises(InputError, match="cannot read"):
        load_yaml(tmp_path / "missing.yaml")
    (tmp_path / "j.json").write_text('{"a": {"b": [1, 2]}}')
    assert load_yaml(tmp_path / "j.json") == {"a": {"b": [1, 2]}}
    assert parse_yaml("", "e.yaml") is None


def test_typed_getters() -> None:
    f = doc()
    assert f.string("name") == "demo"
    assert f.number("rate") == 1e9  # YAML 1.1 reads 1e9 as text
    assert f.integer("count", lo=1, hi=3) == 3
    assert f.boolean("flag") is True
    assert f.enum("mode", ("fast", "slow")) == "fast"
    assert f.number("absent", default=2.5) == 2.5
    assert f.mapping("nested", ("inner",)).integer("inner") == 5
    assert f.mapping("absent", ("x",)).number("x", default=1.0) == 1.0
    items = f.items("items")
    assert [i.path for i in items] == ["items[0]", "items[1]"]
    assert items[1].string_list("c") == ["x", "y"]
    assert f.items("absent") == []


@pytest.mark.parametrize("call, line, field, words", [
    (lambda f: f.check_keys(("name", "rate", "count", "flag", "modes", "items", "nested")),
     5, "mode", ["unknown key 'mode'", "did you mean 'modes'"]),
    (lambda f: f.check_keys(("name",), required=()), 2, "rate", ["expected one of: name"]),
    (lambda f: f.integer("rate"), 2, "rate", ["expected a whole number"]),
    (lambda f: f.integer("count", hi=2), 3, "count", ["must be ≤ 2, got 3"]),
    (lambda f: f.number("count", lo=3, lo_open=True), 3, "count", ["must be > 3"]),
    (lambda f: f.number("name"), 1, "name", ["expected a number, got 'demo'"]),
    (lambda f: f.number("flag"), 4, "flag", ["expected a number, got True"]),
    (lambda f: f.string("count"), 3, "count", ["expected text, got int 3"]),
    (lambda f: f.enum("mode", ("fest", "slow")), 5, "mode", ["did you mean 'fest'"]),
    (lambda f: f.boolean("mode"), 5, "mode", ["expected true or false"]),
    (lambda f: f.number("missing", required=True), 1, "missing", ["missing required key"]),
    (lambda f: f.mapping("name"), 1, "name", ["expected a mapping, got str 'demo'"]),
    (lambda f: f.items("nested"), 10, "nested", ["expected a list, got a mapping"]),
    (lambda f: f.items("items")[1].check_keys(("b",)), 9, "items[1].c", ["unknown key 'c'"]),
    (lambda f: f.items("items")[0].integer("a", lo=2), 7, "items[0].a", ["must be ≥ 2"]),
    (lambda f: f.mapping("nested").string("inner"), 11, "nested.inner", ["expected text"]),
    (lambda f: f.items("items")[1].child("c").items()[1].check_keys(()), 9, "items[1].c[1]",
     ["expected a mapping"]),
    (lambda f: f.mapping("nested", ("inner", "outer"), required=("outer",)), 11,
     "nested.outer", ["missing required key 'outer'"]),
])
def test_errors_name_file_line_and_field(call, line: int, field: str, words: list[str]) -> None:
    with pytest.raises(InputError) as ei:
        call(doc())
    e = ei.value
    assert (e.source, e.line, e.field) == ("d.yaml", line, field), str(e)
    for w in words:
        assert w in str(e), str(e)
    assert str(e).startswith(f"d.yaml:{line}: {field}: ")


def test_values_built_in_code() -> None:
    f = Fields({"a": {"b": "x"}, 1: 2}, source="<code>", path="sec", line=7)
    with pytest.raises(InputError) as ei:
        f.mapping("a").integer("b")
    assert (ei.value.line, ei.value.field) == (7, "sec.a.b")
    assert "1" in f
    assert with_lines([1, 2], 3).item_lines == [3, 3]
    g = Fields(None, source="s", path="apps", line=4)
    assert g.is_none()
    with pytest.raises(InputError, match="expected a mapping, got nothing"):
        g.check_keys(())


def test_load_document(tmp_path: Path) -> None:
    p = tmp_path / "c.yaml"
    p.write_text("a: 1\n")
    assert Fields.load(p).integer("a") == 1
    (tmp_path / "e.yaml").write_text("")
    with pytest.raises(InputError, match="empty"):
        Fields.load(tmp_path / "e.yaml")


def test_suggest() -> None:
    assert suggest("lat_dg", ("lat_deg", "lon_deg")) == "; did you mean 'lat_deg'?"
    assert suggest("zzz", ("a", "b")) == "; expected one of: a, b"
