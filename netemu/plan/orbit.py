"""Orbits: element sets (TLE, OMM, Walker constellations), ground stations, positions.

Frames and time, the way skyfield (the reference our tests check against) does them:

- SGP4 gives positions in TEME; times given to SGP4 are UTC Julian dates.
- Earth-fixed (ITRS/ECEF) = R3(GMST82(UT1)) · TEME, polar motion neglected (≤ ~15 m;
  skyfield's built-in timescale neglects it too). UT1 − UTC comes from skyfield's
  built-in timescale data (no downloads).
- Ground stations: WGS84 geodetic → ECEF; elevation is measured from the WGS84
  ellipsoid normal (skyfield's ``altaz``), without refraction.

Bulk work uses sgp4's vectorised ``SatrecArray`` on a coarse uniform time grid and stores
TEME position and velocity; positions between grid points come from cubic Hermite
interpolation of those (error ~ h⁴·r·ω⁴/384: about 4 mm for a 20 s step in LEO), which is
what lets the schedule refine every contact boundary to < 1 ms without calling SGP4
again (see docs/schedule.md).
"""

from __future__ import annotations

import csv
import io
import json
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime, timezone
from functools import lru_cache
from pathlib import Path
from typing import TYPE_CHECKING, Any
from xml.etree import ElementTree

import numpy as np
from numpy.typing import ArrayLike
from sgp4 import omm as sgp4_omm
from sgp4.api import WGS72, Satrec, SatrecArray

from netemu.config import read_text
from netemu.errors import InputError

if TYPE_CHECKING:  # scenario imports this module
    from netemu.plan.scenario import GroundStation, WalkerSpec

# WGS72 constants (what SGP4 uses) for element generation.
MU_WGS72_KM3_S2 = 398600.8
R_WGS72_KM = 6378.135
# WGS84 for ground stations and the Earth's surface.
WGS84_A_KM = 6378.137
WGS84_F = 1.0 / 298.257223563
R_EARTH_KM = WGS84_A_KM
"""Radius of the sphere ISL lines of sight must clear (equatorial: conservative)."""

DAY_S = 86400.0
_EPOCH_1949 = datetime(1949, 12, 31, tzinfo=timezone.utc)


# --------------------------------------------------------------------------------------
# Time


def jd_utc(t: datetime) -> tuple[float, float]:
    """Julian date of ``t`` (UTC) split into (whole .5 day, fraction)."""
    t = t.astimezone(timezone.utc)
    days = (t - datetime(2000, 1, 1, 12, tzinfo=timezone.utc)).total_seconds() / DAY_S
    whole = math.floor(days)
    return 2451545.0 + whole, days - whole


@lru_cache(maxsize=1)
def _timescale() -> Any:
    # imported here: skyfield takes about 0.2 s to import and only the UT1 tables need it
    from skyfield.api import load

    return load.timescale(builtin=True)


def dut1_s(epoch: datetime, t_s: np.ndarray) -> np.ndarray:
    """UT1 − UTC (s) at ``epoch + t_s``, from skyfield's built-in tables."""
    ts = _timescale()
    e = epoch.astimezone(timezone.utc)
    t = ts.utc(e.year, e.month, e.day, e.hour, e.minute,
               e.second + e.microsecond * 1e-6 + np.asarray(t_s, dtype=float))
    return np.asarray(t.dut1, dtype=float)


def gmst82(jd_whole: np.ndarray | float, frac: np.ndarray | float) -> np.ndarray:
    """Greenwich mean sidereal time (IAU 1982, radians) at the UT1 Julian date
    ``jd_whole + frac`` (split for precision)."""
    jd_whole = np.asarray(jd_whole, dtype=float)
    frac = np.asarray(frac, dtype=float)
    days = (jd_whole - 2451545.0) + frac
    t = days / 36525.0
    # 876600 h·T = 86400·days: only its fraction of a day matters.
    day_frac = np.mod(np.mod(jd_whole - 2451545.0, 1.0) + frac, 1.0)
    g_s = 67310.54841 + (8640184.812866 + (0.093104 - 6.2e-6 * t) * t) * t + DAY_S * day_frac
    theta: np.ndarray = np.mod(g_s, DAY_S) / DAY_S * 2.0 * math.pi
    return theta


