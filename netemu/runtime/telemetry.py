"""Telemetry clients: how a process reaches the run's MQTT broker and publishes to it.

The broker (mosquitto on a Unix socket, started with the recorder by
:mod:`netemu.run.broker`) is reached from any emulated host without crossing, or loading,
the emulated links: a network namespace shares the filesystem. Each run has its own random
credentials, confined to the run's topics ``netemu/<run>/#``.

Processes started by netemu find the broker through environment variables
(``NETEMU_MQTT_SOCKET``, ``NETEMU_MQTT_USER``, ``NETEMU_MQTT_PASSWORD``, ``NETEMU_RUN``;
see :mod:`netemu.runtime.env`):

    async with Telemetry.from_env() as t:
        await t.publish("app/eo-filter/sat-1", {"event": "tile", "vessels": 2})
"""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from netemu.errors import InputError, NetemuError
from netemu.runtime.clock import DTN_EPOCH, ScenarioClock
from netemu.runtime.env import (
    NETEMU_MQTT_HOST,
    NETEMU_MQTT_PASSWORD,
    NETEMU_MQTT_SOCKET,
    NETEMU_MQTT_TCP_PORT,
    NETEMU_MQTT_USER,
    NETEMU_NODE,
    NETEMU_RUN,
)

TOPIC_ROOT = "netemu"
"""Every topic of run ``r`` is under ``netemu/r/``."""
USERNAME = "netemu"


class TelemetryError(NetemuError):
    """The broker could not start, or a client could not reach it."""


# --------------------------------------------------------------------------- access


@dataclass(frozen=True)
class BrokerAccess:
    """How a client reaches the run's broker: socket path, credentials, run name; with
    ``tcp_host`` (a cluster run's agents on other hosts) by TCP to ``tcp_host:tcp_port``
    instead of the socket."""

    socket_path: str
    username: str
    password: str
    run: str
    tcp_port: int | None = None
    tcp_host: str | None = None

    @property
    def where(self) -> str:
        """Where clients of this access connect, for messages."""
        return f"{self.tcp_host}:{self.tcp_port}" if self.tcp_host else self.socket_path

    @property
    def topic_prefix(self) -> str:
        return f"{TOPIC_ROOT}/{self.run}"

    def env(self) -> dict[str, str]:
        """The environment variables a process in a host needs to publish."""
        env = {
            NETEMU_RUN: self.run,
            NETEMU_MQTT_USER: self.username,
            NETEMU_MQTT_PASSWORD: self.password,
        }
        if self.socket_path:
            env[NETEMU_MQTT_SOCKET] = self.socket_path
        if self.tcp_port is not None:
            env[NETEMU_MQTT_TCP_PORT] = str(self.tcp_port)
        if self.tcp_host is not None:
            env[NETEMU_MQTT_HOST] = self.tcp_host
        return env

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> BrokerAccess:
        """The access described by the ``NETEMU_MQTT_*`` variables (default:
        ``os.environ``); :class:`TelemetryError` names any that is missing, and a
        malformed port is an :class:`InputError`."""
        env = os.environ if env is None else env
        host = env.get(NETEMU_MQTT_HOST) or None
        needed = (NETEMU_RUN, NETEMU_MQTT_USER, NETEMU_MQTT_PASSWORD) + (
            () if host else (NETEMU_MQTT_SOCKET,))
        missing = [k for k in needed if not env.get(k)]
        if missing:
            raise TelemetryError(
                "telemetry: environment variables not set: "
                + ", ".join(missing)
                + " (netemu sets them for processes it starts in a host)"
            )
        port = env.get(NETEMU_MQTT_TCP_PORT)
        if port and not port.isdigit():
            raise InputError(f"not a port number: {port!r}", source="environment",
                             field=NETEMU_MQTT_TCP_PORT)
        if host and not port:
            raise InputError(f"{NETEMU_MQTT_HOST} is set, so a port is needed",
                             source="environment", field=NETEMU_MQTT_TCP_PORT)
        return cls(
            socket_path=env.get(NETEMU_MQTT_SOCKET, ""),
            username=env[NETEMU_MQTT_USER],
            password=env[NETEMU_MQTT_PASSWORD],
            run=env[NETEMU_RUN],
            tcp_port=int(port) if port else None,
            tcp_host=host,
        )


# --------------------------------------------------------------------------- clock


def scenario_clock_from_env(env: Mapping[str, str] | None = None) -> Callable[[], float]:
    """Scenario seconds now, from the host's clock variables; a variable that is not set
    counts as wall time since this call at scale 1 (so outside netemu, ``t_s`` is seconds
    since the publisher was made)."""
    default = ScenarioClock(DTN_EPOCH, 1.0, time.time(), 0.0)
    return ScenarioClock.from_env(env, default=default).now_s


# --------------------------------------------------------------------------- clients


