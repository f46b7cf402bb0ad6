"""Node selectors: names, globs, kinds, planes, groups, exclusions, in plan order, and
errors that name the file, line and field of the selector that failed."""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest

from netemu.config import Fields
from netemu.errors import InputError
from netemu.plan.contacts import ContactPlan
from netemu.plan.scenario import Scenario, load_scenario
from netemu.plan.selectors import NodeIndex, NodeRef, SelectorError, node_set, select
from netemu.run.apps.placement import NodeInfo, select_nodes

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def grid(tmp_path_factory: pytest.TempPathFactory) -> Scenario:
    """3 planes × 4 satellites, one more group of 2, three ground stations."""
    p = tmp_path_factory.mktemp("sel") / "grid.yaml"
    p.write_text(textwrap.dedent("""
        epoch: 2026-06-01T00:00:00Z
        duration_s: 600
        satellites:
          - walker: {planes: 3, sats_per_plane: 4, altitude_km: 550, inclination_deg: 53}
          - name_prefix: geo
            walker: {planes: 1, sats_per_plane: 2, altitude_km: 35786, inclination_deg: 0}
        ground_stations:
          - {name: kashi, lat_deg: 39.5, lon_deg: 76.0}
          - {name: sanya, lat_deg: 18.3, lon_deg: 109.5}
          - {name: svalsat, lat_deg: 78.2, lon_deg: 15.4, ipn: 100}
        """).lstrip())
    return load_scenario(p)


def test_names_globs_and_kinds_come_back_in_plan_order(grid: Scenario) -> None:
    assert select("sanya", grid) == ["sanya"]
    assert select(["sanya", "kashi"], grid) == ["kashi", "sanya"]  # plan order, not list order
    assert select("sat-1-*", grid) == ["sat-1-0", "sat-1-1", "sat-1-2", "sat-1-3"]
    assert select("kind:ground", grid) == ["kashi", "sanya", "svalsat"]
    assert select("kind:satellite", grid) == grid.node_names()[:14]
    assert select(["kashi", "kind:ground"], grid) == ["kashi", "sanya", "svalsat"]  # once each


def test_planes_slots_groups_and_ipn(grid: Scenario) -> None:
    assert select("plane:2", grid) == ["sat-2-0", "sat-2-1", "sat-2-2", "sat-2-3"]
    # plane 0 of both groups: the Walker group's first plane and the GEO pair
    assert select("plane:0", grid) == ["sat-0-0", "sat-0-1", "sat-0-2", "sat-0-3",
                                       "geo-0", "geo-1"]
    assert select("plane:1-2", grid) == [f"sat-{p}-{s}" for p in (1, 2) for s in range(4)]
    assert select(["group:0", "!slot:1-3"], grid) == ["sat-0-0", "sat-1-0", "sat-2-0"]
    assert select("group:1", grid) == ["geo-0", "geo-1"]
    assert select("ipn:100", grid) == ["svalsat"]
    assert select("ipn:1-2", grid) == ["sat-0-0", "sat-0-1"]


def test_exclusions_apply_in_order(grid: Scenario) -> None:
    assert select(["kind:ground", "!sanya"], grid) == ["kashi", "svalsat"]
    # a list starting with an exclusion starts from every node
    assert select(["!kind:satellite", "!kashi"], grid) == ["sanya", "svalsat"]
    assert select(["kind:ground", "!kind:ground", "sanya"], grid) == ["sanya"]


def test_apps_selectors_select_the_same_nodes(grid: Scenario) -> None:
    """A superset of app placement's selectors: every form placement accepts gives the
    same nodes here."""
    infos = [NodeInfo(r.name, r.kind) for r in NodeIndex(grid).refs]
    for sels in (["all"], ["*"], ["satellites"], ["sats"], ["ground"], ["stations"],
                 ["ground-stations"], ["grounds"], ["satellite"], ["sat-0-*"],
                 ["kashi", "geo-?"], ["sat-[12]-0"]):
        assert select(sels, infos) == select_nodes(sels, infos), sels
        assert select(sels, grid) == select_nodes(sels, infos), sels


def test_a_node_name_wins_over_a_kind_word() -> None:
    nodes = [NodeRef("sat-1", "satellite"), NodeRef("ground", "satellite"),
             NodeRef("gs", "ground")]
    assert select("ground", nodes) == ["ground"]
    assert select("kind:ground", nodes) == ["gs"]


