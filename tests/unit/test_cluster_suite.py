"""netemu test --cluster's fan-out: every scenario runs once, one per host at a time, the
next going to whichever host is free first, results in the suite's order."""

from __future__ import annotations

import io
import tarfile
from pathlib import Path

import pytest

from netemu.run.cluster_suite import fan_out, unpack_run


class FakeCluster:
    """Hosts that finish their scenarios after given durations, on a simulated clock."""

    def __init__(self, durations: dict[str, float]) -> None:
        self.durations = durations
        self.now = 0.0
        self.busy: dict[str, int] = {}
        self.log: list[tuple[float, str, str]] = []  # (start, host, item)
        self.ends: dict[int, tuple[float, str, str]] = {}
        self.n = 0

    def submit(self, host: str, item: str) -> int:
        assert self.busy.get(host, 0) == 0, f"{host} got a second scenario"
        self.busy[host] = 1
        self.n += 1
        self.log.append((self.now, host, item))
        self.ends[self.n] = (self.now + self.durations[item], host, item)
        return self.n

    def wait_one(self, refs: list[int]) -> int:
        ref = min(refs, key=lambda r: self.ends[r][0])
        self.now, host, _ = self.ends[ref]
        self.busy[host] = 0
        return ref

    def result(self, ref: int) -> str:
        _, host, item = self.ends[ref]
        return f"{item}@{host}"


def test_scenarios_go_to_the_first_free_host_and_come_back_in_order() -> None:
    fc = FakeCluster({"a": 10, "b": 1, "c": 1, "d": 5, "e": 1})
    out = fan_out(["a", "b", "c", "d", "e"], ["h0", "h1"], fc.submit, fc.wait_one, fc.result)
    assert [o.split("@")[0] for o in out] == ["a", "b", "c", "d", "e"]
    # h0 holds a for 10 s; h1 runs b, c, d, e one after another meanwhile
    assert out == ["a@h0", "b@h1", "c@h1", "d@h1", "e@h1"]
    assert fc.now == 10  # the suite took as long as its busiest host, not the sum (18)


def test_more_hosts_than_scenarios_and_no_hosts() -> None:
    fc = FakeCluster({"a": 1})
    assert fan_out(["a"], ["h0", "h1", "h2"], fc.submit, fc.wait_one, fc.result) == ["a@h0"]
    assert fan_out([], ["h0"], fc.submit, fc.wait_one, fc.result) == []
    with pytest.raises(ValueError):
        fan_out(["a"], [], fc.submit, fc.wait_one, fc.result)


def test_a_hosts_run_directories_unpack_under_the_suites(tmp_path: Path) -> None:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as tar:
        for name, data in (("tiny/run.json", b"{}"), ("../escape", b"x")):
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    with pytest.raises(tarfile.OutsideDestinationError):
        unpack_run(buf.getvalue(), tmp_path / "suite")
    ok = io.BytesIO()
    with tarfile.open(fileobj=ok, mode="w:gz") as tar:
        info = tarfile.TarInfo("tiny/run.json")
        info.size = 2
        tar.addfile(info, io.BytesIO(b"{}"))
    unpack_run(ok.getvalue(), tmp_path / "suite")
    assert (tmp_path / "suite/tiny/run.json").read_text() == "{}"


def test_each_scenario_process_gets_the_suites_options(tmp_path: Path,
                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    """What -j and --cluster hand each scenario's own netemu test: the options that change
    the run, a baseline directory that means the same from another directory, run names
    by index."""
    import argparse

    from netemu.commands.test import _child_flags

    monkeypatch.chdir(tmp_path)
    args = argparse.Namespace(duration_s=60.0, time_scale=None, routing="cgr",
                              ip_routing="none", baseline=Path("base"), run_name="ab",
                              no_report=True, update_baseline=False)
    flags = _child_flags(args, 2)
    assert flags == ["--duration-s", "60.0", "--routing", "cgr", "--ip-routing", "none",
                     "--baseline", str(tmp_path / "base"), "--run-name", "ab2",
                     "--no-report"]
