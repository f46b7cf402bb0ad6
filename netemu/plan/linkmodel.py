"""Link models: what a link carries once the geometry says it is up.

Two kinds, chosen per link kind (``isl``, ``gsl``) in a scenario's ``links`` section:

- a fixed rate (``rate_bps``), the usual choice for laser ISLs;
- a link budget (``budget``: carrier frequency, EIRP, receiver G/T, bandwidth, other
  losses), turned into a rate at the link's range and elevation. The carrier-to-noise
  ratio in the bandwidth B is
  ``SNR_dB = EIRP_dBW + G/T_dBK − FSPL_dB(range, f) − A_atm_dB(elevation) − other_losses_dB
  + 228.6 − 10·log10(B)`` (228.6 dB = −10·log10(Boltzmann's constant)); the rate is then
  either Shannon's ``efficiency × B × log2(1 + SNR)`` (``modcod: shannon``, the default)
  or the best DVB-S2 MODCOD whose Es/N0 threshold the link meets, times the symbol rate
  ``B / (1 + rolloff)`` (``modcod: dvb-s2``); no MODCOD closing means the link carries
  nothing (rate 0).

The atmospheric loss ``A_atm`` of a ground link is ``zenith_atmos_db`` scaled by the
slant path through a spherical shell of height ``ATMOS_HEIGHT_KM`` (the cosecant law,
bounded at the horizon). A ground contact's rate is sampled along the pass (see
netemu/plan/schedule.py); a fixed-rate link or an ISL with a budget is planned at one rate,
that of its longest range.

Both carry a frame loss probability ``loss`` in [0, 1].
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

C_M_S = 299_792_458.0
BOLTZMANN_DBW_PER_K_HZ = -228.5991672  # 10·log10(1.380649e-23)
EARTH_RADIUS_KM = 6371.0
ATMOS_HEIGHT_KM = 6.0
"""Equivalent height of the attenuating atmosphere (about the oxygen scale height of
ITU-R P.676): the slant path is this shell's chord, 1× at zenith, about 46× at the
horizon."""

MODCODS = ("shannon", "dvb-s2")


@dataclass(frozen=True)
class Modcod:
    """One modulation and coding: its name, the ideal Es/N0 it needs (dB) and the
    information bits it carries per symbol."""

    name: str
    esn0_db: float
    bits_per_symbol: float


DVB_S2_MODCODS: tuple[Modcod, ...] = (
    # ETSI EN 302 307-1 V1.4.1 (2014-11), table 13: spectral efficiency (bit/symbol, normal
    # FECFRAME of 64 800 bits, no pilots) and ideal Es/N0 for a packet error rate of 1e-7
    # on an AWGN channel.
    Modcod("QPSK 1/4", -2.35, 0.490243),
    Modcod("QPSK 1/3", -1.24, 0.656448),
    Modcod("QPSK 2/5", -0.30, 0.789412),
    Modcod("QPSK 1/2", 1.00, 0.988858),
    Modcod("QPSK 3/5", 2.23, 1.188304),
    Modcod("QPSK 2/3", 3.10, 1.322253),
    Modcod("QPSK 3/4", 4.03, 1.487473),
    Modcod("QPSK 4/5", 4.68, 1.587196),
    Modcod("QPSK 5/6", 5.18, 1.654663),
    Modcod("QPSK 8/9", 6.20, 1.766451),
    Modcod("QPSK 9/10", 6.42, 1.788612),
    Modcod("8PSK 3/5", 5.50, 1.779991),
    Modcod("8PSK 2/3", 6.62, 1.980636),
    Modcod("8PSK 3/4", 7.91, 2.228124),
    Modcod("8PSK 5/6", 9.35, 2.478562),
    Modcod("8PSK 8/9", 10.69, 2.646012),
    Modcod("8PSK 9/10", 10.98, 2.679207),
    Modcod("16APSK 2/3", 8.97, 2.637201),
    Modcod("16APSK 3/4", 10.21, 2.966728),
    Modcod("16APSK 4/5", 11.03, 3.165623),
    Modcod("16APSK 5/6", 11.61, 3.300184),
    Modcod("16APSK 8/9", 12.89, 3.523143),
    Modcod("16APSK 9/10", 13.13, 3.567342),
    Modcod("32APSK 3/4", 12.73, 3.703295),
    Modcod("32APSK 4/5", 13.64, 3.951571),
    Modcod("32APSK 5/6", 14.28, 4.119540),
    Modcod("32APSK 8/9", 15.69, 4.397854),
    Modcod("32APSK 9/10", 16.05, 4.453027),
)


def _best_modcods() -> tuple[np.ndarray, np.ndarray, tuple[str, ...]]:
    """The DVB-S2 table as a step function: thresholds ascending, each with the highest
    efficiency any MODCOD at or below it reaches (the table is not monotonic)."""
    rows = sorted(DVB_S2_MODCODS, key=lambda m: m.esn0_db)
    thr, eff, names = [], [], []
    best = 0.0
    for m in rows:
        if m.bits_per_symbol > best:
            best = m.bits_per_symbol
            thr.append(m.esn0_db)
            eff.append(m.bits_per_symbol)
            names.append(m.name)
    return np.array(thr), np.array(eff), tuple(names)


_S2_THR_DB, _S2_EFF, _S2_NAMES = _best_modcods()


def atmos_path_factor(sin_el: np.ndarray) -> np.ndarray:
    """Slant path through the atmosphere shell relative to the zenith path."""
    r, h = EARTH_RADIUS_KM, ATMOS_HEIGHT_KM
    s = np.clip(sin_el, 0.0, 1.0)
    out: np.ndarray = (np.sqrt((r + h) ** 2 - (r * r) * (1.0 - s * s)) - r * s) / h
    return out


@dataclass(frozen=True)
class LinkBudget:
    """A radio or optical link budget (decibel quantities, SI units)."""

    frequency_hz: float
    eirp_dbw: float
    gt_dbk: float
    bandwidth_hz: float
    other_losses_db: float = 0.0
    efficiency: float = 1.0
    """Fraction of the Shannon capacity that the modem achieves (0, 1] (Shannon only)."""
    max_rate_bps: float | None = None
    """Cap (the modem's top rate), if any."""
    modcod: str = "shannon"
    """``shannon`` or ``dvb-s2`` (the MODCOD table above)."""
    rolloff: float = 0.2
    """DVB-S2 roll-off: symbol rate = bandwidth / (1 + rolloff)."""
    zenith_atmos_db: float = 0.0
    """Atmospheric attenuation at zenith (gases and clouds), dB; ground links only."""

    def fspl_db(self, range_km: float) -> float:
        """Free-space path loss at ``range_km`` (dB)."""
        d_m = max(range_km, 1e-3) * 1000.0
        return 20.0 * math.log10(4.0 * math.pi * d_m * self.frequency_hz / C_M_S)

    def snr_db(self, range_km: float, sin_el: float = 1.0) -> float:
        """Carrier-to-noise ratio in the bandwidth at ``range_km`` and elevation sine
        ``sin_el`` (1: zenith, no extra atmosphere)."""
        return float(self.snr_db_array(np.array([range_km]), np.array([sin_el]))[0])

    def atmos_db(self, sin_el: np.ndarray) -> np.ndarray:
        out: np.ndarray = self.zenith_atmos_db * atmos_path_factor(sin_el)
        return out

    def snr_db_array(self, range_km: np.ndarray, sin_el: np.ndarray) -> np.ndarray:
        d_m = np.maximum(range_km, 1e-3) * 1000.0
        fspl = 20.0 * np.log10(4.0 * math.pi * d_m * self.frequency_hz / C_M_S)
        out: np.ndarray = (self.eirp_dbw + self.gt_dbk - fspl - self.atmos_db(sin_el)
                           - self.other_losses_db - BOLTZMANN_DBW_PER_K_HZ
                           - 10.0 * math.log10(self.bandwidth_hz))
        return out

    def rates_bps(self, range_km: np.ndarray, sin_el: np.ndarray,
                  extra_loss_db: np.ndarray | float = 0.0) -> np.ndarray:
        """Rates (bit/s) at ranges ``range_km`` and elevation sines ``sin_el``, less
        ``extra_loss_db`` of further attenuation."""
        snr_db = self.snr_db_array(range_km, sin_el) - extra_loss_db
        rate: np.ndarray
        if self.modcod == "dvb-s2":
            esn0_db = snr_db + 10.0 * math.log10(1.0 + self.rolloff)
            k = np.searchsorted(_S2_THR_DB, esn0_db, side="right") - 1
            eff = np.where(k >= 0, _S2_EFF[np.maximum(k, 0)], 0.0)
            rate = eff * self.bandwidth_hz / (1.0 + self.rolloff)
        else:
            rate = self.efficiency * self.bandwidth_hz * np.log2(1.0 + 10.0 ** (snr_db / 10.0))
        if self.max_rate_bps is not None:
            rate = np.minimum(rate, self.max_rate_bps)
        return rate

    def rate_bps(self, range_km: float, sin_el: float = 1.0) -> float:
        """Rate at ``range_km`` (and elevation sine ``sin_el``), capped."""
        return float(self.rates_bps(np.array([range_km]), np.array([sin_el]))[0])

    def modcod_name(self, range_km: float, sin_el: float = 1.0) -> str | None:
        """The DVB-S2 MODCOD in use at ``range_km`` and ``sin_el`` (None: none closes)."""
        esn0_db = self.snr_db(range_km, sin_el) + 10.0 * math.log10(1.0 + self.rolloff)
        k = int(np.searchsorted(_S2_THR_DB, esn0_db, side="right")) - 1
        return _S2_NAMES[k] if k >= 0 else None


@dataclass(frozen=True)
class LinkModel:
    """Rate and loss of one link kind: a fixed ``rate_bps`` or a :class:`LinkBudget`."""

    rate_bps: float | None = None
    budget: LinkBudget | None = None
    loss: float = 0.0

    def rate_at(self, range_km: float) -> float:
        """Rate (bit/s) of a link at ``range_km`` (no atmosphere)."""
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
