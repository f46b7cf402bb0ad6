"""The agent process: ``python -m netemu.agent.main --node N --config F`` (what
``netemu agent`` runs, without loading every netemu command first: a faster start for
many agents).

Runs in the foreground (in a host's namespace when started by the emulator) until
SIGTERM or SIGINT; logs JSON lines to stderr or the config's ``log`` file.
"""

from __future__ import annotations

import argparse
import asyncio
import sys

from netemu.agent.agent import Agent
from netemu.agent.cmdline import add_arguments, config_from_args
from netemu.agent.config import AgentConfig
from netemu.agent.memtune import tune_malloc
from netemu.dtn import bpa
from netemu.errors import NetemuError


async def run_agent(cfg: AgentConfig, *, tune_gc: bool = True) -> None:
    agent = Agent(cfg)
    if tune_gc:  # an agent process: rarer cyclic-GC passes (see bpa.tune_gc), and large
        bpa.tune_gc()  # bundles' buffers from the heap, not mmap (see memtune)
        tune_malloc()
    await agent.run()


def main_from_config(cfg: AgentConfig) -> int:
    """Run the agent until SIGTERM/SIGINT; user errors surface as NetemuError."""
    asyncio.run(run_agent(cfg))
    return 0


def main(argv: list[str] | None = None) -> int:
    """Parse ``argv`` (default: the process's arguments) and run the agent."""
    parser = argparse.ArgumentParser(prog="python -m netemu.agent.main",
                                     description="run one node's DTN bundle agent (as "
                                     "'netemu agent', without loading the other commands)")
    add_arguments(parser)
    args = parser.parse_args(sys.argv[1:] if argv is None else argv)
    try:
        return main_from_config(config_from_args(args))
    except NetemuError as e:
        print(f"netemu agent: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
