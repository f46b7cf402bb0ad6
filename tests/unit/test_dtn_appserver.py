"""The app socket's server dispatch and the async client (reconnect + exactly-once)."""

from __future__ import annotations

import asyncio
import os
import pwd
import shutil
import stat
import tempfile

import pytest

from netemu.agent import BpClient, BpError
from netemu.agent.appserver import AppServer
from netemu.agent.config import check_lifetime
from netemu.dtn.appframe import FrameDecoder, encode_frame
from netemu.errors import InputError


class FakeAgent:
    """Just enough of the agent's app handlers to exercise server and client."""

    def __init__(self) -> None:
        self.sent: list[dict] = []
        self.acked: list[str] = []
        self.conns = []

    def handlers(self):
        return {
            "register": self.register, "send": self.send, "ack": self.ack,
            "status": lambda c, r: {"node": "n1"},
        }

    def register(self, conn, req):
        if not req["endpoint"].startswith("ipn:1."):
            raise InputError("endpoint is not on this node", field="endpoint")
        conn.endpoints.add(req["endpoint"])
        self.conns.append(conn)
        return {"endpoint": req["endpoint"]}

    async def send(self, conn, req):
        await asyncio.sleep(0)
        self.sent.append(req)
        return {"id": f"ipn:1.0,0,{len(self.sent)}"}

    def ack(self, conn, req):
        self.acked += req["ids"]
        return {}

    def deliver(self, bid: str, payload: bytes):
        for c in self.conns:
            if not c.closed:
                c.push({"ev": "bundle", "id": bid, "src": "ipn:2.1", "dst": "ipn:1.1",
                        "created_ms": 5, "payload": payload})


def test_client_roundtrip_and_errors(tmp_path):
    path = str(tmp_path / "bp.sock")

    async def go():
        fake = FakeAgent()
        srv = AppServer(path, fake.handlers())
        await srv.start()
        bp = await BpClient.connect(path)
        try:
            await bp.register("ipn:1.1")
            with pytest.raises(BpError, match="endpoint is not on this node"):
                await bp.register("ipn:9.1")
            with pytest.raises(BpError, match="unknown op 'nope'"):
                await bp.request("nope")
            assert await bp.send("ipn:2.1", b"hi") == "ipn:1.0,0,1"
            assert fake.sent[0]["payload"] == b"hi" and fake.sent[0]["dst"] == "ipn:2.1"
            assert (await bp.status())["node"] == "n1"
            fake.deliver("b1", b"p1")
            d = await bp.recv(timeout_s=5)
            assert (d.id, d.src, d.payload) == ("b1", "ipn:2.1", b"p1")
            for _ in range(20):
                await asyncio.sleep(0.01)
            assert fake.acked == ["b1"]
        finally:
            await bp.close()
            await srv.close()

    asyncio.run(asyncio.wait_for(go(), 20))


def test_client_survives_agent_restart_and_drops_redelivery(tmp_path):
    """The agent re-delivers unacknowledged bundles after a restart; the app sees each once."""
    path = str(tmp_path / "bp.sock")

    async def go():
        fake = FakeAgent()
        srv = AppServer(path, fake.handlers())
        await srv.start()
        bp = await BpClient.connect(path)
        await bp.register("ipn:1.1")
        fake.deliver("b1", b"one")
        assert (await bp.recv(timeout_s=5)).id == "b1"
        await srv.close()  # agent dies before the ack is processed
        fake2 = FakeAgent()
        srv2 = AppServer(path, fake2.handlers())
        await srv2.start()
        for _ in range(100):  # client reconnects and registers again
            if fake2.conns:
                break
            await asyncio.sleep(0.05)
        assert fake2.conns, "client did not re-register after restart"
        fake2.deliver("b1", b"one")  # re-delivered: must not reach the app again
        fake2.deliver("b2", b"two")
        d = await bp.recv(timeout_s=5)
        assert d.id == "b2"
        await asyncio.sleep(0.05)
        assert "b1" in fake2.acked  # duplicate is confirmed so the agent forgets it
        await bp.close()
        await srv2.close()

    asyncio.run(asyncio.wait_for(go(), 30))


def test_client_acks_are_answered_only_when_asked():
    """The client's acks (rid 0) get no answer frame: one request per batch of deliveries
    and nothing back; an ack with a request id is answered as any request."""
    pushed: list[dict] = []

    class Conn:
        def push(self, obj: dict) -> None:
            pushed.append(obj)

    acked: list[list[str]] = []
    srv = AppServer("/nonexistent/bp.sock", {"ack": lambda c, r: acked.append(r["ids"]) or {}})
    srv.dispatch(Conn(), {"op": "ack", "ids": ["a", "b"], "rid": 0})
    assert acked == [["a", "b"]] and pushed == []
    srv.dispatch(Conn(), {"op": "ack", "ids": ["c"], "rid": 7})
    assert pushed == [{"rid": 7, "ok": True}]
    srv.dispatch(Conn(), {"op": "ack", "rid": 0})  # bad request: still an error answer
    assert pushed[-1]["ok"] is False


