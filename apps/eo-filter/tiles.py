"""Synthetic ocean image tiles, some with vessels: seeded and reproducible.

A tile is a 64×64 single-band 8-bit image (4,096 bytes), the size of a small chip cut from
a wide-swath optical scene. Each tile is drawn from ``numpy.random.default_rng([seed,
index])``, so tile *i* of seed *s* is the same on every machine and in every run, whatever
order tiles are made in.

What a scene holds (each with its own probability):

- ocean: a dark base level with wave texture (a few sinusoidal swells at random
  directions and wavelengths plus smoothed noise) and sensor noise;
- sun glint: a broad brightening with many small bright speckles (the hard negative: bright
  points that are not ships);
- clouds: large soft bright patches that may hide part of the scene;
- a vessel (``has_vessel``): a small bright elongated blob (6–16 px long, 2–3 px wide) at a
  random orientation with a dimmer wake trailing behind it.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

TILE_PX = 64
"""Tile side, pixels."""
TILE_BYTES = TILE_PX * TILE_PX
"""Bytes of one raw tile (one 8-bit band)."""


@dataclass(frozen=True)
class Tile:
    """One generated tile: ``pixels`` (uint8, 64×64), the truth ``has_vessel``, and
    where the vessel's centre is (pixel row/col, ``None`` without a vessel)."""

    seed: int
    index: int
    pixels: np.ndarray
    has_vessel: bool
    vessel_rc: tuple[float, float] | None


def _smooth_noise(rng: np.random.Generator, n: int, scale_px: float) -> np.ndarray:
    """Gaussian-filtered white noise (via FFT), unit standard deviation."""
    white = rng.standard_normal((n, n))
    f = np.fft.fftfreq(n)
    fx, fy = np.meshgrid(f, f)
    g = np.exp(-2.0 * (np.pi * scale_px) ** 2 * (fx**2 + fy**2))
    out = np.real(np.fft.ifft2(np.fft.fft2(white) * g))
    sd = out.std()
    return out / sd if sd > 0 else out


def make_tile(
    seed: int,
    index: int,
    *,
    vessel_prob: float = 0.5,
    glint_prob: float = 0.3,
    cloud_prob: float = 0.3,
) -> Tile:
    """Tile ``index`` of the scene stream ``seed`` (reproducible)."""
    rng = np.random.default_rng([seed, index])
    n = TILE_PX
    yy, xx = np.mgrid[0:n, 0:n].astype(float)

    base = rng.uniform(40, 90)
    img = np.full((n, n), base)
    for _ in range(3):  # swell
        theta = rng.uniform(0, np.pi)
        wavelength = rng.uniform(5, 20)
        amp = rng.uniform(1, 6)
        phase = rng.uniform(0, 2 * np.pi)
        img += amp * np.sin(2 * np.pi * (xx * np.cos(theta) + yy * np.sin(theta)) / wavelength + phase)
    img += rng.uniform(2, 6) * _smooth_noise(rng, n, rng.uniform(1.0, 3.0))

    if rng.random() < glint_prob:
        cy, cx = rng.uniform(-10, n + 10, size=2)
        radius = rng.uniform(15, 40)
        glow = np.exp(-((yy - cy) ** 2 + (xx - cx) ** 2) / (2 * radius**2))
        img += rng.uniform(10, 40) * glow
        # speckles: single bright pixels, denser where the glint is strong
        speck = rng.random((n, n)) < 0.04 * glow
        img += speck * rng.uniform(20, 70, size=(n, n))

    has_vessel = bool(rng.random() < vessel_prob)
    vessel_rc: tuple[float, float] | None = None
    if has_vessel:
        cy, cx = rng.uniform(8, n - 8, size=2)
        theta = rng.uniform(0, np.pi * 2)
        length = rng.uniform(6, 16)
        width = rng.uniform(1.6, 3.0)
        bright = rng.uniform(45, 130)
        u = (xx - cx) * np.cos(theta) + (yy - cy) * np.sin(theta)  # along-track
        v = -(xx - cx) * np.sin(theta) + (yy - cy) * np.cos(theta)  # across-track
        hull = np.exp(-((u / (length / 2)) ** 6) - (v / (width / 2)) ** 2 * 1.5)
        img += bright * hull
        # wake: a dim widening streak behind the stern (negative u)
        wake_len = rng.uniform(1.0, 3.0) * length
        behind = (u < -length / 2) & (u > -length / 2 - wake_len)
        spread = width / 2 + 0.25 * np.abs(u + length / 2)
        wake = behind * np.exp(-(v / spread) ** 2) * (1 - (-(u + length / 2)) / wake_len)
        img += rng.uniform(8, 25) * np.clip(wake, 0, None)
        vessel_rc = (float(cy), float(cx))

    if rng.random() < cloud_prob:
        cloud = _smooth_noise(rng, n, rng.uniform(6, 12))
        opacity = rng.uniform(0.5, 0.85)  # thin enough that a ship can show through
        cover = opacity * np.clip((cloud - rng.uniform(-0.5, 1.0)) * 0.8, 0, 1)
        img = img * (1 - cover) + cover * rng.uniform(170, 230)

    img += rng.normal(0, rng.uniform(1.5, 4.0), size=(n, n))
    pixels = np.clip(np.rint(img), 0, 255).astype(np.uint8)
    return Tile(seed, index, pixels, has_vessel, vessel_rc)


def make_dataset(seed: int, count: int, **kw: float) -> tuple[np.ndarray, np.ndarray]:
    """``count`` tiles of stream ``seed``: (pixels N×64×64 uint8, labels N int)."""
    tiles = [make_tile(seed, i, **kw) for i in range(count)]
    x = np.stack([t.pixels for t in tiles])
    y = np.array([int(t.has_vessel) for t in tiles])
    return x, y
