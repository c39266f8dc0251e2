"""Agent tasks: graphs of calls (a planner, sub-agents in parallel, tool calls, fan-in), judged per task."""

from __future__ import annotations

import collections

import duckdb
import numpy as np
import orjson
import pytest

from conftest import (
    FAST_ENDPOINT,
    ROOT,
    chat_stage,
    groups_of,
    interrupted_run,
    loadgen,
    on_two_workers,
    run_workload,
    with_faults,
)
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
        (f"[{CALL}, {{tool_s: 1}}]", "w.yaml:6: tasks.steps: the agent's last step is a tool call"),
        (
            f"[{{fan_out: {{count: 2, steps: [{{repeat: {{count: 2, steps: [{CALL}, {{tool_s: 1}}]}}}}]}}}}]",
            "w.yaml:6: tasks.steps[0].fan_out.steps: the agent's last step is a tool call",
        ),
        ("[{think: 8}]", "exactly one of call, tool_s, fan_out or repeat"),
        ("[{call: {prompt_tokens: 8, output_tokens: 8}, tool_s: 1}]", "exactly one of call, tool_s, fan_out"),
        (
            f"[{{fan_out: {{count: 2, steps: [{{fan_out: {{count: 2, steps: [{CALL}]}}}}]}}}}]",
            "more than max_depth (1)",
        ),
    ],
)
def test_a_malformed_task_is_refused_naming_the_place(write, steps, expected):
    """(A loop's last tool call is read by its next pass, or by the agent's next step: only an agent's own last
    step must not be one.)"""
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
# The same tasks after a pass of lone requests: the idle endpoint their slowdown is against.
WITH_IDLE = (
    FAN_IN.replace("  system_tokens: 48\n", "  system_tokens: 48\n  idle_stage: idle\n")
    + """slo: {task_s: 30}
stages:
  - {name: idle, tasks: null, load: {arrival: closed, concurrency: 1}, stop: {requests: 6},
     requests: {prompt_tokens: {dist: choice, values: [16, 200]}, output_tokens: 12}}
  - {name: agents}
"""
)


def test_a_task_runs_as_its_graph_and_the_tasks_view_judges_it(write, tmp_path):
    r, db = run_workload(write, tmp_path, FAST_ENDPOINT, WITH_IDLE)
    assert r.returncode == 0, r.stderr
    assert "agent tasks" in r.stdout  # the run's own summary has a table of them
    con = duckdb.connect(str(db), read_only=True)
    rows = con.execute(
        "SELECT request_id, task_id, task_step, depends_on, parent_request_id, sent_s, end_s, e2e_ms, status, "
        "prompt_tokens, server_prompt_tokens, cached_tokens, session, output_tokens, tool_ms, ttft_ms, tpot_ms "
        "FROM requests WHERE stage = 'agents' ORDER BY request_id"
    ).fetchall()
    calls = {r[0]: r for r in rows}
    assert len(rows) == 15 and {r[8] for r in rows} == {"ok"} and {r[12] for r in rows} == {None}
    # The idle endpoint, from the lone requests: TTFT a line over uncached prompt tokens, TPOT their median.
    lone = con.execute(
        "SELECT server_prompt_tokens - cached_tokens, ttft_ms, tpot_ms FROM requests WHERE stage = 'idle'"
    )
    uncached, ttft, tpot = (np.array(c, dtype=float) for c in zip(*lone.fetchall(), strict=True))
    slope, intercept = np.polyfit(uncached, ttft, 1)

    def idle(c) -> float:
        return intercept + slope * (c[10] - c[11]) + (c[13] - 1) * float(np.median(tpot))

    cols = "task_id, calls, answered, complete, slo_ok, task_latency_ms, critical_path_ms, idle_critical_path_ms, "
    tasks = con.execute(f"SELECT {cols} slowdown, cached_share FROM tasks ORDER BY task_id").fetchall()
    assert [t[:5] for t in tasks] == [(6, 5, 5, True, True), (11, 5, 5, True, True), (16, 5, 5, True, True)]
    for task_id, *_, latency, critical, idle_critical, slowdown, cached in tasks:
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
        # The critical path is the longest chain of calls that waited one for another: their tool time and E2E.
        assert {c[14] for c in looks} == {50.0} and (plan[14], answer[14]) == (0.0, 0.0)
        chains = [(plan, c, answer) for c in first_two] + [(plan, c) for c in looks]
        assert critical == pytest.approx(max(sum(c[14] + c[7] for c in chain) for chain in chains))
        assert idle_critical == pytest.approx(max(sum(c[14] + idle(c) for c in chain) for chain in chains))
        assert latency == pytest.approx((max(c[6] for c in (plan, *looks, answer)) - plan[5]) * 1000)
        assert critical - 1 <= latency and slowdown == pytest.approx(latency / idle_critical)
        assert 0 < cached < 1
    summary = con.execute(
        "SELECT stage, tasks, complete, task_latency_p50_ms, slowdown_p50, slo_share, task_goodput_per_s "
        "FROM task_summary"
    ).fetchall()
    span = con.execute("SELECT max(last_end_s) - min(first_sent_s) FROM tasks").fetchone()[0]
    report = loadgen("report", str(db), "--out", str(tmp_path / "report"))
    assert report.returncode == 0, report.stderr
    page = (tmp_path / "report" / "index.html").read_text()
    assert "<h2>Agent tasks</h2>" in page and (tmp_path / "report" / "task_slowdown.png").exists()
    assert summary == [
        (
            "agents",
            3,
            3,
            pytest.approx(sorted(t[5] for t in tasks)[1]),
            pytest.approx(sorted(t[8] for t in tasks)[1]),
            1.0,
            pytest.approx(3 / span),
        )
    ]