def test_contact_plans_and_plain_lists_are_node_sources() -> None:
    plan = ContactPlan.from_ion("a contact +0 +10 1 2 1000\na contact +0 +10 2 1 1000\n")
    assert select("ipn:*", plan) == ["ipn:1", "ipn:2"]
    assert select("ipn:2", plan) == ["ipn:2"]  # a node name wins over the ipn: form
    assert select("kind:other", plan) == ["ipn:1", "ipn:2"]


def _section(text: str, key: str = "sel") -> Fields:
    from netemu.config import parse_yaml

    doc = parse_yaml(textwrap.dedent(text).lstrip(), "scn.yaml")
    return Fields(doc, source="scn.yaml", line=1).child(key)


@pytest.mark.parametrize(("text", "line", "field", "words"), [
    ("sel: [kashi, sanyaa]\n", 1, "sel[1]", ["no node named 'sanyaa'", "did you mean 'sanya'"]),
    ("sel:\n  - kashi\n  - sat-9-*\n", 3, "sel[1]", ["'sat-9-*' matches no node"]),
    ("sel: kind:grund\n", 1, "sel", ["unknown kind 'grund'", "did you mean 'ground'"]),
    ("sel: [plane:7]\n", 1, "sel[0]", ["'plane:7' matches no node"]),
    ("sel: [plane:x]\n", 1, "sel[0]", ["plane: takes a number or a range"]),
    ("sel: [plane:3-1]\n", 1, "sel[0]", ["empty"]),
    ("sel: [orbit:1]\n", 1, "sel[0]", ["unknown selector 'orbit:'"]),
    ("x: 1\nsel: []\n", 2, "sel", ["selects no node"]),
    ("sel: {a: 1}\n", 1, "sel", ["expected a node selector"]),
    ("sel: [kashi, 3]\n", 1, "sel[1]", ["expected a node selector (text), got int 3"]),
    ("sel: ['!nowhere']\n", 1, "sel[0]", ["no node named 'nowhere'"]),
])
def test_errors_name_file_line_and_field(grid: Scenario, text: str, line: int, field: str,
                                         words: list[str]) -> None:
    with pytest.raises(SelectorError) as e:
        select(_section(text), grid)
    err = e.value
    assert isinstance(err, InputError)
    assert (err.source, err.line, err.field) == ("scn.yaml", line, field)
    for w in words:
        assert w in err.message
    assert str(err).startswith(f"scn.yaml:{line}: {field}: ")


def test_plain_selectors_raise_with_the_selector_named(grid: Scenario) -> None:
    with pytest.raises(SelectorError) as e:
        select(["kashi", "mars"], grid)
    assert e.value.selector == "mars" and e.value.source is None


def test_agents_take_all_none_or_selectors(grid: Scenario) -> None:
    def agents(text: str) -> list[str]:
        from netemu.config import parse_yaml

        doc = parse_yaml(textwrap.dedent(text).lstrip(), "scn.yaml")
        return node_set(Fields(doc, source="scn.yaml", line=1).child("emulation"), "agents",
                        grid)

    everyone = grid.node_names()
    assert agents("emulation: {agents: all}\n") == everyone
    assert agents("emulation: {agents: true}\n") == everyone
    assert agents("emulation: {}\n") == everyone
    assert agents("emulation: {agents: none}\n") == []
    assert agents("emulation: {agents: false}\n") == []
    assert agents("emulation: {agents: [kind:ground, sat-0-0]}\n") == ["sat-0-0", "kashi",
                                                                       "sanya", "svalsat"]
    with pytest.raises(InputError, match=r"scn.yaml:4: emulation.agents\[1\]: no node named"):
        agents("emulation:\n  agents:\n    - kashi\n    - kahsi\n")


def test_shell_one_selects_quickly() -> None:
    sc = load_scenario(ROOT / "topologies" / "starlink-shell1.yaml")
    index = NodeIndex(sc)
    assert len(select("kind:ground", index)) == 10
    assert len(select(["plane:0-35"], index)) == 36 * 22
    assert select(["sl-71-21", "tokyo"], index) == ["sl-71-21", "tokyo"]
