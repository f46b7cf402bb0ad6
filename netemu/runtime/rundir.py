"""The layout of a run directory, and the run name rule.

A run (``netemu flagship``, ``netemu test``) writes everything it records into one
directory, by default ``runs/<scenario>-<stamp>/``::

    scenario.yaml         the scenario as given
    plan.json             the contact plan (nodes, contacts, node_info)
    traffic.json          with a ``traffic:`` section: every flow and node ipn number
    run.json              what ran: window, routing, shaper, phase timings, errors
    events.jsonl          the telemetry recorder's record: one {"t_s", "wall", "topic",
                          "payload"} object a line
    traffic.json          the scenario's traffic flows ({"service", "flows": [Flow fields]})
    metrics.json          figures computed from the record (netemu.analysis.metrics)
    traffic_flows.csv     per traffic flow: sent, delivered, latency (with metrics.json)
    expect.json           outcome of the scenario's expectations
    junit.xml             the same as JUnit XML (for CI)
    report/index.html     the report page
    logs/mosquitto.log    the broker's log
    agents/<node>/        agent.json (config), agent.jsonl (log), agent.out, store.sqlite,
                          traffic.jsonl (the traffic flows' bundles sent and delivered)
    hosts/host-<i>.json   with ``emulation.agent_hosts``: each node host's HOST.json, and
    hosts/host-<i>.out    its stdout and stderr (the host's JSON log lines)
    apps/<app>/<node>/    stdout.log, stderr.log, result.json, usage.json, telemetry.jsonl
    captures/A_B.pcap     link captures, each with a sidecar A_B.pcap.json

:class:`RunDir` names these paths; nothing else should spell them.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from netemu.errors import InputError

RUN_NAME_RE = re.compile(r"^[a-z][a-z0-9]{0,7}$")
"""A run name: a lowercase letter, then up to 7 lowercase letters or digits. It prefixes
the hosts' namespace and interface names (``<run>-<node>``, 15-byte limit), MQTT topics
(``netemu/<run>/``) and directory names."""


def check_run_name(run: str) -> str:
    """``run`` when it is a valid run name (:data:`RUN_NAME_RE`), else :class:`InputError`."""
    if not isinstance(run, str) or not RUN_NAME_RE.match(run):
        raise InputError(f"run name {run!r} must be 1–8 characters: a lowercase letter, then "
                         "lowercase letters or digits", field="run_name")
    return run


def default_run_dir(scenario_name: str, stamp: str, *, root: Path | None = None) -> Path:
    """``<root>/runs/<scenario_name>-<stamp>`` (root: the working directory), refusing a
    name that is not a scenario name (it could climb out of ``runs/``)."""
    from netemu.plan.scenario import check_scenario_name  # numpy and sgp4 come with it

    check_scenario_name(scenario_name, field="scenario name")
    return (root if root is not None else Path.cwd()) / "runs" / f"{scenario_name}-{stamp}"


def read_events(path: Path) -> list[dict[str, Any]]:
    """The events of an ``events.jsonl`` file, in order: every line that is a JSON object;
    blank, truncated (a run may end mid-write) and other lines are skipped. A missing file
    has no events."""
    out: list[dict[str, Any]] = []
    try:
        f = open(path)  # noqa: SIM115 - closed below
    except FileNotFoundError:
        return out
    with f:
        for line in f:
            line = line.strip()
            if not line:
                continue
            try:
                ev = json.loads(line)
            except json.JSONDecodeError:
                continue
            if isinstance(ev, dict):
                out.append(ev)
    return out


@dataclass(frozen=True)
class RunDir:
    """A run's output directory (see the module docstring for its layout)."""

    path: Path

    def __post_init__(self) -> None:
        object.__setattr__(self, "path", Path(self.path))

    @classmethod
    def of_app_dir(cls, app_dir: Path) -> RunDir:
        """The run directory holding an app's output folder ``<run>/apps/<app>/<node>``."""
        return cls(Path(app_dir).resolve().parents[2])

    # --- files at the top ---------------------------------------------------------------

    @property
    def scenario_yaml(self) -> Path:
        return self.path / "scenario.yaml"

    @property
    def plan_json(self) -> Path:
        return self.path / "plan.json"

    @property
    def run_json(self) -> Path:
        return self.path / "run.json"

    @property
    def events_jsonl(self) -> Path:
        return self.path / "events.jsonl"

    @property
    def metrics_json(self) -> Path:
        return self.path / "metrics.json"

    @property
    def expect_json(self) -> Path:
        return self.path / "expect.json"

    @property
    def junit_xml(self) -> Path:
        return self.path / "junit.xml"

    @property
    def report_dir(self) -> Path:
        return self.path / "report"

    @property
    def report_index(self) -> Path:
        return self.report_dir / "index.html"

    @property
    def logs_dir(self) -> Path:
        return self.path / "logs"

    @property
    def mosquitto_log(self) -> Path:
        return self.logs_dir / "mosquitto.log"

    # --- agents -------------------------------------------------------------------------

    @property
    def agents_dir(self) -> Path:
        return self.path / "agents"

    def agent_dir(self, node: str) -> Path:
        return self.agents_dir / node

    def agent_config(self, node: str) -> Path:
        return self.agent_dir(node) / "agent.json"

    def agent_log(self, node: str) -> Path:
        """The agent's JSON-lines log (each line has both clocks: ``t`` wall, ``ts``)."""
        return self.agent_dir(node) / "agent.jsonl"

    def agent_out(self, node: str) -> Path:
        """The agent process's stdout and stderr."""
        return self.agent_dir(node) / "agent.out"

    def agent_store(self, node: str) -> Path:
        return self.agent_dir(node) / "store.sqlite"

    def agent_logs(self) -> list[Path]:
        """Every agent's ``agent.jsonl``, sorted by node."""
        return sorted(self.agents_dir.glob("*/agent.jsonl"))

    def agent_traffic(self, node: str) -> Path:
        """The node's record of traffic-flow bundles sent and delivered (JSON lines)."""
        return self.agent_dir(node) / "traffic.jsonl"

    def traffic_logs(self) -> list[Path]:
        """Every node's ``traffic.jsonl``, sorted by node."""
        return sorted(self.agents_dir.glob("*/traffic.jsonl"))

    @property
    def traffic_json(self) -> Path:
        """The run's traffic flows (``netemu.plan.traffic.Flow`` fields, by flow id)."""
        return self.path / "traffic.json"

    @property
    def traffic_flows_csv(self) -> Path:
        """Per-flow figures written with metrics.json."""
        return self.path / "traffic_flows.csv"

    @property
    def hosts_dir(self) -> Path:
        return self.path / "hosts"

    def host_config(self, index: int) -> Path:
        """Node host ``index``'s HOST.json (``emulation.agent_hosts``)."""
        return self.hosts_dir / f"host-{index}.json"

    def host_out(self, index: int) -> Path:
        """Node host ``index``'s stdout and stderr."""
        return self.hosts_dir / f"host-{index}.out"

    # --- apps ---------------------------------------------------------------------------

    @property
    def apps_dir(self) -> Path:
        return self.path / "apps"

    def app_dir(self, app: str, node: str) -> Path:
        """An app instance's output folder (its ``NETEMU_APP_DIR``)."""
        return self.apps_dir / app / node

    def app_files(self, app: str | None, name: str) -> Iterator[tuple[str, str, Path]]:
        """``(app, node, path)`` of each ``apps/<app>/<node>/<name>`` (any app when
        ``app`` is None), sorted."""
        if not self.apps_dir.is_dir():
            return
        for f in sorted(self.apps_dir.glob(f"{app or '*'}/*/{name}")):
            yield f.parent.parent.name, f.parent.name, f

    # --- captures -----------------------------------------------------------------------

    @property
    def captures_dir(self) -> Path:
        return self.path / "captures"

    def capture_pcap(self, a: str, b: str) -> Path:
        """Where the capture of link ``a``–``b`` goes."""
        return self.captures_dir / f"{a}_{b}.pcap"

    def pcaps(self) -> list[Path]:
        """The run's captures, sorted (none when there is no captures folder)."""
        if not self.captures_dir.is_dir():
            return []
        return sorted(self.captures_dir.glob("*.pcap"))

    # --- reading ------------------------------------------------------------------------

    def events(self) -> list[dict[str, Any]]:
        """The recorded events (:func:`read_events` of ``events.jsonl``)."""
        return read_events(self.events_jsonl)

    def plan(self) -> dict[str, Any] | None:
        """plan.json as JSON, ``None`` without one; invalid JSON raises InputError."""
        p = self.plan_json
        if not p.exists():
            return None
        try:
            return json.loads(p.read_text())
        except json.JSONDecodeError as e:
            raise InputError(f"not valid JSON: {e.msg}", source=str(p), line=e.lineno) from e
