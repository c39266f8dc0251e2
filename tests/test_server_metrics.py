"""The server's side of a run: its Prometheus metrics sampled beside the load, mapped onto canonical series."""

from __future__ import annotations

import asyncio

import duckdb
import pytest
import yaml
from aiohttp import web

from conftest import FAST_ENDPOINT, ROOT, emulator_in_thread, loadgen, run_workload
from loadgen.server_metrics.names import NAMES, SERIES
from loadgen.server_metrics.scrape import parse
from loadgen.spec.endpoint import EndpointSpec
from loadgen.store import Store
from loadgen.store.read import reading

# Three waves of four, about 1.4 s each on the emulated H100: a dozen quarter-second ticks while requests run.
CLOSED_4 = (
    "name: m\nendpoint: ep.yaml\nload: {arrival: closed, concurrency: 4}\n"
    "requests: {prompt_tokens: 256, output_tokens: 200}\nstop: {requests: 12}\n"
)
# Two short waves (about a second in all): a few ticks, for what needs a run but not its samples.
SHORT = CLOSED_4.replace("output_tokens: 200}\nstop: {requests: 12}", "output_tokens: 64}\nstop: {requests: 8}")


@pytest.mark.slow
def test_a_run_samples_the_servers_metrics_on_its_own_clock(write, tmp_path):
    r, db = run_workload(write, tmp_path, FAST_ENDPOINT, CLOSED_4)
    assert r.returncode == 0, r.stderr
    con = duckdb.connect(str(db), read_only=True)
    (span,) = con.execute("SELECT max(end_s) FROM requests").fetchone()
    scrapes, first, last = con.execute("SELECT count(DISTINCT t_s), min(t_s), max(t_s) FROM server_metrics").fetchone()
    assert scrapes >= span / 0.25 * 0.6  # about one every 0.25 s
    assert first == 0.0 and span < last <= span + 1.0  # the baseline, as the load starts; the final scrape
    series = dict(
        con.execute("SELECT series, avg(value) FROM server_series WHERE t_s < ? GROUP BY series", [span]).fetchall()
    )
    assert set(series) >= {"running", "waiting", "kv_usage", "prompt_tokens", "generation_tokens"}
    assert 3.0 <= series["running"] <= 4.0 and series["waiting"] < 0.5 and 0 < series["kv_usage"] < 0.1
    # Counters only grow, and from the baseline (after the pre-run probes) to the final scrape (after the last
    # request ended) by exactly the run's tokens.
    tokens = [
        v
        for (v,) in con.execute(
            "SELECT value FROM server_series WHERE series = 'generation_tokens' ORDER BY t_s"
        ).fetchall()
    ]
    (output,) = con.execute("SELECT sum(output_tokens) FROM requests").fetchone()
    assert tokens == sorted(tokens) and tokens[-1] - tokens[0] == output == 12 * 200
    # vLLM's TTFT histogram: every request counted once, the server's mean TTFT a little under the client's (the
    # HTTP path is not in it).
    rise = dict(
        con.execute(
            "SELECT series, max(value) - min(value) FROM server_series WHERE series LIKE 'ttft_%' GROUP BY series"
        ).fetchall()
    )
    (client_ms,) = con.execute("SELECT avg(ttft_ms) FROM requests").fetchone()
    assert rise["ttft_count"] == 12 and 0 < client_ms - rise["ttft_seconds"] / 12 * 1000 < 0.5 * client_ms
    # Each request with the server's state as last scraped before it was sent: the first wave finds the baseline
    # (nothing running), the later ones the other users' requests (2.67 on average alone: 0 four times, then 4;
    # 1.7 once, on a suite that ran slow, where the waves drift apart).
    state = con.execute("SELECT count(*), count(running), avg(running) FROM request_server_state").fetchone()
    assert state[0] == 12 and state[1] >= 10 and 1.0 <= state[2] <= 4.0


def test_off_with_an_option(write, tmp_path):
    write("ep.yaml", FAST_ENDPOINT)
    w = write("w.yaml", SHORT)
    r = loadgen("run", str(w), "--db", str(tmp_path / "r.duckdb"), "--server-metrics", "0")
    assert r.returncode == 0, r.stderr
    con = duckdb.connect(str(tmp_path / "r.duckdb"), read_only=True)
    assert con.execute("SELECT count(*) FROM server_metrics").fetchone() == (0,)
    bad = loadgen("run", str(w), "--server-metrics", "-1")
    assert bad.returncode == 2 and "--server-metrics" in bad.stderr


def _serving(page: str | None):
    """A middleware that answers /metrics with `page` (None: 404), as a server without good metrics would."""

    @web.middleware
    async def metrics(request, handler):
        if request.path != "/metrics":
            return await handler(request)
        if page is None:
            raise web.HTTPNotFound()
        return web.Response(text=page)

    return metrics


@pytest.mark.parametrize(
    ("page", "said"),
    [(None, "HTTP 404: not sampled"), ("{not: prometheus} at all\n", "not Prometheus text")],
)
def test_a_missing_or_broken_metrics_page_never_fails_the_run_and_is_noted_once(write, tmp_path, page, said):
    spec = EndpointSpec.model_validate(
        {"name": "e", "emulate": {"engine": "gpu", "hardware": "h100-sxm", "hardware_overrides": {"overhead_ms": 0.2}}}
    )
    with emulator_in_thread(spec, _serving(page)) as url:
        write("ep.yaml", f"name: e\nurl: {url}\n")
        w = write("w.yaml", SHORT)
        r = loadgen("run", str(w), "--db", str(tmp_path / "r.duckdb"))
    assert r.returncode == 0, r.stderr
    assert r.stderr.count("server metrics (") == 1 and said in r.stderr
    con = duckdb.connect(str(tmp_path / "r.duckdb"), read_only=True)
    status, note = con.execute("SELECT status, note FROM runs").fetchone()
    assert status == "completed" and said in note
    assert con.execute("SELECT count(*) FROM requests WHERE status = 'ok'").fetchone() == (8,)


