"""Chat prompts on a real engine: llama.cpp's server (its default ChatML template around every message) counts
each prompt as long as loadgen planned it, a one-message request's, every turn of a session's and every call of an
agent task's (a sub-agent's inherited context, an answer that reads its sub-agents' answers) alike."""

from __future__ import annotations

import duckdb
import pytest

from conftest import loadgen

BOUND = 0.02  # |server's count / planned - 1|, request by request

# Messages of 40 tokens or more: each turn pays the template's tokens for its answer and its message (15 each on
# Gemma-3's) out of its own message, which a shorter one could not (docs/workloads.md, "Prompts").
STAGES = """
stages:
  - name: one-message
    requests: {prompt_tokens: {dist: uniform, min: 30, max: 90}, output_tokens: 4}
    stop: {requests: 2}
  - name: truncated
    sessions: {turns: 6, think_s: 0, user_tokens: {dist: uniform, min: 40, max: 60}, output_tokens: 8,
               system_prompts: {count: 2, tokens: 32}, max_context: 200, at_context_limit: truncate,
               steady_state: true}
    stop: {requests: 6}
"""
# One agent task: a plan, two sub-agents from its context, an answer that reads theirs.
TASK = """
tasks: {system_tokens: 48, steps: [{name: plan, call: {prompt_tokens: 80, output_tokens: 8}},
        {name: look, fan_out: {count: 2, context: inherit, steps: [{call: {prompt_tokens: 48, output_tokens: 8}}]}},
        {name: answer, call: {prompt_tokens: 48, output_tokens: 8}}]}
stop: {requests: 4}
"""


@pytest.mark.slow
def test_chat_prompts_are_as_long_as_planned_as_the_server_counts_them(llamacpp, write, tmp_path):
    """Sessions with a system prompt, turns resending the server's answers, turns dropped at the context limit
    and sessions met partway (made-up turns): every prompt within 2% of its plan as the server counts it."""
    w = write(
        "w.yaml",
        f"name: chat-lengths\nendpoint: {llamacpp}\napi: chat\nseed: 5\n"
        "load: {arrival: closed, concurrency: 2}\n" + STAGES,
    )
    db = tmp_path / "r.duckdb"
    res = loadgen("run", str(w), "--db", str(db), "--server-metrics", "0", timeout=300)
    assert res.returncode == 0, res.stderr
    con = duckdb.connect(str(db), read_only=True)
    (note,) = con.execute("SELECT note FROM runs").fetchone()
    assert "each further message" in note  # the template's tokens per message were calibrated
    rows = con.execute(
        "SELECT stage, session, turn, prompt_tokens, server_prompt_tokens, status FROM requests ORDER BY request_id"
    ).fetchall()
    assert {r[0] for r in rows} == {"one-message", "truncated"}
    assert all(r[5] == "ok" for r in rows), rows
    off = [r for r in rows if abs(r[4] / r[3] - 1) > BOUND]
    assert not off, f"(stage, session, turn, planned, counted, status) beyond {BOUND:.0%}: {off}"
    # What the stages cover: sessions met partway (their first turn sent is not their first), turns that resend
    # the answer before them, and turns whose oldest turns left the context (a prompt shorter than the one before).
    covered = con.execute(
        "SELECT bool_or(r.parent_request_id IS NULL AND r.turn > 1), bool_or(p.request_id IS NOT NULL), "
        "bool_or(r.prompt_tokens < p.prompt_tokens) "
        "FROM requests r LEFT JOIN requests p ON p.request_id = r.parent_request_id WHERE r.stage = 'truncated'"
    ).fetchone()
    assert covered == (True, True, True)


@pytest.mark.slow
def test_an_agent_tasks_calls_are_as_long_as_planned_as_the_server_counts_them(llamacpp, write, tmp_path):
    """A run of agent tasks alone calibrates the chat template's tokens per message too (its calls are
    conversations), and an answer that reads its sub-agents' answers pays for them in their tokens."""
    w = write(
        "w.yaml",
        f"name: task-lengths\nendpoint: {llamacpp}\napi: chat\nload: {{arrival: closed, concurrency: 1}}\n{TASK}",
    )
    db = tmp_path / "r.duckdb"
    res = loadgen("run", str(w), "--db", str(db), "--server-metrics", "0", timeout=300)
    assert res.returncode == 0, res.stderr
    con = duckdb.connect(str(db), read_only=True)
    (note,) = con.execute("SELECT note FROM runs").fetchone()
    assert "each further message" in note
    rows = con.execute(
        "SELECT task_step, prompt_tokens, server_prompt_tokens, status FROM requests ORDER BY request_id"
    ).fetchall()
    assert [r[0] for r in rows] == ["plan", "look[0]/call", "look[1]/call", "answer"] and {r[3] for r in rows} == {"ok"}
    off = [r for r in rows if abs(r[2] / r[1] - 1) > BOUND]
    assert not off, f"(step, planned, counted, status) beyond {BOUND:.0%}: {off}"
