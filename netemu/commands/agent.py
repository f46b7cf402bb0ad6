"""``netemu agent --node NAME --config FILE``: run one node's bundle agent.

Runs in the foreground (in a host's namespace when started by the emulator) until
SIGTERM or SIGINT; logs JSON lines to stderr or the config's ``log`` file.
"""

from __future__ import annotations

import argparse

from netemu.agent.cmdline import add_arguments, config_from_args


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser("agent", help="run a node's DTN bundle agent",
                              description=__doc__.split("\n\n")[0])
    add_arguments(p)
    p.set_defaults(func=_cmd_agent)


def _cmd_agent(args: argparse.Namespace) -> int:
    # Imported here, not at the top: the agent stack takes ~0.25 s to import, which
    # every other netemu command would pay (the CLI registers all commands).
    from netemu.agent.main import main_from_config

    return main_from_config(config_from_args(args))
