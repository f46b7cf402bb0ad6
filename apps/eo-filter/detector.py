"""The vessel detector: hand-built image features fed to a small trained MLP (numpy only).

Features (per tile, scale-free): the tile minus its local background (an 11×11 box blur)
is divided by a robust noise estimate (MAD), then matched against oriented line kernels
(9 px long, 8 orientations) and an isotropic spot kernel. A ship is a short bright line, so
its oriented response is high and anisotropic; glint speckles answer the spot kernel but
not the line kernels; clouds are smooth and vanish in the residual.

The classifier is a one-hidden-layer MLP (``train.py`` fits it on generated tiles and saves
``model.npz``: weights, feature scaling and held-out scores). Inference is plain numpy so
the app runs in any host with the project's venv.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
from tiles import TILE_PX

N_ORIENT = 8
LINE_LEN_PX = 9
BG_BOX_PX = 11


def _kernel_fft(kernel: np.ndarray, n: int = TILE_PX) -> np.ndarray:
    """FFT of ``kernel`` centred at the origin of an n×n grid (circular convolution)."""
    k = np.zeros((n, n))
    h, w = kernel.shape
    k[:h, :w] = kernel
    k = np.roll(k, (-(h // 2), -(w // 2)), axis=(0, 1))
    return np.fft.rfft2(k)


def _line_kernel(theta: float) -> np.ndarray:
    r = LINE_LEN_PX // 2 + 1
    yy, xx = np.mgrid[-r : r + 1, -r : r + 1].astype(float)
    u = xx * np.cos(theta) + yy * np.sin(theta)
    v = -xx * np.sin(theta) + yy * np.cos(theta)
    k = ((np.abs(u) <= LINE_LEN_PX / 2) & (np.abs(v) <= 0.7)).astype(float)
    return k / k.sum()


def _spot_kernel() -> np.ndarray:
    k = -np.ones((5, 5)) / 16.0
    k[1:4, 1:4] = 0
    k[2, 2] = 1.0
    return k


_LINE_FFTS = np.stack([_kernel_fft(_line_kernel(np.pi * i / N_ORIENT)) for i in range(N_ORIENT)])
_SPOT_FFT = _kernel_fft(_spot_kernel())
_BOX_FFT = _kernel_fft(np.ones((BG_BOX_PX, BG_BOX_PX)) / BG_BOX_PX**2)

FEATURE_NAMES = (
    "line_max",
    "line_p999",
    "spot_max",
    "resid_max",
    "frac_over_4sigma",
    "frac_over_8sigma",
    "tile_std",
    "tile_mean",
    "line_over_resid",
    "anisotropy",
)


def features(pixels: np.ndarray, *, chunk: int = 128) -> np.ndarray:
    """Feature vector(s) of one tile (64×64) or a stack (N×64×64) → (F,) or (N, F)."""
    x = np.asarray(pixels, dtype=float)
    if x.ndim == 2:
        return _features(x[None])[0]
    return np.concatenate([_features(x[i : i + chunk]) for i in range(0, len(x), chunk)])


def _features(x: np.ndarray) -> np.ndarray:
    f = np.fft.rfft2(x)
    bg = np.fft.irfft2(f * _BOX_FFT, s=x.shape[-2:])
    r = x - bg
    med = np.median(r, axis=(1, 2), keepdims=True)
    sigma = 1.4826 * np.median(np.abs(r - med), axis=(1, 2), keepdims=True) + 0.5
    z = (r - med) / sigma
    zf = np.fft.rfft2(z)
    lines = np.fft.irfft2(zf[:, None] * _LINE_FFTS[None], s=x.shape[-2:])  # N×K×H×W
    spot = np.fft.irfft2(zf * _SPOT_FFT, s=x.shape[-2:])
    n = x.shape[0]
    line_best = lines.max(axis=1)  # N×H×W
    flat = line_best.reshape(n, -1)
    arg = flat.argmax(axis=1)
    line_max = flat[np.arange(n), arg]
    at = lines.reshape(n, N_ORIENT, -1)[np.arange(n), :, arg]  # N×K at the best pixel
    aniso = (at.max(axis=1) - np.median(at, axis=1)) / (np.abs(at.max(axis=1)) + 1.0)
    resid_max = z.reshape(n, -1).max(axis=1)
    out = np.stack(
        [
            np.log1p(np.clip(line_max, 0, None)),
            np.log1p(np.clip(np.quantile(flat, 0.999, axis=1), 0, None)),
            np.log1p(np.clip(spot.reshape(n, -1).max(axis=1), 0, None)),
            np.log1p(np.clip(resid_max, 0, None)),
            (z > 4).mean(axis=(1, 2)) * 100,
            (z > 8).mean(axis=(1, 2)) * 100,
            x.std(axis=(1, 2)) / 50.0,
            x.mean(axis=(1, 2)) / 100.0,
            line_max / (resid_max + 1.0),
            aniso,
        ],
        axis=1,
    )
    return out


def locate(pixels: np.ndarray) -> tuple[int, int]:
    """(row, col) of the strongest oriented-line response of one tile."""
    x = np.asarray(pixels, dtype=float)
    bg = np.fft.irfft2(np.fft.rfft2(x) * _BOX_FFT, s=x.shape)
    lines = np.fft.irfft2(np.fft.rfft2(x - bg)[None] * _LINE_FFTS, s=x.shape).max(axis=0)
    r, c = np.unravel_index(int(lines.argmax()), lines.shape)
    return int(r), int(c)


@dataclass
class Detector:
    """A trained MLP over :func:`features`: ``score`` is P(vessel)."""

    mean: np.ndarray
    scale: np.ndarray
    w1: np.ndarray
    b1: np.ndarray
    w2: np.ndarray
    b2: np.ndarray
    threshold: float = 0.5

    def score_features(self, feats: np.ndarray) -> np.ndarray:
        h = np.tanh(((feats - self.mean) / self.scale) @ self.w1 + self.b1)
        logit = h @ self.w2 + self.b2
        return 1.0 / (1.0 + np.exp(-logit.reshape(-1)))

    def score(self, pixels: np.ndarray) -> np.ndarray:
        """P(vessel) for each tile of a stack (or a one-element array for one tile)."""
        return self.score_features(np.atleast_2d(features(pixels)))

    def locate(self, pixels: np.ndarray) -> tuple[int, int]:
        """(row, col) of the strongest line response: where the vessel most likely is."""
        return locate(pixels)

    def detect(self, pixels: np.ndarray) -> bool:
        return bool(self.score(pixels)[0] >= self.threshold)

    def save(self, path: str | Path, **extra: object) -> None:
        np.savez(
            path,
            mean=self.mean,
            scale=self.scale,
            w1=self.w1.astype(np.float32),
            b1=self.b1.astype(np.float32),
            w2=self.w2.astype(np.float32),
            b2=self.b2.astype(np.float32),
            threshold=np.array(self.threshold),
            feature_names=np.array(FEATURE_NAMES),
            **{k: np.array(v) for k, v in extra.items()},
        )

    @classmethod
    def load(cls, path: str | Path) -> Detector:
        with np.load(path) as z:
            return cls(
                mean=z["mean"],
                scale=z["scale"],
                w1=z["w1"].astype(float),
                b1=z["b1"].astype(float),
                w2=z["w2"].astype(float),
                b2=z["b2"].astype(float),
                threshold=float(z["threshold"]),
            )


DEFAULT_MODEL = Path(__file__).with_name("model.npz")
