"""The agent's telemetry: ``bundle/<node>`` events and ``counters/<node>`` samples, through
a bounded queue drained by a publisher thread.

Bundle processing must never wait for, or fail because of, the MQTT broker. The agent's
event loop only appends a small dict to a bounded deque (:meth:`BundlePublisher.emit`,
about a microsecond); a daemon thread turns queued events into JSON and publishes them
with paho-mqtt (QoS 1) on the run's Unix socket, connecting, and reconnecting after a
lost connection, with backoff. When the queue is full (broker down or too slow) new
events are dropped and counted (``dropped``); the count shows in ``netemu bp status``
and in the agent's ``telemetry_stopped`` log line.

Enabled when the environment has ``NETEMU_RUN``, ``NETEMU_MQTT_SOCKET``,
``NETEMU_MQTT_USER`` and ``NETEMU_MQTT_PASSWORD`` (what ``netemu flagship`` gives every
process in a host); see :mod:`netemu.runtime.telemetry`.
"""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import threading
import time
from collections import deque
from collections.abc import Mapping
from typing import Any

from netemu.runtime.env import HostEnv
from netemu.runtime.telemetry import BrokerAccess, _connect_sync, _paho_client

QUEUE_MAX = 100_000  # events waiting for the broker
RECONNECT_MIN_S = 0.2
RECONNECT_MAX_S = 5.0
PAHO_QUEUE_MAX = 10_000  # messages paho may hold unacknowledged/unsent


COUNTERS_TOPIC = "counters"
BUNDLE_TOPIC = "bundle"


class BundlePublisher:
    """Publishes ``bundle/<node>`` events and ``counters/<node>`` samples without ever
    blocking the caller. Queue entries are ``(publisher, topic, payload)``: a hub's
    queue holds every node's."""

    def __init__(self, access: BrokerAccess, node: str, *, queue_max: int = QUEUE_MAX,
                 client_id: str | None = None) -> None:
        self.access = access
        self.node = node
        self.topic = f"{access.topic_prefix}/{BUNDLE_TOPIC}/{node}"
        self.counters_topic = f"{access.topic_prefix}/{COUNTERS_TOPIC}/{node}"
        self.queue_max = queue_max
        self.client_id = client_id or f"agent-{node}-{os.getpid()}-{secrets.token_hex(3)}"
        self._q: deque[tuple[BundlePublisher, str, dict[str, Any]]] = deque()
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.published = 0
        self.dropped = 0
        self.connects = 0
        self.last_error: str | None = None

    @classmethod
    def from_env(cls, node: str, env: Mapping[str, str] | None = None,
                 **kw: Any) -> BundlePublisher | None:
        """A publisher when the telemetry variables are set (default: ``os.environ``),
        else None."""
        access = HostEnv.from_env(env).mqtt
        return cls(access, node, **kw) if access is not None else None

    # --- the agent's side (event loop thread) ----------------------------------------
    def emit(self, payload: dict[str, Any]) -> None:
        """Queue one ``bundle/<node>`` event; drop (and count) it when the queue is full."""
        self._queue(self.topic, payload)

    def emit_counters(self, payload: dict[str, Any]) -> None:
        """Queue one ``counters/<node>`` sample (dropped and counted as :meth:`emit`)."""
        self._queue(self.counters_topic, payload)

    def _queue(self, topic: str, payload: dict[str, Any]) -> None:
        q = self._q
        if len(q) >= self.queue_max:
            self.dropped += 1
            return
        q.append((self, topic, payload))
        if len(q) == 1:
            self._wake.set()

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name=f"telemetry-{self.node}",
                                        daemon=True)
        self._thread.start()

    def stop(self, drain_s: float = 2.0) -> None:
        """Publish what is queued (at most ``drain_s``), then disconnect."""
        deadline = time.monotonic() + drain_s
        while self._q and time.monotonic() < deadline and self._thread is not None \
                and self._thread.is_alive():
            self._wake.set()
            time.sleep(0.02)
        self._stop.set()
        self._wake.set()
        if self._thread is not None:
            self._thread.join(timeout=max(0.5, deadline - time.monotonic() + 1.0))

    def status(self) -> dict[str, Any]:
        return {"queued": len(self._q), "published": self.published, "dropped": self.dropped,
                "connects": self.connects, "last_error": self.last_error}

    # --- the publisher thread -----------------------------------------------------------
    def _run(self) -> None:
        backoff_s = RECONNECT_MIN_S
        client = None
        try:
            while not self._stop.is_set():
                if client is None:
                    try:
                        client = _paho_client(self.access, self.client_id)
                        client.max_queued_messages_set(PAHO_QUEUE_MAX)
                        client.reconnect_delay_set(RECONNECT_MIN_S, RECONNECT_MAX_S)
                        _connect_sync(client, self.access, 5.0)
                        self.connects += 1
                        backoff_s = RECONNECT_MIN_S
                    except Exception as e:  # noqa: BLE001 - broker absent: retry later
                        self.last_error = str(e)
                        with contextlib.suppress(Exception):
                            client.loop_stop()  # type: ignore[union-attr]
                        client = None
                        self._stop.wait(backoff_s)
                        backoff_s = min(backoff_s * 2, RECONNECT_MAX_S)
                        continue
                if not client.is_connected():  # paho's loop thread reconnects
                    self._stop.wait(0.1)
                    continue
                if not self._q:
                    self._wake.clear()
                    if not self._q:
                        self._wake.wait(0.5)
                    continue
                self._drain(client)
        finally:
            if client is not None:
                with contextlib.suppress(Exception):
                    client.disconnect()
                with contextlib.suppress(Exception):
                    client.loop_stop()

    def _drain(self, client: Any) -> None:
        q = self._q
        dumps = json.dumps
        while q and client.is_connected():
            owner, topic, payload = q[0]
            info = client.publish(topic, dumps(payload, separators=(",", ":")), qos=1)
            if info.rc not in (0, 4):  # 4 = NO_CONN: paho keeps QoS 1 and sends it later
                # (paho's own queue is full)
                self.last_error = f"publish rc {info.rc}"
                self._stop.wait(0.05)
                return
            q.popleft()
            owner.published += 1
            if owner is not self:
                self.published += 1


