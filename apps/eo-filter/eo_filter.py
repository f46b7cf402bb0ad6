"""eo-filter: onboard vessel detection that downlinks only the tiles that matter.

Runs on an imaging satellite. Every ``--interval-s`` scenario seconds it captures a tile
(generated, seeded: see tiles.py), scores it with the detector model (the manifest's
``model:``, ``detector.onnx`` run by onnxruntime; see onnx_detector.py), holds the result
until the node's modelled compute would have finished (appkit.Compute), and:

- tile with a vessel → a bundle to the ground station's downlink endpoint
  (``ipn:<ground>.10``): a one-line JSON header, a newline, then the tile as binary PGM;
- every tile → appended to the node's tile store in the app directory (``tiles.bin``,
  4,096 raw bytes per tile, indexed by ``tiles.jsonl``: time, tile, lat/lon, offset), which
  the orbit-query service on this node runs the model over on demand;
- every detection → appended to ``detections.jsonl`` (time, tile, lat/lon, score);
- every ``--summary-every-s`` → a compact JSON summary bundle to the same endpoint.

Bytes captured (raw tiles) versus bytes sent (bundle payloads) go to ``result.json`` and to
telemetry (``app/eo-filter/<node>``). Stops after ``--duration-s`` scenario seconds or on
SIGTERM, writing its result either way.
"""

from __future__ import annotations

import argparse
import asyncio
import functools
import json
import os
import sys
import zlib
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(HERE.parent / "_shared"))

import appkit  # noqa: E402
import numpy as np  # noqa: E402
from detector import Detector  # noqa: E402
from geo import (  # noqa: E402
    CircularOrbit,
    TleOrbit,
    default_phase_deg,
    offset_latlon,
    orbit_from_scenario,
)
from onnx_detector import OnnxDetector, load_detector  # noqa: E402
from tiles import TILE_BYTES, TILE_PX, make_tile  # noqa: E402

from netemu.runtime.clock import ScenarioClock  # noqa: E402
from netemu.runtime.env import NETEMU_TLE_LINE1, NETEMU_TLE_LINE2  # noqa: E402


def pgm(pixels: np.ndarray) -> bytes:
    """Binary PGM (P5) of an 8-bit tile: any image viewer opens it."""
    h, w = pixels.shape
    return f"P5 {w} {h} 255\n".encode() + np.ascontiguousarray(pixels, dtype=np.uint8).tobytes()


@dataclass
class Capture:
    index: int
    t_s: float
    pixels: np.ndarray
    truth: bool
    score: float
    detected: bool
    lat_deg: float
    lon_deg: float
    vessel_lat_deg: float | None = None
    vessel_lon_deg: float | None = None


@dataclass
class Stats:
    tiles: int = 0
    detections: int = 0
    bytes_captured: int = 0
    bytes_sent: int = 0
    tile_bundles: int = 0
    summary_bundles: int = 0
    tp: int = 0
    fp: int = 0
    fn: int = 0
    tn: int = 0
    send_errors: int = 0

    def as_dict(self) -> dict:
        d = dict(self.__dict__)
        d["bytes_saved"] = self.bytes_captured - self.bytes_sent
        d["saved_fraction"] = (
            round(1 - self.bytes_sent / self.bytes_captured, 4) if self.bytes_captured else 0.0
        )
        return d


@dataclass
class EoFilter:
    """The app's logic without I/O: capture and score tiles, build bundle payloads."""

    node: str
    detector: Detector | OnnxDetector
    orbit: CircularOrbit | TleOrbit
    epoch: datetime
    seed: int = 42
    vessel_prob: float = 0.1
    stats: Stats = field(default_factory=Stats)

    @property
    def stream_seed(self) -> int:
        """Each satellite sees its own scenes: the run seed mixed with the node name."""
        return (self.seed * 1_000_003 + zlib.crc32(self.node.encode())) % (2**31)

    def capture(self, index: int, t_s: float) -> Capture:
        tile = make_tile(self.stream_seed, index, vessel_prob=self.vessel_prob)
        score = float(self.detector.score(tile.pixels)[0])
        detected = score >= self.detector.threshold
        lat, lon = self.orbit.subpoint(self.epoch, t_s)
        cap = Capture(index, t_s, tile.pixels, tile.has_vessel, score, detected, lat, lon)
        if detected:
            r, c = self.detector.locate(tile.pixels)
            cap.vessel_lat_deg, cap.vessel_lon_deg = offset_latlon(
                lat, lon, r - TILE_PX / 2, c - TILE_PX / 2
            )
        s = self.stats
        s.tiles += 1
        s.bytes_captured += TILE_BYTES
        s.detections += int(detected)
        s.tp += int(detected and tile.has_vessel)
        s.fp += int(detected and not tile.has_vessel)
        s.fn += int(not detected and tile.has_vessel)
        s.tn += int(not detected and not tile.has_vessel)
        return cap

    def detection_record(self, cap: Capture) -> dict:
        return {
            "t_s": round(cap.t_s, 3),
            "node": self.node,
            "tile": cap.index,
            "score": round(cap.score, 4),
            "lat_deg": round(cap.vessel_lat_deg if cap.vessel_lat_deg is not None else cap.lat_deg, 5),
            "lon_deg": round(cap.vessel_lon_deg if cap.vessel_lon_deg is not None else cap.lon_deg, 5),
            "tile_lat_deg": round(cap.lat_deg, 5),
            "tile_lon_deg": round(cap.lon_deg, 5),
        }

    def tile_payload(self, cap: Capture) -> bytes:
        head = {"type": "tile", **self.detection_record(cap), "format": "pgm"}
        return json.dumps(head, separators=(",", ":")).encode() + b"\n" + pgm(cap.pixels)

    def summary_payload(self, t_s: float) -> bytes:
        body = {"type": "summary", "node": self.node, "t_s": round(t_s, 3), **self.stats.as_dict()}
        return json.dumps(body, separators=(",", ":")).encode() + b"\n"


