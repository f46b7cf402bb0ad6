"""Every ``NETEMU_*`` environment variable, in one place.

netemu hands a process it starts inside an emulated host (a bundle agent, an app) what it
needs through its environment. The side that starts processes builds a :class:`HostEnv`
and calls :meth:`HostEnv.to_env`; the process reads it back with :meth:`HostEnv.from_env`.
Three more variables configure netemu itself on the machine (:func:`registry_dir`,
:func:`socket_dir`); they are not passed into hosts.

Each constant's value is the variable's name, so ``grep NETEMU_NODE`` finds both.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from netemu.errors import InputError
from netemu.runtime.clock import (
    NETEMU_CLOCK_FILE,
    NETEMU_EPOCH,
    NETEMU_T0_S,
    NETEMU_T0_WALL,
    NETEMU_TIME_SCALE,
    ScenarioClock,
)

if TYPE_CHECKING:
    from netemu.runtime.telemetry import BrokerAccess

__all__ = [
    "NETEMU_APP", "NETEMU_APP_DIR", "NETEMU_APP_MODEL", "NETEMU_APP_PARAMS",
    "NETEMU_BASE_IMAGE", "NETEMU_BP_SOCKET", "NETEMU_BUNDLE_EVENTS", "NETEMU_CLOCK_FILE",
    "NETEMU_COMPUTE_OPS_PER_S",
    "NETEMU_COUNTERS_S", "NETEMU_DTN_SOCKET", "NETEMU_EPOCH",
    "NETEMU_HOST_OPS_PER_S", "NETEMU_MQTT_HOST", "NETEMU_MQTT_PASSWORD", "NETEMU_MQTT_SOCKET",
    "NETEMU_MQTT_TCP_PORT", "NETEMU_MQTT_USER", "NETEMU_NODE", "NETEMU_NODE_ADDR",
    "NETEMU_REGISTRY_DIR", "NETEMU_RUN", "NETEMU_RUN_DIR", "NETEMU_SOCKET_DIR", "NETEMU_T0_S",
    "NETEMU_T0_WALL", "NETEMU_TIME_SCALE", "NETEMU_TLE_LINE1", "NETEMU_TLE_LINE2",
    "NETEMU_WINDOW_END_S", "NETEMU_WINDOW_START_S", "ALL_NAMES", "DEFAULT_COUNTERS_S",
    "DEFAULT_REGISTRY_DIR",
    "DEFAULT_SOCKET_DIR", "HostEnv", "registry_dir", "socket_dir",
]

# --------------------------------------------------------------------------- who and where

NETEMU_RUN = "NETEMU_RUN"
"""Run name (``check_run_name``): prefix of the hosts' namespaces ``<run>-<node>`` and of
the telemetry topics ``netemu/<run>/``."""
NETEMU_NODE = "NETEMU_NODE"
"""Name of the node (plan node) whose host the process runs in."""
NETEMU_NODE_ADDR = "NETEMU_NODE_ADDR"
"""The node's own IPv4 address (its loopback-style node address, dotted quad)."""
NETEMU_RUN_DIR = "NETEMU_RUN_DIR"
"""The run's output directory (``runs/<scenario>-<stamp>/``, see ``RunDir``): plan.json,
scenario.yaml, events.jsonl ... Absolute path."""

# --------------------------------------------------------------------------- scenario clock
# NETEMU_EPOCH, NETEMU_TIME_SCALE, NETEMU_T0_WALL, NETEMU_T0_S: defined (and documented)
# in netemu.runtime.clock, the one parser of them (ScenarioClock.from_env); re-exported here:
#   NETEMU_EPOCH       scenario epoch, ISO 8601 UTC ("2026-01-01T00:00:00Z")
#   NETEMU_TIME_SCALE  scenario seconds per wall second (float; 1 = real time)
#   NETEMU_T0_WALL     Unix wall time (s) at which scenario time was NETEMU_T0_S
#   NETEMU_T0_S        scenario seconds from the epoch at NETEMU_T0_WALL (default 0)
#   NETEMU_CLOCK_FILE  optional: the run's clock file (ClockFile), whose mapping replaces
#                      the two above while the run goes on: a paused run stands still

# --------------------------------------------------------------------------- bundle agent

NETEMU_DTN_SOCKET = "NETEMU_DTN_SOCKET"
"""Path of the node's bundle agent application socket (Unix stream socket). Current name."""
NETEMU_BP_SOCKET = "NETEMU_BP_SOCKET"
"""Older name of :data:`NETEMU_DTN_SOCKET`, still read (never written) so that scripts
that set it keep working; ``NETEMU_DTN_SOCKET`` wins when both are set."""

