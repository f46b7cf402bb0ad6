"""The link shaper interface: what the emulation driver asks of a shaper backend.

A shaper applies, per link direction (frames entering at endpoint ``src`` leave at
``dst``), a delay, a rate and a loss probability, and can disconnect a direction.
Updates are grouped: ``begin()``, any number of ``set_dir``/``clear_dir``, ``commit()``.

The backends: :class:`netemu.emulator.relayshaper.RelayShaper` (userspace relay, any
kernel) and :class:`netemu.emulator.netem.NetemShaper` (tc netem, needs sch_netem);
:func:`netemu.emulator.shapers.make_shaper` picks one.
"""

from __future__ import annotations

from abc import ABC, abstractmethod

from netemu.emulator.network import Network
from netemu.errors import NetemuError

# frames, bytes, lost, queue_drops sent from one endpoint
EndpointCounters = tuple[float, float, float, float]


class ShaperError(NetemuError):
    pass


class Shaper(ABC):
    name = "base"

    def __init__(self, net: Network) -> None:
        self.net = net

    @abstractmethod
    def start(self) -> None: ...

    def begin(self) -> None:  # noqa: B027 - optional hook
        pass

    @abstractmethod
    def set_dir(self, src: int, dst: int, delay_s: float, rate_bps: float, loss: float) -> None:
        ...

    @abstractmethod
    def clear_dir(self, src: int) -> None: ...

    def commit(self) -> None:  # noqa: B027 - optional hook
        pass

    def counters(self) -> dict[str, float]:
        return {}

    def endpoint_counters(self, endpoint: int) -> EndpointCounters | None:
        """Frames, bytes, lost and queue drops sent from ``endpoint``; None where this
        backend keeps no per-endpoint counters (netem: the kernel's qdisc statistics)."""
        return None

    def pids(self) -> list[int]:
        return []

    @abstractmethod
    def stop(self) -> None: ...
