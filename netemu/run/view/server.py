"""The live view's web server: one page, its static files, the coastlines, and a
WebSocket that sends the page the run's state.

aiohttp serves on ``127.0.0.1`` unless the caller names another address (``--view-host``):
nothing is reachable from outside the machine without that flag. The server runs its own
event loop in a thread, so the synchronous runners (``netemu run``, ``ScenarioRun``) start
and stop it like the broker.

Every :data:`TICK_S` of wall time each page gets a ``tick``: the scenario time, every
satellite's sub-satellite point at that time, the links changed since the last tick, the
nodes whose counters changed (with their stored bundles), the hops bundles were forwarded
over and the headline figures. A page that connects first gets a
``hello`` with the whole state. The page asks for a node's panel with ``{"type": "node",
"name"}``; it sends ``play``/``pause``/``{"type": "speed", "x"}`` (a replay's page also
``seek``). The same controls come as a JSON body to ``POST /control`` (scripts: ``curl``),
which answers with the clock as it is then, or 400 and the reason.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import sys
import threading
import time
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from aiohttp import WSMsgType, web

from netemu.analysis.coastlines import CoastlineError, polylines
from netemu.errors import InputError, NetemuError
from netemu.run.view.geo import Positions

STATIC = Path(__file__).with_name("static")
TICK_S = 0.25
"""Wall seconds between two updates sent to the page."""
DEFAULT_HOST = "127.0.0.1"


class ViewError(NetemuError):
    """The view's server could not start (port taken, address not ours)."""


