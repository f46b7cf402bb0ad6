"""Network namespaces from inside this process: enter one, do a thing, come back.

``setns(2)`` changes only the calling thread's namespace, and a socket keeps the
namespace it was created in. So one process can hold a netlink socket (and open
``/proc/sys/net`` files) in each of a thousand namespaces without forking a helper per
namespace — the reason bulk bring-up is fast.
"""

from __future__ import annotations

import contextlib
import ctypes
import ctypes.util
import os
import subprocess
from collections.abc import Iterable, Iterator

CLONE_NEWNET = 0x40000000
NETNS_DIR = "/run/netns"

_libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)


def setns(fd: int, nstype: int = CLONE_NEWNET) -> None:
    if _libc.setns(fd, nstype) != 0:
        err = ctypes.get_errno()
        raise OSError(err, f"setns: {os.strerror(err)}")


def ns_path(name: str) -> str:
    return f"{NETNS_DIR}/{name}"


@contextlib.contextmanager
def entered(ns_fd: int) -> Iterator[None]:
    """Run the block in the namespace open as ``ns_fd`` (this thread only)."""
    home = os.open("/proc/thread-self/ns/net", os.O_RDONLY)
    try:
        setns(ns_fd)
        yield
    finally:
        setns(home)
        os.close(home)


def enter_path(path: str) -> None:
    """Move this thread into the namespace bound at ``path`` for good (relay workers)."""
    fd = os.open(path, os.O_RDONLY)
    try:
        setns(fd)
    finally:
        os.close(fd)


def ip_batch(lines: Iterable[str], *, netns: str | None = None, force: bool = False) -> None:
    """Run ``ip -batch -`` (in ``netns``): one process for thousands of commands."""
    argv = ["ip"]
    if netns:
        argv += ["-n", netns]
    if force:
        argv.append("-force")
    argv += ["-batch", "-"]
    text = "\n".join(lines) + "\n"
    proc = subprocess.run(argv, input=text, capture_output=True, text=True)
    if proc.returncode != 0 and not force:
        raise OSError(f"ip -batch failed: {proc.stderr.strip()[:500]}")


def list_netns() -> list[str]:
    try:
        return sorted(os.listdir(NETNS_DIR))
    except FileNotFoundError:
        return []


def write_sysctl(ns_fd: int, values: dict[str, str]) -> None:
    """Write ``/proc/sys/…`` keys (``net/ipv4/ip_forward``) inside a namespace."""
    with entered(ns_fd):
        for key, val in values.items():
            with open(f"/proc/sys/{key}", "w") as f:
                f.write(val)
