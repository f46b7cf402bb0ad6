"""``netemu test --view``: the scenario runner serves the view of its run, bridged from
the run's broker with the run's credentials (tiny.yaml, 60 s at ×10, no agents)."""

from __future__ import annotations

import asyncio
import json
import re
import subprocess
import sys
import uuid
from pathlib import Path

import aiohttp
import pytest

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]


def test_netemu_test_view_streams_the_runs_links(tmp_path: Path) -> None:
    sc = tmp_path / "tiny-view.yaml"
    sc.write_text((ROOT / "topologies" / "tiny.yaml").read_text()
                  + "\nemulation: {start_s: 0, duration_s: 60, time_scale: 10, agents: false}\n")
    proc = subprocess.Popen(
        [sys.executable, "-m", "netemu", "test", str(sc), "--view", "--no-report",
         "--out", str(tmp_path / "runs"), "--run-name", f"tv{uuid.uuid4().hex[:4]}"],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, cwd=tmp_path)
    out: list[str] = []
    try:
        assert proc.stdout is not None
        url = None
        for line in proc.stdout:
            out.append(line)
            m = re.search(r"live view at (http://127\.0\.0\.1:\d+/)", line)
            if m:
                url = m.group(1)
                break
        assert url, "".join(out)

        async def first_link_up() -> tuple[str, dict]:
            async with aiohttp.ClientSession() as s, s.ws_connect(url + "ws") as ws:
                while True:
                    m = json.loads((await ws.receive(timeout=90)).data)
                    up = {k: v for k, v in m.get("links", {}).items() if v["state"] == "up"}
                    if up and m.get("t_s") is not None:
                        return m["type"], next(iter(up.values()))

        kind, link = asyncio.run(first_link_up())
        assert kind in ("hello", "tick") and link["rate_bps"] > 0
    finally:
        rest, _ = proc.communicate(timeout=180)
        out.append(rest)
    assert proc.returncode == 0, "".join(out)
