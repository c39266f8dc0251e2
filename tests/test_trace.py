"""Trace replay: the real samples in tests/data/, the other formats, options, bad rows, and the commands."""

from __future__ import annotations

import csv
import http.server
import threading
from datetime import datetime, timezone
from fractions import Fraction

import duckdb
import orjson
import pydantic
import pytest

from conftest import DATA, FAST_ENDPOINT, loadgen
from loadgen.schedule.plan import plan_stage
from loadgen.spec import SpecError, load_workload
from loadgen.spec.workload import StageSpec, TraceSpec
from loadgen.target.prompts import make_prompt
from loadgen.trace.readers import batches, check

AZURE = DATA / "azure-2023-conv-head2000.csv"
MOONCAKE = DATA / "mooncake-conversation-head500.jsonl"


def stage(trace: dict, requests: dict | None = None, stop: dict | None = None) -> StageSpec:
    return StageSpec.model_validate(
        {
            "name": "t",
            "api": "completions",
            "model": None,
            "load": {"arrival": "trace", "trace": trace},
            "requests": requests or {},
            "stop": stop or {},
            "slo": {},
        }
    )


def azure_truth() -> list[tuple[Fraction, int, int]]:
    """The sample parsed independently: exact seconds (7 fractional digits) as fractions."""
    rows = []
    with AZURE.open(newline="") as f:
        for r in csv.DictReader(f):
            base, frac = r["TIMESTAMP"].split(".")
            secs = datetime.strptime(base, "%Y-%m-%d %H:%M:%S").replace(tzinfo=timezone.utc).timestamp()
            rows.append(
                (
                    Fraction(int(secs)) + Fraction(int(frac), 10 ** len(frac)),
                    int(r["ContextTokens"]),
                    int(r["GeneratedTokens"]),
                )
            )
    return rows


def test_azure_2023_sample_replays_on_its_own_timestamps():
    assert b"\r\n" in AZURE.read_bytes()[:200]  # the sample has CRLF line ends and seven fractional digits
    truth = azure_truth()
    plan = list(plan_stage(stage({"path": str(AZURE), "time_scale": 2.5, "max_context": None}), 1, 0))
    assert len(plan) == len(truth) == 2000
    t0 = truth[0][0]
    for p, (ts, prompt, output) in zip(plan, truth, strict=True):
        assert p.offset_s == pytest.approx(float((ts - t0) / Fraction(5, 2)), abs=1e-9)
        assert (p.prompt_tokens, p.output_tokens) == (prompt, output)


def test_lengths_are_clipped_to_the_context_and_requests_can_override_them():
    plan = list(plan_stage(stage({"path": str(AZURE)}), 1, 0))
    assert max(p.prompt_tokens + p.output_tokens for p in plan) <= 4096
    assert any(t[1] + t[2] > 4096 for t in azure_truth())  # the sample has prompts that need clipping
    plan = list(plan_stage(stage({"path": str(AZURE)}, requests={"output_tokens": 7}), 1, 0))
    assert {p.output_tokens for p in plan} == {7}


def test_window_rows_sample_and_limits():
    truth = azure_truth()
    t0 = truth[0][0]
    plan = list(plan_stage(stage({"path": str(AZURE), "start_s": 60, "end_s": 120}), 1, 0))
    expected = [t for t in truth if 60 <= t[0] - t0 < 120]
    assert len(plan) == len(expected) and plan[0].offset_s == pytest.approx(float(expected[0][0] - t0 - 60))
    rows = list(plan_stage(stage({"path": str(AZURE), "start_row": 100, "end_row": 300}), 1, 0))
    assert len(rows) == 200 and rows[0].offset_s == 0.0 and rows[0].prompt_tokens == truth[100][1]
    for path, fmt in ((AZURE, "azure"), (MOONCAKE, "mooncake")):  # what `validate` counts is what is replayed
        spec = stage({"path": str(path), "format": fmt, "start_row": 100, "end_row": 300}).load.trace
        assert check(spec).rows == 200
    sampled = list(plan_stage(stage({"path": str(AZURE), "sample": 0.25}), 1, 0))
    assert 400 < len(sampled) < 600
    assert sampled == list(plan_stage(stage({"path": str(AZURE), "sample": 0.25}), 1, 0))  # by the seed
    assert len(list(plan_stage(stage({"path": str(AZURE)}, stop={"requests": 10}), 1, 0))) == 10
    short = list(plan_stage(stage({"path": str(AZURE), "time_scale": 10}, stop={"duration_s": 5}), 1, 0))
    assert short and max(p.offset_s for p in short) < 5 and len(short) < 2000


