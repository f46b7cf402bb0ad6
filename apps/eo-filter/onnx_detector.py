"""The vessel detector as an ONNX model (``detector.onnx``, built by export_onnx.py), run
with onnxruntime: the same interface as :class:`detector.Detector`, so eo-filter and
orbit-query run either; the manifest's ``model:`` picks the file.

A replacement model must take float32 tiles ``[batch, 1, 64, 64]`` (pixel values 0-255)
and give ``[batch]`` scores, P(vessel); its ``threshold`` metadata (default 0.5) decides.
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
from detector import DEFAULT_MODEL, Detector, locate
from tiles import TILE_PX

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "_shared"))

from onnxmodel import OnnxModel  # noqa: E402

INPUT_SHAPE = ("batch", 1, TILE_PX, TILE_PX)
OUTPUT_SHAPE = ("batch",)
DEFAULT_ONNX = Path(__file__).with_name("detector.onnx")


class OnnxDetector:
    """P(vessel) per tile from an ONNX model; ``ops_per_tile`` is its work per tile."""

    def __init__(self, path: str | Path = DEFAULT_ONNX) -> None:
        self.model = OnnxModel(path, INPUT_SHAPE, OUTPUT_SHAPE)
        self.threshold = float(self.model.metadata.get("threshold", 0.5))
        self.ops_per_tile = self.model.ops_per_item
        self.runtime = self.model.runtime

    def score(self, pixels: np.ndarray) -> np.ndarray:
        """P(vessel) for each tile of a stack (or a one-element array for one tile)."""
        x = np.asarray(pixels, dtype=np.float32)
        if x.ndim == 2:
            x = x[None]
        return self.model.run(x[:, None]).reshape(-1).astype(float)

    def locate(self, pixels: np.ndarray) -> tuple[int, int]:
        """(row, col) of the strongest line response: where the vessel most likely is."""
        return locate(pixels)

    def detect(self, pixels: np.ndarray) -> bool:
        return bool(self.score(pixels)[0] >= self.threshold)


def load_detector(path: str | Path | None = None) -> OnnxDetector | Detector:
    """An ``.onnx`` model (onnxruntime) or ``.npz`` weights (numpy); default detector.onnx."""
    p = Path(path) if path else DEFAULT_ONNX
    if p.suffix == ".npz":
        return Detector.load(p)
    return OnnxDetector(p)


__all__ = ["DEFAULT_MODEL", "DEFAULT_ONNX", "OnnxDetector", "load_detector"]
