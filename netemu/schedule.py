"""Geometry → the link schedule (a :class:`netemu.contacts.ContactPlan`).

Method (argued in docs/schedule.md):

1. Propagate every satellite with SGP4 on a coarse uniform grid (``schedule.step_s``,
   20 s by default) and keep TEME positions and velocities (:mod:`netemu.orbit`).
2. Evaluate a link function on the grid for every candidate pair, vectorised:
   GSL ``f = sin(elevation) − sin(mask)``; ISL ``f = min(max_range − range,
   line-of-sight clearance − (R_E + clearance_km), latitude margin)``. A link is up
   while ``f ≥ 0``.
3. Every sign change between two grid points is refined by bisection to < 1 ms, with
   positions between grid points from cubic Hermite interpolation (mm-accurate).
4. A link that comes up and goes down again between two grid points shows as a sampled
   local extremum of ``f`` close to zero; each such candidate is searched (golden
   section) and, when ``f`` does cross, both crossings are refined.
5. Ground stations that can track only N satellites at once get at most N GSLs: when a
   slot is free the station takes the visible satellite whose pass lasts longest (latest
   set time), and keeps it until it sets (no pre-emption).
6. One-way light time is sampled through each contact (``gsl_sample_s`` / ``isl_sample_s``
   apart, plus both ends); ``owlt_s`` is the largest sample.
"""

from __future__ import annotations

import heapq
import math
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from netemu.contacts import C_KM_S, Contact, ContactPlan, Node
from netemu.orbit import R_EARTH_KM, Ephemeris, build_ephemeris, stations_ecef, teme_to_ecef
from netemu.scenario import IslConfig, Scenario

Progress = Callable[[str, float], None]
"""Progress callback: (phase description, fraction of the whole job done in [0, 1])."""

REFINE_TOL_S = 2.5e-4
"""Bracket width at which a crossing is considered found (the boundary error bound)."""

MIN_CONTACT_S = 1e-3
"""Contacts shorter than this are dropped."""

FLAT_TOL_KM = 0.3
"""An ISL whose range deviates less than this from a straight line over the contact
keeps only its two end samples (0.3 km ≈ 1 µs of light time)."""


# --------------------------------------------------------------------------------------
# Root finding on vectorised link functions

Evaluator = Callable[[np.ndarray, np.ndarray], np.ndarray]
"""f(pair indices (N,), times (N,)) → values (N,); a link is up where f ≥ 0."""


def _bisect(fn: Evaluator, pair: np.ndarray, lo: np.ndarray, hi: np.ndarray,
            up_at_lo: np.ndarray, tol_s: float = REFINE_TOL_S) -> np.ndarray:
    """Refine crossings in [lo, hi]; return the end of the final bracket on the 'up' side
    (so a contact never claims time the link is down, by more than interpolation error)."""
    lo = lo.astype(float).copy()
    hi = hi.astype(float).copy()
    if len(lo) == 0:
        return lo
    width = float(np.max(hi - lo))
    n_iter = max(1, int(math.ceil(math.log2(max(width, tol_s) / tol_s))))
    for _ in range(n_iter):
        mid = 0.5 * (lo + hi)
        up_mid = fn(pair, mid) >= 0
        same = up_mid == up_at_lo
        lo = np.where(same, mid, lo)
        hi = np.where(same, hi, mid)
    return np.where(up_at_lo, lo, hi)


def _golden_extremum(fn: Evaluator, pair: np.ndarray, lo: np.ndarray, hi: np.ndarray,
                     sign: np.ndarray, tol_s: float = 0.05) -> tuple[np.ndarray, np.ndarray]:
    """Locate the maximum of ``sign·f`` on [lo, hi] (unimodal there) by golden section;
    returns (time, f at that time)."""
    g = (math.sqrt(5) - 1) / 2
    a, b = lo.astype(float).copy(), hi.astype(float).copy()
    c = b - g * (b - a)
    d = a + g * (b - a)
    fc = sign * fn(pair, c)
    fd = sign * fn(pair, d)
    width = float(np.max(b - a)) if len(a) else 0.0
    n_iter = int(math.ceil(math.log(max(width, tol_s) / tol_s) / -math.log(g))) if len(a) else 0
    for _ in range(n_iter):
        left = fc > fd  # the maximum lies in [a, d]
        a = np.where(left, a, c)
        b = np.where(left, d, b)
        new = np.where(left, b - g * (b - a), a + g * (b - a))
        f_new = sign * fn(pair, new)
        c, d, fc, fd = (np.where(left, new, d), np.where(left, c, new),
                        np.where(left, f_new, fd), np.where(left, fc, f_new))
    t = np.where(fc > fd, c, d)
    return t, fn(pair, t)


