"""PRoPHET (RFC 6693): forward to nodes more likely to meet the destination.

Each node keeps a delivery predictability P(self, X) for every node X it knows:

- Encounter (RFC 6693 §2.1.2, Eq. 1), when a contact with B starts:
  ``P(A,B) = P(A,B)_old + (1 - delta - P(A,B)_old) * P_encounter``, with
  ``P_encounter = P_encounter_max * intvl / I_typ`` when the previous encounter with B was
  ``intvl < I_typ`` ago, else ``P_encounter_max``; a node met for the first time gets
  ``P_encounter_first``.
- Aging (Eq. 2): ``P = P_old * gamma^K``, K the number of whole time units elapsed;
  values that fall below ``P_first_threshold`` are forgotten.
- Transitivity (Eq. 3), when B's predictabilities arrive (metadata at contact start):
  ``P(A,C) = max(P(A,C)_old, P(A,B) * P(B,C) * beta)``.

Forwarding strategy GRTR (RFC 6693 §3.6): a copy goes to neighbour B when
``P(B,D) > P(A,D)``, and always to D itself; the node keeps its copy.

Defaults are the RFC's: P_encounter_max 0.7, P_encounter_first 0.5, P_first_threshold
0.1, delta 0.01, beta 0.9, gamma 0.999 per time unit. The RFC leaves the time unit and
I_typ to the deployment: here ``time_unit_s`` = 30 s and ``typical_interval_s`` = 300 s
(params), so with gamma 0.999 an unrefreshed predictability halves in about 5.8 hours.
"""

from __future__ import annotations

import math

from netemu.plan.contacts import ContactPlan
from netemu.routing.base import BundleInfo, Decision, Hop, Metadata, Router
from netemu.routing.params import check_params, number
from netemu.routing.summary import SummaryVectors, expired

DEFAULTS = {
    "p_encounter_max": 0.7,
    "p_encounter_first": 0.5,
    "p_first_threshold": 0.1,
    "delta": 0.01,
    "beta": 0.9,
    "gamma": 0.999,
    "time_unit_s": 30.0,
    "typical_interval_s": 300.0,
}


class ProphetRouter(Router):
    """PRoPHET with the GRTR forwarding strategy."""

    name = "prophet"
    PARAMS = {k: f"default {v:g}" for k, v in DEFAULTS.items()}

    def __init__(self, node: str, plan: ContactPlan, **params: object) -> None:
        super().__init__(node, plan, **params)
        check_params(self.name, params, self.PARAMS)
        cfg = {}
        for k, v in DEFAULTS.items():
            if k.endswith("_s"):
                cfg[k] = number(self.name, params, k, v, minimum=1e-9)
            else:
                cfg[k] = number(self.name, params, k, v, minimum=0.0, maximum=1.0)
        self.cfg = cfg
        self.p: dict[str, float] = {}
        self.peer_p: dict[str, dict[str, float]] = {}
        self._last_encounter: dict[str, float] = {}
        self._aged_at: float | None = None
        self.vectors = SummaryVectors()

    # --- the three equations ---------------------------------------------------------

    def age(self, now_s: float) -> None:
        """Eq. 2: multiply every predictability by gamma per whole elapsed time unit."""
        if self._aged_at is None:
            self._aged_at = now_s
            return
        unit = self.cfg["time_unit_s"]
        k = math.floor((now_s - self._aged_at) / unit)
        if k <= 0:
            return
        self._aged_at += k * unit
        f = self.cfg["gamma"] ** k
        thr = self.cfg["p_first_threshold"]
        for x in list(self.p):
            v = self.p[x] * f
            if v < thr:
                del self.p[x]
            else:
                self.p[x] = v

    def encounter(self, b: str, now_s: float) -> float:
        """Eq. 1 for a contact with ``b`` starting at ``now_s``; returns P(self, b)."""
        self.age(now_s)
        c = self.cfg
        old = self.p.get(b)
        last = self._last_encounter.get(b)
        self._last_encounter[b] = now_s
        if old is None:
            new = c["p_encounter_first"]
        else:
            intvl = now_s - last if last is not None else math.inf
            p_enc = c["p_encounter_max"]
            if intvl < c["typical_interval_s"]:
                p_enc *= intvl / c["typical_interval_s"]
            new = old + (1.0 - c["delta"] - old) * p_enc
        self.p[b] = new
        return new

    def transitive(self, b: str, table: dict[str, float], now_s: float) -> None:
        """Eq. 3 with neighbour ``b``'s predictabilities."""
        self.age(now_s)
        p_ab = self.p.get(b, 0.0)
        beta = self.cfg["beta"]
        for x, p_bx in table.items():
            if x in (self.node, b):
                continue
            v = p_ab * float(p_bx) * beta
            if v > self.p.get(x, 0.0):
                self.p[x] = v

    def predictability(self, x: str, now_s: float | None = None) -> float:
        if now_s is not None:
            self.age(now_s)
        return 1.0 if x == self.node else self.p.get(x, 0.0)

    # --- router interface --------------------------------------------------------------

    def contact_started(self, neighbour: str, now_s: float) -> None:
        self.encounter(neighbour, now_s)

    def metadata_for(self, neighbour: str, now_s: float) -> Metadata | None:
        self.age(now_s)
        return {"p": dict(self.p), **self.vectors.vector(now_s)}

    def metadata_from(self, neighbour: str, metadata: Metadata, now_s: float) -> None:
        table = metadata.get("p")
        if isinstance(table, dict):
            clean = {str(k): float(v) for k, v in table.items() if isinstance(v, (int, float))}
            self.peer_p[neighbour] = clean
            self.transitive(neighbour, clean, now_s)
        self.vectors.learn(neighbour, metadata)

    def route(self, bundle: BundleInfo, now_s: float, neighbours: frozenset[str]) -> Decision:
        if bundle.destination == self.node:
            return Decision(reason="this node is the destination")
        if expired(bundle, now_s):
            self.vectors.drop(bundle.bundle_id)
            return Decision(reason="bundle expired")
        self.vectors.hold(bundle)
        bid, dest = bundle.bundle_id, bundle.destination
        if bundle.previous_hop:
            self.vectors.mark(bundle.previous_hop, bid)
        mine = self.predictability(dest, now_s)
        hops = []
        for nb in sorted(neighbours):
            if nb in (self.node, bundle.previous_hop) or self.vectors.has(nb, bid):
                continue
            theirs = 1.0 if nb == dest else self.peer_p.get(nb, {}).get(dest, 0.0)
            if theirs > mine:
                hops.append(Hop(nb))
        if not hops:
            return Decision(keep=True, reason=f"no neighbour beats P({self.node},{dest})={mine:.3f}")
        return Decision(hops=tuple(hops), keep=True,
                        reason=f"GRTR: {len(hops)} neighbour(s) with P(·,{dest}) > {mine:.3f}")

    def sent(self, bundle: BundleInfo, neighbour: str, now_s: float) -> None:
        self.vectors.mark(neighbour, bundle.bundle_id)

    def delivered(self, bundle: BundleInfo, now_s: float) -> None:
        self.vectors.drop(bundle.bundle_id)
