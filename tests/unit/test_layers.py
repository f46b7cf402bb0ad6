"""The import contracts of pyproject.toml ([tool.importlinter]) hold, checked the way
``scripts/dev check`` checks them: over the package laid out as installed."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_import_contracts_hold():
    env = {**os.environ, "DEV_VENV": sys.prefix}  # the environment running the tests
    p = subprocess.run([str(ROOT / "scripts" / "dev"), "check", "imports"], cwd=ROOT, env=env,
                       capture_output=True, text=True, timeout=120)
    assert p.returncode == 0, p.stdout[-4000:] + p.stderr[-2000:]
    # exhaustive: a new subpackage of netemu that no layer names breaks the contract too
    assert "Contracts: 3 kept, 0 broken." in p.stdout


def test_the_checked_layout_is_the_installed_one():
    """scripts/dev copies netemu/ and routing/ (as netemu/routing) for lint-imports and
    mypy: that must stay what pyproject's package-dir installs."""
    text = (ROOT / "pyproject.toml").read_text()
    m = re.search(r"^package-dir = \{(.*)\}$", text, re.M)
    assert m is not None
    mapping = dict(re.findall(r'"([\w.]+)"\s*=\s*"([\w./]+)"', m.group(1)))
    assert mapping == {"netemu": "netemu", "netemu.routing": "routing"}
    dev = (ROOT / "scripts" / "dev").read_text()
    assert 'cp -rp netemu "$LAYOUT/netemu"' in dev
    assert 'cp -rp routing "$LAYOUT/netemu/routing"' in dev

