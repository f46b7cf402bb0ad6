"""What fragmentation and reassembly cost (netemu.dtn.fragment): one bundle split to a
size limit, its fragments encoded, decoded as a receiver does and put together again.
Plain script; prints figures (``--json``: one JSON object).

    .venv/bin/python bench/bench_fragment.py [--payload-bytes 11000000] [--limit 10000000]
"""

from __future__ import annotations

import argparse
import json
import time

from netemu.dtn.bundle import Bundle, decode_bundle
from netemu.dtn.fragment import Reassembler, fragment


def _best_s(fn, repeat: int) -> float:
    """Best CPU time of ``repeat`` runs (robust on a shared machine)."""
    best = float("inf")
    for _ in range(repeat):
        c = time.process_time()
        fn()
        best = min(best, time.process_time() - c)
    return best


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--payload-bytes", type=int, default=11_000_000)
    ap.add_argument("--limit", type=int, default=10_000_000,
                    help="largest fragment, bytes (a next hop's transfer MRU)")
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--json", action="store_true", help="print one JSON object")
    args = ap.parse_args()
    b = Bundle.new("ipn:1.1", "ipn:2.1", bytes(args.payload_bytes), lifetime_ms=3_600_000,
                   creation_ms=800_000_000_000, seq=1, hop_limit=30)
    wires: list[bytes] = []

    def split() -> None:
        wires[:] = [f.encode() for f in fragment(b, args.limit)]

    def join() -> None:
        r = Reassembler()
        done = None
        for w in wires:
            f = decode_bundle(w)
            done = r.add(f, f.id, len(w)) or done
        assert done is not None and len(done.bundle.payload) == args.payload_bytes
        done.bundle.encode()

    split_s = _best_s(split, args.repeat)
    join_s = _best_s(join, args.repeat)
    mb = args.payload_bytes / 1e6
    out = {"payload_bytes": args.payload_bytes, "limit_bytes": args.limit,
           "fragments": len(wires), "split_s": round(split_s, 4),
           "reassemble_s": round(join_s, 4),
           "split_mb_per_s": round(mb / split_s, 1) if split_s else None,
           "reassemble_mb_per_s": round(mb / join_s, 1) if join_s else None}
    if args.json:
        print(json.dumps(out))
    else:
        print(f"{args.payload_bytes:,} bytes into {len(wires)} fragments of at most "
              f"{args.limit:,}: split + encode {split_s * 1e3:.1f} ms CPU "
              f"({out['split_mb_per_s']} MB/s), decode + reassemble + encode "
              f"{join_s * 1e3:.1f} ms CPU ({out['reassemble_mb_per_s']} MB/s)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
