"""The ``traffic:`` section: flows between selected nodes, their send schedules (Poisson
counts within statistical bounds, periodic times exact, the same every run), and clear
errors naming file, line and field."""

from __future__ import annotations

import itertools
import math
import textwrap
from pathlib import Path

import numpy as np
import pytest

from netemu.config import Fields, parse_yaml
from netemu.errors import InputError
from netemu.plan.scenario import Scenario, load_scenario
from netemu.plan.traffic import (
    BLOCK_S,
    DEFAULT_SEED,
    Flow,
    Send,
    TrafficSpec,
    flows,
    flows_from,
    node_sends,
    parse_traffic,
)

ROOT = Path(__file__).resolve().parents[2]

BASE = """
epoch: 2026-06-01T00:00:00Z
duration_s: 7200
satellites:
  - walker: {planes: 2, sats_per_plane: 3, altitude_km: 550, inclination_deg: 53}
ground_stations:
  - {name: kashi, lat_deg: 39.5, lon_deg: 76.0}
  - {name: sanya, lat_deg: 18.3, lon_deg: 109.5}
  - {name: miyun, lat_deg: 40.4, lon_deg: 116.9}
  - {name: svalsat, lat_deg: 78.2, lon_deg: 15.4}
"""
BASE_LINES = BASE.lstrip("\n").count("\n")  # the traffic section starts on line BASE_LINES + 1


def scenario(tmp_path: Path, traffic: str) -> Scenario:
    p = tmp_path / "s.yaml"
    p.write_text(BASE.lstrip("\n") + textwrap.dedent(traffic).lstrip("\n"))
    return load_scenario(p)


def spec_of(tmp_path: Path, traffic: str) -> TrafficSpec:
    spec = scenario(tmp_path, traffic).traffic
    assert spec is not None
    return spec


def one_flow(tmp_path: Path, **keys: object) -> Flow:
    body = "".join(f"      {k}: {v}\n" for k, v in keys.items())
    spec = spec_of(tmp_path, "traffic:\n  flows:\n    - name: f\n      from: kashi\n"
                             "      to: sanya\n" + body)
    (fl,) = flows(spec)
    return fl


# --- flows -----------------------------------------------------------------------------


def test_a_scenario_carries_its_traffic(tmp_path: Path) -> None:
    sc = scenario(tmp_path, """
        traffic:
          seed: 7
          flows:
            - name: telemetry
              from: kind:satellite
              to: kashi
              interval_s: 10
              size_bytes: 200
              priority: expedited
              lifetime_s: 60
            - name: files
              from: [kashi, sanya]
              to: [miyun, svalsat]
              pairs: one-to-one
              rate_per_s: 0.5
              size_bytes: [1000, 5000]
              priority: 0
        """)
    spec = sc.traffic
    assert spec is not None and spec.seed == 7
    fl = flows(spec)
    assert [f.key for f in fl[:2]] == ["telemetry:sat-0-0>kashi", "telemetry:sat-0-1>kashi"]
    assert len(fl) == 6 + 2
    assert [(f.src, f.dst) for f in fl[6:]] == [("kashi", "miyun"), ("sanya", "svalsat")]
    assert [f.id for f in fl] == list(range(8))
    tel, files = fl[0], fl[6]
    assert (tel.pattern, tel.interval_s, tel.size_bytes, tel.priority, tel.lifetime_s) == \
        ("periodic", 10.0, (200, 200), 2, 60.0)
    assert (files.pattern, files.rate_per_s, files.size_bytes, files.priority) == \
        ("poisson", 0.5, (1000, 5000), 0)
    assert (files.start_s, files.end_s, files.lifetime_s) == (0.0, 7200.0, 3600.0)  # defaults
    assert sc.sections["traffic"]["seed"] == 7  # the raw section stays readable
    assert flows_from(spec, "kashi") == [files]
    assert flows_from(spec, "svalsat") == []


def test_a_list_is_a_section_with_the_default_seed(tmp_path: Path) -> None:
    spec = spec_of(tmp_path, """
        traffic:
          - {name: a, from: kashi, to: sanya, rate_per_s: 1, size_bytes: 10}
        """)
    assert spec.seed == DEFAULT_SEED and len(flows(spec)) == 1


def test_all_pairs_leave_out_a_node_sending_to_itself(tmp_path: Path) -> None:
    spec = spec_of(tmp_path, """
        traffic:
          - {name: gg, from: kind:ground, to: kind:ground, rate_per_s: 1, size_bytes: 10}
        """)
    pairs = [(f.src, f.dst) for f in flows(spec)]
    assert len(pairs) == 4 * 3 and all(s != d for s, d in pairs)


