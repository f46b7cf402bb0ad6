"""Telemetry plane: one MQTT broker per run, a publisher for every process, a recorder.

The broker is mosquitto listening on a Unix socket, so a client in any emulated host (a
network namespace shares the filesystem) reaches it without crossing, or loading, the
emulated links. Authentication is always on: each run gets its own random credentials, and
an ACL confines them to the run's topics ``netemu/<run>/#``. An optional TCP listener on
127.0.0.1 (same credentials) serves dashboards in the root namespace.

Processes started by netemu find the broker through environment variables
(``NETEMU_MQTT_SOCKET``, ``NETEMU_MQTT_USER``, ``NETEMU_MQTT_PASSWORD``, ``NETEMU_RUN``):

    async with Telemetry.from_env() as t:
        await t.publish("app/eo-filter/sat-1", {"event": "tile", "vessels": 2})

The recorder subscribes to ``netemu/<run>/#`` and appends every message to
``events.jsonl`` as ``{"t_s", "wall", "topic", "payload"}``.
"""

from __future__ import annotations

import contextlib
import json
import os
import pwd
import re
import secrets
import shutil
import signal
import subprocess
import tempfile
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TextIO

from netemu.errors import NetemuError

TOPIC_ROOT = "netemu"
USERNAME = "netemu"
_RUN_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")
_SOCKET_PATH_MAX = 100  # sun_path is 108 bytes; keep a margin


class TelemetryError(NetemuError):
    """The broker could not start, or a client could not reach it."""


def check_run_name(run: str) -> str:
    """A run name becomes an MQTT topic level and a directory name: keep it plain."""
    if not _RUN_RE.match(run):
        raise TelemetryError(
            f"run name {run!r}: use 1-64 letters, digits, '.', '_' or '-' "
            "(it becomes an MQTT topic level and a directory name)"
        )
    return run


# --------------------------------------------------------------------------- access


@dataclass(frozen=True)
class BrokerAccess:
    """How a client reaches the run's broker: socket path, credentials, run name."""

    socket_path: str
    username: str
    password: str
    run: str
    tcp_port: int | None = None

    @property
    def topic_prefix(self) -> str:
        return f"{TOPIC_ROOT}/{self.run}"

    def env(self) -> dict[str, str]:
        """The environment variables a process in a host needs to publish."""
        env = {
            "NETEMU_RUN": self.run,
            "NETEMU_MQTT_SOCKET": self.socket_path,
            "NETEMU_MQTT_USER": self.username,
            "NETEMU_MQTT_PASSWORD": self.password,
        }
        if self.tcp_port is not None:
            env["NETEMU_MQTT_TCP_PORT"] = str(self.tcp_port)
        return env

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> BrokerAccess:
        env = os.environ if env is None else env
        missing = [
            k
            for k in ("NETEMU_RUN", "NETEMU_MQTT_SOCKET", "NETEMU_MQTT_USER", "NETEMU_MQTT_PASSWORD")
            if not env.get(k)
        ]
        if missing:
            raise TelemetryError(
                "telemetry: environment variables not set: "
                + ", ".join(missing)
                + " (netemu sets them for processes it starts in a host)"
            )
        port = env.get("NETEMU_MQTT_TCP_PORT")
        return cls(
            socket_path=env["NETEMU_MQTT_SOCKET"],
            username=env["NETEMU_MQTT_USER"],
            password=env["NETEMU_MQTT_PASSWORD"],
            run=env["NETEMU_RUN"],
            tcp_port=int(port) if port else None,
        )


# --------------------------------------------------------------------------- clock


