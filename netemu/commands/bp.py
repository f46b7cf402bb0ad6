"""``netemu bp send | recv | watch | status``: talk to a node's bundle agent.

Usable inside an emulated host: the socket comes from ``--socket``, ``--node`` (the
node's default socket path) or ``$NETEMU_DTN_SOCKET``, which the emulator sets in each
host's environment.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys

from netemu.agent.client import BpClient, BpError
from netemu.agent.config import MAX_LIFETIME_S
from netemu.commands._args import seconds
from netemu.errors import InputError


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser("bp", help="send, receive and watch bundles through a node's agent",
                              description=__doc__.split("\n\n")[0])
    p.add_argument("--socket", help="agent app socket (default: $NETEMU_DTN_SOCKET)")
    p.add_argument("--node", help="node name (uses its default socket path)")
    sub = p.add_subparsers(dest="bp_command", metavar="ACTION", required=True)

    s = sub.add_parser("send", help="send one bundle (payload from --data, --file or stdin)")
    s.add_argument("dst", help="destination EID, e.g. ipn:3.1")
    g = s.add_mutually_exclusive_group()
    g.add_argument("--data", help="payload as text")
    g.add_argument("--file", help="payload from a file ('-' = stdin)")
    s.add_argument("--src", help="source EID (default: the node's ipn:N.0)")
    s.add_argument("--lifetime", type=seconds(lo=0, lo_open=True, hi=MAX_LIFETIME_S),
                   default=86400.0, metavar="S",
                   help=f"lifetime in seconds, > 0 and ≤ {MAX_LIFETIME_S:g} (100 years; "
                        "default 86400)")
    s.add_argument("--count", type=int, default=1, help="send N copies (default 1)")
    s.set_defaults(func=_cmd_send)

    r = sub.add_parser("recv", help="register an endpoint and print bundles as they arrive")
    r.add_argument("endpoint", help="local endpoint, e.g. ipn:3.1")
    r.add_argument("--count", type=int, default=0, help="stop after N bundles (0: forever)")
    r.add_argument("--timeout", type=seconds(lo=0, lo_open=True), default=None, metavar="S",
                   help="give up after S seconds without a bundle (exit 1)")
    r.add_argument("--raw", action="store_true", help="write payloads to stdout, no JSON")
    r.set_defaults(func=_cmd_recv)

    w = sub.add_parser("watch", help="stream the agent's log events (JSON lines)")
    w.set_defaults(func=_cmd_watch)

    st = sub.add_parser("status", help="print the agent's status (JSON)")
    st.set_defaults(func=_cmd_status)


async def _client(args: argparse.Namespace) -> BpClient:
    try:
        return await BpClient.connect(args.socket, node=args.node, timeout_s=5.0)
    except ConnectionError as e:
        raise InputError(str(e), source="--socket") from None


def _run(coro) -> int:
    try:
        return asyncio.run(coro)
    except BpError as e:
        raise InputError(f"agent refused: {e}", source="agent") from None


def _cmd_send(args: argparse.Namespace) -> int:
    if args.data is not None:
        payload = args.data.encode()
    elif args.file and args.file != "-":
        try:
            with open(args.file, "rb") as f:
                payload = f.read()
        except OSError as e:
            raise InputError(f"cannot read: {e.strerror}", source=args.file) from None
    else:
        payload = sys.stdin.buffer.read()

    async def go() -> int:
        bp = await _client(args)
        try:
            for _ in range(max(1, args.count)):
                bid = await bp.send(args.dst, payload, lifetime_s=args.lifetime, src=args.src)
                print(bid)
        finally:
            await bp.close()
        return 0

    return _run(go())


def _cmd_recv(args: argparse.Namespace) -> int:
    async def go() -> int:
        bp = await _client(args)
        n = 0
        try:
            await bp.register(args.endpoint)
            while args.count <= 0 or n < args.count:
                try:
                    d = await bp.recv(timeout_s=args.timeout)
                except asyncio.TimeoutError:
                    print(f"netemu bp recv: no bundle within {args.timeout} s", file=sys.stderr)
                    return 1
                n += 1
                if args.raw:
                    sys.stdout.buffer.write(d.payload)
                    sys.stdout.buffer.flush()
                else:
                    try:
                        text: str | None = d.payload.decode()
                    except UnicodeDecodeError:
                        text = None
                    rec = {"id": d.id, "src": d.src, "dst": d.dst, "created_ms": d.created_ms,
                           "size": len(d.payload)}
                    rec["payload" if text is not None else "payload_hex"] = (
                        text if text is not None else d.payload.hex())
                    print(json.dumps(rec), flush=True)
        finally:
            await bp.close()
        return 0

    return _run(go())


def _cmd_watch(args: argparse.Namespace) -> int:
    async def go() -> int:
        bp = await _client(args)
        try:
            async for ev in await bp.watch():
                ev.pop("ev", None)
                print(json.dumps(ev, default=str), flush=True)
        finally:
            await bp.close()
        return 0

    return _run(go())


def _cmd_status(args: argparse.Namespace) -> int:
    async def go() -> int:
        bp = await _client(args)
        try:
            print(json.dumps(await bp.status(), indent=1, default=str))
        finally:
            await bp.close()
        return 0

    return _run(go())
