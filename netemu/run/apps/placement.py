"""Placement: which app runs on which node, from manifests and a scenario's ``apps:``.

Pure: reads manifests, starts nothing. The result is one :class:`AppInstance` per app and
node, with its argv, environment, limits and mode settled.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from netemu.config import Fields
from netemu.plan.selectors import SelectorError, select
from netemu.run.apps.manifest import (
    MODES,
    AppManifest,
    Resources,
    args_field,
    argv_field,
    environment_field,
    load_manifest,
    nodes_field,
    params_field,
    resources_field,
)
from netemu.runtime.env import HostEnv


@dataclass(frozen=True)
class NodeInfo:
    """What selectors need to know about a node: its name and kind."""

    name: str
    kind: str  # "satellite", "ground", "other"


def select_nodes(selectors: Iterable[str], nodes: Sequence[NodeInfo]) -> list[str]:
    """Node names matched by selectors, in the nodes' order, with the scenario's one
    selector syntax (:mod:`netemu.plan.selectors`: a name, a kind such as ``satellites``
    or ``ground``, ``all``, a glob such as ``sat-*``); ``KeyError(selector)`` for a
    selector that matches nothing."""
    chosen = list(selectors)
    if not chosen:
        return []
    try:
        return select(chosen, nodes)
    except SelectorError as e:
        raise KeyError(e.selector) from None


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


OVERRIDE_KEYS = ("nodes", "args", "environment", "resources", "mode", "params", "command")


def plan_apps(
    section: Fields | Any,
    nodes: Sequence[NodeInfo],
    *,
    apps_dir: Path,
    source: str = "scenario",
) -> list[AppInstance]:
    """Instances for a scenario's ``apps:`` section (``Scenario.section("apps")``, or a
    plain value, then named ``source`` in errors).

    Accepted forms: a list of app names; a list of ``{name: APP, nodes, args, environment,
    resources, mode, params}``; or a mapping ``APP: {overrides}``. Overrides replace the
    manifest's values; ``params`` reach the app as JSON in ``NETEMU_APP_PARAMS``.
    """
    f = section if isinstance(section, Fields) else Fields(section, source=source, path="apps")
    if f.is_none():
        return []
    entries: list[tuple[Fields, str]] = []  # (overrides, app name)
    if isinstance(f.value, dict):
        for name in f:
            ov = f.child(name)
            if ov.is_none():
                ov = Fields({}, source=f.source, path=ov.path, line=ov.line)
            elif not isinstance(ov.value, dict):
                raise f.error("overrides must be a mapping (or empty)", name)
            ov.check_keys(OVERRIDE_KEYS)
            entries.append((ov, name))
    elif isinstance(f.value, list):
        for item in f.items():
            if isinstance(item.value, str):
                entries.append((Fields({}, source=f.source, path=item.path, line=item.line),
                                item.value))
            elif isinstance(item.value, dict) and isinstance(item.get("name"), str):
                item.check_keys(("name", *OVERRIDE_KEYS))
                entries.append((item, item.get("name")))
            else:
                raise item.error("each entry must be an app name or a mapping with name")
    else:
        raise f.error("must be a list of apps or a mapping of app name to overrides")

    out: list[AppInstance] = []
    for ov, name in entries:
        app_dir = Path(apps_dir) / name
        if not (app_dir / "manifest.yaml").is_file():
            known = sorted(d.name for d in Path(apps_dir).iterdir() if (d / "manifest.yaml").is_file())
            raise ov.error(f"no app named {name!r} in {apps_dir} (have: {', '.join(known)})")
        m = load_manifest(app_dir)
        m = replace(
            m,
            command=argv_field(ov, "command") if "command" in ov else m.command,
            nodes=nodes_field(ov) if "nodes" in ov else m.nodes,
            args={**m.args, **args_field(ov.child("args"))},
            environment={**m.environment, **environment_field(ov.child("environment"))},
            resources=resources_field(ov.child("resources"), m.resources),
            mode=ov.enum("mode", MODES, default=m.mode) or m.mode,
            params={**m.params, **params_field(ov)},
        )
        if not m.nodes:
            raise ov.error(f"app {name!r} selects no nodes (set nodes:)", "nodes")
        if m.image is not None and m.mode != "container":
            raise ov.error(f"app {name!r} names an image ({m.image.where}): it runs as a "
                           "container, not as a process", "mode")
        try:
            targets = select_nodes(m.nodes, nodes)
        except KeyError as e:
            raise ov.error(f"selector {e.args[0]!r} matches no node", "nodes") from None
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
                env.update(HostEnv(app_params=dict(m.params)).to_env())
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
