"""Scenario files (topologies/*.yaml) → a validated :class:`Scenario`.

A scenario fixes the epoch (UTC), the duration and time scale, the satellites (Walker
constellations or TLE/OMM files), the ground stations, the ISL topology and the link
models. Sections that other parts of netemu read (``routing``, ``apps``, ``expect``,
``emulation``, ``telemetry``, ``capture``, ``traffic``, ``faults``) are kept raw in
:attr:`Scenario.sections`, with the line of each of their keys in
:attr:`Scenario.section_lines`; ``traffic``, ``faults``, ``compute`` and ``ip_routing`` are also checked
here, into :attr:`Scenario.traffic`, :attr:`Scenario.faults`, :attr:`Scenario.compute` and
:attr:`Scenario.ip_routing`.

Every error names the file, the line and the field, and suggests the right key for a
misspelt one (``InputError``). The file format is documented in docs/scenarios.md.

Node order and ``ipn`` numbers (stable for a given file): satellites first, in the order
of the ``satellites`` list (a Walker group plane by plane, slot by slot; a TLE/OMM group
in file order), then ground stations in file order. The node at position *i* (0-based)
of :meth:`Scenario.node_names` gets ipn node number *i* + 1, unless a ground station
sets ``ipn:`` itself.
"""

from __future__ import annotations

import difflib
import math
import re
from dataclasses import dataclass, field
from datetime import date, datetime, timezone
from pathlib import Path
from typing import Any

from netemu.config import Fields, describe, load_yaml, read_text
from netemu.errors import InputError
from netemu.plan import orbit, trajectory
from netemu.plan.compute import ComputeSpec, parse_compute
from netemu.plan.faults import FaultSpec, parse_faults
from netemu.plan.iprouting import IpRouting, parse_ip_routing
from netemu.plan.linkmodel import DEFAULT_LINK_MODELS, MODCODS, LinkBudget, LinkModel
from netemu.plan.traffic import TrafficSpec, parse_traffic
from netemu.plan.trajectory import Trajectory
from netemu.plan.weather import RainEvent, WeatherConfig

MAX_NAME_LEN = 15
"""Longest node name: Linux interface names hold 15 characters (IFNAMSIZ − 1)."""

NAME_RE = re.compile(r"^[a-z][a-z0-9-]*$")
"""Node names: lowercase letters, digits and '-', starting with a letter — valid as a
host name label and as an interface name, with no shell metacharacters."""

SCENARIO_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")
"""Scenario names: up to 64 letters, digits, '.', '_' and '-', not starting with '.' or
'-'. A run directory is named after the scenario (``runs/<name>-<stamp>``), so a name
can hold no path separator and cannot climb out of ``runs/``."""

MAX_WALKER_SATELLITES = 339_999
"""Most satellites in one Walker group: SGP4 catalogue numbers (Alpha-5) end there."""

RESERVED_SECTIONS = ("routing", "ip_routing", "apps", "expect", "emulation", "telemetry",
                     "capture", "traffic", "faults", "compare", "compute")

ISL_TOPOLOGIES = ("ring", "plus-grid", "none")


# --------------------------------------------------------------------------------------
# Model


@dataclass(frozen=True)
class WalkerSpec:
    """Walker constellation parameters (see docs/scenarios.md for the conventions).

    ``pattern`` "delta" spreads the planes' ascending nodes over 360°, "star" over 180°
    (Iridium). Satellite ``s`` of plane ``p`` sits at argument of latitude
    ``arg_lat0_deg + phase_span_deg·s/S + 360·phasing·p/(P·S)`` at the epoch, its plane's
    node at ``raan0_deg + spread·p/P``.
    """

    planes: int
    sats_per_plane: int
    altitude_km: float
    inclination_deg: float
    phasing: int = 0
    pattern: str = "delta"
    raan0_deg: float = 0.0
    arg_lat0_deg: float = 0.0
    phase_span_deg: float = 360.0
    eccentricity: float = 0.0001

    @property
    def raan_spread_deg(self) -> float:
        return 360.0 if self.pattern == "delta" else 180.0


