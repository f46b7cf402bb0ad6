"""One reader for "a scenario or a plan file" (netemu.plan.source), and compute_plan's
errors for a window it cannot plan."""

from __future__ import annotations

from pathlib import Path

import pytest

from netemu.errors import InputError
from netemu.plan.contacts import Contact, ContactPlan, Node
from netemu.plan.scenario import load_scenario
from netemu.plan.schedule import PlanError, compute_plan
from netemu.plan.source import PlanSource, is_scenario_path, load_plan_source

ROOT = Path(__file__).resolve().parents[2]
TINY = ROOT / "topologies" / "tiny.yaml"


def _plan_file(tmp_path: Path) -> Path:
    sc = load_scenario(TINY)
    p = tmp_path / "tiny.ion"
    p.write_text(compute_plan(sc, duration_s=1200).to_ion())
    return p


def test_scenario_source() -> None:
    src = PlanSource.open(TINY)
    assert src.scenario is not None and src.file_plan is None
    assert src.duration_s == src.scenario.duration_s
    assert src.time_scale == src.scenario.time_scale
    plan = src.plan(start_s=0, duration_s=600)
    assert plan.contacts and all(c.start_s < 600 for c in plan.contacts)
    sc, plan2 = load_plan_source(TINY, duration_s=600)
    assert sc is not None and len(plan2) == len(plan)
    assert is_scenario_path("x.YAML") and is_scenario_path("a.yml") and not is_scenario_path("a.ion")


def test_plan_file_source(tmp_path: Path) -> None:
    src = PlanSource.open(_plan_file(tmp_path))
    assert src.scenario is None and src.duration_s is None and src.time_scale == 1.0
    whole = src.plan(start_s=300)
    assert whole is src.file_plan  # a plan file is used as is unless windowed
    part = src.plan(start_s=300, duration_s=300, window_file_plan=True)
    assert part.contacts and all(c.end_s > 300 and c.start_s < 600 for c in part.contacts)
    assert len(part) < len(whole)
    assert {c.kind for c in whole.contacts} == {"plan"}
    assert {c.kind for c in whole.with_link_kinds().contacts} == {"isl", "gsl"}


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(InputError, match="no such file"):
        PlanSource.open(tmp_path / "nowhere.yaml")


def test_with_link_kinds_leaves_unknown_nodes() -> None:
    import datetime as dt

    nodes = {"a": Node("a", 1, "satellite", 0), "b": Node("b", 2, "ground", 1),
             "c": Node("c", 3, "other", 0)}
    plan = ContactPlan(dt.datetime(2026, 1, 1, tzinfo=dt.timezone.utc), nodes, [
        Contact("a", "b", 0, 10, 1e6, 0.01), Contact("a", "c", 0, 10, 1e6, 0.01)])
    assert [c.kind for c in plan.with_link_kinds().contacts] == ["gsl", "plan"]


@pytest.mark.parametrize("kwargs, field, words", [
    ({"duration_s": 0}, "duration_s", "must be > 0"),
    ({"duration_s": float("nan")}, "duration_s", "must be > 0"),
    ({"start_s": 1e9}, "start_s", "after the scenario's end"),
    ({"start_s": float("inf"), "duration_s": 10}, "start_s", "finite"),
    ({"duration_s": 10, "step_s": 0}, "step_s", "step must be > 0"),
])
def test_compute_plan_refuses_bad_window(kwargs: dict, field: str, words: str) -> None:
    sc = load_scenario(TINY)
    with pytest.raises(PlanError) as ei:
        compute_plan(sc, **kwargs)
    assert isinstance(ei.value, InputError)
    assert ei.value.field == field and ei.value.source == str(TINY)
    assert words in str(ei.value)
