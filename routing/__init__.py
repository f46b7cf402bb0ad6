"""DTN routing algorithms and IP route computation, installed as ``netemu.routing``.

Routers are chosen by name (a scenario's ``routing: {algorithm: NAME, ...}``)::

    from netemu.routing import get_router
    router = get_router("cgr")(node, plan, **params)
"""

from __future__ import annotations

import importlib
from collections.abc import Mapping

from netemu.errors import InputError
from netemu.routing.base import BundleInfo, Decision, Hop, Router
from netemu.routing.params import check_params

__all__ = ["BundleInfo", "Decision", "Hop", "Router", "available_routers", "check_router_params",
           "get_router"]

_ROUTERS = {
    "cgr": ("netemu.routing.cgr", "CGRRouter"),
    "direct": ("netemu.routing.direct", "DirectRouter"),
    "epidemic": ("netemu.routing.epidemic", "EpidemicRouter"),
    "spray-and-wait": ("netemu.routing.spray", "SprayAndWaitRouter"),
    "prophet": ("netemu.routing.prophet", "ProphetRouter"),
    "static": ("netemu.routing.static", "StaticRouter"),
    "first-contact": ("netemu.routing.first_contact", "FirstContactRouter"),
}
_ALIASES = {"spray": "spray-and-wait", "snw": "spray-and-wait", "contact-graph": "cgr"}


def available_routers() -> list[str]:
    """Names ``get_router`` accepts (aliases aside)."""
    return sorted(_ROUTERS)


def get_router(name: str) -> type[Router]:
    """The router class called ``name`` (case and ``_``/``-`` do not matter)."""
    key = str(name).strip().lower().replace("_", "-")
    key = _ALIASES.get(key, key)
    if key not in _ROUTERS:
        raise InputError(f"unknown routing algorithm {name!r}; "
                         f"choose one of: {', '.join(available_routers())}",
                         field="routing.algorithm")
    module, cls = _ROUTERS[key]
    router: type[Router] = getattr(importlib.import_module(module), cls)
    return router


def check_router_params(name: str, params: Mapping[str, object]) -> None:
    """Check a scenario's routing section before any router is built: the algorithm
    exists and every parameter is one it knows (``InputError`` otherwise)."""
    cls = get_router(name)
    allowed = getattr(cls, "PARAMS", None)
    if allowed is not None:
        check_params(cls.name, {k: v for k, v in params.items() if k != "algorithm"}, allowed)