def test_mooncake_sample_keeps_millisecond_timestamps_and_shared_prefixes():
    lines = [orjson.loads(x) for x in MOONCAKE.read_bytes().splitlines()]
    plan = list(plan_stage(stage({"path": str(MOONCAKE), "format": "mooncake", "max_context": None}), 1, 0))
    assert len(plan) == 500
    for p, row in zip(plan, lines, strict=True):
        assert p.offset_s == pytest.approx((row["timestamp"] - lines[0]["timestamp"]) / 1000, abs=1e-12)
        assert (p.prompt_tokens, p.output_tokens, p.prefix) == (
            row["input_length"],
            row["output_length"],
            tuple(row["hash_ids"]),
        )
    a, b = plan[0], plan[1]  # both start with hash id 0, then differ
    pa = make_prompt(a.prompt_tokens, a.request_id, 1, False, a.prefix)
    pb = make_prompt(b.prompt_tokens, b.request_id, 1, False, b.prefix)
    assert len(pa) == a.prompt_tokens and pa[:512] == pb[:512] and pa[512:1024] != pb[512:1024]
    assert (
        make_prompt(a.prompt_tokens, a.request_id, 1, True, a.prefix).split()[:512]
        == make_prompt(b.prompt_tokens, b.request_id, 1, True, b.prefix).split()[:512]
    )


def test_unrelated_prompts_share_no_prefix():
    x, y = make_prompt(600, 1, 1, False), make_prompt(600, 2, 1, False)
    assert x[:16] != y[:16]


def test_azure_2024_timestamps_with_zone_and_mixed_precision(write):
    p = write(
        "a24.csv",
        "TIMESTAMP,ContextTokens,GeneratedTokens\n2024-05-10 00:00:00+00:00,10,1\n"
        "2024-05-10 00:00:00.009930+00:00,20,2\n2024-05-10 00:00:01.5+00:00,30,3\n",
    )
    plan = list(plan_stage(stage({"path": str(p)}), 1, 0))
    assert [q.offset_s for q in plan] == [0.0, pytest.approx(0.00993, abs=1e-12), pytest.approx(1.5, abs=1e-12)]


BURST = """Timestamp,Model,Request tokens,Response tokens,Total tokens,Log Type
5,ChatGPT,100,20,120,Conversation log
6.5,GPT-4,200,0,200,Conversation log
7,GPT-4,300,30,330,API log
9.25,ChatGPT,400,40,440,Conversation log
"""


def test_burstgpt_filters_and_failed_rows(write):
    p = write("b.csv", BURST)
    plan = list(plan_stage(stage({"path": str(p), "format": "burstgpt"}), 1, 0))
    assert [(q.offset_s, q.prompt_tokens) for q in plan] == [(0.0, 100), (2.0, 300), (4.25, 400)]  # failed dropped
    kept = list(plan_stage(stage({"path": str(p), "format": "burstgpt", "keep_failed": True}), 1, 0))
    assert [q.output_tokens for q in kept] == [20, 1, 30, 40]  # a failed request is sent with one output token
    chat = list(
        plan_stage(
            stage({"path": str(p), "format": "burstgpt", "models": ["ChatGPT"], "log_types": ["Conversation log"]}),
            1,
            0,
        )
    )
    assert [q.prompt_tokens for q in chat] == [100, 400]


def test_bad_rows_name_file_line_and_column(write, tmp_path):
    text = AZURE.read_text().splitlines()[:6]
    text[4] = "2023-11-16 18:15:50.1000000,lots,44"
    p = write("bad.csv", "\r\n".join(text) + "\r\n")
    w = write(
        "w.yaml", f"name: bad\nendpoint: ep.yaml\nload: {{arrival: trace, trace: {{path: {p.name}, time_scale: 20}}}}\n"
    )
    write("ep.yaml", FAST_ENDPOINT)
    db = tmp_path / "bad.duckdb"
    res = loadgen("run", str(w), "--db", str(db))
    assert res.returncode == 2 and f"{p}:5: column ContextTokens" in res.stderr and "lots" in res.stderr
    assert not db.exists()
    res = loadgen("run", str(w), "--db", str(db), "--set", "load.trace.on_bad_rows=skip")
    assert res.returncode == 0, res.stderr
    assert "skipped 1 malformed trace rows" in res.stderr
    con = duckdb.connect(str(db), read_only=True)
    assert con.execute("SELECT count(*) FROM requests").fetchone() == (4,)
    (note,) = con.execute("SELECT note FROM runs").fetchone()
    assert "stage main: skipped 1 malformed trace rows" in note  # the run says what it left out
    info = loadgen("trace", "info", str(p))
    assert info.returncode == 0 and "malformed rows (left out)" in info.stdout and " 1 " in info.stdout
    res = loadgen("trace", "info", str(p), "--format", "mooncake")
    assert res.returncode == 2 and "not a mooncake trace" in res.stderr and "--format azure" in res.stderr


