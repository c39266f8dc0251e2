"""One way to start a server for the length of a run, whatever it is (the emulator, a llama.cpp engine).

`python -m loadgen.launch ENDPOINT.yaml` serves the endpoint on a free loopback port and prints one line ending in
its base URL; `BackgroundServer` starts that child, reads the line and waits until `/health` answers 200. The CLI,
the tests and the benchmarks all start servers this way.
"""

from __future__ import annotations

import contextlib
import os
import re
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import yaml

from loadgen.children import die_with_parent
from loadgen.launch.needs import missing
from loadgen.spec.endpoint import EndpointSpec


class LaunchError(Exception):
    pass


def _child_setup(cores: set[int] | None) -> None:
    die_with_parent()
    if cores:
        os.sched_setaffinity(0, cores)


URL_LINE = re.compile(r"serving (http://\S+/v1)\s*$")
# The command that serves an endpoint file (its path is appended). The tests' zygote points it at a launcher that
# forks the server from a process that has done its imports (tests/launcher.py).
LAUNCH: tuple[str, ...] = (sys.executable, "-m", "loadgen.launch")


class BackgroundServer:
    """The endpoint's server in a child process on a free loopback port; `url` is its OpenAI base URL. A context
    manager, or call `stop()`."""

    def __init__(
        self,
        endpoint: EndpointSpec,
        workdir: Path,
        timeout_s: float = 120.0,
        cores: set[int] | None = None,
        wait: bool = True,
    ):
        """`workdir` is a private folder that outlives the child process (its spec and log go there); `cores`
        pins the server to those CPUs (a benchmark keeps it off the load generator's core; an engine's
        `launch.cores` pins it from inside). `wait=False` returns once the child is started: call `wait()`."""
        if endpoint.url is not None:
            raise LaunchError(f"endpoint {endpoint.name!r} names a url: there is nothing to start")
        if why := missing(endpoint):
            raise LaunchError(why)
        self.what = "the emulator" if endpoint.emulate is not None else f"the {endpoint.launch.kind} engine"  # type: ignore[union-attr]
        stem = re.sub(r"[^A-Za-z0-9_.-]", "_", endpoint.name)  # a name may be a URL
        spec_file = workdir / f"{stem}.endpoint.yaml"
        spec_file.write_text(yaml.safe_dump(endpoint.model_dump(mode="json")))
        self.log_path = workdir / f"{stem}.log"
        self.log = open(self.log_path, "w+")  # a file, so a chatty child can never block on a pipe
        self.proc = subprocess.Popen(
            [*LAUNCH, str(spec_file)],
            stdout=subprocess.PIPE,
            stderr=self.log,
            text=True,
            preexec_fn=lambda: _child_setup(cores),
            # Its own session: a terminal's Ctrl-C signals loadgen's process group, and the server must keep
            # serving through loadgen's grace period; it still dies with loadgen (above) or when stopped.
            start_new_session=True,
        )
        self.timeout_s = timeout_s
        if wait:
            self.wait()

    def wait(self) -> None:
        """Until the server listens and its `/health` answers 200 (`url` is then set)."""
        line = self.proc.stdout.readline() if self.proc.stdout else ""
        match = URL_LINE.search(line)
        if not match:
            self.stop()
            raise LaunchError(f"{self.what} did not start: {(line + self._log_tail()).strip()[-500:]}")
        self.url = match.group(1)
        deadline = time.monotonic() + self.timeout_s
        while not self._healthy():
            if time.monotonic() > deadline or self.proc.poll() is not None:
                self.stop()
                raise LaunchError(f"{self.what} did not become healthy: {self._log_tail()[-500:]}")
            time.sleep(0.05)

    def _healthy(self) -> bool:
        try:
            with urllib.request.urlopen(self.url.removesuffix("/v1") + "/health", timeout=2) as r:
                return r.status == 200
        except OSError:
            return False

    def _log_tail(self) -> str:
        self.log.flush()
        return self.log_path.read_text(errors="replace")

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        if self.proc.stdout is not None:
            self.proc.stdout.close()
        self.log.close()

    def __enter__(self) -> BackgroundServer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


def start_together(endpoints: list[EndpointSpec], workdir: Path, stack: contextlib.ExitStack) -> list[BackgroundServer]:
    """Start the endpoints' servers at once (each start-up is mostly a model loading, so they overlap), each
    stopped with `stack`, which stops them all should one fail to start."""
    servers = [stack.enter_context(BackgroundServer(e, workdir, wait=False)) for e in endpoints]
    for server in servers:
        server.wait()
    return servers
