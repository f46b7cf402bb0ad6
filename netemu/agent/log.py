"""The agent's structured log: one JSON object per line (stderr or a file), also
streamed to the applications that asked to watch it (``netemu bp watch``)."""

from __future__ import annotations

import json
import time
from typing import Any, TextIO

from netemu.agent.appserver import AppConnection
from netemu.runtime.clock import ScenarioClock


class JsonLog:
    """Structured log: one JSON object per line, also offered to watchers."""

    def __init__(self, node: str, clock: ScenarioClock, stream: TextIO) -> None:
        self.node = node
        self.clock = clock
        self.stream = stream
        self.watchers: set[AppConnection] = set()
        self.quiet_events: set[str] = set()

    def __call__(self, event: str, **fields: Any) -> None:
        wall = time.time()
        rec = {"t": round(wall, 6), "ts": round(self.clock.now_s(wall), 6), "node": self.node,
               "event": event, **fields}
        if event not in self.quiet_events:
            self.stream.write(json.dumps(rec, default=str) + "\n")
            self.stream.flush()
        for w in list(self.watchers):
            if w.closed:
                self.watchers.discard(w)
            else:
                w.push({"ev": "log", **rec})
