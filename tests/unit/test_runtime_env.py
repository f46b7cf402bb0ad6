"""The NETEMU_* environment (HostEnv) and the run directory layout (RunDir)."""

from __future__ import annotations

import json
import re
import time
from datetime import datetime, timezone
from pathlib import Path

import pytest

from netemu.errors import InputError
from netemu.runtime import env as netemu_env
from netemu.runtime.clock import DTN_EPOCH, ScenarioClock
from netemu.runtime.env import HostEnv, registry_dir, socket_dir
from netemu.runtime.rundir import RunDir, check_run_name, read_events
from netemu.runtime.telemetry import BrokerAccess

ROOT = Path(__file__).resolve().parents[2]


def test_every_netemu_name_in_the_code_is_defined_in_env() -> None:
    used: set[str] = set()
    for d in ("netemu", "apps", "bench"):
        for f in (ROOT / d).rglob("*.py"):
            used |= set(re.findall(r"\bNETEMU_[A-Z0-9_]*[A-Z0-9]\b", f.read_text()))
    defined = set(netemu_env.ALL_NAMES)
    assert used - defined == set()
    for name in defined:
        assert getattr(netemu_env, name) == name


def test_host_env_round_trips() -> None:
    clock = ScenarioClock(datetime(2026, 1, 1, tzinfo=timezone.utc), 5.0, 1_700_000_000.25, 30.0)
    h = HostEnv(run="r1", node="sat1", node_addr="10.0.0.1", run_dir=Path("/runs/x"),
                clock=clock, dtn_socket="/tmp/a/bp.sock",
                mqtt=BrokerAccess("/tmp/m/mqtt.sock", "netemu", "pw", "r1"),
                app="eo-filter", app_dir=Path("/runs/x/apps/eo-filter/sat1"),
                app_params={"rate": 3}, window_start_s=10.0, window_end_s=70.5,
                counters_s=2.5, bundle_events=False)
    env = h.to_env()
    assert env["NETEMU_COUNTERS_S"] == "2.5" and env["NETEMU_BUNDLE_EVENTS"] == "0"
    assert env["NETEMU_DTN_SOCKET"] == "/tmp/a/bp.sock" and "NETEMU_BP_SOCKET" not in env
    assert HostEnv.from_env(env) == h


def test_an_empty_environment_is_outside_netemu() -> None:
    assert HostEnv.from_env({}) == HostEnv()
    assert HostEnv().to_env() == {}


def test_agents_telemetry_defaults_when_unset() -> None:
    """An agent started by hand publishes counters every 10 s and every bundle event."""
    h = HostEnv.from_env({})
    assert h.counters_interval_s == 10.0 and h.bundle_events_on
    off = HostEnv.from_env({"NETEMU_COUNTERS_S": "0", "NETEMU_BUNDLE_EVENTS": "0"})
    assert off.counters_interval_s == 0.0 and not off.bundle_events_on


def test_the_old_socket_name_is_still_read() -> None:
    assert HostEnv.from_env({"NETEMU_BP_SOCKET": "/old"}).dtn_socket == "/old"
    both = {"NETEMU_BP_SOCKET": "/old", "NETEMU_DTN_SOCKET": "/new"}
    assert HostEnv.from_env(both).dtn_socket == "/new"


@pytest.mark.parametrize(("var", "value"), [("NETEMU_APP_PARAMS", "{bad"),
                                            ("NETEMU_APP_PARAMS", "[1]"),
                                            ("NETEMU_WINDOW_END_S", "soon"),
                                            ("NETEMU_TIME_SCALE", "fast"),
                                            ("NETEMU_COUNTERS_S", "-1"),
                                            ("NETEMU_COUNTERS_S", "often"),
                                            ("NETEMU_BUNDLE_EVENTS", "yes")])
def test_a_malformed_variable_is_named(var: str, value: str) -> None:
    env = {"NETEMU_EPOCH": "2026-01-01T00:00:00Z", "NETEMU_T0_WALL": "1", var: value}
    with pytest.raises(InputError, match=var):
        HostEnv.from_env(env)


def test_partial_mqtt_or_clock_variables_give_none() -> None:
    h = HostEnv.from_env({"NETEMU_MQTT_SOCKET": "/s", "NETEMU_T0_WALL": "1"})
    assert h.mqtt is None and h.clock is None


def test_machine_directories_have_their_own_names() -> None:
    assert registry_dir({}) == Path("/run/netemu")
    assert registry_dir({"NETEMU_REGISTRY_DIR": "/tmp/r", "NETEMU_RUN_DIR": "/x"}) == Path("/tmp/r")
    assert socket_dir({"NETEMU_SOCKET_DIR": "/tmp/s", "NETEMU_RUN_DIR": "/x"}) == Path("/tmp/s")


def test_clock_defaults_fill_only_absent_variables() -> None:
    start = time.time()
    default = ScenarioClock(DTN_EPOCH, 1.0, start, 0.0)
    c = ScenarioClock.from_env({"NETEMU_TIME_SCALE": "4", "NETEMU_T0_S": "100"}, default=default)
    assert c.epoch == DTN_EPOCH and c.t0_wall == start and c.time_scale == 4.0 and c.t0_s == 100.0
    assert ScenarioClock.from_env({}, default=default) == default
    with pytest.raises(InputError, match="not running under netemu"):
        ScenarioClock.from_env({"NETEMU_TIME_SCALE": "4"})


def test_run_names() -> None:
    assert check_run_name("r1") == "r1"
    for bad in ("", "1r", "R1", "r-1", "abcdefghi"):
        with pytest.raises(InputError, match="run name"):
            check_run_name(bad)


def test_events_reader_skips_what_is_not_an_event(tmp_path: Path) -> None:
    p = tmp_path / "events.jsonl"
    assert read_events(p) == []
    p.write_text('{"t_s": 1, "payload": {}}\n\n[1, 2]\n"x"\n{"t_s": 2, "payload": 5}\n{"t_s": 3, "pa')
    assert [e["t_s"] for e in read_events(p)] == [1, 2]


def test_run_dir_layout(tmp_path: Path) -> None:
    rd = RunDir(tmp_path)
    assert rd.events_jsonl == tmp_path / "events.jsonl"
    assert rd.report_index == tmp_path / "report" / "index.html"
    assert rd.agent_log("sat1") == tmp_path / "agents" / "sat1" / "agent.jsonl"
    assert rd.capture_pcap("a", "b") == tmp_path / "captures" / "a_b.pcap"
    assert rd.pcaps() == [] and list(rd.app_files(None, "result.json")) == []
    assert rd.plan() is None
    app = rd.app_dir("eo-filter", "sat1")
    app.mkdir(parents=True)
    (app / "result.json").write_text("{}")
    assert RunDir.of_app_dir(app) == RunDir(tmp_path.resolve())
    assert list(rd.app_files("eo-filter", "result.json")) == [("eo-filter", "sat1", app / "result.json")]
    rd.plan_json.write_text(json.dumps({"nodes": {"a": 1}}))
    assert rd.plan() == {"nodes": {"a": 1}}
    rd.plan_json.write_text("{")
    with pytest.raises(InputError, match="not valid JSON"):
        rd.plan()