def test_a_call_whose_dependency_failed_is_never_sent_and_says_which(write, tmp_path):
    r, db = run_workload(write, tmp_path, with_faults("error_rate: 1.0"), FAN_IN.replace("requests: 15", "requests: 5"))
    assert r.returncode == 0, r.stderr
    con = duckdb.connect(str(db), read_only=True)
    rows = con.execute("SELECT request_id, status, error, error_detail FROM requests ORDER BY 1").fetchall()
    assert rows[0][1] == "error"
    # A call never sent keeps the edges it was planned with: the graph is whole in the database.
    edges = con.execute("SELECT depends_on, parent_request_id FROM requests ORDER BY request_id").fetchall()
    assert edges == [([], None), ([0], 0), ([0], 0), ([0], 0), ([0, 1, 2, 3], 0)]
    for _, status, error, detail in rows[1:]:
        assert (status, error) == ("not_sent", "task_ended")
        assert detail.endswith(": the task cannot go on without its answer")
    assert [d for *_, d in rows[1:4]] == ["call 0 ended with http_5xx: the task cannot go on without its answer"] * 3
    assert rows[4][3].startswith("call 0 ended with http_5xx; call 1 ended with task_ended; call 2 ended with")
    assert con.execute("SELECT calls, answered, complete, task_latency_ms FROM tasks").fetchall() == [
        (5, 0, False, None)
    ]


@pytest.mark.parametrize(
    ("idle", "expected"),
    [
        ("{name: idle, tasks: null, load: {arrival: closed, concurrency: 2}}", "must send lone requests"),
        ("{name: other, tasks: null, load: {arrival: closed, concurrency: 1}}", "'idle' is not a stage before"),
    ],
)
def test_a_slowdown_is_against_an_earlier_stage_of_lone_requests(write, idle, expected):
    w = write(
        "w.yaml", WITH_IDLE.replace("{name: idle, tasks: null, load: {arrival: closed, concurrency: 1}", idle[:-1])
    )
    with pytest.raises(SpecError) as e:
        load_workload(w)
    assert expected in str(e.value) and "tasks.idle_stage" in str(e.value)


def test_tasks_on_two_workers_keep_each_task_on_one(write, tmp_path):
    con = on_two_workers(
        write, tmp_path, FAN_IN.replace("rate: 4", "rate: 20").replace("requests: 15", "requests: 40"), 40
    )
    per_task = con.execute("SELECT count(DISTINCT worker) FROM requests GROUP BY task_id").fetchall()
    assert per_task == [(1,)] * 8
    assert con.execute(
        "SELECT count(DISTINCT worker), count(*) FILTER (WHERE status = 'ok') FROM requests"
    ).fetchone() == (
        2,
        40,
    )
    assert con.execute("SELECT count(*) FROM tasks WHERE complete AND slowdown IS NULL").fetchone() == (8,)