class TileStore:
    """Every captured tile, for on-demand inference by orbit-query on the same node:
    ``tiles.bin`` (raw 64×64 bytes, appended) indexed by ``tiles.jsonl`` (one line per
    tile: time, index, tile centre, byte offset). The index line is written after the
    bytes, so a reader never finds an entry whose pixels are missing."""

    def __init__(self, app_dir: Path) -> None:
        self._bin = open(app_dir / "tiles.bin", "ab")  # noqa: SIM115 - closed in close()
        self._index = open(app_dir / "tiles.jsonl", "a", buffering=1)  # noqa: SIM115
        self._offset = self._bin.tell()

    def append(self, cap: Capture) -> None:
        data = np.ascontiguousarray(cap.pixels, dtype=np.uint8).tobytes()
        self._bin.write(data)
        self._bin.flush()
        self._index.write(json.dumps({"t_s": round(cap.t_s, 3), "tile": cap.index,
                                      "lat_deg": round(cap.lat_deg, 5),
                                      "lon_deg": round(cap.lon_deg, 5),
                                      "offset": self._offset}) + "\n")
        self._offset += len(data)

    def close(self) -> None:
        self._bin.close()
        self._index.close()


def make_orbit(args: argparse.Namespace, node: str, env: dict[str, str],
               run_dir: Path | None = None) -> CircularOrbit | TleOrbit:
    """The satellite's orbit: TLE if given, else its walker group in the run's
    scenario.yaml, else the circular orbit of the command-line options (see geo.py)."""
    l1 = args.tle1 or env.get(NETEMU_TLE_LINE1)
    l2 = args.tle2 or env.get(NETEMU_TLE_LINE2)
    if l1 and l2:
        return TleOrbit(l1, l2)
    if run_dir is not None and args.phase_deg is None:
        orbit = orbit_from_scenario(run_dir / "scenario.yaml", node)
        if orbit is not None:
            return orbit
    phase = args.phase_deg if args.phase_deg is not None else default_phase_deg(node, args.ring_size)
    return CircularOrbit(args.altitude_km, args.inclination_deg, args.raan_deg, phase)


def pick_ground(appenv: appkit.AppEnv, wanted: str | None) -> str:
    if wanted:
        return wanted
    grounds = sorted(
        (n for n, i in appenv.plan_nodes().items() if i["kind"] == "ground"),
        key=lambda n: appenv.plan_nodes()[n]["ipn"],
    )
    return grounds[0] if grounds else "ground"


def epoch_from_env(env: dict[str, str]) -> datetime:
    """The scenario epoch (``NETEMU_EPOCH``), else 2026-01-01 UTC."""
    default = ScenarioClock(datetime(2026, 1, 1, tzinfo=timezone.utc))
    return ScenarioClock.from_env(env, default=default).epoch


