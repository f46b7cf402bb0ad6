"""The broker's generated configuration and the environment contract for clients."""

from __future__ import annotations

from pathlib import Path

import pytest

from netemu.config import Fields, parse_yaml
from netemu.errors import InputError
from netemu.run.broker import Broker
from netemu.run.telemetry_config import BUNDLE_EVENTS_AUTO_MAX_AGENTS, parse_telemetry
from netemu.runtime.rundir import check_run_name
from netemu.runtime.telemetry import BrokerAccess, TelemetryError


def test_config_requires_auth_and_listens_on_a_unix_socket(tmp_path: Path) -> None:
    text = Broker("demo1", tcp_port=18831).config_text(tmp_path, "mosquitto")
    lines = text.splitlines()
    assert "allow_anonymous false" in lines
    assert f"password_file {tmp_path / 'passwd'}" in lines
    assert f"acl_file {tmp_path / 'acl'}" in lines
    assert f"listener 0 {tmp_path / 'mqtt.sock'}" in lines
    assert "listener 18831 127.0.0.1" in lines  # dashboards: loopback only
    assert "user mosquitto" in lines


def test_access_round_trips_through_the_environment() -> None:
    a = BrokerAccess("/tmp/x/mqtt.sock", "netemu", "s3cret", "run-7", tcp_port=1883)
    env = a.env()
    assert env["NETEMU_MQTT_SOCKET"] == "/tmp/x/mqtt.sock"
    assert BrokerAccess.from_env(env) == a
    assert a.topic_prefix == "netemu/run-7"


def test_missing_environment_is_a_clear_error() -> None:
    with pytest.raises(TelemetryError, match="NETEMU_MQTT_PASSWORD"):
        BrokerAccess.from_env({"NETEMU_RUN": "r", "NETEMU_MQTT_SOCKET": "/s",
                               "NETEMU_MQTT_USER": "u"})


@pytest.mark.parametrize("bad", ["", "a/b", "a+b", "#", "x" * 65, "-lead", "demo-1", "Run1",
                                 "toolong99"])
def test_run_names_that_would_break_topics_or_namespaces_are_refused(bad: str) -> None:
    with pytest.raises(InputError, match="run name"):
        check_run_name(bad)
    with pytest.raises(InputError, match="run name"):
        Broker(bad)


def test_a_bad_tcp_port_in_the_environment_is_named() -> None:
    env = BrokerAccess("/s", "u", "p", "r").env() | {"NETEMU_MQTT_TCP_PORT": "x"}
    with pytest.raises(InputError, match="NETEMU_MQTT_TCP_PORT"):
        BrokerAccess.from_env(env)


def test_scenario_time_comes_from_the_hosts_clock_variables() -> None:
    import time
    from datetime import datetime

    from netemu.runtime.clock import ScenarioClock
    from netemu.runtime.telemetry import scenario_clock_from_env

    clk = ScenarioClock.start(datetime(2026, 6, 1), time_scale=10,
                                t0_s=500, wall=time.time() - 2)
    now_s = scenario_clock_from_env(clk.to_env())()
    assert 520 <= now_s < 500 + 10 * 600  # >= 2 wall seconds at x10 after second 500
    # without NETEMU_EPOCH the same variables still give scenario time
    env = {"NETEMU_T0_WALL": str(time.time() - 1), "NETEMU_T0_S": "100",
           "NETEMU_TIME_SCALE": "5"}
    assert 105 <= scenario_clock_from_env(env)() < 100 + 5 * 600


# --- the scenario's telemetry: section ---------------------------------------------------


def _section(text: str) -> Fields:
    doc = parse_yaml(text, "s.yaml")
    return Fields(doc.get("telemetry"), source="s.yaml", path="telemetry",
                  line=doc.line_of("telemetry"))