@pytest.mark.slow
def test_a_slow_metrics_page_still_gives_samples_one_scrape_at_a_time(write, tmp_path):
    """A page that takes longer than a tick (2.5 s, over the 2 s that once timed out) is waited for: every answer
    is a sample, the ticks never stack fetches, and the final scrape still comes after the last request."""
    flight = {"now": 0, "most": 0}

    @web.middleware
    async def slow(request, handler):
        if request.path != "/metrics":
            return await handler(request)
        flight["now"] += 1
        flight["most"] = max(flight["most"], flight["now"])
        try:
            await asyncio.sleep(2.5)
            return await handler(request)
        finally:
            flight["now"] -= 1

    with emulator_in_thread(EndpointSpec.model_validate(yaml.safe_load(FAST_ENDPOINT)), slow) as url:
        write("ep.yaml", f"name: e\nurl: {url}\n")
        r = loadgen("run", str(write("w.yaml", CLOSED_4)), "--db", str(tmp_path / "r.duckdb"))
    assert r.returncode == 0, r.stderr
    con = duckdb.connect(str(tmp_path / "r.duckdb"), read_only=True)
    (note,) = con.execute("SELECT note FROM runs").fetchone()
    assert "metrics" not in (note or ""), note  # the client may say it was saturated by other tests beside it
    (span, output) = con.execute("SELECT max(end_s), sum(output_tokens) FROM requests").fetchone()
    times = [t for (t,) in con.execute("SELECT DISTINCT t_s FROM server_metrics ORDER BY t_s").fetchall()]
    assert times[0] == 0.0 and times[-1] > span and len(times) >= 3 and flight["most"] == 1
    rise = con.execute(
        "SELECT arg_max(value, t_s) - arg_min(value, t_s) FROM server_series WHERE series = 'generation_tokens'"
    ).fetchone()
    assert rise == (output,)


VLLM_V1 = """# HELP vllm:num_requests_running Number of requests in model execution batches.
# TYPE vllm:num_requests_running gauge
vllm:num_requests_running{engine="0",model_name="m"} 5.0
vllm:num_requests_running{engine="1",model_name="m"} 2.0
# TYPE vllm:kv_cache_usage_perc gauge
vllm:kv_cache_usage_perc{engine="0",model_name="m"} 0.25
vllm:kv_cache_usage_perc{engine="1",model_name="m"} 0.5
# TYPE vllm:prompt_tokens counter
vllm:prompt_tokens_total{engine="0",model_name="m"} 1000.0
vllm:prompt_tokens_created{engine="0",model_name="m"} 1.7e9
# TYPE vllm:time_to_first_token_seconds histogram
vllm:time_to_first_token_seconds_bucket{le="0.1",model_name="m"} 3.0
vllm:time_to_first_token_seconds_bucket{le="+Inf",model_name="m"} 4.0
vllm:time_to_first_token_seconds_count{model_name="m"} 4.0
vllm:time_to_first_token_seconds_sum{model_name="m"} 0.9
"""
SGLANG = """# TYPE sglang:num_running_reqs gauge
sglang:num_running_reqs{model_name="m",tp_rank="0"} 7.0
# TYPE sglang:num_queue_reqs gauge
sglang:num_queue_reqs{model_name="m",tp_rank="0"} 3.0
# TYPE sglang:token_usage gauge
sglang:token_usage{model_name="m",tp_rank="0"} 0.75
"""


def test_each_familys_names_map_onto_the_canonical_series(tmp_path):
    store = Store(tmp_path / "m.duckdb")
    store.write_server_metrics("vllm", parse(VLLM_V1, 1.0))
    store.write_server_metrics("sglang", parse(SGLANG, 2.0))
    store.close()
    with reading(tmp_path / "m.duckdb") as con:
        rows = con.execute("SELECT run_id, t_s, series, value FROM server_series ORDER BY run_id, series").fetchall()
        labels = con.execute("SELECT labels FROM server_metrics WHERE name = 'vllm:prompt_tokens_total'").fetchone()
        buckets = con.execute("SELECT count(*) FROM server_metrics WHERE name LIKE '%_bucket'").fetchone()
    assert rows == [
        ("sglang", 2.0, "kv_usage", 0.75),
        ("sglang", 2.0, "running", 7.0),
        ("sglang", 2.0, "waiting", 3.0),
        ("vllm", 1.0, "kv_usage", 0.5),  # the fullest engine's
        ("vllm", 1.0, "prompt_tokens", 1000.0),
        ("vllm", 1.0, "running", 7.0),  # summed over engines
        ("vllm", 1.0, "ttft_count", 4.0),  # a histogram's count and sum, its buckets unmapped
        ("vllm", 1.0, "ttft_seconds", 0.9),
    ]
    assert labels == ('{"engine":"0","model_name":"m"}',)
    assert buckets == (2,)  # every sample is kept as scraped, a histogram's too
    assert {n.series for n in NAMES} == set(SERIES) and all(n.source for n in NAMES)


def test_parse_refuses_what_is_not_prometheus_text():
    with pytest.raises(ValueError):
        parse("{not: prometheus} at all\n", 0.0)


def test_the_docs_name_every_mapped_name():
    page = (ROOT / "docs" / "metrics.md").read_text()  # "Server metrics"
    assert [n.name for n in NAMES if f"`{n.name}`" not in page] == []
