"""The ``netemu`` command.

Each subcommand lives in its own module under :mod:`netemu.commands` and exposes
``register(subparsers)``; this module finds them, so adding a command touches no other
file. A command's handler is stored as ``func`` on its parser and returns an exit status.
A command module is named after its command, so ``netemu plan ...`` imports only
:mod:`netemu.commands.plan` (the emulator, numpy and mininet load only for the commands
that need them); ``netemu --help`` imports them all.
"""

from __future__ import annotations

import argparse
import importlib
import pkgutil
import sys

from netemu import __version__
from netemu.errors import NetemuError


def build_parser(only: str | None = None) -> argparse.ArgumentParser:
    """The parser with every subcommand, or with ``only`` that one (when it exists)."""
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

    names = sorted(m.name for m in pkgutil.iter_modules(commands.__path__)
                   if not m.name.startswith("_"))
    if only in names:
        names = [only]
    for name in names:
        module = importlib.import_module(f"netemu.commands.{name}")
        module.register(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    parser = build_parser(argv[0] if argv else None)
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
