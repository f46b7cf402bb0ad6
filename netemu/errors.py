"""Errors a user sees: each names what was wrong and where."""

from __future__ import annotations


class NetemuError(Exception):
    """Base class for every error netemu reports to a user (the CLI prints these
    without a traceback and exits non-zero)."""


class InputError(NetemuError):
    """Bad input: a file, a field or a value that cannot be used.

    ``source`` is the file (or other origin) and ``line`` its 1-based line number, when
    known; ``field`` is the dotted path of the offending field, when there is one.
    """

    def __init__(
        self,
        message: str,
        *,
        source: str | None = None,
        line: int | None = None,
        field: str | None = None,
    ) -> None:
        self.message = message
        self.source = source
        self.line = line
        self.field = field
        super().__init__(self._render())

    def _render(self) -> str:
        where = ""
        if self.source:
            where = self.source
            if self.line is not None:
                where += f":{self.line}"
            where += ": "
        what = f"{self.field}: " if self.field else ""
        return f"{where}{what}{self.message}"


class ProtocolError(NetemuError):
    """A protocol was broken: BPv7, a convergence layer, the application socket.

    Not an :class:`InputError`: the bytes come from another party (a peer node, an
    application), not from the user's files or options. As in h11, which side broke it
    is a class of its own: :class:`RemoteProtocolError`, :class:`LocalProtocolError`.
    """


class RemoteProtocolError(ProtocolError):
    """The other end broke the protocol: bytes or a message from a peer (or from an
    application on the app socket) that cannot be accepted."""


class LocalProtocolError(ProtocolError):
    """This side asked for something the protocol does not allow now (a transfer on a
    closing session, a bundle larger than the peer accepts)."""