def test_ctrl_c_mid_task_keeps_a_row_for_every_planned_call(write, tmp_path):
    con = interrupted_run(
        write,
        tmp_path,
        "name: stop\nendpoint: ep.yaml\nload: {arrival: closed, concurrency: 2}\ntimeouts: {grace_s: 1}\n"
        "tasks:\n  steps:\n    - {call: {prompt_tokens: 16, output_tokens: {dist: choice, values: [2, 300]}}}\n"
        "    - {fan_out: {count: 3, steps: [{call: {prompt_tokens: 16, output_tokens: 40}}]}}\n"
        "    - {call: {prompt_tokens: 16, output_tokens: 8}}\nstop: {requests: 40}\n",
    )
    rows = con.execute("SELECT request_id, status, depends_on FROM requests ORDER BY 1").fetchall()
    assert [r[0] for r in rows] == list(range(40))
    statuses = collections.Counter(r[1] for r in rows)
    assert statuses["ok"] >= 1 and statuses["not_sent"] >= 1 and set(statuses) <= {"ok", "interrupted", "not_sent"}
    # Nothing was sent before every call it depends on had answered.
    status = {r[0]: r[1] for r in rows}
    for _, s, deps in rows:
        assert s == "not_sent" or all(status[d] == "ok" for d in deps or ())
    assert con.execute("SELECT count(*) FROM tasks").fetchone() == (8,)


def test_a_search_over_task_rate_judges_tasks_whole(write, tmp_path):
    """A search's trial of a tasks stage counts tasks, each meeting the SLO or not as a whole."""
    write("ep.yaml", FAST_ENDPOINT)
    w = write("w.yaml", WITH_IDLE.replace("slo: {task_s: 30}", "slo: {task_s: 30, ttft_ms: 1000}"))
    db = tmp_path / "s.duckdb"
    res = loadgen("search", str(w), "--db", str(db), "--max-trials", "2")
    assert res.returncode == 0, res.stderr
    con = duckdb.connect(str(db), read_only=True)
    trials = con.execute("SELECT stage, load, requests, slo_met FROM trial_stages ORDER BY stage").fetchall()
    tasks = dict(con.execute("SELECT stage, count(*) FROM tasks GROUP BY stage").fetchall())
    assert [t[0] for t in trials] == ["search-1", "search-2"] and trials[0][1] == 4.0  # the tasks stage's rate
    assert all(requests == tasks[stage] == 3 and met == 3 for stage, _, requests, met in trials)
    out = " ".join(res.stdout.split())
    assert "the share of tasks meeting every SLO" in out and "4 tasks/s" in out


# -- replayed from aiperf's DAG format --

SAMPLE = ROOT / "workloads" / "traces" / "agents-sample.dag.jsonl"


def dag_stage(path, **tasks) -> StageSpec:
    return chat_stage(
        {"arrival": "poisson", "rate": 2.0}, {"requests": 30}, tasks={"trace": {"path": str(path)}, **tasks}
    )


def test_a_dag_trace_replays_each_root_as_a_task_with_its_forks_and_joins():
    research, coder, triage, again, *_ = tasks_of(
        plan_stage(dag_stage(SAMPLE, system_tokens=10), seed=1, stage_index=0)
    )
    assert [c.task.step for c in again] == [c.task.step for c in research]  # the roots, taken in turn
    step = {c.task.step: c for c in research}
    lead = [step[f"research[{i}]"] for i in range(3)]
    searches = [s for s in research if "/search-" in s.task.step]
    assert {s.task.depth for s in searches} == {1} and len({s.task.agent for s in searches}) == 3
    # Spawned searches start from a fresh context once the lead's first turn has answered ...
    firsts = [s for s in searches if s.task.step.endswith("[0]")]
    assert all(s.task.after == (lead[0].request_id,) and s.task.fork is None for s in firsts)
    assert all(s.prompt_tokens == 10 + s.task.message_tokens for s in firsts)
    # ... the lead's second turn runs beside them, and its third (join_at: 2) waits for each one's last turn.
    assert lead[1].task.after == (lead[0].request_id,) and lead[1].task.delay_s == 0.15
    lasts = {
        max((s for s in searches if s.task.agent == a), key=lambda s: s.request_id)
        for a in {s.task.agent for s in searches}
    }
    assert set(lead[2].task.after) == {lead[1].request_id, *(s.request_id for s in lasts)}
    # Their answers gate the lead, but its context is its own turns only; the review forks from its last.
    assert lead[2].prompt_tokens == lead[1].prompt_tokens + lead[1].output_tokens + lead[2].task.message_tokens
    review = step["research[2]/review[0]"]
    assert review.task.fork == lead[2].request_id and review.task.after == (lead[2].request_id,)
    assert review.prompt_tokens == lead[2].prompt_tokens + lead[2].output_tokens + review.task.message_tokens
    # A bare spawn joins at the spawning turn's next one; forks end their conversation.
    tests = next(c for c in coder if "/run-tests" in c.task.step)
    assert tests.task.delay_s == 1.2 and tests.request_id in coder[-1].task.after
    assert [c.task.fork for c in triage[1:]] == [triage[0].request_id] * 2


