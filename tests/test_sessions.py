"""Sessions: multi-turn conversations whose every turn resends the conversation so far with the server's answers."""

from __future__ import annotations

import collections
import itertools

import duckdb
import pytest

from conftest import (
    FAST_ENDPOINT,
    chat_stage,
    emulator_in_thread,
    groups_of,
    interrupted_run,
    loadgen,
    on_two_workers,
    record_bodies,
    run_workload,
    with_faults,
    word_tokenizer,
)
from loadgen.emulator.server import OUTPUT_WORDS
from loadgen.schedule.plan import owner, plan_stage, share, slots
from loadgen.spec import SpecError, load_workload
from loadgen.spec.endpoint import EndpointSpec
from loadgen.spec.workload import StageSpec


def stage(sessions: dict, load: dict | None = None, stop: dict | None = None) -> StageSpec:
    return chat_stage(load or {"arrival": "closed", "concurrency": 2}, stop or {"requests": 200}, sessions=sessions)


sessions_of = groups_of


# -- the plan --


def test_a_session_is_a_chain_of_turns_whose_prompt_grows_by_each_answer_and_message():
    st = stage(
        {
            "turns": {"dist": "uniform", "min": 1, "max": 5},
            "user_tokens": {"dist": "uniform", "min": 10, "max": 90},
            "output_tokens": 50,
            "system_prompts": {"count": 3, "tokens": 200},
        }
    )
    plan = list(plan_stage(st, 7, 0, first_id=10))
    assert [p.request_id for p in plan] == list(range(10, 210))
    groups = sessions_of(plan)
    assert {len(g) for g in groups[:-1]} == {1, 2, 3, 4, 5}
    for g in groups:
        assert g[0].group == g[0].request_id and g[0].parent is None and g[0].turn == 1
        assert [p.turn for p in g] == list(range(1, len(g) + 1))
        assert [p.parent for p in g[1:]] == [p.request_id for p in g[:-1]]
        assert len({p.session.system for p in g}) == 1 and g[0].session.system in (0, 1, 2)
        for prev, cur in itertools.pairwise(g):
            assert cur.prompt_tokens == prev.prompt_tokens + prev.output_tokens + cur.session.user_tokens
        assert g[0].prompt_tokens == 200 + g[0].session.user_tokens
    assert plan == list(plan_stage(st, 7, 0, first_id=10))  # the same plan in any process
    assert plan != list(plan_stage(st, 8, 0, first_id=10))


@pytest.mark.parametrize("policy", ["end", "truncate"])
def test_the_context_limit_ends_the_session_or_drops_its_oldest_turns(policy):
    st = stage({"turns": 10, "user_tokens": 300, "output_tokens": 200, "max_context": 2000, "at_context_limit": policy})
    plan = list(plan_stage(st, 1, 0))
    assert all(p.prompt_tokens + p.output_tokens <= 2000 for p in plan)
    groups = sessions_of(plan)
    if policy == "end":  # a 4th turn needs 300 + 3 x 500 + 200 = 2000 tokens; a 5th 2500
        assert {len(g) for g in groups[:-1]} == {4}
        assert all(p.session.drop == 0 for p in plan)
    else:
        g = groups[0]
        assert len(g) == 10
        assert [p.session.drop for p in g] == [0, 0, 0, 0, 1, 1, 1, 1, 1, 1]
        assert [p.prompt_tokens for p in g] == [300, 800, 1300, 1800, 1800, 1800, 1800, 1800, 1800, 1800]


def test_open_loop_starts_sessions_on_the_arrival_process_and_stops_at_the_duration():
    st = stage({"turns": 3, "think_s": 2.5}, {"arrival": "constant", "rate": 4}, {"duration_s": 10})
    plan = list(plan_stage(st, 1, 0))
    groups = sessions_of(plan)
    assert [g[0].offset_s for g in groups] == pytest.approx([i / 4 for i in range(40)])
    assert all(p.offset_s is None and p.session.think_s == 2.5 for g in groups for p in g[1:])
    assert len(plan) == 120


