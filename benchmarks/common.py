"""Helpers shared by the benchmarks: start the truth server, run loadgen, read its database, check bounds."""

from __future__ import annotations

import subprocess
import sys
import time
from contextlib import contextmanager
from pathlib import Path

import duckdb
import yaml

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent


@contextmanager
def truth_server(ttft_ms: float, itl_ms: float, log: Path | None = None):
    args = [sys.executable, str(HERE / "truth_server.py"), "--ttft-ms", str(ttft_ms), "--itl-ms", str(itl_ms)]
    if log is not None:
        args += ["--log", str(log)]
    proc = subprocess.Popen(args, stdout=subprocess.PIPE, text=True)
    try:
        url = proc.stdout.readline().strip() if proc.stdout else ""
        if not url.startswith("http://"):
            raise SystemExit("the truth server did not start")
        yield url
    finally:
        proc.terminate()
        proc.wait(timeout=10)


def run_loadgen(workload: Path, url: str | None, db: Path, quiet: bool = False) -> None:
    """`loadgen run` in a child process; `url` overrides the workload's endpoint."""
    args = [sys.executable, "-m", "loadgen", "run", str(workload), "--db", str(db)]
    res = subprocess.run(args + (["--endpoint", url] if url else []), capture_output=True, text=True)
    if res.returncode != 0:
        raise SystemExit(f"loadgen run failed ({res.returncode}):\n{res.stderr[-2000:]}")
    if not quiet:
        print(res.stdout)
    if "note:" in res.stderr:
        print(res.stderr[res.stderr.index("note:") :].split("results:")[0].strip())


def loadgen(*args: str) -> str:
    """Any `loadgen` command in a child process, from the repository's root; prints how long it took, and exits
    with its stderr's tail where it failed."""
    t = time.perf_counter()
    res = subprocess.run([sys.executable, "-m", "loadgen", *args], capture_output=True, text=True, cwd=ROOT)
    if res.returncode != 0:
        raise SystemExit(f"loadgen {args[0]} failed ({res.returncode}):\n{res.stderr[-3000:]}")
    print(f"  loadgen {' '.join(Path(a).name if '/' in a else a for a in args)}: {time.perf_counter() - t:.0f} s")
    return res.stdout


def overrides(keys: dict[str, object]) -> list[str]:
    """`--set KEY=VALUE` for each workload key, as a command's arguments."""
    return [a for key, value in keys.items() for a in ("--set", f"{key}={value}")]


def write_workload(path: Path, name: str, endpoint: Path, stages: list[dict]) -> Path:
    """A completions workload of these stages against `endpoint`, written to `path`."""
    path.write_text(
        yaml.safe_dump(
            {"name": name, "endpoint": str(endpoint), "api": "completions", "stop": {"requests": 1}, "stages": stages}
        )
    )
    return path


def query(db: Path, sql: str) -> list[tuple]:
    con = duckdb.connect(str(db), read_only=True)
    try:
        return con.execute(sql).fetchall()
    finally:
        con.close()


class Bounds:
    """Collects figures against their bounds; `finish()` prints the verdict and exits non-zero on a miss."""

    def __init__(self, title: str):
        self.title = title
        self.missed: list[str] = []
        print(f"== {title}")

    def check(self, name: str, value: float, op: str, bound: float, unit: str = "") -> None:
        ok = value <= bound if op == "<=" else value >= bound
        mark = "ok  " if ok else "MISS"
        print(f"  {mark} {name:<44} {value:>12,.3f} {unit:<6} (bound {op} {bound:,} {unit})")
        if not ok:
            self.missed.append(name)

    def finish(self) -> None:
        if self.missed:
            print(f"{self.title}: MISSED {', '.join(self.missed)}")
            raise SystemExit(1)
        print(f"{self.title}: all bounds met")