class PublisherHub(BundlePublisher):
    """One publisher thread and one broker connection for every node of a node host:
    each node's :class:`NodePublisher` queues its messages here and they go out on its
    own ``bundle/<node>`` and ``counters/<node>`` topics, as a single-node agent's would."""

    def __init__(self, access: BrokerAccess, *, queue_max: int = QUEUE_MAX) -> None:
        super().__init__(access, "host", queue_max=queue_max,
                         client_id=f"nodehost-{os.getpid()}-{secrets.token_hex(3)}")
        self._users = 0
        self._users_lock = threading.Lock()  # (nodes stop in executor threads)

    def publisher(self, access: BrokerAccess, node: str) -> NodePublisher:
        """``node``'s publisher (the hub's broker access is the process's: ``access``
        is the same for every node)."""
        return NodePublisher(self, node)


class NodePublisher(BundlePublisher):
    """A node's ``bundle/<node>`` publisher on a :class:`PublisherHub` (no thread of its
    own): what :class:`BundlePublisher` does, through the hub's thread and connection."""

    def __init__(self, hub: PublisherHub, node: str) -> None:
        super().__init__(hub.access, node, queue_max=hub.queue_max, client_id=hub.client_id)
        self.hub = hub
        self._started = False

    def _queue(self, topic: str, payload: dict[str, Any]) -> None:
        q = self.hub._q
        if len(q) >= self.hub.queue_max:
            self.dropped += 1
            return
        q.append((self, topic, payload))
        if len(q) == 1:
            self.hub._wake.set()

    def start(self) -> None:
        with self.hub._users_lock:
            if not self._started:
                self._started = True
                self.hub._users += 1
                if self.hub._thread is None:
                    self.hub.start()

    def stop(self, drain_s: float = 2.0) -> None:
        """The last node to stop drains and stops the hub."""
        with self.hub._users_lock:
            if not self._started:
                return
            self._started = False
            self.hub._users -= 1
            last = self.hub._users == 0
        if last:
            self.hub.stop(drain_s)

    def status(self) -> dict[str, Any]:
        hub = self.hub
        return {"queued": len(hub._q), "published": self.published, "dropped": self.dropped,
                "connects": hub.connects, "last_error": hub.last_error}
