"""Open-file limits: a node host holds about fifteen descriptors per node (its sockets,
its store's three files, its log, its namespace handle) and the emulator a few per
link, so a constellation needs far more than the usual 1,024 — or than a container's
fixed hard limit, which only CAP_SYS_RESOURCE can raise."""

from __future__ import annotations

import resource


def raise_fd_limit(want: int) -> int:
    """Raise RLIMIT_NOFILE towards ``want``: the hard limit too where allowed, else up to
    the hard limit. Returns the soft limit now in force, which may be below ``want``."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft >= want:
        return soft
    try:
        resource.setrlimit(resource.RLIMIT_NOFILE, (want, max(hard, want)))
        return want
    except (ValueError, OSError):  # no CAP_SYS_RESOURCE: the hard limit is as far as it goes
        if hard != resource.RLIM_INFINITY and soft < hard:
            resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
        return resource.getrlimit(resource.RLIMIT_NOFILE)[0]

