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
