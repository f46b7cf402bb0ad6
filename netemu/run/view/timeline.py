"""Where the view's messages and its scenario time come from: a live run (the broker,
the run's clock) or a finished run's record (``events.jsonl``, a replay clock that the page
can pause, seek and speed up)."""

from __future__ import annotations

import bisect
import contextlib
import json
import threading
import time
from collections.abc import Callable
from typing import Any

from netemu.errors import InputError
from netemu.run.view.state import ViewState
from netemu.runtime.telemetry import BrokerAccess, TelemetryError, _connect_sync, _paho_client


class LiveTimeline:
    """Messages from the run's broker, read with the run's credentials; scenario time from
    the run's clock (``clock()`` gives the current ``ScenarioClock``, or None before the
    emulation has one)."""

    mode = "live"

    def __init__(self, access: BrokerAccess, clock: Callable[[], Any]) -> None:
        self.access = access
        self.clock = clock
        self.state = ViewState()
        self.lock = threading.Lock()
        self._client: Any = None
        self._prefix = access.topic_prefix + "/"
        self.pause_control: Any = None  # a RunPause where the page may pause the run

    def start(self, timeout_s: float = 5.0) -> None:
        client = _paho_client(self.access, f"netemu-view-{self.access.run}")
        subscribed = threading.Event()
        client.on_message = self._on_message
        client.on_subscribe = lambda *_a, **_k: subscribed.set()
        _connect_sync(client, self.access, timeout_s)
        client.subscribe(self._prefix + "#", qos=0)
        if not subscribed.wait(timeout_s):
            client.loop_stop()
            raise TelemetryError("view: the broker did not confirm the subscription")
        self._client = client

    def _on_message(self, _c: Any, _u: Any, msg: Any) -> None:
        if not msg.topic.startswith(self._prefix):
            return
        try:
            payload = json.loads(msg.payload.decode("utf-8"))
        except (UnicodeDecodeError, json.JSONDecodeError):
            return
        with self.lock:
            self.state.apply(msg.topic[len(self._prefix):], payload)

    def stop(self) -> None:
        if self._client is not None:
            with contextlib.suppress(Exception):
                self._client.disconnect()
            self._client.loop_stop()
            self._client = None

    def now_s(self) -> float | None:
        c = self.clock()
        return None if c is None else c.now_s()

    def time_scale(self) -> float | None:
        c = self.clock()
        if c is None:
            return None
        return 0.0 if c.paused else c.scale_now()

    def advance(self) -> None:
        """Nothing to do: the broker's thread applies messages as they come."""

    def control(self, msg: dict[str, Any]) -> None:
        """``pause`` and ``play`` pause and resume the run, ``{"type": "speed", "x"}``
        sets its time scale, where the run allows it (``--view``); nothing else moves a
        live run's clock. A bad scale raises :class:`InputError`."""
        kind = msg.get("type")
        if kind == "seek":
            raise InputError("a live run cannot seek: its record replays with netemu view "
                             "RUN_DIR", field="type")
        pc = self.pause_control
        if pc is None:
            return
        if kind in ("pause", "play"):  # in a thread: stopping the processes takes a moment
            threading.Thread(target=pc.pause if kind == "pause" else pc.resume,
                             name="netemu-view-pause", daemon=True).start()
        elif kind == "speed":
            x = msg.get("x")
            if isinstance(x, bool) or not isinstance(x, (int, float)):
                raise InputError(f"speed: x must be a number, got {x!r}", field="x")
            pc.set_scale(float(x))

    def info(self) -> dict[str, Any]:
        pc = self.pause_control
        if pc is None:
            return {}
        return {"can_pause": bool(pc.enabled), "playing": pc.paused_at_s is None,
                "speed": pc.clock.scale_now()}


class ReplayTimeline:
    """A finished run's ``events.jsonl`` played back: scenario time moves at ``speed``
    scenario seconds per wall second while playing; a seek backwards rebuilds the state
    from the first event."""

    mode = "replay"

    def __init__(self, events: list[dict[str, Any]], prefix: str, *, t_min_s: float,
                 t_max_s: float, speed: float = 1.0) -> None:
        keep = []
        for ev in events:
            topic, t = ev.get("topic", ""), ev.get("t_s")
            if topic.startswith(prefix) and isinstance(t, (int, float)):
                keep.append((float(t), topic[len(prefix):], ev.get("payload")))
        keep.sort(key=lambda e: e[0])
        self.events = keep
        self._times = [e[0] for e in keep]
        self.t_min_s, self.t_max_s = t_min_s, t_max_s
        self.speed = speed
        self.playing = True
        self.lock = threading.Lock()
        self.state = ViewState()
        self._next = 0
        self.restarted = False  # the state was rebuilt: the page must drop what it had
        self._pos_s = t_min_s
        self._wall = time.monotonic()

    def start(self) -> None:
        self._wall = time.monotonic()

    def stop(self) -> None:
        pass

    def now_s(self) -> float:
        if not self.playing:
            return self._pos_s
        t = self._pos_s + (time.monotonic() - self._wall) * self.speed
        return min(t, self.t_max_s)

    def time_scale(self) -> float:
        return self.speed if self.playing else 0.0

    def _set(self, t_s: float) -> None:
        self._pos_s = min(max(t_s, self.t_min_s), self.t_max_s)
        self._wall = time.monotonic()

    def advance(self) -> None:
        """Applies every event up to the replay's time (call under ``lock``)."""
        t = self.now_s()
        end = bisect.bisect_right(self._times, t)
        if end < self._next:  # seek backwards: start over
            self.state = ViewState()
            self._next = 0
            self.restarted = True
        for _t, suffix, payload in self.events[self._next:end]:
            self.state.apply(suffix, payload)
        self._next = end

    def control(self, msg: dict[str, Any]) -> None:
        """The page's controls: ``{"type": "seek", "t_s"}``, ``play``, ``pause``,
        ``{"type": "speed", "x"}``."""
        kind = msg.get("type")
        if kind == "seek" and isinstance(msg.get("t_s"), (int, float)):
            self._set(float(msg["t_s"]))
        elif kind == "pause" and self.playing:
            self._set(self.now_s())
            self.playing = False
        elif kind == "play" and not self.playing:
            self._set(self._pos_s)
            self.playing = True
        elif kind == "speed" and isinstance(msg.get("x"), (int, float)) and msg["x"] > 0:
            self._set(self.now_s())
            self.speed = float(msg["x"])

    def info(self) -> dict[str, Any]:
        return {"t_min_s": self.t_min_s, "t_max_s": self.t_max_s, "playing": self.playing,
                "speed": self.speed}
