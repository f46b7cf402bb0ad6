"""``netemu clean``: remove what crashed runs left (namespaces, relay and host processes,
shared memory, registry entries), like ``mn -c``.

Runs whose owner process is still alive are left alone (other people's emulations on the
same machine), unless named with ``--run`` or ``--all`` is given. ``--cluster ADDRESS``
does the same on every host of a Ray cluster (docs/cluster.md).
"""

from __future__ import annotations

import argparse

from netemu.emulator.registry import clean_runs
from netemu.runtime.rundir import check_run_name


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser("clean", help="remove what crashed emulation runs left behind",
                              description=__doc__)
    p.add_argument("--quiet", "-q", action="store_true", help="print nothing")
    p.add_argument("--run", action="append", default=[], metavar="NAME",
                   help="clean this run even if its owner is alive (repeatable)")
    p.add_argument("--all", action="store_true", help="clean every run, live ones included")
    p.add_argument("--cluster", metavar="ADDRESS", help="clean every host of this Ray cluster "
                   "(auto: the one this machine is a node of)")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    for name in args.run:  # a name that is no run name could reach outside the registry
        check_run_name(name)
    if args.cluster:
        from netemu.run.cluster import Cluster

        with Cluster(args.cluster) as cl:
            per_host = cl.clean(args.run, everything=args.all)
        for host, lines in per_host.items():
            for line in lines or ["nothing to clean"]:
                if not args.quiet:
                    print(f"{host}: {line}")
        return 0
    lines = clean_runs(args.run, everything=args.all)
    if not args.quiet:
        for line in lines:
            print(line)
        if not any("removed" in ln for ln in lines):
            print("nothing to clean")
    return 0
