"""eo-filter figures: onboard cost per tile and the detector's held-out scores.

    .venv/bin/python bench/bench_eo_filter.py

Prints CPU milliseconds per tile (generate + score + locate, one core), tiles per CPU
second, and the committed model's accuracy/precision/recall on a fresh stream, plus the
share of bytes a satellite would downlink at 10 % vessel prevalence.
"""

from __future__ import annotations

import sys
import time
from datetime import datetime, timezone
from pathlib import Path

APP = Path(__file__).resolve().parents[1] / "apps" / "eo-filter"
sys.path.insert(0, str(APP))
sys.path.insert(0, str(APP.parent / "_shared"))

import train  # noqa: E402
from detector import DEFAULT_MODEL, Detector, features  # noqa: E402
from eo_filter import EoFilter  # noqa: E402
from geo import CircularOrbit  # noqa: E402
from tiles import make_dataset  # noqa: E402


def main() -> None:
    det = Detector.load(DEFAULT_MODEL)
    app = EoFilter("tb-0", det, CircularOrbit(), datetime(2026, 6, 1, tzinfo=timezone.utc),
                   seed=42, vessel_prob=0.1)
    n = 1000
    t0 = time.process_time()
    sent = 0
    for i in range(n):
        cap = app.capture(i, 10.0 * i)
        if cap.detected:
            sent += len(app.tile_payload(cap))
    cpu = time.process_time() - t0
    print(f"per tile: {1000 * cpu / n:.2f} ms CPU (generate + detect + locate); "
          f"{n / cpu:.0f} tiles per CPU second")
    s = app.stats
    print(f"10 % prevalence, {n} tiles: captured {s.bytes_captured} B, sent {sent} B in "
          f"{s.detections} tile bundles → {100 * (1 - sent / s.bytes_captured):.1f} % of downlink saved "
          f"(tp {s.tp}, fp {s.fp}, fn {s.fn})")
    x, y = make_dataset(9001, 1000)
    sc = train.evaluate(det, features(x), y)
    print(f"held-out (seed 9001, 1000 tiles, 50 % vessels): accuracy {sc['accuracy']:.3f}, "
          f"precision {sc['precision']:.3f}, recall {sc['recall']:.3f}")


if __name__ == "__main__":
    main()