def theta_gmst(epoch: datetime, t_s: np.ndarray) -> np.ndarray:
    """Earth rotation angle used for TEME → ECEF at ``epoch + t_s`` (radians)."""
    t_s = np.asarray(t_s, dtype=float)
    whole, frac = jd_utc(epoch)
    ut1 = t_s + dut1_s(epoch, t_s)
    return gmst82(whole, frac + ut1 / DAY_S)


# --------------------------------------------------------------------------------------
# Element sets


def satrec_epoch_days(epoch: datetime) -> float:
    """SGP4's epoch: days since 1949-12-31 00:00 UTC."""
    return (epoch.astimezone(timezone.utc) - _EPOCH_1949).total_seconds() / DAY_S


def _init(satnum: int, epoch_days: float, ecc: float, argp: float, inc: float, mo: float,
          no_kozai: float, raan: float) -> Satrec:
    sat = Satrec()
    sat.sgp4init(WGS72, "i", satnum, epoch_days, 0.0, 0.0, 0.0, ecc, argp, inc, mo, no_kozai, raan)
    return sat


def mean_motion_for_altitude(altitude_km: float, inclination_deg: float, ecc: float) -> float:
    """SGP4 (Kozai) mean motion, rad/min, whose SGP4 mean semi-major axis is
    R_WGS72 + ``altitude_km``.

    Kepler's third law gives a first guess; a few Newton steps on ``Satrec.a`` (SGP4's
    Brouwer mean semi-major axis after its J2 un-Kozai step) make the altitude exact in
    SGP4's own sense.
    """
    target = (R_WGS72_KM + altitude_km) / R_WGS72_KM
    n = math.sqrt(MU_WGS72_KM3_S2 / (R_WGS72_KM + altitude_km) ** 3) * 60.0
    inc = math.radians(inclination_deg)
    for _ in range(4):
        sat = _init(1, 27000.0, ecc, 0.0, inc, 0.0, n, 0.0)
        a = sat.a
        # a ∝ n^(-2/3): d ln a = -2/3 d ln n
        n *= (a / target) ** 1.5
    return n


def walker_satrecs(spec: WalkerSpec, epoch: datetime, first_satnum: int = 1) -> list[tuple[tuple[int, int], Satrec]]:
    """SGP4 element sets for a Walker constellation at ``epoch``.

    Conventions (stated in docs/scenarios.md): mean elements at the epoch, eccentricity
    ``spec.eccentricity`` (1e-4 by default, near circular), argument of perigee 0 so the
    mean anomaly is the argument of latitude, no drag (B* = 0), WGS72 constants, mean
    motion chosen so that SGP4's mean semi-major axis is R_WGS72 + altitude.
    """
    n = mean_motion_for_altitude(spec.altitude_km, spec.inclination_deg, spec.eccentricity)
    ep = satrec_epoch_days(epoch)
    inc = math.radians(spec.inclination_deg)
    P, S, F = spec.planes, spec.sats_per_plane, spec.phasing
    out = []
    num = first_satnum
    for p in range(P):
        raan = math.radians((spec.raan0_deg + spec.raan_spread_deg * p / P) % 360.0)
        for s in range(S):
            u = spec.arg_lat0_deg + spec.phase_span_deg * s / S + 360.0 * F * p / (P * S)
            mo = math.radians(u % 360.0)
            out.append(((p, s), _init(num, ep, spec.eccentricity, 0.0, inc, mo, n, raan)))
            num += 1
    return out


