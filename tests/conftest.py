from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared"


def loadgen(*args: str, timeout: float = 120, cwd: Path | None = None, env: dict | None = None):
    """Run the real command line in a child process, as a user would."""
    return subprocess.run(
        [sys.executable, "-m", "loadgen", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        cwd=cwd or ROOT,
        env=env,
    )


@pytest.fixture
def write(tmp_path: Path):
    """Write a file under tmp_path and return its path."""

    def _write(name: str, text: str) -> Path:
        p = tmp_path / name
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_text(text)
        return p

    return _write


FAST_ENDPOINT = """
name: fast-emu
model: llama-2-7b
emulate: {kind: simple, overhead_ms: 1, prefill_tokens_per_s: 200000, tpot_ms: 2, tpot_ms_per_running: 0}
"""
