"""Starting the view: for a live run (``--view`` on ``netemu run``/``demo``/``test``)
and for a finished run's record (``netemu view RUN_DIR``)."""

from __future__ import annotations

import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

from netemu.errors import InputError, NetemuError
from netemu.run.view.geo import Positions
from netemu.run.view.server import DEFAULT_HOST, ViewServer
from netemu.run.view.timeline import LiveTimeline, ReplayTimeline
from netemu.runtime.rundir import RunDir
from netemu.runtime.telemetry import TOPIC_ROOT, BrokerAccess


def live_view(access: BrokerAccess, plan: Any, scenario: Any | None,
              clock: Callable[[], Any], *, title: str = "", host: str = DEFAULT_HOST,
              port: int = 0) -> ViewServer:
    """A view of a running emulation: ``plan`` a ``ContactPlan``, ``scenario`` its
    ``Scenario`` (None for a plan file: no positions), ``clock()`` the run's
    ``ScenarioClock`` once there is one. Not started."""
    return ViewServer(LiveTimeline(access, clock), plan.to_json_obj(samples=False),
                      Positions(scenario), run=access.run, title=title, host=host,
                      port=port)


def replay_view(run_dir: Path, *, host: str = DEFAULT_HOST, port: int = 0,
                speed: float | None = None,
                warn: Callable[[str], None] = lambda s: print(s, file=sys.stderr)
                ) -> ViewServer:
    """A view that plays back a finished run from its record: ``plan.json`` (nodes,
    contacts), ``scenario.yaml`` (positions), ``events.jsonl`` (links, counters, apps),
    ``run.json`` (run name, window, time scale). Not started."""
    rd = RunDir(Path(run_dir))
    if not rd.path.is_dir():
        raise InputError(f"{run_dir}: not a directory (give a run directory: runs/<name>)")
    plan = rd.plan()
    if plan is None:
        raise InputError(f"{rd.plan_json}: missing: not a run directory, or the run "
                         "stopped before its plan was written")
    meta = _run_meta(rd)
    run = str(meta.get("run") or "")
    events = rd.events() if rd.events_jsonl.exists() else []
    if not run:  # the run name is the topic's second level
        run = next((e["topic"].split("/")[1] for e in events
                    if str(e.get("topic", "")).count("/") >= 2), "")
    window = meta.get("window") or {}
    times = [float(e["t_s"]) for e in events if isinstance(e.get("t_s"), (int, float))]
    t_min = float(window.get("start_s", min(times, default=0.0)))
    dur = window.get("duration_s")
    t_max = t_min + float(dur) if isinstance(dur, (int, float)) else max(times, default=t_min)
    scale = speed or float(window.get("time_scale") or 1.0)
    scenario = None
    if rd.scenario_yaml.exists():
        from netemu.plan.scenario import load_scenario

        try:
            scenario = load_scenario(rd.scenario_yaml)
        except NetemuError as e:  # the links and figures still replay; no markers
            warn(f"netemu view: no positions: {e}")
    timeline = ReplayTimeline(events, f"{TOPIC_ROOT}/{run}/", t_min_s=t_min,
                              t_max_s=max(t_max, t_min), speed=scale)
    return ViewServer(timeline, plan, Positions(scenario), run=run or rd.path.name,
                      title=f"{rd.path.name}", host=host, port=port)


def _run_meta(rd: RunDir) -> dict[str, Any]:
    import json

    try:
        meta = json.loads(rd.run_json.read_text())
    except (OSError, ValueError):
        return {}
    return meta if isinstance(meta, dict) else {}
