"""A reasoning model's stream: its thinking is output, timed and counted apart from its answer. Canned streams in
each server's documented shape (client/openai.py names the sources)."""

from __future__ import annotations

import asyncio

import duckdb
import orjson
import pytest
import yaml
from aiohttp import web

from conftest import FAST_ENDPOINT, emulator_in_thread, loadgen
from loadgen.client.openai import read_chunk
from loadgen.spec.endpoint import EndpointSpec


def _event(delta: dict) -> bytes:
    return orjson.dumps({"choices": [{"index": 0, "delta": delta, "finish_reason": None}]})


@pytest.mark.parametrize("key", ["reasoning_content", "reasoning"])
def test_thinking_is_read_apart_from_the_answer_in_each_format(key):
    """DeepSeek's API, vLLM up to 0.10 and llama.cpp (--reasoning-format deepseek) send `reasoning_content`;
    vLLM from 0.11 sends `reasoning`; usage counts the thinking in completion_tokens and apart."""
    thought = read_chunk(_event({key: "Let me think", "content": None}))
    assert (thought.reasoning, thought.text) == ("Let me think", "")
    answer = read_chunk(_event({"content": "42"}))
    assert (answer.reasoning, answer.text) == ("", "42")
    details = {"completion_tokens": 60, "completion_tokens_details": {"reasoning_tokens": 40}}
    usage = read_chunk(orjson.dumps({"choices": [], "usage": details}))
    assert (usage.completion_tokens, usage.reasoning_tokens) == (60, 40)


THOUGHTS, ANSWER, GAP_S, FIRST_S = 40, 20, 0.005, 0.030


STORED = (
    "SELECT ttft_ms, answer_ttft_ms, tpot_ms, reasoning_tpot_ms, answer_tpot_ms, output_tokens, reasoning_tokens, "
    "slo_ok FROM requests ORDER BY request_id"
)


def _rows(db, sql: str) -> list[tuple]:
    with duckdb.connect(str(db), read_only=True) as con:
        return con.execute(sql).fetchall()


def thinking_server(key: str, answers: int = ANSWER):
    """A middleware that answers chat as a reasoning model does: the first token 30 ms after the request, 40
    tokens of thinking, then 20 of answer (or `answers`), 5 ms apart, and usage counting all with 40 of reasoning."""

    @web.middleware
    async def answer(request, handler):
        if request.method != "POST" or not request.path.endswith("/chat/completions"):
            return await handler(request)
        await request.read()
        resp = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
        await resp.prepare(request)
        await asyncio.sleep(FIRST_S)
        for i in range(THOUGHTS + answers):
            if key == "inline":  # no parser: the thought in the text, between tags (DeepSeek-R1's)
                delta = {"content": f"<think>t{i} " if i == 0 else f"t{i} </think>" if i == THOUGHTS - 1 else f"t{i} "}
                delta = delta if i < THOUGHTS else {"content": f"a{i} "}
            else:
                delta = {key: f"t{i} "} if i < THOUGHTS else {"content": f"a{i} "}
            await resp.write(b"data: " + _event(delta) + b"\n\n")
            await asyncio.sleep(GAP_S)
        usage = {"prompt_tokens": 16, "completion_tokens": THOUGHTS + answers}
        if key != "inline":  # a server with no parser does not know which tokens were thought
            usage["completion_tokens_details"] = {"reasoning_tokens": THOUGHTS}
        await resp.write(b"data: " + orjson.dumps({"choices": [], "usage": usage}) + b"\n\ndata: [DONE]\n\n")
        return resp

    return answer


