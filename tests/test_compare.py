"""`loadgen compare`: a measured run against another (a twin's), per stage and whole, in one database or two."""

from __future__ import annotations

import shutil

import duckdb
import orjson
import pytest

from conftest import FAST_ENDPOINT, loadgen
from loadgen.report.compare import compare_runs
from loadgen.store.read import reading

# The "twin": the same emulated H100 with steps four times as long (26 ms against 6), slower beyond what other
# tests' load on the machine moves either.
SLOWER = FAST_ENDPOINT.replace("fast-emu", "slower-emu").replace("overhead_ms: 0.2", "overhead_ms: 20")
TWO_STAGES = """
name: two-stages
endpoint: ep.yaml
requests: {prompt_tokens: 32, output_tokens: 8}
stages:
  - {name: one, load: {arrival: closed, concurrency: 1}, stop: {requests: 4}}
  - {name: four, load: {arrival: closed, concurrency: 4}, stop: {requests: 8}}
"""


@pytest.fixture(scope="module")
def dbs(tmp_path_factory):
    """measured.duckdb: the workload on fast-emu; twin.duckdb: the same workload on slower-emu."""
    tmp = tmp_path_factory.mktemp("compare")
    (tmp / "ep.yaml").write_text(FAST_ENDPOINT)
    (tmp / "slower.yaml").write_text(SLOWER)
    (tmp / "w.yaml").write_text(TWO_STAGES)
    measured, twin = tmp / "measured.duckdb", tmp / "twin.duckdb"
    for db, ep in ((measured, "ep.yaml"), (twin, "slower.yaml")):
        res = loadgen("run", str(tmp / "w.yaml"), "--endpoint", str(tmp / ep), "--db", str(db), "--server-metrics", "0")
        assert res.returncode == 0, res.stderr
    return measured, twin


def _edited(src, dst, *sql: str):
    """A copy of a database with some statements applied to it (a known change to compare against)."""
    shutil.copyfile(src, dst)
    con = duckdb.connect(str(dst))
    for s in sql:
        con.execute(s)
    con.close()
    return dst


def _json(*args: str) -> list[dict]:
    res = loadgen("compare", *args, "--format", "json")
    assert res.returncode == 0, res.stderr
    return orjson.loads(res.stdout)


def test_compare_across_databases_per_stage_from_the_summary(dbs):
    measured, twin = dbs
    rows = _json(str(measured), "fast-emu", "slower-emu", "--b-db", str(twin))
    # The whole run first, then each stage in the workload's order; every metric at p50 and p90, and the rate.
    assert [r["stage"] for r in rows[::9]] == [None, "one", "four"]
    assert [(r["metric"], r["quantile"]) for r in rows[:9]] == [
        *((m, q) for m in ("ttft_ms", "tpot_ms", "e2e_ms", "itl_ms") for q in ("p50", "p90")),
        ("output_tokens_per_s", None),
    ]
    for r in rows:
        assert r["error"] == pytest.approx(r["b"] / r["a"] - 1) and r["b_minus_a"] == pytest.approx(r["b"] - r["a"])
        assert (r["low"] is None) == (r["metric"] in ("itl_ms", "output_tokens_per_s"))
    # Each figure is the store's own: the summary view's per stage and the run_summary's for the whole run.
    for db, side in ((measured, "a"), (twin, "b")):
        con = duckdb.connect(str(db), read_only=True)
        cols = "stage, ttft_p90_ms, itl_p50_ms, output_tokens_per_s"
        want = {s: v for s, *v in con.execute(f"SELECT {cols} FROM summary").fetchall()}
        want[None] = list(con.execute(f"SELECT {cols.replace('stage', 'NULL')} FROM run_summary").fetchone()[1:])
        con.close()
        got = {(r["stage"], r["metric"], r["quantile"]): r[side] for r in rows}
        for stage, (ttft_p90, itl_p50, rate) in want.items():
            assert got[stage, "ttft_ms", "p90"] == pytest.approx(ttft_p90)
            assert got[stage, "itl_ms", "p50"] == pytest.approx(itl_p50)
            assert got[stage, "output_tokens_per_s", None] == pytest.approx(rate)
    # The twin's slower steps: every latency above the measured one, the throughput below.
    assert all((r["error"] < 0) == (r["metric"] == "output_tokens_per_s") for r in rows if r["metric"] != "ttft_ms")
    # For people: a table naming both databases, the stages and the error column.
    res = loadgen("compare", str(measured), "fast-emu", "slower-emu", "--b-db", str(twin))
    assert res.returncode == 0, res.stderr
    out = " ".join(res.stdout.split())
    assert f"A = fast-emu in {measured}, B = slower-emu in {twin}" in out
    for text in ("whole run", "four", "itl_ms", "output_tokens_per_s", "error (B/A - 1)", "95% interval"):
        assert text in out


