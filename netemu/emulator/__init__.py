"""The emulator: Mininet hosts whose links follow the contact plan in real time.

Public API: :class:`Emulation` (see :mod:`netemu.emulator.emulation`), :class:`LinkEvent`,
:class:`Neighbour`.
"""

from netemu.emulator.emulation import DriverStats, Emulation
from netemu.emulator.events import LinkEvent, Neighbour

__all__ = ["DriverStats", "Emulation", "LinkEvent", "Neighbour"]
