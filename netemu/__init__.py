"""netemu: a space-ground network emulator with delay-tolerant routing.

One orbital model drives three consumers: the emulated links (netemu.emulator), the
contact plan that DTN routers plan with (netemu.routing), and the reports. See
docs/architecture.md for the data flow.
"""

__version__ = "0.1.0"
