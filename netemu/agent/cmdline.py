"""The agent process's command line (``netemu agent`` and ``python -m netemu.agent.main``):
its options, and the node config they select. Light to import: the CLI registers these
options for every ``netemu`` command it runs."""

from __future__ import annotations

import argparse

from netemu.agent.config import AgentConfig


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The agent's options: the node, its config file and overrides of the config."""
    parser.add_argument("--node", required=True, help="node name (as in the scenario / plan)")
    parser.add_argument("--config", required=True, metavar="FILE",
                        help="agent config (JSON or YAML; a file with a 'nodes:' map is allowed)")
    parser.add_argument("--store", help="override the store path")
    parser.add_argument("--app-socket", help="override the app socket path")
    parser.add_argument("--log", help="override the log file ('-' = stderr)")
    parser.add_argument("--listen", action="append", metavar="HOST:PORT",
                        help="override the TCPCL listen address (repeatable)")


def config_from_args(args: argparse.Namespace) -> AgentConfig:
    """The node's config from its file, with the command line's overrides applied."""
    cfg = AgentConfig.load(args.config, node=args.node)
    if args.store:
        cfg.store = args.store
    if args.app_socket:
        cfg.app_socket = args.app_socket
    if args.log:
        cfg.log = None if args.log == "-" else args.log
    if args.listen:
        cfg.listen_tcpcl = list(args.listen)
    return cfg