def test_steady_state_opens_with_sessions_met_partway():
    spec = {"turns": {"dist": "uniform", "min": 1, "max": 9}, "think_s": {"dist": "exponential", "mean": 4}}
    closed = sessions_of(plan_stage(stage({**spec, "steady_state": True}, stop={"requests": 3000}), 1, 0))
    met = [g for g in closed[:2] if g[0].turn > 1]  # the 2 users' first sessions
    assert all(len(g[0].session.made_up) == g[0].turn - 1 for g in met)
    assert all(g[0].turn == 1 and not g[0].session.made_up for g in closed[2:])
    # Open loop: rate x mean span (4 mean turns after the first x 4 s) = 320 sessions in progress at the start.
    load = {"arrival": "poisson", "rate": 20}
    opened = sessions_of(plan_stage(stage({**spec, "steady_state": True}, load, {"duration_s": 10}), 1, 0))
    partway = [g for g in opened if g[0].turn > 1]
    assert 300 <= len(partway) <= 340, len(partway)
    offsets = [g[0].offset_s for g in opened]
    assert offsets == sorted(offsets)
    # A session is met at turn j (from 2) in proportion to the sessions that have one: 8, 5 and 2 of 9 lengths.
    met_at = collections.Counter(g[0].turn for g in partway)
    assert met_at[2] > met_at[5] > met_at[8] > 0 and 1 not in met_at
    cold = sessions_of(plan_stage(stage(spec, load, {"duration_s": 60}), 1, 0))
    assert all(g[0].turn == 1 for g in cold)


def test_a_session_goes_out_from_one_worker():
    st = stage({"turns": {"dist": "uniform", "min": 1, "max": 6}}, {"arrival": "poisson", "rate": 5})
    plan = list(plan_stage(st, 1, 0))
    dealt = slots([3, 2])
    for g in sessions_of(plan):
        assert len({owner(p, dealt) for p in g}) == 1
    parts = [list(share(iter(plan), w, dealt)) for w in (0, 1)]
    assert sorted(p.request_id for part in parts for p in part) == [p.request_id for p in plan]
    assert all(len(part) > 50 for part in parts)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("load: {arrival: trace, trace: {path: t.csv}}\n", "a trace replay brings its own conversations"),
        ("requests: {prompt_tokens: 100}\n", "sessions.user_tokens and sessions.output_tokens"),
        ("api: completions\nrequests: {prompt_format: tokens}\n", "need requests.tokenizer"),
        ("sessions: {turns: 3, think: 2}\n", "unknown key (did you mean 'think_s'?)"),
        ("sessions: {think_s: {dist: exponential, mean: -1}}\n", "greater than 0"),
        ("sessions: {at_context_limit: wrap}\n", "'end' or 'truncate'"),
    ],
)
def test_bad_sessions_name_the_place(write, text, expected):
    sessions = "" if text.startswith("sessions") else "sessions: {turns: 3}\n"
    w = write("w.yaml", "name: w\nendpoint: ep.yaml\n" + sessions + text)
    with pytest.raises(SpecError) as e:
        load_workload(w)
    assert expected in str(e.value)
    assert f"{w}:" in str(e.value)  # names the file, and the line where it can


# -- on the emulator --


def emulator_answer(tokens: int) -> str:
    return "".join(OUTPUT_WORDS[i % len(OUTPUT_WORDS)] for i in range(tokens))


