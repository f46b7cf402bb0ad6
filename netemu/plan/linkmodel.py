"""Link models: what a link carries once the geometry says it is up.

Two kinds, chosen per link kind (``isl``, ``gsl``) in a scenario's ``links`` section:

- a fixed rate (``rate_bps``), the usual choice for laser ISLs;
- a link budget (``budget``: carrier frequency, EIRP, receiver G/T, bandwidth, other
  losses), turned into a rate with Shannon's capacity at the link's range:
  ``rate = efficiency × B × log2(1 + SNR)``, with
  ``SNR_dB = EIRP_dBW + G/T_dBK − FSPL_dB(range, f) − other_losses_dB + 228.6 − 10·log10(B)``
  (228.6 dB = −10·log10(Boltzmann's constant)). A contact is planned at the rate of its
  longest range (the worst point of the pass), so the volume a router plans with is
  always deliverable.

Both carry a frame loss probability ``loss`` in [0, 1].
"""

from __future__ import annotations

import math
from dataclasses import dataclass

C_M_S = 299_792_458.0
BOLTZMANN_DBW_PER_K_HZ = -228.5991672  # 10·log10(1.380649e-23)


@dataclass(frozen=True)
class LinkBudget:
    """A radio or optical link budget (decibel quantities, SI units)."""

    frequency_hz: float
    eirp_dbw: float
    gt_dbk: float
    bandwidth_hz: float
    other_losses_db: float = 0.0
    efficiency: float = 1.0
    """Fraction of the Shannon capacity that the modem achieves (0, 1]."""
    max_rate_bps: float | None = None
    """Cap (the modem's top rate), if any."""

    def fspl_db(self, range_km: float) -> float:
        """Free-space path loss at ``range_km`` (dB)."""
        d_m = max(range_km, 1e-3) * 1000.0
        return 20.0 * math.log10(4.0 * math.pi * d_m * self.frequency_hz / C_M_S)

    def snr_db(self, range_km: float) -> float:
        return (
            self.eirp_dbw
            + self.gt_dbk
            - self.fspl_db(range_km)
            - self.other_losses_db
            - BOLTZMANN_DBW_PER_K_HZ
            - 10.0 * math.log10(self.bandwidth_hz)
        )

    def rate_bps(self, range_km: float) -> float:
        """Shannon rate at ``range_km`` scaled by ``efficiency``, capped."""
        snr = 10.0 ** (self.snr_db(range_km) / 10.0)
        rate = self.efficiency * self.bandwidth_hz * math.log2(1.0 + snr)
        if self.max_rate_bps is not None:
            rate = min(rate, self.max_rate_bps)
        return rate


@dataclass(frozen=True)
class LinkModel:
    """Rate and loss of one link kind: a fixed ``rate_bps`` or a :class:`LinkBudget`."""

    rate_bps: float | None = None
    budget: LinkBudget | None = None
    loss: float = 0.0

    def rate_at(self, range_km: float) -> float:
        """Rate (bit/s) of a link at ``range_km``."""
        if self.budget is not None:
            return self.budget.rate_bps(range_km)
        assert self.rate_bps is not None
        return self.rate_bps

    def contact_rate(self, max_range_km: float) -> float:
        """Rate to plan a contact with: the rate at its longest range."""
        return self.rate_at(max_range_km)


DEFAULT_LINK_MODELS: dict[str, LinkModel] = {
    # 100 Gbit/s laser ISLs (the Three-Body constellation's reported figure).
    "isl": LinkModel(rate_bps=100e9),
    # A modest X-band downlink.
    "gsl": LinkModel(rate_bps=1e9),
}
