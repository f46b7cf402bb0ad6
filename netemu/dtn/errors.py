"""Errors of the DTN bundle layer: each names the block, field and byte offset."""

from __future__ import annotations

from netemu.errors import RemoteProtocolError


class BundleError(RemoteProtocolError):
    """A bundle (or a CBOR item or endpoint ID inside one) that cannot be accepted: what
    another party sent breaks BPv7. Where the text comes from the user instead (a
    config's EID), the caller reports it as an :class:`~netemu.errors.InputError`.

    ``offset`` is the byte offset in the input where the problem was found, ``block``
    the 0-based index of the block in the bundle (0 = primary) and ``field`` the name of
    the offending field, each when known. The rendered message names all three, e.g.
    ``bundle block 2 (payload), field crc, byte 57: CRC-32C mismatch``.
    """

    def __init__(
        self,
        message: str,
        *,
        offset: int | None = None,
        block: int | None = None,
        block_name: str | None = None,
        field: str | None = None,
        source: str | None = None,
    ) -> None:
        self.offset = offset
        self.block = block
        self.block_name = block_name
        self.reason = message
        parts: list[str] = []
        if block is not None:
            parts.append(f"block {block}" + (f" ({block_name})" if block_name else ""))
        if field:
            parts.append(f"field {field}")
        if offset is not None:
            parts.append(f"byte {offset}")
        where = "bundle " + ", ".join(parts) + ": " if parts else "bundle: "
        self.message = where + message
        self.source = source  # where the bytes came from (a file, a peer), when known
        self.field = field
        super().__init__(f"{source}: {self.message}" if source else self.message)

    def within(
        self, *, block: int | None = None, block_name: str | None = None,
        field: str | None = None, base_offset: int = 0,
    ) -> BundleError:
        """The same error with context added by an outer decoder (keeps inner details)."""
        return BundleError(
            self.reason,
            offset=None if self.offset is None else self.offset + base_offset,
            block=self.block if self.block is not None else block,
            block_name=self.block_name if self.block_name is not None else block_name,
            field=self.field if self.field is not None else field,
            source=self.source,
        )


class SecurityError(BundleError):
    """A BPSec operation failed: an integrity check that does not verify, a missing key,
    a ciphertext that does not authenticate."""
