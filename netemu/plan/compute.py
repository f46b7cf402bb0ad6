"""The compute each kind of node flies: a scenario's ``compute:`` section.

    compute:
      satellites: {tops: 744}            # e.g. Three-Body: 744 TOPS per satellite
      ground: {tops: 50, efficiency: 0.5}
      host_tops: 0.05                    # calibration for work reported as host time

An app's inference reports its work in operations (or in seconds of host CPU, turned into
operations with ``host_tops``); the node's compute turns that into scenario seconds:
``ops / (tops × 1e12 × efficiency)``, whatever the time scale and whatever this machine's
CPU took. ``efficiency`` is the share of the peak rate a real model reaches (default 1).
A node kind with no entry has no modelled compute: its apps' answers take the host's own
time, as before.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from netemu.config import Fields

COMPUTE_KINDS = {"satellites": "satellite", "ground": "ground"}
"""Keys of ``compute:`` and the node kind each one sets."""
DEFAULT_HOST_TOPS = 0.01
"""One core of a current x86 CPU on float32 inference: about 10 GOPS."""


@dataclass(frozen=True)
class NodeCompute:
    """One node kind's accelerator: peak ``tops`` and the ``efficiency`` reached."""

    tops: float
    efficiency: float = 1.0

    @property
    def ops_per_s(self) -> float:
        return self.tops * 1e12 * self.efficiency


@dataclass(frozen=True)
class ComputeSpec:
    """The ``compute:`` section: per node kind (``satellite``, ``ground``), and the host's
    calibration."""

    kinds: dict[str, NodeCompute] = field(default_factory=dict)
    host_tops: float = DEFAULT_HOST_TOPS

    def for_kind(self, kind: str) -> NodeCompute | None:
        return self.kinds.get(kind)

    @property
    def host_ops_per_s(self) -> float:
        return self.host_tops * 1e12


def parse_compute(section: Fields | Any) -> ComputeSpec | None:
    """A scenario's ``compute:`` section (``Scenario.section("compute")``); None when absent.
    Errors name the file, line and field."""
    f = section if isinstance(section, Fields) else Fields(section, source="scenario",
                                                           path="compute")
    if f.is_none():
        return None
    if not isinstance(f.value, dict):
        raise f.error("expected a mapping such as {satellites: {tops: 744}, ground: {tops: 50}}")
    f.check_keys((*COMPUTE_KINDS, "host_tops"))
    kinds: dict[str, NodeCompute] = {}
    for key, kind in COMPUTE_KINDS.items():
        c = f.child(key)
        if c.is_none():
            continue
        if not isinstance(c.value, dict):
            raise f.error("expected a mapping such as {tops: 744}", key)
        c.check_keys(("tops", "efficiency"), required=("tops",))
        tops = c.number("tops", lo=0, lo_open=True, hi=1e9, required=True)
        eff = c.number("efficiency", default=1.0, lo=0, lo_open=True, hi=1.0)
        kinds[kind] = NodeCompute(float(tops), float(eff))  # type: ignore[arg-type]
    host = f.number("host_tops", default=DEFAULT_HOST_TOPS, lo=0, lo_open=True, hi=1e9)
    return ComputeSpec(kinds, float(host))  # type: ignore[arg-type]
