"""The netem qdisc request as the kernel reads it: decoded here with pyroute2's own tc
message parser (no kernel needed), so a wrong layout shows without sch_netem."""

from __future__ import annotations

import struct

from pyroute2.netlink.rtnl.tcmsg import tcmsg

from netemu.emulator.netem import RTM_NEWQDISC, netem_request


def decode(body: bytes) -> tcmsg:
    data = struct.pack("=LHHLL", 16 + len(body), RTM_NEWQDISC, 0, 1, 0) + body
    m = tcmsg(data)
    m.decode()
    return m


def test_delay_rate_loss_and_limit_are_where_the_kernel_reads_them():
    m = decode(netem_request(7, 0.020, 1e6, 0.25, 1234))
    assert m["index"] == 7 and m["handle"] == 0x10000 and m["parent"] == 0xFFFFFFFF
    assert m.get_attr("TCA_KIND") == "netem"
    opts = m.get_attr("TCA_OPTIONS")
    assert opts["delay"] == 20_000_000 >> 6  # psched ticks of 64 ns
    assert opts["limit"] == 1234
    assert opts["loss"] == round(0.25 * (2**32 - 1))
    assert opts.get_attr("TCA_NETEM_RATE")["rate"] == 125_000  # bytes/s


def test_no_rate_estimator_attribute():
    """A TCA_RATE (rate estimator) attribute makes the kernel refuse the change (ERANGE):
    the link rate goes only into netem's own options."""
    m = decode(netem_request(3, 0.001, 1e9, 0.0, 1000))
    assert [name for name, _v in m["attrs"]] == ["TCA_KIND", "TCA_OPTIONS"]


def test_latency64_gives_nanoseconds_beyond_the_tick_field():
    body = netem_request(3, 0.0123456789, 0.0, 0.0, 1000)
    assert struct.pack("=HHq", 12, 10, 12_345_679) in body  # TCA_NETEM_LATENCY64, 12 bytes
