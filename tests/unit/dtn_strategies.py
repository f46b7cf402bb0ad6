"""Hypothesis strategies for BPv7 fields, shared by the bundle decoder tests."""

from __future__ import annotations

from hypothesis import HealthCheck, settings
from hypothesis import strategies as st

from netemu.dtn.eid import EID


def fuzz_settings(max_examples: int) -> settings:
    return settings(max_examples=max_examples, deadline=None,
                    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])


u64 = st.integers(min_value=0, max_value=2**64 - 1)
#: Integers around the CBOR head boundaries (1-byte, 2/3-byte, up to 64-bit).
small_or_big = st.one_of(st.integers(0, 30), st.integers(0, 70_000), u64)
ipn = st.builds(EID.ipn, small_or_big, small_or_big)
crcs = st.sampled_from([0, 1, 2])


def eids(max_name: int) -> st.SearchStrategy[EID]:
    """ipn, dtn (node names and demux up to ``max_name`` characters) and dtn:none EIDs."""
    name = st.text(alphabet=st.characters(min_codepoint=0x21, max_codepoint=0x7E,
                                          blacklist_characters="/"),
                   min_size=1, max_size=max_name)
    demux = st.text(alphabet=st.characters(min_codepoint=0x21, max_codepoint=0x7E),
                    max_size=max(12, max_name * 2 // 3))
    dtn = st.builds(lambda n, d: EID.dtn(f"//{n}/{d}"), name, demux)
    return st.one_of(ipn, dtn, st.just(EID.parse("dtn:none")))
