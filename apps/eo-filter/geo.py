"""Where a tile is: the satellite's sub-satellite point at capture time.

Kept simple on purpose (documented in README.md): every tile is taken at nadir, so its
centre is the sub-satellite point; a vessel's position adds its pixel offset from the tile
centre at ``GSD_M`` metres per pixel (north up).

Two sources for the orbit, in order:

1. a TLE (``--tle1/--tle2`` or ``NETEMU_TLE_LINE1``/``NETEMU_TLE_LINE2``), propagated with
   ``sgp4``; TEME → Earth-fixed by rotating through Greenwich mean sidereal time (polar
   motion and the TEME/ECI nutation terms are neglected: < 1 km at LEO);
2. the run's ``scenario.yaml`` when the satellite belongs to a ``walker:`` group there
   (read as plain YAML, following the Walker conventions of docs/scenarios.md: satellite
   ``s`` of plane ``p`` at argument of latitude ``arg_lat0 + span·s/S + 360·F·p/(P·S)``,
   node ``raan0 + spread·p/P``), flown as a circular orbit;
3. a circular orbit (``--altitude-km``, ``--inclination-deg``, ``--raan-deg``,
   ``--phase-deg``), by default the three-body ring: 535 km, 97.5°, the satellite's phase
   30° × its index (``sat-3`` → 90°).
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from pathlib import Path

EARTH_RADIUS_KM = 6378.137
MU_KM3_S2 = 398_600.4418
GSD_M = 10.0
"""Ground sample distance assumed for tiles, metres per pixel."""

_J2000 = datetime(2000, 1, 1, 12, tzinfo=timezone.utc)


def gmst_rad(t: datetime) -> float:
    """Greenwich mean sidereal angle (IAU 1982, linear term; ~0.1 s accuracy)."""
    d = (t - _J2000).total_seconds() / 86400.0
    return math.radians((280.46061837 + 360.98564736629 * d) % 360.0)


def _latlon_from_eci(x: float, y: float, z: float, t: datetime) -> tuple[float, float]:
    r = math.sqrt(x * x + y * y + z * z)
    lat = math.degrees(math.asin(z / r))  # geocentric latitude (spherical Earth)
    lon = math.degrees(math.atan2(y, x) - gmst_rad(t))
    lon = (lon + 180.0) % 360.0 - 180.0
    return lat, lon


@dataclass(frozen=True)
class CircularOrbit:
    altitude_km: float = 535.0
    inclination_deg: float = 97.5
    raan_deg: float = 0.0
    phase_deg: float = 0.0

    def subpoint(self, epoch: datetime, t_s: float) -> tuple[float, float]:
        a = EARTH_RADIUS_KM + self.altitude_km
        n = math.sqrt(MU_KM3_S2 / a**3)
        u = math.radians(self.phase_deg) + n * t_s
        i, o = math.radians(self.inclination_deg), math.radians(self.raan_deg)
        x = math.cos(o) * math.cos(u) - math.sin(o) * math.sin(u) * math.cos(i)
        y = math.sin(o) * math.cos(u) + math.cos(o) * math.sin(u) * math.cos(i)
        z = math.sin(u) * math.sin(i)
        return _latlon_from_eci(x, y, z, epoch + timedelta(seconds=t_s))


@dataclass(frozen=True)
class TleOrbit:
    line1: str
    line2: str

    def subpoint(self, epoch: datetime, t_s: float) -> tuple[float, float]:
        from sgp4.api import Satrec, jday

        sat = Satrec.twoline2rv(self.line1, self.line2)
        t = epoch + timedelta(seconds=t_s)
        jd, fr = jday(t.year, t.month, t.day, t.hour, t.minute, t.second + t.microsecond / 1e6)
        err, r, _v = sat.sgp4(jd, fr)
        if err:
            raise ValueError(f"sgp4 error {err} at {t.isoformat()}")
        return _latlon_from_eci(*r, t)


def orbit_from_scenario(path: Path, node: str) -> CircularOrbit | None:
    """The circular orbit of ``node`` from a scenario's ``walker:`` groups (None when the
    file or the node is not there)."""
    try:
        import yaml

        doc = yaml.safe_load(Path(path).read_text())
    except (OSError, ValueError, ImportError):
        return None
    except Exception:  # noqa: BLE001 - yaml.YAMLError: no orbit from a broken file
        return None
    for group in (doc or {}).get("satellites") or []:
        w = group.get("walker") if isinstance(group, dict) else None
        if not isinstance(w, dict):
            continue
        pfx = group.get("name_prefix") or "sat"
        planes, per = int(w.get("planes", 1)), int(w.get("sats_per_plane", 1))
        m = re.fullmatch(re.escape(pfx) + (r"-(\d+)-(\d+)" if planes > 1 else r"-(\d+)"), node)
        if not m:
            continue
        p, sl = (int(m.group(1)), int(m.group(2))) if planes > 1 else (0, int(m.group(1)))
        spread = 180.0 if w.get("pattern") == "star" else 360.0
        phase = (float(w.get("arg_lat0_deg", 0.0)) + float(w.get("phase_span_deg", 360.0)) * sl / per
                 + 360.0 * int(w.get("phasing", 0)) * p / (planes * per))
        raan = float(w.get("raan0_deg", 0.0)) + spread * p / planes
        return CircularOrbit(float(w["altitude_km"]), float(w["inclination_deg"]), raan % 360.0,
                             phase % 360.0)
    return None


def default_phase_deg(node: str, count: int = 12) -> float:
    """Phase of a ring satellite from the last number in its name: 360°/count × index."""
    m = re.search(r"(\d+)(?!.*\d)", node)
    return (360.0 / count) * int(m.group(1)) if m else 0.0


def offset_latlon(lat: float, lon: float, drow_px: float, dcol_px: float) -> tuple[float, float]:
    """Move from (lat, lon) by a pixel offset (rows south, cols east) at ``GSD_M``."""
    dn_m, de_m = -drow_px * GSD_M, dcol_px * GSD_M
    dlat = math.degrees(dn_m / (EARTH_RADIUS_KM * 1000.0))
    coslat = max(1e-6, math.cos(math.radians(lat)))
    dlon = math.degrees(de_m / (EARTH_RADIUS_KM * 1000.0 * coslat))
    return lat + dlat, (lon + dlon + 180.0) % 360.0 - 180.0
