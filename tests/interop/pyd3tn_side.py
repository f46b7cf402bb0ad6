"""pyD3TN's side of the interop tests, run by tests/interop/test_pyd3tn.py with the python
of the interop environment (``build/pyd3tn-venv``, made by ``scripts/dev setup``: pyD3TN
pins its own cbor2, so it does not share netemu's environment).

Commands (bundles as hex, one per line; descriptions as JSON, one per line):

- ``describe``: bundles on stdin → what pyD3TN's codec reads in each;
- ``create``: JSON specs on stdin → bundles pyD3TN's codec encodes;
- ``mtcp-send HOST PORT``: bundles on stdin → sent over one MTCP connection;
- ``mtcp-recv PORT N``: listen on 127.0.0.1:PORT (prints ``ready``), take N bundles from
  one MTCP connection, print each one's description; N ``adu``: take fragments until
  their payloads cover the total ADU length pyD3TN reads in them (and print each).
"""

from __future__ import annotations

import json
import socket
import sys
from datetime import datetime, timezone

from pyd3tn.bundle7 import Bundle, BundleProcFlag, CRCType, create_bundle7
from pyd3tn.mtcp import MTCPConnection, MTCPSocket

DTN_EPOCH_UNIX_S = 946_684_800


def describe(data: bytes) -> dict:
    b = Bundle.parse(data)
    p = b.primary_block
    ct = tuple(p.creation_time)
    return {
        "version": p.version, "flags": int(p.bundle_proc_flags), "crc_type": int(p.crc_type),
        "destination": str(p.destination), "source": str(p.source),
        "report_to": str(p.report_to), "creation_ms": ct[0], "sequence": ct[1],
        "lifetime_ms": p.lifetime, "fragment_offset": p.fragment_offset,
        "total_adu_length": p.total_payload_length,
        "blocks": [[blk.block_type, blk.block_number, int(blk.block_proc_flags),
                    int(blk.crc_type), bytes(blk.data).hex()] for blk in b.blocks],
        "payload": bytes(b.payload_block.data).hex(),
    }


def create(spec: dict) -> bytes:
    created = datetime.fromtimestamp(DTN_EPOCH_UNIX_S + spec["creation_ms"] / 1000,
                                     tz=timezone.utc)
    b = create_bundle7(
        spec["source"], spec["destination"], bytes.fromhex(spec["payload"]),
        report_to_eid=spec.get("report_to"), creation_timestamp=created,
        sequence_number=spec["sequence"], lifetime=spec["lifetime_ms"] // 1000,
        flags=BundleProcFlag(spec.get("flags", 0)),
        fragment_offset=spec.get("fragment_offset"),
        total_adu_length=spec.get("total_adu_length"),
        hop_limit=spec.get("hop_limit"), hop_count=spec.get("hop_count", 0),
        bundle_age=spec.get("bundle_age_ms"), previous_node_eid=spec.get("previous_node"),
        crc_type_primary=CRCType(spec.get("crc_primary", 2)),
        crc_type_canonical=CRCType(spec.get("crc_canonical", 1)))
    return bytes(b)


def main() -> None:
    cmd = sys.argv[1]
    lines = [x.strip() for x in sys.stdin] if cmd in ("describe", "create", "mtcp-send") else []
    if cmd == "describe":
        for x in lines:
            print(json.dumps(describe(bytes.fromhex(x))))
    elif cmd == "create":
        for x in lines:
            print(create(json.loads(x)).hex())
    elif cmd == "mtcp-send":
        with MTCPConnection(sys.argv[2], int(sys.argv[3]), timeout=30) as conn:
            for x in lines:
                conn.send_bundle(bytes.fromhex(x))
    elif cmd == "mtcp-recv":
        srv = socket.create_server(("127.0.0.1", int(sys.argv[2])))
        print("ready", flush=True)
        srv.settimeout(60)
        sock, _ = srv.accept()
        with MTCPSocket(sock, timeout=60) as conn:
            if sys.argv[3] != "adu":
                for _ in range(int(sys.argv[3])):
                    print(json.dumps(describe(conn.recv_bundle())), flush=True)
                return
            covered: set[int] = set()
            total = None
            while total is None or len(covered) < total:
                d = describe(conn.recv_bundle())
                print(json.dumps(d), flush=True)
                total = d["total_adu_length"]
                if total is None:
                    raise SystemExit("pyd3tn_side: a whole bundle where fragments were due")
                off = d["fragment_offset"]
                covered.update(range(off, off + len(d["payload"]) // 2))
    else:
        raise SystemExit(f"pyd3tn_side: no command {cmd!r}")


if __name__ == "__main__":
    main()