def load_tle(path: Path) -> list[tuple[str, Satrec]]:
    """Read a TLE file (two-line or three-line sets). Names default to 'sat-NORADID'."""
    lines = [ln.rstrip() for ln in read_text(path).splitlines()]
    out: list[tuple[str, Satrec]] = []
    name: str | None = None
    i = 0
    while i < len(lines):
        ln = lines[i]
        if not ln.strip() or ln.startswith("#"):
            i += 1
            continue
        if ln.startswith("1 ") and i + 1 < len(lines) and lines[i + 1].startswith("2 "):
            for j in (i, i + 1):
                _check_tle_checksum(lines[j], source=str(path), line_no=j + 1)
            try:
                sat = Satrec.twoline2rv(ln, lines[i + 1], WGS72)
            except Exception as e:  # sgp4 raises ValueError on malformed lines
                raise InputError(f"bad TLE: {e}", source=str(path), line=i + 1) from e
            if sat.error:
                raise InputError(f"bad TLE (sgp4 error {sat.error})", source=str(path), line=i + 1)
            out.append((name or f"sat-{sat.satnum}", sat))
            name = None
            i += 2
            continue
        if ln.startswith(("1 ", "2 ")):
            raise InputError("TLE line 1 must be followed by line 2", source=str(path), line=i + 1)
        name = ln[2:].strip() if ln.startswith("0 ") else ln.strip()
        i += 1
    if name is not None:
        raise InputError(f"name {name!r} without its two element lines", source=str(path),
                         line=len(lines))
    return out


def tle_checksum(line: str) -> int:
    """The modulo-10 checksum of a TLE line's first 68 columns (digits count their value,
    a minus sign counts 1)."""
    return sum(int(ch) if ch.isdigit() else ch == "-" for ch in line[:68]) % 10


def _check_tle_checksum(line: str, *, source: str, line_no: int) -> None:
    """Refuse a TLE line whose column 69 is not its checksum (a corrupted element set
    would otherwise propagate silently to wrong positions)."""
    if len(line) < 69:
        return  # no checksum column: sgp4 judges the line itself
    found = line[68]
    want = tle_checksum(line)
    if found != str(want):
        shown = found if found.isdigit() else repr(found)
        raise InputError(f"TLE line {line[0]} checksum: expected {want}, found {shown}",
                         source=source, line=line_no)


def load_omm(path: Path) -> list[tuple[str, Satrec]]:
    """Read OMM element sets as CelesTrak serves them: JSON (a list of objects), XML or
    CSV (chosen by the file's suffix, or by its first character)."""
    p = Path(path)
    text = read_text(p)
    head = text.lstrip()[:1]
    if p.suffix.lower() == ".json" or head in "[{":
        try:
            obj = json.loads(text)
        except json.JSONDecodeError as e:
            raise InputError(f"not valid JSON: {e.msg}", source=str(p), line=e.lineno) from e
        records = obj if isinstance(obj, list) else [obj]
    elif p.suffix.lower() == ".xml" or head == "<":
        try:
            records = list(sgp4_omm.parse_xml(io.StringIO(text)))
        except ElementTree.ParseError as e:
            line, col = e.position
            raise InputError(f"not valid XML: {_xml_reason(e)} (line {line}, column {col + 1})",
                             source=str(p), line=line) from None
        except (AttributeError, TypeError):  # a segment without its expected elements
            raise InputError("not OMM XML: each <segment> needs <metadata> and <data> with "
                             "<meanElements> and <tleParameters>", source=str(p)) from None
    else:
        records = list(csv.DictReader(io.StringIO(text)))
    out = []
    for i, fields in enumerate(records):
        if not isinstance(fields, dict):
            raise InputError(f"record {i}: expected an object of OMM fields", source=str(p))
        fields = {k: str(v) for k, v in fields.items()}
        sat = Satrec()
        try:
            sgp4_omm.initialize(sat, fields)
        except KeyError as e:
            raise InputError(f"record {i}: missing OMM field {e.args[0]}", source=str(p)) from e
        except (ValueError, TypeError, IndexError) as e:
            raise InputError(f"record {i}: bad OMM value: {e}", source=str(p)) from e
        if sat.error:
            raise InputError(f"record {i}: sgp4 error {sat.error}", source=str(p))
        out.append((fields.get("OBJECT_NAME") or f"sat-{sat.satnum}", sat))
    return out


def _xml_reason(e: ElementTree.ParseError) -> str:
    """The parser's reason without its own ``: line N, column M`` suffix."""
    return str(e).split(": line ")[0]