def scenario_clock_from_env(env: Mapping[str, str] | None = None) -> Callable[[], float]:
    """A function returning scenario seconds now, from the clock env vars.

    Uses :mod:`netemu.runtime.clock` when it is available; otherwise reads ``NETEMU_T0_WALL``
    (wall time of scenario second ``NETEMU_T0_S``, default 0) and ``NETEMU_TIME_SCALE``.
    Without any clock variables scenario time is wall time since the clock was made.
    """
    env = os.environ if env is None else env
    try:  # the emulator's clock, when present, is the one source of truth
        from netemu.runtime import clock as clock_mod  # type: ignore[attr-defined]

        from_env = getattr(clock_mod, "ScenarioClock", None)
        if from_env is not None and hasattr(from_env, "from_env") and env.get("NETEMU_T0_WALL"):
            clk = from_env.from_env(dict(env))
            for name in ("now_s", "scenario_s", "now"):
                fn = getattr(clk, name, None)
                if callable(fn):
                    return fn
    except Exception:  # noqa: BLE001 - fall back to the env-var contract below
        pass
    t0_wall = float(env.get("NETEMU_T0_WALL") or time.time())
    t0_s = float(env.get("NETEMU_T0_S") or 0.0)
    scale = float(env.get("NETEMU_TIME_SCALE") or 1.0)
    return lambda: t0_s + (time.time() - t0_wall) * scale


# --------------------------------------------------------------------------- broker


def _mosquitto_user() -> pwd.struct_passwd | None:
    try:
        return pwd.getpwnam("mosquitto")
    except KeyError:
        return None