def test_telemetry_section_defaults_and_auto_threshold() -> None:
    s = parse_telemetry(_section("name: x\n"))
    assert s.counters_s == 10.0 and s.bundle_events == "auto" and s.max_bundle_events == 100_000
    assert s.bundle_events_for(BUNDLE_EVENTS_AUTO_MAX_AGENTS) is True
    assert s.bundle_events_for(BUNDLE_EVENTS_AUTO_MAX_AGENTS + 1) is False
    assert s.host_env(2800) == {"counters_s": 10.0, "bundle_events": False}


@pytest.mark.parametrize(("text", "mode"), [("on", "on"), ("off", "off"), ("'on'", "on"),
                                            ("true", "on"), ("auto", "auto")])
def test_bundle_events_modes(text: str, mode: str) -> None:
    s = parse_telemetry(_section(f"telemetry:\n  bundle_events: {text}\n  counters_s: 0\n"))
    assert s.bundle_events == mode and s.counters_s == 0.0
    assert s.bundle_events_for(5000) is (mode == "on")


@pytest.mark.parametrize(("body", "msg"), [
    ("  bundle_event: on\n", "did you mean 'bundle_events'"),
    ("  bundle_events: sometimes\n", "bundle_events"),
    ("  counters_s: -1\n", "counters_s"),
    ("  max_bundle_events: 1.5\n", "max_bundle_events"),
])
def test_bad_telemetry_section_names_file_line_and_key(body: str, msg: str) -> None:
    with pytest.raises(InputError, match=msg) as e:
        parse_telemetry(_section("name: x\ntelemetry:\n" + body))
    assert "s.yaml" in str(e.value) and ":3" in str(e.value)


def test_a_cluster_hosts_access_is_by_tcp_and_round_trips_without_a_socket() -> None:
    from netemu.runtime.env import HostEnv

    a = BrokerAccess("", "netemu", "s3cret", "run7", tcp_port=40001, tcp_host="10.9.0.1")
    env = a.env()
    assert "NETEMU_MQTT_SOCKET" not in env
    assert env["NETEMU_MQTT_HOST"] == "10.9.0.1" and env["NETEMU_MQTT_TCP_PORT"] == "40001"
    assert BrokerAccess.from_env(env) == a
    assert HostEnv.from_env(env).mqtt == a  # what a node host reads
    assert a.where == "10.9.0.1:40001"
    with pytest.raises(InputError, match="NETEMU_MQTT_TCP_PORT"):
        BrokerAccess.from_env({k: v for k, v in env.items() if k != "NETEMU_MQTT_TCP_PORT"})
    # neither a socket nor a host: telemetry is off for HostEnv, an error for from_env
    no_where = {k: v for k, v in env.items() if k != "NETEMU_MQTT_HOST"}
    assert HostEnv.from_env(no_where).mqtt is None
    with pytest.raises(TelemetryError, match="NETEMU_MQTT_SOCKET"):
        BrokerAccess.from_env(no_where)


def test_a_cluster_broker_listens_on_the_underlay_address(tmp_path: Path) -> None:
    text = Broker("demo1", tcp_port=18831, tcp_host="10.9.0.1").config_text(tmp_path, "x")
    assert "listener 18831 10.9.0.1" in text.splitlines()


def test_a_cluster_hosts_broker_bridges_only_the_runs_topics_out(tmp_path: Path) -> None:
    coordinator = BrokerAccess("", "netemu", "s3cret", "run7", tcp_port=40001,
                               tcp_host="10.9.0.1")
    lines = Broker("run7", bridge_to=coordinator).config_text(tmp_path, "x").splitlines()
    assert "address 10.9.0.1:40001" in lines
    assert "remote_username netemu" in lines and "remote_password s3cret" in lines
    assert [ln for ln in lines if ln.startswith("topic ")] == ["topic netemu/run7/# out 1"]
    # its only listener is the socket, which the node namespaces reach
    assert [ln for ln in lines if ln.startswith("listener ")] == [
        f"listener 0 {tmp_path / 'mqtt.sock'}"]
