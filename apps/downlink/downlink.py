"""downlink: the ground station's receiver for eo-filter's bundles.

Listens on ``ipn:<node>.10``. Each tile bundle is stored as ``tiles/<sat>-<tile>.pgm``
and indexed in ``index.jsonl`` (one JSON object a line: arrival time, source satellite,
capture time, capture→arrival delay, position, score, size, file). Summary bundles go to
``summaries.jsonl``. Every arrival is published on ``app/downlink/<node>``; the totals go
to ``result.json`` when the app stops (SIGTERM) and every ``--flush-every`` arrivals.
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

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent / "_shared"))

import appkit  # noqa: E402


@dataclass
class DownlinkStore:
    """Stores arrivals under ``out_dir``; pure file I/O, no DTN, no clock."""

    out_dir: Path
    tiles: int = 0
    summaries: int = 0
    bytes_received: int = 0
    by_source: dict[str, int] = field(default_factory=dict)
    delays_s: list[float] = field(default_factory=list)
    latest_summary: dict[str, dict] = field(default_factory=dict)
    malformed: int = 0

    def __post_init__(self) -> None:
        (self.out_dir / "tiles").mkdir(parents=True, exist_ok=True)

    def accept(self, source: str, payload: bytes, bundle_id: str, now_s: float) -> dict | None:
        """Store one bundle payload; return its index record (None if not ours)."""
        head_raw, _, body = payload.partition(b"\n")
        try:
            head = json.loads(head_raw)
        except (json.JSONDecodeError, UnicodeDecodeError):
            self.malformed += 1
            return None
        self.bytes_received += len(payload)
        sat = str(head.get("node") or source)
        kind = head.get("type")
        if kind == "tile":
            self.tiles += 1
            self.by_source[sat] = self.by_source.get(sat, 0) + 1
            name = f"{sat}-{int(head.get('tile', self.tiles)):06d}.pgm"
            (self.out_dir / "tiles" / name).write_bytes(body)
            delay = now_s - float(head.get("t_s", now_s))
            self.delays_s.append(delay)
            rec = {
                "arrived_t_s": round(now_s, 3),
                "source": sat,
                "source_eid": source,
                "bundle_id": bundle_id,
                "tile": head.get("tile"),
                "captured_t_s": head.get("t_s"),
                "delay_s": round(delay, 3),
                "lat_deg": head.get("lat_deg"),
                "lon_deg": head.get("lon_deg"),
                "score": head.get("score"),
                "size_bytes": len(payload),
                "file": f"tiles/{name}",
            }
            with open(self.out_dir / "index.jsonl", "a") as f:
                f.write(json.dumps(rec) + "\n")
            return rec
        if kind == "summary":
            self.summaries += 1
            self.latest_summary[sat] = head
            with open(self.out_dir / "summaries.jsonl", "a") as f:
                f.write(json.dumps({"arrived_t_s": round(now_s, 3), **head}) + "\n")
            return {"arrived_t_s": round(now_s, 3), "source": sat, "type": "summary", "bundle_id": bundle_id}
        self.malformed += 1
        return None

    def result(self, node: str) -> dict:
        return {
            "app": "downlink",
            "node": node,
            "tiles_received": self.tiles,
            "summaries_received": self.summaries,
            "bytes_received": self.bytes_received,
            "tiles_by_source": dict(sorted(self.by_source.items())),
            "delay_p50_s": appkit.percentile(self.delays_s, 50),
            "delay_p95_s": appkit.percentile(self.delays_s, 95),
            "malformed": self.malformed,
            "latest_summaries": self.latest_summary,
        }


async def run(args: argparse.Namespace, port: appkit.DtnPort | None = None) -> dict:
    appenv = appkit.AppEnv.from_env("downlink")
    clock = appkit.make_clock(appenv.env)
    tel = appkit.AppTelemetry(appenv, clock)
    store = DownlinkStore(appenv.app_dir)
    if port is None:
        port = await appkit.open_port(appenv, appkit.SERVICE_DOWNLINK, args.dtn_spool)
    stop = asyncio.Event()
    appkit.install_stop(asyncio.get_running_loop(), stop)
    result_path = appenv.app_dir / "result.json"
    await tel.publish("start", eid=port.local_eid)
    count = 0
    stop_task = asyncio.ensure_future(stop.wait())
    try:
        while not stop.is_set():
            if args.max_bundles and count >= args.max_bundles:
                break
            recv = asyncio.ensure_future(port.receive())
            done, _ = await asyncio.wait({recv, stop_task}, return_when=asyncio.FIRST_COMPLETED)
            if recv not in done:
                recv.cancel()
                with contextlib.suppress(BaseException):
                    await recv
                break
            got = recv.result()
            count += 1
            rec = store.accept(got.source, got.payload, got.bundle_id, clock())
            if rec is not None:
                await tel.publish("arrived", **{k: v for k, v in rec.items() if k != "file"})
            if count % args.flush_every == 0:
                appkit.write_json_atomic(result_path, store.result(appenv.node))
    finally:
        stop_task.cancel()
        out = store.result(appenv.node)
        appkit.write_json_atomic(result_path, out)
        await tel.publish("stop", tiles_received=store.tiles, bytes_received=store.bytes_received)
        await tel.close(timeout_s=1.0)
        with contextlib.suppress(Exception):
            await asyncio.wait_for(port.close(), 1.5)
    return out


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description="ground receiver: store tiles and an index")
    ap.add_argument("--dtn-spool", default=os.environ.get("EO_DTN_SPOOL"))
    ap.add_argument("--max-bundles", type=int, default=0, help="stop after N (0: until SIGTERM)")
    ap.add_argument("--flush-every", type=int, default=10, help="rewrite result.json every N")
    return ap.parse_args(appkit.argv_with_params(argv))


def main(argv: list[str] | None = None) -> int:
    out = asyncio.run(run(parse_args(argv)))
    print(json.dumps({k: v for k, v in out.items() if k != "latest_summaries"}), flush=True)
    return 0


if __name__ == "__main__":
    appkit.exit_after(main)
