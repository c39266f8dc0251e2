"""Start an endpoint's emulator as a background process for the length of a run."""

from __future__ import annotations

import re
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import yaml

from loadgen.children import die_with_parent
from loadgen.spec.endpoint import EndpointSpec


class LaunchError(Exception):
    pass


class BackgroundEmulator:
    """The emulator in a child process (`python -m loadgen.emulator`) on a free loopback port; `url` is its
    OpenAI base URL."""

    def __init__(self, endpoint: EndpointSpec, workdir: Path, timeout_s: float = 30.0):
        """`workdir` is a private temporary folder that outlives the child process."""
        spec_file = workdir / "endpoint.yaml"
        spec_file.write_text(yaml.safe_dump(endpoint.model_dump(mode="json")))
        self.log = open(workdir / "emulator.log", "w+")  # a file, so a chatty child can never block on a pipe
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "loadgen.emulator", str(spec_file)],
            stdout=subprocess.PIPE,
            stderr=self.log,
            text=True,
            preexec_fn=die_with_parent,
            # Its own session: a terminal's Ctrl-C signals loadgen's process group, and the emulator must keep
            # serving through loadgen's grace period; it still dies with loadgen (above) or when stopped.
            start_new_session=True,
        )
        line = self.proc.stdout.readline() if self.proc.stdout else ""
        match = re.search(r"(http://\S+/v1)", line)
        if not match:
            self.stop()
            self.log.seek(0)
            raise LaunchError(f"the emulator did not start: {(line + self.log.read()).strip()[-500:]}")
        self.url = match.group(1)
        deadline = time.monotonic() + timeout_s
        while True:
            try:
                with urllib.request.urlopen(self.url.removesuffix("/v1") + "/health", timeout=2) as r:
                    if r.status == 200:
                        break
            except OSError:
                pass
            if time.monotonic() > deadline or self.proc.poll() is not None:
                self.stop()
                raise LaunchError("the emulator did not become healthy")
            time.sleep(0.05)

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        if self.proc.stdout is not None:
            self.proc.stdout.close()
        self.log.close()
