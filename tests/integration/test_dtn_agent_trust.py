"""Real agents (``netemu agent`` processes) against a hostile local user and careless
security settings:

- a client running as user ``nobody`` cannot reach a node's app socket (so cannot have
  bundles signed with the node's BIB key, nor take an endpoint), while root can;
- an agent whose ``keys:`` section is misspelt, or requires BIBs it holds no key to
  check, refuses to start with an error naming the file, line and key.
"""

from __future__ import annotations

import asyncio
import json
import os
import pwd
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest
from dtn_agent_harness import AgentProc, free_port, write_pair

from netemu.agent import BpClient

pytestmark = [
    pytest.mark.integration,
    pytest.mark.skipif(os.geteuid() != 0 or not os.path.exists("/usr/bin/python3"),
                       reason="needs root (to run a client as nobody)"),
]

_NOBODY_SEND = r"""
import socket, sys
s = socket.socket(socket.AF_UNIX)
try:
    s.connect(sys.argv[1])
except PermissionError:
    print("refused")
else:
    print("connected")
"""


@pytest.fixture
def shared_dir():
    """A run directory every user can traverse, with each node's directory made before
    the agent starts (as the runner does): only the socket's own mode guards it."""
    d = Path(tempfile.mkdtemp(prefix="netemu-trust-", dir="/tmp"))
    os.chmod(d, 0o755)
    for node in ("A", "B"):
        (d / node).mkdir()
        os.chmod(d / node, 0o755)
    yield d
    shutil.rmtree(d, ignore_errors=True)


def test_another_user_cannot_reach_a_signing_agents_app_socket(shared_dir):
    key = "11" * 32
    cfgs = write_pair(shared_dir, port_a=free_port(), port_b=free_port())
    for n, keys in (("A", {"sign_key": key}),
                    ("B", {"verify": {"ipn:1.0": key}, "require_bib_from": ["ipn:1.0"]})):
        cfg = json.loads(cfgs[n].read_text())
        cfg["keys"] = keys
        cfgs[n].write_text(json.dumps(cfg, indent=1))
    b = AgentProc("B", cfgs["B"]).start()
    a = AgentProc("A", cfgs["A"]).start()
    sock_a = str(shared_dir / "A" / "bp.sock")

    async def go() -> bytes:
        rx = await BpClient.connect(str(shared_dir / "B" / "bp.sock"), timeout_s=20)
        tx = await BpClient.connect(sock_a, timeout_s=20)
        try:
            nobody = pwd.getpwnam("nobody")
            proc = await asyncio.create_subprocess_exec(
                "/usr/bin/python3", "-c", _NOBODY_SEND, sock_a, user=nobody.pw_uid,
                group=nobody.pw_gid, extra_groups=[], stdout=asyncio.subprocess.PIPE, cwd="/")
            out, _ = await asyncio.wait_for(proc.communicate(), 15)
            assert out.decode().strip() == "refused"
            await rx.register("ipn:2.1")
            await tx.send("ipn:2.1", b"signed by A, sent by root")
            return (await rx.recv(timeout_s=20)).payload
        finally:
            await tx.close()
            await rx.close()

    try:
        assert asyncio.run(asyncio.wait_for(go(), 60)) == b"signed by A, sent by root"
    finally:
        a.stop()
        b.stop()


_APP_AS_USER = r"""
import json, socket, sys

def head(major, n):
    if n < 24:
        return bytes([major << 5 | n])
    return bytes([major << 5 | 25]) + n.to_bytes(2, "big")

def enc(v):
    if isinstance(v, str):
        b = v.encode()
        return head(3, len(b)) + b
    if isinstance(v, bytes):
        return head(2, len(v)) + v
    if isinstance(v, int):
        return head(0, v)
    return head(5, len(v)) + b"".join(enc(k) + enc(x) for k, x in v.items())

s = socket.socket(socket.AF_UNIX)
s.settimeout(20)
s.connect(sys.argv[1])
for i, req in enumerate(json.loads(sys.argv[2]), 1):
    if "payload" in req:
        req["payload"] = req["payload"].encode()
    body = enc({**req, "rid": i})
    try:
        s.sendall(len(body).to_bytes(4, "big") + body)
    except OSError:
        pass  # refused: the agent said why and closed; read that
    n = int.from_bytes(s.recv(4, socket.MSG_WAITALL), "big")
    reply = s.recv(n, socket.MSG_WAITALL)
    print("ok" if b"\x62ok\xf5" in reply else reply.decode("utf-8", "replace"), flush=True)
"""


