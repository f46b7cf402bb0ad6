"""Weather on ground links: ITU-R attenuation statistics per station, and a deterministic
timeline of rain events drawn from them.

The statistics come from the ``itur`` package: ITU-R P.618-13 (rain, with P.837-7 rain
rates and P.839-4 rain heights), P.676-11 (gases) and P.840-7 (clouds), the versions that
ITU-R's validation examples cover (:data:`ITU_VERSIONS`). For each station, at the
links' carrier frequency and a reference elevation ``REF_ELEVATION_DEG``:

- clear sky: gases and clouds exceeded for 50 % of the time, always present;
- rain: P.837's probability of rain ``P0`` (% of the time) and P.618's rain attenuation
  ``A(p)`` exceeded for ``p`` % of the time.

The timeline alternates dry and wet spells per station (exponential lengths, wet spells
of mean ``mean_event_s``, dry ones sized so that the station is wet ``P0`` % of the
time). Each wet spell is one rain event of constant attenuation ``A(u·P0)``, ``u``
uniform in (0, 1]: over a long run the time during which the attenuation exceeds
``A(p)`` is then ``p`` % — P.618's statistic. Events are drawn from a generator seeded
by ``seed`` and the station's index, from the scenario epoch, so the same scenario gives
the same weather in every plan window.

An attenuation at the reference elevation is carried to another elevation by the slant
path through the atmosphere (:func:`netemu.plan.linkmodel.atmos_path_factor`).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

import numpy as np

from netemu.plan.linkmodel import atmos_path_factor

REF_ELEVATION_DEG = 45.0
P_GRID_PERCENT = np.concatenate([np.logspace(-3, math.log10(5.0), 16)[:-1], [5.0]])
"""Time percentages at which P.618 rain attenuation is tabulated (its range of validity
ends at 5 %); in between, interpolated in log p."""


@dataclass(frozen=True)
class RainEvent:
    """Rain at ``station`` over [start_s, end_s): ``atten_db`` at the reference
    elevation, the level exceeded ``p_percent`` % of the time there."""

    station: str
    start_s: float
    end_s: float
    p_percent: float
    atten_db: float


ITU_VERSIONS = {"itu453": 13, "itu618": 13, "itu676": 11, "itu836": 6, "itu837": 7,
                "itu838": 3, "itu839": 4, "itu840": 7, "itu1510": 1, "itu1511": 1}
"""The recommendation versions ITU-R's validation examples (CG-3M3J-13-ValEx) cover, and
so the ones used here (itur 0.4 defaults to P.676-12 and P.1511-2, which they do not)."""


@dataclass(frozen=True)
class WeatherConfig:
    """The ``weather`` section: ``seed`` of the rain timeline, mean length of a rain
    event (s), receiving antenna diameter (m) and efficiency (P.618 scintillation)."""

    seed: int = 1
    mean_event_s: float = 1800.0
    antenna_m: float = 1.0
    antenna_efficiency: float = 0.65
    random: bool = True
    """Draw rain events from the statistics (else only the scheduled ``events``)."""
    events: tuple[RainEvent, ...] = ()
    """Scheduled events, in addition to the drawn ones."""


def _itur() -> Any:
    import itur  # slow to import (astropy); only weather needs it

    for name, version in ITU_VERSIONS.items():
        model = getattr(itur.models, name)
        if model.get_version() != version:
            model.change_version(version)
    return itur


def slant_attenuation_db(lat_deg: float, lon_deg: float, frequency_ghz: float,
                         elevation_deg: float, p_percent: float, antenna_m: float = 1.0, *,
                         eta: float = 0.65, tau_deg: float = 45.0,
                         r001_mm_h: float | None = None) -> tuple[float, ...]:
    """P.618's slant-path attenuation exceeded for ``p_percent`` % of the time:
    (gases, clouds, rain, scintillation, total) in dB."""
    itur = _itur()
    parts = itur.atmospheric_attenuation_slant_path(
        lat_deg, lon_deg, frequency_ghz, elevation_deg, p_percent, antenna_m, eta=eta,
        tau=tau_deg, R001=r001_mm_h, return_contributions=True)
    return tuple(float(np.asarray(getattr(x, "value", x))) for x in parts)


@lru_cache(maxsize=64)
def station_stats(lats: tuple[float, ...], lons: tuple[float, ...], frequency_ghz: float,
                  antenna_m: float = 1.0, eta: float = 0.65
                  ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per station: P0 (% of the time it rains), clear-sky attenuation (gases and clouds
    exceeded 50 % of the time, dB) and rain attenuation at ``P_GRID_PERCENT`` (dB, one
    row a station), all at ``REF_ELEVATION_DEG``. Vectorised over stations and cached: the
    first call loads ITU-R's maps (seconds)."""
    itur = _itur()
    m = itur.models
    lat, lon = np.array(lats, dtype=float), np.array(lons, dtype=float)
    el = np.full(len(lat), REF_ELEVATION_DEG)

    def val(x: Any) -> np.ndarray:
        return np.atleast_1d(np.asarray(getattr(x, "value", x), dtype=float))

    p0 = val(m.itu837.rainfall_probability(lat, lon))
    gas, cloud, _r, _s, _t = itur.atmospheric_attenuation_slant_path(
        lat, lon, frequency_ghz, el, 50.0, antenna_m, eta=eta, return_contributions=True,
        include_rain=False, include_scintillation=False)
    rain = np.stack([val(m.itu618.rain_attenuation(lat, lon, frequency_ghz, el, p=float(p)))
                     for p in P_GRID_PERCENT], axis=1)
    return p0, val(gas) + val(cloud), rain


