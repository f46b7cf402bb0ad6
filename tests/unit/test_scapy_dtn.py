"""Scapy TCPCLv4/BPv7 layers and bundle paths from captures, checked against netemu's own
protocol code and, where tshark is installed, against Wireshark's dissectors."""

from __future__ import annotations

import json
import shutil
import subprocess
from datetime import datetime, timezone

import pytest
from scapy.all import IP, TCP, Ether, raw, rdpcap, wrpcap

from netemu.analysis import pcap
from netemu.analysis.scapy_dtn import (
    TCPCL,
    BPv7,
    TCPCLContactHeader,
    TCPCLSessInit,
    TCPCLXferSegment,
)
from netemu.dtn import tcpcl
from netemu.dtn.bundle import Bundle, datetime_to_dtn_ms
from netemu.run import capture as run_capture

EPOCH = datetime(2026, 1, 1, tzinfo=timezone.utc)


def _bundle(seq: int = 7, size: int = 50, t_s: float = 0.0) -> Bundle:
    created = datetime_to_dtn_ms(EPOCH) + int(t_s * 1000)
    return Bundle.new("ipn:2.11", "ipn:101.10", b"x" * size, lifetime_ms=3_600_000,
                      creation_ms=created, seq=seq)


def _session_bytes(node_ipn: int, bundles: list[Bundle], *, split: int = 0) -> list[bytes]:
    """The sender's side of a TCPCL session carrying ``bundles`` (one transfer each, or
    ``split``-byte segments)."""
    out = [tcpcl.ContactHeader().encode() + tcpcl.SessInit(30, 1 << 20, 1 << 24, f"ipn:{node_ipn}.0").encode()]
    for tid, b in enumerate(bundles, 1):
        data = b.encode()
        if not split:
            out.append(tcpcl.XferSegment(3, tid, data, (tcpcl.transfer_length_item(len(data)),)).encode())
            continue
        parts = [data[i : i + split] for i in range(0, len(data), split)]
        for i, part in enumerate(parts):
            flags = (tcpcl.SEG_START if i == 0 else 0) | (tcpcl.SEG_END if i == len(parts) - 1 else 0)
            ext = (tcpcl.transfer_length_item(len(data)),) if i == 0 else ()
            out.append(tcpcl.XferSegment(flags, tid, part, ext).encode())
    return out


def _flow(src: str, dst: str, messages: list[bytes], t0: float, dt: float = 0.01,
          mss: int = 0, reverse_init: int | None = None, sport: int = 40000) -> list:
    """Packets of a TCP connection src:40000 → dst:4556 carrying ``messages`` (cut at
    ``mss`` bytes when given), starting with a SYN; optionally the receiver's SESS_INIT."""
    isn = 1000
    pkts = []
    syn = Ether() / IP(src=src, dst=dst) / TCP(sport=sport, dport=4556, flags="S", seq=isn)
    syn.time = t0
    pkts.append(syn)
    if reverse_init is not None:
        back = tcpcl.ContactHeader().encode() + tcpcl.SessInit(30, 1 << 20, 1 << 24, f"ipn:{reverse_init}.0").encode()
        p = Ether() / IP(src=dst, dst=src) / TCP(sport=4556, dport=sport, flags="PA", seq=5000 + 1) / back
        p.time = t0 + dt / 2
        pkts.append(p)
    stream = b"".join(messages)
    chunks = [stream[i : i + mss] for i in range(0, len(stream), mss)] if mss else messages
    seq, t = isn + 1, t0
    for c in chunks:
        t += dt
        p = Ether() / IP(src=src, dst=dst) / TCP(sport=sport, dport=4556, flags="PA", seq=seq) / c
        p.time = t
        pkts.append(p)
        seq += len(c)
    return pkts


def test_layers_dissect_messages_and_bundle():
    b = _bundle()
    seg = _session_bytes(2, [b])[1]
    pkt = Ether(raw(Ether() / IP() / TCP(sport=40000, dport=4556) / (seg + tcpcl.Keepalive().encode()
                                                                      + tcpcl.XferAck(3, 1, 99).encode())))
    names = [layer.__name__ for layer in pkt.layers()]
    assert names[3:] == ["TCPCLXferSegment", "TCPCLKeepalive", "TCPCLXferAck"]
    assert pkt[BPv7].bundle_id == b.id == f"ipn:2.11,{datetime_to_dtn_ms(EPOCH)},7"
    assert pkt[BPv7].destination == "ipn:101.10" and pkt[BPv7].valid
    assert pkt[TCPCLXferSegment].transfer_id == 1 and pkt[TCPCLXferSegment].data_len == len(b.encode())