@dataclass(frozen=True)
class IslConfig:
    """Which satellites link to which, and when a link is geometrically possible.

    ``topology``: "ring" (each satellite to its in-plane neighbours, closing the ring),
    "plus-grid" (ring plus the same-slot neighbour in each adjacent plane), "none".
    ``seam``: no cross-plane links between the last and the first plane (the
    counter-rotating seam of a Walker star such as Iridium); default: on for "star".
    ``max_range_km``: longest link. ``earth_clearance_km``: the line of sight must stay
    this far above the Earth (a sphere of the equatorial radius).
    ``cross_plane_max_lat_deg``: cross-plane links go down while either end is above
    this latitude (Iridium turns them off near the poles), None for never.
    ``acquisition_s``: how long a laser terminal takes to acquire its peer once geometry
    allows; a new ISL carries data only after it.
    """

    topology: str = "none"
    seam: bool | None = None
    max_range_km: float = 5000.0
    earth_clearance_km: float = 80.0
    cross_plane_max_lat_deg: float | None = None
    acquisition_s: float = 0.0


@dataclass
class Satellite:
    """One satellite: its node name, its group, its plane/slot when known, its SGP4
    element set (an ``sgp4.api.Satrec``), and how many ground links (beams) it can hold
    at once (``max_gsl``, 0 = no limit)."""

    name: str
    group: int
    plane: int | None
    slot: int | None
    satrec: Any = field(repr=False)
    max_gsl: int = 0


@dataclass
class SatelliteGroup:
    """One entry of the ``satellites`` list: a Walker constellation or an element file."""

    index: int
    kind: str  # "walker" | "tle" | "omm"
    satellites: list[Satellite]
    planes: int
    isl: IslConfig
    walker: WalkerSpec | None = None
    source: str | None = None
    line: int = 0


@dataclass(frozen=True)
class WiredLink:
    """A terrestrial link from a station to another (a gateway's fibre to a point of
    presence): up for the whole scenario, fixed one-way delay and rate."""

    to: str
    delay_s: float
    rate_bps: float = 1.0e9
    loss: float = 0.0


@dataclass(frozen=True)
class GroundStation:
    """A ground station: WGS84 geodetic position, elevation mask, tracking capacity.

    ``max_links`` is how many satellites it can track at once (antennas); 0 = no limit.
    ``access_delay_s`` / ``access_delay_var_s``: a user terminal's access scheduling
    delay, added to the light time of each of its satellite links (both ways): the fixed
    part plus a seeded draw, uniform in [0, var], once per contact (with the ``starlink``
    handover policy a contact is one reassignment slot, so the delay steps each slot).
    """

    name: str
    lat_deg: float
    lon_deg: float
    alt_m: float = 0.0
    min_elevation_deg: float = 10.0
    max_links: int = 1
    ipn: int | None = None
    trajectory: Trajectory | None = None
    """A moving node's path (its lat/lon/alt are then the first waypoint's)."""
    gsl: bool = True
    """False: a host on the ground with no satellite links (an internet server reached
    over ``wired`` links only)."""
    wired: tuple[WiredLink, ...] = ()
    access_delay_s: float = 0.0
    access_delay_var_s: float = 0.0


@dataclass(frozen=True)
class ScheduleConfig:
    """How the schedule is computed (``schedule`` section, all optional).

    ``step_s``: coarse sampling step (contacts are then refined to < 1 ms);
    ``gsl_sample_s`` / ``isl_sample_s``: longest spacing of the light-time samples in a
    contact (they are placed where linear interpolation needs them, see docs/schedule.md);
    ``rate_sample_s``: spacing of the rate samples along a ground contact with a link
    budget; ``handover``: how stations pick satellites (see
    ``netemu.plan.schedule.apply_tracking_limits`` and ``reassign``); ``reassign_s``: the
    global reassignment period of the ``reassign`` policy, whose instants are
    ``reassign_offset_s`` + k × ``reassign_s`` from the epoch (Starlink's at :12, :27, :42
    and :57 past each minute: offset 12 from an epoch on a whole minute). The ``starlink``
    policy reassigns at the same instants but picks each terminal's satellite by a seeded
    draw (``handover_seed``) among those in view, weighted by elevation and never the one
    it holds while another is in view. ``handover_gap_s``: at each satellite change of a
    station with ``max_links: 1`` the new link holds the frames sent in its first
    ``handover_gap_s`` and releases them at its end, in order (no buffer limit: nothing
    is lost; see ``netemu.plan.schedule.access_samples``).
    """

    step_s: float = 30.0
    gsl_sample_s: float = 120.0
    isl_sample_s: float = 600.0
    rate_sample_s: float = 10.0
    handover: str = "longest-remaining"
    reassign_s: float = 15.0
    reassign_offset_s: float = 0.0
    handover_seed: int = 1
    handover_gap_s: float = 0.0