def rain_events(names: Sequence[str], p0_percent: np.ndarray, rain_db: np.ndarray,
                end_s: float, cfg: WeatherConfig) -> list[RainEvent]:
    """The rain events of each station over [0, end_s) (see the module docstring)."""
    out: list[RainEvent] = []
    log_grid = np.log(P_GRID_PERCENT)
    for i, name in enumerate(names):
        p0 = float(min(max(p0_percent[i], 0.0), 100.0))
        if p0 <= 0.0:
            continue
        rng = np.random.default_rng([cfg.seed, i])
        wet_mean = cfg.mean_event_s
        dry_mean = wet_mean * (100.0 - p0) / p0 if p0 < 100.0 else 0.0
        t = 0.0
        wet = bool(rng.random() < p0 / 100.0)
        while t < end_s:
            span = float(rng.exponential(wet_mean if wet else max(dry_mean, 1e-9)))
            if wet:
                p = max(P_GRID_PERCENT[0], min(P_GRID_PERCENT[-1],
                                               p0 * (1.0 - float(rng.random()))))
                a = float(np.interp(math.log(p), log_grid, rain_db[i]))
                out.append(RainEvent(name, t, min(end_s, t + span), p, a))
            t += span
            wet = not wet
    return out


class Weather:
    """Extra attenuation on ground links: clear sky plus rain events, per station."""

    def __init__(self, names: Sequence[str], clear_db: np.ndarray,
                 events: list[RainEvent]) -> None:
        self.names = list(names)
        self.clear_db = np.asarray(clear_db, dtype=float)
        self.events = events
        index = {n: i for i, n in enumerate(self.names)}
        by: list[list[RainEvent]] = [[] for _ in self.names]
        for e in events:
            by[index[e.station]].append(e)
        self._starts = [np.array([e.start_s for e in v]) for v in by]
        self._ends = [np.array([e.end_s for e in v]) for v in by]
        self._db = [np.array([e.atten_db for e in v]) for v in by]
        self._ref_factor = float(atmos_path_factor(
            np.array([math.sin(math.radians(REF_ELEVATION_DEG))]))[0])

    def loss_db(self, station: np.ndarray, t_s: np.ndarray, sin_el: np.ndarray) -> np.ndarray:
        """Attenuation (dB) at stations ``station`` (indices), times ``t_s`` and elevation
        sines ``sin_el``."""
        return self.at_elevation(self.ref_db(station, t_s), sin_el)

    def at_elevation(self, ref_db: np.ndarray, sin_el: np.ndarray) -> np.ndarray:
        """A reference-elevation attenuation carried to elevation sines ``sin_el``."""
        out: np.ndarray = ref_db * atmos_path_factor(sin_el) / self._ref_factor
        return out

    def ref_db(self, station: np.ndarray, t_s: np.ndarray) -> np.ndarray:
        """Clear sky plus rain (dB) at the reference elevation, at stations ``station``
        (indices) and times ``t_s``."""
        rain = np.zeros(len(station))
        for g in np.unique(station).tolist():
            if len(self._starts[g]) == 0:
                continue
            sel = np.nonzero(station == g)[0]
            t = t_s[sel]
            worst = np.zeros(len(sel))
            for a, b, db in zip(self._starts[g].tolist(), self._ends[g].tolist(),
                                self._db[g].tolist(), strict=True):
                worst = np.where((t >= a) & (t < b), np.maximum(worst, db), worst)
            rain[sel] = worst
        out: np.ndarray = self.clear_db[station] + rain  # overlapping events: the deepest
        return out

    def edges(self, station: int) -> np.ndarray:
        """Sorted start and end times of the rain events at station ``station`` (index):
        the instants its attenuation changes."""
        return np.unique(np.concatenate([self._starts[station], self._ends[station]]))

    def rain_db_at(self, station: str, t_s: float) -> float:
        """Rain attenuation at the reference elevation at ``station`` at ``t_s``."""
        return max((e.atten_db for e in self.events
                    if e.station == station and e.start_s <= t_s < e.end_s), default=0.0)


def build_weather(names: Sequence[str], lats: Sequence[float], lons: Sequence[float],
                  frequency_hz: float, end_s: float, cfg: WeatherConfig) -> Weather:
    """The weather of these stations from the scenario epoch to ``end_s``."""
    p0, clear, rain = station_stats(tuple(lats), tuple(lons), frequency_hz / 1e9,
                                    cfg.antenna_m, cfg.antenna_efficiency)
    drawn = rain_events(names, p0, rain, end_s, cfg) if cfg.random else []
    events = sorted(drawn + list(cfg.events), key=lambda e: (e.station, e.start_s))
    return Weather(names, clear, events)
