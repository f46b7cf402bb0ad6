"""Where the nodes are: sub-satellite points from the scenario's orbits (SGP4, the same
propagation as the plan's), ground stations at their fixed coordinates."""

from __future__ import annotations

from typing import Any

import numpy as np

from netemu.plan import orbit


class Positions:
    """The nodes of a scenario on the map; a plan without a scenario (a plan file) has no
    positions, and the page then draws no markers."""

    def __init__(self, scenario: Any | None) -> None:
        self.epoch = getattr(scenario, "epoch", None)
        sats = list(getattr(scenario, "satellites", []) or [])
        self.sat_names = [s.name for s in sats]
        self._satrecs = [s.satrec for s in sats]
        self.stations = {g.name: (float(g.lat_deg), float(g.lon_deg))
                         for g in (getattr(scenario, "ground_stations", []) or [])}

    def sats_at(self, t_s: float) -> dict[str, list[float]]:
        """``{satellite: [lon, lat]}`` in degrees at scenario time ``t_s`` (rounded to
        1e-4°, a few metres; a satellite SGP4 cannot place is left out)."""
        if not self._satrecs or self.epoch is None:
            return {}
        lat, lon = orbit.subsatellite_deg(self._satrecs, self.epoch, [float(t_s)])
        ok = np.isfinite(lat[0]) & np.isfinite(lon[0])
        la, lo = np.round(lat[0], 4), np.round(lon[0], 4)
        return {n: [float(lo[i]), float(la[i])] for i, n in enumerate(self.sat_names)
                if ok[i]}