def test_contact_header_and_sess_init():
    first = _session_bytes(5, [])[0]
    pkt = Ether(raw(Ether() / IP() / TCP(sport=4556, dport=40000) / first))
    assert pkt[TCPCLContactHeader].version == 4
    assert pkt[TCPCLSessInit].node_id == b"ipn:5.0" and pkt[TCPCLSessInit].keepalive_s == 30


def test_scapy_built_messages_decode_with_netemu_tcpcl():
    data = _bundle().encode()
    built = raw(TCPCLXferSegment(flags="START+END", transfer_id=9, bundle=BPv7(data)))
    msg, end = tcpcl.decode_message(built)
    assert end == len(built) and msg.transfer_id == 9 and bytes(msg.data) == data
    assert isinstance(TCPCL(built), TCPCLXferSegment)


def test_broken_bundle_falls_back_to_cbor():
    enc = bytearray(_bundle().encode())
    enc[-3] ^= 0xFF  # corrupt the payload block's CRC
    pkt = TCPCL(raw(TCPCLXferSegment(flags="START+END", transfer_id=1, bundle=BPv7(bytes(enc)))))
    assert pkt[BPv7].valid is False and pkt[BPv7].bundle_id == _bundle().id


@pytest.mark.skipif(not shutil.which("tshark"), reason="tshark not installed")
def test_wireshark_agrees_on_bundle_identity(tmp_path):
    b = _bundle(seq=42)
    path = tmp_path / "w.pcap"
    wrpcap(str(path), _flow("10.0.0.2", "10.0.0.1", _session_bytes(2, [b]), 100.0, reverse_init=1))
    out = subprocess.run(
        ["tshark", "-r", str(path), "-Y", "bpv7", "-T", "fields", "-e", "bpv7.primary.src_uri",
         "-e", "bpv7.primary.dst_uri", "-e", "bpv7.create_ts.seqno", "-e", "tcpcl.v4.xfer_id"],
        capture_output=True, text=True, timeout=60,
    ).stdout.split()
    assert out[:3] == ["ipn:2.11", "ipn:101.10", "42"] and int(out[3], 0) == 1, out
    ours = pcap.read_transfers(path)
    assert ours[0].bundle_id == b.id and ours[0].source == "ipn:2.11"


def test_transfers_reassembled_across_segments_and_retransmissions(tmp_path):
    bundles = [_bundle(seq=i, size=3000) for i in range(3)]
    pkts = _flow("10.0.0.2", "10.0.0.1", _session_bytes(2, bundles, split=1000), 50.0, mss=700,
                 reverse_init=1)
    pkts = pkts[:5] + [pkts[4]] + pkts[5:]  # a retransmitted segment
    pkts[6], pkts[7] = pkts[7], pkts[6]  # and two arriving out of order
    wrpcap(str(tmp_path / "r.pcap"), pkts)
    got = pcap.read_transfers(tmp_path / "r.pcap", names={1: "sat-1", 2: "sat-2"})
    assert [t.bundle_id for t in got] == [b.id for b in bundles]
    assert all(t.link == "sat-2->sat-1" for t in got)
    assert all(t.size_bytes == len(bundles[0].encode()) for t in got)
    assert got[0].first_wall < got[0].last_wall <= got[1].first_wall


def _run_with_captures(tmp_path):
    run = tmp_path / "run"
    (run / "captures").mkdir(parents=True)
    plan = {"epoch": "2026-01-01T00:00:00Z", "nodes": {"sat-1": 1, "sat-2": 2, "gs-a": 101},
            "contacts": [{"from": "sat-2", "to": "sat-1", "start_s": 0, "end_s": 1000,
                          "rate_bps": 1e6, "owlt_s": 0.01},
                         {"from": "sat-1", "to": "gs-a", "start_s": 300, "end_s": 600,
                          "rate_bps": 1e6, "owlt_s": 0.01}]}
    (run / "plan.json").write_text(json.dumps(plan))
    clock = {"epoch": "2026-01-01T00:00:00Z", "time_scale": 1.0, "t0_wall": 1_800_000_000.0, "t0_s": 0.0}
    b = _bundle(seq=1, size=200, t_s=40.0)
    hop1 = _flow("10.0.0.2", "10.0.0.1", _session_bytes(2, [b]), 1_800_000_100.0, reverse_init=1)
    hop2 = _flow("10.0.0.1", "10.0.0.101", _session_bytes(1, [b]), 1_800_000_350.0, reverse_init=101)
    # and an early transfer on sat-1 -> gs-a while their contact is down (t = 200 s)
    stray = _flow("10.0.0.1", "10.0.0.101", _session_bytes(1, [_bundle(seq=9)]), 1_800_000_200.0,
                  sport=40001)
    for name, pk, a, bb in (("isl", hop1, "sat-2", "sat-1"), ("gsl", hop2 + stray, "sat-1", "gs-a")):
        wrpcap(str(run / "captures" / f"{name}.pcap"), pk)
        (run / "captures" / f"{name}.pcap.json").write_text(json.dumps({"a": a, "b": bb, "clock": clock}))
    return run, b


