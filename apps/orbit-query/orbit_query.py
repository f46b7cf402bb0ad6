"""orbit-query: "vessels seen in region R over the last T minutes?", asked from the ground,
answered in orbit.

Two roles in one app (``--role``; ``auto`` picks by the node's kind in the run's plan.json):

- ``service`` (satellites): listens on ``ipn:<sat>.20``; answers each query by running
  the detector model (the manifest's ``model:``) over the tiles this node stored in the
  asked region and window [now − T, now] of scenario time: eo-filter's tile store
  ``<run>/apps/eo-filter/<node>/tiles.jsonl`` (``--store`` to change). The work (the
  model's operations per tile × tiles) runs on the node's modelled compute
  (``appkit.Compute``): the answer leaves when that compute would have finished, after
  the queries before it;
- ``client`` (ground): every ``--interval-s`` scenario seconds sends a query bundle to the
  next of ``--targets`` (default: every satellite of the plan, round robin) and listens on
  ``ipn:<ground>.21`` for answers. Query → answer latency (scenario seconds), split into
  network (both ways), queueing and compute, goes to telemetry (``app/orbit-query/<node>``,
  event ``answer``) and to ``result.json``.

Query payload (JSON): ``{"type": "vessel-query", "query_id", "sent_t_s", "region":
{"lat_min", "lat_max", "lon_min", "lon_max"}, "window_s", "reply_to"}``; answer:
``{"type": "vessel-answer", "query_id", "sent_t_s", "answered_t_s", "node", "count",
"tiles_scanned", "queueing_s", "compute_s", "detections": [... at most --max-items ...]}``.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent / "_shared"))
sys.path.insert(0, str(HERE.parent / "eo-filter"))  # the detector and tile geometry

import appkit  # noqa: E402
import numpy as np  # noqa: E402
from geo import offset_latlon  # noqa: E402
from onnx_detector import load_detector  # noqa: E402
from tiles import TILE_BYTES, TILE_PX  # noqa: E402


@dataclass(frozen=True)
class Region:
    lat_min: float = -90.0
    lat_max: float = 90.0
    lon_min: float = -180.0
    lon_max: float = 180.0

    @classmethod
    def parse(cls, text: str) -> Region:
        """``LAT_MIN,LAT_MAX,LON_MIN,LON_MAX`` in degrees (a box crossing 180° has
        lon_min > lon_max)."""
        parts = [float(x) for x in text.split(",")]
        if len(parts) != 4:
            raise ValueError(f"region {text!r}: expected LAT_MIN,LAT_MAX,LON_MIN,LON_MAX")
        return cls(*parts)

    def contains(self, lat: float, lon: float) -> bool:
        if not self.lat_min <= lat <= self.lat_max:
            return False
        if self.lon_min <= self.lon_max:
            return self.lon_min <= lon <= self.lon_max
        return lon >= self.lon_min or lon <= self.lon_max

    def as_dict(self) -> dict:
        return dict(self.__dict__)


def read_jsonl(path: Path) -> list[dict]:
    """Lines of a JSON-lines file (skips a half-written last line)."""
    out: list[dict] = []
    if not path.exists():
        return out
    with open(path) as f:
        for line in f:
            with contextlib.suppress(json.JSONDecodeError):
                out.append(json.loads(line))
    return out


def select_tiles(query: dict, index: list[dict], now_s: float) -> list[dict]:
    """Index entries of the stored tiles in the query's region and window (pure)."""
    reg = Region(**query.get("region", {}))
    window = float(query.get("window_s", 1800.0))
    return [t for t in index
            if now_s - window <= float(t.get("t_s", -1e18)) <= now_s
            and reg.contains(float(t["lat_deg"]), float(t["lon_deg"]))]


def load_pixels(bin_path: Path, tiles: list[dict]) -> np.ndarray:
    """The tiles' pixels from the store's ``tiles.bin`` → uint8 [n, 64, 64]."""
    out = np.empty((len(tiles), TILE_PX, TILE_PX), dtype=np.uint8)
    with open(bin_path, "rb") as f:
        for i, t in enumerate(tiles):
            f.seek(int(t["offset"]))
            out[i] = np.frombuffer(f.read(TILE_BYTES), dtype=np.uint8).reshape(TILE_PX, TILE_PX)
    return out