@pytest.mark.parametrize("api", ["chat", "completions", "tokens"])
def test_each_turn_resends_the_last_prompt_then_the_answer_the_server_returned(write, tmp_path, api):
    spec = EndpointSpec.model_validate(
        {
            "name": "rec",
            # Answers that mostly end early (a mean natural length of 24 tokens, of at most 40 asked for).
            "emulate": {
                "engine": "gpu", "hardware": "h100-sxm", "hardware_overrides": {"overhead_ms": 0.2},
                "eos_mean_tokens": 24,
            },
        }
    )  # fmt: skip
    requests = "{}"
    if api == "tokens":  # token-ID prompts: the answer's IDs come from the tokenizer
        pytest.importorskip("tokenizers")
        requests = f"{{prompt_format: tokens, tokenizer: {word_tokenizer(tmp_path / 'tokenizer.json')}}}"
    bodies: list[dict] = []
    with emulator_in_thread(spec, record_bodies(bodies)) as url:
        # server: openai asks for no exact length, so the emulated model ends answers early, as a real one does.
        write("ep.yaml", f"name: rec\nurl: {url}\nserver: openai\n")
        w = write(
            "w.yaml",
            f"name: grow\nendpoint: ep.yaml\napi: {'chat' if api == 'chat' else 'completions'}\n"
            f"load: {{arrival: closed, concurrency: 1}}\nrequests: {requests}\n"
            "sessions: {turns: 3, user_tokens: 40, output_tokens: 40, system_prompts: {count: 1, tokens: 32}}\n"
            "stop: {requests: 12}\n",
        )
        db = tmp_path / "r.duckdb"
        r = loadgen("run", str(w), "--db", str(db))
    assert r.returncode == 0, r.stderr
    con = duckdb.connect(str(db), read_only=True)
    rows = con.execute(
        "SELECT request_id, parent_request_id, turn, output_tokens, server_prompt_tokens, cached_tokens "
        "FROM requests WHERE status = 'ok' ORDER BY sent_s"
    ).fetchall()
    assert [row[2] for row in rows] == [1, 2, 3] * 4
    sent = [b for b in bodies if b.get("stream")]  # the run's requests, not the pre-run probes
    assert len(sent) == 12
    body = {row[0]: b for row, b in zip(rows, sent, strict=True)}
    out = {row[0]: row[3] for row in rows}
    prompt = {row[0]: row[4] for row in rows}
    assert min(out.values()) < 40  # some answers ended early: what is resent is what came back
    for rid, parent, _, _, _, cached in rows:
        if parent is None:
            continue
        answer = emulator_answer(out[parent])
        if api == "chat":
            before, now = body[parent]["messages"], body[rid]["messages"]
            assert now[: len(before)] == before
            assert now[len(before)] == {"role": "assistant", "content": answer}
            assert len(now) == len(before) + 2 and now[-1]["role"] == "user"
        elif api == "completions":
            assert body[rid]["prompt"].startswith(body[parent]["prompt"] + " " + answer + " ")
        else:
            from tokenizers import Tokenizer

            ids = Tokenizer.from_file(str(tmp_path / "tokenizer.json")).encode(answer).ids
            assert len(ids) == out[parent]
            before = body[parent]["prompt"]
            assert body[rid]["prompt"][: len(before) + len(ids)] == before + ids
        # The server's cache holds the last prompt and the answer's full blocks (16 tokens, the last token's KV
        # never computed). The emulator's answers are words: resent as a tokenizer's IDs, they are other tokens.
        held = prompt[parent] + out[parent] - 1 if api != "tokens" else prompt[parent]
        assert cached == held // 16 * 16
    # One shared system prompt opens every session.
    firsts = [body[row[0]] for row in rows if row[1] is None]
    opening = [b["messages"][0] if api == "chat" else b["prompt"][: 32 if api == "tokens" else 20] for b in firsts]
    assert all(o == opening[0] for o in opening)
    if api == "chat":
        assert opening[0]["role"] == "system" and len(opening[0]["content"].split()) == 32


@pytest.mark.exclusive  # each turn sent within 50 ms of its planned time
def test_turns_wait_for_the_answer_they_follow_plus_think_time(write, tmp_path):
    r, db = run_workload(
        write,
        tmp_path,
        FAST_ENDPOINT,
        "name: think\nendpoint: ep.yaml\nload: {arrival: poisson, rate: 20}\n"
        "sessions: {turns: 3, think_s: {dist: uniform, min: 0.05, max: 0.3}, user_tokens: 64, output_tokens: 32}\n"
        "stop: {requests: 45}\n",
    )
    assert r.returncode == 0, r.stderr
    spec, _ = load_workload(tmp_path / "w.yaml")
    think = {p.request_id: p.session.think_s for p in plan_stage(spec.stages[0], spec.seed, 0)}
    con = duckdb.connect(str(db), read_only=True)
    pairs = con.execute(
        "SELECT c.request_id, c.scheduled_s - p.end_s, c.sent_s - p.end_s, c.lag_ms FROM requests c "
        "JOIN requests p ON p.request_id = c.parent_request_id AND p.run_id = c.run_id"
    ).fetchall()
    assert len(pairs) == 30
    for rid, scheduled_after, sent_after, lag in pairs:
        assert scheduled_after == pytest.approx(think[rid], abs=1e-6)
        assert sent_after > 0 and lag < 50


