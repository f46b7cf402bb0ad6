"""Mininet host objects on top of the namespaces netemu built in bulk.

``EmuHost`` is a Mininet ``Host`` whose shell is started inside the existing namespace
``<run>-<node>`` (``ip netns exec``) instead of creating a new one, so ``host.cmd()``,
``host.popen()``, ``host.sendCmd()`` and Mininet's CLI work as Mininet users expect. Its
``IP()`` is the node address (on loopback, reachable over any link), which the CLI
substitutes for host names: ``sat3 ping gs-kashi`` pings gs-kashi's node address.

Shells are started lazily (a shell per host costs a bash process): ``Emulation.host(name)``
starts one on first use; the CLI starts all of them at once, in parallel.
"""

from __future__ import annotations

import os
import pty
import select
import string

from mininet.cli import CLI
from mininet.net import Mininet
from mininet.node import Host


class _NodeAddr:
    """Stands in for Mininet's default interface: the CLI asks it for the address."""

    def __init__(self, host: EmuHost) -> None:
        self.host = host
        self.name = "lo"

    def updateIP(self) -> str:  # noqa: N802 - Mininet's name
        return self.host.node_ip

    def IP(self) -> str:  # noqa: N802
        return self.host.node_ip

    def MAC(self) -> None:  # noqa: N802
        return None

    def __str__(self) -> str:
        return "lo"


class EmuHost(Host):
    """A Mininet host living in namespace ``netns`` (created by netemu)."""

    def __init__(self, name: str, *, netns: str, node_ip: str, env: dict[str, str] | None = None,
                 wait: bool = True, init: str = "") -> None:
        """``init``: shell lines run once the shell is up (e.g. a ``vtysh`` function that
        reaches this node's routing daemons)."""
        self.netns = netns
        self.init = init
        self.node_ip = node_ip
        self.extra_env = dict(env or {})
        self._wait = wait
        super().__init__(name, inNamespace=True)

    def startShell(self, mnopts: str | None = None) -> None:  # noqa: N802 - Mininet's name
        """Spawn bash in our namespace; wait for its prompt unless ``wait=False``
        (then call :meth:`finish_start`)."""
        if self.shell:  # type: ignore[has-type]  # set below, or by Mininet's Node (no stubs)
            return
        env = [f"{k}={v}" for k, v in self.extra_env.items()]
        cmd = ["mnexec", "-cd", "ip", "netns", "exec", self.netns, "env", "PS1=" + chr(127),
               *env, "bash", "--norc", "--noediting", "-is", "mininet:" + self.name]
        self.master, self.slave = pty.openpty()
        self.shell = self._popen(cmd, stdin=self.slave, stdout=self.slave, stderr=self.slave,
                                 close_fds=False)
        self.stdin = os.fdopen(self.master, "r")
        self.stdout = self.stdin
        self.pid = self.shell.pid
        self.pollOut = select.poll()
        self.pollOut.register(self.stdout)
        self.outToNode[self.stdout.fileno()] = self
        self.inToNode[self.stdin.fileno()] = self
        self.execed = False
        self.lastCmd = None
        self.lastPid = None
        self.readbuf = ""
        self.waiting = True
        if self._wait:
            self.finish_start()

    def finish_start(self) -> None:
        while True:
            data = self.read(1024)
            if data and data[-1] == chr(127):
                break
            self.pollOut.poll()
        self.waiting = False
        self.cmd("unset HISTFILE; stty -echo; set +m")
        if self.init:
            self.cmd(self.init)

    def mountPrivateDirs(self) -> None:  # noqa: N802
        pass

    def unmountPrivateDirs(self) -> None:  # noqa: N802
        pass

    def IP(self, intf: object = None) -> str:  # noqa: N802
        return self.node_ip if intf is None else super().IP(intf)

    def defaultIntf(self) -> _NodeAddr:  # noqa: N802
        return _NodeAddr(self)


def start_hosts(specs: list[tuple[str, str, str]], env: dict[str, str]) -> list[EmuHost]:
    """Start shells for (name, netns, node_ip) in parallel; returns the hosts."""
    hosts = [EmuHost(n, netns=ns, node_ip=ip, env=env, wait=False) for n, ns, ip in specs]
    for h in hosts:
        h.finish_start()
    return hosts


class EmuNet(Mininet):
    """Enough of Mininet's network object for ``mininet.cli.CLI`` and its commands."""

    def __init__(self, hosts: list[EmuHost]) -> None:
        super().__init__(topo=None, build=False, controller=None, switch=None, autoSetMacs=False,
                         autoStaticArp=False, waitConnected=False)
        for h in hosts:
            self.hosts.append(h)
            self.nameToNode[h.name] = h
        self.built = True

    def stop(self) -> None:  # the Emulation tears the network down, not Mininet
        pass


class EmuCLI(CLI):
    """Mininet's CLI, reading node names with '-' and '.' (``sat-0 ping gs-kashi``)."""

    identchars = string.ascii_letters + string.digits + "_-."
