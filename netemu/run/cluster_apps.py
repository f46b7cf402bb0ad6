"""A host's share of a cluster run's apps (docs/cluster.md).

An app runs in its node's namespace, which reaches nothing of the host's own network: it
cannot reach the coordinator's broker by TCP, and the coordinator's Unix socket is on
another machine. So each host with apps runs a broker of its own (its socket reachable
from every node namespace, as on one machine), bridged to the coordinator's, and starts
its nodes' app instances with the same :class:`~netemu.run.apps.AppRunner` and the same
environment as a local run: the run's clock, the node's agent socket, the host's broker.
Their output folders go back to the coordinator with the agents' files.
"""

from __future__ import annotations

import contextlib
from pathlib import Path
from typing import Any

from netemu.emulator.netns import ns_path
from netemu.run.apps import AppInstance, AppRunner
from netemu.run.broker import Broker
from netemu.runtime.env import HostEnv
from netemu.runtime.rundir import RunDir
from netemu.runtime.telemetry import BrokerAccess


class HostApps:
    """The app instances of one cluster host's nodes, and the host's bridged broker."""

    def __init__(self, emu: Any, directory: Path, coordinator: BrokerAccess,
                 stop_grace_s: float = 5.0) -> None:
        self.emu = emu
        self.rd = RunDir(directory)
        self.coordinator = coordinator
        self.stop_grace_s = stop_grace_s
        self.broker: Broker | None = None
        self.runner: AppRunner | None = None

    def start(self, instances: list[AppInstance], sockets: dict[str, str], *,
              window_start_s: float, window_end_s: float) -> None:
        """The host's broker (bridged), then every instance in its node's namespace
        (container images built here first, before the clock matters)."""
        emu, rd = self.emu, self.rd
        self.broker = Broker(self.coordinator.run, log_path=rd.logs_dir / "mosquitto.log",
                             state_dir=emu.registry.path / "mqtt", bridge_to=self.coordinator)
        local = self.broker.start()
        if self.broker.pid is not None:  # so that `netemu clean` stops it after a crash too
            emu.registry.add_pid(self.broker.pid, "mosquitto")
        self.runner = AppRunner(emu.run, rd.path, stop_grace_s=self.stop_grace_s)
        if any(i.mode == "container" for i in instances):
            self.runner.prepare_images(instances)
        for inst in instances:
            env = HostEnv(run=local.run, mqtt=local, clock=emu.clock,
                          window_start_s=window_start_s, window_end_s=window_end_s,
                          node=inst.node, node_addr=emu.node_addr(inst.node), run_dir=rd.path,
                          dtn_socket=sockets.get(inst.node)).to_env()
            self.runner.start(inst, ns_path(emu.net.host_ns[inst.node]), env)

    def stop(self) -> None:
        """Every instance (SIGTERM, then SIGKILL after the grace), then the broker, once
        it has passed on what the apps published last."""
        if self.runner is not None:
            with contextlib.suppress(Exception):
                self.runner.close()
            self.runner = None
        if self.broker is not None:
            with contextlib.suppress(Exception):
                self.broker.stop()
            self.broker = None


__all__ = ["HostApps"]
