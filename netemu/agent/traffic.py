"""The scenario's ``traffic:`` flows, originated and received inside the bundle agent.

Why here: a constellation-wide load (1,000 flows over 1,594 nodes) needs no app process per
node; the agents of a node host send and take the bundles themselves. The flows come from
the run's ``traffic.json`` (written by the runner from the scenario, read once per process
and shared by the nodes of a node host)::

    {"service": 7, "ipn": {"gs-a": 1001, ...},
     "flows": [{"id": 0, "key": "gateways:gs-a>gs-b", "src": "gs-a", "dst": "gs-b", ...}]}

Each flow entry holds exactly the fields of :class:`netemu.plan.traffic.Flow`, so every
node draws the same sends as the plan side (:meth:`Flow.sends`). A flow's bundles go from
``ipn:<src>.<service>`` to ``ipn:<dst>.<service>``; the payload starts with
:data:`HEADER` (magic, flow id, send time in scenario seconds), padded with zeros to the
send's size.

Records go to the node's ``traffic.jsonl``, one JSON object a line::

    {"ev": "sent", "flow": 12, "t_s": 123.456, "size": 1000, "id": "ipn:1.7/..."}
    {"ev": "refused", "flow": 12, "t_s": 123.456, "size": 1000, "reason": "..."}
    {"ev": "delivered", "flow": 12, "sent_s": 123.456, "t_s": 130.2, "size": 1000}

Lines are buffered and written each housekeeping round, so a killed process may lose its
last half second of records or leave a truncated last line; a bundle delivered again after
a restart gives a second ``delivered`` line (readers dedupe on ``(flow, sent_s)``). After a
restart a node sends from the current time on: sends it missed while down are not made up.
"""

from __future__ import annotations

import asyncio
import json
import math
import os
import struct
from collections.abc import Iterator
from dataclasses import dataclass, fields
from functools import lru_cache
from pathlib import Path
from typing import TYPE_CHECKING, Any, TextIO

from netemu.dtn import bpa
from netemu.errors import InputError
from netemu.plan.traffic import Flow, Send, node_sends

if TYPE_CHECKING:
    from netemu.agent.agent import Agent

HEADER = struct.Struct(">4sId")  # magic, flow id, send time (scenario seconds)
MAGIC = b"NTRF"
DEFAULT_SERVICE = 7
FLOW_FIELDS = tuple(f.name for f in fields(Flow))
LATE_S = 1.0
RECORDS_KEPT_MAX = 100_000
"""Traffic records buffered while the records file cannot be written (about 10 MB)."""
"""A send found more than this late (the loop was busy) is still made, and its record says
how late (``late_s``)."""


@dataclass(frozen=True)
class TrafficTable:
    """A run's flows, by sender, and every node's ipn number."""

    service: int
    flows: tuple[Flow, ...]
    ipn: dict[str, int]
    by_src: dict[str, tuple[Flow, ...]]

    @classmethod
    def from_obj(cls, obj: Any, *, source: str = "<traffic>") -> TrafficTable:
        if not isinstance(obj, dict) or not isinstance(obj.get("flows"), list):
            raise InputError("expected {service, ipn, flows: [...]}", source=source)
        service = obj.get("service", DEFAULT_SERVICE)
        ipn = obj.get("ipn", {})
        if not isinstance(service, int) or service < 1 or not isinstance(ipn, dict):
            raise InputError("service must be a whole number ≥ 1 and ipn a mapping",
                             source=source)
        out: list[Flow] = []
        for i, e in enumerate(obj["flows"]):
            try:
                kw: dict[str, Any] = {k: (tuple(e[k]) if isinstance(e[k], list) else e[k])
                      for k in FLOW_FIELDS}
                fl = Flow(**kw)
            except (KeyError, TypeError) as exc:
                raise InputError(f"flows[{i}]: not a flow ({exc})", source=source) from None
            if fl.id != i:
                raise InputError(f"flows[{i}]: id {fl.id} is not its position", source=source)
            if fl.dst not in ipn:
                raise InputError(f"flows[{i}]: no ipn number for {fl.dst!r}", source=source)
            out.append(fl)
        by_src: dict[str, list[Flow]] = {}
        for fl in out:
            by_src.setdefault(fl.src, []).append(fl)
        return cls(service, tuple(out), dict(ipn), {k: tuple(v) for k, v in by_src.items()})

    def to_obj(self) -> dict[str, Any]:
        return {"service": self.service, "ipn": self.ipn,
                "flows": [{k: getattr(fl, k) for k in FLOW_FIELDS} for fl in self.flows]}


@lru_cache(maxsize=4)
def _load(path: str, mtime_ns: int) -> TrafficTable:
    try:
        obj = json.loads(Path(path).read_text())
    except (OSError, ValueError) as e:
        raise InputError(f"cannot read the traffic file: {e}", source=path) from None
    return TrafficTable.from_obj(obj, source=path)


def load_traffic(path: str) -> TrafficTable:
    """The table of ``path``, read once per process (the nodes of a node host share it)."""
    real = os.path.realpath(path)
    try:
        mtime = os.stat(real).st_mtime_ns
    except OSError as e:
        raise InputError(f"cannot read the traffic file: {e.strerror}", source=path) from None
    return _load(real, mtime)