@dataclass
class Scenario:
    """A validated scenario (see the module docstring for node order and ipn numbers)."""

    name: str
    path: Path | None
    epoch: datetime
    duration_s: float
    time_scale: float
    groups: list[SatelliteGroup]
    ground_stations: list[GroundStation]
    isl: IslConfig
    links: dict[str, LinkModel]
    schedule: ScheduleConfig = field(default_factory=ScheduleConfig)
    weather: WeatherConfig | None = None
    description: str = ""
    sections: dict[str, Any] = field(default_factory=dict)
    section_lines: dict[str, int] = field(default_factory=dict)
    ipn: dict[str, int] = field(default_factory=dict)
    traffic: TrafficSpec | None = None
    """The ``traffic:`` section (bundle flows, :mod:`netemu.plan.traffic`), if any."""
    faults: list[FaultSpec] = field(default_factory=list)
    """The ``faults:`` section (:mod:`netemu.plan.faults`), checked; empty without one."""
    compute: ComputeSpec | None = None
    """The ``compute:`` section (each node kind's compute, :mod:`netemu.plan.compute`)."""
    ip_routing: IpRouting = field(default_factory=IpRouting)
    """The ``ip_routing:`` section (who sets the IP routes, :mod:`netemu.plan.iprouting`)."""

    @property
    def satellites(self) -> list[Satellite]:
        return [s for g in self.groups for s in g.satellites]

    def node_names(self) -> list[str]:
        """All node names: satellites first, then ground stations (stable order)."""
        return [s.name for s in self.satellites] + [g.name for g in self.ground_stations]

    def station(self, name: str) -> GroundStation:
        for g in self.ground_stations:
            if g.name == name:
                return g
        raise KeyError(name)

    def section(self, name: str) -> Fields:
        """A reserved section (``routing``, ``apps``, ...) for checking: its value (None
        when absent) with this file, its field path and its line for error messages."""
        return Fields(self.sections.get(name), source=str(self.path or "<scenario>"),
                      path=name, line=self.section_lines.get(name) or None)


# --------------------------------------------------------------------------------------
# Validation


def check_node_name(name: Any, *, source: str | None = None, line: int | None = None,
                    field: str | None = None) -> str:
    """Raise InputError unless ``name`` is a usable node name (host + interface name)."""
    if not isinstance(name, str) or not name:
        raise InputError(f"a node name must be text, got {describe(name)}", source=source,
                         line=line, field=field)
    if len(name) > MAX_NAME_LEN:
        raise InputError(
            f"node name {name!r} is {len(name)} characters; Linux interface names allow "
            f"{MAX_NAME_LEN}", source=source, line=line, field=field)
    if not NAME_RE.match(name) or name.endswith("-"):
        raise InputError(
            f"node name {name!r} may hold only lowercase letters, digits and '-', start "
            "with a letter and not end with '-' (it becomes a host and interface name)",
            source=source, line=line, field=field)
    return name


def check_scenario_name(name: Any, *, source: str | None = None, line: int | None = None,
                        field: str | None = "name") -> str:
    """Raise InputError unless ``name`` is a usable scenario name (:data:`SCENARIO_NAME_RE`)."""
    if not isinstance(name, str) or not SCENARIO_NAME_RE.match(name):
        raise InputError(
            f"scenario name {name!r} must be 1–64 letters, digits, '.', '_' or '-', starting "
            "with a letter or digit (it names the run directory)",
            source=source, line=line, field=field)
    return name


def scenario_name_from_path(path: Path) -> str:
    """A scenario name from a file name (its stem, characters the name rule does not
    allow replaced by '-')."""
    name = re.sub(r"[^A-Za-z0-9._-]+", "-", path.stem).strip("-.")[:64].rstrip("-.")
    return name or "scenario"


def _check_name(f: Fields, key: str) -> str:
    return check_node_name(f.get(key), source=f.source, line=f.line_of(key), field=f.field(key))


def _parse_epoch(f: Fields) -> datetime:
    if "epoch" not in f:
        raise f.error("missing required key 'epoch' (UTC, e.g. 2026-06-01T00:00:00Z)", "epoch")
    v = f.get("epoch")
    if isinstance(v, datetime):
        t = v
    elif isinstance(v, date):
        t = datetime(v.year, v.month, v.day)
    elif isinstance(v, str):
        try:
            t = datetime.fromisoformat(v.strip().replace("Z", "+00:00"))
        except ValueError:
            raise f.error(f"{v!r} is not an ISO 8601 UTC time (e.g. 2026-06-01T00:00:00Z)",
                          "epoch") from None
    else:
        raise f.error(f"expected a UTC time, got {describe(v)}", "epoch")
    if t.tzinfo is None:
        t = t.replace(tzinfo=timezone.utc)
    return t.astimezone(timezone.utc)