def test_the_error_of_a_known_twin(dbs, tmp_path):
    """A twin whose TTFT is 10% longer on every request and whose run lost stage "four" (renamed): its TTFT error
    is +10.0% at each quantile, every other latency's 0; only stage "one" is compared, and the rest is said."""
    measured, _ = dbs
    twin = _edited(
        measured,
        tmp_path / "known.duckdb",
        "UPDATE requests SET ttft_ms = ttft_ms * 1.1",
        "UPDATE requests SET stage = 'other' WHERE stage = 'four'",
        "UPDATE stages SET stage = 'other' WHERE stage = 'four'",
    )
    (run,) = duckdb.connect(str(twin), read_only=True).execute("SELECT run_id FROM runs").fetchone()
    with reading(measured) as a, reading(twin) as b:
        notes: list[str] = []
        rows = compare_runs(a, "fast-emu", b, run, said=notes.append)
    assert {r.stage for r in rows} == {None, "one"}
    assert notes == ["stages compared by name; left out, only in fast-emu: four; only in " + run + ": other"]
    for r in rows:
        if r.metric == "ttft_ms":
            assert r.error == pytest.approx(0.1) and r.low is not None and r.low <= r.delta <= r.high
        elif r.metric != "output_tokens_per_s":  # the stage's span moves with the TTFTs' ends, not the rate alone
            assert r.error == pytest.approx(0.0), r
    # The CLI prints the same rows, and says what it left out.
    res = loadgen("compare", str(measured), "fast-emu", run, "--b-db", str(twin), "--format", "csv")
    assert res.returncode == 0, res.stderr
    lines = res.stdout.splitlines()
    assert lines[0] == "stage,metric,quantile,a,b,b_minus_a,low,high,error" and len(lines) == 1 + len(rows)
    assert "only in fast-emu: four" in res.stderr


def test_one_database_keeps_the_old_contract(dbs, tmp_path):
    """`loadgen compare DB A B` with two endpoints' runs in one database, by endpoint name and by run ID."""
    measured, twin = dbs
    both = tmp_path / "both.duckdb"
    shutil.copyfile(measured, both)
    con = duckdb.connect(str(both))
    con.execute(f"ATTACH '{twin}' AS t (READ_ONLY)")
    for table in ("runs", "requests", "events", "stages", "workers"):
        con.execute(f"INSERT INTO {table} SELECT * FROM t.{table}")
    (run,) = con.execute("SELECT run_id FROM runs WHERE endpoint = 'slower-emu'").fetchone()
    con.close()
    by_name, by_run = _json(str(both), "fast-emu", "slower-emu"), _json(str(both), "fast-emu", run)
    assert by_name == by_run == _json(str(measured), "fast-emu", "slower-emu", "--b-db", str(twin))
    res = loadgen("compare", str(both), "fast-emu", "slower-emu")
    assert res.returncode == 0 and "A = fast-emu, B = slower-emu;" in " ".join(res.stdout.split())


def test_bad_input_is_one_line_and_exit_2(dbs, tmp_path):
    measured, twin = dbs
    dead = _edited(twin, tmp_path / "dead.duckdb", "UPDATE requests SET status = 'error'")
    for args, said in (
        ((str(tmp_path / "nothing.duckdb"), "fast-emu", "slower-emu"), "nothing.duckdb: no such results database"),
        (
            (str(measured), "fast-emu", "x", "--b-db", str(tmp_path / "no.duckdb")),
            "no.duckdb: no such results database",
        ),
        (
            (str(measured), "nobody", "slower-emu", "--b-db", str(twin)),
            f"{measured}: no run or endpoint named 'nobody'",
        ),
        ((str(measured), "fast-emu", "nobody", "--b-db", str(twin)), f"{twin}: no run or endpoint named 'nobody'"),
        ((str(measured), "fast-emu", "slower-emu"), f"{measured}: no run or endpoint named 'slower-emu'"),
        (
            (str(measured), "fast-emu", "slower-emu", "--b-db", str(dead)),
            f"{dead}: 'slower-emu' has no ok requests outside warm-up to compare",
        ),
        ((str(measured), "fast-emu", "slower-emu", "--format", "xml"), "invalid option"),
    ):
        res = loadgen("compare", *args)
        assert res.returncode == 2, (args, res.stderr)
        assert said in res.stderr and len(res.stderr.strip().splitlines()) == 1 and "Traceback" not in res.stderr
        assert res.stdout == ""


def test_a_run_that_thought_is_compared_on_its_answers_first_token_too(dbs, tmp_path):
    """Where either side thought, its time to the answer's first token is compared beside TTFT (the runs above,
    which did not think, have no such rows): here every answer 100 ms after the first token."""
    measured, _ = dbs
    sql = "UPDATE requests SET reasoning_tokens = 2, answer_ttft_ms = ttft_ms + 100 WHERE status = 'ok'"
    thought = _edited(measured, tmp_path / "thought.duckdb", sql)
    rows = _json(str(measured), "fast-emu", "fast-emu", "--b-db", str(thought))
    answer = {r["quantile"]: r for r in rows if r["stage"] is None and r["metric"] == "answer_ttft_ms"}
    ttft = {r["quantile"]: r for r in rows if r["stage"] is None and r["metric"] == "ttft_ms"}
    assert set(answer) == {"p50", "p90"}
    for q in answer:
        assert answer[q]["a"] == pytest.approx(ttft[q]["a"])  # nothing thought: the answer's first token is TTFT's
        assert answer[q]["b"] == pytest.approx(ttft[q]["b"] + 100)
