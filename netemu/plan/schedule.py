"""Geometry → the link schedule (a :class:`netemu.plan.contacts.ContactPlan`).

Method (argued in docs/schedule.md):

1. Propagate every satellite with SGP4 on a coarse uniform grid (``schedule.step_s``,
   30 s by default) and keep TEME positions and velocities (:mod:`netemu.plan.orbit`).
2. Evaluate a link function on the grid for every candidate pair, vectorised:
   GSL ``f = sin(elevation) − sin(mask)`` (station–satellite pairs culled by
   Earth-central angle first); ISL ``f = min(max_range − range, line-of-sight
   clearance − (R_E + clearance_km), latitude margin)``. A link is up while ``f ≥ 0``.
3. Every sign change between two grid points is refined to < 1 ms (Illinois false
   position on the interval's cubic Hermite interpolant, which is mm-accurate).
4. A link that comes up and goes down again between two grid points shows as a sampled
   local extremum of ``f`` close to zero; each such candidate is searched (golden
   section) and, when ``f`` does cross, both crossings are refined.
5. Ground stations that can track only N satellites at once get at most N GSLs: when a
   slot is free the station takes the visible satellite whose pass lasts longest (latest
   set time), and keeps it until it sets (no pre-emption).
6. One-way light time is sampled through each contact (grid points and both ends, plus
   midpoints where the range bends, thinned where it is straight) so that linear
   interpolation is within OWLT_TOL_S; ``owlt_s`` is the largest sample.
"""

from __future__ import annotations

import gc
import heapq
import math
import os
import random
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Protocol

import numpy as np

from netemu.errors import InputError
from netemu.plan.contacts import C_KM_S, Contact, ContactPlan, Node, mean_rate_bps
from netemu.plan.linkmodel import LinkBudget
from netemu.plan.orbit import (
    DAY_S,
    R_EARTH_KM,
    Ephemeris,
    build_ephemeris,
    stations_ecef,
    teme_to_ecef,
)
from netemu.plan.scenario import GroundStation, IslConfig, Scenario
from netemu.plan.trajectory import Trajectory
from netemu.plan.weather import Weather, build_weather

Progress = Callable[[str, float], None]
"""Progress callback: (phase description, fraction of the whole job done in [0, 1])."""


class PlanError(InputError):
    """A plan cannot be computed for the window or step asked for."""

REFINE_TOL_S = 2.5e-4
"""Bracket width at which a crossing is considered found (the boundary error bound)."""

MIN_CONTACT_S = 1e-3
"""Contacts shorter than this are dropped."""

OWLT_TOL_S = 20e-6
"""Light-time samples are spaced so that linear interpolation between them is within
this of the true one-way light time (20 µs ≈ 6 km of range)."""

ISL_BASE_SAMPLE_S = 300.0
"""ISL ranges change slowly: they are first sampled about this far apart (then refined
where they bend, like GSLs)."""

FLAT_TOL_KM = 0.3
"""An ISL whose range deviates less than this from a straight line over the contact
keeps only its two end samples (0.3 km ≈ 1 µs of light time)."""


# --------------------------------------------------------------------------------------
# Root finding on vectorised link functions

class Evaluator(Protocol):
    """f(pair indices (N,), times (N,)) → values (N,); a link is up where f ≥ 0."""

    def __call__(self, pair: np.ndarray, t: np.ndarray) -> np.ndarray: ...

    def local(self, pair: np.ndarray, k: np.ndarray) -> Callable[..., np.ndarray]:
        """f of each pair restricted to its own grid interval [k, k+1] (t → values)."""
        ...


def _bisect(fn: Callable[..., np.ndarray], lo: np.ndarray, hi: np.ndarray,
            up_at_lo: np.ndarray, tol_s: float = REFINE_TOL_S) -> np.ndarray:
    """Refine the crossing of ``fn`` in each bracket [lo, hi] until the bracket is
    narrower than ``tol_s``; return its end on the 'up' side (so a contact never claims
    time the link is down, beyond interpolation error).

    ``fn(t, sel)`` evaluates the functions with indices ``sel`` (all when None) at times
    ``t``. Illinois false position (a few evaluations for these smooth functions), steps
    kept ``tol_s/2`` inside the bracket so it closes quickly, bisection after 12 rounds."""
    a: np.ndarray = lo.astype(float).copy()
    b: np.ndarray = hi.astype(float).copy()
    n = len(a)
    if n == 0:
        return a
    fa = fn(a, None)
    fb = fn(b, None)
    side = np.zeros(n, dtype=np.int8)
    active = np.arange(n)
    for it in range(80):
        active = active[(b[active] - a[active]) > tol_s]
        if len(active) == 0:
            break
        A, B, FA, FB = a[active], b[active], fa[active], fb[active]
        mid = 0.5 * (A + B)
        if it < 12:
            with np.errstate(divide="ignore", invalid="ignore"):
                x = (A * FB - B * FA) / (FB - FA)
            x = np.where(np.isfinite(x), x, mid)
            x = np.clip(x, A + 0.5 * tol_s, B - 0.5 * tol_s)
        else:
            x = mid
        fx = fn(x, active)
        repl_a = (fx >= 0) == up_at_lo[active]
        sd = side[active]
        FB = np.where(repl_a & (sd == 1), 0.5 * FB, FB)
        FA = np.where(~repl_a & (sd == -1), 0.5 * FA, FA)
        a[active] = np.where(repl_a, x, A)
        fa[active] = np.where(repl_a, fx, FA)
        b[active] = np.where(repl_a, B, x)
        fb[active] = np.where(repl_a, FB, fx)
        side[active] = np.where(repl_a, 1, -1)
    return np.where(up_at_lo, a, b)


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

    cross_k: list[np.ndarray]  # grid index k of intervals [k, k+1] with a sign change
    cross_pair: list[np.ndarray]
    cross_up0: list[np.ndarray]  # link up at t_k
    ext_k: list[np.ndarray]  # discrete local extremum near zero at k
    ext_pair: list[np.ndarray]
    ext_sign: list[np.ndarray]  # +1: local max below zero (hidden up); -1: local min above zero

    @classmethod
    def new(cls) -> _Scan:
        return cls([], [], [], [], [], [])


def _scan_rows(F: np.ndarray, k0: int, k_first: int, k_last: int, n_times: int,
               margin: float, scan: _Scan, pid: np.ndarray | None = None) -> None:
    """Look at rows of sampled values ``F`` (row i is grid index k0 + i; column j is pair
    ``pid[j]``, or j) for sign changes in intervals [k, k+1] and near-zero local extrema
    at k, for k in [k_first, k_last)."""
    rows = F.shape[0]
    a = k_first - k0
    b = min(k_last, n_times - 1) - k0
    if b > a:
        f0, f1 = F[a:b], F[a + 1:b + 1]
        ch = (f0 >= 0) != (f1 >= 0)
        ch &= np.isfinite(f0) & np.isfinite(f1)
        kk, pp = np.nonzero(ch)
        scan.cross_k.append(kk + k_first)
        scan.cross_pair.append(pp if pid is None else pid[pp])
        scan.cross_up0.append(f0[kk, pp] >= 0)
    # near-zero discrete local extrema (a link up or down only between two samples)
    lo, hi = k_first - k0, k_last - k0
    ii, pp = np.nonzero(np.abs(F[lo:hi]) < margin)
    if len(ii) == 0:
        return
    ii = ii + lo
    f = F[ii, pp]
    has_prev = (ii - 1 >= 0) & (ii + k0 - 1 >= 0)
    has_next = (ii + 1 < rows) & (ii + k0 + 1 < n_times)
    prev = np.where(has_prev, F[np.maximum(ii - 1, 0), pp], np.nan)
    nxt = np.where(has_next, F[np.minimum(ii + 1, rows - 1), pp], np.nan)
    is_max = (f < 0) & (~has_prev | (f >= prev)) & (~has_next | (f >= nxt))
    is_min = (f >= 0) & (~has_prev | (f <= prev)) & (~has_next | (f <= nxt))
    # with both neighbours, a parabola through the three samples estimates the extremum;
    # keep only candidates whose estimate comes within a tenth of the margin of zero
    both = has_prev & has_next
    with np.errstate(divide="ignore", invalid="ignore"):
        curv = nxt - 2.0 * f + prev
        vertex = f - (nxt - prev) ** 2 / (8.0 * curv)
    vertex = np.where(both & np.isfinite(vertex), vertex, f)
    is_max &= ~both | (vertex > -0.1 * margin)
    is_min &= ~both | (vertex < 0.1 * margin)
    for mask, sgn in ((is_max, 1), (is_min, -1)):
        if mask.any():
            scan.ext_k.append(ii[mask] + k0)
            q = pp[mask]
            scan.ext_pair.append(q if pid is None else pid[q])
            scan.ext_sign.append(np.full(int(mask.sum()), sgn))


