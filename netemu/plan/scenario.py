"""Scenario files (topologies/*.yaml) → a validated :class:`Scenario`.

A scenario fixes the epoch (UTC), the duration and time scale, the satellites (Walker
constellations or TLE/OMM files), the ground stations, the ISL topology and the link
models. Sections that other parts of netemu read (``routing``, ``apps``, ``expect``,
``emulation``, ``telemetry``, ``capture``) are kept raw in :attr:`Scenario.sections`,
with the line of each of their keys in :attr:`Scenario.section_lines`.

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

import yaml

from netemu.errors import InputError
from netemu.plan.linkmodel import DEFAULT_LINK_MODELS, LinkBudget, LinkModel

MAX_NAME_LEN = 15
"""Longest node name: Linux interface names hold 15 characters (IFNAMSIZ − 1)."""

NAME_RE = re.compile(r"^[a-z][a-z0-9-]*$")
"""Node names: lowercase letters, digits and '-', starting with a letter — valid as a
host name label and as an interface name, with no shell metacharacters."""

RESERVED_SECTIONS = ("routing", "apps", "expect", "emulation", "telemetry", "capture")

ISL_TOPOLOGIES = ("ring", "plus-grid", "none")


# --------------------------------------------------------------------------------------
# YAML with line numbers


class LineMap(dict):
    """A YAML mapping that remembers its own line and each key's line (1-based)."""

    line: int = 0
    key_lines: dict

    def line_of(self, key: str) -> int:
        return self.key_lines.get(key, self.line)


class LineList(list):
    """A YAML sequence that remembers its own line and each item's line (1-based)."""

    line: int = 0
    item_lines: list


class _Loader(yaml.SafeLoader):
    pass


def _construct_mapping(loader: _Loader, node: yaml.MappingNode) -> LineMap:
    loader.flatten_mapping(node)
    m = LineMap()
    m.line = node.start_mark.line + 1
    m.key_lines = {}
    for k_node, v_node in node.value:
        key = loader.construct_object(k_node, deep=True)
        if not isinstance(key, (str, int, float, bool)) or key is None:
            raise yaml.constructor.ConstructorError(
                None, None, "a mapping key must be a plain word", k_node.start_mark
            )
        key = str(key)
        if key in m:
            raise yaml.constructor.ConstructorError(
                None, None, f"duplicate key {key!r}", k_node.start_mark
            )
        m[key] = loader.construct_object(v_node, deep=True)
        m.key_lines[key] = k_node.start_mark.line + 1
    return m


def _construct_sequence(loader: _Loader, node: yaml.SequenceNode) -> LineList:
    seq = LineList(loader.construct_object(v, deep=True) for v in node.value)
    seq.line = node.start_mark.line + 1
    seq.item_lines = [v.start_mark.line + 1 for v in node.value]
    return seq


_Loader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _construct_mapping)
_Loader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_SEQUENCE_TAG, _construct_sequence)


