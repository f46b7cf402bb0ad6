"""A host's share of a cluster run's bundle agents (docs/cluster.md).

The coordinator keeps what the run has once: the MQTT broker (a TCP listener on its
underlay address, the run's credentials), the recorder and the run's CA. It tells every
host the same :class:`AgentSettings`; each host's actor writes the agent configs of its
own nodes, from the same plan and in the same way as a local run, into a directory laid
out as a run directory under the run's registry entry (so ``netemu clean`` removes it
after a crash), and starts node hosts for them. The agents publish to the broker over
TCP and dial their neighbours over the emulated links, which cross hosts through the
tunnels. At the end the directory is packed and goes back to the coordinator through Ray
(:func:`unpack_host_dir`), so the coordinator's run directory holds every node's agent
files, as after a local run.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import signal
import socket
import subprocess
import sys
import tarfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import serialization

from netemu.agent.config import AgentConfig, plan_peers
from netemu.emulator.netns import ns_path
from netemu.emulator.registry import Registry
from netemu.errors import NetemuError
from netemu.run.broker import Broker, Recorder
from netemu.run.pki import RunCA, run_tls_mode, secure_run_agent
from netemu.runtime.env import HostEnv
from netemu.runtime.rundir import RunDir
from netemu.runtime.telemetry import BrokerAccess

HOSTED_KEEPALIVE_S = 60  # as a local run's node hosts (runner.HOSTED_KEEPALIVE_S)
READY_TIMEOUT_S = 60.0
READY_S_PER_NODE = 0.05
PACKED = ("agents", "hosts", "captures", "apps")
"""What of a host's directory goes back to the coordinator."""


@dataclass
class AgentSettings:
    """What every host is told about the run's agents (plain data: it crosses Ray)."""

    routing: dict[str, Any]
    broker: dict[str, Any]  # BrokerAccess fields, with tcp_host and tcp_port
    ca_pem: str
    ca_key_pem: str
    tls: str
    window_start_s: float
    window_end_s: float
    counters_s: float | None = None
    bundle_events: bool | None = None
    addresses: dict[str, str] | None = None  # node addresses when IP routes reach them
    node_hosts: int = 1  # node-host processes per cluster host
    traffic_json: str | None = None  # the scenario's traffic flows (traffic.json's text)
    captures: list[tuple[str, str]] | None = None  # links (A, B) captured by A's host

    def to_obj(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_obj(cls, obj: dict[str, Any]) -> AgentSettings:
        return cls(**obj)


def ca_pems(ca: RunCA) -> tuple[str, str]:
    """The CA's certificate and key as PEM text, for the hosts to issue their nodes'."""
    cert = ca.cert.public_bytes(serialization.Encoding.PEM).decode()
    key = ca.key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                               serialization.NoEncryption()).decode()
    return cert, key


def load_ca(cert_pem: str, key_pem: str, directory: Path) -> RunCA:
    """The run's CA on a host: its certificate written to ``directory/ca.pem``."""
    directory.mkdir(parents=True, exist_ok=True)
    cert = x509.load_pem_x509_certificate(cert_pem.encode())
    key = serialization.load_pem_private_key(key_pem.encode(), password=None)
    ca_path = directory / "ca.pem"
    ca_path.write_text(cert_pem)
    return RunCA(key, cert, ca_path)  # type: ignore[arg-type]


