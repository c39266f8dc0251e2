"""Scale-out: the highest Poisson rate loadgen holds with 1 process and with 2 workers, on this machine.

Against the truth server without delays (each 16-token answer written at once, so that the client, not the
server, is the bottleneck), each setting's rate is searched (doubling, then bisecting), the two searches taking
turns so that a slow spell of this shared machine falls on both alike. A rate holds when the run's lag p99 <= 5
ms, loadgen's own read-delay p99 <= 1 ms (every worker's) and no request fails, in most of three trials (a p99
over 8 s is noisy; the same rule for both settings). Bound: 2 workers hold >= 1.6x the rate of 1.

Printed beside it: each process's CPU share (master, workers, server) over the load and the share of that time
it was runnable but waiting for a CPU (both from /proc/PID/task/*/schedstat, sampled every 0.25 s); loadgen's
client CPU per streamed token; the master's CPU per row received: the inputs of docs/benchmarks.md's capacity model.

    python benchmarks/scale_out.py
"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Generator
from dataclasses import dataclass
from pathlib import Path

import orjson
import psutil
from common import Bounds, query, truth_server

OUTPUT, DURATION_S, SAMPLE_S = 16, 8.0, 0.25
LAG_P99_MS, READ_DELAY_P99_MS = 5.0, 1.0
START_RATE, MAX_RATE, BISECTIONS = 100.0, 6400.0, 4
# A rate holds when most of its trials hold: the bounds are p99s of an 8 s run on a shared VM, where one trial
# in several meets a burst of interference (a p99 several times the others at the same rate).
REPEATS = 3
BOUND_RATIO = 1.6

WORKLOAD = f"""
name: scale-out
endpoint: http://127.0.0.1:9/v1
seed: 5
load: {{arrival: poisson, rate: 100, concurrency: 256}}
requests: {{prompt_tokens: 32, output_tokens: {OUTPUT}}}
stop: {{duration_s: {DURATION_S}}}
"""


@dataclass
class Trial:
    rate: float
    holds: bool
    lag_p99_ms: float
    read_delay_p99_ms: float
    errors: int
    tokens_per_s: float
    rows: int
    cpu: dict[str, float]  # process -> CPU share of one core over the load window
    waits: dict[str, float]  # process -> share of the window it was runnable but waited for a CPU
    window_s: float


def _sched(p: psutil.Process) -> tuple[float, float] | None:
    """Seconds on a CPU and seconds runnable but waiting for one (the kernel's run-queue delay), summed over the
    process's threads (a database writer thread, ZeroMQ's I/O thread)."""
    on_cpu = waiting = 0
    try:
        tasks = list(Path(f"/proc/{p.pid}/task").iterdir())
    except OSError:
        return None  # the process has ended
    for task in tasks:
        try:
            ran, waited, _ = (task / "schedstat").read_text().split()
        except OSError:
            continue  # a thread that has just ended
        on_cpu, waiting = on_cpu + int(ran), waiting + int(waited)
    return on_cpu / 1e9, waiting / 1e9


def trial(workload: Path, url: str, server: psutil.Process, workers: int, rate: float, tmp: Path) -> Trial:
    db = tmp / f"w{workers}-{rate:.0f}-{len(list(tmp.glob('*.duckdb')))}.duckdb"
    log = tmp / "truth.jsonl"
    log_at = log.stat().st_size if log.exists() else 0
    args = [sys.executable, "-m", "loadgen", "run", str(workload), "--db", str(db), "--endpoint", url]
    args += ["--set", f"load.rate={rate}", "--workers", str(workers)]
    proc = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    master = psutil.Process(proc.pid)
    samples: list[tuple[float, dict[str, tuple[float, float]]]] = []
    names = {"server": server, "master" if workers > 1 else "loadgen": master}
    while proc.poll() is None:
        if len(names) < 2 + (workers if workers > 1 else 0):
            try:
                kids = sorted((c for c in master.children() if "worker" in c.cmdline()), key=lambda c: c.pid)
            except psutil.Error:
                kids = []
            if len(kids) == workers:
                names.update({f"worker {i}": c for i, c in enumerate(kids)})
        cpu = {name: s for name, p in names.items() if (s := _sched(p)) is not None}
        samples.append((time.monotonic(), cpu))
        time.sleep(SAMPLE_S)
    err = proc.stderr.read() if proc.stderr else ""
    if proc.returncode != 0:
        raise SystemExit(f"loadgen run failed ({proc.returncode}):\n{err[-2000:]}")
    # The load window: from the server's first answer to its last (its log, on CLOCK_MONOTONIC like these
    # samples), narrowed to the samples inside it.
    # (The server's log is buffered: a trial's last lines may still be unwritten, an earlier one's appear late.)
    with open(log, "rb") as f:
        f.seek(log_at)
        records = [orjson.loads(line) for line in f.read().splitlines()[:-1]]
    # The run's own requests (not the endpoint check's one-token ones), from this trial.
    sent = [r["sent"][0] for r in records if r["max_tokens"] == OUTPUT and r["sent"][0] >= samples[0][0]]
    inside = [i for i, (t, _) in enumerate(samples) if sent and min(sent) <= t <= max(sent)]
    if len(inside) < 2:
        raise SystemExit(f"the load window at {rate:.0f} req/s held fewer than two CPU samples")
    (t0, c0), (t1, c1) = samples[inside[0]], samples[inside[-1]]
    window = t1 - t0
    cpu = {name: (c1[name][0] - c0[name][0]) / window for name in c1 if name in c0}
    waits = {name: (c1[name][1] - c0[name][1]) / window for name in c1 if name in c0}
    ((lag, tokens, errors, not_sent, requests),) = query(
        db, "SELECT lag_p99_ms, output_tokens_per_s, errors, not_sent, requests FROM summary"
    )
    ((delay,),) = query(db, "SELECT max(client_delay_p99_ms) FROM workers")
    holds = lag <= LAG_P99_MS and delay <= READ_DELAY_P99_MS and errors == 0 and not_sent == 0
    return Trial(rate, holds, lag, delay, errors + not_sent, tokens or 0.0, requests, cpu, waits, window)


def measure(workload: Path, url: str, server: psutil.Process, workers: int, rate: float, tmp: Path) -> Trial:
    """The rate's trials, until most of them have held or failed; the last of the majority."""
    held: list[Trial] = []
    failed: list[Trial] = []
    while max(len(held), len(failed)) <= REPEATS // 2:
        t = trial(workload, url, server, workers, rate, tmp)
        (held if t.holds else failed).append(t)
        verdict = "holds" if t.holds else "fails"
        print(
            f"  {workers} worker(s) {rate:7.0f} req/s: {verdict}  lag p99 {t.lag_p99_ms:6.2f} ms, "
            f"read delay p99 {t.read_delay_p99_ms:5.2f} ms, errors {t.errors}; CPU "
            + ", ".join(f"{k} {v:.0%}" for k, v in t.cpu.items())
            + "; waiting for a CPU "
            + ", ".join(f"{k} {v:.1%}" for k, v in t.waits.items()),
            flush=True,
        )
    return held[-1] if len(held) > len(failed) else failed[-1]


