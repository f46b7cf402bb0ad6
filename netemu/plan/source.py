"""Where a contact plan comes from: a scenario (the plan is computed from the orbits) or a
contact-plan file (netemu JSON or ION lines), read one way for every command.

A ``.yaml``/``.yml`` file is a scenario; anything else is a plan file.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

from netemu.errors import InputError
from netemu.plan.contacts import ContactPlan
from netemu.plan.scenario import Scenario, load_scenario
from netemu.plan.schedule import Progress, compute_plan

SCENARIO_SUFFIXES = (".yaml", ".yml")


def is_scenario_path(path: str | Path) -> bool:
    """A scenario file by its name (``.yaml``/``.yml``, any case)."""
    return Path(path).suffix.lower() in SCENARIO_SUFFIXES


@dataclass
class PlanSource:
    """A scenario or a plan file, read and checked; :meth:`plan` gives its contact plan.

    Exactly one of ``scenario`` and ``file_plan`` is set.
    """

    path: Path
    scenario: Scenario | None = None
    file_plan: ContactPlan | None = None

    @classmethod
    def open(cls, path: str | Path, *, epoch: datetime | None = None,
             strict: bool = False) -> PlanSource:
        """Read a scenario or a plan file (``epoch``: of a relative ION plan, default its
        ``# netemu contact plan, epoch`` comment, else 2000-01-01)."""
        p = Path(path)
        if not p.exists():
            raise InputError("no such file", source=str(p))
        if is_scenario_path(p):
            return cls(p, scenario=load_scenario(p))
        return cls(p, file_plan=ContactPlan.load(p, epoch=epoch, strict=strict))

    @property
    def time_scale(self) -> float:
        """The scenario's time scale; 1 for a plan file."""
        return self.scenario.time_scale if self.scenario is not None else 1.0

    @property
    def duration_s(self) -> float | None:
        """The scenario's duration; None for a plan file."""
        return self.scenario.duration_s if self.scenario is not None else None

    def plan(self, *, start_s: float = 0.0, duration_s: float | None = None,
             progress: Progress | None = None, window_file_plan: bool = False) -> ContactPlan:
        """The contact plan over [start_s, start_s + duration_s] (default: to the end).

        A scenario's plan is computed for that window. A plan file's plan is returned
        whole, or with ``window_file_plan`` only the contacts up in the window.
        """
        if self.scenario is not None:
            return compute_plan(self.scenario, start_s=start_s, duration_s=duration_s,
                                progress=progress)
        assert self.file_plan is not None
        if window_file_plan and (start_s or duration_s is not None):
            end = start_s + duration_s if duration_s is not None else float("inf")
            return self.file_plan.window(start_s, end)
        return self.file_plan


def load_plan_source(path: str | Path, *, start_s: float = 0.0,
                     duration_s: float | None = None,
                     epoch: datetime | None = None) -> tuple[Scenario | None, ContactPlan]:
    """(scenario or None, contact plan) of a scenario or plan file, in one call: see
    :class:`PlanSource` to check the window against the scenario first."""
    src = PlanSource.open(path, epoch=epoch)
    return src.scenario, src.plan(start_s=start_s, duration_s=duration_s)
