"""``netemu view RUN_DIR``: a finished run played back in the browser, with a time slider.

The page is the live view's (``--view`` on ``netemu run``/``demo``/``test``), fed from the
run's record instead of its broker: links, counters and app events from events.jsonl,
positions from scenario.yaml, contacts from plan.json.
"""

from __future__ import annotations

import argparse
import signal
import threading
from pathlib import Path

from netemu.commands._args import number
from netemu.commands._view import port_number
from netemu.run.view.server import DEFAULT_HOST


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser("view", help="replay a finished run in the browser (time slider)",
                              description=__doc__.split("\n\n")[1] if __doc__ else None)
    p.add_argument("run", type=Path, help="run directory (e.g. runs/three-body-12-…)")
    p.add_argument("--port", type=port_number, default=0, help="port (default: any free port)")
    p.add_argument("--host", default=DEFAULT_HOST, metavar="ADDR",
                   help=f"address to listen on (default {DEFAULT_HOST}: this machine only)")
    p.add_argument("--speed", type=number(lo=0, lo_open=True),
                   help="scenario seconds per wall second (default: the run's time scale)")
    p.set_defaults(func=handler)


def handler(args: argparse.Namespace) -> int:
    from netemu.run.view.launch import replay_view

    server = replay_view(args.run, host=args.host, port=args.port, speed=args.speed)
    print(f"netemu view: {args.run} at {server.start()} (Ctrl-C to stop)", flush=True)
    done = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_a: done.set())
    try:
        done.wait()
    except KeyboardInterrupt:
        pass
    finally:
        server.stop()
    return 0