def free_tcp_port(addr: str) -> int:
    """A TCP port free on ``addr`` now (the broker binds it a moment later)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sk:
        sk.bind((addr, 0))
        return int(sk.getsockname()[1])


class RunTelemetry:
    """The coordinator's part: the broker, listening on its underlay address as well as on
    its socket, the recorder writing ``events.jsonl``, and the run's CA."""

    def __init__(self, run: str, run_dir: Path, addr: str) -> None:
        self.run = run
        self.rd = RunDir(run_dir)
        self.addr = addr
        self.t0_wall = 0.0  # the scenario clock: start_s at t0_wall, time_scale on
        self.start_s = 0.0
        self.time_scale = 1.0
        self.broker: Broker | None = None
        self.recorder: Recorder | None = None
        self.access: BrokerAccess | None = None
        # a registry entry of its own, so that `netemu clean` stops the broker and removes
        # its files after the coordinator died
        self.registry = Registry(f"{run}m")

    def now_s(self) -> float:
        if not self.t0_wall:
            return self.start_s
        return self.start_s + (time.time() - self.t0_wall) * self.time_scale

    def start(self, *, routing: dict[str, Any], window_start_s: float, window_end_s: float,
              tls: str | None = None, addresses: dict[str, str] | None = None,
              node_hosts: int = 1, max_bundle_events: int | None = None,
              counters_s: float | None = None, bundle_events: bool | None = None,
              traffic_json: str | None = None,
              captures: list[tuple[str, str]] | None = None) -> AgentSettings:
        """Broker, recorder and CA up (``traffic.json`` written when there are flows);
        what to tell every host. ``tls`` defaults as in a local run: required, off when
        links are captured (so that the pcaps show the bundles)."""
        if tls is None:
            tls = run_tls_mode(bool(captures))
        self.rd.path.mkdir(parents=True, exist_ok=True)
        if traffic_json is not None:
            self.rd.traffic_json.write_text(traffic_json)
        self.start_s = window_start_s
        port = free_tcp_port(self.addr)
        self.registry.create({"cluster_broker": f"{self.addr}:{port}"})
        self.broker = Broker(self.run, log_path=self.rd.mosquitto_log, tcp_port=port,
                             tcp_host=self.addr, state_dir=self.registry.path / "mqtt")
        local = self.broker.start()
        if self.broker.pid is not None:
            self.registry.add_pid(self.broker.pid, "mosquitto")
        self.recorder = Recorder(local, self.rd.events_jsonl, clock=self.now_s,
                                 max_bundle_events=max_bundle_events)
        self.recorder.start()
        self.access = BrokerAccess("", local.username, local.password, local.run,
                                   tcp_port=port, tcp_host=self.addr)
        cert, key = ca_pems(RunCA.create(self.rd.agents_dir / "pki"))
        return AgentSettings(routing=routing, broker=asdict(self.access), ca_pem=cert,
                             ca_key_pem=key, tls=tls, window_start_s=window_start_s,
                             window_end_s=window_end_s, addresses=addresses,
                             node_hosts=node_hosts, counters_s=counters_s,
                             bundle_events=bundle_events, traffic_json=traffic_json,
                             captures=captures)

    def stop(self) -> None:
        if self.recorder is not None:
            with contextlib.suppress(Exception):
                self.recorder.stop()
            self.recorder = None
        if self.broker is not None:
            with contextlib.suppress(Exception):
                self.broker.stop()
            self.broker = None
        self.registry.remove()


