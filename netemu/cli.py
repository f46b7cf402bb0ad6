"""The ``netemu`` command.

Each subcommand lives in its own module under :mod:`netemu.commands` and exposes
``register(subparsers)``; this module finds them, so adding a command touches no other
file. A command's handler is stored as ``func`` on its parser and returns an exit status.
"""

from __future__ import annotations

import argparse
import importlib
import pkgutil
import sys

from netemu import __version__
from netemu.errors import NetemuError


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="netemu",
        description=(
            "Space-ground network emulator with delay-tolerant routing. Links between "
            "Mininet hosts follow orbital geometry in real time; a BPv7 agent with contact "
            "graph routing runs on every node."
        ),
    )
    parser.add_argument("--version", action="version", version=f"netemu {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    import netemu.commands as commands

    for info in sorted(pkgutil.iter_modules(commands.__path__), key=lambda m: m.name):
        if info.name.startswith("_"):
            continue
        module = importlib.import_module(f"netemu.commands.{info.name}")
        module.register(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    try:
        return int(args.func(args) or 0)
    except NetemuError as e:
        print(f"netemu: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("netemu: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