def _paho_client(access: BrokerAccess, client_id: str | None):
    import paho.mqtt.client as mqtt

    c = mqtt.Client(
        mqtt.CallbackAPIVersion.VERSION2,
        client_id=client_id or f"netemu-{os.getpid()}-{secrets.token_hex(4)}",
        transport="tcp" if access.tcp_host else "unix",
    )
    c.username_pw_set(access.username, access.password)
    return c


def _connect_sync(client: Any, access: BrokerAccess, timeout_s: float) -> None:
    """Connect and wait for CONNACK; a refusal (bad credentials) raises."""
    done = threading.Event()
    result: dict[str, Any] = {}

    def on_connect(_c, _u, _flags, reason_code, _props=None):
        result["rc"] = reason_code
        done.set()

    def on_disconnect(_c, _u, _flags, reason_code, _props=None):
        result.setdefault("rc", reason_code)
        done.set()

    client.on_connect = on_connect
    client.on_disconnect = on_disconnect
    try:
        if access.tcp_host:
            client.connect(access.tcp_host, access.tcp_port or 1883, keepalive=30)
        else:
            client.connect(access.socket_path, 1883, keepalive=30)  # port unused on unix
    except OSError as e:
        raise TelemetryError(f"cannot reach MQTT broker at {access.where}: {e}") from e
    client.loop_start()
    if not done.wait(timeout_s):
        client.loop_stop()
        raise TelemetryError(f"no answer from MQTT broker at {access.where}")
    rc = result.get("rc")
    if rc is None or getattr(rc, "is_failure", False) or (isinstance(rc, int) and rc != 0):
        client.loop_stop()
        with contextlib.suppress(Exception):
            client.disconnect()
        raise TelemetryError(f"MQTT broker refused the connection: {rc}")


class SyncPublisher:
    """A blocking publisher (paho network thread) for code without an event loop:
    the emulator's driver, the orchestrator."""

    def __init__(
        self,
        access: BrokerAccess,
        *,
        client_id: str | None = None,
        clock: Callable[[], float] | None = None,
        timeout_s: float = 5.0,
    ) -> None:
        self.access = access
        self.clock = clock
        self._client = _paho_client(access, client_id)
        _connect_sync(self._client, access, timeout_s)

    def publish(self, topic_suffix: str, payload: Mapping[str, Any], qos: int = 1) -> None:
        body = dict(payload)
        if "t_s" not in body and self.clock is not None:
            body["t_s"] = self.clock()
        self._client.publish(
            f"{self.access.topic_prefix}/{topic_suffix}", json.dumps(body), qos=qos
        )

    def close(self) -> None:
        with contextlib.suppress(Exception):
            self._client.disconnect()
        self._client.loop_stop()


class Telemetry:
    """Async publisher for apps and agents (aiomqtt over the broker's Unix socket).

    ``publish`` adds ``t_s`` (scenario seconds, from the host's clock env vars) when the
    payload has none. Use as ``async with Telemetry.from_env() as t``; ``publish`` also
    connects on first use.
    """

    def __init__(
        self,
        access: BrokerAccess,
        *,
        clock: Callable[[], float] | None = None,
        client_id: str | None = None,
    ) -> None:
        self.access = access
        self.clock = clock
        self.client_id = client_id
        self._client: Any = None

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> Telemetry:
        env = os.environ if env is None else env
        node = env.get(NETEMU_NODE, "")
        cid = f"{node or 'proc'}-{os.getpid()}-{secrets.token_hex(3)}"
        return cls(BrokerAccess.from_env(env), clock=scenario_clock_from_env(env), client_id=cid)

    async def connect(self) -> None:
        import aiomqtt

        if self._client is not None:
            return
        a = self.access
        client = aiomqtt.Client(
            a.tcp_host or a.socket_path,
            (a.tcp_port or 1883) if a.tcp_host else 1883,  # unused with the unix transport
            username=a.username,
            password=a.password,
            identifier=self.client_id,
            transport="tcp" if a.tcp_host else "unix",
        )
        try:
            await client.__aenter__()
        except aiomqtt.MqttError as e:
            raise TelemetryError(f"MQTT broker at {a.where}: {e}") from e
        self._client = client

    async def publish(self, topic_suffix: str, payload: Mapping[str, Any], qos: int = 1) -> None:
        if self._client is None:
            await self.connect()
        body = dict(payload)
        if "t_s" not in body and self.clock is not None:
            body["t_s"] = self.clock()
        await self._client.publish(
            f"{self.access.topic_prefix}/{topic_suffix}", json.dumps(body), qos=qos
        )

    async def close(self) -> None:
        if self._client is not None:
            client, self._client = self._client, None
            with contextlib.suppress(Exception):
                await client.__aexit__(None, None, None)

    async def __aenter__(self) -> Telemetry:
        await self.connect()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()