@dataclass
class _Scan:
    """Accumulates what a scan of sampled link functions found."""

    cross_k: list  # grid index k of intervals [k, k+1] with a sign change
    cross_pair: list
    cross_up0: list  # link up at t_k
    ext_k: list  # discrete local extremum near zero at k
    ext_pair: list
    ext_sign: list  # +1: local max below zero (hidden up); -1: local min above zero

    @classmethod
    def new(cls) -> _Scan:
        return cls([], [], [], [], [], [])


def _scan_rows(F: np.ndarray, k0: int, k_first: int, k_last: int, n_times: int,
               margin: float, scan: _Scan) -> None:
    """Look at rows of sampled values ``F`` (rows are grid indices k0, k0+1, …) for
    sign changes in intervals [k, k+1] with k in [k_first, k_last) and near-zero local
    extrema at k in [k_first, k_last)."""
    rows = F.shape[0]
    up = F >= 0
    ok = np.isfinite(F)
    # sign changes
    a = k_first - k0
    b = min(k_last, n_times - 1) - k0
    if b > a:
        ch = (up[a:b] != up[a + 1:b + 1]) & ok[a:b] & ok[a + 1:b + 1]
        kk, pp = np.nonzero(ch)
        scan.cross_k.append(kk + k_first)
        scan.cross_pair.append(pp)
        scan.cross_up0.append(up[a:b][kk, pp])
    # extrema
    for k in range(k_first, k_last):
        i = k - k0
        f = F[i]
        prev = F[i - 1] if i - 1 >= 0 and k - 1 >= 0 else None
        nxt = F[i + 1] if i + 1 < rows and k + 1 < n_times else None
        lo_max = (f < 0) & (f > -margin)
        lo_min = (f >= 0) & (f < margin)
        if prev is not None:
            lo_max &= f >= prev
            lo_min &= f <= prev
        if nxt is not None:
            lo_max &= f >= nxt
            lo_min &= f <= nxt
        for mask, sgn in ((lo_max, 1), (lo_min, -1)):
            pp = np.nonzero(mask)[0]
            if len(pp):
                scan.ext_k.append(np.full(len(pp), k))
                scan.ext_pair.append(pp)
                scan.ext_sign.append(np.full(len(pp), sgn))


def _cat(xs: list, dtype) -> np.ndarray:
    return np.concatenate(xs).astype(dtype) if xs else np.zeros(0, dtype=dtype)