# --------------------------------------------------------------------------- telemetry

NETEMU_MQTT_SOCKET = "NETEMU_MQTT_SOCKET"
"""Path of the run's MQTT broker Unix socket."""
NETEMU_MQTT_USER = "NETEMU_MQTT_USER"
"""MQTT user name of the run."""
NETEMU_MQTT_PASSWORD = "NETEMU_MQTT_PASSWORD"
"""MQTT password of the run (random per run)."""
NETEMU_MQTT_TCP_PORT = "NETEMU_MQTT_TCP_PORT"
"""TCP port of the broker's optional listener on 127.0.0.1 (root namespace only); unset
when there is none."""
NETEMU_MQTT_HOST = "NETEMU_MQTT_HOST"
"""Address of the broker's TCP listener, for clients on another host of a cluster run
(they connect there, to ``NETEMU_MQTT_TCP_PORT``, instead of the Unix socket)."""
NETEMU_COUNTERS_S = "NETEMU_COUNTERS_S"
"""Bundle agents: scenario seconds between two ``counters/<node>`` messages (the
scenario's ``telemetry.counters_s``); ``0`` turns them off. Unset: every
:data:`DEFAULT_COUNTERS_S`."""
NETEMU_BUNDLE_EVENTS = "NETEMU_BUNDLE_EVENTS"
"""Bundle agents: ``1`` publishes a ``bundle/<node>`` event per bundle event, ``0`` does
not (the scenario's ``telemetry.bundle_events``, ``auto`` resolved by the runner). Unset:
``1``, as a single agent started by hand always did."""

# --------------------------------------------------------------------------- apps

NETEMU_APP = "NETEMU_APP"
"""Name of the app (its manifest's ``name``)."""
NETEMU_APP_DIR = "NETEMU_APP_DIR"
"""The app instance's output folder ``<run>/apps/<app>/<node>/`` (absolute path)."""
NETEMU_APP_PARAMS = "NETEMU_APP_PARAMS"
"""The scenario's ``params`` for the app: a JSON object."""
NETEMU_APP_MODEL = "NETEMU_APP_MODEL"
"""The app's ONNX model file (its manifest's ``model:``, absolute path)."""
NETEMU_COMPUTE_OPS_PER_S = "NETEMU_COMPUTE_OPS_PER_S"
"""The node's modelled compute (the scenario's ``compute:`` for its kind), operations per
scenario second; unset: the node has no modelled compute."""
NETEMU_HOST_OPS_PER_S = "NETEMU_HOST_OPS_PER_S"
"""Calibration: operations per second of host CPU, for work an app reports as host time."""
NETEMU_WINDOW_START_S = "NETEMU_WINDOW_START_S"
"""Start of the emulated window, scenario seconds from the epoch."""
NETEMU_WINDOW_END_S = "NETEMU_WINDOW_END_S"
"""End of the emulated window, scenario seconds from the epoch."""
NETEMU_TLE_LINE1 = "NETEMU_TLE_LINE1"
"""eo-filter only: first line of the satellite's TLE (set by the user, e.g. in the app's
``environment``); with :data:`NETEMU_TLE_LINE2` it overrides the scenario's orbit."""
NETEMU_TLE_LINE2 = "NETEMU_TLE_LINE2"
"""eo-filter only: second line of the satellite's TLE."""

# --------------------------------------------------------------------------- the machine

NETEMU_REGISTRY_DIR = "NETEMU_REGISTRY_DIR"
"""Root of the run registry (what each live run built, for ``netemu clean``); default
:data:`DEFAULT_REGISTRY_DIR`. Read by netemu itself, not passed into hosts."""
NETEMU_SOCKET_DIR = "NETEMU_SOCKET_DIR"
"""Root of the bundle agents' default app sockets ``<dir>/<node>/bp.sock`` (used when an
agent's config names none); default :data:`DEFAULT_SOCKET_DIR`."""

NETEMU_BASE_IMAGE = "NETEMU_BASE_IMAGE"
"""A local podman image to use as container apps' base instead of building it from this
machine's Python (``netemu.run.apps.image``). Read by netemu itself."""

DEFAULT_REGISTRY_DIR = "/run/netemu"
DEFAULT_COUNTERS_S = 10.0
DEFAULT_SOCKET_DIR = "/run/netemu"

