"""Server metrics against a real engine: llama.cpp's own server (the `llamacpp` fixture). Its counters, read from
the run's baseline scrape to its final one, must hold exactly the tokens loadgen counted from the streams' usage."""

from __future__ import annotations

import duckdb
import pytest

from conftest import loadgen
from loadgen.server_metrics.scrape import parse

# Two conversations of two turns over one shared system prompt: each second turn resends its first, so the
# engine's prompt cache serves part of every prompt after the first.
SESSIONS = (
    "name: metrics-real\nendpoint: {url}\napi: chat\nload: {{arrival: closed, concurrency: 2}}\n"
    "sessions: {{turns: 2, user_tokens: 16, output_tokens: 8, system_prompts: {{count: 1, tokens: 48}}}}\n"
    "stop: {{requests: 4}}\n"
)
COUNTERS = ("llamacpp:prompt_tokens_total", "llamacpp:prompt_tokens_cached_total", "llamacpp:tokens_predicted_total")


def _rise(con: duckdb.DuckDBPyConnection, table: str, column: str, key: str) -> float:
    """How much `key` grew from the run's first scrape to its last."""
    return con.execute(
        f"SELECT arg_max(value, t_s) - arg_min(value, t_s) FROM {table} WHERE {column} = ?", [key]
    ).fetchone()[0]


@pytest.mark.parametrize("workers", [0, 1], ids=["alone", "one-worker"])
def test_the_counters_rise_by_exactly_the_runs_tokens(llamacpp, write, tmp_path, workers):
    """The pre-run probes (identification, the endpoint check, text calibration) come before the baseline and the
    last request's tokens before the final scrape: the run's own tokens, no more and no fewer."""
    db = tmp_path / "r.duckdb"
    w = write("w.yaml", SESSIONS.format(url=llamacpp))
    res = loadgen("run", str(w), "--db", str(db), *(["--workers", str(workers)] if workers else []), timeout=300)
    assert res.returncode == 0, res.stderr
    con = duckdb.connect(str(db), read_only=True)
    ok, prompt, cached, output, first_sent, last_end = con.execute(
        "SELECT count(*) FILTER (WHERE status = 'ok'), sum(server_prompt_tokens), sum(cached_tokens), "
        "sum(output_tokens), min(sent_s), max(end_s) FROM requests"
    ).fetchone()
    assert ok == 4 and cached > 0  # the second turns reused their first turns' prompts
    first, last = con.execute("SELECT min(t_s), max(t_s) FROM server_metrics").fetchone()
    assert first < first_sent and last > last_end  # a baseline before the first send, a final after the last end
    assert first == 0.0 or workers  # alone, the baseline comes before the clock starts: stamped 0
    processed, hit, predicted = (_rise(con, "server_metrics", "name", n) for n in COUNTERS)
    assert (processed + hit, hit, predicted) == (prompt, cached, output)
    series = {s: _rise(con, "server_series", "series", s) for s in ("prompt_tokens", "prefix_cache_queries")}
    series["prefix_cache_hits"] = _rise(con, "server_series", "series", "prefix_cache_hits")
    series["generation_tokens"] = _rise(con, "server_series", "series", "generation_tokens")
    assert series == {
        "prompt_tokens": prompt,
        "prefix_cache_queries": prompt,
        "prefix_cache_hits": cached,
        "generation_tokens": output,
    }


def test_a_llamacpp_page_maps_onto_the_canonical_series(tmp_path):
    """A prompt is what llama.cpp computed plus what it reused; its KV gauge is gone from current builds."""
    from loadgen.store import Store
    from loadgen.store.read import reading

    page = (
        "# TYPE llamacpp:prompt_tokens_total counter\nllamacpp:prompt_tokens_total 26\n"
        "# TYPE llamacpp:prompt_tokens_cached_total counter\nllamacpp:prompt_tokens_cached_total 16\n"
        "# TYPE llamacpp:tokens_predicted_total counter\nllamacpp:tokens_predicted_total 10\n"
        "# TYPE llamacpp:requests_processing gauge\nllamacpp:requests_processing 3\n"
        "# TYPE llamacpp:requests_deferred gauge\nllamacpp:requests_deferred 1\n"
    )
    store = Store(tmp_path / "m.duckdb")
    store.write_server_metrics("r", parse(page, 1.0))
    store.close()
    with reading(tmp_path / "m.duckdb") as con:
        series = dict(con.execute("SELECT series, value FROM server_series").fetchall())
    assert series == {
        "prompt_tokens": 42.0,
        "prefix_cache_queries": 42.0,
        "prefix_cache_hits": 16.0,
        "generation_tokens": 10.0,
        "running": 3.0,
        "waiting": 1.0,
    }