# --------------------------------------------------------------------------------------
# Sections

TOP_KEYS = (
    "name", "description", "epoch", "duration_s", "time_scale", "satellites",
    "ground_stations", "isl", "links", "schedule", "weather", *RESERVED_SECTIONS,
)
WALKER_KEYS = (
    "planes", "sats_per_plane", "altitude_km", "inclination_deg", "phasing", "pattern",
    "raan0_deg", "arg_lat0_deg", "phase_span_deg", "eccentricity",
)
GROUP_KEYS = ("walker", "tle", "omm", "name_prefix", "isl", "plane_tolerance_deg", "max_gsl")
STATION_KEYS = ("name", "lat_deg", "lon_deg", "alt_m", "min_elevation_deg", "max_links", "ipn",
                "trajectory", "gsl", "wired", "access_delay_s", "access_delay_var_s")
WIRED_KEYS = ("to", "delay_s", "rate_bps", "loss")
TRAJECTORY_KEYS = ("waypoints", "csv", "legs")
ISL_KEYS = ("topology", "seam", "max_range_km", "earth_clearance_km", "cross_plane_max_lat_deg",
            "acquisition_s")
LINK_KEYS = ("rate_bps", "budget", "loss")
BUDGET_KEYS = ("frequency_hz", "eirp_dbw", "gt_dbk", "bandwidth_hz", "other_losses_db",
               "efficiency", "max_rate_bps", "modcod", "rolloff", "zenith_atmos_db")
SCHEDULE_KEYS = ("step_s", "gsl_sample_s", "isl_sample_s", "rate_sample_s", "handover",
                 "reassign_s", "reassign_offset_s", "handover_seed", "handover_gap_s")
HANDOVER_POLICIES = ("longest-remaining", "max-elevation", "sticky", "reassign", "starlink")


def _parse_isl(f: Fields, base: IslConfig) -> IslConfig:
    f.check_keys(ISL_KEYS)
    return IslConfig(
        topology=f.enum("topology", ISL_TOPOLOGIES, default=base.topology),  # type: ignore[arg-type]
        seam=f.boolean("seam", default=base.seam),
        max_range_km=f.number("max_range_km", default=base.max_range_km, lo=0, lo_open=True),  # type: ignore[arg-type]
        earth_clearance_km=f.number("earth_clearance_km", default=base.earth_clearance_km, lo=0),  # type: ignore[arg-type]
        cross_plane_max_lat_deg=f.number("cross_plane_max_lat_deg",
                                         default=base.cross_plane_max_lat_deg, lo=0, hi=90),
        acquisition_s=f.number("acquisition_s", default=base.acquisition_s, lo=0, hi=3600),  # type: ignore[arg-type]
    )


def _parse_walker(f: Fields) -> WalkerSpec:
    f.check_keys(WALKER_KEYS,
                 required=("planes", "sats_per_plane", "altitude_km", "inclination_deg"))
    planes = f.integer("planes", lo=1, required=True)
    spp = f.integer("sats_per_plane", lo=1, required=True)
    alt = f.number("altitude_km", lo=150, hi=40000, required=True)
    inc = f.number("inclination_deg", lo=0, hi=180, required=True)
    phasing = f.integer("phasing", default=0, lo=0)
    assert planes is not None and spp is not None and phasing is not None
    if planes * spp > MAX_WALKER_SATELLITES:
        raise InputError(
            f"{planes} planes × {spp} satellites = {planes * spp} satellites; a Walker group "
            f"holds at most {MAX_WALKER_SATELLITES} (SGP4's largest catalogue number)",
            source=f.source, line=f.line, field=f.field())
    if phasing >= planes and planes > 1:
        raise f.error(f"Walker phasing F must be in 0..planes−1 (0..{planes - 1}), got {phasing}",
                      "phasing")
    return WalkerSpec(
        planes=planes,
        sats_per_plane=spp,
        altitude_km=alt,  # type: ignore[arg-type]
        inclination_deg=inc,  # type: ignore[arg-type]
        phasing=phasing,
        pattern=f.enum("pattern", ("delta", "star"), default="delta"),  # type: ignore[arg-type]
        raan0_deg=f.number("raan0_deg", default=0.0),  # type: ignore[arg-type]
        arg_lat0_deg=f.number("arg_lat0_deg", default=0.0),  # type: ignore[arg-type]
        phase_span_deg=f.number("phase_span_deg", default=360.0, lo=0, hi=360, lo_open=True),  # type: ignore[arg-type]
        eccentricity=f.number("eccentricity", default=0.0001, lo=0, hi=0.1),  # type: ignore[arg-type]
    )


