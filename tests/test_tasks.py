"""Agent tasks: graphs of calls (a planner, sub-agents in parallel, tool calls, fan-in), judged per task."""

from __future__ import annotations

import duckdb
import pytest

from conftest import FAST_ENDPOINT, chat_stage, groups_of, run_workload, with_faults
from loadgen.schedule.plan import plan_stage
from loadgen.spec import SpecError, load_workload
from loadgen.spec.workload import StageSpec


def stage(tasks: dict) -> StageSpec:
    return chat_stage({"arrival": "poisson", "rate": 2.0}, {"requests": 40}, tasks=tasks)


tasks_of = groups_of


CHOICE = {"dist": "choice", "values": [5, 9]}
RESEARCH = {
    "system_tokens": 100,
    "steps": [
        {"name": "plan", "call": {"prompt_tokens": {"dist": "uniform", "min": 20, "max": 80}, "output_tokens": 30}},
        {"tool_s": 0.5},
        {
            "name": "research",
            "fan_out": {
                "count": 3,
                "context": "inherit",
                "steps": [
                    {"name": "search", "call": {"prompt_tokens": 60, "output_tokens": 10}},
                    {"tool_s": 0.2},
                    {"name": "read", "call": {"prompt_tokens": 200, "output_tokens": CHOICE}},
                ],
            },
        },
        {"name": "answer", "call": {"prompt_tokens": 50, "output_tokens": 40}},
    ],
}


# -- the plan --


def test_a_task_grows_from_its_steps_into_a_graph_of_calls():
    tasks = tasks_of(plan_stage(stage(RESEARCH), seed=1, stage_index=0))
    assert len(tasks) == 5  # whole tasks of 8 calls until 40 calls
    for calls in tasks:
        ids = [c.request_id for c in calls]
        plan, *research, answer = calls
        assert [c.task.step for c in calls] == [
            "plan",
            *(f"research[{j}]/{s}" for j in range(3) for s in ("search", "read")),
            "answer",
        ]
        assert {c.group for c in calls} == {ids[0]} and {c.task.task for c in calls} == {ids[0]}
        # Only the task's first call has an arrival offset: the others follow the answers they wait for.
        assert plan.offset_s is not None and all(c.offset_s is None for c in calls[1:])
        assert plan.prompt_tokens == 100 + plan.task.message_tokens and plan.task.after == ()
        context = plan.prompt_tokens + plan.output_tokens
        for search, read in zip(research[0::2], research[1::2], strict=True):
            # Each researcher starts from the planner's context, after the tool call, as a sub-agent of its own.
            assert search.task.after == (plan.request_id,) and search.task.fork == plan.request_id
            assert search.task.delay_s == 0.5 and search.task.depth == 1
            assert search.prompt_tokens == context + 60
            assert read.task.after == (search.request_id,) and read.task.delay_s == 0.2 and read.task.fork is None
            assert read.prompt_tokens == search.prompt_tokens + 10 + 200
            assert read.task.agent == search.task.agent != 0
        reads = research[1::2]
        assert answer.task.after == (plan.request_id,)
        assert answer.task.results == tuple(r.request_id for r in reads) and answer.task.wait_for == 3
        assert answer.prompt_tokens == context + sum(r.output_tokens for r in reads) + 50
    # The same seed plans the same tasks.
    assert tasks == tasks_of(plan_stage(stage(RESEARCH), seed=1, stage_index=0))


def test_a_fan_in_can_take_the_first_answers_and_fresh_sub_agents_start_from_the_system_prompt():
    spec = {
        "system_tokens": 64,
        "steps": [
            {"name": "ask", "call": {"prompt_tokens": 10, "output_tokens": 20}},
            {
                "name": "vote",
                "fan_out": {
                    "count": 4,
                    "wait_for": 2,
                    "steps": [{"name": "judge", "call": {"prompt_tokens": 30, "output_tokens": 7}}],
                },
            },
            {"name": "decide", "call": {"prompt_tokens": 5, "output_tokens": 3}},
        ],
    }
    (ask, *judges, decide) = tasks_of(plan_stage(stage(spec), seed=3, stage_index=0))[0]
    assert len(judges) == 4
    for j in judges:
        assert j.prompt_tokens == 64 + 30 and j.task.fork is None and j.task.after == (ask.request_id,)
    assert decide.task.results == tuple(j.request_id for j in judges) and decide.task.wait_for == 2
    assert decide.prompt_tokens == ask.prompt_tokens + ask.output_tokens + 2 * 7 + 5


def test_a_task_stops_growing_at_its_limits():
    loop = {"name": "loop", "repeat": {"count": 100, "steps": [{"call": {"prompt_tokens": 10, "output_tokens": 10}}]}}
    calls = tasks_of(plan_stage(stage({"steps": [loop], "max_calls": 7}), seed=1, stage_index=0))[0]
    assert len(calls) == 7 and calls[-1].task.step == "loop[6]/call"
    # An agent whose next call would not fit the context ends there.
    calls = tasks_of(plan_stage(stage({"steps": [loop], "max_context": 95}), seed=1, stage_index=0))[0]
    assert [c.prompt_tokens for c in calls] == [10, 30, 50, 70]  # 70 + 10 fits; 90 + 10 would not


CALL = "{call: {prompt_tokens: 8, output_tokens: 8}}"


