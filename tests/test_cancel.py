"""Requests the workload abandons (`requests.cancel`): the client closes the stream at its drawn point, the row is
`cancelled` with the tokens it got, latency figures leave it out, and the server frees its place at once."""

from __future__ import annotations

import socket
import time

import duckdb
import orjson
import pytest
import yaml
from pydantic import ValidationError

from conftest import FAST_ENDPOINT, emulator_in_thread, run_workload, with_faults
from loadgen.schedule.cancel import Cancel, draw
from loadgen.spec.endpoint import EndpointSpec
from loadgen.spec.workload import CancelSpec


def test_a_cancel_names_one_point():
    """after_s or after_tokens, not both nor neither; before_first_token goes with a time."""
    for bad in ({"share": 0.1}, {"share": 0.1, "after_s": 1, "after_tokens": 3}):
        with pytest.raises(ValidationError, match="give one of after_s"):
            CancelSpec.model_validate(bad)
    with pytest.raises(ValidationError, match="before_first_token goes with after_s"):
        CancelSpec.model_validate({"share": 0.1, "after_tokens": 3, "before_first_token": True})
    with pytest.raises(ValidationError):
        CancelSpec.model_validate({"share": 0, "after_s": 1})


def test_the_abandoned_share_is_drawn_per_request_from_the_seed():
    """The share holds over many requests; the same seed abandons the same requests at the same points (an engine
    and its twin see the same), another seed others."""
    spec = CancelSpec.model_validate({"share": 0.25, "after_s": {"dist": "uniform", "min": 0.5, "max": 2.0}})
    first = [draw(spec, 7, i) for i in range(4000)]
    chosen = [c for c in first if c is not None]
    assert 0.22 < len(chosen) / 4000 < 0.28
    assert all(c.after_s is not None and 0.5 <= c.after_s <= 2.0 for c in chosen)
    assert first == [draw(spec, 7, i) for i in range(4000)]
    assert first != [draw(spec, 8, i) for i in range(4000)]
    tokens = CancelSpec.model_validate({"share": 1, "after_tokens": 3})
    assert draw(tokens, 1, 1) == Cancel(after_tokens=3)
    assert draw(None, 1, 1) is None
    with pytest.raises(ValidationError):  # a token must come for a count to be reached
        CancelSpec.model_validate({"share": 1, "after_tokens": 0})


def _run(write, tmp_path, endpoint: str, workload: str):
    res, db = run_workload(write, tmp_path, endpoint, workload)
    assert res.returncode == 0, res.stderr
    return res, db


def _rows(db, sql: str) -> list[tuple]:
    with duckdb.connect(str(db), read_only=True) as con:
        return con.execute(sql).fetchall()


def test_abandoned_requests_keep_their_tokens_and_stay_out_of_the_latencies(write, tmp_path):
    """Half the requests abandoned after 5 tokens of 60: exactly those the seed draws; each `cancelled` with its 5
    tokens and no error; the summary counts them apart from errors, its TTFT percentiles and SLO share are over
    the others; and the emulator stopped generating for them (its own token counter)."""
    res, db = _run(
        write, tmp_path, FAST_ENDPOINT.replace("overhead_ms: 0.2", "overhead_ms: 3"),
        "name: c\nendpoint: ep.yaml\nseed: 5\nload: {arrival: closed, concurrency: 4}\n"
        "requests: {prompt_tokens: 32, output_tokens: 60, cancel: {share: 0.5, after_tokens: 5}}\n"
        "slo: {ttft_ms: 10000}\nstop: {requests: 24}\n",
    )  # fmt: skip
    spec = CancelSpec.model_validate({"share": 0.5, "after_tokens": 5})
    rows = _rows(db, "SELECT request_id, status, output_tokens, error, error_detail FROM requests ORDER BY 1")
    expected = {i for i, *_ in rows if draw(spec, 5, i) is not None}
    assert 4 <= len(expected) <= 20
    assert {i for i, status, *_ in rows if status == "cancelled"} == expected
    for _, status, tokens, error, detail in rows:
        if status == "cancelled":
            assert (tokens, error) == (5, None) and "abandoned it at 5 tokens" in detail
        else:
            assert (status, tokens) == ("ok", 60)
    (summary,) = _rows(db, "SELECT requests, errors, cancelled, slo_share, ttft_p50_ms FROM summary")
    (ok_p50,) = _rows(db, "SELECT quantile_cont(ttft_ms, 0.5) FROM requests WHERE status = 'ok'")[0]
    assert summary == (24, 0, len(expected), pytest.approx(1.0), pytest.approx(ok_p50))
    # The emulator's own count of tokens generated: the abandoned requests' few, not their 60.
    (made,) = _rows(db, "SELECT max(value) FROM server_metrics WHERE name = 'vllm:generation_tokens_total'")[0]
    finished = (24 - len(expected)) * 60
    assert finished + 5 * len(expected) <= made < finished + 15 * len(expected)
    assert "cancelled" in res.stdout  # the terminal's summary shows the count