def load_yaml(path: Path) -> Any:
    """Parse a YAML file into :class:`LineMap`/:class:`LineList` (errors → InputError)."""
    try:
        text = path.read_text()
    except OSError as e:
        raise InputError(f"cannot read: {e.strerror}", source=str(path)) from e
    try:
        return yaml.load(text, Loader=_Loader)  # noqa: S506 - SafeLoader subclass
    except yaml.MarkedYAMLError as e:
        mark = e.problem_mark or e.context_mark
        line = mark.line + 1 if mark is not None else None
        msg = " ".join(x for x in (e.context, e.problem) if x) or str(e)
        raise InputError(f"not valid YAML: {msg}", source=str(path), line=line) from e
    except yaml.YAMLError as e:
        raise InputError(f"not valid YAML: {e}", source=str(path)) from e


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
    """

    topology: str = "none"
    seam: bool | None = None
    max_range_km: float = 5000.0
    earth_clearance_km: float = 80.0
    cross_plane_max_lat_deg: float | None = None


@dataclass
class Satellite:
    """One satellite: its node name, its group, its plane/slot when known, its SGP4
    element set (an ``sgp4.api.Satrec``)."""

    name: str
    group: int
    plane: int | None
    slot: int | None
    satrec: Any = field(repr=False)


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
class GroundStation:
    """A ground station: WGS84 geodetic position, elevation mask, tracking capacity.

    ``max_links`` is how many satellites it can track at once (antennas); 0 = no limit.
    """

    name: str
    lat_deg: float
    lon_deg: float
    alt_m: float = 0.0
    min_elevation_deg: float = 10.0
    max_links: int = 1
    ipn: int | None = None


@dataclass(frozen=True)
class ScheduleConfig:
    """How the schedule is computed (``schedule`` section, all optional).

    ``step_s``: coarse sampling step (contacts are then refined to < 1 ms);
    ``gsl_sample_s`` / ``isl_sample_s``: longest spacing of the light-time samples in a
    contact (they are placed where linear interpolation needs them, see docs/schedule.md).
    """

    step_s: float = 30.0
    gsl_sample_s: float = 120.0
    isl_sample_s: float = 600.0


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
    description: str = ""
    sections: dict[str, Any] = field(default_factory=dict)
    section_lines: dict[str, int] = field(default_factory=dict)
    ipn: dict[str, int] = field(default_factory=dict)

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


# --------------------------------------------------------------------------------------
# Validation helpers


class _Ctx:
    """Where we are in the file, for error messages."""

    def __init__(self, source: str) -> None:
        self.source = source

    def error(self, msg: str, line: int | None, field_: str | None) -> InputError:
        return InputError(msg, source=self.source, line=line, field=field_)


def _suggest(key: str, allowed: list[str] | tuple[str, ...]) -> str:
    close = difflib.get_close_matches(key, list(allowed), n=1, cutoff=0.6)
    if close:
        return f"; did you mean {close[0]!r}?"
    return f"; expected one of: {', '.join(allowed)}"


def _check_keys(
    ctx: _Ctx, m: Any, allowed: tuple[str, ...], where: str, line: int, required: tuple[str, ...] = ()
) -> LineMap:
    if not isinstance(m, dict):
        raise ctx.error(f"expected a mapping, got {_kind(m)}", line, where or None)
    if not isinstance(m, LineMap):  # built in code, not from YAML
        lm = LineMap(m)
        lm.line = line
        lm.key_lines = {}
        m = lm
    for k in m:
        if k not in allowed:
            raise ctx.error(
                f"unknown key {k!r}{_suggest(k, allowed)}", m.line_of(k), _join(where, k)
            )
    for k in required:
        if k not in m:
            raise ctx.error(f"missing required key {k!r}", m.line or line, _join(where, k))
    return m


def _join(where: str, key: str | int) -> str:
    if isinstance(key, int):
        return f"{where}[{key}]"
    return f"{where}.{key}" if where else key


def _kind(v: Any) -> str:
    if isinstance(v, dict):
        return "a mapping"
    if isinstance(v, list):
        return "a list"
    if v is None:
        return "nothing"
    return f"{type(v).__name__} {v!r}"


def _number(
    ctx: _Ctx,
    m: LineMap,
    key: str,
    where: str,
    *,
    default: float | None = None,
    lo: float | None = None,
    hi: float | None = None,
    lo_open: bool = False,
    required: bool = False,
) -> float | None:
    if key not in m:
        if required:
            raise ctx.error(f"missing required key {key!r}", m.line, _join(where, key))
        return default
    v = m[key]
    line = m.line_of(key)
    f = _join(where, key)
    if isinstance(v, bool):
        raise ctx.error(f"expected a number, got {v!r}", line, f)
    if isinstance(v, str):
        try:
            v = float(v.replace("_", ""))
        except ValueError:
            raise ctx.error(f"expected a number, got {v!r}", line, f) from None
    if not isinstance(v, (int, float)) or not math.isfinite(v):
        raise ctx.error(f"expected a number, got {_kind(v)}", line, f)
    if lo is not None and (v < lo or (lo_open and v == lo)):
        op = ">" if lo_open else "≥"
        raise ctx.error(f"must be {op} {lo:g}, got {v:g}", line, f)
    if hi is not None and v > hi:
        raise ctx.error(f"must be ≤ {hi:g}, got {v:g}", line, f)
    return float(v)


def _integer(
    ctx: _Ctx, m: LineMap, key: str, where: str, *, default: int | None = None, lo: int = 0,
    required: bool = False,
) -> int | None:
    if key not in m:
        if required:
            raise ctx.error(f"missing required key {key!r}", m.line, _join(where, key))
        return default
    v = m[key]
    if isinstance(v, bool) or not isinstance(v, int):
        raise ctx.error(f"expected a whole number, got {_kind(v)}", m.line_of(key), _join(where, key))
    if v < lo:
        raise ctx.error(f"must be ≥ {lo}, got {v}", m.line_of(key), _join(where, key))
    return v


def _string(ctx: _Ctx, m: LineMap, key: str, where: str, *, default: str | None = None,
            choices: tuple[str, ...] | None = None, required: bool = False) -> str | None:
    if key not in m:
        if required:
            raise ctx.error(f"missing required key {key!r}", m.line, _join(where, key))
        return default
    v = m[key]
    if not isinstance(v, str):
        raise ctx.error(f"expected text, got {_kind(v)}", m.line_of(key), _join(where, key))
    if choices is not None and v not in choices:
        raise ctx.error(f"{v!r} is not allowed{_suggest(v, choices)}", m.line_of(key), _join(where, key))
    return v


def _bool(ctx: _Ctx, m: LineMap, key: str, where: str, default: bool | None) -> bool | None:
    if key not in m:
        return default
    v = m[key]
    if v is None and default is None:
        return None
    if not isinstance(v, bool):
        raise ctx.error(f"expected true or false, got {_kind(v)}", m.line_of(key), _join(where, key))
    return v


def check_node_name(name: Any, *, source: str | None = None, line: int | None = None,
                    field: str | None = None) -> str:
    """Raise InputError unless ``name`` is a usable node name (host + interface name)."""
    if not isinstance(name, str) or not name:
        raise InputError(f"a node name must be text, got {_kind(name)}", source=source, line=line,
                         field=field)
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


def _parse_epoch(ctx: _Ctx, m: LineMap) -> datetime:
    if "epoch" not in m:
        raise ctx.error("missing required key 'epoch' (UTC, e.g. 2026-06-01T00:00:00Z)", m.line, "epoch")
    v = m["epoch"]
    line = m.line_of("epoch")
    if isinstance(v, datetime):
        t = v
    elif isinstance(v, date):
        t = datetime(v.year, v.month, v.day)
    elif isinstance(v, str):
        try:
            t = datetime.fromisoformat(v.strip().replace("Z", "+00:00"))
        except ValueError:
            raise ctx.error(f"{v!r} is not an ISO 8601 UTC time (e.g. 2026-06-01T00:00:00Z)",
                            line, "epoch") from None
    else:
        raise ctx.error(f"expected a UTC time, got {_kind(v)}", line, "epoch")
    if t.tzinfo is None:
        t = t.replace(tzinfo=timezone.utc)
    return t.astimezone(timezone.utc)


# --------------------------------------------------------------------------------------
# Sections

TOP_KEYS = (
    "name", "description", "epoch", "duration_s", "time_scale", "satellites",
    "ground_stations", "isl", "links", "schedule", *RESERVED_SECTIONS,
)
WALKER_KEYS = (
    "planes", "sats_per_plane", "altitude_km", "inclination_deg", "phasing", "pattern",
    "raan0_deg", "arg_lat0_deg", "phase_span_deg", "eccentricity",
)
GROUP_KEYS = ("walker", "tle", "omm", "name_prefix", "isl", "plane_tolerance_deg")
STATION_KEYS = ("name", "lat_deg", "lon_deg", "alt_m", "min_elevation_deg", "max_links", "ipn")
ISL_KEYS = ("topology", "seam", "max_range_km", "earth_clearance_km", "cross_plane_max_lat_deg")
LINK_KEYS = ("rate_bps", "budget", "loss")
BUDGET_KEYS = ("frequency_hz", "eirp_dbw", "gt_dbk", "bandwidth_hz", "other_losses_db",
               "efficiency", "max_rate_bps")
SCHEDULE_KEYS = ("step_s", "gsl_sample_s", "isl_sample_s")


def _parse_isl(ctx: _Ctx, m: Any, where: str, line: int, base: IslConfig) -> IslConfig:
    m = _check_keys(ctx, m, ISL_KEYS, where, line)
    topology = _string(ctx, m, "topology", where, default=base.topology, choices=ISL_TOPOLOGIES)
    seam = _bool(ctx, m, "seam", where, base.seam)
    max_range = _number(ctx, m, "max_range_km", where, default=base.max_range_km, lo=0, lo_open=True)
    clear = _number(ctx, m, "earth_clearance_km", where, default=base.earth_clearance_km, lo=0)
    lat = _number(ctx, m, "cross_plane_max_lat_deg", where, default=base.cross_plane_max_lat_deg,
                  lo=0, hi=90)
    return IslConfig(topology, seam, max_range, clear, lat)  # type: ignore[arg-type]


def _parse_walker(ctx: _Ctx, m: Any, where: str, line: int) -> WalkerSpec:
    m = _check_keys(ctx, m, WALKER_KEYS, where, line,
                    required=("planes", "sats_per_plane", "altitude_km", "inclination_deg"))
    planes = _integer(ctx, m, "planes", where, lo=1, required=True)
    spp = _integer(ctx, m, "sats_per_plane", where, lo=1, required=True)
    alt = _number(ctx, m, "altitude_km", where, lo=150, hi=40000, required=True)
    inc = _number(ctx, m, "inclination_deg", where, lo=0, hi=180, required=True)
    phasing = _integer(ctx, m, "phasing", where, default=0, lo=0)
    assert planes is not None and spp is not None and phasing is not None
    if phasing >= planes and planes > 1:
        raise ctx.error(f"Walker phasing F must be in 0..planes−1 (0..{planes - 1}), got {phasing}",
                        m.line_of("phasing"), _join(where, "phasing"))
    pattern = _string(ctx, m, "pattern", where, default="delta", choices=("delta", "star"))
    return WalkerSpec(
        planes=planes,
        sats_per_plane=spp,
        altitude_km=alt,  # type: ignore[arg-type]
        inclination_deg=inc,  # type: ignore[arg-type]
        phasing=phasing,
        pattern=pattern,  # type: ignore[arg-type]
        raan0_deg=_number(ctx, m, "raan0_deg", where, default=0.0),  # type: ignore[arg-type]
        arg_lat0_deg=_number(ctx, m, "arg_lat0_deg", where, default=0.0),  # type: ignore[arg-type]
        phase_span_deg=_number(ctx, m, "phase_span_deg", where, default=360.0, lo=0, hi=360,
                               lo_open=True),  # type: ignore[arg-type]
        eccentricity=_number(ctx, m, "eccentricity", where, default=0.0001, lo=0, hi=0.1),  # type: ignore[arg-type]
    )


def _parse_group(
    ctx: _Ctx, m: Any, index: int, line: int, base_dir: Path, epoch: datetime, isl: IslConfig
) -> SatelliteGroup:
    from netemu.plan import orbit  # orbit imports sgp4; keep scenario import light

    where = f"satellites[{index}]"
    m = _check_keys(ctx, m, GROUP_KEYS, where, line)
    kinds = [k for k in ("walker", "tle", "omm") if k in m]
    if len(kinds) != 1:
        raise ctx.error(
            "each satellites entry needs exactly one of 'walker', 'tle' or 'omm'"
            + (f" (got {', '.join(kinds)})" if kinds else ""), m.line, where)
    kind = kinds[0]
    prefix = _string(ctx, m, "name_prefix", where)
    if prefix is not None:
        check_node_name(prefix, source=ctx.source, line=m.line_of("name_prefix"),
                        field=_join(where, "name_prefix"))
    group_isl = isl
    if "isl" in m:
        group_isl = _parse_isl(ctx, m["isl"], _join(where, "isl"), m.line_of("isl"), isl)
    sats: list[Satellite] = []
    if kind == "walker":
        spec = _parse_walker(ctx, m["walker"], _join(where, "walker"), m.line_of("walker"))
        pfx = prefix or "sat"
        recs = orbit.walker_satrecs(spec, epoch, first_satnum=1)
        for (p, s), rec in recs:
            name = f"{pfx}-{p}-{s}" if spec.planes > 1 else f"{pfx}-{s}"
            sats.append(Satellite(name, index, p, s, rec))
        planes = spec.planes
        if group_isl.seam is None:
            group_isl = IslConfig(group_isl.topology, spec.pattern == "star", group_isl.max_range_km,
                                  group_isl.earth_clearance_km, group_isl.cross_plane_max_lat_deg)
        group = SatelliteGroup(index, kind, sats, planes, group_isl, walker=spec, line=m.line)
    else:
        fname = m[kind]
        if not isinstance(fname, str):
            raise ctx.error(f"expected a file name, got {_kind(fname)}", m.line_of(kind), _join(where, kind))
        path = (base_dir / fname) if not Path(fname).is_absolute() else Path(fname)
        try:
            elements = orbit.load_tle(path) if kind == "tle" else orbit.load_omm(path)
        except InputError as e:
            raise ctx.error(f"{fname}: {e.message}", m.line_of(kind), _join(where, kind)) from e
        if not elements:
            raise ctx.error(f"{fname}: no element sets found", m.line_of(kind), _join(where, kind))
        tol = _number(ctx, m, "plane_tolerance_deg", where, default=2.0, lo=0, lo_open=True)
        plane_of, slot_of, planes = orbit.assign_planes([r for _, r in elements], epoch, tol)  # type: ignore[arg-type]
        for i, (objname, rec) in enumerate(elements):
            name = f"{prefix}-{i}" if prefix else _sanitize(objname) or f"sat-{rec.satnum}"
            sats.append(Satellite(name, index, plane_of[i], slot_of[i], rec))
        if group_isl.seam is None:
            group_isl = IslConfig(group_isl.topology, False, group_isl.max_range_km,
                                  group_isl.earth_clearance_km, group_isl.cross_plane_max_lat_deg)
        group = SatelliteGroup(index, kind, sats, planes, group_isl, source=str(path), line=m.line)
    for s in sats:
        try:
            check_node_name(s.name)
        except InputError as e:
            hint = "" if prefix else " (set name_prefix to number them instead)"
            raise ctx.error(e.message + hint, m.line, where) from None
    return group


def _sanitize(objname: str) -> str:
    s = re.sub(r"[^a-z0-9]+", "-", objname.strip().lower()).strip("-")
    if s and not s[0].isalpha():
        s = "sat-" + s
    return s


def _parse_station(ctx: _Ctx, m: Any, index: int, line: int) -> GroundStation:
    where = f"ground_stations[{index}]"
    m = _check_keys(ctx, m, STATION_KEYS, where, line, required=("name", "lat_deg", "lon_deg"))
    name = m["name"]
    check_node_name(name, source=ctx.source, line=m.line_of("name"), field=_join(where, "name"))
    return GroundStation(
        name=name,
        lat_deg=_number(ctx, m, "lat_deg", where, lo=-90, hi=90, required=True),  # type: ignore[arg-type]
        lon_deg=_number(ctx, m, "lon_deg", where, lo=-180, hi=360, required=True),  # type: ignore[arg-type]
        alt_m=_number(ctx, m, "alt_m", where, default=0.0, lo=-500, hi=9000),  # type: ignore[arg-type]
        min_elevation_deg=_number(ctx, m, "min_elevation_deg", where, default=10.0, lo=0, hi=89),  # type: ignore[arg-type]
        max_links=_integer(ctx, m, "max_links", where, default=1, lo=0),  # type: ignore[arg-type]
        ipn=_integer(ctx, m, "ipn", where, default=None, lo=1),
    )


def _parse_link_model(ctx: _Ctx, m: Any, where: str, line: int) -> LinkModel:
    m = _check_keys(ctx, m, LINK_KEYS, where, line)
    if ("rate_bps" in m) == ("budget" in m):
        raise ctx.error("give either 'rate_bps' (fixed rate) or 'budget' (link budget)", m.line, where)
    loss = _number(ctx, m, "loss", where, default=0.0, lo=0, hi=1)
    if "rate_bps" in m:
        return LinkModel(rate_bps=_number(ctx, m, "rate_bps", where, lo=0, lo_open=True), loss=loss)  # type: ignore[arg-type]
    bw = _join(where, "budget")
    b = _check_keys(ctx, m["budget"], BUDGET_KEYS, bw, m.line_of("budget"),
                    required=("frequency_hz", "eirp_dbw", "gt_dbk", "bandwidth_hz"))
    budget = LinkBudget(
        frequency_hz=_number(ctx, b, "frequency_hz", bw, lo=0, lo_open=True, required=True),  # type: ignore[arg-type]
        eirp_dbw=_number(ctx, b, "eirp_dbw", bw, required=True),  # type: ignore[arg-type]
        gt_dbk=_number(ctx, b, "gt_dbk", bw, required=True),  # type: ignore[arg-type]
        bandwidth_hz=_number(ctx, b, "bandwidth_hz", bw, lo=0, lo_open=True, required=True),  # type: ignore[arg-type]
        other_losses_db=_number(ctx, b, "other_losses_db", bw, default=0.0),  # type: ignore[arg-type]
        efficiency=_number(ctx, b, "efficiency", bw, default=1.0, lo=0, hi=1, lo_open=True),  # type: ignore[arg-type]
        max_rate_bps=_number(ctx, b, "max_rate_bps", bw, default=None, lo=0, lo_open=True),
    )
    return LinkModel(budget=budget, loss=loss)  # type: ignore[arg-type]


def _list(ctx: _Ctx, v: Any, where: str, line: int) -> LineList:
    if not isinstance(v, list):
        raise ctx.error(f"expected a list, got {_kind(v)}", line, where)
    if not isinstance(v, LineList):
        lst = LineList(v)
        lst.line = line
        lst.item_lines = [line] * len(v)
        return lst
    return v


# --------------------------------------------------------------------------------------


def load_scenario(path: str | Path) -> Scenario:
    """Read and validate a scenario file (YAML). Raises InputError on bad input."""
    p = Path(path)
    doc = load_yaml(p)
    return scenario_from_dict(doc, path=p)


def scenario_from_dict(doc: Any, *, path: Path | None = None) -> Scenario:
    """Validate a parsed scenario document (from :func:`load_yaml` or built in code)."""
    source = str(path) if path is not None else "<scenario>"
    ctx = _Ctx(source)
    if doc is None:
        raise ctx.error("the file is empty", None, None)
    m = _check_keys(ctx, doc, TOP_KEYS, "", 1, required=("epoch", "duration_s", "satellites"))
    base_dir = path.parent if path is not None else Path(".")
    name = _string(ctx, m, "name", "", default=path.stem if path is not None else "scenario")
    epoch = _parse_epoch(ctx, m)
    duration = _number(ctx, m, "duration_s", "", lo=0, lo_open=True, required=True)
    time_scale = _number(ctx, m, "time_scale", "", default=1.0, lo=0, lo_open=True)
    desc = m.get("description", "") or ""
    if not isinstance(desc, str):
        raise ctx.error("expected text", m.line_of("description"), "description")

    isl = IslConfig()
    if "isl" in m:
        isl = _parse_isl(ctx, m["isl"], "isl", m.line_of("isl"), isl)

    sats_raw = _list(ctx, m["satellites"], "satellites", m.line_of("satellites"))
    if not sats_raw:
        raise ctx.error("at least one satellites entry is needed", m.line_of("satellites"), "satellites")
    groups = [
        _parse_group(ctx, g, i, sats_raw.item_lines[i], base_dir, epoch, isl)
        for i, g in enumerate(sats_raw)
    ]

    stations: list[GroundStation] = []
    station_lines: list[int] = []
    if "ground_stations" in m and m["ground_stations"] is not None:
        st_raw = _list(ctx, m["ground_stations"], "ground_stations", m.line_of("ground_stations"))
        stations = [_parse_station(ctx, s, i, st_raw.item_lines[i]) for i, s in enumerate(st_raw)]
        station_lines = [s.line_of("name") if isinstance(s, LineMap) else st_raw.item_lines[i]
                         for i, s in enumerate(st_raw)]

    links = dict(DEFAULT_LINK_MODELS)
    if "links" in m:
        lm = _check_keys(ctx, m["links"], ("isl", "gsl"), "links", m.line_of("links"))
        for kind in lm:
            links[kind] = _parse_link_model(ctx, lm[kind], f"links.{kind}", lm.line_of(kind))

    sched = ScheduleConfig()
    if "schedule" in m:
        sm = _check_keys(ctx, m["schedule"], SCHEDULE_KEYS, "schedule", m.line_of("schedule"))
        sched = ScheduleConfig(
            step_s=_number(ctx, sm, "step_s", "schedule", default=30.0, lo=1, hi=60),  # type: ignore[arg-type]
            gsl_sample_s=_number(ctx, sm, "gsl_sample_s", "schedule", default=120.0, lo=0.1, lo_open=True),  # type: ignore[arg-type]
            isl_sample_s=_number(ctx, sm, "isl_sample_s", "schedule", default=600.0, lo=0.1, lo_open=True),  # type: ignore[arg-type]
        )

    sections = {k: m[k] for k in RESERVED_SECTIONS if k in m}
    section_lines = {k: m.line_of(k) for k in sections}

    # names unique, ipn numbers unique
    seen: dict[str, str] = {}
    for g in groups:
        for s in g.satellites:
            if s.name in seen:
                raise ctx.error(f"node name {s.name!r} is used twice (set name_prefix)",
                                sats_raw.item_lines[g.index], f"satellites[{g.index}]")
            seen[s.name] = "satellite"
    for i, st in enumerate(stations):
        if st.name in seen:
            raise ctx.error(f"node name {st.name!r} is used twice", station_lines[i],
                            f"ground_stations[{i}].name")
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
                raise ctx.error(f"ipn {st.ipn} is used twice", station_lines[i],
                                f"ground_stations[{i}].ipn")
            ipn[st.name] = st.ipn
        else:
            n += 1
            while n in explicit:
                n += 1
            ipn[st.name] = n

    return Scenario(
        name=name,  # type: ignore[arg-type]
        path=path,
        epoch=epoch,
        duration_s=duration,  # type: ignore[arg-type]
        time_scale=time_scale,  # type: ignore[arg-type]
        groups=groups,
        ground_stations=stations,
        isl=isl,
        links=links,
        schedule=sched,
        description=desc,
        sections=sections,
        section_lines=section_lines,
        ipn=ipn,
    )