def _with_seam(isl: IslConfig, seam: bool) -> IslConfig:
    return IslConfig(isl.topology, seam, isl.max_range_km, isl.earth_clearance_km,
                     isl.cross_plane_max_lat_deg)


def _parse_group(f: Fields, index: int, base_dir: Path, epoch: datetime,
                 isl: IslConfig) -> SatelliteGroup:
    f.check_keys(GROUP_KEYS)
    line = f.value.line or f.line or 0
    kinds = [k for k in ("walker", "tle", "omm") if k in f]
    if len(kinds) != 1:
        raise InputError(
            "each satellites entry needs exactly one of 'walker', 'tle' or 'omm'"
            + (f" (got {', '.join(kinds)})" if kinds else ""),
            source=f.source, line=line, field=f.field())
    kind = kinds[0]
    prefix = f.string("name_prefix")
    if prefix is not None:
        _check_name(f, "name_prefix")
    group_isl = _parse_isl(f.child("isl"), isl) if "isl" in f else isl
    max_gsl = f.integer("max_gsl", default=0, lo=0)
    assert max_gsl is not None
    sats: list[Satellite] = []
    if kind == "walker":
        spec = _parse_walker(f.child("walker"))
        pfx = prefix or "sat"
        for (p, s), rec in orbit.walker_satrecs(spec, epoch, first_satnum=1):
            name = f"{pfx}-{p}-{s}" if spec.planes > 1 else f"{pfx}-{s}"
            sats.append(Satellite(name, index, p, s, rec, max_gsl))
        if group_isl.seam is None:
            group_isl = _with_seam(group_isl, spec.pattern == "star")
        group = SatelliteGroup(index, kind, sats, spec.planes, group_isl, walker=spec, line=line)
    else:
        fname = f.get(kind)
        if not isinstance(fname, str):
            raise f.error(f"expected a file name, got {describe(fname)}", kind)
        path = (base_dir / fname) if not Path(fname).is_absolute() else Path(fname)
        try:
            elements = orbit.load_tle(path) if kind == "tle" else orbit.load_omm(path)
        except InputError as e:
            where = f"{fname}:{e.line}" if e.line else fname
            raise f.error(f"{where}: {e.message}", kind) from e
        if not elements:
            raise f.error(f"{fname}: no element sets found", kind)
        tol = f.number("plane_tolerance_deg", default=2.0, lo=0, lo_open=True)
        plane_of, slot_of, planes = orbit.assign_planes([r for _, r in elements], epoch, tol)  # type: ignore[arg-type]
        for i, (objname, rec) in enumerate(elements):
            name = f"{prefix}-{i}" if prefix else _sanitize(objname) or f"sat-{rec.satnum}"
            sats.append(Satellite(name, index, plane_of[i], slot_of[i], rec, max_gsl))
        if group_isl.seam is None:
            group_isl = _with_seam(group_isl, False)
        group = SatelliteGroup(index, kind, sats, planes, group_isl, source=str(path), line=line)
    for sat in sats:
        try:
            check_node_name(sat.name)
        except InputError as e:
            hint = "" if prefix else " (set name_prefix to number them instead)"
            raise InputError(e.message + hint, source=f.source, line=line, field=f.field()) from None
    return group


def _sanitize(objname: str) -> str:
    s = re.sub(r"[^a-z0-9]+", "-", objname.strip().lower()).strip("-")
    if s and not s[0].isalpha():
        s = "sat-" + s
    return s


def _parse_trajectory(f: Fields, base_dir: Path) -> Trajectory:
    f.check_keys(TRAJECTORY_KEYS)
    given = [k for k in TRAJECTORY_KEYS if k in f]
    where = f"{f.source}:{f.line_of() or 0}: {f.field()}"
    if len(given) != 1:
        raise f.error("a trajectory needs exactly one of 'waypoints', 'csv' or 'legs'")
    try:
        if "waypoints" in f:
            rows = f.get("waypoints")
            if not isinstance(rows, list):
                raise f.error("expected a list of [t_s, lat_deg, lon_deg, alt_m]", "waypoints")
            return trajectory.from_waypoints(rows, where)
        if "csv" in f:
            fname = f.string("csv")
            assert fname is not None
            path = (base_dir / fname) if not Path(fname).is_absolute() else Path(fname)
            return trajectory.from_csv(read_text(path), str(path))
        legs = f.mapping("legs", ("start_s", "speed_mps", "points"),
                         required=("speed_mps", "points"))
        pts = legs.get("points")
        if not isinstance(pts, list):
            raise legs.error("expected a list of [lat_deg, lon_deg, alt_m]", "points")
        return trajectory.from_legs(
            pts, legs.number("speed_mps", lo=0, lo_open=True, required=True),  # type: ignore[arg-type]
            legs.number("start_s", default=0.0),  # type: ignore[arg-type]
            where)
    except InputError as e:
        if e.source and e.source.endswith(".csv"):
            raise
        raise f.error(e.message) from None