def _cat(xs: list[np.ndarray], dtype: Any) -> np.ndarray:
    return np.concatenate(xs).astype(dtype) if xs else np.zeros(0, dtype=dtype)


def _windows(fn: Evaluator, scan: _Scan, up_first: np.ndarray, eph: Ephemeris, n_pairs: int,
             t_end: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Refine what a scan found into up-windows: (pair, start_s, end_s) arrays."""
    t = eph.t_s
    n = eph.n_times
    ck = _cat(scan.cross_k, np.int64)
    cp = _cat(scan.cross_pair, np.int64)
    cu = _cat(scan.cross_up0, bool)
    tc = np.empty(len(ck))
    step = 500_000  # bound memory: crossings refined in batches
    for a in range(0, len(ck), step):
        sl = slice(a, a + step)
        tc[sl] = _bisect(fn.local(cp[sl], ck[sl]), t[ck[sl]], t[ck[sl] + 1], cu[sl])
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
            def sub(x: np.ndarray, sel: np.ndarray | None, p: np.ndarray = ep2) -> np.ndarray:
                return fn(p if sel is None else p[sel], x)

            t1 = _bisect(sub, lo2, tx2, up_lo)
            t2 = _bisect(sub, tx2, hi2, ~up_lo)
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
    # consistent pairs alternate rise/set: a rise closes at the next event (a set of the
    # same pair) or at t_end; pairs with two rises or two sets in a row (numerical
    # corner cases) are walked one event at a time instead.
    n_ev = len(pair)
    same_next = np.zeros(n_ev, dtype=bool)
    if n_ev > 1:
        same_next[:-1] = pair[1:] == pair[:-1]
    bad_pairs: np.ndarray | list[int] = (
        np.unique(pair[:-1][same_next[:-1] & (dd[1:] == dd[:-1])]) if n_ev > 1 else [])
    bad = np.isin(pair, bad_pairs)
    rise = (dd > 0) & ~bad
    nxt = np.minimum(np.arange(n_ev) + 1, max(n_ev - 1, 0))
    closes = rise & same_next
    out_p = [pair[closes], pair[rise & ~same_next]]
    out_a = [tt[closes], tt[rise & ~same_next]]
    out_b = [tt[nxt[closes]], np.full(int((rise & ~same_next).sum()), t_end)]
    for p in np.asarray(bad_pairs).tolist():
        sel = np.nonzero(pair == p)[0]
        open_t: float | None = None
        for t_ev, d_ev in zip(tt[sel].tolist(), dd[sel].tolist(), strict=True):
            if d_ev > 0:
                if open_t is None:
                    open_t = t_ev
            elif open_t is not None:
                out_p.append(np.array([p]))
                out_a.append(np.array([open_t]))
                out_b.append(np.array([t_ev]))
                open_t = None
        if open_t is not None:
            out_p.append(np.array([p]))
            out_a.append(np.array([open_t]))
            out_b.append(np.array([t_end]))
    return (np.concatenate(out_p).astype(np.int64), np.concatenate(out_a).astype(float),
            np.concatenate(out_b).astype(float))


# --------------------------------------------------------------------------------------
# GSL


@dataclass
class _Gsl:
    eph: Ephemeris
    pos: np.ndarray  # (G,3) ECEF km
    up: np.ndarray  # (G,3)
    sin_mask: np.ndarray  # (G,)
    moving: dict[int, Trajectory] = field(default_factory=dict)  # station → its path

    @property
    def n_st(self) -> int:
        return int(self.pos.shape[0])

    def geometry(self, pair: np.ndarray, t: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Station → satellite vectors (km) and the stations' up vectors, moving stations
        where they are at ``t``."""
        g = pair % self.n_st
        pos, up = self.pos[g], self.up[g]
        for st, track in self.moving.items():
            m = g == st
            if m.any():
                pos, up = pos.copy(), up.copy()
                pos[m], up[m] = track.ecef(t[m])
        return self.eph.ecef(pair // self.n_st, t) - pos, up

    def __call__(self, pair: np.ndarray, t: np.ndarray) -> np.ndarray:
        sat = pair // self.n_st
        g = pair % self.n_st
        d = self.eph.ecef(sat, t) - self.pos[g]
        rng = np.sqrt(np.einsum("ij,ij->i", d, d))
        f: np.ndarray = np.einsum("ij,ij->i", d, self.up[g]) / rng - self.sin_mask[g]
        return f

    def range_km(self, pair: np.ndarray, t: np.ndarray) -> np.ndarray:
        if self.moving:
            d = self.geometry(pair, t)[0]
        else:
            d = self.eph.ecef(pair // self.n_st, t) - self.pos[pair % self.n_st]
        rng: np.ndarray = np.sqrt(np.einsum("ij,ij->i", d, d))
        return rng

    def range_grid(self, pair: np.ndarray, k: np.ndarray) -> np.ndarray:
        """Range at grid points ``k`` (no interpolation)."""
        r = teme_to_ecef(self.eph.r[pair // self.n_st, k], self.eph.theta[k])
        pos = self.pos[pair % self.n_st]
        if self.moving:
            g = pair % self.n_st
            for st, track in self.moving.items():
                m = g == st
                if m.any():
                    pos = pos.copy()
                    pos[m] = track.ecef(self.eph.t0_s + k[m] * self.eph.step_s)[0]
        d = r - pos
        rng: np.ndarray = np.sqrt(np.einsum("ij,ij->i", d, d))
        return rng

    def local(self, pair: np.ndarray, k: np.ndarray) -> Callable[[np.ndarray], np.ndarray]:
        """f of each pair restricted to its own grid interval [k, k+1] (t → values)."""
        g = pair % self.n_st
        track = self.eph.local(pair // self.n_st, k)
        pos, up, sm = self.pos[g], self.up[g], self.sin_mask[g]

        def f(t: np.ndarray, sel: np.ndarray | None = None) -> np.ndarray:
            d = track.ecef(t, sel)
            v: np.ndarray
            if sel is None:
                d -= pos
                v = np.einsum("ij,ij->i", d, up) / np.sqrt(np.einsum("ij,ij->i", d, d)) - sm
                return v
            d -= pos[sel]
            v = (np.einsum("ij,ij->i", d, up[sel]) / np.sqrt(np.einsum("ij,ij->i", d, d))
                 - sm[sel])
            return v

        return f

    def candidate_values(self, k0: int, k1: int, cos_thr: np.ndarray, cull_every: int
                         ) -> tuple[np.ndarray, np.ndarray]:
        """f on grid rows k0..k1−1 for the pairs that can possibly be near visibility in
        that span: (values (rows, n), pair ids (n,), pair = sat·G + g).

        The cull compares the geocentric angle between satellite and station with a
        threshold (``cos_thr``) that includes the motion between the rows it looks at;
        a pair it drops is below the mask with room to spare for the whole span."""
        r = teme_to_ecef(self.eph.r[:, k0:k1].swapaxes(0, 1), self.eph.theta[k0:k1, None])
        rows, S, _ = r.shape
        G = self.n_st
        look = sorted(set(range(0, rows, cull_every)) | {rows - 1})
        rl = r[look]
        rl = (rl / np.linalg.norm(rl, axis=-1, keepdims=True)).astype(np.float32)
        gu = (self.pos / np.linalg.norm(self.pos, axis=1, keepdims=True)).astype(np.float32)
        thr = cos_thr.astype(np.float32)
        # plain broadcasting in float32 (the threshold has degrees of slack), not a BLAS
        # matrix product: OpenBLAS threads only add contention on a shared machine
        cand = np.zeros((S, G), dtype=bool)
        for row in rl:
            c = row[:, 0:1] * gu[:, 0] + row[:, 1:2] * gu[:, 1] + row[:, 2:3] * gu[:, 2]
            cand |= c >= thr
        sat_i, st_i = np.nonzero(cand)
        d = r[:, sat_i, :] - self.pos[st_i][None]
        du = np.einsum("rnk,nk->rn", d, self.up[st_i])
        dd = np.einsum("rnk,rnk->rn", d, d)
        f = du / np.sqrt(dd) - self.sin_mask[st_i][None]
        return f, sat_i * G + st_i


def gsl_windows(scenario: Scenario, eph: Ephemeris, *, t_end: float,
                progress: Callable[[float], None] | None = None,
                chunk_rows: int = 32, cull_every: int = 4) -> list[tuple[int, int, float, float]]:
    """Every interval a satellite is above a station's elevation mask:
    (station index, satellite index, rise_s, set_s), before tracking limits."""
    stations = scenario.ground_stations
    if not stations or eph.r.shape[0] == 0:
        return []
    pos, up = stations_ecef(stations)
    # moving stations are searched on their own (moving_gsl_windows): a mask of 90° here
    # culls them, and a sine of 2 is never reached
    mask_deg = np.array([90.0 if s.trajectory else s.min_elevation_deg for s in stations])
    sin_mask = np.where([s.trajectory is not None for s in stations], 2.0,
                        np.sin(np.radians(mask_deg)))
    fn = _Gsl(eph, pos, up, sin_mask)
    S, G = eph.r.shape[0], len(stations)
    n = eph.n_times
    # cull threshold: Earth-central angle of the visibility circle for a mask 5° lower
    # (covers the near-miss passes the extremum search looks at and the geodetic/
    # geocentric difference), plus how far a satellite moves between two looked-at rows.
    r0 = eph.r[:, 0]
    ok = np.isfinite(r0[:, 0])
    rad = np.linalg.norm(r0[ok], axis=1)
    r_max = float(np.nanmax(np.linalg.norm(eph.r[ok], axis=-1))) if ok.any() else 1e9
    omega = float(np.max(np.linalg.norm(eph.v[ok, 0], axis=1) / rad)) + 7.3e-5 if ok.any() else 0.0
    e = np.radians(mask_deg - 5.0)
    lam = np.arccos(np.clip(np.linalg.norm(pos, axis=1) * np.cos(e) / r_max, -1, 1)) - e
    lam += 1.1 * omega * cull_every * eph.step_s / 2.0 + np.radians(0.5)
    cos_thr = np.cos(np.minimum(lam, math.pi))
    margin = 0.05 * (eph.step_s / 20.0) ** 2
    scan = _Scan.new()
    up_first = np.zeros(S * G, dtype=bool)
    for a in range(0, n, chunk_rows):
        b = min(n, a + chunk_rows)
        k0, k1 = max(0, a - 1), min(n, b + 1)
        F, pid = fn.candidate_values(k0, k1, cos_thr, cull_every)
        if a == 0:
            up_first[pid] = (F[0] >= 0) & np.isfinite(F[0])
        _scan_rows(F, k0, a, b, n, margin, scan, pid)
        if progress:
            progress(b / n)
    pairs, t0, t1 = _windows(fn, scan, up_first, eph, S * G, t_end)
    return [
        (int(p % G), int(p // G), float(a), float(b))
        for p, a, b in zip(pairs.tolist(), t0.tolist(), t1.tolist(), strict=True)
    ]


MOVING_SCAN_S = 5.0
"""Spacing of the elevation scan for moving stations (a pass shorter than this above the
mask can be missed)."""


def moving_gsl_windows(track: Trajectory, mask_deg: float, eph: Ephemeris, *, start_s: float,
                       t_end: float) -> list[tuple[int, float, float]]:
    """Every interval a satellite is above a moving station's elevation mask:
    (satellite index, rise_s, set_s). Elevations on a ``MOVING_SCAN_S`` grid (the station
    where it is at each time), crossings refined by bisection to 0.5 ms."""
    S = eph.r.shape[0]
    if S == 0:
        return []
    sin_mask = math.sin(math.radians(mask_deg))
    n = max(2, int(math.ceil((t_end - start_s) / MOVING_SCAN_S)) + 1)
    ts = np.linspace(start_s, t_end, n)

    def f(sat: np.ndarray, t: np.ndarray) -> np.ndarray:
        pos, up = track.ecef(t)
        d = eph.ecef(sat, t) - pos
        v: np.ndarray = np.einsum("ij,ij->i", d, up) / np.sqrt(np.einsum("ij,ij->i", d, d))
        return v - sin_mask

    vals = np.empty((n, S))
    sats = np.arange(S)
    for k in range(n):
        vals[k] = f(sats, np.full(S, ts[k]))
    up_ = vals >= 0
    out: list[tuple[int, float, float]] = []
    ki, si = np.nonzero(up_[1:] != up_[:-1])  # a crossing between rows ki and ki+1
    lo, hi = ts[ki].copy(), ts[ki + 1].copy()
    rising = ~up_[ki, si]
    while np.any(hi - lo > 0.5e-3):
        mid = 0.5 * (lo + hi)
        above = f(si, mid) >= 0
        go_hi = above == rising  # the crossing is before mid
        hi = np.where(go_hi, mid, hi)
        lo = np.where(go_hi, lo, mid)
    cross = np.where(rising, hi, lo)  # inside the visible side
    for s_ in range(S):
        m = si == s_
        events = sorted(zip(cross[m].tolist(), rising[m].tolist(), strict=True))
        t_on = start_s if up_[0, s_] else None
        for t, r in events:
            if r:
                t_on = t
            elif t_on is not None:
                out.append((s_, t_on, t))
                t_on = None
        if t_on is not None:
            out.append((s_, t_on, t_end))
    return out


def _max_overlap(ws: list[tuple[int, float, float]]) -> int:
    """Most windows open at once (a window closing at t and one opening at t overlap
    for no time)."""
    a = np.array([w[1] for w in ws])
    b = np.array([w[2] for w in ws])
    t = np.concatenate([a, b])
    d = np.concatenate([np.ones(len(a), dtype=np.int64), -np.ones(len(b), dtype=np.int64)])
    order = np.lexsort((d, t))  # closes before opens at equal times
    return int(np.max(np.cumsum(d[order])))


SinEl = Callable[[np.ndarray, np.ndarray, np.ndarray], np.ndarray]
"""(station indices, satellite indices, times) → sine of the satellite's elevation."""


def apply_tracking_limits(
    windows: list[tuple[int, int, float, float]], capacity: list[int],
    sat_capacity: list[int] | None = None, *, policy: str = "longest-remaining",
    sin_el: SinEl | None = None,
) -> list[tuple[int, int, float, float]]:
    """Pick the GSLs each station actually holds, given how many satellites it can track
    at once (0 = no limit) and, with ``sat_capacity``, how many ground links each
    satellite can hold (its beams, 0 = no limit). When a slot is free the station takes,
    among the satellites in view, not yet tracked and with a beam free, the one the
    handover ``policy`` ranks first, and keeps it until it sets:
    ``longest-remaining`` (sets last), ``max-elevation`` (highest now, needs ``sin_el``),
    ``sticky`` (in view longest: a terminal that follows what it found first). Ties → lower
    satellite index."""
    joint = sat_capacity is not None and any(c > 0 for c in sat_capacity)
    if policy == "max-elevation" and sin_el is None:
        raise ValueError("the max-elevation policy needs sin_el")
    if joint:
        assert sat_capacity is not None
        # the stations' own choices may already fit the satellites' beams (the joint pass
        # offers every link at every event: far slower on a large shell)
        alone = apply_tracking_limits(windows, capacity, policy=policy, sin_el=sin_el)
        by_sat: dict[int, list[tuple[int, float, float]]] = {}
        for g, s_, a, b in alone:
            by_sat.setdefault(s_, []).append((g, a, b))
        if all(sat_capacity[s_] <= 0 or _max_overlap(ws) <= sat_capacity[s_]
               for s_, ws in by_sat.items()):
            return alone
        return _assign(windows, capacity, sat_capacity, policy, sin_el)
    if policy != "longest-remaining":
        out: list[tuple[int, int, float, float]] = []
        by_st: dict[int, list[tuple[int, int, float, float]]] = {}
        for w in windows:
            by_st.setdefault(w[0], []).append(w)
        for ws in by_st.values():
            out += _assign(ws, capacity, [], policy, sin_el)
        out.sort(key=lambda w: (w[2], w[0], w[1]))
        return out
    by_station: dict[int, list[tuple[int, float, float]]] = {}
    for g, s, a, b in windows:
        by_station.setdefault(g, []).append((s, a, b))
    out = []
    for g, ws3 in by_station.items():
        cap = capacity[g]
        if cap <= 0 or len(ws3) <= cap or _max_overlap(ws3) <= cap:
            out += [(g, s, a, b) for s, a, b in ws3]
            continue
        ws3.sort(key=lambda w: (w[1], w[0]))
        busy: list[float] = []  # heap of end times of held links
        waiting: list[tuple[float, int]] = []  # heap of (-set, sat): in view, not held
        i, n_ws = 0, len(ws3)
        inf = math.inf
        while True:
            t_rise = ws3[i][1] if i < n_ws else inf
            t_free = busy[0] if busy and waiting else inf
            t = min(t_rise, t_free)
            if t == inf:
                break
            while busy and busy[0] <= t:
                heapq.heappop(busy)
            while i < n_ws and ws3[i][1] <= t:
                s_, _a, b_ = ws3[i]
                heapq.heappush(waiting, (-b_, s_))
                i += 1
            while len(busy) < cap and waiting:
                nb, s_ = heapq.heappop(waiting)
                if -nb - t < MIN_CONTACT_S:
                    continue  # set already (or about to)
                out.append((g, s_, t, -nb))
                heapq.heappush(busy, -nb)
    out.sort(key=lambda w: (w[2], w[0], w[1]))
    return out


def _assign(windows: list[tuple[int, int, float, float]], st_cap: list[int],
            sat_cap: list[int], policy: str, sin_el: SinEl | None
            ) -> list[tuple[int, int, float, float]]:
    """Tracking limits by one pass through time over the given windows (all stations at
    once when satellites' beams are limited, as a satellite's beams are shared). At each
    rise, and at each release while some link waits, the links in view are offered in
    the policy's order; one whose station or satellite is full waits for the next
    event."""
    ws = sorted(windows, key=lambda w: (w[2], w[0], w[1]))
    n_st: dict[int, int] = {}
    n_sat: dict[int, int] = {}
    busy: list[tuple[float, int, int]] = []  # (set, station, satellite) of held links
    waiting: list[tuple[int, int, float, float]] = []  # in view, not held
    out: list[tuple[int, int, float, float]] = []
    i, n_ws, inf = 0, len(ws), math.inf
    while True:
        t_rise = ws[i][2] if i < n_ws else inf
        t_free = busy[0][0] if busy and waiting else inf
        t = min(t_rise, t_free)
        if t == inf:
            break
        while busy and busy[0][0] <= t:
            _, g, s_ = heapq.heappop(busy)
            n_st[g] -= 1
            n_sat[s_] -= 1
        while i < n_ws and ws[i][2] <= t:
            waiting.append(ws[i])
            i += 1
        waiting = [w for w in waiting if w[3] - t >= MIN_CONTACT_S]

        def free(w: tuple[int, int, float, float]) -> bool:
            cg = st_cap[w[0]] if w[0] < len(st_cap) else 0
            cs = sat_cap[w[1]] if w[1] < len(sat_cap) else 0
            return (cg <= 0 or n_st.get(w[0], 0) < cg) and (cs <= 0 or n_sat.get(w[1], 0) < cs)

        offer = [w for w in waiting if free(w)]
        if not offer:
            continue
        if policy == "max-elevation":
            assert sin_el is not None
            g_a = np.array([w[0] for w in offer])
            s_a = np.array([w[1] for w in offer])
            el = sin_el(g_a, s_a, np.full(len(offer), t)).tolist()
            order = sorted(range(len(offer)), key=lambda k: (-el[k], offer[k][1]))
        elif policy == "sticky":
            order = sorted(range(len(offer)), key=lambda k: (offer[k][2], offer[k][1]))
        else:
            order = sorted(range(len(offer)), key=lambda k: (-offer[k][3], offer[k][1]))
        left = [w for w in waiting if not free(w)]
        for k in order:
            g, s_, _a, b_ = offer[k]
            cg = st_cap[g] if g < len(st_cap) else 0
            cs = sat_cap[s_] if s_ < len(sat_cap) else 0
            if (cg <= 0 or n_st.get(g, 0) < cg) and (cs <= 0 or n_sat.get(s_, 0) < cs):
                out.append((g, s_, t, b_))
                heapq.heappush(busy, (b_, g, s_))
                n_st[g] = n_st.get(g, 0) + 1
                n_sat[s_] = n_sat.get(s_, 0) + 1
            else:
                left.append(offer[k])
        waiting = left
    out.sort(key=lambda w: (w[2], w[0], w[1]))
    return out


def reassign(windows: list[tuple[int, int, float, float]], st_cap: list[int],
             sat_cap: list[int], sin_el: SinEl, start_s: float, end_s: float,
             every_s: float, offset_s: float = 0.0, *, pick: str = "highest",
             seed: int = 1) -> list[tuple[int, int, float, float]]:
    """A global scheduler that reassigns every link every ``every_s`` (Starlink's is
    15 s), at instants ``offset_s`` + k × ``every_s`` from the scenario epoch: at each,
    the station–satellite pairs in view are ranked by elevation and taken highest first
    while the station has an antenna and the satellite a beam free (0 = no limit); a link
    holds until the next instant or until it sets. A satellite that rises between two
    instants waits for the next; a link chosen again continues as one contact.

    ``pick="starlink"``: a station with an antenna limit instead draws its satellites
    (seeded by ``seed`` and the instant) among those in view with a free beam that stay in
    view until the next instant, weighted by elevation sine and never one it holds while
    another is free, so that it changes
    satellite at every instant as measured Starlink terminals do (a station with no limit
    takes all in view)."""
    ws = sorted(windows, key=lambda w: w[2])
    first = math.floor((start_s - offset_s) / every_s) * every_s + offset_s
    n = int(math.ceil((end_s - first) / every_s))
    instants = [max(start_s, first + k * every_s) for k in range(n)] + [end_s]
    open_: dict[tuple[int, int], list[float]] = {}  # (g, s) → [start, end] of the open link
    out: list[tuple[int, int, float, float]] = []
    active: list[tuple[int, int, float, float]] = []
    i = 0
    for e, e2 in zip(instants[:-1], instants[1:], strict=True):
        if e2 - e < MIN_CONTACT_S:
            continue
        while i < len(ws) and ws[i][2] <= e:
            active.append(ws[i])
            i += 1
        active = [w for w in active if w[3] - e >= MIN_CONTACT_S]
        chosen: list[tuple[int, int, float]] = []
        if active:
            g_a = np.array([w[0] for w in active])
            s_a = np.array([w[1] for w in active])
            el = sin_el(g_a, s_a, np.full(len(active), e)).tolist()
            n_st: dict[int, int] = {}
            n_sat: dict[int, int] = {}
            if pick == "starlink":
                chosen = _draw(active, el, st_cap, sat_cap, open_, e, e2,
                               random.Random(f"{seed}:{e:.3f}"))
            for k in (() if pick == "starlink" else
                      sorted(range(len(active)), key=lambda k: (-el[k], active[k][1]))):
                g, s_, _a, b_ = active[k]
                cg, cs = st_cap[g], sat_cap[s_] if s_ < len(sat_cap) else 0
                if (cg <= 0 or n_st.get(g, 0) < cg) and (cs <= 0 or n_sat.get(s_, 0) < cs):
                    n_st[g] = n_st.get(g, 0) + 1
                    n_sat[s_] = n_sat.get(s_, 0) + 1
                    chosen.append((g, s_, min(b_, e2)))
        keep: dict[tuple[int, int], list[float]] = {}
        for g, s_, end in chosen:
            link = open_.pop((g, s_), None)
            if link is not None and abs(link[1] - e) < 1e-9:
                link[1] = end
            else:
                if link is not None:
                    out.append((g, s_, link[0], link[1]))
                link = [e, end]
            keep[(g, s_)] = link
        for (g, s_), link in open_.items():
            out.append((g, s_, link[0], link[1]))
        open_ = keep
    for (g, s_), link in open_.items():
        out.append((g, s_, link[0], link[1]))
    out = [w for w in out if w[3] - w[2] >= MIN_CONTACT_S]
    out.sort(key=lambda w: (w[2], w[0], w[1]))
    return out


def _draw(active: list[tuple[int, int, float, float]], el: list[float], st_cap: list[int],
          sat_cap: list[int], open_: dict[tuple[int, int], list[float]], e: float,
          e2: float, rng: random.Random) -> list[tuple[int, int, float]]:
    """The ``starlink`` pick at one instant (see :func:`reassign`): stations in index
    order, each drawing up to its antenna limit."""
    n_sat: dict[int, int] = {}
    by_g: dict[int, list[int]] = {}
    for k, w in enumerate(active):
        by_g.setdefault(w[0], []).append(k)
    out: list[tuple[int, int, float]] = []

    def free(s_: int) -> bool:
        cs = sat_cap[s_] if s_ < len(sat_cap) else 0
        return cs <= 0 or n_sat.get(s_, 0) < cs

    def take(k: int) -> None:
        g, s_, _a, b_ = active[k]
        n_sat[s_] = n_sat.get(s_, 0) + 1
        out.append((g, s_, min(b_, e2)))

    for g in sorted(by_g):
        ks = sorted(by_g[g], key=lambda k: active[k][1])
        cap = st_cap[g]
        if cap <= 0:
            for k in ks:
                if free(active[k][1]):
                    take(k)
            continue
        held = {s_ for (g2, s_), link in open_.items() if g2 == g and abs(link[1] - e) < 1e-9}
        for _ in range(cap):
            cand = [k for k in ks if free(active[k][1])]
            if not cand:
                break
            # a satellite that stays in view for the whole slot, not the held one
            stay = [k for k in cand if active[k][3] >= e2 - 1e-9] or cand
            pool = [k for k in stay if active[k][1] not in held] or stay
            k = rng.choices(pool, [max(el[k], 1e-6) for k in pool])[0]
            take(k)
            ks.remove(k)
    return out


# --------------------------------------------------------------------------------------
# ISL


@dataclass(frozen=True)
class IslPair:
    a: int
    b: int
    cross_plane: bool
    cfg: IslConfig


def _sin_el_fn(scenario: Scenario, eph: Ephemeris) -> SinEl:
    """Elevation sines of satellites seen from stations, from the ephemeris."""
    pos, up = stations_ecef(scenario.ground_stations)

    moving = {i: g.trajectory for i, g in enumerate(scenario.ground_stations) if g.trajectory}
    fn = _Gsl(eph, pos, up, np.zeros(len(pos)), moving)

    def f(g: np.ndarray, s: np.ndarray, t: np.ndarray) -> np.ndarray:
        d, u = fn.geometry(s * fn.n_st + g, t)
        out: np.ndarray = np.einsum("ij,ij->i", d, u) / np.sqrt(np.einsum("ij,ij->i", d, d))
        return out

    return f


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

    def values(self, ra: np.ndarray, rb: np.ndarray,
               p: np.ndarray | slice | tuple[slice, None]) -> np.ndarray:
        """f for satellite positions ``ra``, ``rb`` (…, 3) of pairs ``p``: the smallest of
        the range margin, the line of sight's clearance margin and the latitude margin
        (km; ≥ 0 while the link is possible)."""
        aa = np.einsum("...k,...k->...", ra, ra)
        bb = np.einsum("...k,...k->...", rb, rb)
        ab = np.einsum("...k,...k->...", ra, rb)
        dd = np.maximum(aa + bb - 2.0 * ab, 1e-9)
        ad = ab - aa  # ra·(rb − ra)
        s = np.clip(-ad / dd, 0.0, 1.0)
        closest2 = aa + 2.0 * s * ad + s * s * dd
        f: np.ndarray = np.minimum(self.max_range[p] - np.sqrt(dd),
                       np.sqrt(np.maximum(closest2, 0.0)) - self.min_radius[p])
        lat_lim = self.max_lat_rad[p]
        if np.isfinite(lat_lim).any():
            za = np.abs(np.arcsin(np.clip(ra[..., 2] / np.sqrt(aa), -1, 1)))
            zb = np.abs(np.arcsin(np.clip(rb[..., 2] / np.sqrt(bb), -1, 1)))
            lat_margin_km = (lat_lim - np.maximum(za, zb)) * R_EARTH_KM
            f = np.minimum(f, np.where(np.isfinite(lat_margin_km), lat_margin_km, np.inf))
        return f

    def __call__(self, pair: np.ndarray, t: np.ndarray) -> np.ndarray:
        return self.values(self.eph.teme(self.a[pair], t), self.eph.teme(self.b[pair], t), pair)

    def range_km(self, pair: np.ndarray, t: np.ndarray) -> np.ndarray:
        d = self.eph.teme(self.b[pair], t) - self.eph.teme(self.a[pair], t)
        rng: np.ndarray = np.sqrt(np.einsum("ij,ij->i", d, d))
        return rng

    def range_grid(self, pair: np.ndarray, k: np.ndarray) -> np.ndarray:
        d = self.eph.r[self.b[pair], k] - self.eph.r[self.a[pair], k]
        rng: np.ndarray = np.sqrt(np.einsum("ij,ij->i", d, d))
        return rng

    def local(self, pair: np.ndarray, k: np.ndarray) -> Callable[[np.ndarray], np.ndarray]:
        ta, tb = self.eph.local(self.a[pair], k), self.eph.local(self.b[pair], k)

        def f(t: np.ndarray, sel: np.ndarray | None = None) -> np.ndarray:
            return self.values(ta.teme(t, sel), tb.teme(t, sel), pair if sel is None else pair[sel])

        return f


def isl_windows(scenario: Scenario, eph: Ephemeris, pairs: list[IslPair], *, t_end: float,
                progress: Callable[[float], None] | None = None,
                ) -> tuple[_Isl, list[tuple[int, float, float]]]:
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
        F = np.ascontiguousarray(
            fn.values(eph.r[fn.a, k0:k1], eph.r[fn.b, k0:k1], (slice(None), None)).T)
        if a == 0:
            up_first = (F[0] >= 0) & np.isfinite(F[0])
        _scan_rows(F, k0, a, b, n, margin, scan)
        if progress:
            progress(b / n)
    assert up_first is not None
    p, t0, t1 = _windows(fn, scan, up_first, eph, L, t_end)
    return fn, list(zip(p.tolist(), t0.tolist(), t1.tolist(), strict=True))


def acquire(windows: list[tuple[int, float, float]], pairs: list[IslPair], start_s: float
            ) -> list[tuple[int, float, float]]:
    """ISL windows (pair, rise, set) from their first usable instant: a laser link that
    comes into view carries data only after its terminals' acquisition time. A link up at
    the plan's start was acquired before it and keeps its start."""
    out = []
    for p, a, b in windows:
        acq = pairs[p].cfg.acquisition_s
        if acq > 0 and a > start_s + 1e-6:
            a = min(b, a + acq)
        out.append((p, a, b))
    return out


# --------------------------------------------------------------------------------------
# Light-time samples


def _sample_times(starts: np.ndarray, ends: np.ndarray, every_s: float, origin_s: float = 0.0
                  ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Sample times through each [start, end]: both ends plus the points
    ``origin_s + m·every_s`` strictly inside. Returns (times, offsets, m) with contact i's
    samples at times[offsets[i]:offsets[i+1]]; m is −1 at the ends."""
    first = np.floor((starts - origin_s) / every_s) + 1
    last = np.ceil((ends - origin_s) / every_s) - 1
    inner = np.maximum(0, last - first + 1).astype(np.int64)
    counts = inner + 2
    offsets = np.concatenate([[0], np.cumsum(counts)])
    total = int(offsets[-1])
    idx = np.repeat(np.arange(len(starts)), counts)
    j = np.arange(total) - offsets[idx]
    m = (first[idx] + j - 1).astype(np.int64)
    times = origin_s + m * every_s
    is_end = (j == 0) | (j == counts[idx] - 1)
    times = np.where(j == 0, starts[idx], times)
    times = np.where(j == counts[idx] - 1, ends[idx], times)
    m = np.where(is_end, -1, m)
    return times, offsets, m


def _divided_2nd(times: np.ndarray, rng: np.ndarray, idx: np.ndarray) -> np.ndarray:
    """|second divided difference| of range at each sample (0 where a neighbour belongs to
    another contact): twice the local range acceleration estimate, halved here."""
    out = np.zeros(len(times))
    if len(times) < 3:
        return out
    t0, t1, t2 = times[:-2], times[1:-1], times[2:]
    r0, r1, r2 = rng[:-2], rng[1:-1], rng[2:]
    with np.errstate(divide="ignore", invalid="ignore"):
        d = 2.0 * np.abs((r2 - r1) / np.maximum(t2 - t1, 1e-9)
                         - (r1 - r0) / np.maximum(t1 - t0, 1e-9)) / np.maximum(t2 - t0, 1e-9)
    ok = (idx[:-2] == idx[2:]) & np.isfinite(d)
    out[1:-1] = np.where(ok, d, 0.0)
    return out


def _owlt_samples(range_fn: Callable[[np.ndarray, np.ndarray], np.ndarray],
                  grid_fn: Callable[[np.ndarray, np.ndarray], np.ndarray], eph: Ephemeris,
                  pairs: np.ndarray, starts: np.ndarray, ends: np.ndarray, max_every_s: float,
                  flatten: bool, base_every_s: float = 0.0
                  ) -> list[tuple[tuple[tuple[float, float], ...], float]]:
    """(light-time samples, max range km) per contact.

    Range is sampled at the ephemeris grid points inside each contact (``grid_fn``, no
    interpolation; every m-th grid point when ``base_every_s`` asks for m steps) plus
    both ends. Where the range bends too fast for that spacing
    (local acceleration a from second divided differences, linear-interpolation error
    a·h²/8 > OWLT_TOL_S·c) midpoints are added (``range_fn``), repeatedly. Contacts that
    needed none keep only every q-th sample, q as large as their largest a allows
    (spacing at most ``max_every_s``). With ``flatten``, a contact whose range stays
    within FLAT_TOL_KM of a straight line keeps its two ends only."""
    if len(pairs) == 0:
        return []
    n = len(pairs)
    tol_km = OWLT_TOL_S * C_KM_S
    m = max(1, int(round(base_every_s / eph.step_s)))
    every_s = eph.step_s * m
    times, off, grid_k = _sample_times(starts, ends, every_s, eph.t0_s)
    grid_k = np.where(grid_k >= 0, grid_k * m, -1)
    idx = np.repeat(np.arange(n), np.diff(off))
    grid_k = np.clip(grid_k, -1, eph.n_times - 1)

    def evaluate(ii: np.ndarray, tt: np.ndarray) -> np.ndarray:
        out = np.empty(len(tt))
        step = 1_000_000
        for a in range(0, len(tt), step):
            out[a:a + step] = range_fn(pairs[ii[a:a + step]], tt[a:a + step])
        return out

    rng = np.empty(len(times))
    on = grid_k >= 0
    rng[on] = grid_fn(pairs[idx[on]], grid_k[on])
    rng[~on] = evaluate(idx[~on], times[~on])
    refined = np.zeros(n, dtype=bool)
    for _ in range(10):
        d2 = _divided_2nd(times, rng, idx)
        h = np.diff(times)
        a_iv = np.maximum(d2[:-1], d2[1:])
        need = (idx[:-1] == idx[1:]) & (a_iv * h * h / 8.0 > tol_km) & (h > 0.5)
        if not need.any():
            break
        new_t = 0.5 * (times[:-1] + times[1:])[need]
        new_i = idx[:-1][need]
        refined[new_i] = True
        new_r = evaluate(new_i, new_t)
        times = np.concatenate([times, new_t])
        idx = np.concatenate([idx, new_i])
        rng = np.concatenate([rng, new_r])
        order = np.lexsort((times, idx))
        times, idx, rng = times[order], idx[order], rng[order]
    off = np.searchsorted(idx, np.arange(n + 1))
    counts = np.diff(off)
    a_max = np.zeros(n)
    np.maximum.at(a_max, idx, _divided_2nd(times, rng, idx))
    with np.errstate(divide="ignore"):
        h_ok = np.sqrt(8.0 * tol_km / np.maximum(a_max, 1e-12))
    q = np.clip(np.floor(h_ok / every_s), 1, max(1, int(max_every_s // every_s))).astype(np.int64)
    q[refined] = 1
    j = np.arange(len(times)) - off[idx]
    keep = (j == 0) | (j == counts[idx] - 1) | (j % q[idx] == 0)
    rmax_all = np.maximum.reduceat(rng, off[:-1])
    # flat contacts (ISLs whose range barely changes) keep their two ends only
    if flatten:
        t_first, t_last = times[off[:-1]], times[off[1:] - 1]
        r_first, r_last = rng[off[:-1]], rng[off[1:] - 1]
        span = np.maximum(t_last - t_first, 1e-9)
        lin = r_first[idx] + (r_last - r_first)[idx] * (times - t_first[idx]) / span[idx]
        dev = np.zeros(len(pairs))
        np.maximum.at(dev, idx, np.abs(rng - lin))
        flat = dev < FLAT_TOL_KM
        keep &= ~flat[idx] | (j == 0) | (j == counts[idx] - 1)
    kept = np.nonzero(keep)[0]
    samples = list(zip(times[kept].tolist(), (rng[kept] / C_KM_S).tolist(), strict=True))
    koff = np.searchsorted(kept, off).tolist()
    rmax_l = rmax_all.tolist()
    return [(tuple(samples[koff[i]:koff[i + 1]]), rmax_l[i]) for i in range(len(pairs))]


# --------------------------------------------------------------------------------------
# Rate samples

RATE_QUANTUM = 1.01
"""Shannon rates are rounded down to a power of this (1 % steps), so that a pass keeps
only the samples where its rate changes by a step."""


def gsl_rate_samples(fn: _Gsl, budget: LinkBudget, pairs: np.ndarray, starts: np.ndarray,
                     ends: np.ndarray, every_s: float, origin_s: float,
                     weather: Weather | None = None
                     ) -> list[tuple[tuple[float, float], ...]]:
    """Rate samples of each ground contact: a step function ``(t_s, rate_bps)``.

    Range and elevation are computed at both ends and every ``every_s`` inside; the rate
    over each interval is the lower of its two ends' (a pass's elevation rises then
    falls, so the lower end is the interval's worst point and the plan never promises
    more than the link gives). Consecutive equal rates are merged. With ``weather``, an
    interval that a rain event starts or ends in is split there, each part taking the
    weather in force over it with the geometry of the interval's ends: a rain event
    changes the rate at the instant it starts and ends, and weather never raises a rate."""
    if len(pairs) == 0:
        return []
    times, off, _ = _sample_times(starts, ends, every_s, origin_s)
    idx = np.repeat(np.arange(len(pairs)), np.diff(off))
    rng = np.empty(len(times))
    sin_el = np.empty(len(times))
    step = 1_000_000
    for a in range(0, len(times), step):
        d, up = fn.geometry(pairs[idx[a:a + step]], times[a:a + step])
        r = np.sqrt(np.einsum("ij,ij->i", d, d))
        rng[a:a + step] = r
        sin_el[a:a + step] = np.einsum("ij,ij->i", d, up) / r

    def quantised(rate: np.ndarray) -> np.ndarray:
        if budget.modcod != "shannon":
            return rate
        with np.errstate(divide="ignore"):
            q = np.floor(np.log(np.maximum(rate, 1e-300)) / math.log(RATE_QUANTUM) + 1e-9)
        capped = budget.max_rate_bps is not None and rate >= budget.max_rate_bps
        out: np.ndarray = np.where(capped | (rate <= 0), rate, RATE_QUANTUM ** q)
        return out

    same = idx[:-1] == idx[1:]
    if weather is None:
        rate = quantised(budget.rates_bps(rng, sin_el))
        # interval k (from sample k to k+1 of the same contact): the lower end's rate;
        # each interval starts at its first sample, the last sample of a contact starts none
        lo = np.minimum(rate[:-1], rate[1:])
        iv_t, iv_r, iv_i = times[:-1][same], lo[same], idx[:-1][same]
    else:
        st = pairs[idx] % fn.n_st
        k, iv_t, sub_end = _split_at_rain_edges(times, np.nonzero(same)[0], st, weather)
        ref = weather.ref_db(st[k], 0.5 * (iv_t + sub_end))  # the weather over the part
        r_a = budget.rates_bps(rng[k], sin_el[k], weather.at_elevation(ref, sin_el[k]))
        r_b = budget.rates_bps(rng[k + 1], sin_el[k + 1],
                               weather.at_elevation(ref, sin_el[k + 1]))
        iv_r, iv_i = np.minimum(quantised(r_a), quantised(r_b)), idx[k]
    first = np.ones(len(iv_t), dtype=bool)
    first[1:] = (iv_i[1:] != iv_i[:-1]) | (iv_r[1:] != iv_r[:-1])
    kt, kr, ki = iv_t[first], iv_r[first], iv_i[first]
    koff = np.searchsorted(ki, np.arange(len(pairs) + 1))
    tl, rl = kt.tolist(), kr.tolist()
    out: list[tuple[tuple[float, float], ...]] = []
    for i in range(len(pairs)):
        a_, b_ = int(koff[i]), int(koff[i + 1])
        if a_ == b_:  # a contact of no length: its one rate
            j = off[i]
            if weather is None:
                r0 = float(rate[j])
            else:
                w_db = weather.loss_db(st[j:j + 1], times[j:j + 1], sin_el[j:j + 1])
                r0 = float(quantised(budget.rates_bps(rng[j:j + 1], sin_el[j:j + 1], w_db))[0])
            out.append(((float(starts[i]), r0),))
        else:
            out.append(tuple(zip(tl[a_:b_], rl[a_:b_], strict=True)))
    return out


def _split_at_rain_edges(times: np.ndarray, ks: np.ndarray, st: np.ndarray, weather: Weather
                         ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The sample intervals ``ks`` (interval k runs from times[k] to times[k + 1]), each
    split at the starts and ends of rain events at its station (``st[k]``) strictly
    inside it. Returns, per part in time order: its interval k, its start and its end."""
    part_k = [ks]
    part_t = [times[ks]]
    kst = st[ks]
    for g in np.unique(kst).tolist():
        edges = weather.edges(g)
        if len(edges) == 0:
            continue
        mine = ks[kst == g]
        lo = np.searchsorted(edges, times[mine], side="right")  # first edge after the start
        hi = np.searchsorted(edges, times[mine + 1], side="left")  # edges before the end
        n = np.maximum(hi - lo, 0)
        total = int(n.sum())
        if total == 0:
            continue
        which = np.repeat(np.arange(len(mine)), n)
        j = np.arange(total) - np.repeat(np.cumsum(n) - n, n)
        part_k.append(mine[which])
        part_t.append(edges[lo[which] + j])
    k = np.concatenate(part_k)
    t = np.concatenate(part_t)
    order = np.lexsort((t, k))
    k, t = k[order], t[order]
    end = times[k + 1].copy()
    inner = k[:-1] == k[1:]
    end[:-1][inner] = t[1:][inner]
    return k, t, end


# --------------------------------------------------------------------------------------


def plan_nodes(scenario: Scenario) -> dict[str, Node]:
    """The plan's nodes: satellites then ground stations, with their ipn numbers."""
    nodes: dict[str, Node] = {}
    for s in scenario.satellites:
        nodes[s.name] = Node(s.name, scenario.ipn[s.name], "satellite", s.max_gsl)
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
    memory_bytes: int | None = None,
) -> ContactPlan:
    """The contact plan of ``scenario`` over [start_s, start_s + duration_s] (default: to
    the scenario's end). Every ISL and GSL contact appears in both directions as separate
    :class:`Contact` objects; times are seconds from the scenario epoch.

    A window whose estimated size (:func:`estimate_plan_bytes`) is beyond
    ``memory_bytes`` (default: the memory this machine has available) is refused with
    the estimate, rather than failing part way with a memory error."""
    _check_window(scenario, start_s, duration_s, step_s)
    if duration_s is None:
        duration_s = scenario.duration_s - start_s
    if memory_bytes is None:
        memory_bytes = available_memory_bytes()
    if memory_bytes is not None:
        _check_size(scenario, start_s, duration_s, step_s or scenario.schedule.step_s,
                    memory_bytes)
    # millions of small tuples and Contacts, none in a reference cycle: the cyclic
    # garbage collector would only rescan them again and again
    gc_was_on = gc.isenabled()
    gc.disable()
    try:
        return _compute_plan(scenario, start_s, duration_s, progress, step_s)
    finally:
        if gc_was_on:
            gc.enable()


def _check_window(scenario: Scenario, start_s: float, duration_s: float | None,
                  step_s: float | None) -> None:
    """Refuse a window or step that cannot give a plan, naming the value."""
    source = str(scenario.path) if scenario.path is not None else scenario.name
    if not math.isfinite(start_s):
        raise PlanError(f"the plan start must be a finite number of seconds, got {start_s!r}",
                        source=source, field="start_s")
    if duration_s is None:
        if start_s >= scenario.duration_s:
            raise PlanError(f"the plan start {start_s:g} s is at or after the scenario's end "
                            f"(duration_s {scenario.duration_s:g} s)",
                            source=source, field="start_s")
    elif not (math.isfinite(duration_s) and duration_s > 0):
        raise PlanError(f"the plan duration must be > 0 s, got {duration_s!r}",
                        source=source, field="duration_s")
    if step_s is not None and not (math.isfinite(step_s) and step_s > 0):
        raise PlanError(f"the sampling step must be > 0 s, got {step_s!r}",
                        source=source, field="step_s")


# --------------------------------------------------------------------------------------
# Size estimate (measured on the shipped scenarios: tiny, three-body-12, iridium-next,
# starlink-shell1, one hour to 30 days)

EPHEMERIS_BYTES_PER_SAT_STEP = 48
"""TEME position and velocity, float64 ×6, per satellite and grid step."""

BYTES_PER_STEP = 256
"""Per grid step besides the satellites: grid times, Earth rotation, UT1 (measured
about 110–190 bytes)."""

BYTES_PER_CONTACT = 2048
"""A contact with its light-time samples held in memory, and its share of the output
(measured 0.9–1.7 KB held)."""

MEMORY_SHARE = 0.8
"""Share of the available memory a plan may take."""

PROBE_AFTER_S = 86400.0
"""Windows longer than this get their contact count measured on a probe window first."""


@dataclass(frozen=True)
class PlanSizeEstimate:
    """How big a plan would be: grid steps, contacts (measured per day on a probe window,
    or None when not probed) and bytes."""

    steps: int
    contacts: int | None
    contacts_per_day: float | None
    ephemeris_bytes: int
    total_bytes: int


def available_memory_bytes() -> int | None:
    """Memory this machine has available now (Linux ``MemAvailable``), else its physical
    memory, else None."""
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    try:
        return int(os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE"))
    except (ValueError, OSError, AttributeError):
        return None


def _probe_length_s(scenario: Scenario) -> float:
    """One orbit of the slowest satellite, between 1 and 3 hours: long enough for the
    contact pattern to show, short enough to compute in seconds."""
    periods = [2 * math.pi / s.satrec.no_kozai * 60.0 for s in scenario.satellites
               if s.satrec.no_kozai > 0]
    return min(3 * 3600.0, max(3600.0, max(periods, default=3600.0)))


def estimate_plan_bytes(scenario: Scenario, start_s: float, duration_s: float,
                        step_s: float, *, probe: bool = True) -> PlanSizeEstimate:
    """Estimate the memory a plan over [start_s, start_s + duration_s] needs.

    The ephemeris is exact (satellites × grid steps). Contacts are counted on a probe
    window (one orbit, see :func:`_probe_length_s`) when the window is longer than a day:
    those up at the probe's start count once, those starting in it are scaled to the
    window (contacts per day × days).
    """
    steps = max(2, int(math.ceil(duration_s / step_s)) + 1)
    eph = steps * len(scenario.satellites) * EPHEMERIS_BYTES_PER_SAT_STEP
    total = eph + steps * BYTES_PER_STEP
    contacts: int | None = None
    per_day: float | None = None
    probe_s = _probe_length_s(scenario)
    if probe and duration_s > max(PROBE_AFTER_S, 4 * probe_s):
        sample = _compute_plan(scenario, start_s, probe_s, None, step_s)
        at_start = sum(1 for c in sample.contacts if c.start_s <= start_s + 1e-6)
        starting = len(sample.contacts) - at_start
        per_day = starting * DAY_S / probe_s
        contacts = at_start + int(per_day * duration_s / DAY_S)
        total += contacts * BYTES_PER_CONTACT
    return PlanSizeEstimate(steps, contacts, per_day, eph, total)


def _check_size(scenario: Scenario, start_s: float, duration_s: float, step_s: float,
                memory_bytes: int) -> None:
    """Refuse a window whose estimated size is beyond :data:`MEMORY_SHARE` of
    ``memory_bytes``, with the estimate and what to change."""
    source = str(scenario.path) if scenario.path is not None else scenario.name
    limit = memory_bytes * MEMORY_SHARE
    est = estimate_plan_bytes(scenario, start_s, duration_s, step_s, probe=False)
    if est.total_bytes <= limit:
        est = estimate_plan_bytes(scenario, start_s, duration_s, step_s)
    if est.total_bytes <= limit:
        return
    parts = [f"ephemeris {_gib(est.ephemeris_bytes)} ({len(scenario.satellites)} "
             f"satellites × {_count(est.steps)} steps of {step_s:g} s)"]
    if est.contacts is not None:
        parts.append(f"about {_count(est.contacts)} contacts ({est.contacts_per_day:,.0f} a "
                     "day, measured on one orbit)")
    raise PlanError(
        f"a plan of {duration_s / DAY_S:,.4g} days would need about "
        f"{_gib(est.total_bytes)} ({'; '.join(parts)}), more than the "
        f"{_gib(limit)} this machine can give it; plan a shorter window "
        "(--duration and --start, or the scenario's duration_s)",
        source=source, field="duration_s")


def _gib(n_bytes: float) -> str:
    gib = n_bytes / 2.0 ** 30
    return f"{gib:,.1f} GiB" if gib < 1e6 else f"{gib:.3g} GiB"


def _count(n: float) -> str:
    return f"{n:,.0f}" if n < 1e12 else f"{n:.3g}"


def _compute_plan(scenario: Scenario, start_s: float, duration_s: float,
                  progress: Progress | None, step_s: float | None) -> ContactPlan:
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

        cb(0.0)
        return cb

    def finish(w: float) -> None:
        done["v"] += w

    eph = build_ephemeris([s.satrec for s in sats], scenario.epoch, start_s, duration_s, step,
                          progress=phase("propagating orbits", weights["propagate"]))
    finish(weights["propagate"])

    gw = gsl_windows(scenario, eph, t_end=t_end,
                     progress=phase("ground-station visibility", weights["gsl"]))
    moving = {i: g.trajectory for i, g in enumerate(scenario.ground_stations) if g.trajectory}
    for i, track in moving.items():
        gw += [(i, s_, a, b) for s_, a, b in moving_gsl_windows(
            track, scenario.ground_stations[i].min_elevation_deg, eph, start_s=start_s,
            t_end=t_end)]
    finish(weights["gsl"])
    no_gsl = {i for i, g in enumerate(scenario.ground_stations) if not g.gsl}
    if no_gsl:
        gw = [w for w in gw if w[0] not in no_gsl]
    cap = [g.max_links for g in scenario.ground_stations]
    if progress:
        progress("tracking limits", done["v"])
    sat_cap = [s.max_gsl for s in sats]
    policy = scenario.schedule.handover
    if policy in ("max-elevation", "reassign", "starlink") and gw:
        sin_el = _sin_el_fn(scenario, eph)
        if policy in ("reassign", "starlink"):
            gw = reassign(gw, cap, sat_cap, sin_el, start_s, t_end, scenario.schedule.reassign_s,
                          scenario.schedule.reassign_offset_s,
                          pick="starlink" if policy == "starlink" else "highest",
                          seed=scenario.schedule.handover_seed)
        else:
            gw = apply_tracking_limits(gw, cap, sat_cap, policy=policy, sin_el=sin_el)
    else:
        gw = apply_tracking_limits(gw, cap, sat_cap, policy=policy)

    pairs = isl_pairs(scenario)
    isl_fn, iw = isl_windows(scenario, eph, pairs, t_end=t_end,
                             progress=phase("inter-satellite links", weights["isl"]))
    finish(weights["isl"])

    if progress:
        progress("light-time samples", done["v"])
    # (contacts are built below: both directions share one samples tuple)
    contacts: list[Contact] = []
    events: list[dict[str, Any]] = []
    weather: Weather | None = None
    stations = scenario.ground_stations
    G = len(stations)
    gsl_model = scenario.links["gsl"]
    isl_model = scenario.links["isl"]
    gw = [w for w in gw if w[3] - w[2] >= MIN_CONTACT_S]
    if gw:
        pos, up = stations_ecef(stations)
        sin_mask = np.sin(np.radians([s.min_elevation_deg for s in stations]))
        gfn = _Gsl(eph, pos, up, sin_mask, moving)
        pr = np.array([s * G + g for g, s, _, _ in gw], dtype=np.int64)
        samples = _owlt_samples(gfn.range_km, gfn.range_grid, eph, pr,
                                np.array([w[2] for w in gw]), np.array([w[3] for w in gw]),
                                scenario.schedule.gsl_sample_s, False)
        rates: list[tuple[tuple[float, float], ...]] = [()] * len(gw)
        if gsl_model.budget is not None:
            if scenario.weather is not None:
                if progress:
                    progress("weather", done["v"])
                weather = scenario_weather(scenario, t_end)
                events = [{"station": e.station, "start_s": round(e.start_s, 3),
                           "end_s": round(e.end_s, 3), "atten_db": round(e.atten_db, 3),
                           "p_percent": None if math.isnan(e.p_percent)
                           else round(e.p_percent, 5)}
                          for e in weather.events if e.end_s > start_s and e.start_s < t_end]
            if progress:
                progress("rate samples", done["v"])
            rates = gsl_rate_samples(gfn, gsl_model.budget, pr, np.array([w[2] for w in gw]),
                                     np.array([w[3] for w in gw]),
                                     scenario.schedule.rate_sample_s, eph.t0_s, weather)
        if progress:
            progress("light-time samples", done["v"])
        gap_s = scenario.schedule.handover_gap_s
        handovers = _handover_starts(gw, stations) if gap_s > 0 else set()
        for (g, s, a, b), (smp, rmax), rs in zip(gw, samples, rates, strict=True):
            rate = mean_rate_bps(rs, a, b) if rs else gsl_model.contact_rate(rmax)
            owlt = rmax / C_KM_S
            smp2 = access_samples(smp, a, b, stations[g], scenario.schedule.handover_seed,
                                  gap_s if (g, s, a) in handovers else 0.0)
            if smp2 is not smp:
                smp = smp2
                owlt = max(owlt, max((v for _t, v in smp), default=0.0))
            st, sat = stations[g].name, names[s]
            contacts.append(Contact(sat, st, a, b, rate, owlt, "gsl", gsl_model.loss, 1.0, smp,
                                    rs))
            contacts.append(Contact(st, sat, a, b, rate, owlt, "gsl", gsl_model.loss, 1.0, smp,
                                    rs))
    iw = [w for w in acquire(iw, pairs, start_s) if w[2] - w[1] >= MIN_CONTACT_S]
    if iw:
        pr = np.array([w[0] for w in iw], dtype=np.int64)
        samples = _owlt_samples(isl_fn.range_km, isl_fn.range_grid, eph, pr,
                                np.array([w[1] for w in iw]), np.array([w[2] for w in iw]),
                                scenario.schedule.isl_sample_s, True, ISL_BASE_SAMPLE_S)
        for (p, a, b), (smp, rmax) in zip(iw, samples, strict=True):
            rate = isl_model.contact_rate(rmax)
            owlt = rmax / C_KM_S
            na, nb = names[pairs[p].a], names[pairs[p].b]
            contacts.append(Contact(na, nb, a, b, rate, owlt, "isl", isl_model.loss, 1.0, smp))
            contacts.append(Contact(nb, na, a, b, rate, owlt, "isl", isl_model.loss, 1.0, smp))
    contacts += wired_contacts(scenario, start_s, t_end)
    if progress:
        progress("done", 1.0)
    return ContactPlan(scenario.epoch, plan_nodes(scenario), contacts, [], events)


def _handover_starts(gw: list[tuple[int, int, float, float]], stations: list[GroundStation]
                     ) -> set[tuple[int, int, float]]:
    """(station, satellite, start) of the links of one-antenna stations that begin where
    the station's link to another satellite ends: a satellite change."""
    ends: dict[tuple[int, int], set[int]] = {}  # (station, end in µs) → satellites
    for g, s, _a, b in gw:
        if stations[g].max_links == 1:
            ends.setdefault((g, round(b * 1e6)), set()).add(s)
    return {(g, s, a) for g, s, a, _b in gw if stations[g].max_links == 1
            and ends.get((g, round(a * 1e6)), set()) - {s}}


def access_samples(smp: tuple[tuple[float, float], ...], a: float, b: float,
                   station: GroundStation, seed: int, gap_s: float
                   ) -> tuple[tuple[float, float], ...]:
    """A ground link's light-time samples with the station's access delay added (its
    fixed part and one seeded draw for the contact) and, when ``gap_s`` > 0, a handover
    hold: the delay starts ``gap_s`` higher and falls to the light time over ``gap_s``, so
    that a frame sent at ``a`` + x leaves at ``a`` + ``gap_s`` + light time — every frame
    sent during the gap is held and released at its end (in order with the relay shaper,
    which never delivers a frame before an earlier one of the same direction)."""
    extra = station.access_delay_s
    if station.access_delay_var_s > 0:
        extra += random.Random(f"{seed}:{station.name}:{a:.3f}").uniform(
            0.0, station.access_delay_var_s)
    if not smp or (extra == 0 and gap_s <= 0):
        return smp
    out = [(t, v + extra) for t, v in smp]
    gap = min(gap_s, b - a)
    if gap > 0:
        ts = [t for t, _v in out]
        vs = [v for _t, v in out]
        v0 = float(np.interp(a, ts, vs))
        v1 = float(np.interp(a + gap, ts, vs))
        out = [(a, v0 + gap), (a + gap, v1)] + [(t, v) for t, v in out if t > a + gap + 1e-9]
    return tuple(out)


def wired_contacts(scenario: Scenario, start_s: float, end_s: float) -> list[Contact]:
    """The stations' wired links: up over the whole window, both ways, kind "wired"."""
    out: list[Contact] = []
    for g in scenario.ground_stations:
        for w in g.wired:
            for a, b in ((g.name, w.to), (w.to, g.name)):
                out.append(Contact(a, b, start_s, end_s, w.rate_bps, w.delay_s, "wired",
                                   w.loss))
    return out


def scenario_weather(scenario: Scenario, end_s: float) -> Weather:
    """The weather of the scenario's stations from its epoch to ``end_s`` (the scenario's
    end at least, so every plan window sees the same events)."""
    assert scenario.weather is not None
    budget = scenario.links["gsl"].budget
    assert budget is not None
    st = scenario.ground_stations
    return build_weather([g.name for g in st], [g.lat_deg for g in st], [g.lon_deg for g in st],
                         budget.frequency_hz, max(end_s, scenario.duration_s), scenario.weather)