def test_a_user_who_gives_up_waiting_abandons_only_a_late_first_token(write, tmp_path):
    """before_first_token: abandoned 0.15 s after the send where the first token has not come (the stalled half,
    400 ms before theirs); a stream whose first token came in time runs on past 0.15 s to its end."""
    stalled = with_faults("stall_rate: 0.5, stall_first_ms: 400").replace("overhead_ms: 0.2", "overhead_ms: 2")
    _, db = _run(
        write, tmp_path, stalled,
        "name: c\nendpoint: ep.yaml\nload: {arrival: closed, concurrency: 4}\n"
        "requests: {prompt_tokens: 32, output_tokens: 120, "
        "cancel: {share: 1, after_s: 0.15, before_first_token: true}}\nstop: {requests: 16}\n",
    )  # fmt: skip
    rows = _rows(db, "SELECT status, output_tokens, ttft_ms, e2e_ms FROM requests")
    gave_up = [r for r in rows if r[0] == "cancelled"]
    finished = [r for r in rows if r[0] == "ok"]
    assert gave_up and finished and len(gave_up) + len(finished) == 16
    # The user's 0.15 s run from the request's start, connection included; e2e from its send (5 ms later here,
    # up to tens on a loaded machine): well before the stalled first token's 400 ms.
    assert all(tokens == 0 and ttft is None and 100 < e2e < 350 for _, tokens, ttft, e2e in gave_up)
    assert all(tokens == 120 and ttft < 150 and e2e > 150 for _, tokens, ttft, e2e in finished)


def _metrics(base: str) -> dict[str, float]:
    import urllib.request

    with urllib.request.urlopen(base.removesuffix("/v1") + "/metrics", timeout=5) as r:
        text = r.read().decode()
    return {
        line.split()[0]: float(line.split()[-1])
        for line in text.splitlines()
        if line and not line.startswith("#") and " " in line
    }


def test_the_emulator_frees_an_abandoned_requests_place_at_once():
    """A client that closes its stream mid-answer: the emulator's running gauge and KV usage drop within a step
    or two, not when the answer would have ended (2,000 tokens, over ten seconds here)."""
    spec = EndpointSpec.model_validate(yaml.safe_load(FAST_ENDPOINT.replace("overhead_ms: 0.2", "overhead_ms: 5")))
    with emulator_in_thread(spec) as base:
        port = int(base.split(":")[2].split("/")[0])
        body = orjson.dumps({"model": "llama-2-7b", "prompt": "hi " * 200, "max_tokens": 2000, "stream": True})
        sock = socket.create_connection(("127.0.0.1", port))
        sock.sendall(
            b"POST /v1/completions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
            b"Content-Length: %d\r\n\r\n%b" % (len(body), body)
        )
        got = b""
        while got.count(b"data: ") < 3:
            got += sock.recv(65536)
        before = _metrics(base)
        sock.close()
        t0 = time.perf_counter()
        while _metrics(base)["vllm:num_requests_running"] > 0:
            assert time.perf_counter() - t0 < 0.5, "the abandoned request still runs"
            time.sleep(0.01)
        after = _metrics(base)
    assert before["vllm:num_requests_running"] == 1 and before["vllm:kv_cache_usage_perc"] > 0
    assert after["vllm:kv_cache_usage_perc"] == 0
    assert after["vllm:generation_tokens_total"] < 100
