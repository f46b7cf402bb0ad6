"""Placement: which app runs on which node, from manifests and a scenario's ``apps:``.

Pure: reads manifests, starts nothing. The result is one :class:`AppInstance` per app and
node, with its argv, environment, limits and mode settled.
"""

from __future__ import annotations

import fnmatch
import json
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from netemu.run.apps.manifest import (
    MODES,
    AppManifest,
    Resources,
    _args,
    _environment,
    _Fields,
    _nodes,
    _resources,
    _str_list,
    load_manifest,
)


@dataclass(frozen=True)
class NodeInfo:
    """What selectors need to know about a node: its name and kind."""

    name: str
    kind: str  # "satellite", "ground", "other"


_KIND_SELECTORS = {
    "satellites": {"satellite"},
    "satellite": {"satellite"},
    "sats": {"satellite"},
    "ground": {"ground"},
    "grounds": {"ground"},
    "ground-stations": {"ground"},
    "stations": {"ground"},
    "all": {"satellite", "ground", "other"},
    "*": {"satellite", "ground", "other"},
}


def select_nodes(selectors: Iterable[str], nodes: Sequence[NodeInfo]) -> list[str]:
    """Node names matched by selectors, in the nodes' order: a name, a kind
    (``satellites``, ``ground``, ``all``) or a glob (``sat-*``)."""
    chosen: set[str] = set()
    names = {n.name for n in nodes}
    for sel in selectors:
        if sel in names:
            chosen.add(sel)
        elif sel in _KIND_SELECTORS:
            chosen |= {n.name for n in nodes if n.kind in _KIND_SELECTORS[sel]}
        else:
            hits = {n.name for n in nodes if fnmatch.fnmatchcase(n.name, sel)}
            if not hits:
                raise KeyError(sel)
            chosen |= hits
    return [n.name for n in nodes if n.name in chosen]


@dataclass(frozen=True)
class AppInstance:
    """One app on one node, with everything needed to start it."""

    manifest: AppManifest
    node: str
    argv: tuple[str, ...]
    environment: Mapping[str, str]
    resources: Resources
    mode: str

    @property
    def key(self) -> str:
        return f"{self.manifest.name}.{self.node}"


def plan_apps(
    section: Any,
    nodes: Sequence[NodeInfo],
    *,
    apps_dir: Path,
    source: str = "scenario",
    lines: Mapping[tuple, int] | None = None,
    base: tuple = ("apps",),
) -> list[AppInstance]:
    """Instances for a scenario's ``apps:`` section.

    Accepted forms: a list of app names; a list of ``{name: APP, nodes, args, environment,
    resources, mode, params}``; or a mapping ``APP: {overrides}``. Overrides replace the
    manifest's values; ``params`` reach the app as JSON in ``NETEMU_APP_PARAMS``.
    """
    f = _Fields(source, lines or {}, base)
    if section is None:
        return []
    entries: list[tuple[tuple, str, dict]] = []
    if isinstance(section, dict):
        for name, ov in section.items():
            if ov is not None and not isinstance(ov, dict):
                raise f.error((name,), "overrides must be a mapping (or empty)")
            entries.append(((name,), str(name), dict(ov or {})))
    elif isinstance(section, list):
        for i, item in enumerate(section):
            if isinstance(item, str):
                entries.append(((i,), item, {}))
            elif isinstance(item, dict) and isinstance(item.get("name"), str):
                ov = {k: v for k, v in item.items() if k != "name"}
                entries.append(((i,), item["name"], ov))
            else:
                raise f.error((i,), "each entry must be an app name or a mapping with name")
    else:
        raise f.error((), "must be a list of apps or a mapping of app name to overrides")

    allowed = {"nodes", "args", "environment", "resources", "mode", "params", "command"}
    out: list[AppInstance] = []
    for path, name, ov in entries:
        for k in ov:
            if k not in allowed:
                raise f.error(path + (k,), f"unknown key (expected {', '.join(sorted(allowed))})")
        app_dir = Path(apps_dir) / name
        if not (app_dir / "manifest.yaml").is_file():
            known = sorted(d.name for d in Path(apps_dir).iterdir() if (d / "manifest.yaml").is_file())
            raise f.error(path, f"no app named {name!r} in {apps_dir} (have: {', '.join(known)})")
        m = load_manifest(app_dir)
        if "mode" in ov and ov["mode"] not in MODES:
            raise f.error(path + ("mode",), f"must be one of {', '.join(MODES)}")
        command = m.command
        if "command" in ov:
            command = _str_list(f, path + ("command",), ov["command"], "command")
        m = replace(
            m,
            command=command,
            nodes=_nodes(f, path + ("nodes",), ov["nodes"]) if "nodes" in ov else m.nodes,
            args={**m.args, **_args(f, path + ("args",), ov.get("args"))},
            environment={**m.environment, **_environment(f, path + ("environment",), ov.get("environment"))},
            resources=_resources(f, path + ("resources",), ov.get("resources"), m.resources),
            mode=ov.get("mode", m.mode),
            params={**m.params, **(ov.get("params") or {})},
        )
        if not m.nodes:
            raise f.error(path + ("nodes",), f"app {name!r} selects no nodes (set nodes:)")
        try:
            targets = select_nodes(m.nodes, nodes)
        except KeyError as e:
            raise f.error(path + ("nodes",), f"selector {e.args[0]!r} matches no node") from None
        for node in targets:
            extra: tuple[str, ...] = ()
            for sel, a in m.args.items():
                try:
                    if node in select_nodes([sel], nodes):
                        extra = a
                except KeyError:
                    continue
            env = dict(m.environment)
            if m.params:
                env["NETEMU_APP_PARAMS"] = json.dumps(m.params, sort_keys=True)
            out.append(
                AppInstance(
                    manifest=m,
                    node=node,
                    argv=m.command + extra,
                    environment=env,
                    resources=m.resources,
                    mode=m.mode,
                )
            )
    return out