def _parse_station(f: Fields, base_dir: Path = Path(".")) -> GroundStation:
    moving = "trajectory" in f
    f.check_keys(STATION_KEYS, required=("name",) if moving else ("name", "lat_deg", "lon_deg"))
    track = _parse_trajectory(f.child("trajectory"), base_dir) if moving else None
    return GroundStation(
        name=_check_name(f, "name"),
        lat_deg=track.lat_deg[0] if track else f.number("lat_deg", lo=-90, hi=90, required=True),  # type: ignore[arg-type]
        lon_deg=track.lon_deg[0] if track else f.number("lon_deg", lo=-180, hi=360, required=True),  # type: ignore[arg-type]
        alt_m=track.alt_m[0] if track else f.number("alt_m", default=0.0, lo=-500, hi=9000),  # type: ignore[arg-type]
        trajectory=track,
        min_elevation_deg=f.number("min_elevation_deg", default=10.0, lo=0, hi=89),  # type: ignore[arg-type]
        max_links=f.integer("max_links", default=1, lo=0),  # type: ignore[arg-type]
        ipn=f.integer("ipn", default=None, lo=1),
        gsl=f.boolean("gsl", default=True) is not False,
        wired=tuple(_parse_wired(w) for w in f.items("wired")),
        access_delay_s=f.number("access_delay_s", default=0.0, lo=0, hi=10),  # type: ignore[arg-type]
        access_delay_var_s=f.number("access_delay_var_s", default=0.0, lo=0, hi=10),  # type: ignore[arg-type]
    )


def _parse_wired(f: Fields) -> WiredLink:
    f.check_keys(WIRED_KEYS, required=("to", "delay_s"))
    return WiredLink(
        to=f.string("to", required=True) or "",
        delay_s=f.number("delay_s", lo=0, hi=10, required=True),  # type: ignore[arg-type]
        rate_bps=f.number("rate_bps", default=1.0e9, lo=0, lo_open=True),  # type: ignore[arg-type]
        loss=f.number("loss", default=0.0, lo=0, hi=1),  # type: ignore[arg-type]
    )


def _check_wired(stations: list[GroundStation], items: list[Fields]) -> None:
    """Each wired link names another station, once per pair."""
    names = [s.name for s in stations]
    pairs: set[frozenset[str]] = set()
    for st, it in zip(stations, items, strict=True):
        for k, w in enumerate(st.wired):
            wf = it.items("wired")[k]
            if w.to == st.name:
                raise wf.error(f"station {st.name!r} has a wired link to itself", "to")
            if w.to not in names:
                close = difflib.get_close_matches(w.to, names, n=1)
                hint = f"; did you mean {close[0]!r}?" if close else ""
                raise wf.error(f"no ground station named {w.to!r}{hint} (wired links join "
                               "ground stations)", "to")
            pair = frozenset((st.name, w.to))
            if pair in pairs:
                raise wf.error(f"a second wired link between {st.name!r} and {w.to!r}", "to")
            pairs.add(pair)