def test_reserved_endpoints_are_their_users_alone(shared_dir):
    """``app_users`` lets other users' apps use the socket, checked by their peer
    credentials; an endpoint in ``reserved_endpoints`` is its user's alone: another
    allowed user may neither register it nor send from it; a user not listed is refused."""
    cfgs = write_pair(shared_dir, port_a=free_port(), port_b=free_port())
    cfg = json.loads(cfgs["A"].read_text())
    cfg.update(app_users=["daemon"], reserved_endpoints={"ipn:1.5": "nobody"})
    cfgs["A"].write_text(json.dumps(cfg, indent=1))
    a = AgentProc("A", cfgs["A"]).start()
    sock = shared_dir / "A" / "bp.sock"

    async def as_user(user: str, requests: list[dict]) -> list[str]:
        pw = pwd.getpwnam(user)
        proc = await asyncio.create_subprocess_exec(
            "/usr/bin/python3", "-c", _APP_AS_USER, str(sock), json.dumps(requests),
            user=pw.pw_uid, group=pw.pw_gid, extra_groups=[], cwd="/",
            stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
        out, err = await asyncio.wait_for(proc.communicate(), 30)
        return out.decode().splitlines() or [err.decode()]

    async def go() -> None:
        root = await BpClient.connect(str(sock), timeout_s=20)  # (waits for the agent)
        await root.close()
        assert oct(sock.stat().st_mode & 0o777) == "0o666"  # the credentials decide
        daemon = await as_user("daemon", [
            {"op": "register", "endpoint": "ipn:1.5"},
            {"op": "register", "endpoint": "ipn:1.6"},
            {"op": "send", "dst": "ipn:2.1", "src": "ipn:1.5", "payload": "x"},
            {"op": "send", "dst": "ipn:2.1", "src": "ipn:1.6", "payload": "x"}])
        assert "endpoint ipn:1.5 is reserved for uid 65534" in daemon[0], daemon
        assert daemon[1] == "ok" and daemon[3] == "ok", daemon
        assert "may not send from it" in daemon[2], daemon
        nobody = await as_user("nobody", [{"op": "register", "endpoint": "ipn:1.5"}])
        assert nobody == ["ok"]
        other = await as_user("bin", [{"op": "register", "endpoint": "ipn:1.7"}])
        assert "may not use this app socket" in other[0], other

    try:
        asyncio.run(asyncio.wait_for(go(), 90))
    finally:
        a.stop()


@pytest.mark.parametrize("keys, expected", [
    ({"verfy": {"ipn:1.0": "11" * 32}, "require_bib_from": ["*"]},
     "keys.verfy: unknown key 'verfy'; did you mean 'verify'?"),
    ({"verify": {"ipn:1.0": "11" * 32}, "require_bib_form": ["*"]},
     "keys.require_bib_form: unknown key 'require_bib_form'; did you mean 'require_bib_from'?"),
    ({"require_bib_from": ["*"]},
     "keys.require_bib_from: bundles from any node must carry a BIB, but keys.verify holds "
     "no key"),
])
def test_agent_with_unusable_keys_refuses_to_start(tmp_path, keys, expected):
    cfgs = write_pair(tmp_path, port_a=free_port(), port_b=free_port())
    cfg = json.loads(cfgs["B"].read_text())
    cfg["keys"] = keys
    cfgs["B"].write_text(json.dumps(cfg, indent=1))
    line = next(i for i, text in enumerate(cfgs["B"].read_text().splitlines(), 1)
                if f'"{expected.split(":")[0].split(".")[1]}"' in text)
    r = subprocess.run([sys.executable, "-m", "netemu", "agent", "--node", "B", "--config",
                        str(cfgs["B"])], capture_output=True, text=True, timeout=60,
                       env={**os.environ, "PYTHONPATH": str(Path(__file__).parents[2])})
    assert r.returncode != 0
    assert f"{cfgs['B']}:{line}: {expected}" in r.stderr
    assert "Traceback" not in r.stderr
    assert not (tmp_path / "B" / "bp.sock").exists()