def test_bundle_path_hop_by_hop_with_waits(tmp_path):
    run, b = _run_with_captures(tmp_path)
    paths = pcap.bundle_paths_from_run(run)
    hops = paths[b.id]
    assert [h["link"] for h in hops] == ["sat-2->sat-1", "sat-1->gs-a"]
    assert hops[0]["first_t_s"] == pytest.approx(100.01, abs=0.02)
    assert hops[0]["waited_s"] == pytest.approx(60.0, abs=0.05)  # created at 40 s
    assert hops[1]["waited_s"] == pytest.approx(250.0, abs=0.05)  # held for the pass at 300 s


def test_traffic_outside_contacts_from_captures(tmp_path):
    run, _ = _run_with_captures(tmp_path)
    plan = json.loads((run / "plan.json").read_text())
    stray = sum(len(m) for m in _session_bytes(1, [_bundle(seq=9)]))
    assert pcap.outside_contacts_from_captures(run, plan) == stray
    from netemu.analysis import metrics

    m = metrics.compute(run)
    assert m["traffic_outside_contacts_bytes"] == stray
    assert m["traffic_outside_contacts_source"] == "captures"
    # no forwarded-bundle events: link use comes from the captured transfers
    assert m["link_use"]["sat-2->sat-1"]["bundles"] == 1
    assert m["link_use"]["sat-1->gs-a"]["bundles"] == 1
    # the stray session has no SESS_INIT from its receiver, whose address is not in the plan
    assert sum(u["bundles"] for k, u in m["link_use"].items() if k.startswith("sat-1->")) == 2
    assert m["link_use"]["sat-2->sat-1"]["bytes"] == len(_bundle(seq=1, size=200, t_s=40.0).encode())


def test_bring_up_sessions_over_a_contact_up_at_the_window_start_are_inside_it(tmp_path):
    # the agents connect while the clock waits (t < 0): over the ISL, up from the window's
    # start, that is within its contact; over the GSL, whose contact starts at 300 s, not
    run, _ = _run_with_captures(tmp_path)
    (run / "run.json").write_text(json.dumps({"window": {"start_s": 0.0}}))
    plan = json.loads((run / "plan.json").read_text())
    stray = sum(len(m) for m in _session_bytes(1, [_bundle(seq=9)]))
    early_isl = _flow("10.0.0.2", "10.0.0.1", _session_bytes(2, []), 1_800_000_000.0 - 15.0,
                      reverse_init=1, sport=40002)
    early_gsl = _flow("10.0.0.1", "10.0.0.101", _session_bytes(1, []), 1_800_000_000.0 - 10.0,
                      sport=40003)
    cap = run / "captures"
    wrpcap(str(cap / "isl.pcap"), early_isl + list(rdpcap(str(cap / "isl.pcap"))))
    wrpcap(str(cap / "gsl.pcap"), early_gsl + list(rdpcap(str(cap / "gsl.pcap"))))
    gsl_init = sum(len(m) for m in _session_bytes(1, []))
    assert gsl_init > 0
    assert pcap.outside_contacts_from_captures(run, plan) == stray + gsl_init
    # without the window in run.json, a packet before t = 0 is outside every contact
    (run / "run.json").unlink()
    isl_init = sum(len(m) for m in _session_bytes(2, []))
    assert pcap.outside_contacts_from_captures(run, plan) >= stray + gsl_init + isl_init


def test_parse_and_resolve_links(tmp_path):
    assert run_capture.parse_link("tb-1:sanya") == ("tb-1", "sanya")
    assert run_capture.parse_link("tb-1->tb-2") == ("tb-1", "tb-2")
    from netemu.errors import InputError

    with pytest.raises(InputError, match="A:B"):
        run_capture.parse_link("tb1")
    plan = {"epoch": "2026-01-01T00:00:00Z", "nodes": {"s1": 1, "s2": 2, "g": 3},
            "node_info": {"g": {"kind": "ground", "max_links": 1}},
            "contacts": [
                {"from": "s1", "to": "s2", "start_s": 0, "end_s": 100, "rate_bps": 1e6, "owlt_s": 0.01, "kind": "isl"},
                {"from": "s2", "to": "s1", "start_s": 0, "end_s": 100, "rate_bps": 1e6, "owlt_s": 0.01, "kind": "isl"},
                {"from": "s1", "to": "g", "start_s": 10, "end_s": 50, "rate_bps": 1e6, "owlt_s": 0.01, "kind": "gsl"},
                {"from": "g", "to": "s1", "start_s": 10, "end_s": 50, "rate_bps": 1e6, "owlt_s": 0.01, "kind": "gsl"}]}
    p = tmp_path / "plan.json"
    p.write_text(json.dumps(plan))
    iface, bpf = run_capture.resolve_link(p, "s1", "s2")
    assert iface.startswith("s1-eth") and bpf == ""
    iface, bpf = run_capture.resolve_link(p, "s1", "g")
    assert iface == "any" and "host 10.0.0.3" in bpf
    with pytest.raises(InputError, match="never have a contact"):
        run_capture.resolve_link(p, "s2", "g")
    with pytest.raises(InputError, match="no node 'zz'"):
        run_capture.resolve_link(p, "s1", "zz")


