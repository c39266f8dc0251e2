"""Worker processes on this machine for `loadgen run --workers N`: each is `loadgen worker` pointed at the
master's loopback port, in its own session (a terminal's Ctrl-C reaches only the master, which stops them in
order), and dies with the master even if the master is killed."""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

from loadgen.children import die_with_parent

EXIT_WAIT_S = 10.0
# The command of a worker (`--master HOST:PORT` is appended). The tests' zygote points it at a launcher that forks
# the worker from a process that has done its imports (tests/launcher.py).
WORKER: tuple[str, ...] = (sys.executable, "-m", "loadgen", "worker")


class LocalWorkers:
    def __init__(self, count: int, master: str, logdir: Path):
        self.logs = [open(logdir / f"worker-{i}.log", "w+") for i in range(count)]
        self.procs = [
            subprocess.Popen(
                [*WORKER, "--master", master],
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                preexec_fn=die_with_parent,
                start_new_session=True,
            )
            for log in self.logs
        ]

    def failed(self) -> str | None:
        """The last line of the first worker that has already exited with an error, if any."""
        for proc, log in zip(self.procs, self.logs, strict=True):
            if proc.poll() not in (None, 0):
                log.seek(0)
                lines = log.read().strip().splitlines()
                return lines[-1] if lines else f"a worker process exited with status {proc.returncode}"
        return None

    def stop(self) -> None:
        """After the master's quit they exit by themselves; any still there after a while is asked to stop
        (SIGTERM: it sends what it has and leaves), then killed."""
        deadline = time.monotonic() + EXIT_WAIT_S
        for proc in self.procs:
            try:
                proc.wait(timeout=max(0.0, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                proc.terminate()
        for proc in self.procs:
            try:
                proc.wait(timeout=EXIT_WAIT_S)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        for log in self.logs:
            log.close()
