"""Telemetry over a real mosquitto: events from inside a host's network namespace arrive
with the run's credentials, and connections without them are refused."""

from __future__ import annotations

import asyncio
import dataclasses
import json
import os
import shutil
import socket
import subprocess
import sys
import textwrap
import time
import uuid
from pathlib import Path

import pytest

from netemu.run.broker import Broker, Recorder
from netemu.runtime.rundir import read_events
from netemu.runtime.telemetry import SyncPublisher, Telemetry, TelemetryError

pytestmark = [
    pytest.mark.integration,
    pytest.mark.skipif(shutil.which("mosquitto_passwd") is None, reason="mosquitto not installed"),
]


@pytest.fixture
def broker(tmp_path: Path):
    b = Broker(f"tmq{uuid.uuid4().hex[:5]}", log_path=tmp_path / "mosquitto.log",
               tcp_port=_free_port())
    access = b.start()
    try:
        yield b, access
    finally:
        b.stop()
    assert not b.running() and not Path(access.socket_path).exists()


@pytest.fixture
def netns():
    name = f"tmq-{uuid.uuid4().hex[:6]}"
    subprocess.run(["ip", "netns", "add", name], check=True)
    try:
        yield name
    finally:
        subprocess.run(["ip", "netns", "del", name], capture_output=True)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _wait(cond, timeout_s: float = 15.0) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if cond():
            return
        time.sleep(0.05)
    raise AssertionError("condition not met in time")


PUBLISHER = textwrap.dedent("""
    import asyncio
    from netemu.runtime.telemetry import Telemetry
    async def main():
        async with Telemetry.from_env() as t:
            await t.publish("bundle/sat-1", {"event": "received", "bundle_id": "b1"})
            await t.publish("app/probe/sat-1", {"event": "hello", "t_s": 12.5})
    asyncio.run(main())
""")


def test_events_from_inside_a_host_arrive_and_are_recorded(tmp_path, broker, netns) -> None:
    b, access = broker
    events = tmp_path / "events.jsonl"
    rec = Recorder(access, events, clock=lambda: 99.0)
    rec.start()
    try:
        env = {**os.environ, **access.env(), "NETEMU_NODE": "sat-1",
               "NETEMU_T0_WALL": str(time.time()), "NETEMU_T0_S": "1000",
               "NETEMU_TIME_SCALE": "1"}
        # the client runs in a network namespace with no interfaces at all: the broker is
        # reached through the filesystem, not through the emulated links
        r = subprocess.run(["ip", "netns", "exec", netns, sys.executable, "-c", PUBLISHER],
                           env=env, capture_output=True, text=True, timeout=60)
        assert r.returncode == 0, r.stderr
        _wait(lambda: rec.count >= 2)
    finally:
        rec.stop()
    got = read_events(events)
    topics = [e["topic"] for e in got]
    assert topics == [f"netemu/{access.run}/bundle/sat-1", f"netemu/{access.run}/app/probe/sat-1"]
    assert got[0]["payload"]["bundle_id"] == "b1"
    assert 1000 <= got[0]["t_s"] < 1100  # stamped from the host's clock variables
    assert got[1]["t_s"] == 12.5
    assert all(abs(e["wall"] - time.time()) < 600 for e in got)


def test_connections_without_the_run_credentials_are_refused(tmp_path, broker) -> None:
    b, access = broker
    events = tmp_path / "events.jsonl"
    with Recorder(access, events) as rec:
        bad = dataclasses.replace(access, password="not-the-password")
        with pytest.raises(TelemetryError, match="(?i)not authori[sz]ed|refused"):
            SyncPublisher(bad)
        with pytest.raises(TelemetryError, match="(?i)not authori[sz]ed|refused"):
            SyncPublisher(dataclasses.replace(access, username="intruder"))

        async def async_bad() -> None:
            await Telemetry(bad).publish("link/a/b", {"event": "up"})

        with pytest.raises(TelemetryError):
            asyncio.run(async_bad())
        # the stock client, anonymous and with a wrong password, on both listeners
        for extra in ([], ["-u", access.username, "-P", "wrong"]):
            for where in (["--unix", access.socket_path],
                          ["-h", "127.0.0.1", "-p", str(access.tcp_port)]):
                r = subprocess.run(["mosquitto_pub", *where, *extra, "-t",
                                    f"{access.topic_prefix}/x", "-m", "{}"],
                                   capture_output=True, text=True, timeout=30)
                assert r.returncode != 0 and "not authori" in (r.stderr + r.stdout).lower()
        # the right credentials work on the dashboard listener too
        r = subprocess.run(["mosquitto_pub", "-h", "127.0.0.1", "-p", str(access.tcp_port),
                            "-u", access.username, "-P", access.password, "-q", "1",
                            "-t", f"{access.topic_prefix}/app/dash/x",
                            "-m", json.dumps({"event": "ok", "t_s": 1})],
                           capture_output=True, text=True, timeout=30)
        assert r.returncode == 0, r.stderr
        _wait(lambda: rec.count >= 1)
    assert [e["payload"]["event"] for e in read_events(events)] == ["ok"]
    # the socket and password file are not world-accessible
    assert os.stat(Path(access.socket_path).parent).st_mode & 0o007 == 0


def test_clients_on_another_host_publish_over_tcp(tmp_path, broker) -> None:
    """A cluster run's agents reach the coordinator's broker by TCP (NETEMU_MQTT_HOST),
    with the run's credentials; the socket path is not theirs to use."""
    b, access = broker
    tcp = dataclasses.replace(access, socket_path="", tcp_host="127.0.0.1")
    events = tmp_path / "events.jsonl"
    rec = Recorder(access, events)
    rec.start()
    try:
        pub = SyncPublisher(tcp)
        pub.publish("bundle/s1", {"event": "sent", "t_s": 1.0})
        pub.close()

        async def send() -> None:
            async with Telemetry(tcp) as t:
                await t.publish("bundle/s2", {"event": "received", "t_s": 2.0})

        asyncio.run(send())
        _wait(lambda: rec.count >= 2)
        with pytest.raises(TelemetryError, match="(?i)not authori[sz]ed|refused"):
            SyncPublisher(dataclasses.replace(tcp, password="wrong"))
    finally:
        rec.stop()
    assert sorted(e["topic"].rsplit("/", 1)[1] for e in read_events(events)) == ["s1", "s2"]


def test_a_hosts_bridged_broker_passes_the_runs_messages_on(tmp_path, broker) -> None:
    """Apps on another host of a cluster run publish to their host's broker (its socket,
    reachable from the node namespaces); it bridges the run's topics to the
    coordinator's."""
    b, access = broker
    tcp = dataclasses.replace(access, socket_path="", tcp_host="127.0.0.1")
    events = tmp_path / "events.jsonl"
    rec = Recorder(access, events)
    rec.start()
    local = Broker(access.run, log_path=tmp_path / "local.log", bridge_to=tcp)
    la = local.start()
    try:
        assert la.password != access.password  # the host's own credentials
        deadline = time.monotonic() + 15
        n = 0
        while rec.count == 0 and time.monotonic() < deadline:  # until the bridge is up
            pub = SyncPublisher(la)
            pub.publish("app/downlink/gsb", {"event": "start", "t_s": float(n)})
            pub.close()
            n += 1
            time.sleep(0.2)
        _wait(lambda: rec.count >= 1)
    finally:
        local.stop()
        rec.stop()
    got = read_events(events)
    assert got and got[0]["topic"] == f"{access.topic_prefix}/app/downlink/gsb"