class Broker:
    """A mosquitto process for one run: config, password file and ACL made per run.

    ``start()`` returns the :class:`BrokerAccess` clients need; ``stop()`` ends the
    process and removes the socket directory. Usable as a context manager.
    """

    def __init__(
        self,
        run: str,
        *,
        log_path: Path | None = None,
        tcp_port: int | None = None,
        state_dir: Path | None = None,
    ) -> None:
        self.run = check_run_name(run)
        self.log_path = log_path
        self.tcp_port = tcp_port
        self._state_dir_arg = state_dir
        self.state_dir: Path | None = None
        self.access: BrokerAccess | None = None
        self._proc: subprocess.Popen[bytes] | None = None
        self._log: Any = None

    # The socket lives in a short private directory: sun_path holds 108 bytes, and a run
    # directory under the user's cwd can be longer than that.
    def _make_state_dir(self) -> Path:
        if self._state_dir_arg is not None:
            d = Path(self._state_dir_arg)
            d.mkdir(parents=True, exist_ok=True)
        else:
            d = Path(tempfile.mkdtemp(prefix=f"netemu-mqtt-{self.run[:20]}-"))
        if len(str(d / "mqtt.sock")) > _SOCKET_PATH_MAX:
            raise TelemetryError(f"broker socket path too long for a Unix socket: {d}/mqtt.sock")
        return d

    def config_text(self, state_dir: Path, run_as: str) -> str:
        lines = [
            "# netemu: generated per run; do not edit",
            "per_listener_settings false",
            "allow_anonymous false",
            f"password_file {state_dir / 'passwd'}",
            f"acl_file {state_dir / 'acl'}",
            f"user {run_as}",
            "persistence false",
            "log_dest stderr",
            "log_type error",
            "log_type warning",
            "log_type notice",
            "log_timestamp true",
            "max_queued_messages 100000",
            f"listener 0 {state_dir / 'mqtt.sock'}",
        ]
        if self.tcp_port is not None:
            lines.append(f"listener {self.tcp_port} 127.0.0.1")
        return "\n".join(lines) + "\n"

    def start(self, timeout_s: float = 10.0) -> BrokerAccess:
        for tool in ("mosquitto", "mosquitto_passwd"):
            if not shutil.which(tool) and not Path(f"/usr/sbin/{tool}").exists():
                raise TelemetryError(
                    f"{tool} not found: install Debian's mosquitto package (scripts/dev setup)"
                )
        mosquitto = shutil.which("mosquitto") or "/usr/sbin/mosquitto"
        d = self._make_state_dir()
        self.state_dir = d
        password = secrets.token_urlsafe(24)
        passwd = d / "passwd"
        r = subprocess.run(
            ["mosquitto_passwd", "-b", "-c", str(passwd), USERNAME, password],
            capture_output=True,
            text=True,
        )
        if r.returncode != 0:
            raise TelemetryError(f"mosquitto_passwd failed: {r.stderr.strip() or r.stdout.strip()}")
        (d / "acl").write_text(f"user {USERNAME}\ntopic readwrite {TOPIC_ROOT}/{self.run}/#\n")
        # Run as the unprivileged mosquitto user when it exists and we are root: it then
        # owns the socket directory and the password file. Otherwise stay as we are.
        run_as = pwd.getpwuid(os.geteuid()).pw_name
        mu = _mosquitto_user()
        if os.geteuid() == 0 and mu is not None:
            run_as = "mosquitto"
            for p in (d, passwd, d / "acl"):
                os.chown(p, mu.pw_uid, mu.pw_gid)
            os.chmod(d, 0o750)
            os.chmod(passwd, 0o600)
        conf = d / "mosquitto.conf"
        conf.write_text(self.config_text(d, run_as))
        if self.log_path is not None:
            self.log_path.parent.mkdir(parents=True, exist_ok=True)
            self._log = open(self.log_path, "ab")  # noqa: SIM115 - closed in stop()
        else:
            self._log = open(d / "mosquitto.log", "ab")  # noqa: SIM115
        self._proc = subprocess.Popen(
            [mosquitto, "-c", str(conf)],
            stdout=self._log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
        )
        self.access = BrokerAccess(
            socket_path=str(d / "mqtt.sock"),
            username=USERNAME,
            password=password,
            run=self.run,
            tcp_port=self.tcp_port,
        )
        try:
            self._wait_ready(timeout_s)
        except BaseException:
            self.stop()
            raise
        return self.access

    def _wait_ready(self, timeout_s: float) -> None:
        assert self.access is not None and self._proc is not None
        deadline = time.monotonic() + timeout_s
        last_err = "socket not created"
        while time.monotonic() < deadline:
            if self._proc.poll() is not None:
                raise TelemetryError(
                    f"mosquitto exited with status {self._proc.returncode}: {self._log_tail()}"
                )
            if os.path.exists(self.access.socket_path):
                try:  # short probes, several per deadline: a CONNECT sent while the
                    # broker was still starting may never be answered (seen under load)
                    c = SyncPublisher(self.access, client_id=f"netemu-probe-{os.getpid()}",
                                      timeout_s=max(0.1, min(2.0, deadline - time.monotonic())))
                    c.close()
                    return
                except TelemetryError as e:
                    last_err = str(e)
            time.sleep(0.05)
        raise TelemetryError(f"mosquitto not ready after {timeout_s:.0f} s: {last_err}")

    def _log_tail(self) -> str:
        path = self.log_path or (self.state_dir / "mosquitto.log" if self.state_dir else None)
        if path is None or not Path(path).exists():
            return ""
        return Path(path).read_text(errors="replace")[-800:].strip()

    @property
    def pid(self) -> int | None:
        return self._proc.pid if self._proc else None

    def running(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    def stop(self, timeout_s: float = 5.0) -> None:
        if self._proc is not None:
            if self._proc.poll() is None:
                self._proc.send_signal(signal.SIGTERM)
                try:
                    self._proc.wait(timeout_s)
                except subprocess.TimeoutExpired:
                    self._proc.kill()
                    self._proc.wait()
            self._proc = None
        if self._log is not None:
            self._log.close()
            self._log = None
        if self.state_dir is not None and self._state_dir_arg is None:
            shutil.rmtree(self.state_dir, ignore_errors=True)

    def __enter__(self) -> BrokerAccess:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


# --------------------------------------------------------------------------- clients


def _paho_client(access: BrokerAccess, client_id: str | None):
    import paho.mqtt.client as mqtt

    c = mqtt.Client(
        mqtt.CallbackAPIVersion.VERSION2,
        client_id=client_id or f"netemu-{os.getpid()}-{secrets.token_hex(4)}",
        transport="unix",
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
        client.connect(access.socket_path, 1883, keepalive=30)  # port unused on unix
    except OSError as e:
        raise TelemetryError(f"cannot reach MQTT broker at {access.socket_path}: {e}") from e
    client.loop_start()
    if not done.wait(timeout_s):
        client.loop_stop()
        raise TelemetryError(f"no answer from MQTT broker at {access.socket_path}")
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
        node = env.get("NETEMU_NODE", "")
        cid = f"{node or 'proc'}-{os.getpid()}-{secrets.token_hex(3)}"
        return cls(BrokerAccess.from_env(env), clock=scenario_clock_from_env(env), client_id=cid)

    async def connect(self) -> None:
        import aiomqtt

        if self._client is not None:
            return
        client = aiomqtt.Client(
            self.access.socket_path,
            1883,  # unused with the unix transport
            username=self.access.username,
            password=self.access.password,
            identifier=self.client_id,
            transport="unix",
        )
        try:
            await client.__aenter__()
        except aiomqtt.MqttError as e:
            raise TelemetryError(f"MQTT broker at {self.access.socket_path}: {e}") from e
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


# --------------------------------------------------------------------------- recorder


class Recorder:
    """Subscribes to every topic of the run and appends each message to a JSONL file.

    Each line: ``{"t_s": scenario seconds, "wall": unix time, "topic", "payload"}``;
    ``t_s`` is the payload's own when it has one, else the recorder's clock at receipt.
    A payload that is not JSON is kept as ``{"raw": text}``.
    """

    def __init__(
        self,
        access: BrokerAccess,
        path: Path,
        *,
        clock: Callable[[], float] | None = None,
        on_event: Callable[[dict[str, Any]], None] | None = None,
    ) -> None:
        self.access = access
        self.path = Path(path)
        self.clock = clock
        self.on_event = on_event
        self.count = 0
        self._file: TextIO | None = None
        self._client: Any = None
        self._lock = threading.Lock()

    def _on_message(self, _c, _u, msg) -> None:
        wall = time.time()
        try:
            payload = json.loads(msg.payload.decode("utf-8"))
        except (UnicodeDecodeError, json.JSONDecodeError):
            payload = {"raw": msg.payload.decode("utf-8", errors="replace")}
        t_s = payload.get("t_s") if isinstance(payload, dict) else None
        if not isinstance(t_s, (int, float)):
            t_s = self.clock() if self.clock else None
        event = {"t_s": t_s, "wall": wall, "topic": msg.topic, "payload": payload}
        with self._lock:
            if self._file is not None:
                self._file.write(json.dumps(event, separators=(",", ":")) + "\n")
                self.count += 1
        if self.on_event is not None:
            with contextlib.suppress(Exception):
                self.on_event(event)

    def start(self, timeout_s: float = 5.0) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._file = open(self.path, "a", buffering=1)  # noqa: SIM115 - closed in stop()
        client = _paho_client(self.access, f"netemu-recorder-{self.access.run}")
        subscribed = threading.Event()
        client.on_message = self._on_message
        client.on_subscribe = lambda *_a, **_k: subscribed.set()
        _connect_sync(client, self.access, timeout_s)
        client.subscribe(f"{self.access.topic_prefix}/#", qos=1)
        if not subscribed.wait(timeout_s):
            client.loop_stop()
            raise TelemetryError("recorder: broker did not confirm the subscription")
        self._client = client

    def stop(self, drain_s: float = 0.5) -> None:
        if self._client is not None:
            time.sleep(drain_s)  # let in-flight messages land
            with contextlib.suppress(Exception):
                self._client.disconnect()
            self._client.loop_stop()
            self._client = None
        with self._lock:
            if self._file is not None:
                self._file.close()
                self._file = None

    def __enter__(self) -> Recorder:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


def read_events(path: Path) -> list[dict[str, Any]]:
    """Events of a run's events.jsonl, skipping a truncated last line."""
    out = []
    with open(path) as f:
        for line in f:
            line = line.strip()
            if not line:
                continue
            try:
                out.append(json.loads(line))
            except json.JSONDecodeError:
                continue
    return out
