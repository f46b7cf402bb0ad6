"""The run's telemetry plane, on the side that runs it: one MQTT broker per run and the
recorder that writes every message to the run's ``events.jsonl``.

The broker is mosquitto listening on a Unix socket, so a client in any emulated host (a
network namespace shares the filesystem) reaches it without crossing, or loading, the
emulated links. Authentication is always on: each run gets its own random credentials, and
an ACL confines them to the run's topics ``netemu/<run>/#``. An optional TCP listener on
127.0.0.1 (same credentials) serves dashboards in the root namespace; a cluster run puts
it on the coordinator's underlay address, for the agents on the other hosts. Clients
(:class:`~netemu.runtime.telemetry.Telemetry`, ``SyncPublisher``) live in
:mod:`netemu.runtime.telemetry`.

The recorder subscribes to ``netemu/<run>/#`` and appends every message to
``events.jsonl`` as ``{"t_s", "wall", "topic", "payload"}`` (read it back with
:func:`netemu.runtime.rundir.read_events`), except that per-bundle topics (``bundle/``
and ``app/``) keep at most ``max_bundle_events`` lines each: past that, messages are
counted per topic and event and summarised in ``recorder`` lines, so the file stays
bounded however many bundles a run moves.
"""

from __future__ import annotations

import contextlib
import json
import os
import pwd
import secrets
import shutil
import signal
import subprocess
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, TextIO

from netemu.run.telemetry_config import DEFAULT_MAX_BUNDLE_EVENTS
from netemu.runtime.rundir import check_run_name
from netemu.runtime.telemetry import (
    TOPIC_ROOT,
    USERNAME,
    BrokerAccess,
    SyncPublisher,
    TelemetryError,
    _connect_sync,
    _paho_client,
)

_SOCKET_PATH_MAX = 100  # sun_path is 108 bytes; keep a margin


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
        tcp_host: str = "127.0.0.1",
        state_dir: Path | None = None,
        bridge_to: BrokerAccess | None = None,
    ) -> None:
        self.run = check_run_name(run)
        self.log_path = log_path
        self.tcp_port = tcp_port
        self.tcp_host = tcp_host  # a cluster run's: the coordinator's underlay address
        # another host of a cluster run: the run's topics go on to the coordinator's broker
        self.bridge_to = bridge_to
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
            lines.append(f"listener {self.tcp_port} {self.tcp_host}")
        b = self.bridge_to
        if b is not None and b.tcp_host:  # every message of the run, on to the coordinator
            lines += [f"connection netemu-{self.run}-{secrets.token_hex(3)}",
                      f"address {b.tcp_host}:{b.tcp_port or 1883}",
                      f"remote_username {b.username}",
                      f"remote_password {b.password}",
                      f"topic {TOPIC_ROOT}/{self.run}/# out 1",
                      "cleansession true",
                      "restart_timeout 1 5"]
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


# --------------------------------------------------------------------------- recorder


CAPPED_TOPICS = ("bundle", "app")
"""First topic levels (after ``netemu/<run>/``) whose lines are capped: one message per
bundle event. Link events, counters and run events are bounded by the scenario and kept."""
RECORDER_TOPIC = "recorder"


class Recorder:
    """Subscribes to every topic of the run and appends each message to a JSONL file.

    Each line: ``{"t_s": scenario seconds, "wall": unix time, "topic", "payload"}``;
    ``t_s`` is the payload's own when it has one, else the recorder's clock at receipt.
    A payload that is not JSON is kept as ``{"raw": text}``.

    Each of :data:`CAPPED_TOPICS` keeps its first ``max_bundle_events`` messages (None:
    all). When one reaches its cap the recorder writes a ``recorder`` line
    ``{"event": "cap_reached", "topics": "bundle", "max_lines": N}``; at stop, a
    ``{"event": "capped", "kept": {...}, "dropped": {...}, "dropped_by_event": {...}}``
    line says how many it left out, per topic and per payload ``event``.
    """

    def __init__(
        self,
        access: BrokerAccess,
        path: Path,
        *,
        clock: Callable[[], float] | None = None,
        on_event: Callable[[dict[str, Any]], None] | None = None,
        max_bundle_events: int | None = DEFAULT_MAX_BUNDLE_EVENTS,
    ) -> None:
        self.access = access
        self.path = Path(path)
        self.clock = clock
        self.on_event = on_event
        self.max_bundle_events = max_bundle_events
        self.count = 0
        self.kept: dict[str, int] = dict.fromkeys(CAPPED_TOPICS, 0)
        self.dropped: dict[str, int] = dict.fromkeys(CAPPED_TOPICS, 0)
        self.dropped_by_event: dict[str, dict[str, int]] = {t: {} for t in CAPPED_TOPICS}
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
        level = self._capped_level(msg.topic)
        with self._lock:
            if self._file is not None and (
                    level is None or self._keep(level, payload, t_s, wall)):
                self._file.write(json.dumps(event, separators=(",", ":")) + "\n")
                self.count += 1
        if self.on_event is not None:
            with contextlib.suppress(Exception):
                self.on_event(event)

    def _capped_level(self, topic: str) -> str | None:
        """The capped topic ``topic`` belongs to, if any."""
        if self.max_bundle_events is None:
            return None
        prefix = self.access.topic_prefix + "/"
        if not topic.startswith(prefix):
            return None
        level = topic[len(prefix):].partition("/")[0]
        return level if level in self.kept else None

    def _keep(self, level: str, payload: Any, t_s: float | None, wall: float) -> bool:
        """Whether a message of capped topic ``level`` is written (under the lock);
        counts it otherwise."""
        assert self.max_bundle_events is not None
        if self.kept[level] < self.max_bundle_events:
            self.kept[level] += 1
            if self.kept[level] == self.max_bundle_events:
                self._note({"event": "cap_reached", "topics": level,
                            "max_lines": self.max_bundle_events}, t_s, wall)
            return True
        self.dropped[level] += 1
        kind = str(payload.get("event")) if isinstance(payload, dict) else "?"
        by = self.dropped_by_event[level]
        by[kind] = by.get(kind, 0) + 1
        return False

    def _note(self, payload: dict[str, Any], t_s: float | None, wall: float) -> None:
        """A line of the recorder's own (under the lock, file open)."""
        assert self._file is not None
        payload = {**payload, "t_s": t_s}
        line = {"t_s": t_s, "wall": wall,
                "topic": f"{self.access.topic_prefix}/{RECORDER_TOPIC}", "payload": payload}
        self._file.write(json.dumps(line, separators=(",", ":")) + "\n")
        self.count += 1

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
                if any(self.dropped.values()):
                    self._note({"event": "capped", "max_lines": self.max_bundle_events,
                                "kept": dict(self.kept), "dropped": dict(self.dropped),
                                "dropped_by_event": {k: dict(v) for k, v in
                                                     self.dropped_by_event.items() if v}},
                               self.clock() if self.clock else None, time.time())
                self._file.close()
                self._file = None

    def __enter__(self) -> Recorder:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()
