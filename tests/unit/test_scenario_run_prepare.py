"""Everything a run needs is checked before anything is built: a typo in a scenario's
apps:, expect:, emulation: or capture: section costs seconds, names file and line."""

from __future__ import annotations

from pathlib import Path

import pytest

from netemu.errors import InputError
from netemu.run.runner import RunOptions, ScenarioRun

ROOT = Path(__file__).resolve().parents[2]


def _prepare(tmp_path: Path, extra: str, **opts):
    text = (ROOT / "topologies" / "tiny.yaml").read_text() + "\n" + extra
    p = tmp_path / "s.yaml"
    p.write_text(text)
    return ScenarioRun(RunOptions(p, echo=lambda s: None, **opts)).prepare(), p


def test_tiny_with_apps_prepares(tmp_path) -> None:
    prep, _ = _prepare(tmp_path, "emulation: {duration_s: 120, time_scale: 10}\n"
                       "apps: [eo-filter, downlink]\n"
                       "expect:\n  - {metric: delivery_ratio, op: '>=', value: 0.5}\n"
                       "capture: [sat-0:sat-1]\n")
    assert prep.window.duration_s == 120 and prep.window.time_scale == 10
    assert sorted(i.key for i in prep.apps) == [
        "downlink.bangalore", "downlink.kashi", "eo-filter.sat-0", "eo-filter.sat-1",
        "eo-filter.sat-2"]
    assert prep.routing == {"algorithm": "cgr"}
    assert prep.captures == [("sat-0", "sat-1")]
    assert len(prep.expectations) == 1
    assert {c.kind for c in prep.plan.contacts} == {"isl", "gsl"}


def test_no_isl_drops_every_isl_from_the_plan(tmp_path) -> None:
    prep, _ = _prepare(tmp_path, "emulation: {duration_s: 600}\n", isl=False)
    assert prep.plan.contacts and {c.kind for c in prep.plan.contacts} == {"gsl"}


@pytest.mark.parametrize("extra, words, field", [
    ("apps: [eo-filtre]\n", "no app named 'eo-filtre'", "apps[0]"),
    ("apps: [{name: downlink, nodes: [moon-*]}]\n", "matches no node", "apps[0].nodes"),
    ("expect:\n  - {metric: delivery_ration, op: '>=', value: 1}\n", "delivery_ratio",
     "expect[0].metric"),
    ("expect:\n  - {metric: delivery_ratio, op: '=>', value: 1}\n", "not one of",
     "expect[0].op"),
    ("emulation: {duration_s: 99999}\n", "ends after", "emulation.duration_s"),
    ("routing: {algorithm: telepathy}\n", "unknown routing algorithm", "routing.algorithm"),
    ("capture: [sat-0:moon]\n", "no node named 'moon'", "capture"),
])
def test_bad_sections_are_refused_with_file_line_and_field(tmp_path, extra, words, field):
    with pytest.raises(InputError) as e:
        _prepare(tmp_path, extra)
    assert words in str(e.value)
    assert e.value.field == field
    assert e.value.source and e.value.source.endswith("s.yaml")
    assert e.value.line is not None and e.value.line > 20  # the appended section's lines
