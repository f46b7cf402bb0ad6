"""The ``--view`` options that ``netemu run``, ``demo`` and ``test`` share, and the view
of a bare emulation (``netemu run``: no broker of its own, so the view brings one)."""

from __future__ import annotations

import argparse
import contextlib
from pathlib import Path
from typing import Any

from netemu.run.broker import Broker
from netemu.run.pause import RunPause
from netemu.run.runner import link_message, shaped_message
from netemu.run.view.launch import live_view
from netemu.run.view.server import DEFAULT_HOST, ViewServer
from netemu.runtime.telemetry import SyncPublisher


def add_view_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--view", action="store_true",
                   help="serve a live view of the run in the browser (the URL is printed)")
    p.add_argument("--view-port", type=port_number, default=0, metavar="PORT",
                   help="the view's port (default: any free port)")
    p.add_argument("--view-host", default=DEFAULT_HOST, metavar="ADDR",
                   help=f"the address the view listens on (default {DEFAULT_HOST}: this "
                   "machine only; another address makes the run visible to others)")


def port_number(text: str) -> int:
    if not text.isdigit() or not 0 <= int(text) <= 65535:
        raise argparse.ArgumentTypeError(f"not a port number (0-65535): {text!r}")
    return int(text)


class LiveViewForEmulation:
    """``netemu run --view``: a broker for the run, the emulator's link events published
    on it (the same ``link/<a>/<b>`` messages as ``netemu demo``), and the view."""

    def __init__(self, emu: Any, scenario: Any, args: argparse.Namespace) -> None:
        self.emu = emu
        self.scenario = scenario
        self.args = args
        self.broker: Broker | None = None
        self.publisher: SyncPublisher | None = None
        self.server: ViewServer | None = None
        self._unsubscribe: Any = None
        self.pauser: RunPause | None = None
        self._unsubscribe_scale: Any = None

    def start(self) -> str:
        emu = self.emu
        self.broker = Broker(emu.run)
        access = self.broker.start()
        self.publisher = SyncPublisher(access, client_id=f"netemu-emulator-{emu.run}",
                                       clock=emu.now_s)
        pub = self.publisher
        self._unsubscribe = emu.subscribe(lambda ev: pub.publish(*link_message(ev)))
        self.server = live_view(access, emu.plan, self.scenario, lambda: emu.clock,
                                title=f"{emu.run}", host=self.args.view_host,
                                port=self.args.view_port)
        return self.server.start()

    def clock_started(self) -> None:
        """After ``emu.start()``: the page may pause the run and change its time scale
        (through the run's clock file, as ``netemu demo``/``test``); a pause stops what
        runs in the hosts for the scenario (``Emulation.hosted_pids``: what ``--cli`` and
        ``emu.popen`` started)."""
        if self.broker is None or self.broker.access is None or self.server is None:
            return
        pub = self.publisher
        pauser = RunPause(Path(self.broker.access.socket_path).parent / "clock",
                          self.emu.clock, processes=self.emu.hosted_pids,
                          publish=(lambda p: pub.publish("clock", p)) if pub else None)
        if pub is not None:
            self._unsubscribe_scale = self.emu.subscribe_scale(
                lambda t_s, x, n: pub.publish("clock", shaped_message(t_s, x, n)))
        self.emu.clock = pauser.clock
        pauser.enabled = True
        self.pauser = pauser
        self.server.timeline.pause_control = pauser

    def stop(self) -> None:
        for step in (getattr(self.pauser, "close", None), self._unsubscribe,
                     self._unsubscribe_scale, getattr(self.server, "stop", None),
                     getattr(self.publisher, "close", None), getattr(self.broker, "stop", None)):
            if step is not None:
                with contextlib.suppress(Exception):
                    step()