def test_a_request_whose_handler_overflows_is_still_answered(tmp_path):
    """A client's number that breaks the handler's arithmetic (``int(inf * 1000)``) gets an
    error answer instead of leaving the request unanswered forever."""
    path = str(tmp_path / "bp.sock")

    async def overflow(conn, req):
        await asyncio.sleep(0)
        return {"ms": int(req["lifetime_s"] * 1000)}

    async def go():
        srv = AppServer(path, {"send": overflow, "now": lambda c, r: {"ms": int(r["x"])}})
        await srv.start()
        bp = await BpClient.connect(path)
        try:
            for op, key in (("send", "lifetime_s"), ("now", "x")):
                with pytest.raises(BpError, match=f"bad {op} request: OverflowError"):
                    await asyncio.wait_for(bp.request(op, **{key: float("inf")}), 5)
        finally:
            await bp.close()
            await srv.close()

    asyncio.run(asyncio.wait_for(go(), 20))


@pytest.mark.parametrize("lifetime_s", [float("inf"), float("nan"), 1e300, 0, -1, True, "1"])
def test_agent_core_refuses_an_unusable_lifetime(lifetime_s):
    with pytest.raises(InputError) as e:
        check_lifetime(lifetime_s)
    assert e.value.field == "lifetime_s"


# --- who may use the socket ---------------------------------------------------------

_NOBODY_CLIENT = r"""
import socket, sys
s = socket.socket(socket.AF_UNIX)
try:
    s.connect(sys.argv[1])
except PermissionError:
    print("refused"); sys.exit(0)
got = b""
def read(timeout_s):
    global got
    s.settimeout(timeout_s)
    try:
        while True:
            chunk = s.recv(65536)
            if not chunk:
                return False
            got += chunk
    except socket.timeout:
        return True
    except OSError:
        return False
if read(0.5):  # the server talks first only to refuse
    try:
        s.sendall(bytes.fromhex(sys.argv[2]))
        read(5)
    except OSError:
        pass
print("connected " + got.hex())
"""


def _shared_dir() -> str:
    """A directory every user can traverse (pytest's tmp_path is root's alone), as the
    runner's run directory is."""
    d = tempfile.mkdtemp(prefix="netemu-sock-", dir="/tmp")
    os.chmod(d, 0o755)
    return d


async def _as_nobody(path: str, frame: bytes) -> str:
    """What a client running as user ``nobody`` gets: "refused" or "connected <hex>"."""
    nobody = pwd.getpwnam("nobody")
    proc = await asyncio.create_subprocess_exec(
        "/usr/bin/python3", "-c", _NOBODY_CLIENT, path, frame.hex(),
        user=nobody.pw_uid, group=nobody.pw_gid, extra_groups=[],
        stdout=asyncio.subprocess.PIPE, cwd="/")
    out, _ = await asyncio.wait_for(proc.communicate(), 15)
    return out.decode().strip()


needs_root = pytest.mark.skipif(os.geteuid() != 0 or not os.path.exists("/usr/bin/python3"),
                                reason="needs root (to run a client as nobody)")


@needs_root
def test_app_socket_is_reachable_only_by_its_owner():
    """Another user (``nobody``) cannot connect to the app socket, so cannot have bundles
    signed with the node's key or take another app's endpoint; root still connects."""
    d = _shared_dir()
    path = os.path.join(d, "bp.sock")

    async def go():
        fake = FakeAgent()
        srv = AppServer(path, fake.handlers())
        await srv.start()
        try:
            frame = encode_frame({"op": "register", "endpoint": "ipn:1.1", "rid": 1})
            assert await _as_nobody(path, frame) == "refused"
            assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
            assert fake.conns == []
            bp = await BpClient.connect(path)
            try:
                await bp.register("ipn:1.1")
                assert len(fake.conns) == 1
            finally:
                await bp.close()
        finally:
            await srv.close()

    try:
        asyncio.run(asyncio.wait_for(go(), 30))
    finally:
        shutil.rmtree(d, ignore_errors=True)


@needs_root
def test_app_socket_refuses_another_user_even_when_its_mode_allows_it():
    """The peer's credentials are checked too: with the socket made world-writable by
    hand, ``nobody``'s connection is answered with an error and closed, its request
    never reaching a handler."""
    d = _shared_dir()
    path = os.path.join(d, "bp.sock")

    async def go():
        fake = FakeAgent()
        srv = AppServer(path, fake.handlers())
        await srv.start()
        try:
            os.chmod(path, 0o666)
            frame = encode_frame({"op": "register", "endpoint": "ipn:1.1", "rid": 1})
            out = await _as_nobody(path, frame)
            assert out.startswith("connected ")
            frames = FrameDecoder().feed(bytes.fromhex(out.split(" ", 1)[1] if " " in out
                                                       else ""))
            assert frames and frames[0].get("ev") == "error"
            assert "uid 65534" in frames[0]["error"]
            assert not any(f.get("ok") for f in frames)
            assert fake.conns == []
        finally:
            await srv.close()

    try:
        asyncio.run(asyncio.wait_for(go(), 30))
    finally:
        shutil.rmtree(d, ignore_errors=True)


def test_app_socket_directory_made_by_the_agent_is_private(tmp_path):
    path = tmp_path / "node" / "bp.sock"

    async def go():
        srv = AppServer(str(path), {})
        await srv.start()
        await srv.close()

    asyncio.run(asyncio.wait_for(go(), 10))
    assert stat.S_IMODE(os.stat(path.parent).st_mode) == 0o700