def assign_planes(
    satrecs: Sequence[Satrec], epoch: datetime, tol_deg: float
) -> tuple[list[int], list[int], int]:
    """Group satellites from an element file into planes (by the right ascension of
    their ascending node at ``epoch``, within ``tol_deg``) and order each plane by
    argument of latitude. Returns (plane index, slot index, plane count)."""
    r, v, _ = propagate_direct(satrecs, epoch, np.array([0.0]))
    r, v = r[0], v[0]
    h = np.cross(r, v)
    raan = np.degrees(np.arctan2(h[:, 0], -h[:, 1])) % 360.0
    node = np.stack([np.cos(np.radians(raan)), np.sin(np.radians(raan)), np.zeros_like(raan)], 1)
    hn = h / np.linalg.norm(h, axis=1, keepdims=True)
    y = np.cross(hn, node)
    u = np.degrees(np.arctan2(np.sum(r * y, 1), np.sum(r * node, 1))) % 360.0
    order = np.argsort(raan)
    n = len(order)
    plane_of = [0] * n
    if n == 0:
        return [], [], 0
    # circular clustering: cut at gaps larger than tol
    sr = raan[order]
    gaps = np.diff(np.concatenate([sr, [sr[0] + 360.0]]))
    cuts = np.nonzero(gaps > tol_deg)[0]
    if len(cuts) == 0:
        labels = np.zeros(n, dtype=int)
    else:
        start = (cuts[-1] + 1) % n  # first element after the last gap begins a plane
        rolled = np.roll(np.arange(n), -start)
        labels = np.empty(n, dtype=int)
        plane = 0
        for j, idx in enumerate(rolled):
            if j > 0 and gaps[(idx - 1) % n] > tol_deg:
                plane += 1
            labels[idx] = plane
    for j, idx in enumerate(order):
        plane_of[int(idx)] = int(labels[j])
    planes = int(labels.max()) + 1
    slot_of = [0] * n
    for p in range(planes):
        members = [i for i in range(n) if plane_of[i] == p]
        members.sort(key=lambda i: u[i])
        for s, i in enumerate(members):
            slot_of[i] = s
    return plane_of, slot_of, planes


# --------------------------------------------------------------------------------------
# Ground stations


def geodetic_to_ecef(lat_deg: ArrayLike, lon_deg: ArrayLike,
                     alt_m: ArrayLike) -> tuple[np.ndarray, np.ndarray]:
    """WGS84 geodetic → (ECEF position km (N,3), unit up vector (N,3))."""
    lat = np.radians(np.atleast_1d(np.asarray(lat_deg, dtype=float)))
    lon = np.radians(np.atleast_1d(np.asarray(lon_deg, dtype=float)))
    h = np.atleast_1d(np.asarray(alt_m, dtype=float)) / 1000.0
    e2 = WGS84_F * (2.0 - WGS84_F)
    n = WGS84_A_KM / np.sqrt(1.0 - e2 * np.sin(lat) ** 2)
    pos = np.stack([
        (n + h) * np.cos(lat) * np.cos(lon),
        (n + h) * np.cos(lat) * np.sin(lon),
        (n * (1.0 - e2) + h) * np.sin(lat),
    ], axis=1)
    up = np.stack([np.cos(lat) * np.cos(lon), np.cos(lat) * np.sin(lon), np.sin(lat)], axis=1)
    return pos, up


def stations_ecef(stations: Sequence[GroundStation]) -> tuple[np.ndarray, np.ndarray]:
    """ECEF positions (km) and up vectors of scenario ground stations."""
    if not stations:
        return np.zeros((0, 3)), np.zeros((0, 3))
    return geodetic_to_ecef([s.lat_deg for s in stations], [s.lon_deg for s in stations],
                            [s.alt_m for s in stations])


# --------------------------------------------------------------------------------------
# Propagation


