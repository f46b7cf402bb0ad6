"""The security suite reuses the agent harness of the integration tests (a stand-in core,
agent subprocesses)."""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "integration"))
