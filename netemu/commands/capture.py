"""``netemu capture``: a pcap of one emulated link, as seen inside a host; or, with
``--paths``, the hop-by-hop paths of bundles in a run's captures."""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

from netemu.errors import InputError


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "capture",
        help="capture a link to a pcap (tcpdump inside the host), or show bundle paths",
        description=(
            "Capture the link A:B of a running emulation into a pcap that Wireshark decodes "
            "(BPv7 over TCPCLv4 on port 4556). TARGET is the run directory (runs/NAME: its "
            "plan.json tells which interface carries the link) or a node name (then LINK "
            "may be an interface name). Stops after --duration-s wall seconds or Ctrl-C. "
            "With --paths RUN, prints each bundle's path from the run's captures instead."
        ),
    )
    p.add_argument("target", type=str, help="run directory or node name")
    p.add_argument("link", nargs="?", help="A:B (node names; the capture is taken in A's host) "
                   "or an interface of TARGET's host")
    p.add_argument("-o", "--output", type=Path, help="pcap file (default: RUN/captures/A_B.pcap)")
    p.add_argument("--duration-s", type=float, default=0.0, help="stop after this long (wall)")
    p.add_argument("--netns", help="network namespace of the host (default: found by node name)")
    p.add_argument("--filter", default="", help="extra BPF filter")
    p.add_argument("--paths", action="store_true", help="print bundle paths from RUN/captures")
    p.set_defaults(func=handler)


def handler(args: argparse.Namespace) -> int:
    from netemu.analysis.pcap import bundle_paths_from_run
    from netemu.run import capture
    from netemu.runtime.rundir import RunDir

    target = Path(args.target)
    if args.paths:
        if not target.is_dir():
            raise InputError("not a run directory", source=args.target)
        paths = bundle_paths_from_run(target)
        if not paths:
            print(f"no bundles found in {target}/captures/*.pcap")
            return 0
        for bid, hops in paths.items():
            print(bid)
            for h in hops:
                wait = "" if h["waited_s"] is None else f", waited {h['waited_s']:.2f} s before"
                print(f"  {h['link']:28s} t={h['first_t_s']:.3f}..{h['last_t_s']:.3f} s"
                      f" ({h['size_bytes']} B{wait})")
        return 0
    if not args.link:
        raise InputError("give the link to capture (A:B)", field="LINK")
    if not target.is_dir() and ("/" in args.target or args.target.startswith(".")):
        raise InputError("no such run directory", source=args.target)
    run_dir = target if target.is_dir() else None
    clock = None
    if run_dir is not None:
        rd = RunDir(run_dir)
        plan_path = rd.plan_json
        if not plan_path.exists():
            raise InputError("run directory has no plan.json", source=str(run_dir))
        a, b = capture.parse_link(args.link)
        iface, bpf = capture.resolve_link(plan_path, a, b)
        meta = {}
        if rd.run_json.exists():
            try:
                meta = json.loads(rd.run_json.read_text())
            except json.JSONDecodeError:
                meta = {}
        clock = meta.get("clock") if isinstance(meta.get("clock"), dict) else None
        netns = args.netns or capture.find_netns(a, meta.get("run"))
        out = args.output or rd.capture_pcap(a, b)
    else:
        node = args.target
        if any(sep in args.link for sep in (":", "->", ",", "/")):
            raise InputError(f"to capture the link {args.link} give the run directory as TARGET "
                             "(its plan.json says which interface carries the link), or give "
                             "an interface name as LINK", field="TARGET")
        a, b, iface, bpf = node, "", args.link, ""
        netns = args.netns or capture.find_netns(node)
        out = args.output or Path(f"{node}_{iface}.pcap")
    if args.filter:
        bpf = f"({bpf}) and ({args.filter})" if bpf else args.filter
    spec = capture.CaptureSpec(a, b, netns, iface, bpf, clock)
    cap = capture.LinkCapture(spec, out).start()
    print(f"capturing {a}:{b or iface} in {netns} on {iface}{' [' + bpf + ']' if bpf else ''} "
          f"→ {out}  (Ctrl-C to stop)", flush=True)
    try:
        if args.duration_s > 0:
            time.sleep(args.duration_s)
        else:
            while cap.proc is not None and cap.proc.poll() is None:
                time.sleep(0.5)
    except KeyboardInterrupt:
        pass
    finally:
        cap.stop()
    print(f"wrote {out} ({out.stat().st_size if out.exists() else 0} bytes)")
    return 0