def payload(flow_id: int, sent_s: float, size_bytes: int) -> bytes:
    """A flow bundle's payload: the header, then zeros up to ``size_bytes``."""
    head = HEADER.pack(MAGIC, flow_id, sent_s)
    return head + bytes(max(0, size_bytes - len(head)))


def parse_payload(data: bytes) -> tuple[int, float] | None:
    """(flow id, send time) of a flow bundle's payload; None for anything else."""
    if len(data) < HEADER.size:
        return None
    magic, flow_id, sent_s = HEADER.unpack_from(data)
    if magic != MAGIC or not math.isfinite(sent_s):
        return None
    return flow_id, sent_s


class TrafficGenerator:
    """One node's flows: sends at their scenario times, takes what arrives, records both."""

    def __init__(self, agent: Agent, table: TrafficTable, records: str) -> None:
        self.agent = agent
        self.table = table
        self.records_path = records
        self.flows = table.by_src.get(agent.cfg.node, ())
        self.endpoint = f"ipn:{agent.cfg.ipn}.{table.service}"
        self._lines: list[str] = []
        self._write_failed = False
        self._file: TextIO | None = None
        self._stream: Iterator[tuple[Send, Flow]] | None = None
        self._next: tuple[Send, Flow] | None = None
        self._timer: asyncio.TimerHandle | None = None
        self.counts = {"sent": 0, "refused": 0, "delivered": 0}

    def start(self) -> None:
        """Take this node's flow bundles from now on, and send its flows' bundles from
        the current scenario time on."""
        self.agent.core.sinks[self.endpoint] = self._delivered
        if self.flows:
            self._stream = node_sends(self.flows, self.agent.now_s(), math.inf)
            self._next = next(self._stream, None)
            self._schedule()

    def close(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        self.flush()
        if self._file is not None:
            self._file.close()
            self._file = None

    # --- sending -----------------------------------------------------------------------

    def _schedule(self) -> None:
        if self._next is None:
            return
        # at most RECHECK_S at a time where the run may pause or change its time scale;
        # _due sends what is due and sets the next timer
        delay = self.agent.clock.timer_s(self._next[0].t_s)
        self._timer = asyncio.get_running_loop().call_later(delay, self._due)

    def _due(self) -> None:
        self._timer = None
        now_s = self.agent.now_s()
        while self._next is not None and self._next[0].t_s <= now_s:
            send, fl = self._next
            self._send(send, fl, now_s)
            assert self._stream is not None
            self._next = next(self._stream, None)
        self._schedule()

    def _send(self, send: Send, fl: Flow, now_s: float) -> None:
        core = self.agent.core
        dst = f"ipn:{self.table.ipn[fl.dst]}.{self.table.service}"
        ev = bpa.AppSend(self.endpoint, dst, payload(fl.id, send.t_s, send.size_bytes),
                         int(send.lifetime_s * 1000), core.now_ms())
        late_s = now_s - send.t_s

        def done(result: Any) -> None:
            rec: dict[str, Any] = {"flow": fl.id, "t_s": round(send.t_s, 6),
                                   "size": send.size_bytes}
            if late_s > LATE_S:
                rec["late_s"] = round(late_s, 3)
            if type(result) is bpa.Accept:
                self.counts["sent"] += 1
                self._record({"ev": "sent", **rec, "id": result.bundle_id})
            else:
                self.counts["refused"] += 1
                reason = getattr(result, "message", None) or "not accepted"
                self._record({"ev": "refused", **rec, "reason": reason})

        core.submit(ev, done)

    # --- receiving ---------------------------------------------------------------------

    def _delivered(self, bundle_id: str, bundle: Any) -> None:
        """A bundle for this node's flow endpoint: recorded, then acknowledged (so the
        store lets it go)."""
        core = self.agent.core
        head = parse_payload(bundle.payload)
        if head is None:
            self.agent.log("traffic_foreign", bundle=bundle_id, size=len(bundle.payload))
        else:
            self.counts["delivered"] += 1
            self._record({"ev": "delivered", "flow": head[0], "sent_s": round(head[1], 6),
                          "t_s": round(self.agent.now_s(), 6), "size": len(bundle.payload)})
        core.submit(bpa.AppDelivered(bundle_id, core.now_ms()))

    # --- records -----------------------------------------------------------------------

    def _record(self, rec: dict[str, Any]) -> None:
        self._lines.append(json.dumps(rec, separators=(",", ":")) + "\n")

    def flush(self) -> None:
        """Write the buffered records (each housekeeping round, and at the end). A failed
        write keeps them for the next try (out of file descriptors, a full disk for a
        moment); only past RECORDS_KEPT_MAX buffered records are the oldest dropped."""
        if not self._lines:
            return
        try:
            if self._file is None:
                os.makedirs(os.path.dirname(os.path.abspath(self.records_path)),
                            exist_ok=True)
                self._file = open(self.records_path, "a")  # noqa: SIM115 - kept open
            self._file.write("".join(self._lines))
            self._file.flush()
            self._lines = []
            self._write_failed = False
        except OSError as e:  # the node goes on; the log says what is kept or lost
            lost = max(0, len(self._lines) - RECORDS_KEPT_MAX)
            if lost:
                del self._lines[:lost]
            if lost or not self._write_failed:
                self.agent.log("traffic_records_error", error=str(e),
                               kept=len(self._lines), lost=lost)
            self._write_failed = True