def turn(**keys) -> dict:
    return {"messages": [{"role": "user", "content": "x"}], **keys}


def convo(sid: str, *turns: dict) -> str:
    return orjson.dumps({"session_id": sid, "turns": list(turns)}).decode()


@pytest.mark.parametrize(
    ("lines", "expected"),
    [
        (
            ['{"session_id": "a", "turns": [{"messages": [{"role": "user", "content": "hi"}]}]}', "{nope"],
            ":2: invalid JSON",
        ),
        (
            ['{"session_id": "a", "orchestrator": true, "spawns": ["b"]}'],
            ":1: session 'a': orchestrator is not replayed",
        ),
        (
            ['{"session_id": "a", "turns": [{"messages": [{"content": "x"}], "spawns": ["z"]}]}'],
            "names 'z', not in the trace",
        ),
        (
            [
                '{"session_id": "a", "turns": [{"messages": [{"content": "x"}], "spawns": ["b"]}]}',
                '{"session_id": "b", "turns": [{"messages": [{"content": "x"}], "spawns": ["c"]}]}',
                '{"session_id": "c", "turns": [{"messages": [{"content": "x"}], "spawns": ["b"]}]}',
            ],
            "cycle: a -> b -> c -> b",
        ),
        ([convo("a", turn(forks=["b"]), turn())], "a fork ends its conversation"),
    ],
)
def test_a_malformed_dag_trace_is_refused_naming_the_line(write, lines, expected):
    from loadgen.trace import dag

    path = write("t.dag.jsonl", "\n".join(lines) + "\n")
    with pytest.raises(SpecError) as e:
        dag.tasks(path, max_depth=3, max_calls=64)
    assert expected in str(e.value) and str(path) in str(e.value)


