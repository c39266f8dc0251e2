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
        # The server spaces them by at least 40 gaps; the client reads the first a little later than the others
        # (199.5 ms once, in a fresh clone's suite): the 0.9 the rates below allow.
        assert answer_ttft - ttft >= THOUGHTS * GAP_S * 1000 * 0.9
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


def _thinking_endpoint(fmt: str, spends: bool) -> str:
    reasoning = f"reasoning: {{tokens: 30, format: {fmt}, spends_max_tokens: {str(spends).lower()}}}"
    return FAST_ENDPOINT.replace("overhead_ms: 0.2}", f"overhead_ms: 2}}, {reasoning}")


def _run_thinking(write, tmp_path, fmt: str, spends: bool, workload: str):
    """The workload (naming ep.yaml) on an emulated model that thinks 30 tokens; its database."""
    write("ep.yaml", _thinking_endpoint(fmt, spends))
    db = tmp_path / "r.duckdb"
    res = loadgen("run", str(write("w.yaml", workload)), "--db", str(db))
    assert res.returncode == 0, res.stderr
    return db


@pytest.mark.parametrize("fmt", ["reasoning_content", "reasoning", "think_tags"])
def test_the_emulator_serves_a_reasoning_model_in_each_format(write, tmp_path, fmt):
    """An emulated model that thinks 30 tokens, then answers 20 of its own (spends_max_tokens false): its
    thinking streamed in the format's shape, read back as thinking; usage counts all 50; the thinking is decode
    work, so the decode view's rate is 1000 / TPOT at batch 1."""
    tags = ", think_tags: ['<think>', '</think>']" if fmt == "think_tags" else ""
    db = _run_thinking(
        write, tmp_path, fmt, False,
        "name: emu-thinking\nendpoint: ep.yaml\napi: chat\nload: {arrival: closed, concurrency: 1}\n"
        f"requests: {{prompt_tokens: 16, output_tokens: 20{tags}}}\n"
        "stages: [{name: b1, phase: decode, stop: {requests: 3}}]\n",
    )  # fmt: skip
    rows = _rows(db, "SELECT status, output_tokens, reasoning_tokens, ttft_ms, answer_ttft_ms FROM requests")
    assert len(rows) == 3
    for status, out, thought, ttft, answer_ttft in rows:
        assert (status, out, thought) == ("ok", 50, 30)
        assert answer_ttft > ttft
    ((rate, tpot),) = _rows(db, "SELECT decode_tokens_per_s, tpot_p50_ms FROM decode")
    assert rate * tpot / 1000 == pytest.approx(1, rel=0.05)


def test_thinking_that_spends_max_tokens_can_leave_no_answer(write, tmp_path):
    """As vLLM's: 30 tokens of thinking within max_tokens 20 leave no answer (no_answer, the 20 kept); within 40,
    an answer of 10."""
    db = _run_thinking(
        write, tmp_path, "reasoning_content", True,
        "name: emu-budget\nendpoint: ep.yaml\napi: chat\nload: {arrival: closed, concurrency: 1}\n"
        "stages:\n  - {name: short, requests: {prompt_tokens: 16, output_tokens: 20}, stop: {requests: 2}}\n"
        "  - {name: long, requests: {prompt_tokens: 16, output_tokens: 40}, stop: {requests: 2}}\n",
    )  # fmt: skip
    got = _rows(db, "SELECT stage, status, error, output_tokens, reasoning_tokens FROM requests ORDER BY request_id")
    assert got == [("short", "error", "no_answer", 20, 20)] * 2 + [("long", "ok", None, 40, 30)] * 2


def test_each_family_is_asked_for_thinking_in_its_own_words():
    """enable_thinking through the chat template's kwargs (vLLM, SGLang, llama.cpp), reasoning_effort where the
    API has it ("none" turns thinking off on OpenAI's and Groq's), a budget in each server's own field; a family
    with no way to say one of these is an error naming it."""
    from loadgen.target.bodies import thinking_fields

    assert thinking_fields("vllm", False, None, 100) == {
        "chat_template_kwargs": {"enable_thinking": False}, "thinking_token_budget": 100
    }  # fmt: skip
    assert thinking_fields("sglang", True, "high", 100) == {
        "reasoning_effort": "high", "chat_template_kwargs": {"enable_thinking": True, "thinking_budget": 100}
    }  # fmt: skip
    assert thinking_fields("llamacpp", None, None, 64) == {"thinking_budget_tokens": 64}
    assert thinking_fields("openai", False, None, None) == {"reasoning_effort": "none"}
    assert thinking_fields("groq", None, "low", None) == {"reasoning_effort": "low"}
    with pytest.raises(ValueError, match="the groq family takes no per-request thinking budget"):
        thinking_fields("groq", None, None, 10)
    with pytest.raises(ValueError, match="the tgi family has no way to turn thinking off"):
        thinking_fields("tgi", False, None, None)
    with pytest.raises(ValueError, match="the llamacpp family takes no reasoning_effort"):
        thinking_fields("llamacpp", None, "high", None)


def test_a_run_asks_the_emulated_model_to_think_less_or_not_at_all(write, tmp_path):
    """The emulator answers as asked: no thinking where enable_thinking is false, 10 tokens of its 30 within a
    budget of 10 (each stage's requests carry the fields); a family that cannot be asked stops the run first."""
    db = _run_thinking(
        write, tmp_path, "reasoning_content", False,
        "name: asked\nendpoint: ep.yaml\napi: chat\nload: {arrival: closed, concurrency: 1}\n"
        "requests: {prompt_tokens: 16, output_tokens: 20}\nstop: {requests: 2}\nstages:\n"
        "  - {name: none, requests: {thinking: {enabled: false}}}\n"
        "  - {name: short, requests: {thinking: {budget_tokens: 10}}}\n",
    )  # fmt: skip
    got = _rows(db, "SELECT stage, status, output_tokens, coalesce(reasoning_tokens, 0) FROM requests ORDER BY 1")
    assert got == [("none", "ok", 20, 0)] * 2 + [("short", "ok", 30, 10)] * 2
    write("ep.yaml", "server: groq\n" + _thinking_endpoint("reasoning_content", spends=False))
    res = loadgen("run", str(tmp_path / "w.yaml"), "--db", str(tmp_path / "no.duckdb"))
    assert res.returncode == 2
    assert "stage short: requests.thinking" in res.stderr and "takes no per-request thinking budget" in res.stderr
    assert not (tmp_path / "no.duckdb").exists()
