"""IP routing figures from path samples and probe logs (netemu.analysis.iproute): what
a user reads in metrics.json after a topology change."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from netemu.analysis.iproute import iproute_metrics, path_metrics


def _sample(t: float, delay: float | None, oracle: float | None, pair=("a", "b")) -> dict:
    return {"kind": "path", "t_s": t, "src": pair[0], "dst": pair[1], "delay_s": delay,
            "oracle_delay_s": oracle}


def test_convergence_is_the_time_from_the_change_to_the_first_good_sample() -> None:
    lines = [{"kind": "change", "t_s": 10.0, "link": "isl"},
             {"kind": "change", "t_s": 20.0, "link": "gsl"}]
    lines += [_sample(t, 0.01, 0.01) for t in (9.0, 9.5)]
    # after 10 s: no path for 2 s, then a 50 % longer path, the best one from 13 s on
    lines += [_sample(10.5, None, 0.01), _sample(11.5, None, 0.01),
              _sample(12.5, 0.015, 0.01), _sample(13.0, 0.01, 0.01), _sample(15.0, 0.0101, 0.01)]
    # after 20 s the pair is not disturbed at all
    lines += [_sample(t, 0.02, 0.02) for t in (20.5, 21.0)]
    m = path_metrics(lines, tolerance=0.05)
    assert m["ip_convergence_events"] == 1 and m["ip_unconverged"] == 0
    assert m["ip_convergence_p50_s"] == pytest.approx(3.0)
    assert m["ip_convergence_by_link"] == {"isl": {"events": 1, "p50_s": 3.0, "p95_s": 3.0}}
    assert m["ip_unreachable_fraction"] == pytest.approx(2 / 9, abs=1e-4)
    assert m["ip_path_stretch_p95"] > 1.3 and m["ip_path_stretch_p50"] == pytest.approx(1.0)
    # with a 60 % tolerance the longer path counts as converged
    assert path_metrics(lines, tolerance=0.6)["ip_convergence_p50_s"] == pytest.approx(2.5)


def test_a_pair_that_never_settles_before_the_next_change_is_unconverged() -> None:
    lines = [_sample(-1.0, 0.01, 0.01), {"kind": "change", "t_s": 0.0},
             {"kind": "change", "t_s": 5.0},
             _sample(1.0, 0.02, 0.01), _sample(4.0, 0.02, 0.01), _sample(6.0, 0.01, 0.01)]
    m = path_metrics(lines, tolerance=0.05)
    assert m["ip_unconverged"] == 1 and m["ip_convergence_max_s"] == pytest.approx(5.0)


def test_the_bring_up_is_its_own_figure_and_left_out_of_the_rest() -> None:
    # the routes are not there yet at first: no change caused that
    lines = [_sample(0.0, None, 0.01), _sample(0.0, None, 0.02, pair=("c", "d")),
             {"kind": "change", "t_s": 1.0}, _sample(2.0, 0.01, 0.01),
             _sample(3.0, 0.02, 0.02, pair=("c", "d")), _sample(4.0, 0.01, 0.01)]
    m = path_metrics(lines, tolerance=0.05)
    assert m["ip_initial_convergence_s"] == pytest.approx(3.0)
    assert m["ip_convergence_events"] == 0 and m["ip_unreachable_fraction"] == 0.0
    assert m["ip_convergence_p95_s"] == 0.0  # sampled, nothing disturbed: not "no data"


def test_probe_outages_count_only_while_a_path_existed(tmp_path: Path) -> None:
    d = tmp_path / "iproute"
    (d / "probes").mkdir(parents=True)
    (d / "probes" / "pairs.json").write_text(json.dumps({"0": ["a", "b"]}))
    sent = [(q, q * 0.5) for q in range(40)]  # 0 .. 19.5 s
    lost = {4, 5, 6} | set(range(20, 30))  # 2.0-3.0 s, and 10.0-14.5 s
    (d / "probes" / "0.sent").write_text("".join(f"{q} {t}\n" for q, t in sent))
    (d / "probes" / "0.recv").write_text("".join(f"{q} {t + 0.01}\n" for q, t in sent
                                                 if q not in lost))
    # no path at all from 9.9 s to 12.9 s: only the losses after it count
    samples = [_sample(t, 0.01, 0.01) for t in (0.0, 5.0)] + [
        _sample(9.9, None, None), _sample(12.9, None, 0.01), _sample(15.0, 0.01, 0.01)]
    (d / "paths.jsonl").write_text("".join(json.dumps(x) + "\n" for x in samples))
    m = iproute_metrics(d)
    assert m["probe_loss_windows"] == 2
    # 2.0 → 3.5 s, and 13.0 (the first loss after the path came back) → 15.0 s
    assert m["probe_outage_max_s"] == pytest.approx(2.0)
    assert m["probe_outage_total_s"] == pytest.approx(3.5)
    # 38 sent in the counted span (the last second left out), 6 of them excused
    assert m["probe_sent"] == 38 - 6
    assert m["probe_loss_ratio"] == pytest.approx((3 + 4) / 32, abs=1e-4)


def test_nothing_measured_gives_nulls(tmp_path: Path) -> None:
    m = iproute_metrics(tmp_path / "iproute")
    assert m["ip_convergence_p95_s"] is None and m["probe_loss_ratio"] is None
    assert m["ip_initial_convergence_s"] is None


def test_losses_from_the_change_that_took_the_last_path_away_are_not_counted(tmp_path):
    d = tmp_path / "iproute"
    (d / "probes").mkdir(parents=True)
    (d / "probes" / "pairs.json").write_text(json.dumps({"0": ["a", "b"]}))
    sent = [(q, q * 0.5) for q in range(20)]  # 0 .. 9.5 s
    lost = {7, 8, 9, 10}  # 3.5 - 5.0 s: the station out of reach from 3.4 s
    (d / "probes" / "0.sent").write_text("".join(f"{q} {t}\n" for q, t in sent))
    (d / "probes" / "0.recv").write_text("".join(f"{q} {t}\n" for q, t in sent
                                                 if q not in lost))
    lines = [_sample(0.0, 0.01, 0.01), _sample(3.0, 0.01, 0.01),
             {"kind": "change", "t_s": 3.4, "link": "gsl"}, _sample(4.0, None, None),
             _sample(5.2, 0.01, 0.01)]
    (d / "paths.jsonl").write_text("".join(json.dumps(x) + "\n" for x in lines))
    m = iproute_metrics(d)
    assert m["probe_loss_windows"] == 0 and m["probe_loss_ratio"] == 0.0


def test_control_traffic_per_link_second(tmp_path: Path) -> None:
    d = tmp_path / "iproute"
    d.mkdir()
    (d / "control.json").write_text(json.dumps({"ospf_bytes": 9000, "ospf_packets": 100,
                                                "bfd_bytes": 1000, "bfd_packets": 20}))
    (d / "paths.jsonl").write_text(json.dumps({"kind": "links", "link_wall_s": 50.0}) + "\n")
    m = iproute_metrics(d)
    assert m["ip_control_bytes"] == 10000 and m["ip_control_bytes_per_link_s"] == 200.0
    (d / "control.json").write_text(json.dumps({"ospf_bytes": 0, "bfd_bytes": 0,
                                                "isis_bytes": 5000, "isis_packets": 50}))
    assert iproute_metrics(d)["ip_control_bytes_per_link_s"] == 100.0  # IS-IS counts too


def test_control_traffic_of_an_older_isis_run_is_null_not_zero(tmp_path: Path) -> None:
    d = tmp_path / "iproute"
    d.mkdir()
    (d / "control.json").write_text(json.dumps({"ospf_bytes": 0, "ospf_packets": 0,
                                                "bfd_bytes": 0, "bfd_packets": 0,
                                                "counted": False}))
    (d / "paths.jsonl").write_text(json.dumps({"kind": "links", "link_wall_s": 50.0}) + "\n")
    m = iproute_metrics(d)
    assert m["ip_control_bytes"] is None and m["ip_control_bytes_per_link_s"] is None