def test_a_turn_without_an_answer_ends_its_session_and_every_planned_turn_has_a_row(write, tmp_path):
    r, db = run_workload(
        write,
        tmp_path,
        with_faults("error_rate: 0.25"),
        "name: fail\nendpoint: ep.yaml\nload: {arrival: closed, concurrency: 3}\n"
        "sessions: {turns: 4, user_tokens: 32, output_tokens: 8}\nstop: {requests: 80}\n",
    )
    assert r.returncode == 0, r.stderr
    con = duckdb.connect(str(db), read_only=True)
    assert [x[0] for x in con.execute("SELECT request_id FROM requests ORDER BY 1").fetchall()] == list(range(80))
    by_session: dict[int, list[tuple[int, str, str | None]]] = {}
    for session, turn, status, error in con.execute(
        "SELECT session, turn, status, error FROM requests ORDER BY session, turn"
    ).fetchall():
        by_session.setdefault(session, []).append((turn, status, error))
    ended = 0
    for turns in by_session.values():
        failed = next((i for i, (_, status, _) in enumerate(turns) if status != "ok"), None)
        if failed is None:
            continue
        assert turns[failed][1:] == ("error", "http_5xx")
        assert all(t[1:] == ("not_sent", "session_ended") for t in turns[failed + 1 :])
        ended += len(turns) - failed - 1
    assert ended > 0
    assert con.execute("SELECT not_sent FROM summary").fetchone() == (ended,)


def test_ctrl_c_mid_session_keeps_a_row_for_every_planned_turn(write, tmp_path):
    con = interrupted_run(
        write,
        tmp_path,
        "name: stop\nendpoint: ep.yaml\nload: {arrival: closed, concurrency: 3}\ntimeouts: {grace_s: 1}\n"
        "sessions: {turns: 5, think_s: 0.5, user_tokens: 16, output_tokens: {dist: choice, values: [2, 300]}}\n"
        "stop: {requests: 60}\n",
    )
    assert [x[0] for x in con.execute("SELECT request_id FROM requests ORDER BY 1").fetchall()] == list(range(60))
    statuses = dict(con.execute("SELECT status, count(*) FROM requests GROUP BY 1").fetchall())
    assert (
        statuses.get("ok", 0) >= 1
        and statuses.get("not_sent", 0) >= 1
        and set(statuses)
        <= {
            "ok",
            "interrupted",
            "not_sent",
        }
    )
    # Within a session, nothing is sent after a turn that was not.
    for turns in con.execute("SELECT list(status ORDER BY turn) FROM requests GROUP BY session").fetchall():
        sent = [s != "not_sent" for s in turns[0]]
        assert sent == sorted(sent, reverse=True), turns


def test_sessions_on_two_workers_keep_each_session_on_one(write, tmp_path):
    con = on_two_workers(
        write,
        tmp_path,
        "name: two\nendpoint: ep.yaml\nload: {arrival: poisson, rate: 20, concurrency: 8}\n"
        "sessions: {turns: {dist: uniform, min: 1, max: 4}, think_s: 0.05, user_tokens: 32, output_tokens: 8, "
        "steady_state: true}\nstop: {requests: 80}\n",
        80,
    )
    per_session = con.execute("SELECT count(DISTINCT worker), count(*) FROM requests GROUP BY session").fetchall()
    assert all(workers == 1 for workers, _ in per_session)
    assert con.execute("SELECT count(DISTINCT worker) FROM requests").fetchone() == (2,)
    assert con.execute("SELECT count(*) FROM requests WHERE status = 'ok'").fetchone() == (80,)