def test_tcpdump_command_enters_namespace(tmp_path):
    argv = run_capture.tcpdump_argv("r1-sat-1", "sat-1-eth0", tmp_path / "x.pcap", "host 10.0.0.2")
    assert argv[:4] == ["ip", "netns", "exec", "r1-sat-1"]
    assert argv[4] == "tcpdump" and argv[argv.index("-i") + 1] == "sat-1-eth0"
    assert argv[-2:] == ["host", "10.0.0.2"]
    # frames reach the file as they come, so stopping the capture loses none
    assert "--immediate-mode" in argv and "-U" in argv


def test_capture_section_and_clock():
    assert run_capture.parse_capture_section(["tb-1:sanya"]) == [("tb-1", "sanya")]
    assert run_capture.parse_capture_section({"links": ["a:b"]}) == [("a", "b")]
    from netemu.errors import InputError

    with pytest.raises(InputError, match="capture"):
        run_capture.parse_capture_section({"link": ["a:b"]})
    with pytest.raises(InputError, match=r"capture\[0\]"):
        run_capture.parse_capture_section(["ab"])
    c = run_capture.clock_from_env({"NETEMU_T0_WALL": "100.5", "NETEMU_TIME_SCALE": "10"})
    assert pcap.wall_to_scenario(c, None)(101.5) == pytest.approx(10.0)


def test_clock_from_agent_logs_beats_event_receipt_times(tmp_path):
    run = tmp_path / "run"
    (run / "agents" / "n1").mkdir(parents=True)
    (run / "agents" / "n1" / "agent.jsonl").write_text("\n".join(
        json.dumps({"t": 1000.0 + k, "ts": 10.0 * k, "event": "x"}) for k in range(5)))
    # events received 0.5 s late: a fit on them alone would be 5 scenario seconds off
    (run / "events.jsonl").write_text("\n".join(
        json.dumps({"t_s": 10.0 * k, "wall": 1000.5 + k}) for k in range(5)))
    assert pcap.wall_to_scenario(None, run / "events.jsonl", run)(1002.0) == pytest.approx(20.0)
    assert pcap.wall_to_scenario(None, run / "events.jsonl")(1002.0) == pytest.approx(15.0)


def test_capture_times_follow_the_runs_pauses_and_changes_of_scale(tmp_path):
    """A run paused and sped up (``--view``): its captures' sidecars keep the first
    mapping, run.json has every segment; a packet's scenario time comes from the segments
    (netemu capture --paths, the report's link use)."""
    from netemu.run.pause import clock_record
    from netemu.runtime.clock import ClockSegment, ScenarioClock

    run, b = _run_with_captures(tmp_path)  # sidecars: x1 from t0_wall = 1.8e9 at 0 s
    w0 = 1_800_000_000.0
    segs = [ClockSegment(w0, 0.0, 1.0),
            ClockSegment(w0 + 50, 50.0, 1.0, paused=True),  # paused 30 s of wall time
            ClockSegment(w0 + 80, 50.0, 1.0),
            ClockSegment(w0 + 90, 60.0, 4.0)]  # then x4: wall +100 is 60 + 10 * 4 = 100 s
    record = clock_record(ScenarioClock(EPOCH, 1.0, w0, 0.0), segs, end_wall=w0 + 400)
    assert record["paused_wall_s"] == 30.0 and record["time_scale_end"] == 4.0
    (run / "run.json").write_text(json.dumps({"run": "r", "clock": record}))
    hops = pcap.bundle_paths_from_run(run)[b.id]
    # hop 1 at wall +100 s: 60 + 10 * 4 = 100 s; hop 2 at wall +350 s: 60 + 260 * 4 = 1100 s
    assert hops[0]["first_t_s"] == pytest.approx(100.04, abs=0.05)
    assert hops[1]["first_t_s"] == pytest.approx(1100.04, abs=0.2)
    assert hops[1]["waited_s"] == pytest.approx(1000.0, abs=0.2)
    # without run.json's segments: the sidecar's mapping (350 s), as before
    (run / "run.json").write_text(json.dumps({"run": "r"}))
    assert pcap.bundle_paths_from_run(run)[b.id][1]["first_t_s"] == pytest.approx(350.04, abs=0.2)
