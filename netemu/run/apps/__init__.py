"""Apps: read ``apps/<name>/manifest.yaml`` and run each app inside emulated hosts.

An app runs on each node its manifest (or the scenario) selects, in one of two modes:

- ``process``: a plain process entered into the host's network namespace (``nsenter``)
  and placed in a cgroup of its own, ``<controller>/netemu/<run>/<app>.<node>``, that
  carries the manifest's ``resources``;
- ``container``: a podman container joined to the host's network namespace with
  ``--cpus``/``--memory`` from the manifest, its cgroup under the same per-app group, from
  an image built here (never pulled).

The modules, by job: :mod:`.manifest` (read and check a manifest), :mod:`.placement`
(which app on which node), :mod:`.cgroup` (limits and accounting), :mod:`.image` (podman
images), :mod:`.runner` (start, watch, stop, record ``usage.json``).
"""

from netemu.run.apps.cgroup import AppCgroup, cgroup_of, cgroup_version
from netemu.run.apps.image import build_app_image, build_base_image
from netemu.run.apps.manifest import (
    MODES,
    AppError,
    AppManifest,
    Resources,
    find_apps_dir,
    load_manifest,
)
from netemu.run.apps.placement import AppInstance, NodeInfo, plan_apps, select_nodes
from netemu.run.apps.runner import AppRunner, RunningApp, base_environment, resolve_argv

__all__ = [
    "MODES",
    "AppCgroup",
    "AppError",
    "AppInstance",
    "AppManifest",
    "AppRunner",
    "NodeInfo",
    "Resources",
    "RunningApp",
    "base_environment",
    "build_app_image",
    "build_base_image",
    "cgroup_of",
    "cgroup_version",
    "find_apps_dir",
    "load_manifest",
    "plan_apps",
    "resolve_argv",
    "select_nodes",
]