def test_random_pairs_give_exactly_n_flows_spread_over_the_pairs(tmp_path: Path) -> None:
    text = """
        traffic:
          seed: {seed}
          flows:
            - {{name: gg, from: kind:ground, to: kind:ground, pairs: random {n},
               rate_per_s: 1, size_bytes: 10}}
        """
    fl = flows(spec_of(tmp_path, text.format(seed=1, n=1000)))
    assert len(fl) == 1000
    per_pair: dict[tuple[str, str], int] = {}
    for f in fl:
        per_pair[(f.src, f.dst)] = per_pair.get((f.src, f.dst), 0) + 1
    assert len(per_pair) == 12 and set(per_pair.values()) <= {83, 84}  # 1000 = 12·83 + 4
    assert len({f.key for f in fl}) == 1000 and len({f.seed for f in fl}) == 1000
    few = [(f.src, f.dst) for f in flows(spec_of(tmp_path, text.format(seed=1, n=5)))]
    assert len(set(few)) == 5  # fewer than the pairs: each drawn at most once
    again = [(f.src, f.dst) for f in flows(spec_of(tmp_path, text.format(seed=1, n=5)))]
    other = [(f.src, f.dst) for f in flows(spec_of(tmp_path, text.format(seed=2, n=5)))]
    assert few == again and few != other


# --- schedules -------------------------------------------------------------------------


def test_poisson_counts_and_gaps_within_statistical_bounds(tmp_path: Path) -> None:
    fl = one_flow(tmp_path, rate_per_s=2, size_bytes=100)
    sends = list(fl.sends(0, 7200))
    n, mean = len(sends), 2 * 7200
    assert abs(n - mean) < 4 * math.sqrt(mean)  # 4 σ
    t = np.array([s.t_s for s in sends])
    assert np.all(np.diff(t) >= 0) and t[0] >= 0 and t[-1] < 7200
    gaps = np.diff(t)
    assert abs(gaps.mean() - 0.5) < 4 * 0.5 / math.sqrt(len(gaps))
    assert abs(gaps.std() / gaps.mean() - 1) < 0.05  # exponential gaps: CV 1
    # counts per 10-minute block: Poisson (variance ≈ mean), not a fixed number
    per_block = np.histogram(t, bins=np.arange(0, 7201, 600))[0]
    assert per_block.std() > 0
    assert fl.expected_sends(0, 7200) == mean