class HostAgents:
    """The node hosts of one cluster host's agent nodes."""

    def __init__(self, emu: Any, plan: Any, settings: AgentSettings, directory: Path) -> None:
        self.emu = emu
        self.plan = plan
        self.settings = settings
        self.rd = RunDir(directory)
        self.procs: list[subprocess.Popen[bytes]] = []
        self.sockets: dict[str, str] = {}
        self.captures: list[Any] = []

    def write_configs(self, nodes: list[str]) -> dict[str, AgentConfig]:
        """The agent configs of ``nodes``, written as a local run writes them (plan,
        traffic table, certificates from the run's CA)."""
        from netemu.run.runner import direct_links  # the layout's links, as a local run

        s, rd = self.settings, self.rd
        rd.path.mkdir(parents=True, exist_ok=True)
        rd.plan_json.write_text(self.plan.to_json())
        ca = load_ca(s.ca_pem, s.ca_key_pem, rd.agents_dir / "pki")
        configs: dict[str, AgentConfig] = {}
        peers = plan_peers(self.plan)
        links = direct_links(self.emu.layout, set(nodes))
        sock_root = rd.path / "s"
        if s.traffic_json is not None:
            rd.traffic_json.write_text(s.traffic_json)
        for node in nodes:
            rd.agent_dir(node).mkdir(parents=True, exist_ok=True)
            sdir = sock_root / node
            sdir.mkdir(parents=True, exist_ok=True)
            cfg = AgentConfig.for_plan_node(self.plan, node, s.addresses or {},
                                            plan_path=str(rd.plan_json), run_dir=str(sdir),
                                            routing=s.routing, peers=peers,
                                            links=links.get(node, {}))
            cfg.store = str(rd.agent_store(node))
            cfg.log = str(rd.agent_log(node))
            cfg.traffic = str(rd.traffic_json) if s.traffic_json is not None else None
            cfg.traffic_records = str(rd.agent_traffic(node))
            cfg.keepalive_s = HOSTED_KEEPALIVE_S
            secure_run_agent(ca, cfg, rd.agent_dir(node), s.tls)
            cfg.write(rd.agent_config(node))
            self.sockets[node] = cfg.app_socket
            configs[node] = cfg
        return configs

    def start(self, nodes: list[str]) -> None:
        """Write the configs of ``nodes`` and start their node hosts (as many as the
        open-file limit needs, as in a local run)."""
        from netemu.run.runner import hosts_within_fd_limit

        self.write_configs(nodes)
        s, rd = self.settings, self.rd
        mine = [(a, b) for a, b in s.captures or [] if a in nodes]
        if mine:  # tcpdump in the node's namespace, into captures/A_B.pcap
            from netemu.run.capture import start_scenario_captures

            net = self.emu.net
            self.captures = start_scenario_captures(mine, rd.path,
                                                    netns_of=lambda n: net.host_ns[n],
                                                    clock_env=self.emu.clock.to_env())
        access = BrokerAccess(**s.broker)
        env = {k: v for k, v in os.environ.items() if not k.startswith("NETEMU_")}
        env.update(HostEnv(run=access.run, mqtt=access, clock=self.emu.clock,
                           window_start_s=s.window_start_s, window_end_s=s.window_end_s,
                           counters_s=s.counters_s, bundle_events=s.bundle_events).to_env(),
                   PYTHONUNBUFFERED="1")
        rd.hosts_dir.mkdir(parents=True, exist_ok=True)
        n = max(1, min(hosts_within_fd_limit(len(nodes), max(1, s.node_hosts))[0], len(nodes)))
        for i in range(n):
            group = nodes[i::n]
            host_json = rd.host_config(i)
            host_json.write_text(json.dumps({"nodes": [
                {"config": str(rd.agent_config(node)),
                 "netns": ns_path(self.emu.net.host_ns[node])} for node in group]},
                indent=1) + "\n")
            with open(rd.host_out(i), "wb") as out:
                proc = subprocess.Popen(
                    [sys.executable, "-m", "netemu.agent.nodehost", "--config", str(host_json)],
                    env=env, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                    start_new_session=True)
            self.procs.append(proc)
            with contextlib.suppress(Exception):  # so that `netemu clean` stops it too
                self.emu.registry.add_pid(proc.pid, f"nodehost:{i}")

    def wait_ready(self, timeout_s: float | None = None) -> None:
        """Until every node's app socket exists; a node host that exits is an error."""
        if timeout_s is None:
            timeout_s = READY_TIMEOUT_S + READY_S_PER_NODE * len(self.sockets)
        deadline = time.monotonic() + timeout_s
        waiting = dict(self.sockets)
        while waiting and time.monotonic() < deadline:
            for i, proc in enumerate(self.procs):
                if proc.poll() is not None:
                    out = self.rd.host_out(i)
                    tail = out.read_text(errors="replace")[-1500:] if out.exists() else ""
                    raise NetemuError(f"node host {i} exited with status {proc.returncode}:"
                                      f"\n{tail}")
            waiting = {n: p for n, p in waiting.items() if not os.path.exists(p)}
            time.sleep(0.1)
        if waiting:
            raise NetemuError(f"bundle agents not ready after {timeout_s:.0f} s: "
                              f"{', '.join(sorted(waiting)[:20])}")

    def stop(self, grace_s: float = 10.0) -> None:
        """The captures, then SIGTERM every node host (their agents close their stores),
        SIGKILL after ``grace_s``."""
        for c in self.captures:
            with contextlib.suppress(Exception):
                c.stop()
        self.captures = []
        for p in self.procs:
            with contextlib.suppress(ProcessLookupError):
                p.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + grace_s
        for p in self.procs:
            try:
                p.wait(timeout=max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait()
        self.procs = []

    def pack(self) -> bytes:
        """The host's agent files (``agents/``, ``hosts/``) as a gzipped tar."""
        buf = io.BytesIO()
        with tarfile.open(fileobj=buf, mode="w:gz") as tar:
            for name in PACKED:
                if (self.rd.path / name).exists():
                    tar.add(self.rd.path / name, arcname=name)
        return buf.getvalue()


def unpack_host_dir(data: bytes, run_dir: Path, host: int) -> list[str]:
    """A host's packed files into the coordinator's run directory: ``agents/<node>/``,
    ``apps/<app>/<node>/`` and ``captures/A_B.pcap`` as a local run has them (nodes and
    captured links are distinct across hosts; the CA files are the same), and the host's
    node-host files under ``hosts/h<host>/``. Returns the agent nodes unpacked."""
    nodes: list[str] = []
    with tarfile.open(fileobj=io.BytesIO(data), mode="r:gz") as tar:
        for m in tar.getmembers():
            parts = Path(m.name).parts
            if not parts or parts[0] not in PACKED or ".." in parts or Path(m.name).is_absolute():
                continue
            if not (m.isfile() or m.isdir()):
                continue
            if parts[0] == "hosts":
                m.name = str(Path("hosts", f"h{host}", *parts[1:]))
            elif parts[0] == "agents" and len(parts) == 2 and m.isdir() and parts[1] != "pki":
                nodes.append(parts[1])
            tar.extract(m, run_dir, filter="data")
    return sorted(nodes)


__all__ = ["AgentSettings", "HostAgents", "RunTelemetry", "ca_pems", "free_tcp_port",
           "load_ca", "unpack_host_dir"]