def search() -> Generator[float, Trial, Trial | None]:
    """Rates to try: double until one fails, then bisect between the last that held and the first that failed.
    Sent each rate's verdict; returns the highest rate that held."""
    good: Trial | None = None
    rate = START_RATE
    while rate <= MAX_RATE:
        t = yield rate
        if not t.holds:
            break
        good, rate = t, rate * 2
    else:
        return good
    low, high = (good.rate if good else 0.0), rate
    for _ in range(BISECTIONS):
        mid = (low + high) / 2
        t = yield mid
        if t.holds:
            good, low = t, mid
        else:
            high = mid
    return good


def main() -> None:
    print(
        f"this machine: {os.cpu_count()} CPUs; each trial {DURATION_S:.0f} s of Poisson arrivals, {OUTPUT} tokens out"
    )
    with tempfile.TemporaryDirectory() as tmp_name, truth_server(0, 0, Path(tmp_name) / "truth.jsonl") as url:
        tmp = Path(tmp_name)
        workload = tmp / "w.yaml"
        workload.write_text(WORKLOAD)
        server = next(p for p in psutil.Process().children() if "truth_server.py" in " ".join(p.cmdline()))
        # The two searches take turns, so that a slow spell of this shared machine falls on both alike.
        searches = {1: search(), 2: search()}
        rates = {w: next(s) for w, s in searches.items()}
        found: dict[int, Trial | None] = {}
        while rates:
            for workers in list(rates):
                t = measure(workload, url, server, workers, rates[workers], tmp)
                try:
                    rates[workers] = searches[workers].send(t)
                except StopIteration as done:
                    found[workers] = done.value
                    del rates[workers]
        one, two = found[1], found[2]
    b = Bounds("scale-out: Poisson rate held (lag p99 <= 5 ms, read delay p99 <= 1 ms, no errors)")
    if one is None or two is None:
        print("  a setting held no rate at all")
        raise SystemExit(1)
    for label, t in (("1 process", one), ("2 workers", two)):
        shares = ", ".join(f"{k} {v:.0%}" for k, v in t.cpu.items())
        waits = ", ".join(f"{k} {v:.1%}" for k, v in t.waits.items())
        loadgen_cpu = sum(v for k, v in t.cpu.items() if k != "server")
        per_token_us = loadgen_cpu / t.tokens_per_s * 1e6 if t.tokens_per_s else float("nan")
        print(f"  {label}: {t.rate:,.0f} req/s, {t.tokens_per_s:,.0f} tok/s; CPU (share of one core): {shares}")
        print(f"    runnable but waiting for a CPU (share of the load's time): {waits}")
        print(f"    loadgen client CPU per streamed token: {per_token_us:.1f} us (all its processes)")
        if "master" in t.cpu:
            rows_per_s = t.rows / DURATION_S
            per_row_us = t.cpu["master"] / rows_per_s * 1e6
            print(f"    master CPU per row received: {per_row_us:.0f} us ({rows_per_s:,.0f} rows/s)")
    b.check("rate held, 1 process", one.rate, ">=", 1.0, "req/s")
    b.check("rate held, 2 workers", two.rate, ">=", 1.0, "req/s")
    b.check("2 workers / 1 process", two.rate / one.rate, ">=", BOUND_RATIO, "x")
    b.finish()


if __name__ == "__main__":
    main()
