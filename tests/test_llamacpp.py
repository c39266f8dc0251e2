"""Against a real engine nobody here wrote: llama.cpp's own C++ server (the xllamacpp wheel) with the packaged
Gemma-3-270M, started as a run starts the emulator. The server's own account is the truth loadgen must match."""

from __future__ import annotations

import duckdb
import orjson

from conftest import ROOT, loadgen


def small_workload(write, endpoint: str, api: str = "completions", n: int = 4, concurrency: int = 2) -> str:
    return str(
        write(
            f"w-{api}.yaml",
            f"name: real-{api}\nendpoint: {endpoint}\napi: {api}\n"
            f"load: {{arrival: closed, concurrency: {concurrency}}}\n"
            f"requests: {{prompt_tokens: 32, output_tokens: 8}}\nstop: {{requests: {n}}}\n",
        )
    )


def test_an_endpoint_file_starts_the_engine_and_stops_it(write, tmp_path):
    """`launch: {kind: llamacpp}` starts llama.cpp's server for the run, as `emulate:` starts the emulator."""
    db = tmp_path / "r.duckdb"
    w = small_workload(write, str(ROOT / "endpoints" / "llamacpp-gemma.yaml"))
    res = loadgen("run", w, "--db", str(db), timeout=300)
    assert res.returncode == 0, res.stderr
    con = duckdb.connect(str(db), read_only=True)
    assert con.execute("SELECT status, count(*) FROM requests GROUP BY 1").fetchall() == [("ok", 4)]
    (spec,) = con.execute("SELECT spec FROM runs").fetchone()
    endpoint = orjson.loads(spec)["endpoint"]
    # The family is known (loadgen started it); the model is the one the engine lists, not a default.
    assert endpoint["server"] == "llamacpp"
    assert endpoint["model"] == "gemma-3-270m-q4_k_m" and endpoint["detected"] == {"model": "GET /v1/models"}


def test_a_url_is_identified_by_what_the_server_says(llamacpp, write, tmp_path):
    """Given only a URL, the family comes from llama.cpp's /props and the model from /v1/models; both stored."""
    db = tmp_path / "r.duckdb"
    res = loadgen("run", small_workload(write, llamacpp), "--db", str(db), timeout=300)
    assert res.returncode == 0, res.stderr
    con = duckdb.connect(str(db), read_only=True)
    (spec, note) = con.execute("SELECT spec, note FROM runs").fetchone()
    endpoint = orjson.loads(spec)["endpoint"]
    assert (endpoint["server"], endpoint["model"]) == ("llamacpp", "gemma-3-270m-q4_k_m")
    assert endpoint["detected"] == {"server": "GET /props", "model": "GET /v1/models"}
    assert "assumed" not in (note or "")
    assert "token-ID" not in res.stderr  # the native server takes token-ID prompts


def test_a_wrong_url_fails_fast_with_what_the_server_answered(llamacpp, write, tmp_path):
    """A path the engine does not serve, or a port nobody listens on: exit 1 at once, one line, no run stored."""
    for url, said in [(llamacpp + "/api", "answered HTTP 404"), ("http://127.0.0.1:9/v1", "cannot reach")]:
        db = tmp_path / "r.duckdb"
        res = loadgen("run", small_workload(write, url), "--db", str(db), timeout=120)
        assert res.returncode == 1 and said in res.stderr, res.stderr
        assert "Traceback" not in res.stderr and not db.exists()


PHASES = """
name: cpu-phases
endpoint: x
api: completions
requests: {prompt_tokens: 16, output_tokens: 16}
stages:
  - name: p64
    phase: prefill
    load: {arrival: closed, concurrency: 1}
    requests: {prompt_tokens: 64, output_tokens: 1}
    stop: {requests: 1}
  - name: p256
    phase: prefill
    load: {arrival: closed, concurrency: 1}
    requests: {prompt_tokens: 256, output_tokens: 1}
    stop: {requests: 1}
  - {name: b1, phase: decode, load: {arrival: closed, concurrency: 1}, stop: {requests: 2}}
  - {name: b4, phase: decode, load: {arrival: closed, concurrency: 4}, stop: {requests: 4}}
"""


def test_a_study_with_the_real_engine_states_what_it_measured(llamacpp, write, tmp_path):
    """The real engine beside an emulated H100: decode throughput rises with batch while per-user TPOT rises; the
    seed's GPU-versus-GroqRack verdicts are not given on a pair they do not describe, and the H100 wins both
    phases, so there is no split to predict; the report reads the database."""
    db = tmp_path / "study.duckdb"
    w = write("phases.yaml", PHASES)
    h100 = str(ROOT / "endpoints" / "emulated-h100.yaml")
    res = loadgen("study", str(w), "--endpoints", llamacpp, h100, "--db", str(db), timeout=300)
    assert res.returncode == 0, res.stderr
    con = duckdb.connect(str(db), read_only=True)
    (name,) = con.execute("SELECT endpoint FROM runs WHERE spec->>'$.endpoint.server' = 'llamacpp'").fetchone()
    (b1_tps, b1_tpot), (b4_tps, b4_tpot) = con.execute(
        "SELECT decode_tokens_per_s, tpot_p50_ms FROM decode WHERE endpoint = ? ORDER BY batch", [name]
    ).fetchall()
    assert b4_tps > b1_tps and b4_tpot > b1_tpot
    out = " ".join(res.stdout.split())
    assert "no GPU and GroqRack" in out and "as the study" not in out
    assert "has both the lowest TTFT at the longest prompt and the lowest TPOT at batch 1: no split" in out
    report = loadgen("report", str(db), "--out", str(tmp_path / "report"))
    assert report.returncode == 0, report.stderr
    assert (tmp_path / "report" / "index.html").exists()
