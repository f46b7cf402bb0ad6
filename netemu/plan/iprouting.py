"""A scenario's ``ip_routing:`` section: who sets the IP routes between node addresses.

    ip_routing: oracle          # default: shortest-delay routes, recomputed at each change
    ip_routing: none            # only the direct links (run your own daemons)
    ip_routing:
      plugin: mypkg.routes:compute   # your function returns the forwarding tables

The command-line override (``--ip-routing``) takes the same words, and ``plugin:M:F`` for a
plug-in. Checked here, before anything is built; the plug-in's module is imported by the
emulator (:mod:`netemu.emulator.iproute_plugin`).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

from netemu.config.fields import Fields, suggest
from netemu.errors import InputError

MODES = ("oracle", "none", "plugin")
"""What ``ip_routing:`` may name."""

_REF = re.compile(r"^[A-Za-z_][\w.]*:[A-Za-z_]\w*$")


@dataclass(frozen=True)
class IpRouting:
    """``mode`` is one of :data:`MODES`; ``plugin`` is ``module:function`` for a plug-in."""

    mode: str = "oracle"
    plugin: str | None = None

    @property
    def installs_routes(self) -> bool:
        """Whether netemu writes routes beyond the direct links."""
        return self.mode in ("oracle", "plugin")

    def describe(self) -> str:
        return f"plugin {self.plugin}" if self.mode == "plugin" else self.mode


def parse_ip_routing(section: Fields | Any, *, source: str = "scenario",
                     line: int | None = None) -> IpRouting:
    """The section (a word or a mapping) as an :class:`IpRouting`; absent means oracle."""
    f = section if isinstance(section, Fields) else Fields(section, source=source,
                                                            path="ip_routing", line=line)
    if f.is_none():
        return IpRouting()
    if isinstance(f.value, str):
        if f.value not in MODES or f.value == "plugin":
            raise f.error(f"must be oracle, none or a mapping with plugin:, got {f.value!r}"
                          f"{suggest(f.value, MODES[:2])}")
        return IpRouting(str(f.value))
    if not isinstance(f.value, dict):
        raise f.error(f"expected oracle, none or a mapping, got {type(f.value).__name__}")
    f.check_keys(("mode", "plugin"))
    mode = f.enum("mode", MODES, default="plugin" if "plugin" in f else "oracle")
    assert mode is not None
    ref = f.string("plugin")
    if mode == "plugin":
        if ref is None:
            raise f.error("mode plugin needs plugin: module:function", "mode")
        if not _REF.match(ref):
            raise f.error(f"expected module:function (e.g. mypkg.routes:compute), got {ref!r}",
                          "plugin")
    elif ref is not None:
        raise f.error(f"plugin: is for mode plugin, not {mode}", "plugin")
    return IpRouting(mode, ref)


def parse_ip_routing_option(value: str, *, option: str = "--ip-routing") -> IpRouting:
    """The command-line override: ``oracle``, ``none`` or ``plugin:module:function``."""
    if value.startswith("plugin:"):
        ref = value[len("plugin:"):]
        if not _REF.match(ref):
            raise InputError(f"expected plugin:module:function, got {value!r}", field=option)
        return IpRouting("plugin", ref)
    if value in ("oracle", "none"):
        return IpRouting(value)
    raise InputError(f"must be oracle, none or plugin:module:function, got {value!r}"
                     f"{suggest(value, MODES[:2])}", field=option)