def detect_in(detector: Any, tiles: list[dict], pixels: np.ndarray) -> list[dict]:
    """Run the model over the tiles; a detection per tile at or above its threshold, at
    the vessel's position (the strongest line response, moved from the tile centre)."""
    if not tiles:
        return []
    scores = detector.score(pixels)
    hits = []
    for t, px, score in zip(tiles, pixels, scores, strict=True):
        if score < detector.threshold:
            continue
        r, c = detector.locate(px)
        lat, lon = offset_latlon(float(t["lat_deg"]), float(t["lon_deg"]), r - TILE_PX / 2,
                                 c - TILE_PX / 2)
        hits.append({"t_s": t["t_s"], "tile": t.get("tile"), "lat_deg": round(lat, 5),
                     "lon_deg": round(lon, 5), "score": round(float(score), 4)})
    return hits


def answer_of(query: dict, hits: list[dict], node: str, now_s: float, max_items: int, *,
              tiles_scanned: int, compute: appkit.ComputeRecord | None = None) -> dict:
    """The service's answer to one query (pure function)."""
    return {
        "type": "vessel-answer",
        "query_id": query.get("query_id"),
        "sent_t_s": query.get("sent_t_s"),
        "received_t_s": round(compute.arrival_s, 3) if compute else None,
        "answered_t_s": round(now_s, 3),
        "node": node,
        "count": len(hits),
        "tiles_scanned": tiles_scanned,
        "queueing_s": round(compute.queueing_s, 6) if compute else 0.0,
        "compute_s": round(compute.compute_s, 9) if compute else 0.0,
        "detections": [
            {k: d.get(k) for k in ("t_s", "lat_deg", "lon_deg", "score")} for d in hits[-max_items:]
        ],
    }


@dataclass
class QueryLog:
    """The client's book of queries sent and answers received (no I/O)."""

    node: str
    queries: dict[str, dict] = field(default_factory=dict)

    def sent(self, query_id: str, target: str, t_s: float) -> None:
        self.queries[query_id] = {"query_id": query_id, "target": target, "sent_t_s": round(t_s, 3),
                                  "answered_t_s": None, "latency_s": None, "count": None}

    def answered(self, answer: dict, t_s: float) -> dict | None:
        q = self.queries.get(str(answer.get("query_id")))
        if q is None or q["answered_t_s"] is not None:
            return None  # unknown or duplicate
        q["answered_t_s"] = round(t_s, 3)
        q["latency_s"] = round(t_s - q["sent_t_s"], 3)
        q["count"] = answer.get("count")
        q["answered_by"] = answer.get("node")
        q["tiles_scanned"] = answer.get("tiles_scanned")
        # the latency's split: the service's queueing and compute, the rest is network
        # (the query's way up and the answer's way down)
        queueing = float(answer.get("queueing_s") or 0.0)
        compute = float(answer.get("compute_s") or 0.0)
        held_s = max(0.0, float(answer.get("answered_t_s", 0.0))
                     - float(answer.get("received_t_s") or answer.get("answered_t_s", 0.0)))
        q["queueing_s"] = round(queueing, 6)
        q["compute_s"] = round(compute, 9)
        q["service_s"] = round(held_s, 3)  # all the service held it: queueing, compute, host
        q["network_s"] = round(q["latency_s"] - held_s, 3)
        return q

    def result(self) -> dict:
        done = [q for q in self.queries.values() if q["latency_s"] is not None]
        lat = [q["latency_s"] for q in done]

        def p95(key: str) -> float | None:
            return appkit.percentile([q[key] for q in done if q.get(key) is not None], 95)

        return {
            "app": "orbit-query",
            "role": "client",
            "node": self.node,
            "queries_sent": len(self.queries),
            "answers_received": len(lat),
            "latency_p50_s": appkit.percentile(lat, 50),
            "latency_p95_s": appkit.percentile(lat, 95),
            "latency_max_s": max(lat) if lat else None,
            "network_p95_s": p95("network_s"),
            "queueing_p95_s": p95("queueing_s"),
            "compute_p95_s": p95("compute_s"),
            "latencies_s": lat,
            "queries": list(self.queries.values()),
        }


async def _receive_until(port: appkit.DtnPort, stop: asyncio.Event):
    """Yield deliveries until ``stop`` is set."""
    stop_task = asyncio.ensure_future(stop.wait())
    try:
        while not stop.is_set():
            recv = asyncio.ensure_future(port.receive())
            done, _ = await asyncio.wait({recv, stop_task}, return_when=asyncio.FIRST_COMPLETED)
            if recv not in done:
                recv.cancel()
                with contextlib.suppress(BaseException):
                    await recv
                return
            yield recv.result()
    finally:
        stop_task.cancel()