@pytest.mark.parametrize("key", ["reasoning_content", "reasoning", "inline"])
def test_ttft_is_the_first_thought_and_the_answer_has_its_own_first_token_and_rate(write, tmp_path, key):
    """The issue's server: TTFT is the first thinking token (30 ms, not the answer's 230), TPOT spreads the 60
    tokens over their own span (5 ms, not 60 tokens over the answer's 20-token window: 1.75 ms), and the
    answer's first token, each phase's rate and the thinking's tokens are stored; every event says its phase."""
    spec = EndpointSpec.model_validate(yaml.safe_load(FAST_ENDPOINT))
    with emulator_in_thread(spec, thinking_server(key)) as url:
        w = write(
            "w.yaml",
            f"name: thinking\nendpoint: {url}\napi: chat\nload: {{arrival: closed, concurrency: 1}}\n"
            "requests: {prompt_tokens: 16, output_tokens: 64"
            + (", think_tags: ['<think>', '</think>']" if key == "inline" else "")
            + "}\nstop: {requests: 3}\nslo: {answer_ttft_ms: 5000}\n",
        )
        db = tmp_path / "r.duckdb"
        res = loadgen("run", str(w), "--db", str(db), "--server-metrics", "0")
    assert res.returncode == 0, res.stderr
    rows = _rows(db, STORED)
    assert len(rows) == 3
    for ttft, answer_ttft, tpot, reasoning_tpot, answer_tpot, out, thought, slo_ok in rows:
        assert (out, thought, slo_ok) == (THOUGHTS + ANSWER, THOUGHTS, True)
        # Sleeps on a shared machine run long, never short: lower bounds are the server's, upper ones generous.
        assert FIRST_S * 1000 <= ttft < answer_ttft
        assert answer_ttft - ttft >= THOUGHTS * GAP_S * 1000
        assert GAP_S * 1000 * 0.9 <= tpot < GAP_S * 1000 * 3
        assert GAP_S * 1000 * 0.9 <= reasoning_tpot < GAP_S * 1000 * 3
        assert GAP_S * 1000 * 0.9 <= answer_tpot < GAP_S * 1000 * 3
    # The summary shows the answer's first token and the thinking's share, where a stage thought.
    out = " ".join(res.stdout.split())
    assert "answer TTFT p50 ms" in out and "thinking tokens % │ 66.7%" in out, res.stdout
    assert _rows(db, "SELECT round(reasoning_share, 4) FROM summary") == [(round(THOUGHTS / (THOUGHTS + ANSWER), 4),)]
    phases = _rows(db, "SELECT phase, count(*) FROM events GROUP BY 1 ORDER BY 1")
    assert phases == [("answer", 3 * ANSWER), ("reasoning", 3 * THOUGHTS)]
    # The thinking comes first in every stream: no reasoning event after an answer event.
    late = "WHERE a.phase = 'answer' AND r.phase = 'reasoning' AND r.idx > a.idx"
    assert _rows(db, f"SELECT count(*) FROM events a JOIN events r USING (run_id, request_id) {late}") == [(0,)]


def test_a_stream_of_thinking_with_no_answer_is_an_error_of_its_own_that_keeps_its_tokens(write, tmp_path):
    """vLLM issue 42548: a model that spends its whole budget thinking returns no answer. The row is an error
    (`no_answer`: out of latency percentiles and goodput, counted in `errors`), its thinking kept."""
    spec = EndpointSpec.model_validate(yaml.safe_load(FAST_ENDPOINT))
    with emulator_in_thread(spec, thinking_server("reasoning_content", answers=0)) as url:
        w = write(
            "w.yaml",
            f"name: no-answer\nendpoint: {url}\napi: chat\nrequests: {{prompt_tokens: 16, output_tokens: 40}}\n"
            "stop: {requests: 2}\n",
        )
        res = loadgen("run", str(w), "--db", str(tmp_path / "r.duckdb"), "--server-metrics", "0")
    assert res.returncode == 0, res.stderr
    got = _rows(tmp_path / "r.duckdb", "SELECT status, error, reasoning_tokens, answer_ttft_ms FROM requests")
    assert got == [("error", "no_answer", THOUGHTS, None)] * 2
    assert _rows(tmp_path / "r.duckdb", "SELECT errors, ttft_p50_ms FROM summary") == [(2, None)]


def test_inline_thinking_is_split_at_its_tags_even_across_chunks():
    """Tags split between chunks are held until whole; an empty opening tag starts in thinking (a chat template
    that opens it in the prompt); a model that answers at once has no thinking."""
    from loadgen.client.thinking import InlineThinking

    t = InlineThinking("<think>", "</think>")
    got = [t.feed(c) for c in ["<th", "ink>", "Let me", " see</", "think>", "\n\n", "42"]]
    assert got == [("", ""), ("", ""), ("Let me", ""), (" see", ""), ("", ""), ("", "\n\n"), ("", "42")]
    t = InlineThinking("", "</think>")
    assert [t.feed(c) for c in ["hmm", "</think>", "ok"]] == [("hmm", ""), ("", ""), ("", "ok")]
    t = InlineThinking("<think>", "</think>")
    assert [t.feed(c) for c in ["\n", "Hello", " there"]] == [("", ""), ("", "\nHello"), ("", " there")]