def test_bad_mooncake_line_names_the_line_and_key(write):
    good = MOONCAKE.read_bytes().splitlines()[:3]
    p = write("m.jsonl", b"\n".join([*good, b'{"timestamp": 9, "input_length": "x", "output_length": 1}']).decode())
    with pytest.raises(SpecError) as e:
        list(plan_stage(stage({"path": str(p), "format": "mooncake"}), 1, 0))
    assert e.value.line == 4 and "input_length" in e.value.message


def replay(write, tmp_path, workload: str) -> duckdb.DuckDBPyConnection:
    """Run a workload (whose endpoint is ep.yaml, the fast emulator) and open its database."""
    write("ep.yaml", FAST_ENDPOINT)
    db = tmp_path / "replay.duckdb"
    res = loadgen("run", str(write("w.yaml", workload)), "--db", str(db))
    assert res.returncode == 0, res.stderr
    return duckdb.connect(str(db), read_only=True)


def test_replay_lands_in_the_database_exactly_as_the_trace_gives_it(write, tmp_path):
    con = replay(
        write,
        tmp_path,
        f"name: rep\nendpoint: ep.yaml\napi: completions\n"
        f"load: {{arrival: trace, concurrency: 64, trace: {{path: {AZURE}, time_scale: 40}}}}\n"
        "requests: {output_tokens: 4}\nstop: {requests: 80}\n",
    )
    rows = con.execute(
        "SELECT scheduled_s, prompt_tokens, server_prompt_tokens, max_tokens, lag_ms FROM requests ORDER BY request_id"
    ).fetchall()
    truth = azure_truth()[:80]
    start = rows[0][0]
    for (sched, prompt, server_prompt, max_tokens, _), (ts, t_prompt, _) in zip(rows, truth, strict=True):
        assert sched - start == pytest.approx(float((ts - truth[0][0]) / 40), abs=1e-9)
        assert prompt == server_prompt == min(t_prompt, 4092)  # token-ID prompts: the server counts them exactly
        assert max_tokens == 4
    assert sorted(r[4] for r in rows)[len(rows) // 2] < 10  # sends kept to the schedule


def test_sweep_expands_into_stages_and_warmup_stays_out_of_summary(write, tmp_path):
    write("ep.yaml", FAST_ENDPOINT)
    w = write(
        "w.yaml",
        "name: sw\nendpoint: ep.yaml\nload: {arrival: closed}\n"
        "requests: {prompt_tokens: 32, output_tokens: 4}\nstop: {requests: 6}\nwarmup: {requests: 2}\n"
        "sweep: {load.concurrency: [1, 3]}\n",
    )
    spec, _ = load_workload(w)
    assert [(s.name, s.load.concurrency) for s in spec.stages] == [("concurrency=1", 1), ("concurrency=3", 3)]
    db = tmp_path / "sw.duckdb"
    assert loadgen("run", str(w), "--db", str(db)).returncode == 0
    con = duckdb.connect(str(db), read_only=True)
    assert con.execute(
        "SELECT stage, count(*) FILTER (WHERE warmup), count(*) FROM requests GROUP BY 1 ORDER BY 1"
    ).fetchall() == [("concurrency=1", 2, 6), ("concurrency=3", 2, 6)]
    assert con.execute("SELECT stage, requests FROM summary ORDER BY 1").fetchall() == [
        ("concurrency=1", 4),
        ("concurrency=3", 4),
    ]


def test_a_replay_without_stop_replays_the_whole_trace(write):
    w = write("w.yaml", f"name: all\nendpoint: ep.yaml\nload: {{arrival: trace, trace: {{path: {AZURE}}}}}\n")
    spec, _ = load_workload(w)
    assert len(list(plan_stage(spec.stages[0], spec.seed, 0))) == 2000  # what validate says it will replay
    write("ep.yaml", FAST_ENDPOINT)
    res = loadgen("validate", str(w))
    assert res.returncode == 0 and "2000 rows to replay" in res.stdout and "2000" in res.stdout.split("preview")[1]


def test_trace_info_and_synth(tmp_path):
    res = loadgen("trace", "info", str(AZURE))
    assert res.returncode == 0 and "2,000" in res.stdout and "rate over time" in res.stdout
    out = tmp_path / "syn.csv"
    assert loadgen("trace", "synth", str(out), "--rows", "300", "--rate", "10").returncode == 0
    plan = list(plan_stage(stage({"path": str(out)}), 1, 0))
    assert len(plan) == 300 and 20 < plan[-1].offset_s < 40
    res = loadgen("trace", "info", str(tmp_path / "missing.csv"))
    assert res.returncode == 2 and "missing.csv" in res.stderr
    half = tmp_path / "half.jsonl"
    assert loadgen("trace", "synth", str(half), "--format", "bailian", "--rows", "5", "--shared", "0.5").returncode == 0
    plan = list(plan_stage(stage({"path": str(half), "format": "bailian"}), 1, 0))
    assert all(p.prompt_tokens == 2048 and len(p.prefix) == 128 for p in plan)
    assert len({p.prefix[:64] for p in plan}) == 1 and len({p.prefix[64] for p in plan}) == 5  # half shared
    res = loadgen("trace", "synth", str(half), "--format", "bailian", "--shared", "1.5")
    assert res.returncode == 2 and "--shared" in res.stderr


def test_trace_fetch_from_a_loopback_mirror(tmp_path):
    served = tmp_path / "www"
    served.mkdir()
    (served / "AzureLLMInferenceTrace_conv.csv").write_bytes(AZURE.read_bytes())
    handler = lambda *a, **k: http.server.SimpleHTTPRequestHandler(*a, directory=str(served), **k)  # noqa: E731
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    mirror = f"http://127.0.0.1:{httpd.server_address[1]}"
    try:
        dest = tmp_path / "cache"
        res = loadgen("trace", "fetch", "azure-2023-conv", "--dir", str(dest), "--mirror", mirror)
        assert res.returncode == 0, res.stderr
        assert (dest / "AzureLLMInferenceTrace_conv.csv").read_bytes() == AZURE.read_bytes()
        assert "already" in loadgen("trace", "fetch", "azure-2023-conv", "--dir", str(dest), "--mirror", mirror).stdout
        res = loadgen("trace", "fetch", "mooncake-conversation", "--dir", str(dest), "--mirror", mirror)
        assert res.returncode == 1 and "cannot download" in res.stderr and not list(dest.glob("*.part"))
    finally:
        httpd.shutdown()
    assert loadgen("trace", "fetch", "nope").returncode == 2


@pytest.mark.exclusive  # a cached prefill a few milliseconds faster
def test_shared_trace_prefixes_hit_the_emulators_prefix_cache(write, tmp_path):
    # Three conversations of two requests each: the second of each resends the first's blocks and one more.
    rows = []
    for conv in range(3):
        first = [100 * conv + 1, 100 * conv + 2]
        rows.append({"timestamp": 400 * conv, "input_length": 1024, "output_length": 4, "hash_ids": first})
        rows.append({"timestamp": 400 * conv + 200, "input_length": 1536, "output_length": 4, "hash_ids": first + [9]})
    trace = write("t.jsonl", "".join(orjson.dumps(r).decode() + "\n" for r in rows))
    con = replay(
        write,
        tmp_path,
        f"name: pc\nendpoint: ep.yaml\nload: {{arrival: trace, trace: {{path: {trace}, format: mooncake}}}}\n",
    )
    got = con.execute("SELECT prompt_tokens, cached_tokens, ttft_ms FROM requests ORDER BY request_id").fetchall()
    # A first request finds nothing cached; its follow-up finds the 1024 tokens of its two blocks.
    assert [(p, c) for p, c, _ in got] == [(1024, 0), (1536, 1024)] * 3
    assert all(again[2] < first[2] for first, again in zip(got[::2], got[1::2], strict=True))
    # The summary's share of prompt tokens the server held: 3 x 1024 of 3 x (1024 + 1536).
    assert con.execute("SELECT cached_share FROM summary").fetchone()[0] == pytest.approx(0.4)


def bailian_rows() -> list[dict]:
    """Two conversations of two turns in the Bailian format: a turn resends its parent's blocks (16 tokens each),
    then adds its own; both conversations open with the same two-block system prompt (ids 1, 2)."""
    rows = []
    for conv in range(2):
        root, child = 10 * conv + 1, 10 * conv + 2
        first = [1, 2, 100 * conv + 3, 100 * conv + 4]
        rows.append(
            {
                "chat_id": root,
                "parent_chat_id": -1,
                "timestamp": 3.0 * conv,
                "input_length": 64,
                "output_length": 4,
                "type": "text",
                "turn": 1,
                "hash_ids": first,
            }
        )
        rows.append(
            {
                "chat_id": child,
                "parent_chat_id": root,
                "timestamp": 3.0 * conv + 1.25,
                "input_length": 96,
                "output_length": 4,
                "type": "text",
                "turn": 2,
                "hash_ids": [*first, 100 * conv + 5, 100 * conv + 6],
            }
        )
    return rows


def test_bailian_trace_replays_seconds_and_16_token_blocks(write):
    p = write("b.jsonl", "".join(orjson.dumps(r).decode() + "\n" for r in bailian_rows()))
    from loadgen.trace.info import detect_format

    assert detect_format(p) == "bailian"
    plan = list(plan_stage(stage({"path": str(p), "format": "bailian"}), 1, 0))
    assert [(x.offset_s, x.prompt_tokens, x.output_tokens) for x in plan] == [
        (0.0, 64, 4),
        (1.25, 96, 4),
        (3.0, 64, 4),
        (4.25, 96, 4),
    ]
    assert [x.group for x in plan] == [1, 1, 11, 11]  # each turn's conversation: its first turn's chat_id
    assert stage({"path": str(p), "format": "bailian"}).load.trace.block == 16
    assert stage({"path": str(p), "format": "bailian", "block_tokens": 32}).load.trace.block == 32
    first, second = (make_prompt(x.prompt_tokens, x.request_id, 1, False, x.prefix, 16) for x in plan[:2])
    assert second[:64] == first and second[64:] != first[:32]  # the turn resends its parent's prompt
    other = make_prompt(plan[2].prompt_tokens, plan[2].request_id, 1, False, plan[2].prefix, 16)
    assert other[:32] == first[:32] and other[32:] != first[32:]  # the shared system prompt, then its own


@pytest.mark.parametrize(
    ("row", "key"),
    [
        ({"parent_chat_id": -1, "turn": 1}, "chat_id"),
        ({"chat_id": 5, "parent_chat_id": -2, "turn": 1}, "parent_chat_id"),
        ({"chat_id": 5, "parent_chat_id": -1, "turn": 0}, "turn"),
        ({"chat_id": 5, "parent_chat_id": -1, "turn": 1, "hash_ids": ["a"]}, "hash_ids"),
    ],
)
def test_bad_bailian_rows_name_the_line_and_key_or_are_skipped(write, row, key):
    good = "".join(orjson.dumps(r).decode() + "\n" for r in bailian_rows())
    bad = {"timestamp": 9.0, "input_length": 10, "output_length": 1, **row}
    p = write("b.jsonl", good + orjson.dumps(bad).decode() + "\n")
    with pytest.raises(SpecError) as e:
        list(plan_stage(stage({"path": str(p), "format": "bailian"}), 1, 0))
    assert e.value.line == 5 and key in e.value.message
    skipped = check(stage({"path": str(p), "format": "bailian", "on_bad_rows": "skip"}).load.trace)
    assert (skipped.rows, skipped.bad_rows) == (4, 1)


@pytest.mark.slow
def test_a_turn_is_never_sent_before_the_answer_it_follows(write, tmp_path):
    # Each conversation's second turn arrives in the trace 50 ms after its first, long before the first's
    # 64-token answer (about 0.4 s on the fast emulator) has ended; a third turn arrives 3 s later (1.5 s
    # replayed), after its parent's end.
    rows = []
    for conv in range(3):
        base, root = 4.0 * conv, 10 * conv + 1
        for turn, (dt, parent) in enumerate(((0.0, -1), (0.05, root), (3.0, root + 1)), start=1):
            rows.append(
                {
                    "chat_id": root + turn - 1,
                    "parent_chat_id": parent,
                    "timestamp": base + dt,
                    "input_length": 32 * turn,
                    "output_length": 64,
                    "type": "text",
                    "turn": turn,
                    "hash_ids": list(range(2 * turn)),
                }
            )
    trace = write("b.jsonl", "".join(orjson.dumps(r).decode() + "\n" for r in rows))
    con = replay(
        write,
        tmp_path,
        f"name: turns\nendpoint: ep.yaml\nload: {{arrival: trace, concurrency: 8, trace: {{path: {trace}, "
        "format: bailian, time_scale: 2}}\nrequests: {output_tokens: 64}\n",
    )
    got = con.execute("SELECT scheduled_s, sent_s, end_s, lag_ms FROM requests ORDER BY request_id").fetchall()
    start = got[0][0]
    for conv in range(3):
        first, second, third = got[3 * conv : 3 * conv + 3]
        assert second[0] == first[2] and second[1] >= first[2]  # waited for its parent: scheduled at its end
        assert third[0] - start == pytest.approx((4.0 * conv + 3.0) / 2, abs=1e-9) and third[0] > second[2]
        assert max(second[3], third[3]) < 50  # the wait is in the schedule, not in the lag
    # Each row says its conversation, turn and parent; the sessions view gathers them.
    linked = con.execute("SELECT session, turn, parent_request_id FROM requests ORDER BY request_id").fetchall()
    assert linked == [(10 * c + 1, t, None if t == 1 else 3 * c + t - 2) for c in range(3) for t in (1, 2, 3)]
    views = con.execute("SELECT session, turns, total_s, ttft_by_turn_ms FROM sessions ORDER BY session").fetchall()
    assert [(v[0], v[1], len(v[3])) for v in views] == [(1, 3, 3), (11, 3, 3), (21, 3, 3)]
    for (_, _, total, _), conv in zip(views, range(3), strict=True):
        assert total == pytest.approx(got[3 * conv + 2][2] - got[3 * conv][1])
    con.close()
    # The report draws TTFT against turn and against the cached share of the prompt.
    res = loadgen("report", str(tmp_path / "replay.duckdb"), "--out", str(tmp_path / "report"))
    assert res.returncode == 0, res.stderr
    assert {"ttft_vs_turn.png", "ttft_vs_cached_share.png"} <= {p.name for p in (tmp_path / "report").iterdir()}
    assert "Prefix reuse" in (tmp_path / "report" / "index.html").read_text()


# A tool agent's calls in Mooncake's format: each next call resends the last one's prompt and answer and adds a
# tool's result, so its hash ids begin with that call's full blocks. Rows 1 and 2 share only the system prompt's
# block 0 with row 0; row 4 is shorter than row 0's prompt and answer together.
AGENT_CALLS = [
    (0, 1100, 100, [0, 1, 2]),
    (10, 700, 50, [0, 9]),
    (20, 1300, 60, [0, 7, 8]),
    (50, 2100, 80, [0, 1, 10, 11, 12]),
    (60, 1150, 80, [0, 1, 4]),
    (70, 3000, 80, [0, 1, 10, 11, 13, 14]),
]


def test_a_tool_agents_next_call_follows_the_call_its_prompt_extends(write, tmp_path):
    rows = [{"timestamp": t, "input_length": n, "output_length": o, "hash_ids": ids} for t, n, o, ids in AGENT_CALLS]
    trace = write("agent.jsonl", "".join(orjson.dumps(r).decode() + "\n" for r in rows))
    spec = TraceSpec(path=str(trace), format="mooncake", dependencies="prefix")
    (batch,) = list(batches(spec))
    assert [parent for _, parent, _ in batch.chats] == [-1, -1, -1, 0, -1, 3]
    assert batch.groups == [0, 1, 2, 0, 4, 0] and [turn for *_, turn in batch.chats] == [1, 1, 1, 2, 1, 3]
    # Replayed: a call is not sent before the one it follows has ended (its answer: 20 tokens, about 0.15 s).
    con = replay(
        write,
        tmp_path,
        f"name: agent\nendpoint: ep.yaml\napi: completions\nload: {{arrival: trace, concurrency: 8, trace: "
        f"{{path: {trace}, format: mooncake, dependencies: prefix}}}}\nrequests: {{output_tokens: 20}}\n",
    )
    got = con.execute("SELECT request_id, parent_request_id, sent_s, end_s FROM requests ORDER BY 1").fetchall()
    assert [r[1] for r in got] == [None, None, None, 0, None, 3]
    for _, parent, sent, _ in got:
        assert parent is None or sent >= got[parent][3]
    with pytest.raises(pydantic.ValidationError, match="dependencies: prefix infers a Mooncake trace"):
        TraceSpec(path=str(trace), format="bailian", dependencies="prefix")