class ViewServer:
    """Serves the page of one run: ``timeline`` (live or replay) gives messages and
    scenario time; ``plan`` is the contact plan as its JSON object (nodes, contacts);
    ``positions`` places the nodes."""

    def __init__(self, timeline: Any, plan: dict[str, Any], positions: Positions, *,
                 run: str, title: str = "", host: str = DEFAULT_HOST, port: int = 0) -> None:
        self.timeline = timeline
        self.plan = plan
        self.positions = positions
        self.run = run
        self.title = title or run
        self.host = host
        self.port = port
        self._clients: set[web.WebSocketResponse] = set()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._stop: asyncio.Event | None = None
        self._ready = threading.Event()
        self._error: BaseException | None = None
        self._tick_error = False  # said once
        info = plan.get("node_info", {})
        self._kinds = {n: info.get(n, {}).get("kind", "other") for n in plan.get("nodes", {})}
        self._contacts: dict[str, list[dict[str, Any]]] = {}
        for c in plan.get("contacts", []):
            self._contacts.setdefault(c["from"], []).append(c)
        for cs in self._contacts.values():
            cs.sort(key=lambda c: c["start_s"])

    # ------------------------------------------------------------------ life cycle

    @property
    def url(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}/"

    def start(self, timeout_s: float = 10.0) -> str:
        """Starts the timeline and the server; returns the page's URL."""
        self.timeline.start()
        self._thread = threading.Thread(target=self._main, name="netemu-view", daemon=True)
        self._thread.start()
        if not self._ready.wait(timeout_s):
            raise ViewError("view: the web server did not start")
        if self._error is not None:
            self.timeline.stop()
            raise ViewError(f"view: cannot serve on {self.host}:{self.port}: {self._error}")
        return self.url

    def stop(self) -> None:
        if self._loop is not None and self._stop is not None:
            self._loop.call_soon_threadsafe(self._stop.set)
        if self._thread is not None:
            self._thread.join(5.0)
        self.timeline.stop()

    def _main(self) -> None:
        loop = asyncio.new_event_loop()
        self._loop = loop
        try:
            loop.run_until_complete(self._serve())
        except BaseException as e:  # noqa: BLE001 - reported by start()
            self._error = e
        finally:
            self._ready.set()
            loop.close()

    async def _serve(self) -> None:
        self._stop = asyncio.Event()
        app = web.Application()
        app.router.add_get("/", self._index)
        app.router.add_get("/coastlines.json", self._coastlines)
        app.router.add_get("/ws", self._ws)
        app.router.add_post("/control", self._control)
        app.router.add_static("/static/", STATIC)
        runner = web.AppRunner(app, access_log=None)
        await runner.setup()
        try:
            site = web.TCPSite(runner, self.host, self.port)
            await site.start()
            server = getattr(site, "_server", None)
            if self.port == 0 and server is not None and server.sockets:
                self.port = server.sockets[0].getsockname()[1]
            self._ready.set()
            ticker = asyncio.ensure_future(self._ticker())
            await self._stop.wait()
            ticker.cancel()
            for ws in list(self._clients):
                with contextlib.suppress(Exception):
                    await ws.close()
        finally:
            await runner.cleanup()

    # ------------------------------------------------------------------ handlers

    async def _index(self, _req: web.Request) -> web.StreamResponse:
        return web.FileResponse(STATIC / "index.html")

    async def _coastlines(self, _req: web.Request) -> web.StreamResponse:
        try:
            return web.json_response(polylines(), dumps=_dumps)
        except CoastlineError as e:
            return web.json_response({"error": str(e)}, status=503)

    @staticmethod
    def _same_origin(req: web.Request) -> None:
        # a page from another site may open a WebSocket to 127.0.0.1 or post to it
        # (browsers do not stop it): only the view's own page, or a client that sends no
        # Origin, is served
        origin = req.headers.get("Origin")
        if origin is not None and urlsplit(origin).netloc != req.host:
            raise web.HTTPForbidden(text="view: request from another origin refused")

    def _apply_control(self, msg: dict[str, Any]) -> str | None:
        """Hands a control message to the timeline; the reason it was refused, or None."""
        try:
            with self.timeline.lock:
                self.timeline.control(msg)
        except InputError as e:
            return str(e)
        return None

    async def _control(self, req: web.Request) -> web.StreamResponse:
        self._same_origin(req)
        try:
            msg = await req.json()
        except ValueError:
            msg = None
        if not isinstance(msg, dict) or msg.get("type") not in ("pause", "play", "speed",
                                                                 "seek"):
            return web.json_response({"error": "give a JSON object with type pause, play, "
                                      "speed (and x) or seek (and t_s)"}, status=400)
        err = self._apply_control(msg)
        if err is not None:
            return web.json_response({"error": err}, status=400)
        tl = self.timeline
        with tl.lock:
            out = {"t_s": tl.now_s(), "time_scale": tl.time_scale(), "replay": tl.info()}
        return web.json_response(out, dumps=_dumps)

    async def _ws(self, req: web.Request) -> web.StreamResponse:
        self._same_origin(req)
        ws = web.WebSocketResponse(heartbeat=20.0)
        await ws.prepare(req)
        await ws.send_str(_dumps(self._hello()))
        self._clients.add(ws)
        try:
            async for msg in ws:
                if msg.type != WSMsgType.TEXT:
                    continue
                try:
                    req_msg = json.loads(msg.data)
                except json.JSONDecodeError:
                    continue
                if not isinstance(req_msg, dict):
                    continue
                if req_msg.get("type") == "node" and isinstance(req_msg.get("name"), str):
                    await ws.send_str(_dumps(self._node(req_msg["name"])))
                elif (err := self._apply_control(req_msg)) is not None:
                    await ws.send_str(_dumps({"type": "error", "message": err}))
        finally:
            self._clients.discard(ws)
        return ws

    # ------------------------------------------------------------------ messages

    def _hello(self) -> dict[str, Any]:
        tl = self.timeline
        nodes = []
        for name, kind in self._kinds.items():
            d: dict[str, Any] = {"name": name, "kind": kind}
            if name in self.positions.stations:
                d["lat"], d["lon"] = self.positions.stations[name]
            nodes.append(d)
        with tl.lock:
            tl.advance()
            t = tl.now_s()
            state = tl.state
            stored = {n: c.get("stored_bundles") for n, c in state.counters.items()}
            msg = {"type": "hello", "mode": tl.mode, "run": self.run, "title": self.title,
                   "stored": stored,
                   "epoch_utc": self.plan.get("epoch"), "nodes": nodes,
                   "links": state.links_dict(None, t or 0.0), "headline": state.headline(),
                   "replay": tl.info()}
        msg.update(self._frame(t, tl.time_scale()))
        return msg

    def _frame(self, t: float | None, scale: float | None) -> dict[str, Any]:
        return {"t_s": t, "wall": time.time(), "time_scale": scale,
                "sats": self.positions.sats_at(t) if t is not None else {}}

    def tick(self) -> dict[str, Any]:
        """The update every page gets each :data:`TICK_S`."""
        tl = self.timeline
        with tl.lock:
            tl.advance()
            t = tl.now_s()
            links, nodes, hops = tl.state.take_changes(t or 0.0)
            restarted = getattr(tl, "restarted", False)
            if restarted:  # every link the rebuilt state has; the page drops the others
                tl.restarted = False
                links = tl.state.links_dict(None, t or 0.0)
            headline = tl.state.headline()
            info = tl.info()
            stored = {n: tl.state.counters[n].get("stored_bundles")
                      for n in nodes if n in tl.state.counters}
        msg = {"type": "tick", "links": links, "all_links": restarted, "nodes": nodes,
               "stored": stored, "hops": hops,
               "headline": headline, "replay": info}
        msg.update(self._frame(t, tl.time_scale()))
        return msg

    def _node(self, name: str) -> dict[str, Any]:
        tl = self.timeline
        with tl.lock:
            t = tl.now_s() or 0.0
            panel = tl.state.node(name)
        # the node's contacts going on now and the next ones (one direction: from it)
        cs = [c for c in self._contacts.get(name, []) if c["end_s"] >= t][:12]
        panel["contacts"] = [{"to": c["to"], "start_s": c["start_s"], "end_s": c["end_s"],
                              "rate_bps": c.get("rate_bps"), "kind": c.get("kind")}
                             for c in cs]
        return {"type": "node", "name": name, "kind": self._kinds.get(name), "t_s": t,
                **panel}

    async def _ticker(self) -> None:
        while True:
            await asyncio.sleep(TICK_S)
            if not self._clients:
                with self.timeline.lock:  # keep the change sets small
                    self.timeline.advance()
                    self.timeline.state.take_changes(0.0)
                continue
            try:
                text = _dumps(self.tick())
            except Exception as e:  # noqa: BLE001 - the view must not stop the run
                if not self._tick_error:
                    print(f"netemu view: cannot build an update: {type(e).__name__}: {e}",
                          file=sys.stderr, flush=True)
                self._tick_error = True
                continue
            for ws in list(self._clients):
                try:
                    await ws.send_str(text)
                except (ConnectionError, RuntimeError):
                    self._clients.discard(ws)


def _dumps(obj: Any) -> str:
    return json.dumps(obj, separators=(",", ":"), default=str)
