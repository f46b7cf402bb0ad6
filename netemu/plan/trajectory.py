"""Trajectories of moving ground nodes (aircraft, ships, user terminals).

A trajectory is a list of timed waypoints (``t_s`` from the scenario epoch, WGS84
latitude, longitude, altitude). Between two waypoints the node moves along the great
circle (on a sphere, latitude and longitude taken as spherical coordinates) at constant
speed, its altitude changing linearly; before the first and after the last it stays put.
Three ways to give one in a scenario (``trajectory:`` of a ground station):

- ``waypoints: [[t_s, lat_deg, lon_deg, alt_m], ...]``;
- ``csv: FILE`` with a header ``time_s,lat_deg,lon_deg,alt_m``;
- ``legs: {start_s, speed_mps, points: [[lat_deg, lon_deg, alt_m], ...]}``: great-circle
  legs between the points at ``speed_mps`` (the waypoint times follow from the lengths).
"""

from __future__ import annotations

import csv
import io
import math
from dataclasses import dataclass

import numpy as np

from netemu.errors import InputError
from netemu.plan.orbit import geodetic_to_ecef

EARTH_RADIUS_M = 6_371_000.0
"""Sphere radius for leg lengths (``legs:`` times)."""


def _unit(lat_deg: np.ndarray, lon_deg: np.ndarray) -> np.ndarray:
    lat, lon = np.radians(lat_deg), np.radians(lon_deg)
    return np.stack([np.cos(lat) * np.cos(lon), np.cos(lat) * np.sin(lon), np.sin(lat)], axis=-1)


def central_angle(a: tuple[float, float], b: tuple[float, float]) -> float:
    """Angle (rad) between two (lat_deg, lon_deg) points on the sphere."""
    u = _unit(np.array([a[0], b[0]]), np.array([a[1], b[1]]))
    return float(math.atan2(np.linalg.norm(np.cross(u[0], u[1])), float(u[0] @ u[1])))


@dataclass(frozen=True)
class Trajectory:
    """Timed waypoints (strictly increasing ``times_s``)."""

    times_s: tuple[float, ...]
    lat_deg: tuple[float, ...]
    lon_deg: tuple[float, ...]
    alt_m: tuple[float, ...]

    def geodetic(self, t_s: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(lat_deg, lon_deg, alt_m) at times ``t_s``."""
        t = np.atleast_1d(np.asarray(t_s, dtype=float))
        T = np.array(self.times_s)
        if len(T) == 1:
            n = len(t)
            return (np.full(n, self.lat_deg[0]), np.full(n, self.lon_deg[0]),
                    np.full(n, self.alt_m[0]))
        k = np.clip(np.searchsorted(T, t, side="right") - 1, 0, len(T) - 2)
        f = np.clip((t - T[k]) / (T[k + 1] - T[k]), 0.0, 1.0)
        u = _unit(np.array(self.lat_deg), np.array(self.lon_deg))
        a, b = u[k], u[k + 1]
        omega = np.arctan2(np.linalg.norm(np.cross(a, b), axis=1), np.einsum("ij,ij->i", a, b))
        s = np.sin(omega)
        small = s < 1e-12
        wa = np.where(small, 1.0 - f, np.sin((1.0 - f) * omega) / np.where(small, 1.0, s))
        wb = np.where(small, f, np.sin(f * omega) / np.where(small, 1.0, s))
        p = wa[:, None] * a + wb[:, None] * b
        p /= np.linalg.norm(p, axis=1, keepdims=True)
        lat = np.degrees(np.arcsin(np.clip(p[:, 2], -1.0, 1.0)))
        lon = np.degrees(np.arctan2(p[:, 1], p[:, 0]))
        alt = np.array(self.alt_m)[k] + f * (np.array(self.alt_m)[k + 1] - np.array(self.alt_m)[k])
        return lat, lon, alt

    def ecef(self, t_s: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """ECEF positions (km) and up vectors at times ``t_s``."""
        lat, lon, alt = self.geodetic(t_s)
        return geodetic_to_ecef(lat, lon, alt)


def _check(rows: list[tuple[float, float, float, float]], where: str) -> Trajectory:
    if not rows:
        raise InputError("a trajectory needs at least one waypoint", source=where)
    for i, (t, lat, lon, alt) in enumerate(rows):
        if not all(math.isfinite(x) for x in (t, lat, lon, alt)):
            raise InputError(f"waypoint {i}: values must be finite numbers", source=where)
        if not -90 <= lat <= 90 or not -180 <= lon <= 360 or not -500 <= alt <= 20_000:
            raise InputError(f"waypoint {i}: latitude in [-90, 90], longitude in [-180, 360], "
                             f"altitude in [-500, 20000] m expected, got {lat}, {lon}, {alt}",
                             source=where)
        if i and t <= rows[i - 1][0]:
            raise InputError(f"waypoint {i}: times must increase ({t} after {rows[i - 1][0]})",
                             source=where)
    return Trajectory(tuple(r[0] for r in rows), tuple(r[1] for r in rows),
                      tuple(r[2] for r in rows), tuple(r[3] for r in rows))


def from_waypoints(rows: list[list[float]], where: str) -> Trajectory:
    out = []
    for i, r in enumerate(rows):
        if not isinstance(r, (list, tuple)) or len(r) not in (3, 4):
            raise InputError(f"waypoint {i}: expected [t_s, lat_deg, lon_deg, alt_m]",
                             source=where)
        try:
            out.append((float(r[0]), float(r[1]), float(r[2]), float(r[3]) if len(r) == 4 else 0.0))
        except (TypeError, ValueError) as e:
            raise InputError(f"waypoint {i}: {e}", source=where) from e
    return _check(out, where)


def from_csv(text: str, where: str) -> Trajectory:
    """``time_s,lat_deg,lon_deg[,alt_m]`` with that header."""
    reader = csv.reader(io.StringIO(text))
    rows = []
    header: list[str] | None = None
    for lineno, rec in enumerate(reader, 1):
        if not rec or rec[0].lstrip().startswith("#"):
            continue
        if header is None:
            header = [h.strip() for h in rec]
            if header[:3] != ["time_s", "lat_deg", "lon_deg"]:
                raise InputError("expected the header time_s,lat_deg,lon_deg[,alt_m]",
                                 source=where, line=lineno)
            continue
        try:
            vals = [float(x) for x in rec]
        except ValueError as e:
            raise InputError(f"not a number: {e}", source=where, line=lineno) from e
        if len(vals) != len(header):
            raise InputError(f"expected {len(header)} values, got {len(vals)}", source=where,
                             line=lineno)
        rows.append((vals[0], vals[1], vals[2], vals[3] if len(vals) > 3 else 0.0))
    return _check(rows, where)


def from_legs(points: list[list[float]], speed_mps: float, start_s: float,
              where: str) -> Trajectory:
    """Great-circle legs between ``points`` at ``speed_mps`` from ``start_s``."""
    if not speed_mps > 0:
        raise InputError("speed_mps must be > 0", source=where)
    rows: list[tuple[float, float, float, float]] = []
    t = start_s
    for i, p in enumerate(points):
        if not isinstance(p, (list, tuple)) or len(p) not in (2, 3):
            raise InputError(f"point {i}: expected [lat_deg, lon_deg, alt_m]", source=where)
        lat, lon, alt = float(p[0]), float(p[1]), float(p[2]) if len(p) == 3 else 0.0
        if rows:
            d = central_angle((rows[-1][1], rows[-1][2]), (lat, lon)) * EARTH_RADIUS_M
            t += max(d, 1e-3) / speed_mps
        rows.append((t, lat, lon, alt))
    return _check(rows, where)
