"""Stateful fuzz of the app socket: a real agent (its core, store and app server, in a
loop on its own thread) driven by hypothesis through raw frames on its Unix socket, in
any order — endpoints registered (its own, another node's, junk), bundles sent to them
(with payloads and fields of the wrong type too), deliveries acknowledged (and IDs that
were never delivered), malformed CBOR, frames that are not maps, a length prefix past the
limit, connections dropped and made again.

What must always hold: the agent answers every well-formed request (``ok`` true or an
``error`` naming what was wrong) and stays up (``status`` answers after every step); a
malformed frame gets an error and the connection is closed, nothing more; every bundle
sent to one of its own registered endpoints reaches the app, and once acknowledged it is
never delivered again — across reconnections too.
"""

from __future__ import annotations

import asyncio
import shutil
import socket
import struct
import tempfile
import threading
from collections import Counter
from pathlib import Path
from typing import Any

import cbor2
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, rule

from netemu.agent.agent import Agent
from netemu.agent.config import AgentConfig

OWN = ["ipn:1.1", "ipn:1.2", "ipn:1.77"]
OTHER = ["ipn:2.1", "dtn:none", "junk", "", "ipn:1", 5, None, ["ipn:1.1"]]
HEAD = struct.Struct(">I")


class AppSocketMachine(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        self.tmp = Path(tempfile.mkdtemp(prefix="netemu-appfuzz-"))
        cfg = AgentConfig.from_obj({
            "node": "A", "ipn": 1, "listen": {"tcpcl": [], "udpcl": []},
            "app_socket": str(self.tmp / "A" / "bp.sock"),
            "store": str(self.tmp / "A" / "store.sqlite"), "log": str(self.tmp / "A.log"),
            "durability": "process"})
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()
        self.agent = Agent(cfg)
        self._call(self.agent.start())
        self.sock: socket.socket | None = None
        self.buf = bytearray()
        self.rid = 0
        self.registered: set[str] = set()
        self.expected: Counter[tuple[str, bytes]] = Counter()  # sent to our endpoints
        self.got: Counter[tuple[str, bytes]] = Counter()
        self.acked: set[str] = set()
        self.unacked: dict[str, tuple[str, bytes]] = {}
        self._connect()

    # --- plumbing ------------------------------------------------------------------

    def _call(self, coro: Any) -> Any:
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(30)

    def _connect(self) -> None:
        self.sock = socket.socket(socket.AF_UNIX)
        self.sock.settimeout(10)
        self.sock.connect(str(self.tmp / "A" / "bp.sock"))
        self.buf = bytearray()
        for ep in sorted(self.registered):  # a new connection registers again
            assert self._request({"op": "register", "endpoint": ep})["ok"]

    def _reconnect(self) -> None:
        assert self.sock is not None
        self.sock.close()
        # what was delivered and not acknowledged may come again on the new connection
        for bid in list(self.unacked):
            self.got[self.unacked.pop(bid)] -= 1
        self._connect()

    def _read_frame(self) -> dict | None:
        assert self.sock is not None
        while True:
            if len(self.buf) >= 4:
                (n,) = HEAD.unpack_from(self.buf)
                if len(self.buf) >= 4 + n:
                    body = bytes(self.buf[4:4 + n])
                    del self.buf[:4 + n]
                    return cbor2.loads(body)
            data = self.sock.recv(1 << 20)
            if not data:
                return None
            self.buf += data

    def _take_push(self, frame: dict) -> None:
        items = frame["items"] if frame.get("ev") == "bundles" else [frame]
        for it in items:
            bid = it["id"]
            assert bid not in self.acked, f"{bid} delivered again after its ack"
            if bid in self.unacked:
                continue  # (pushed again before the ack arrived: the same delivery)
            key = (it["dst"], bytes(it["payload"]))
            self.unacked[bid] = key
            self.got[key] += 1

    def _send_raw(self, data: bytes) -> None:
        assert self.sock is not None
        self.sock.sendall(data)

    def _request(self, req: dict) -> dict:
        self.rid += 1
        req = {**req, "rid": self.rid}
        self._send_raw(HEAD.pack(len(body := cbor2.dumps(req))) + body)
        while True:
            frame = self._read_frame()
            assert frame is not None, f"the agent closed the connection on {req}"
            if frame.get("ev") in ("bundle", "bundles"):
                self._take_push(frame)
                continue
            assert frame.get("rid") == self.rid, frame
            if not frame["ok"]:
                assert isinstance(frame.get("error"), str) and frame["error"], frame
            return frame

    # --- rules ---------------------------------------------------------------------

    @rule(ep=st.sampled_from(OWN + OTHER))
    def register(self, ep: Any) -> None:
        r = self._request({"op": "register", "endpoint": ep})
        assert r["ok"] == (ep in OWN), (ep, r)
        if r["ok"]:
            self.registered.add(ep)

    @rule(dst=st.sampled_from(OWN + ["ipn:2.1", "dtn://x/y"]), payload=st.binary(max_size=3000),
          lifetime_s=st.sampled_from([1000, 0.5, 86400]))
    def send(self, dst: str, payload: bytes, lifetime_s: float) -> None:
        r = self._request({"op": "send", "dst": dst, "payload": payload,
                           "lifetime_s": lifetime_s})
        assert r["ok"], r
        if dst in OWN and lifetime_s > 60:
            self.expected[(dst, payload)] += 1

    @rule(req=st.sampled_from([
        {"op": "send", "dst": "ipn:1.1", "payload": "text, not bytes"},
        {"op": "send", "dst": 7, "payload": b"x"},
        {"op": "send", "payload": b"no dst"},
        {"op": "send", "dst": "ipn:1.1", "payload": b"x", "lifetime_s": -1},
        {"op": "send", "dst": "ipn:1.1", "payload": b"x", "lifetime_s": float("inf")},
        {"op": "send_many", "bundles": "not a list"},
        {"op": "ack", "ids": "not a list"},
        {"op": "nonsense"},
        {"op": 12},
    ]))
    def bad_request(self, req: dict) -> None:
        assert not self._request(req)["ok"], req

    @rule()
    def ack_delivered(self) -> None:
        self._request({"op": "status"})  # (takes the pushes that arrived meanwhile)
        ids = list(self.unacked)
        if ids:
            assert self._request({"op": "ack", "ids": ids})["ok"]
            self.acked.update(ids)
            self.unacked.clear()

    @rule(ids=st.lists(st.text(max_size=30), max_size=5))
    def ack_unknown(self, ids: list[str]) -> None:
        assert self._request({"op": "ack", "ids": ids})["ok"]  # nothing of ours: a no-op

    @rule(body=st.one_of(st.binary(max_size=200),
                         st.sampled_from([cbor2.dumps([1, 2]), cbor2.dumps("op"),
                                          b"\xff\xff", cbor2.dumps({1: 2})])))
    def malformed_frame(self, body: bytes) -> None:
        try:
            value = cbor2.loads(body)
        except Exception:  # noqa: BLE001 - whatever cbor2 refuses, the agent must too
            value = None
        if isinstance(value, dict):
            return  # a map: a (bad) request, not a malformed frame
        self._send_raw(HEAD.pack(len(body)) + body)
        while (frame := self._read_frame()) is not None:
            if frame.get("ev") in ("bundle", "bundles"):
                self._take_push(frame)
            else:
                assert frame.get("ev") == "error" or frame.get("ok") is False, frame
        self._reconnect()

    @rule()
    def oversized_length(self) -> None:
        self._send_raw(HEAD.pack(0xFFFFFFF0))
        while (frame := self._read_frame()) is not None:
            if frame.get("ev") in ("bundle", "bundles"):
                self._take_push(frame)
        self._reconnect()

    @rule()
    def reconnect(self) -> None:
        self._reconnect()

    @invariant()
    def agent_answers(self) -> None:
        r = self._request({"op": "status"})
        assert r["ok"] and r["node"] == "A", r

    def teardown(self) -> None:
        try:
            # every bundle sent to a registered own endpoint arrives (the others wait)
            want = Counter({k: v for k, v in self.expected.items() if k[0] in self.registered})
            for _ in range(50):
                if all(self.got[k] >= v for k, v in want.items()):
                    break
                self._request({"op": "status"})
            missing = {k: v - self.got[k] for k, v in want.items() if self.got[k] < v}
            assert not missing, missing
        finally:
            if self.sock is not None:
                self.sock.close()
            self._call(self.agent.shutdown())
            self.loop.call_soon_threadsafe(self.loop.stop)
            self.thread.join(10)
            self.loop.close()
            shutil.rmtree(self.tmp, ignore_errors=True)


AppSocketMachine.TestCase.settings = settings(
    max_examples=60, stateful_step_count=40, deadline=None,
    suppress_health_check=[HealthCheck.too_slow])
test_app_socket_stateful = AppSocketMachine.TestCase