def _parse_link_model(f: Fields) -> LinkModel:
    f.check_keys(LINK_KEYS)
    if ("rate_bps" in f) == ("budget" in f):
        raise InputError("give either 'rate_bps' (fixed rate) or 'budget' (link budget)",
                         source=f.source, line=f.value.line or f.line, field=f.field())
    loss = f.number("loss", default=0.0, lo=0, hi=1)
    if "rate_bps" in f:
        return LinkModel(rate_bps=f.number("rate_bps", lo=0, lo_open=True), loss=loss)  # type: ignore[arg-type]
    b = f.mapping("budget", BUDGET_KEYS,
                  required=("frequency_hz", "eirp_dbw", "gt_dbk", "bandwidth_hz"))
    budget = LinkBudget(
        frequency_hz=b.number("frequency_hz", lo=0, lo_open=True, required=True),  # type: ignore[arg-type]
        eirp_dbw=b.number("eirp_dbw", required=True),  # type: ignore[arg-type]
        gt_dbk=b.number("gt_dbk", required=True),  # type: ignore[arg-type]
        bandwidth_hz=b.number("bandwidth_hz", lo=0, lo_open=True, required=True),  # type: ignore[arg-type]
        other_losses_db=b.number("other_losses_db", default=0.0),  # type: ignore[arg-type]
        efficiency=b.number("efficiency", default=1.0, lo=0, hi=1, lo_open=True),  # type: ignore[arg-type]
        max_rate_bps=b.number("max_rate_bps", default=None, lo=0, lo_open=True),
        modcod=b.enum("modcod", MODCODS, default="shannon"),  # type: ignore[arg-type]
        rolloff=b.number("rolloff", default=0.2, lo=0, hi=1),  # type: ignore[arg-type]
        zenith_atmos_db=b.number("zenith_atmos_db", default=0.0, lo=0, hi=100),  # type: ignore[arg-type]
    )
    return LinkModel(budget=budget, loss=loss)  # type: ignore[arg-type]


WEATHER_KEYS = ("seed", "mean_event_s", "antenna_m", "antenna_efficiency", "random", "events")
RAIN_EVENT_KEYS = ("station", "start_s", "end_s", "atten_db")


def _parse_weather(f: Fields, stations: list[GroundStation]) -> WeatherConfig:
    if f.value is None:
        return WeatherConfig()
    f.check_keys(WEATHER_KEYS)
    names = [g.name for g in stations]
    events = []
    for e in f.items("events"):
        e.check_keys(RAIN_EVENT_KEYS, required=RAIN_EVENT_KEYS)
        st = e.string("station")
        if st not in names:
            raise e.error(f"no ground station {st!r}", "station")
        t0 = e.number("start_s", lo=0)
        t1 = e.number("end_s", lo=0)
        assert t0 is not None and t1 is not None
        if t1 <= t0:
            raise e.error("end_s must be after start_s", "end_s")
        events.append(RainEvent(st, t0, t1, math.nan,
                                e.number("atten_db", lo=0, hi=200)))  # type: ignore[arg-type]
    return WeatherConfig(
        random=f.boolean("random", default=True),  # type: ignore[arg-type]
        events=tuple(events),
        seed=f.integer("seed", default=1, lo=0),  # type: ignore[arg-type]
        mean_event_s=f.number("mean_event_s", default=1800.0, lo=1, hi=1e7),  # type: ignore[arg-type]
        antenna_m=f.number("antenna_m", default=1.0, lo=0.05, hi=100),  # type: ignore[arg-type]
        antenna_efficiency=f.number("antenna_efficiency", default=0.65, lo=0, hi=1,  # type: ignore[arg-type]
                                    lo_open=True),
    )


def _parse_schedule(f: Fields) -> ScheduleConfig:
    f.check_keys(SCHEDULE_KEYS)
    return ScheduleConfig(
        step_s=f.number("step_s", default=30.0, lo=1, hi=60),  # type: ignore[arg-type]
        gsl_sample_s=f.number("gsl_sample_s", default=120.0, lo=0.1, lo_open=True),  # type: ignore[arg-type]
        isl_sample_s=f.number("isl_sample_s", default=600.0, lo=0.1, lo_open=True),  # type: ignore[arg-type]
        rate_sample_s=f.number("rate_sample_s", default=10.0, lo=0.1, hi=3600),  # type: ignore[arg-type]
        handover=f.enum("handover", HANDOVER_POLICIES, default="longest-remaining"),  # type: ignore[arg-type]
        reassign_s=f.number("reassign_s", default=15.0, lo=1, hi=3600),  # type: ignore[arg-type]
        reassign_offset_s=f.number("reassign_offset_s", default=0.0, lo=0, hi=3600),  # type: ignore[arg-type]
        handover_seed=f.integer("handover_seed", default=1, lo=0),  # type: ignore[arg-type]
        handover_gap_s=f.number("handover_gap_s", default=0.0, lo=0, hi=10),  # type: ignore[arg-type]
    )


# --------------------------------------------------------------------------------------


def load_scenario(path: str | Path) -> Scenario:
    """Read and validate a scenario file (YAML). Raises InputError on bad input."""
    p = Path(path)
    return scenario_from_dict(load_yaml(p), path=p)