ALL_NAMES: tuple[str, ...] = (
    NETEMU_RUN, NETEMU_NODE, NETEMU_NODE_ADDR, NETEMU_RUN_DIR,
    NETEMU_EPOCH, NETEMU_TIME_SCALE, NETEMU_T0_WALL, NETEMU_T0_S, NETEMU_CLOCK_FILE,
    NETEMU_DTN_SOCKET, NETEMU_BP_SOCKET,
    NETEMU_MQTT_SOCKET, NETEMU_MQTT_USER, NETEMU_MQTT_PASSWORD, NETEMU_MQTT_TCP_PORT,
    NETEMU_MQTT_HOST, NETEMU_COUNTERS_S, NETEMU_BUNDLE_EVENTS,
    NETEMU_APP, NETEMU_APP_DIR, NETEMU_APP_PARAMS, NETEMU_WINDOW_START_S, NETEMU_WINDOW_END_S,
    NETEMU_APP_MODEL, NETEMU_COMPUTE_OPS_PER_S, NETEMU_HOST_OPS_PER_S,
    NETEMU_TLE_LINE1, NETEMU_TLE_LINE2,
    NETEMU_REGISTRY_DIR, NETEMU_SOCKET_DIR, NETEMU_BASE_IMAGE,
)
"""Every variable netemu reads or writes."""

_MQTT_NAMES = (NETEMU_RUN, NETEMU_MQTT_USER, NETEMU_MQTT_PASSWORD)
"""These and the socket or the TCP host say where the broker is."""


def registry_dir(environ: Mapping[str, str] | None = None) -> Path:
    """Root of the run registry: ``$NETEMU_REGISTRY_DIR``, else ``/run/netemu``."""
    env = os.environ if environ is None else environ
    return Path(env.get(NETEMU_REGISTRY_DIR) or DEFAULT_REGISTRY_DIR)


def socket_dir(environ: Mapping[str, str] | None = None) -> Path:
    """Root of the agents' default app sockets: ``$NETEMU_SOCKET_DIR``, else ``/run/netemu``."""
    env = os.environ if environ is None else environ
    return Path(env.get(NETEMU_SOCKET_DIR) or DEFAULT_SOCKET_DIR)


def _float(env: Mapping[str, str], name: str) -> float | None:
    raw = env.get(name)
    if not raw:
        return None
    try:
        return float(raw)
    except ValueError as e:
        raise InputError(f"not a number: {raw!r}", source="environment", field=name) from e


def _counters_s(env: Mapping[str, str]) -> float | None:
    v = _float(env, NETEMU_COUNTERS_S)
    if v is not None and not (v >= 0 and v != float("inf")):
        raise InputError(f"must be a number of seconds >= 0, not {env[NETEMU_COUNTERS_S]!r}",
                         source="environment", field=NETEMU_COUNTERS_S)
    return v


def _positive(env: Mapping[str, str], name: str) -> float | None:
    v = _float(env, name)
    if v is not None and not v > 0:
        raise InputError(f"must be a number > 0, not {env[name]!r}", source="environment",
                         field=name)
    return v


def _flag(env: Mapping[str, str], name: str) -> bool | None:
    raw = env.get(name)
    if not raw:
        return None
    if raw in ("1", "0"):
        return raw == "1"
    raise InputError(f"must be 1 or 0, not {raw!r}", source="environment", field=name)


