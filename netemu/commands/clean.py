"""``netemu clean``: remove what crashed runs left (namespaces, relay and host processes,
shared memory, registry entries), like ``mn -c``.

Runs whose owner process is still alive are left alone (other people's emulations on the
same machine), unless named with ``--run`` or ``--all`` is given.
"""

from __future__ import annotations

import argparse

from netemu.emulator.registry import RUN_ROOT, RunInfo, clean_run, list_runs, run_namespaces
from netemu.runtime.rundir import check_run_name


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser("clean", help="remove what crashed emulation runs left behind",
                              description=__doc__)
    p.add_argument("--quiet", "-q", action="store_true", help="print nothing")
    p.add_argument("--run", action="append", default=[], metavar="NAME",
                   help="clean this run even if its owner is alive (repeatable)")
    p.add_argument("--all", action="store_true", help="clean every run, live ones included")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    for name in args.run:  # a name that is no run name could reach outside the registry
        check_run_name(name)
    cleaned = 0
    runs = list_runs()
    known = {i.run for i in runs}
    for name in args.run:  # named runs whose registry entry is gone: namespaces may remain
        if name not in known and run_namespaces(name):
            runs.append(RunInfo(name, RUN_ROOT / name, {"run": name}))
    for info in runs:
        forced = args.all or info.run in args.run
        if info.owner_alive and not forced:
            if not args.quiet:
                print(f"run {info.run}: live (pid {info.meta.get('pid')}), left alone")
            continue
        res = clean_run(info)
        cleaned += 1
        if not args.quiet:
            print(f"run {info.run}: killed {res['processes']} processes, removed "
                  f"{res['namespaces']} namespaces")
    if not cleaned and not args.quiet:
        print("nothing to clean")
    return 0
