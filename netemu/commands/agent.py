"""``netemu agent --node NAME --config FILE``: run one node's bundle agent.

Runs in the foreground (in a host's namespace when started by the emulator) until
SIGTERM or SIGINT; logs JSON lines to stderr or the config's ``log`` file.
"""

from __future__ import annotations

import argparse


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser("agent", help="run a node's DTN bundle agent",
                              description=__doc__.split("\n\n")[0])
    p.add_argument("--node", required=True, help="node name (as in the scenario / plan)")
    p.add_argument("--config", required=True, metavar="FILE",
                   help="agent config (JSON or YAML; a file with a 'nodes:' map is allowed)")
    p.add_argument("--store", help="override the store path")
    p.add_argument("--app-socket", help="override the app socket path")
    p.add_argument("--log", help="override the log file ('-' = stderr)")
    p.add_argument("--listen", action="append", metavar="HOST:PORT",
                   help="override the TCPCL listen address (repeatable)")
    p.set_defaults(func=_cmd_agent)


def _cmd_agent(args: argparse.Namespace) -> int:
    from netemu.agent.agent import main_from_config
    from netemu.agent.config import AgentConfig

    cfg = AgentConfig.load(args.config, node=args.node)
    if args.store:
        cfg.store = args.store
    if args.app_socket:
        cfg.app_socket = args.app_socket
    if args.log:
        cfg.log = None if args.log == "-" else args.log
    if args.listen:
        cfg.listen_tcpcl = list(args.listen)
    return main_from_config(cfg)