async def run_service(args, appenv, clock, tel, port, stop) -> dict:
    store = Path(args.store) if args.store else (
        (appenv.run_dir or appenv.app_dir.parents[2]) / "apps" / "eo-filter" / appenv.node / "tiles.jsonl"
    )
    detector = load_detector(args.model or appenv.host.app_model)
    ops_per_tile = getattr(detector, "ops_per_tile", None)
    compute = appkit.Compute.from_env(appenv, clock)
    answered = 0
    tasks: set[asyncio.Task] = set()
    await tel.publish("start", role="service", store=str(store), eid=port.local_eid,
                      ops_per_tile=ops_per_tile, compute_ops_per_s=compute.ops_per_s)

    async def answer(query: dict, source: str, bundle_id: str, arrival_s: float) -> None:
        nonlocal answered
        tiles = select_tiles(query, read_jsonl(store), arrival_s)

        def work() -> list[dict]:
            return detect_in(detector, tiles, load_pixels(store.with_suffix(".bin"), tiles)
                             if tiles else np.empty((0, TILE_PX, TILE_PX), np.uint8))

        ops = ops_per_tile * len(tiles) if ops_per_tile is not None else None
        hits, rec = await compute.run(work, ops=ops, arrival_s=arrival_s)
        ans = answer_of(query, hits, appenv.node, clock(), args.max_items,
                        tiles_scanned=len(tiles), compute=rec)
        reply_to = str(query.get("reply_to") or source)
        answer_id = await port.send(reply_to, json.dumps(ans).encode(), lifetime_s=args.lifetime_s)
        answered += 1
        await tel.publish("answered", query_id=ans["query_id"], count=ans["count"],
                          reply_to=reply_to, bundle_id=bundle_id, answer_bundle_id=answer_id,
                          tiles_scanned=len(tiles), **rec.as_dict())

    async for got in _receive_until(port, stop):
        try:
            query = json.loads(got.payload)
        except (json.JSONDecodeError, UnicodeDecodeError):
            continue
        if query.get("type") != "vessel-query":
            continue
        # each query its own task: the next one arrives (and queues) while this one computes
        task = asyncio.ensure_future(answer(query, got.source, got.bundle_id, clock()))
        tasks.add(task)
        task.add_done_callback(tasks.discard)
    # answers in flight get 2 s in all, not 2 s each: a model run holds the loop, so queued
    # ones would otherwise each run to the end after SIGTERM (minutes on a slow CPU)
    if tasks:
        _done, pending = await asyncio.wait(set(tasks), timeout=2.0)
        for task in pending:
            task.cancel()
        await asyncio.gather(*pending, return_exceptions=True)
    return {"app": "orbit-query", "role": "service", "node": appenv.node, "queries_answered": answered,
            "store": str(store), "runtime": getattr(detector, "runtime", "numpy"),
            "compute": compute.stats()}


