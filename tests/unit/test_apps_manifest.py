"""Manifests and the scenario's apps: section: what users write, and the errors they see."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from netemu.config import Fields, parse_yaml
from netemu.errors import InputError
from netemu.run.apps import NodeInfo, load_manifest, plan_apps, select_nodes

NODES = [
    NodeInfo("sat-1", "satellite"),
    NodeInfo("sat-2", "satellite"),
    NodeInfo("sat-3", "satellite"),
    NodeInfo("gs-kashi", "ground"),
    NodeInfo("gs-svalbard", "ground"),
]


def _app(tmp_path: Path, name: str, text: str) -> Path:
    d = tmp_path / "apps" / name
    d.mkdir(parents=True)
    (d / "manifest.yaml").write_text(text)
    return d


def test_manifest_defaults_and_fields(tmp_path: Path) -> None:
    d = _app(
        tmp_path,
        "probe",
        "name: probe\ncommand: [python, main.py, --x]\nresources: {cpus: 0.5, memory_mb: 64}\n"
        "nodes: satellites\nenvironment: {A: 1, B: hello}\n",
    )
    m = load_manifest(d)
    assert m.command == ("python", "main.py", "--x")
    assert m.resources.cpus == 0.5 and m.resources.memory_bytes == 64 << 20
    assert m.nodes == ("satellites",)
    assert m.environment == {"A": "1", "B": "hello"}
    assert m.mode == "process"


@pytest.mark.parametrize(
    "text, line, field, words",
    [
        ("name: x\n", None, None, "command is required"),
        ("command: [a]\nresources:\n  cpus: -1\n", 3, "resources.cpus", "must be ≥ 0.01"),
        ("command: [a]\nresources: {memory_mb: 1.5}\n", 2, "resources.memory_mb", "whole number"),
        ("command: [a]\nmode: vm\n", 2, "mode", "process, container"),
        ("command: [a]\ncomand: [b]\n", 2, "comand", "unknown key"),
        ("command: [a]\ncontainerfile: nope\n", 2, "containerfile", "not found"),
        ("command: [a\n", 2, None, "not valid YAML"),
        ("command: [a]\nenvironment: {1BAD: x}\n", 2, "environment.1BAD", "variable name"),
        ("command: [a]\nimage: img.tar\n", 2, "image", "image archive not found"),
        ("command: [a]\npull: true\n", 2, "pull", "pull without image"),
        ("command: [a]\nmode: process\nimage: quay.io/x/y:1\n", 3, "image", "mode: container"),
        ("command: [a]\nimage: 'two words'\n", 2, "image", "image reference"),
        ("command: [a]\nmodel_io: {input: [1], output: [1]}\n", 2, "model_io", "without model"),
    ],
)
def test_manifest_errors_name_file_line_field(tmp_path, text, line, field, words) -> None:
    d = _app(tmp_path, "bad", text)
    with pytest.raises(InputError) as e:
        load_manifest(d)
    msg = str(e.value)
    assert str(d / "manifest.yaml") in msg
    assert words in msg
    if line is not None:
        assert e.value.line == line
    if field is not None:
        assert e.value.field == field


def test_manifest_image_sources(tmp_path) -> None:
    """image: a local tag or registry image (pulled only with pull: true), or an archive in
    the app folder for podman load; an image makes the app a container."""
    d = _app(tmp_path, "tagged", "command: [a]\nimage: localhost/mine:1\nnodes: all\n")
    m = load_manifest(d)
    assert m.mode == "container" and m.image is not None
    assert m.image.reference == "localhost/mine:1" and m.image.archive is None
    assert not m.image.pull and m.image.where == f"{d / 'manifest.yaml'}:2"
    d = _app(tmp_path, "pulled", "command: [a]\nimage: quay.io/org/app:2\npull: true\n")
    assert load_manifest(d).image.pull
    d = _app(tmp_path, "loaded", "command: [a]\nimage: app.tar\n")
    (d / "app.tar").write_bytes(b"")
    m = load_manifest(d)
    assert m.image.archive == (d / "app.tar").resolve()
    with pytest.raises(InputError, match="runs as a container, not as a process"):
        plan_apps([{"name": "tagged", "mode": "process"}], NODES, apps_dir=tmp_path / "apps")
    d = _app(tmp_path, "loadpull", "command: [a]\nimage: app.tar\npull: true\n")
    (d / "app.tar").write_bytes(b"")
    with pytest.raises(InputError, match="never pulled"):
        load_manifest(d)


def test_selectors() -> None:
    assert select_nodes(["satellites"], NODES) == ["sat-1", "sat-2", "sat-3"]
    assert select_nodes(["ground"], NODES) == ["gs-kashi", "gs-svalbard"]
    assert select_nodes(["sat-[12]", "gs-kashi"], NODES) == ["sat-1", "sat-2", "gs-kashi"]
    assert len(select_nodes(["all"], NODES)) == 5
    with pytest.raises(KeyError):
        select_nodes(["moon-*"], NODES)


def test_scenario_overrides_and_params(tmp_path: Path) -> None:
    _app(
        tmp_path,
        "probe",
        "command: [python, main.py]\nnodes: [satellites]\nargs: {sat-2: [--special]}\n"
        "resources: {cpus: 1, memory_mb: 128}\n",
    )
    section = [{"name": "probe", "nodes": ["sat-*"], "resources": {"cpus": 0.25},
                "params": {"rate": 3}}]
    inst = plan_apps(section, NODES, apps_dir=tmp_path / "apps")
    assert [i.node for i in inst] == ["sat-1", "sat-2", "sat-3"]
    assert inst[1].argv == ("python", "main.py", "--special")
    assert inst[0].argv == ("python", "main.py")
    assert inst[0].resources.cpus == 0.25 and inst[0].resources.memory_mb == 128
    assert json.loads(inst[0].environment["NETEMU_APP_PARAMS"]) == {"rate": 3}
    # mapping form
    inst = plan_apps({"probe": {"nodes": "gs-kashi"}}, NODES, apps_dir=tmp_path / "apps")
    assert [i.key for i in inst] == ["probe.gs-kashi"]


def test_scenario_errors_name_the_entry(tmp_path: Path) -> None:
    _app(tmp_path, "probe", "command: [x]\nnodes: satellites\n")
    with pytest.raises(InputError, match="no app named 'nope'"):
        plan_apps(["nope"], NODES, apps_dir=tmp_path / "apps", source="s.yaml")
    doc = parse_yaml("name: s\napps:\n  - name: probe\n\n    nodes: [moon]\n", "s.yaml")
    section = Fields(doc["apps"], source="s.yaml", path="apps", line=2)
    with pytest.raises(InputError) as e:
        plan_apps(section, NODES, apps_dir=tmp_path / "apps")
    assert "matches no node" in str(e.value) and e.value.line == 5
    assert e.value.field == "apps[0].nodes" and e.value.source == "s.yaml"
    with pytest.raises(InputError, match="unknown key"):
        plan_apps([{"name": "probe", "cpu": 1}], NODES, apps_dir=tmp_path / "apps")