def test_a_dag_trace_runs_as_its_graph(write, tmp_path):
    write(
        "t.dag.jsonl",
        '{"session_id": "lead", "turns": [{"messages": [{"content": "plan the work"}], "max_tokens": 8, '
        '"spawns": [{"children": ["w1", "w2"], "join_at": 2}]}, '
        '{"messages": [{"content": "outline"}], "max_tokens": 8}, '
        '{"messages": [{"content": "merge"}], "max_tokens": 8, "delay": 50, "forks": ["check"]}]}\n'
        '{"session_id": "w1", "turns": [{"messages": [{"content": "do part one"}], "max_tokens": 24}]}\n'
        '{"session_id": "w2", "turns": [{"messages": [{"content": "do part two"}], "max_tokens": 4}]}\n'
        '{"session_id": "check", "turns": [{"messages": [{"content": "check it"}], "max_tokens": 4}]}\n',
    )
    workload = "name: dag\nendpoint: ep.yaml\nload: {arrival: poisson, rate: 4}\n"
    workload += "tasks: {system_tokens: 32, trace: {path: t.dag.jsonl}}\nstop: {requests: 12}\n"
    r, db = run_workload(write, tmp_path, FAST_ENDPOINT, workload)
    assert r.returncode == 0, r.stderr
    con = duckdb.connect(str(db), read_only=True)
    rows = con.execute(
        "SELECT request_id, task_step, depends_on, sent_s, end_s, status, prompt_tokens, server_prompt_tokens, "
        "cached_tokens FROM requests ORDER BY request_id"
    ).fetchall()
    assert len(rows) == 12 and {r[5] for r in rows} == {"ok"}
    ends = {r[0]: r[4] for r in rows}
    for rid, step, deps, sent, *_ in rows:
        assert all(sent >= ends[d] for d in deps), (rid, step)
    by_step = {(r[0] // 6, r[1]): r for r in rows}
    for t in (0, 1):
        merge, check = by_step[(t, "lead[2]")], by_step[(t, "lead[2]/check[0]")]
        workers = [by_step[(t, f"lead[0]/{w}[0]")] for w in ("w1", "w2")]
        assert merge[3] >= max(w[4] for w in workers) + 0.05  # joined both workers, then its 50 ms delay
        # The fork found the lead's context cached (but for the last part-filled 16-token block).
        assert check[8] >= merge[6] - 15 and check[7] == check[6]
    assert con.execute("SELECT count(*) FROM tasks WHERE complete").fetchone() == (2,)


def test_the_live_view_counts_a_task_complete_only_once_all_its_calls_are_in(tmp_path):
    from loadgen.cli.panel import figures
    from loadgen.live.feed import LiveFeed
    from loadgen.metrics import derive
    from loadgen.results import Progress, RequestResult
    from loadgen.store import Store

    st = stage(RESEARCH)
    store = Store(tmp_path / "live.duckdb")
    store.begin_run("r", "w", "e", {}, [st])
    calls = [
        RequestResult(i, "t", 0.0, 0.1 * i, 10, 4, end_s=0.1 * i + 0.5, event_times=[0.1 * i + 0.1], event_tokens=[4])
        for i in range(3)
    ]
    for i, r in enumerate(calls):
        r.task_id, r.task_step, r.task_calls, r.depends_on, r.tool_ms = 0, f"s{i}", 3, [i - 1] if i else [], 0.0
    feed = LiveFeed(store.con, "r", tasks=True)
    progress = Progress(planned=3, done=2, in_flight=1, stage="t", elapsed_s=1.0)
    store.write("r", [(r, derive(r, st.slo)) for r in calls[:2]])
    feed.snapshot = feed.read()
    assert "agent tasks: 0 complete of 1 begun" in " ".join(figures(progress, feed.snapshot, "t"))
    store.write("r", [(calls[2], derive(calls[2], st.slo))])
    feed.snapshot = feed.read()
    line = " ".join(figures(progress, feed.snapshot, "t"))
    assert "agent tasks: 1 complete of 1 begun   latency p50/p90 700.0 / 700.0 ms   slowdown p50 -" in line
    # Locust's LLM tab: the same figures, in columns of their own where the run has tasks.
    from loadgen.live.webtab import TASK_COLUMNS, columns, rows

    assert columns(feed)[-3:] == TASK_COLUMNS and not set(TASK_COLUMNS) & set(columns(LiveFeed(store.con, "r")))
    row = rows(feed.snapshot)[0]  # the stage's (then the whole run's)
    assert (row["tasks_complete"], row["task_latency_p50_ms"], row["slowdown_p50"]) == ("1 of 1", 700.0, None)
    store.close()


def test_a_bad_dag_trace_stops_the_run_before_it_starts(write, tmp_path):
    write("ep.yaml", FAST_ENDPOINT)
    write("t.dag.jsonl", convo("a", turn(spawns=["zz"])) + "\n")
    w = write(
        "w.yaml",
        "name: dag\nendpoint: ep.yaml\nload: {arrival: poisson, rate: 2}\ntasks: {trace: {path: t.dag.jsonl}}\n",
    )
    db = tmp_path / "r.duckdb"
    res = loadgen("run", str(w), "--db", str(db))
    assert res.returncode == 2 and "t.dag.jsonl:1: session 'a' names 'zz', not in the trace" in res.stderr
    assert "Traceback" not in res.stderr and not db.exists()


def test_a_runs_planned_requests_count_a_tasks_stage_as_whole_tasks():
    """The progress line's "done of planned": a stage of 8-call tasks bounded at 41 calls plans 48."""
    from loadgen.load.stages import planned_requests

    bounded = chat_stage({"arrival": "poisson", "rate": 2.0}, {"requests": 41}, tasks=RESEARCH)
    assert planned_requests([bounded], 1) == len(list(plan_stage(bounded, 1, 0))) == 48