async def run(args: argparse.Namespace, port: appkit.DtnPort | None = None) -> dict:
    appenv = appkit.AppEnv.from_env("eo-filter")
    env = appenv.env
    clock = appkit.make_clock(env)
    tel = appkit.AppTelemetry(appenv, clock)
    detector = load_detector(args.model or appenv.host.app_model)
    compute = appkit.Compute.from_env(appenv, clock)
    ops_per_tile = getattr(detector, "ops_per_tile", None)
    if args.threshold is not None:
        detector.threshold = args.threshold
    app = EoFilter(
        appenv.node,
        detector,
        make_orbit(args, appenv.node, env, appenv.run_dir),
        epoch_from_env(env),
        seed=args.seed,
        vessel_prob=args.vessel_prob,
    )
    ground = pick_ground(appenv, args.ground)
    dest = appenv.eid(ground, appkit.SERVICE_DOWNLINK)
    stop = asyncio.Event()
    appkit.install_stop(asyncio.get_running_loop(), stop)
    store = open(appenv.app_dir / "detections.jsonl", "a", buffering=1)  # noqa: SIM115
    tile_store = TileStore(appenv.app_dir)
    result_path = appenv.app_dir / "result.json"
    await appkit.wait_for_window(appenv, clock, stop)  # loaded ahead; capture from the window's start
    start_s = clock()
    next_summary = start_s + args.summary_every_s
    model_name = str(args.model or appenv.host.app_model or "detector.onnx")
    await tel.publish("start", ground=ground, dest=dest, model=model_name,
                      ops_per_tile=ops_per_tile, compute_ops_per_s=compute.ops_per_s)

    async def on_sent(payload: bytes, kind: str, bid: str) -> None:
        app.stats.bytes_sent += len(payload)
        if kind == "tile":
            app.stats.tile_bundles += 1
        else:
            app.stats.summary_bundles += 1
        await tel.publish("sent", kind=kind, bundle_id=bid, size_bytes=len(payload), dest=dest)

    async def on_error(payload: bytes, kind: str, e: Exception) -> None:
        app.stats.send_errors += 1  # keep capturing; count the failure
        print(f"eo-filter: send failed: {e}", flush=True)

    # capture starts now; bundles queue until the node's agent is ready
    sender = appkit.Sender(
        port if port is not None else appkit.open_port(appenv, appkit.SERVICE_EO_FILTER, args.dtn_spool),
        lifetime_s=args.lifetime_s, on_sent=on_sent, on_error=on_error,
    )

    def result() -> dict:
        return {
            "app": "eo-filter",
            "node": appenv.node,
            "ground": ground,
            "start_t_s": round(start_s, 3),
            "end_t_s": round(clock(), 3),
            "unsent_at_end": sender.pending,
            "model": model_name,
            "runtime": getattr(detector, "runtime", "numpy"),
            "ops_per_tile": ops_per_tile,
            "compute": compute.stats(),
            **app.stats.as_dict(),
        }

    index = 0
    try:
        while not stop.is_set():
            t_s = clock()
            if args.duration_s and t_s - start_s >= args.duration_s:
                break
            if args.max_tiles and index >= args.max_tiles:
                break
            cap, _ = await compute.run(functools.partial(app.capture, index, t_s),
                                       ops=ops_per_tile, arrival_s=t_s)
            tile_store.append(cap)
            index += 1
            if cap.detected:
                rec = app.detection_record(cap)
                store.write(json.dumps(rec) + "\n")
                await tel.publish("detection", **{k: rec[k] for k in ("tile", "lat_deg", "lon_deg", "score")})
                sender.send(dest, app.tile_payload(cap), "tile")
            if t_s >= next_summary:
                next_summary += args.summary_every_s
                sender.send(dest, app.summary_payload(t_s), "summary")
                await tel.publish("stats", **app.stats.as_dict())
                appkit.write_json_atomic(result_path, result())
            # no drift over a run
            await appkit.sleep_until(start_s + index * args.interval_s, clock, env, stop)
        sender.send(dest, app.summary_payload(clock()), "summary")
    finally:
        await sender.close(timeout_s=args.drain_wall_s)
        out = result()
        appkit.write_json_atomic(result_path, out)
        await tel.publish("stats", **app.stats.as_dict())
        await tel.publish("stop")
        store.close()
        tile_store.close()
        await tel.close(timeout_s=1.0)
    return out


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description="onboard vessel detection; downlink only tiles with vessels")
    ap.add_argument("--interval-s", type=float, default=10.0, help="scenario seconds between tiles")
    ap.add_argument("--vessel-prob", type=float, default=0.1, help="share of scenes with a vessel")
    ap.add_argument("--seed", type=int, default=42)
    ap.add_argument("--ground", help="ground station receiving tiles (default: first in plan.json)")
    ap.add_argument("--summary-every-s", type=float, default=600.0)
    ap.add_argument("--lifetime-s", type=float, default=7200.0, help="bundle lifetime")
    ap.add_argument("--duration-s", type=float, default=0.0, help="stop after (0: until SIGTERM)")
    ap.add_argument("--max-tiles", type=int, default=0)
    ap.add_argument("--drain-wall-s", type=float, default=2.5,
                    help="on stop, wait at most this long (wall) for queued bundles to be taken")
    ap.add_argument("--model", type=Path, default=None,
                    help="detector model: .onnx or .npz (default: the manifest's model, "
                    "else detector.onnx)")
    ap.add_argument("--threshold", type=float, default=None,
                    help="score at or above which a tile is sent (default: the model's, 0.5)")
    ap.add_argument("--dtn-spool", default=os.environ.get("EO_DTN_SPOOL"),
                    help="spool directory instead of the DTN agent (demos without emulator)")
    ap.add_argument("--tle1")
    ap.add_argument("--tle2")
    ap.add_argument("--altitude-km", type=float, default=535.0)
    ap.add_argument("--inclination-deg", type=float, default=97.5)
    ap.add_argument("--raan-deg", type=float, default=0.0)
    ap.add_argument("--phase-deg", type=float, default=None)
    ap.add_argument("--ring-size", type=int, default=12)
    return ap.parse_args(appkit.argv_with_params(argv))


def main(argv: list[str] | None = None) -> int:
    out = asyncio.run(run(parse_args(argv)))
    print(json.dumps(out), flush=True)
    return 0


if __name__ == "__main__":
    appkit.exit_after(main)