def teme_to_ecef(r: np.ndarray, theta: np.ndarray) -> np.ndarray:
    """Rotate TEME vectors (…, 3) to ECEF by GMST ``theta`` (broadcast over leading axes)."""
    c, s = np.cos(theta), np.sin(theta)
    out = np.empty(np.broadcast_shapes(r.shape[:-1], np.shape(theta)) + (3,))
    out[..., 0] = c * r[..., 0] + s * r[..., 1]
    out[..., 1] = -s * r[..., 0] + c * r[..., 1]
    out[..., 2] = r[..., 2]
    return out


def propagate_direct(
    satrecs: Sequence[Satrec], epoch: datetime, t_s: np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """SGP4 at ``epoch + t_s`` for every satellite: TEME r (T,S,3) km, v (T,S,3) km/s,
    error codes (T,S). Positions with an error are NaN."""
    whole, frac = jd_utc(epoch)
    t_s = np.asarray(t_s, dtype=float)
    jd = np.full(t_s.shape, whole)
    fr = frac + t_s / DAY_S
    arr = SatrecArray(list(satrecs))
    e, r, v = arr.sgp4(jd, fr)
    r = np.transpose(r, (1, 0, 2)).copy()
    v = np.transpose(v, (1, 0, 2)).copy()
    e = e.T
    bad = e != 0
    if bad.any():
        r[bad] = np.nan
        v[bad] = np.nan
    return r, v, e


def subsatellite_deg(satrecs: Sequence[Satrec], epoch: datetime, t_s: ArrayLike
                     ) -> tuple[np.ndarray, np.ndarray]:
    """Sub-satellite latitude and longitude (degrees, geocentric, arrays [time, satellite])
    at ``epoch + t_s``: what the report's maps and the live view draw. NaN where SGP4
    fails."""
    t = np.atleast_1d(np.asarray(t_s, dtype=float))
    r, _v, _e = propagate_direct(satrecs, epoch, t)
    ecef = teme_to_ecef(r, theta_gmst(epoch, t)[:, None])
    lat = np.degrees(np.arctan2(ecef[..., 2], np.hypot(ecef[..., 0], ecef[..., 1])))
    lon = np.degrees(np.arctan2(ecef[..., 1], ecef[..., 0]))
    return lat, lon


@dataclass
class Ephemeris:
    """Satellite states on a uniform grid ``t0_s + k·step_s`` (k = 0..T−1), seconds from
    ``epoch``: TEME r (S,T,3) km, v (S,T,3) km/s (each satellite's track contiguous, as
    SatrecArray returns it), and the Earth rotation angle (T,)."""

    epoch: datetime
    t0_s: float
    step_s: float
    r: np.ndarray
    v: np.ndarray
    theta: np.ndarray

    @property
    def n_times(self) -> int:
        return int(self.r.shape[1])

    @property
    def t_s(self) -> np.ndarray:
        return self.t0_s + self.step_s * np.arange(self.n_times)

    def _locate(self, t_s: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        x = (np.asarray(t_s, dtype=float) - self.t0_s) / self.step_s
        k = np.clip(np.floor(x).astype(np.int64), 0, self.n_times - 2)
        return k, x - k

    def teme(self, sat: np.ndarray, t_s: np.ndarray) -> np.ndarray:
        """TEME positions (N,3) of satellites ``sat`` (N,) at times ``t_s`` (N,), by cubic
        Hermite interpolation of the grid states."""
        k, tau = self._locate(t_s)
        sat = np.asarray(sat)
        h = self.step_s
        t2 = tau * tau
        t3 = t2 * tau
        h00 = (2 * t3 - 3 * t2 + 1)[:, None]
        h10 = ((t3 - 2 * t2 + tau) * h)[:, None]
        h01 = (-2 * t3 + 3 * t2)[:, None]
        h11 = ((t3 - t2) * h)[:, None]
        r: np.ndarray = (h00 * self.r[sat, k] + h10 * self.v[sat, k]
                         + h01 * self.r[sat, k + 1] + h11 * self.v[sat, k + 1])
        return r

    def theta_at(self, t_s: np.ndarray) -> np.ndarray:
        k, tau = self._locate(t_s)
        d = np.mod(self.theta[k + 1] - self.theta[k], 2 * math.pi)
        theta: np.ndarray = self.theta[k] + tau * d
        return theta

    def ecef(self, sat: np.ndarray, t_s: np.ndarray) -> np.ndarray:
        """Earth-fixed positions (N,3) km."""
        return teme_to_ecef(self.teme(sat, t_s), self.theta_at(t_s))

    def local(self, sat: np.ndarray, k: np.ndarray) -> LocalTrack:
        """The Hermite cubic of satellites ``sat`` over grid intervals [k, k+1], gathered
        once so that repeated evaluations (root finding) are cheap."""
        return LocalTrack(self, np.asarray(sat), np.asarray(k))


class LocalTrack:
    """Positions of N satellites, each over its own grid interval [t_k, t_k+1]:
    ``r(τ) = c0 + c1·τ + c2·τ² + c3·τ³`` with τ = (t − t_k)/h (cubic Hermite)."""

    def __init__(self, eph: Ephemeris, sat: np.ndarray, k: np.ndarray) -> None:
        h = eph.step_s
        r0, r1 = eph.r[sat, k], eph.r[sat, k + 1]
        v0, v1 = eph.v[sat, k] * h, eph.v[sat, k + 1] * h
        self.c0, self.c1 = r0, v0
        self.c2 = 3.0 * (r1 - r0) - 2.0 * v0 - v1
        self.c3 = 2.0 * (r0 - r1) + v0 + v1
        self.t0 = eph.t0_s + h * k
        self.inv_h = 1.0 / h
        self.th0 = eph.theta[k]
        self.dth = np.mod(eph.theta[k + 1] - eph.theta[k], 2 * math.pi)

    def teme(self, t_s: np.ndarray, sel: np.ndarray | None = None) -> np.ndarray:
        """TEME positions at ``t_s`` of all tracks, or of tracks ``sel`` (then ``t_s``
        has one time per selected track)."""
        r: np.ndarray
        if sel is None:
            tau = ((t_s - self.t0) * self.inv_h)[:, None]
            r = ((self.c3 * tau + self.c2) * tau + self.c1) * tau + self.c0
            return r
        tau = ((t_s - self.t0[sel]) * self.inv_h)[:, None]
        r = ((self.c3[sel] * tau + self.c2[sel]) * tau + self.c1[sel]) * tau + self.c0[sel]
        return r

    def ecef(self, t_s: np.ndarray, sel: np.ndarray | None = None) -> np.ndarray:
        if sel is None:
            tau = (t_s - self.t0) * self.inv_h
            return teme_to_ecef(self.teme(t_s), self.th0 + tau * self.dth)
        tau = (t_s - self.t0[sel]) * self.inv_h
        return teme_to_ecef(self.teme(t_s, sel), self.th0[sel] + tau * self.dth[sel])


def build_ephemeris(
    satrecs: Sequence[Satrec],
    epoch: datetime,
    t0_s: float,
    duration_s: float,
    step_s: float,
    *,
    chunk: int = 256,
    progress: Callable[[float], None] | None = None,
) -> Ephemeris:
    """Propagate every satellite on a uniform grid covering [t0_s, t0_s + duration_s]
    (the step is shrunk slightly so the grid ends exactly there)."""
    n = max(2, int(math.ceil(duration_s / step_s)) + 1)
    step = duration_s / (n - 1)
    t = t0_s + step * np.arange(n)
    S = len(satrecs)
    r = np.empty((S, n, 3))
    v = np.empty((S, n, 3))
    whole, frac = jd_utc(epoch)
    arr = SatrecArray(list(satrecs))
    for a in range(0, n, chunk):
        b = min(n, a + chunk)
        jd = np.full(b - a, whole)
        fr = frac + t[a:b] / DAY_S
        e, rr, vv = arr.sgp4(jd, fr)
        r[:, a:b] = rr
        v[:, a:b] = vv
        bad = e != 0
        if bad.any():
            r[:, a:b][bad] = np.nan
            v[:, a:b][bad] = np.nan
        if progress:
            progress(b / n)
    theta = theta_gmst(epoch, t)
    return Ephemeris(epoch, t0_s, step, r, v, theta)