def test_periodic_times_are_exact(tmp_path: Path) -> None:
    fl = one_flow(tmp_path, interval_s=7, start_s=100, end_s=1400, phase_s=2.5,
                  size_bytes=64, priority="bulk", lifetime_s=30)
    sends = list(fl.sends())
    expected = [100 + 2.5 + 7 * k for k in range(int((1400 - 102.5) // 7) + 1)]
    assert [s.t_s for s in sends] == expected
    assert sends[0] == Send(102.5, 64, 0, 30.0)
    assert fl.expected_sends() == len(sends)
    assert [s.t_s for s in fl.sends(0, 130)] == [102.5, 109.5, 116.5, 123.5]


def test_any_window_gives_the_same_sends(tmp_path: Path) -> None:
    """Asking for a schedule piece by piece (as a node host does) gives the sends of the
    whole, across block boundaries."""
    for fl in (one_flow(tmp_path, rate_per_s=0.7, size_bytes="[10, 20]"),
               one_flow(tmp_path, interval_s=0.9, size_bytes="[10, 20]")):
        whole = list(fl.sends(0, 3 * BLOCK_S))
        cuts = [0, 1.5, 599.99, 600, 1000, 1200.5, 3 * BLOCK_S]
        pieces = [s for a, b in itertools.pairwise(cuts) for s in fl.sends(a, b)]
        assert pieces == whole and len(whole) > 1000


def test_the_same_file_gives_the_same_schedule(tmp_path: Path) -> None:
    text = """
        traffic:
          seed: {seed}
          flows:
            - {{name: a, from: kind:ground, to: kashi, rate_per_s: 0.3, size_bytes: [1, 9000]}}
        """
    def schedule(seed: int) -> list[list[Send]]:
        return [list(f.sends()) for f in flows(spec_of(tmp_path, text.format(seed=seed)))]
    assert schedule(5) == schedule(5)
    assert schedule(5) != schedule(6)
    # another entry does not move this one's schedule
    more = spec_of(tmp_path, text.format(seed=5) + "    - {name: b, from: sanya, to: miyun, "
                                                   "interval_s: 3, size_bytes: 1}\n")
    assert [list(f.sends()) for f in flows(more)[:3]] == schedule(5)


def test_sizes_stay_in_their_range(tmp_path: Path) -> None:
    fl = one_flow(tmp_path, rate_per_s=5, size_bytes="[100, 103]")
    sizes = [s.size_bytes for s in fl.sends(0, 600)]
    assert set(sizes) == {100, 101, 102, 103}
    assert all(isinstance(s, int) for s in sizes)


def test_random_phase_spreads_periodic_flows(tmp_path: Path) -> None:
    spec = spec_of(tmp_path, """
        traffic:
          - {name: p, from: kind:satellite, to: kashi, interval_s: 60, phase_s: random,
             size_bytes: 10}
        """)
    firsts = [next(f.sends()).t_s for f in flows(spec)]
    assert len(set(firsts)) == 6 and all(0 <= t < 60 for t in firsts)


def test_a_nodes_sends_merge_in_time_order(tmp_path: Path) -> None:
    spec = spec_of(tmp_path, """
        traffic:
          - {name: a, from: kashi, to: [sanya, miyun], interval_s: 10, size_bytes: 1}
          - {name: b, from: kashi, to: svalsat, rate_per_s: 1, size_bytes: 2}
          - {name: c, from: sanya, to: kashi, rate_per_s: 1, size_bytes: 3}
        """)
    mine = flows_from(spec, "kashi")
    assert [f.key for f in mine] == ["a:kashi>sanya", "a:kashi>miyun", "b:kashi>svalsat"]
    merged = list(node_sends(mine, 100, 400))
    assert [s.t_s for s, _ in merged] == sorted(s.t_s for s, _ in merged)
    assert len(merged) == sum(len(list(f.sends(100, 400))) for f in mine)
    ties = [(s.t_s, f.id) for s, f in merged if s.t_s == 100]
    assert ties == [(100, 0), (100, 1)]


# --- errors ----------------------------------------------------------------------------


@pytest.mark.parametrize(("flow", "field", "words"), [
    ("rate_per_s: -1, size_bytes: 10", "rate_per_s", "must be > 0"),
    ("rate_per_s: 0, size_bytes: 10", "rate_per_s", "must be > 0"),
    ("interval_s: 0, size_bytes: 10", "interval_s", "must be ≥ 0.001"),
    ("rate_per_s: 5000, size_bytes: 10", "rate_per_s", "must be ≤ 1000"),
    ("rate_per_s: 1, size_bytes: 10, lifetime_s: 0", "lifetime_s", "must be > 0"),
    ("rate_per_s: 1, size_bytes: 10, lifetime_s: -5", "lifetime_s", "must be > 0"),
    ("pattern: poison, rate_per_s: 1, size_bytes: 10", "pattern", "did you mean 'poisson'"),
    ("pattern: periodic, rate_per_s: 1, size_bytes: 10", "rate_per_s", "periodic takes interval_s"),
    ("rate_per_s: 1, interval_s: 2, size_bytes: 10", None, "not both"),
    ("size_bytes: 10", None, "give 'interval_s' (periodic) or 'rate_per_s' (poisson)"),
    ("rate_per_s: 1, size_bytes: 0", "size_bytes", "must be ≥ 1"),
    ("rate_per_s: 1, size_bytes: [10, 5]", "size_bytes", "1 ≤ min ≤ max"),
    ("rate_per_s: 1, size_bytes: [10, 20, 30]", "size_bytes", "two whole numbers"),
    ("rate_per_s: 1, size_bytes: 10, priority: 3", "priority", "0 (bulk), 1 (normal) or 2"),
    ("rate_per_s: 1, size_bytes: 10, priority: urgent", "priority", "expected one of"),
    ("rate_per_s: 1, size_bytes: 10, start_s: 100, end_s: 50", "end_s", "must be > 100"),
    ("rate_per_s: 1, size_bytes: 10, end_s: 9000", "end_s", "must be ≤ 7200"),
    ("rate_per_s: 1, size_bytes: 10, start_s: 7200", "start_s", "at or after the scenario's end"),
    ("rate_per_s: 1, size_bytes: 10, pairs: some", "pairs", "is not a pairing"),
    ("rate_per_s: 1, size_bytes: 10, pairs: random 0", "pairs", "N ≥ 1"),
    ("rate_per_s: 1, size_bytes: 10, pairs: random", "pairs", "write 'random N'"),
    ("rate_per_s: 1, size_bytes: 10, phase_s: 1", "phase_s", "for the periodic pattern"),
    ("interval_s: 5, size_bytes: 10, phase_s: 5", "phase_s", "must be < 5"),
    ("rate_per_s: 1, size_bytes: 10, lifetime: 2", "lifetime", "did you mean 'lifetime_s'"),
])
def test_bad_flows_name_file_line_and_field(tmp_path: Path, flow: str, field: str | None,
                                            words: str) -> None:
    text = f"traffic:\n  flows:\n    - {{name: f, from: kashi, to: sanya, {flow}}}\n"
    with pytest.raises(InputError) as e:
        scenario(tmp_path, text)
    err = e.value
    assert err.source and err.source.endswith("s.yaml")
    assert err.line == BASE_LINES + 3
    assert err.field == "traffic.flows[0]" + (f".{field}" if field else "")
    assert words in err.message


@pytest.mark.parametrize(("flow", "field", "words"), [
    ("{name: f, from: kind:ground, to: [kashi, mars], rate_per_s: 1, size_bytes: 1}",
     "traffic.flows[0].to[1]", "no node named 'mars'"),
    ("{name: f, from: sat-7-*, to: kashi, rate_per_s: 1, size_bytes: 1}",
     "traffic.flows[0].from", "'sat-7-*' matches no node"),
    ("{name: f, from: kashi, to: kashi, rate_per_s: 1, size_bytes: 1}",
     "traffic.flows[0].to", "no pair of distinct nodes"),
    ("{name: f, from: kind:ground, to: kashi, pairs: one-to-one, rate_per_s: 1, size_bytes: 1}",
     "traffic.flows[0].pairs", "as many senders as receivers"),
    ("{name: 'a b', from: kashi, to: sanya, rate_per_s: 1, size_bytes: 1}",
     "traffic.flows[0].name", "may hold only"),
    ("{from: kashi, to: sanya, rate_per_s: 1, size_bytes: 1}",
     "traffic.flows[0].name", "missing required key 'name'"),
])
def test_bad_endpoints_name_file_line_and_field(tmp_path: Path, flow: str, field: str,
                                                words: str) -> None:
    with pytest.raises(InputError) as e:
        scenario(tmp_path, f"traffic:\n  flows:\n    - {flow}\n")
    assert (e.value.line, e.value.field) == (BASE_LINES + 3, field)
    assert words in e.value.message


def test_section_level_errors(tmp_path: Path) -> None:
    with pytest.raises(InputError, match=r"s.yaml:\d+: traffic.flows\[1\].name: flow name 'a' "
                                         r"is used twice \(first at line"):
        scenario(tmp_path, """
            traffic:
              flows:
                - {name: a, from: kashi, to: sanya, rate_per_s: 1, size_bytes: 1}
                - {name: a, from: sanya, to: kashi, rate_per_s: 1, size_bytes: 1}
            """)
    with pytest.raises(InputError, match=r"traffic.seeds: unknown key 'seeds'; did you mean 'seed'"):
        scenario(tmp_path, "traffic:\n  seeds: 1\n  flows: []\n")
    with pytest.raises(InputError, match=r"traffic.flows: at least one flows entry is needed"):
        scenario(tmp_path, "traffic:\n  flows: []\n")
    with pytest.raises(InputError, match=r"traffic: expected a list of flows"):
        scenario(tmp_path, "traffic: 3\n")
    with pytest.raises(InputError, match=r"big.yaml:2: traffic\[0\].pairs: 2,539,242 flows"):
        big = load_scenario(ROOT / "topologies" / "starlink-shell1.yaml")
        doc = parse_yaml("traffic:\n  - {name: x, from: all, to: all, rate_per_s: 1, "
                         "size_bytes: 1}\n", "big.yaml")
        parse_traffic(Fields(doc, source="big.yaml").child("traffic"), big)


def test_without_a_scenario_end_a_flow_runs_on(tmp_path: Path) -> None:
    plan_nodes = load_scenario(ROOT / "topologies" / "tiny.yaml").node_names()
    doc = parse_yaml("- {name: a, from: kashi, to: bangalore, interval_s: 1000, "
                     "size_bytes: 1}\n", "t.yaml")
    spec = parse_traffic(Fields(doc, source="t.yaml", path="traffic"),
                         [node_ref(n) for n in plan_nodes])
    (fl,) = flows(spec)
    assert fl.end_s == math.inf
    sends = fl.sends()
    assert [next(sends).t_s for _ in range(3)] == [0.0, 1000.0, 2000.0]


def node_ref(name: str) -> object:
    from netemu.plan.selectors import NodeRef

    return NodeRef(name, "ground" if name in ("kashi", "bangalore") else "satellite")


def test_without_a_traffic_section_there_is_none(tmp_path: Path) -> None:
    assert scenario(tmp_path, "").traffic is None
    assert scenario(tmp_path, "traffic:\n").traffic is None