def _windows(fn: Evaluator, scan: _Scan, up_first: np.ndarray, eph: Ephemeris, n_pairs: int,
             t_end: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Refine what a scan found into up-windows: (pair, start_s, end_s) arrays."""
    t = eph.t_s
    n = eph.n_times
    ck = _cat(scan.cross_k, np.int64)
    cp = _cat(scan.cross_pair, np.int64)
    cu = _cat(scan.cross_up0, bool)
    tc = _bisect(fn, cp, t[ck], t[ck + 1], cu)
    ev_pair = [cp]
    ev_t = [tc]
    ev_dir = [np.where(cu, -1, 1)]  # up at lo → the link goes down

    ek = _cat(scan.ext_k, np.int64)
    ep = _cat(scan.ext_pair, np.int64)
    es = _cat(scan.ext_sign, np.int64).astype(float)
    if len(ek):
        lo = t[np.maximum(ek - 1, 0)]
        hi = t[np.minimum(ek + 1, n - 1)]
        tx, fx = _golden_extremum(fn, ep, lo, hi, es)
        flips = (es > 0) & (fx >= 0) | (es < 0) & (fx < 0)
        if flips.any():
            ep2, lo2, hi2, tx2, es2 = ep[flips], lo[flips], hi[flips], tx[flips], es[flips]
            up_lo = es2 < 0  # a dip: up at lo
            t1 = _bisect(fn, ep2, lo2, tx2, up_lo)
            t2 = _bisect(fn, ep2, tx2, hi2, ~up_lo)
            ev_pair += [ep2, ep2]
            ev_t += [t1, t2]
            ev_dir += [np.where(up_lo, -1, 1), np.where(up_lo, 1, -1)]
    first = np.nonzero(up_first)[0]
    ev_pair.append(first)
    ev_t.append(np.full(len(first), t[0]))
    ev_dir.append(np.ones(len(first), dtype=np.int64))

    pair = np.concatenate(ev_pair)
    tt = np.concatenate(ev_t)
    dd = np.concatenate(ev_dir)
    order = np.lexsort((-dd, tt, pair))  # at equal times a rise sorts before a set
    pair, tt, dd = pair[order], tt[order], dd[order]
    out_p: list[int] = []
    out_a: list[float] = []
    out_b: list[float] = []
    # walk events pair by pair (a rise opens a window, a set closes it)
    bounds = np.nonzero(np.diff(pair))[0] + 1
    starts = np.concatenate([[0], bounds])
    ends = np.concatenate([bounds, [len(pair)]])
    for s, e in zip(starts.tolist(), ends.tolist(), strict=True):
        if s == e:
            continue
        p = int(pair[s])
        open_t: float | None = None
        for t_ev, d_ev in zip(tt[s:e].tolist(), dd[s:e].tolist(), strict=True):
            if d_ev > 0:
                if open_t is None:
                    open_t = t_ev
            elif open_t is not None:
                out_p.append(p)
                out_a.append(open_t)
                out_b.append(t_ev)
                open_t = None
        if open_t is not None:
            out_p.append(p)
            out_a.append(open_t)
            out_b.append(t_end)
    return np.asarray(out_p, dtype=np.int64), np.asarray(out_a), np.asarray(out_b)


# --------------------------------------------------------------------------------------
# GSL


@dataclass
class _Gsl:
    eph: Ephemeris
    pos: np.ndarray  # (G,3) ECEF km
    up: np.ndarray  # (G,3)
    sin_mask: np.ndarray  # (G,)

    @property
    def n_st(self) -> int:
        return self.pos.shape[0]

    def __call__(self, pair: np.ndarray, t: np.ndarray) -> np.ndarray:
        sat = pair // self.n_st
        g = pair % self.n_st
        d = self.eph.ecef(sat, t) - self.pos[g]
        rng = np.sqrt(np.einsum("ij,ij->i", d, d))
        return np.einsum("ij,ij->i", d, self.up[g]) / rng - self.sin_mask[g]

    def range_km(self, pair: np.ndarray, t: np.ndarray) -> np.ndarray:
        d = self.eph.ecef(pair // self.n_st, t) - self.pos[pair % self.n_st]
        return np.sqrt(np.einsum("ij,ij->i", d, d))

    def grid_values(self, k0: int, k1: int) -> np.ndarray:
        """f on grid rows k0..k1−1 for every pair: (rows, S·G), pair = sat·G + g."""
        r = teme_to_ecef(self.eph.r[k0:k1], self.eph.theta[k0:k1, None])
        rows, S, _ = r.shape
        flat = r.reshape(-1, 3)
        both = flat @ np.concatenate([self.up, self.pos], axis=0).T  # (rows·S, 2G)
        G = self.n_st
        ru, rp = both[:, :G], both[:, G:]
        rr = np.einsum("ij,ij->i", flat, flat)[:, None]
        pu = np.einsum("ij,ij->i", self.pos, self.up)[None, :]
        pp = np.einsum("ij,ij->i", self.pos, self.pos)[None, :]
        d2 = rr + pp - 2.0 * rp
        np.maximum(d2, 1e-6, out=d2)
        f = (ru - pu) / np.sqrt(d2) - self.sin_mask[None, :]
        return f.reshape(rows, S * G)


def gsl_windows(scenario: Scenario, eph: Ephemeris, *, t_end: float,
                progress: Callable[[float], None] | None = None,
                chunk_rows: int | None = None) -> list[tuple[int, int, float, float]]:
    """Every interval a satellite is above a station's elevation mask:
    (station index, satellite index, rise_s, set_s), before tracking limits."""
    stations = scenario.ground_stations
    if not stations or eph.r.shape[1] == 0:
        return []
    pos, up = stations_ecef(stations)
    sin_mask = np.sin(np.radians([s.min_elevation_deg for s in stations]))
    fn = _Gsl(eph, pos, up, sin_mask)
    S, G = eph.r.shape[1], len(stations)
    n = eph.n_times
    if chunk_rows is None:
        chunk_rows = max(4, min(256, int(4e6 // max(1, S * G))))
    margin = 0.05 * (eph.step_s / 20.0) ** 2
    scan = _Scan.new()
    up_first = None
    for a in range(0, n, chunk_rows):
        b = min(n, a + chunk_rows)
        k0, k1 = max(0, a - 1), min(n, b + 1)
        F = fn.grid_values(k0, k1)
        if a == 0:
            up_first = (F[0] >= 0) & np.isfinite(F[0])
        _scan_rows(F, k0, a, b, n, margin, scan)
        if progress:
            progress(b / n)
    assert up_first is not None
    pairs, t0, t1 = _windows(fn, scan, up_first, eph, S * G, t_end)
    return [
        (int(p % G), int(p // G), float(a), float(b))
        for p, a, b in zip(pairs.tolist(), t0.tolist(), t1.tolist(), strict=True)
    ]


def apply_tracking_limits(
    windows: list[tuple[int, int, float, float]], capacity: list[int]
) -> list[tuple[int, int, float, float]]:
    """Pick the GSLs each station actually holds, given how many satellites it can track
    at once (0 = no limit). When a slot is free the station takes, among the satellites
    in view and not yet tracked, the one that sets last (longest remaining pass; ties →
    lower satellite index) and keeps it until it sets."""
    by_station: dict[int, list[tuple[int, float, float]]] = {}
    for g, s, a, b in windows:
        by_station.setdefault(g, []).append((s, a, b))
    out: list[tuple[int, int, float, float]] = []
    for g, ws in by_station.items():
        cap = capacity[g]
        if cap <= 0:
            out += [(g, s, a, b) for s, a, b in ws]
            continue
        ws.sort(key=lambda w: (w[1], w[0]))
        busy: list[float] = []  # heap of end times of held links
        waiting: list[tuple[float, int, float]] = []  # heap of (-set, sat, rise)
        i = 0
        times = sorted({w[1] for w in ws} | {w[2] for w in ws})
        for t in times:
            while busy and busy[0] <= t:
                heapq.heappop(busy)
            while i < len(ws) and ws[i][1] <= t:
                s, a, b = ws[i]
                heapq.heappush(waiting, (-b, s, a))
                i += 1
            while len(busy) < cap and waiting:
                nb, s, _a = heapq.heappop(waiting)
                b = -nb
                if b - t < MIN_CONTACT_S:
                    continue
                out.append((g, s, t, b))
                heapq.heappush(busy, b)
    out.sort(key=lambda w: (w[2], w[0], w[1]))
    return out


# --------------------------------------------------------------------------------------
# ISL


@dataclass(frozen=True)
class IslPair:
    a: int
    b: int
    cross_plane: bool
    cfg: IslConfig


def isl_pairs(scenario: Scenario) -> list[IslPair]:
    """Which satellites may link (by topology); geometry then decides when."""
    out: list[IslPair] = []
    base = 0
    for grp in scenario.groups:
        cfg = grp.isl
        sats = grp.satellites
        if cfg.topology == "none" or not sats:
            base += len(sats)
            continue
        planes: dict[int, list[tuple[int, int]]] = {}
        for i, s in enumerate(sats):
            planes.setdefault(s.plane or 0, []).append((s.slot or 0, base + i))
        base += len(sats)
        for p in planes:
            planes[p].sort()
        seen: set[tuple[int, int]] = set()

        def add(a: int, b: int, cross: bool, cfg: IslConfig = cfg,
                seen: set[tuple[int, int]] = seen) -> None:
            key = (min(a, b), max(a, b))
            if a != b and key not in seen:
                seen.add(key)
                out.append(IslPair(key[0], key[1], cross, cfg))

        for members in planes.values():
            m = [x[1] for x in members]
            if len(m) == 2:
                add(m[0], m[1], False)
            elif len(m) > 2:
                for i in range(len(m)):
                    add(m[i], m[(i + 1) % len(m)], False)
        if cfg.topology != "plus-grid":
            continue
        P = grp.planes
        shift = grp.walker.phasing if grp.walker is not None else 0
        for p in range(P):
            q = p + 1
            wrap = q == P
            if wrap:
                if P < 3 or cfg.seam:
                    continue
                q = 0
            if p not in planes or q not in planes:
                continue
            mp, mq = planes[p], planes[q]
            nq = len(mq)
            for k, (_slot, a) in enumerate(mp):
                j = (k + shift) % nq if wrap else k % nq
                add(a, mq[j][1], True)
    return out


@dataclass
class _Isl:
    eph: Ephemeris
    a: np.ndarray
    b: np.ndarray
    max_range: np.ndarray
    min_radius: np.ndarray
    max_lat_rad: np.ndarray  # +inf where no cutoff

    def values(self, ra: np.ndarray, rb: np.ndarray, p: np.ndarray | slice) -> np.ndarray:
        d = rb - ra
        dd = np.sum(d * d, axis=-1)
        rng = np.sqrt(dd)
        s = np.clip(-np.sum(ra * d, axis=-1) / np.maximum(dd, 1e-9), 0.0, 1.0)
        closest = ra + s[..., None] * d
        clear = np.sqrt(np.sum(closest * closest, axis=-1)) - self.min_radius[p]
        f = np.minimum(self.max_range[p] - rng, clear)
        lat_lim = self.max_lat_rad[p]
        if np.isfinite(lat_lim).any():
            za = np.abs(np.arcsin(np.clip(ra[..., 2] / np.linalg.norm(ra, axis=-1), -1, 1)))
            zb = np.abs(np.arcsin(np.clip(rb[..., 2] / np.linalg.norm(rb, axis=-1), -1, 1)))
            lat_margin_km = (lat_lim - np.maximum(za, zb)) * R_EARTH_KM
            f = np.minimum(f, np.where(np.isfinite(lat_margin_km), lat_margin_km, np.inf))
        return f

    def __call__(self, pair: np.ndarray, t: np.ndarray) -> np.ndarray:
        return self.values(self.eph.teme(self.a[pair], t), self.eph.teme(self.b[pair], t), pair)

    def range_km(self, pair: np.ndarray, t: np.ndarray) -> np.ndarray:
        d = self.eph.teme(self.b[pair], t) - self.eph.teme(self.a[pair], t)
        return np.sqrt(np.einsum("ij,ij->i", d, d))


def isl_windows(scenario: Scenario, eph: Ephemeris, pairs: list[IslPair], *, t_end: float,
                progress: Callable[[float], None] | None = None) -> tuple[_Isl, list]:
    """Up-intervals of every candidate ISL: (pair index, start_s, end_s)."""
    if not pairs:
        return None, []  # type: ignore[return-value]
    fn = _Isl(
        eph,
        np.array([p.a for p in pairs]),
        np.array([p.b for p in pairs]),
        np.array([p.cfg.max_range_km for p in pairs]),
        np.array([R_EARTH_KM + p.cfg.earth_clearance_km for p in pairs]),
        np.array([math.radians(p.cfg.cross_plane_max_lat_deg)
                  if p.cross_plane and p.cfg.cross_plane_max_lat_deg is not None else np.inf
                  for p in pairs]),
    )
    n = eph.n_times
    L = len(pairs)
    chunk_rows = max(4, min(512, int(2e6 // L)))
    margin = 50.0 * (eph.step_s / 20.0) ** 2
    scan = _Scan.new()
    up_first = None
    for a in range(0, n, chunk_rows):
        b = min(n, a + chunk_rows)
        k0, k1 = max(0, a - 1), min(n, b + 1)
        F = fn.values(eph.r[k0:k1][:, fn.a], eph.r[k0:k1][:, fn.b], slice(None))
        if a == 0:
            up_first = (F[0] >= 0) & np.isfinite(F[0])
        _scan_rows(F, k0, a, b, n, margin, scan)
        if progress:
            progress(b / n)
    assert up_first is not None
    p, t0, t1 = _windows(fn, scan, up_first, eph, L, t_end)
    return fn, list(zip(p.tolist(), t0.tolist(), t1.tolist(), strict=True))


# --------------------------------------------------------------------------------------
# Light-time samples


def _sample_times(starts: np.ndarray, ends: np.ndarray, every_s: float
                  ) -> tuple[np.ndarray, np.ndarray]:
    """Sample times through each [start, end]: both ends plus the multiples of
    ``every_s`` strictly inside. Returns (times, offsets) with contact i's samples at
    times[offsets[i]:offsets[i+1]]."""
    first = np.floor(starts / every_s) + 1
    last = np.ceil(ends / every_s) - 1
    inner = np.maximum(0, last - first + 1).astype(np.int64)
    counts = inner + 2
    offsets = np.concatenate([[0], np.cumsum(counts)])
    total = int(offsets[-1])
    idx = np.repeat(np.arange(len(starts)), counts)
    j = np.arange(total) - offsets[idx]
    times = (first[idx] + j - 1) * every_s
    is_first = j == 0
    is_last = j == counts[idx] - 1
    times = np.where(is_first, starts[idx], times)
    times = np.where(is_last, ends[idx], times)
    return times, offsets


def _owlt_samples(range_fn: Callable[[np.ndarray, np.ndarray], np.ndarray], pairs: np.ndarray,
                  starts: np.ndarray, ends: np.ndarray, every_s: float, flatten: bool
                  ) -> list[tuple[tuple[tuple[float, float], ...], float]]:
    """(samples, max range km) per contact."""
    if len(pairs) == 0:
        return []
    times, off = _sample_times(starts, ends, every_s)
    idx = np.repeat(np.arange(len(pairs)), np.diff(off))
    rng = np.empty(len(times))
    step = 2_000_000
    for a in range(0, len(times), step):
        b = min(len(times), a + step)
        rng[a:b] = range_fn(pairs[idx[a:b]], times[a:b])
    owlt = rng / C_KM_S
    out = []
    tl = times.tolist()
    ol = owlt.tolist()
    for i in range(len(pairs)):
        a, b = int(off[i]), int(off[i + 1])
        r = rng[a:b]
        rmax = float(r.max())
        if flatten and b - a > 2:
            t = times[a:b]
            lin = r[0] + (r[-1] - r[0]) * (t - t[0]) / max(t[-1] - t[0], 1e-9)
            if float(np.max(np.abs(r - lin))) < FLAT_TOL_KM:
                out.append((((tl[a], ol[a]), (tl[b - 1], ol[b - 1])), rmax))
                continue
        out.append((tuple(zip(tl[a:b], ol[a:b], strict=True)), rmax))
    return out


# --------------------------------------------------------------------------------------


def plan_nodes(scenario: Scenario) -> dict[str, Node]:
    """The plan's nodes: satellites then ground stations, with their ipn numbers."""
    nodes: dict[str, Node] = {}
    for s in scenario.satellites:
        nodes[s.name] = Node(s.name, scenario.ipn[s.name], "satellite", 0)
    for g in scenario.ground_stations:
        nodes[g.name] = Node(g.name, scenario.ipn[g.name], "ground", g.max_links)
    return nodes


def compute_plan(
    scenario: Scenario,
    *,
    start_s: float = 0.0,
    duration_s: float | None = None,
    progress: Progress | None = None,
    step_s: float | None = None,
) -> ContactPlan:
    """The contact plan of ``scenario`` over [start_s, start_s + duration_s] (default: to
    the scenario's end). Every ISL and GSL contact appears in both directions as separate
    :class:`Contact` objects; times are seconds from the scenario epoch."""
    if duration_s is None:
        duration_s = scenario.duration_s - start_s
    if duration_s <= 0:
        raise ValueError("duration_s must be > 0")
    t_end = start_s + duration_s
    step = step_s or scenario.schedule.step_s
    sats = scenario.satellites
    names = [s.name for s in sats]

    weights = {"propagate": 0.15, "gsl": 0.45, "isl": 0.25, "samples": 0.15}
    done = {"v": 0.0}

    def phase(name: str, w: float) -> Callable[[float], None] | None:
        if progress is None:
            return None
        base = done["v"]

        def cb(frac: float) -> None:
            progress(name, min(1.0, base + w * frac))

        return cb

    def finish(w: float) -> None:
        done["v"] += w

    eph = build_ephemeris([s.satrec for s in sats], scenario.epoch, start_s, duration_s, step,
                          progress=phase("propagating orbits", weights["propagate"]))
    finish(weights["propagate"])

    gw = gsl_windows(scenario, eph, t_end=t_end,
                     progress=phase("ground-station visibility", weights["gsl"]))
    finish(weights["gsl"])
    cap = [g.max_links for g in scenario.ground_stations]
    gw = apply_tracking_limits(gw, cap)

    pairs = isl_pairs(scenario)
    isl_fn, iw = isl_windows(scenario, eph, pairs, t_end=t_end,
                             progress=phase("inter-satellite links", weights["isl"]))
    finish(weights["isl"])

    if progress:
        progress("light-time samples", done["v"])
    contacts: list[Contact] = []
    stations = scenario.ground_stations
    G = len(stations)
    gsl_model = scenario.links["gsl"]
    isl_model = scenario.links["isl"]
    gw = [w for w in gw if w[3] - w[2] >= MIN_CONTACT_S]
    if gw:
        pos, up = stations_ecef(stations)
        sin_mask = np.sin(np.radians([s.min_elevation_deg for s in stations]))
        gfn = _Gsl(eph, pos, up, sin_mask)
        pr = np.array([s * G + g for g, s, _, _ in gw], dtype=np.int64)
        samples = _owlt_samples(gfn.range_km, pr, np.array([w[2] for w in gw]),
                                np.array([w[3] for w in gw]), scenario.schedule.gsl_sample_s, False)
        for (g, s, a, b), (smp, rmax) in zip(gw, samples, strict=True):
            rate = gsl_model.contact_rate(rmax)
            owlt = rmax / C_KM_S
            st, sat = stations[g].name, names[s]
            contacts.append(Contact(sat, st, a, b, rate, owlt, "gsl", gsl_model.loss, 1.0, smp))
            contacts.append(Contact(st, sat, a, b, rate, owlt, "gsl", gsl_model.loss, 1.0, smp))
    iw = [w for w in iw if w[2] - w[1] >= MIN_CONTACT_S]
    if iw:
        pr = np.array([w[0] for w in iw], dtype=np.int64)
        samples = _owlt_samples(isl_fn.range_km, pr, np.array([w[1] for w in iw]),
                                np.array([w[2] for w in iw]), scenario.schedule.isl_sample_s, True)
        for (p, a, b), (smp, rmax) in zip(iw, samples, strict=True):
            rate = isl_model.contact_rate(rmax)
            owlt = rmax / C_KM_S
            na, nb = names[pairs[p].a], names[pairs[p].b]
            contacts.append(Contact(na, nb, a, b, rate, owlt, "isl", isl_model.loss, 1.0, smp))
            contacts.append(Contact(nb, na, a, b, rate, owlt, "isl", isl_model.loss, 1.0, smp))
    if progress:
        progress("done", 1.0)
    return ContactPlan(scenario.epoch, plan_nodes(scenario), contacts)