@dataclass(frozen=True)
class HostEnv:
    """What netemu tells a process in an emulated host; every field is optional (``None``
    when its variable is not set), so the same code also runs outside netemu.

    ``clock`` is set when both ``NETEMU_EPOCH`` and ``NETEMU_T0_WALL`` are; ``mqtt`` when
    all of ``NETEMU_RUN``, ``NETEMU_MQTT_USER``, ``NETEMU_MQTT_PASSWORD`` and
    ``NETEMU_MQTT_SOCKET`` (or ``NETEMU_MQTT_HOST``) are.
    """

    run: str | None = None
    node: str | None = None
    node_addr: str | None = None
    run_dir: Path | None = None
    clock: ScenarioClock | None = None
    dtn_socket: str | None = None
    mqtt: BrokerAccess | None = None
    app: str | None = None
    app_dir: Path | None = None
    app_params: dict[str, Any] | None = None
    window_start_s: float | None = None
    window_end_s: float | None = None
    counters_s: float | None = None  # None: DEFAULT_COUNTERS_S; 0: no counters
    bundle_events: bool | None = None  # None: on
    app_model: Path | None = None
    compute_ops_per_s: float | None = None  # None: no modelled compute
    host_ops_per_s: float | None = None

    @property
    def counters_interval_s(self) -> float:
        """Scenario seconds between counter messages (0: none)."""
        return DEFAULT_COUNTERS_S if self.counters_s is None else self.counters_s

    @property
    def bundle_events_on(self) -> bool:
        """Whether agents publish ``bundle/<node>`` events (on unless told otherwise)."""
        return self.bundle_events is not False

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> HostEnv:
        """Read the ``NETEMU_*`` variables (default: ``os.environ``). A malformed value
        raises :class:`InputError` naming the variable."""
        from netemu.runtime.telemetry import BrokerAccess

        env = os.environ if environ is None else environ
        clock = None
        if env.get(NETEMU_EPOCH) and env.get(NETEMU_T0_WALL):
            clock = ScenarioClock.from_env(env)
        mqtt = (BrokerAccess.from_env(env) if all(env.get(k) for k in _MQTT_NAMES)
                and (env.get(NETEMU_MQTT_SOCKET) or env.get(NETEMU_MQTT_HOST)) else None)
        params = None
        raw = env.get(NETEMU_APP_PARAMS)
        if raw:
            try:
                params = json.loads(raw)
            except json.JSONDecodeError as e:
                raise InputError(f"not JSON: {e}", source="environment",
                                 field=NETEMU_APP_PARAMS) from e
            if not isinstance(params, dict):
                raise InputError("must be a JSON object", source="environment",
                                 field=NETEMU_APP_PARAMS)
        return cls(
            run=env.get(NETEMU_RUN) or None,
            node=env.get(NETEMU_NODE) or None,
            node_addr=env.get(NETEMU_NODE_ADDR) or None,
            run_dir=Path(env[NETEMU_RUN_DIR]) if env.get(NETEMU_RUN_DIR) else None,
            clock=clock,
            dtn_socket=env.get(NETEMU_DTN_SOCKET) or env.get(NETEMU_BP_SOCKET) or None,
            mqtt=mqtt,
            app=env.get(NETEMU_APP) or None,
            app_dir=Path(env[NETEMU_APP_DIR]) if env.get(NETEMU_APP_DIR) else None,
            app_params=params,
            window_start_s=_float(env, NETEMU_WINDOW_START_S),
            window_end_s=_float(env, NETEMU_WINDOW_END_S),
            counters_s=_counters_s(env),
            bundle_events=_flag(env, NETEMU_BUNDLE_EVENTS),
            app_model=Path(env[NETEMU_APP_MODEL]) if env.get(NETEMU_APP_MODEL) else None,
            compute_ops_per_s=_positive(env, NETEMU_COMPUTE_OPS_PER_S),
            host_ops_per_s=_positive(env, NETEMU_HOST_OPS_PER_S),
        )

    def to_env(self) -> dict[str, str]:
        """The variables for a process started with this environment (set fields only).
        ``HostEnv.from_env(h.to_env())`` gives ``h`` back (the clock's ``t0_wall`` to the
        microsecond)."""
        env: dict[str, str] = {}
        if self.clock is not None:
            env.update(self.clock.to_env())
        if self.mqtt is not None:
            env.update(self.mqtt.env())
        for name, value in ((NETEMU_RUN, self.run), (NETEMU_NODE, self.node),
                            (NETEMU_NODE_ADDR, self.node_addr), (NETEMU_RUN_DIR, self.run_dir),
                            (NETEMU_DTN_SOCKET, self.dtn_socket), (NETEMU_APP, self.app),
                            (NETEMU_APP_DIR, self.app_dir), (NETEMU_APP_MODEL, self.app_model)):
            if value is not None:
                env[name] = str(value)
        if self.app_params is not None:
            env[NETEMU_APP_PARAMS] = json.dumps(self.app_params, sort_keys=True)
        if self.window_start_s is not None:
            env[NETEMU_WINDOW_START_S] = repr(float(self.window_start_s))
        if self.window_end_s is not None:
            env[NETEMU_WINDOW_END_S] = repr(float(self.window_end_s))
        if self.counters_s is not None:
            env[NETEMU_COUNTERS_S] = repr(float(self.counters_s))
        if self.bundle_events is not None:
            env[NETEMU_BUNDLE_EVENTS] = "1" if self.bundle_events else "0"
        if self.compute_ops_per_s is not None:
            env[NETEMU_COMPUTE_OPS_PER_S] = repr(float(self.compute_ops_per_s))
        if self.host_ops_per_s is not None:
            env[NETEMU_HOST_OPS_PER_S] = repr(float(self.host_ops_per_s))
        return env
