"""orbit-query's service answers by running the detector over the tiles it stored: which
tiles a query covers, and what the model finds in them."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np

APPS = Path(__file__).resolve().parents[2] / "apps"
sys.path.insert(0, str(APPS / "orbit-query"))

import orbit_query as oq  # noqa: E402
from onnx_detector import load_detector  # noqa: E402
from tiles import make_dataset  # noqa: E402


def _index(n: int) -> list[dict]:
    return [{"t_s": 10.0 * i, "tile": i, "lat_deg": -40.0 + 10 * i, "lon_deg": 100.0,
             "offset": 4096 * i} for i in range(n)]


def test_query_covers_the_tiles_in_its_region_and_window():
    index = _index(8)  # t 0..70 s, lat -40..30
    q = {"region": {"lat_min": -15, "lat_max": 15, "lon_min": 90, "lon_max": 110},
         "window_s": 30.0}
    assert [t["tile"] for t in oq.select_tiles(q, index, now_s=45.0)] == [3, 4]
    assert [t["tile"] for t in oq.select_tiles(q, index, now_s=70.0)] == [4, 5]
    q["region"] = {"lon_min": 170, "lon_max": 90}  # across 180°: lon 100 is outside
    assert oq.select_tiles(q, index, now_s=70.0) == []


def test_service_finds_the_vessels_the_model_finds_in_stored_tiles(tmp_path):
    x, y = make_dataset(4242, 40, vessel_prob=0.5)
    (tmp_path / "tiles.bin").write_bytes(x.astype(np.uint8).tobytes())
    index = _index(40)
    pixels = oq.load_pixels(tmp_path / "tiles.bin", index)
    assert np.array_equal(pixels, x)
    det = load_detector()
    hits = oq.detect_in(det, index, pixels)
    flagged = det.score(x) >= det.threshold
    assert [h["tile"] for h in hits] == [i for i in range(40) if flagged[i]]
    assert (flagged == y.astype(bool)).mean() >= 0.85
    for h in hits:  # the vessel's position is inside its tile (64 px at ~10 m)
        assert abs(h["lat_deg"] - index[h["tile"]]["lat_deg"]) < 0.01
    ans = oq.answer_of({"query_id": "q1", "sent_t_s": 1.0}, hits, "sat-1", 5.0, 3,
                       tiles_scanned=40)
    assert ans["count"] == len(hits) and len(ans["detections"]) == min(3, len(hits))