@pytest.mark.parametrize(
    ("steps", "expected"),
    [
        (f"[{CALL}, {{tool_s: 1}}]", "the last step is a tool call"),
        ("[{think: 8}]", "exactly one of call, tool_s, fan_out or repeat"),
        ("[{call: {prompt_tokens: 8, output_tokens: 8}, tool_s: 1}]", "exactly one of call, tool_s, fan_out"),
        (
            f"[{{fan_out: {{count: 2, steps: [{{fan_out: {{count: 2, steps: [{CALL}]}}}}]}}}}]",
            "more than max_depth (1)",
        ),
    ],
)
def test_a_malformed_task_is_refused_naming_the_place(write, steps, expected):
    w = write(
        "w.yaml",
        f"name: t\nendpoint: ep.yaml\nload: {{arrival: poisson, rate: 1}}\n"
        f"tasks:\n  max_depth: 1\n  steps: {steps}\nstop: {{requests: 8}}\n",
    )
    with pytest.raises(SpecError) as e:
        load_workload(w)
    assert expected in str(e.value) and "tasks" in str(e.value)


# -- a run --

FAN_IN = """name: agents
endpoint: ep.yaml
api: chat
load: {arrival: poisson, rate: 4}
tasks:
  system_tokens: 48
  steps:
    - {name: plan, call: {prompt_tokens: 32, output_tokens: 8}}
    - {tool_s: 0.05}
    - name: research
      fan_out:
        count: 3
        wait_for: 2
        context: inherit
        steps: [{name: look, call: {prompt_tokens: 16, output_tokens: {dist: choice, values: [4, 40]}}}]
    - {name: answer, call: {prompt_tokens: 16, output_tokens: 8}}
stop: {requests: 15}
"""


def test_a_task_runs_as_its_graph_and_the_tasks_view_judges_it(write, tmp_path):
    r, db = run_workload(write, tmp_path, FAST_ENDPOINT, FAN_IN)
    assert r.returncode == 0, r.stderr
    con = duckdb.connect(str(db), read_only=True)
    rows = con.execute(
        "SELECT request_id, task_id, task_step, depends_on, parent_request_id, sent_s, end_s, e2e_ms, status, "
        "prompt_tokens, server_prompt_tokens, cached_tokens, session FROM requests ORDER BY request_id"
    ).fetchall()
    calls = {r[0]: r for r in rows}
    assert len(rows) == 15 and {r[8] for r in rows} == {"ok"} and {r[12] for r in rows} == {None}
    cols = "task_id, calls, answered, complete, task_latency_ms, critical_path_ms, cached_share"
    tasks = con.execute(f"SELECT {cols} FROM tasks ORDER BY task_id").fetchall()
    assert [t[:4] for t in tasks] == [(0, 5, 5, True), (5, 5, 5, True), (10, 5, 5, True)]
    for task_id, *_, latency, critical, cached in tasks:
        plan, looks, answer = calls[task_id], [calls[task_id + j] for j in (1, 2, 3)], calls[task_id + 4]
        assert [c[2] for c in (plan, *looks, answer)] == ["plan", *(f"research[{j}]/look" for j in range(3)), "answer"]
        # Causality: each call went only after the calls it waited for had answered, and the tool call's 50 ms.
        for c in looks:
            assert c[3] == [task_id] and c[4] == task_id and c[5] >= plan[6] + 0.05
            assert c[11] >= plan[9]  # the planner's context, inherited, came from the server's prefix cache
        # The answer read the first two researchers to answer, and went once the later of them had.
        first_two = sorted(looks, key=lambda c: c[6])[:2]
        assert answer[3] == sorted([task_id, *(c[0] for c in first_two)])
        assert answer[4] == first_two[1][0] and answer[5] >= first_two[1][6]
        # Its prompt held those answers, and was as long as planned as the server counted it.
        assert answer[10] == answer[9]
        # The critical path is the longest chain of calls that waited one for another: E2E summed.
        chains = [plan[7] + c[7] + answer[7] for c in first_two] + [plan[7] + c[7] for c in looks]
        assert critical == pytest.approx(max(chains))
        assert latency == pytest.approx((max(c[6] for c in (plan, *looks, answer)) - plan[5]) * 1000)
        assert latency >= critical + 50  # the tool call is the client's time, on every chain
        assert 0 < cached < 1


def test_a_call_whose_dependency_failed_is_never_sent_and_says_which(write, tmp_path):
    r, db = run_workload(write, tmp_path, with_faults("error_rate: 1.0"), FAN_IN.replace("requests: 15", "requests: 5"))
    assert r.returncode == 0, r.stderr
    con = duckdb.connect(str(db), read_only=True)
    rows = con.execute("SELECT request_id, status, error, error_detail FROM requests ORDER BY 1").fetchall()
    assert rows[0][1] == "error"
    for _, status, error, detail in rows[1:]:
        assert (status, error) == ("not_sent", "task_ended")
        assert detail.endswith(": the task cannot go on without its answer")
    assert [d for *_, d in rows[1:4]] == ["call 0 ended with http_5xx: the task cannot go on without its answer"] * 3
    assert rows[4][3].startswith("call 0 ended with http_5xx; call 1 ended with task_ended; call 2 ended with")
    assert con.execute("SELECT calls, answered, complete, task_latency_ms FROM tasks").fetchall() == [
        (5, 0, False, None)
    ]
