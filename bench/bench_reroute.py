"""Benchmark: CPU to route again the bundles that wait at a node, as a ground station's
agent does at every contact start while bundles wait there for their planned pass.

    .venv/bin/python bench/bench_reroute.py [--bundles 400] [--rounds 50]

One bundle agent core (CGR, in-process, no store) holds ``--bundles`` bundles of 1 kB
for a destination reached through a contact that starts later; another neighbour's
contact goes down and up ``--rounds`` times, and each start routes every waiting bundle
again. Prints the CPU microseconds per bundle and round, with the waiting bundles routed
together (one ``route_many`` call, what the agent does) and one by one (``route`` per
bundle, as a router without ``route_many`` would be asked) — same decisions either way.
"""

from __future__ import annotations

import argparse
import time
from datetime import datetime, timezone

from netemu.dtn.bpa import AppSend, BundleAgent, ContactDown, ContactUp, CoreConfig, Forward
from netemu.dtn.eid import EID
from netemu.plan.contacts import Contact, ContactPlan, Node
from netemu.routing.cgr import CGRRouter

PLAN = ContactPlan(
    datetime(2026, 1, 1, tzinfo=timezone.utc),
    {n: Node(n, i) for i, n in ((1, "S"), (2, "X"), (3, "Y"), (4, "D"))},
    # S waits for its pass over X (from t = 1,000 s) to reach D; Y is up all along
    [Contact("S", "X", 1000, 1600, 1e8, 0.01), Contact("X", "D", 0, 86400, 1e8, 0.01),
     Contact("S", "Y", 0, 86400, 1e8, 0.01), Contact("Y", "S", 0, 86400, 1e8, 0.01)])


def run(bundles: int, rounds: int, together: bool) -> tuple[float, int]:
    """(CPU µs per bundle per round, Forward actions seen: none, they all wait)."""
    router = CGRRouter("S", PLAN)
    if not together:
        router.route_many = lambda bs, now_s, nbs: [  # type: ignore[method-assign]
            router.route(b, now_s, nbs) for b in bs]
    agent = BundleAgent(CoreConfig(EID.ipn(1, 0), "S", retry_ms=3_600_000, plan_epoch_ms=0),
                        router)
    agent.handle_many([ContactUp("Y", 1000)] + [
        AppSend("ipn:1.1", "ipn:4.1", bytes([i % 256]) * 1000, 3_600_000, 2000)
        for i in range(bundles)])
    forwards = 0
    t0 = time.process_time()
    for r in range(rounds):
        now = 10_000 + 1000 * r
        for out in (agent.handle(ContactDown("Y", now)), agent.handle(ContactUp("Y", now))):
            forwards += sum(1 for a in out if isinstance(a, Forward))
    cpu = time.process_time() - t0
    return 1e6 * cpu / (bundles * rounds), forwards


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--bundles", type=int, default=400)
    ap.add_argument("--rounds", type=int, default=50)
    args = ap.parse_args()
    for together in (False, True, False, True):
        us, fwd = run(args.bundles, args.rounds, together)
        what = "together (route_many)" if together else "one by one (route)  "
        print(f"{what}: {us:6.2f} CPU µs per waiting bundle per contact start "
              f"({args.bundles} bundles, {args.rounds} starts, {fwd} forwarded)")


if __name__ == "__main__":
    main()
