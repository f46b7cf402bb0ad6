"""A scenario's ``telemetry:`` section: how much the bundle agents publish, and how much of
it the recorder keeps.

::

    telemetry:
      counters_s: 10            # counters/<node> every 10 scenario seconds (0: none)
      bundle_events: auto       # bundle/<node> per bundle event: auto | on | off
      max_bundle_events: 100000 # per-bundle lines events.jsonl keeps (then counted only)

``auto`` publishes per-bundle events when the run has at most
:data:`BUNDLE_EVENTS_AUTO_MAX_AGENTS` agent nodes. The runner hands the choice to the
agents through their environment (:meth:`TelemetrySettings.host_env`, the
``NETEMU_COUNTERS_S`` and ``NETEMU_BUNDLE_EVENTS`` variables) and the cap to the
:class:`~netemu.run.broker.Recorder`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from netemu.config import Fields
from netemu.runtime.env import DEFAULT_COUNTERS_S

TELEMETRY_KEYS = ("counters_s", "bundle_events", "max_bundle_events")
BUNDLE_EVENTS_CHOICES = ("auto", "on", "off")
BUNDLE_EVENTS_AUTO_MAX_AGENTS = 100
"""``bundle_events: auto`` is on up to this many agent nodes, off above."""
DEFAULT_MAX_BUNDLE_EVENTS = 100_000
"""Per-bundle messages events.jsonl keeps by default (about 30 MB)."""


@dataclass(frozen=True)
class TelemetrySettings:
    counters_s: float = DEFAULT_COUNTERS_S
    bundle_events: str = "auto"
    max_bundle_events: int = DEFAULT_MAX_BUNDLE_EVENTS

    def bundle_events_for(self, agents: int) -> bool:
        """Whether agents publish ``bundle/<node>`` events in a run with ``agents`` agent
        nodes."""
        if self.bundle_events == "auto":
            return agents <= BUNDLE_EVENTS_AUTO_MAX_AGENTS
        return self.bundle_events == "on"

    def host_env(self, agents: int) -> dict[str, Any]:
        """The :class:`~netemu.runtime.env.HostEnv` fields for the agents of a run with
        ``agents`` agent nodes: ``dataclasses.replace(run_env, **s.host_env(n))``."""
        return {"counters_s": self.counters_s, "bundle_events": self.bundle_events_for(agents)}


def parse_telemetry(section: Fields) -> TelemetrySettings:
    """The ``telemetry:`` section (``Scenario.section("telemetry")``); absent: defaults.
    Errors name the file, line and key."""
    if section.is_none():
        return TelemetrySettings()
    section.check_keys(TELEMETRY_KEYS)
    counters_s = section.number("counters_s", default=DEFAULT_COUNTERS_S, lo=0.0)
    raw = section.get("bundle_events")
    if isinstance(raw, bool):  # YAML 1.1 reads on/off as booleans
        mode = "on" if raw else "off"
    else:
        mode = section.enum("bundle_events", BUNDLE_EVENTS_CHOICES, default="auto") or "auto"
    cap = section.integer("max_bundle_events", default=DEFAULT_MAX_BUNDLE_EVENTS, lo=0)
    assert counters_s is not None and cap is not None
    return TelemetrySettings(counters_s, mode, cap)