async def run_client(args, appenv, clock, tel, port, stop) -> dict:
    log = QueryLog(appenv.node)
    if args.targets:
        targets = [t for t in args.targets.split(",") if t]
    else:
        nodes = appenv.plan_nodes()
        targets = sorted((n for n, i in nodes.items() if i["kind"] == "satellite"),
                         key=lambda n: nodes[n]["ipn"])
    if not targets:
        raise SystemExit("orbit-query: no targets (give --targets or run with a plan.json)")
    region = Region.parse(args.region)
    reply_to = port.local_eid
    result_path = appenv.app_dir / "result.json"
    await tel.publish("start", role="client", targets=targets, eid=reply_to)

    async def listen() -> None:
        async for got in _receive_until(port, stop):
            try:
                ans = json.loads(got.payload)
            except (json.JSONDecodeError, UnicodeDecodeError):
                continue
            q = log.answered(ans, clock())
            if q is not None:
                await tel.publish("answer", query_id=q["query_id"], target=q["target"],
                                  latency_s=q["latency_s"], count=q["count"],
                                  network_s=q["network_s"], queueing_s=q["queueing_s"],
                                  compute_s=q["compute_s"], bundle_id=got.bundle_id)
                appkit.write_json_atomic(result_path, log.result())

    listener = asyncio.ensure_future(listen())
    await appkit.wait_for_window(appenv, clock, stop)
    start_s = clock()
    first_s = max(start_s, args.start_s)
    n = 0
    try:
        while not stop.is_set() and (not args.count or n < args.count):
            due = first_s + n * args.interval_s
            if args.duration_s and due - start_s >= args.duration_s:
                break
            if await appkit.sleep_until(due, clock, appenv.env, stop):
                break
            target = targets[n % len(targets)]
            qid = f"{appenv.node}-{n}"
            now = clock()
            query = {"type": "vessel-query", "query_id": qid, "sent_t_s": round(now, 3),
                     "region": region.as_dict(), "window_s": args.window_s, "reply_to": reply_to}
            dest = appenv.eid(target, appkit.SERVICE_QUERY)
            try:
                bid = await port.send(dest, json.dumps(query).encode(), lifetime_s=args.lifetime_s)
            except Exception as e:  # noqa: BLE001
                print(f"orbit-query: send to {dest} failed: {e}", flush=True)
                bid = None
            log.sent(qid, target, now)
            await tel.publish("query", query_id=qid, target=target, dest=dest, bundle_id=bid)
            appkit.write_json_atomic(result_path, log.result())
            n += 1
        # wait for late answers (up to --drain-s scenario seconds), unless stopped
        if not stop.is_set() and args.drain_s > 0:
            await appkit.sleep_until(clock() + args.drain_s, clock, appenv.env, stop)
    finally:
        stop.set()
        with contextlib.suppress(BaseException):
            await listener
    return log.result()


async def run(args: argparse.Namespace, port: appkit.DtnPort | None = None) -> dict:
    appenv = appkit.AppEnv.from_env("orbit-query")
    clock = appkit.make_clock(appenv.env)
    tel = appkit.AppTelemetry(appenv, clock)
    role = args.role
    if role == "auto":
        kind = appenv.plan_nodes().get(appenv.node, {}).get("kind")
        role = "service" if kind == "satellite" else "client"
    service = appkit.SERVICE_QUERY if role == "service" else appkit.SERVICE_QUERY_REPLY
    if port is None:
        port = await appkit.open_port(appenv, service, args.dtn_spool)
    stop = asyncio.Event()
    appkit.install_stop(asyncio.get_running_loop(), stop)
    try:
        runner = run_service if role == "service" else run_client
        out = await runner(args, appenv, clock, tel, port, stop)
    finally:
        with contextlib.suppress(Exception):
            await asyncio.wait_for(port.close(), 1.5)
    appkit.write_json_atomic(appenv.app_dir / "result.json", out)
    await tel.publish("stop", **{k: v for k, v in out.items() if not isinstance(v, list)})
    await tel.close()
    return out


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description="ground-to-orbit vessel queries")
    ap.add_argument("--role", choices=("auto", "client", "service"), default="auto")
    ap.add_argument("--targets", help="satellites to query, comma-separated (default: all)")
    ap.add_argument("--region", default="-90,90,-180,180", help="LAT_MIN,LAT_MAX,LON_MIN,LON_MAX")
    ap.add_argument("--window-s", type=float, default=1800.0, help="T: look back this long")
    ap.add_argument("--interval-s", type=float, default=300.0, help="scenario s between queries")
    ap.add_argument("--start-s", type=float, default=60.0, help="first query at this scenario time")
    ap.add_argument("--count", type=int, default=0, help="queries to send (0: until stopped)")
    ap.add_argument("--duration-s", type=float, default=0.0)
    ap.add_argument("--drain-s", type=float, default=0.0, help="after the last query, wait this long")
    ap.add_argument("--lifetime-s", type=float, default=3600.0)
    ap.add_argument("--max-items", type=int, default=50)
    ap.add_argument("--store", help="service: eo-filter's tiles.jsonl to answer from")
    ap.add_argument("--model", type=Path, default=None,
                    help="service: detector model, .onnx or .npz (default: the manifest's model)")
    ap.add_argument("--dtn-spool", default=os.environ.get("EO_DTN_SPOOL"))
    return ap.parse_args(appkit.argv_with_params(argv))


def main(argv: list[str] | None = None) -> int:
    out = asyncio.run(run(parse_args(argv)))
    print(json.dumps({k: v for k, v in out.items() if k != "queries"}), flush=True)
    return 0


if __name__ == "__main__":
    appkit.exit_after(main)
