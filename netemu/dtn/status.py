"""Bundle status reports (RFC 9171 section 6.1) as administrative records.

An administrative record is the payload of a bundle with the ADMIN_RECORD flag:
``[record type, content]``; type 1 is the bundle status report::

    [[received], [forwarded], [delivered], [deleted]],  each [asserted] or [true, time]
    reason code,
    source of the subject bundle, [creation time, sequence] of the subject,
    (fragment offset, fragment length: only when the subject is a fragment)
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import IntEnum

from netemu.dtn import cbor
from netemu.dtn.bundle import Bundle, BundleFlags
from netemu.dtn.eid import EID
from netemu.dtn.errors import BundleError

RECORD_STATUS_REPORT = 1
STATUSES = ("received", "forwarded", "delivered", "deleted")
_REQUEST_FLAG = {
    "received": BundleFlags.REPORT_RECEPTION, "forwarded": BundleFlags.REPORT_FORWARDING,
    "delivered": BundleFlags.REPORT_DELIVERY, "deleted": BundleFlags.REPORT_DELETION,
}


class Reason(IntEnum):
    """Status report reason codes (RFC 9171 section 6.1.1; 12-16 from RFC 9172)."""

    NO_INFO = 0
    LIFETIME_EXPIRED = 1
    FORWARDED_UNIDIRECTIONAL = 2
    TRANSMISSION_CANCELED = 3
    DEPLETED_STORAGE = 4
    DESTINATION_UNINTELLIGIBLE = 5
    NO_ROUTE = 6
    NO_TIMELY_CONTACT = 7
    BLOCK_UNINTELLIGIBLE = 8
    HOP_LIMIT_EXCEEDED = 9
    TRAFFIC_PARED = 10
    BLOCK_UNSUPPORTED = 11
    MISSING_SECURITY = 12
    UNKNOWN_SECURITY = 13
    UNEXPECTED_SECURITY = 14
    FAILED_SECURITY = 15
    CONFLICTING_SECURITY = 16


@dataclass(frozen=True)
class StatusReport:
    """One status report. ``times`` maps each asserted status to its DTN time (ms), or to
    None when the time was not requested."""

    status: dict[str, int | None]
    reason: int
    subject_source: EID
    subject_creation_ms: int
    subject_seq: int
    fragment_offset: int | None = None
    fragment_length: int | None = None

    @property
    def subject_id(self) -> str:
        """The subject bundle's :attr:`Bundle.id`."""
        key = f"{self.subject_source},{self.subject_creation_ms},{self.subject_seq}"
        if self.fragment_offset is not None:
            key += f",{self.fragment_offset},{self.fragment_length}"
        return key

    def encode(self) -> bytes:
        """The administrative record (the report bundle's payload)."""
        info = []
        for name in STATUSES:
            if name in self.status:
                t = self.status[name]
                info.append([True] if t is None else [True, t])
            else:
                info.append([False])
        content: list[object] = [info, int(self.reason), self.subject_source.to_obj(),
                         [self.subject_creation_ms, self.subject_seq]]
        if self.fragment_offset is not None:
            content += [self.fragment_offset, self.fragment_length]
        return cbor.dumps([RECORD_STATUS_REPORT, content])

    @staticmethod
    def decode(payload: bytes) -> StatusReport:
        """Decode an administrative record holding a status report (strict)."""
        rec = cbor.loads(payload)
        if not isinstance(rec, list) or len(rec) != 2 or type(rec[0]) is not int:
            raise BundleError("administrative record is [record type, content]",
                              field="admin_record")
        if rec[0] != RECORD_STATUS_REPORT:
            raise BundleError(f"administrative record type {rec[0]} is not a status report",
                              field="admin_record")
        c = rec[1]
        if not isinstance(c, list) or len(c) not in (4, 6):
            raise BundleError("status report content has 4 or 6 items", field="status_report")
        info, reason, src, ts = c[:4]
        if not isinstance(info, list) or len(info) != 4:
            raise BundleError("status information is 4 assertions", field="status_info")
        status: dict[str, int | None] = {}
        for name, item in zip(STATUSES, info, strict=True):
            if not isinstance(item, list) or not item or type(item[0]) is not bool:
                raise BundleError(f"{name} assertion is [bool] or [true, time]",
                                  field="status_info")
            if item[0]:
                t = item[1] if len(item) > 1 else None
                if t is not None and type(t) is not int:
                    raise BundleError(f"{name} time must be an integer", field="status_info")
                status[name] = t
        if type(reason) is not int:
            raise BundleError("reason code must be an integer", field="reason")
        if (not isinstance(ts, list) or len(ts) != 2
                or not all(type(x) is int for x in ts)):
            raise BundleError("subject creation timestamp is [time, sequence]",
                              field="creation_timestamp")
        off = length = None
        if len(c) == 6:
            off, length = c[4], c[5]
        return StatusReport(status, reason, EID.from_obj(src, "subject_source"), ts[0], ts[1],
                            off, length)


def wants_report(subject: Bundle, status: str) -> bool:
    """Whether ``subject`` asks for a ``status`` report (and may get one: never about an
    administrative record, never to dtn:none)."""
    p = subject.primary
    return (bool(p.flags & _REQUEST_FLAG[status]) and not p.flags & BundleFlags.ADMIN_RECORD
            and not p.report_to.is_none)


def make_report(
    subject: Bundle,
    status: str,
    *,
    reason: int = Reason.NO_INFO,
    node_id: EID,
    now_ms: int,
    seq: int,
    lifetime_ms: int = 3_600_000,
    force: bool = False,
    crc: str = "crc32c",
) -> Bundle | None:
    """The status report bundle about ``subject`` from ``node_id``, or None when the
    subject did not ask for it (``force`` sends it to a report-to that is not dtn:none
    anyway: used for refusals a sender must learn about)."""
    if status not in STATUSES:
        raise ValueError(f"unknown status {status!r}")
    p = subject.primary
    if not wants_report(subject, status) and not (
            force and not p.report_to.is_none and not p.flags & BundleFlags.ADMIN_RECORD):
        return None
    with_time = bool(p.flags & BundleFlags.STATUS_TIME_REQUESTED)
    frag_len = len(subject.payload) if p.is_fragment else None
    report = StatusReport({status: now_ms if with_time else None}, int(reason), p.source,
                          p.creation_ms, p.sequence, p.fragment_offset if p.is_fragment else None,
                          frag_len)
    return Bundle.new(node_id, p.report_to, report.encode(), lifetime_ms=lifetime_ms,
                      creation_ms=now_ms, seq=seq, crc=crc, flags=BundleFlags.ADMIN_RECORD)
