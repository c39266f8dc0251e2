from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT / "tests" / "data"  # real trace samples, with their licenses (tests/data/README.md)


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


# An emulated H100 (steps of about 6 ms); tests that need slower steps raise overhead_ms.
FAST_ENDPOINT = """
name: fast-emu
model: llama-2-7b
emulate: {engine: gpu, hardware: h100-sxm, hardware_overrides: {overhead_ms: 0.2}}
"""


def with_faults(faults: str) -> str:
    """FAST_ENDPOINT with emulator fault knobs, e.g. with_faults("drop_rate: 0.1")."""
    return FAST_ENDPOINT.rstrip().removesuffix("}") + f", faults: {{{faults}}}}}\n"


def run_workload(write, tmp_path: Path, endpoint: str, workload: str, db_name: str = "r.duckdb"):
    """Write an endpoint and a workload (which names ep.yaml), run it, and return the run's result and database."""
    write("ep.yaml", endpoint)
    w = write("w.yaml", workload)
    db = tmp_path / db_name
    return loadgen("run", str(w), "--db", str(db)), db