def scenario_from_dict(doc: Any, *, path: Path | None = None) -> Scenario:
    """Validate a parsed scenario document (from :func:`netemu.config.load_yaml` or
    built in code)."""
    source = str(path) if path is not None else "<scenario>"
    if doc is None:
        raise InputError("the file is empty", source=source)
    f = Fields(doc, source=source, line=1)
    f.check_keys(TOP_KEYS, required=("epoch", "duration_s", "satellites"))
    base_dir = path.parent if path is not None else Path(".")
    if "name" in f:
        name = check_scenario_name(f.string("name"), source=source, line=f.line_of("name"))
    else:
        name = scenario_name_from_path(path) if path is not None else "scenario"
    epoch = _parse_epoch(f)
    duration = f.number("duration_s", lo=0, lo_open=True, required=True)
    time_scale = f.number("time_scale", default=1.0, lo=0, lo_open=True)
    desc = f.get("description", "") or ""
    if not isinstance(desc, str):
        raise f.error("expected text", "description")

    isl = _parse_isl(f.child("isl"), IslConfig()) if "isl" in f else IslConfig()

    sat_items = f.items("satellites", required=True)
    if not sat_items:
        raise f.error("at least one satellites entry is needed", "satellites")
    groups = [_parse_group(g, i, base_dir, epoch, isl) for i, g in enumerate(sat_items)]

    station_items = f.items("ground_stations")
    stations = [_parse_station(s, base_dir) for s in station_items]
    station_lines = [s.line_of("name") for s in station_items]
    _check_wired(stations, station_items)

    links = dict(DEFAULT_LINK_MODELS)
    if "links" in f:
        lf = f.mapping("links", ("isl", "gsl"))
        for kind in lf:
            links[kind] = _parse_link_model(lf.child(kind))

    sched = _parse_schedule(f.child("schedule")) if "schedule" in f else ScheduleConfig()
    weather = None
    if "weather" in f:
        if links["gsl"].budget is None:
            raise InputError("weather needs a link budget for ground links (links.gsl.budget): "
                             "it lowers the rate the budget gives", source=source,
                             line=f.line_of("weather"), field="weather")
        weather = _parse_weather(f.child("weather"), stations)

    sections = {k: f.get(k) for k in RESERVED_SECTIONS if k in f}
    section_lines = {k: f.line_of(k) or 0 for k in sections}

    # names unique, ipn numbers unique
    seen: dict[str, str] = {}
    for g in groups:
        for s in g.satellites:
            if s.name in seen:
                raise InputError(f"node name {s.name!r} is used twice (set name_prefix)",
                                 source=source, line=sat_items[g.index].line,
                                 field=f"satellites[{g.index}]")
            seen[s.name] = "satellite"
    for i, st in enumerate(stations):
        if st.name in seen:
            raise InputError(f"node name {st.name!r} is used twice", source=source,
                             line=station_lines[i], field=f"ground_stations[{i}].name")
        seen[st.name] = "ground"
    ipn: dict[str, int] = {}
    explicit = {st.ipn for st in stations if st.ipn is not None}
    n = 0
    for nm in [s.name for g in groups for s in g.satellites]:
        n += 1
        while n in explicit:
            n += 1
        ipn[nm] = n
    for i, st in enumerate(stations):
        if st.ipn is not None:
            if st.ipn in ipn.values():
                raise InputError(f"ipn {st.ipn} is used twice", source=source,
                                 line=station_lines[i], field=f"ground_stations[{i}].ipn")
            ipn[st.name] = st.ipn
        else:
            n += 1
            while n in explicit:
                n += 1
            ipn[st.name] = n

    scenario = Scenario(
        name=name,
        path=path,
        epoch=epoch,
        duration_s=duration,  # type: ignore[arg-type]
        time_scale=time_scale,  # type: ignore[arg-type]
        groups=groups,
        ground_stations=stations,
        isl=isl,
        links=links,
        schedule=sched,
        weather=weather,
        description=desc,
        sections=sections,
        section_lines=section_lines,
        ipn=ipn,
    )
    if sections.get("traffic") is not None:
        scenario.traffic = parse_traffic(scenario.section("traffic"), scenario)
    if sections.get("faults") is not None:
        scenario.faults = parse_faults(scenario.section("faults"), scenario.node_names(),
                                       [g.name for g in scenario.ground_stations])
    scenario.compute = parse_compute(scenario.section("compute"))
    scenario.ip_routing = parse_ip_routing(scenario.section("ip_routing"),
                                           nodes=scenario.node_names())
    return scenario
