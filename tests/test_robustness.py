"""Bad input never escapes as a traceback; timeouts, retries, kills, held and unwritable databases, secrets."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import duckdb
import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from conftest import FAST_ENDPOINT, ROOT, loadgen, run_workload, served, streaming, with_faults, word_tokenizer
from loadgen.client.openai import read_chunk
from loadgen.client.sse import SSEParser
from loadgen.schedule.plan import plan_stage
from loadgen.spec import SpecError, load_endpoint, load_workload
from loadgen.spec.workload import StageSpec

SETTINGS = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])

yaml_values = st.recursive(
    st.none() | st.booleans() | st.integers(-5, 5000) | st.floats(allow_nan=False, width=32) | st.text(max_size=12),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=10), inner, max_size=4),
    max_leaves=12,
)
workload_keys = st.sampled_from(
    [
        "name",
        "endpoint",
        "api",
        "seed",
        "load",
        "requests",
        "stop",
        "slo",
        "stages",
        "sweep",
        "warmup",
        "timeouts",
        "retry",
        "model",
        "rate",
        "arrival",
    ]
)


@SETTINGS
@given(st.dictionaries(workload_keys, yaml_values, max_size=8))
def test_any_workload_mapping_loads_or_names_the_place(tmp_path_factory, data):
    p = tmp_path_factory.mktemp("w") / "w.yaml"
    p.write_text(yaml.safe_dump(data))
    try:
        load_workload(p)
    except SpecError as e:
        assert str(p) in str(e)


@SETTINGS
@given(st.text(max_size=300))
def test_any_text_as_a_workload_or_endpoint_file(tmp_path_factory, text):
    p = tmp_path_factory.mktemp("w") / "w.yaml"
    p.write_text(text)
    for loader in (load_workload, load_endpoint):
        try:
            loader(p)
        except SpecError as e:
            assert str(p) in str(e)


@SETTINGS
@given(st.lists(st.binary(max_size=40), max_size=20))
def test_sse_parser_and_chunk_reader_accept_any_bytes(chunks):
    p = SSEParser()
    for c in chunks:
        for payload in p.feed(c):
            read_chunk(payload)
    for payload in p.close():
        read_chunk(payload)


csv_cell = st.text(alphabet='0123456789-:. ,abc+Z"', max_size=30)


# Each example is a file DuckDB reads (37 ms of CPU): fewer than the others' 150, over the same small cells.
@settings(SETTINGS, max_examples=60)
@given(st.lists(st.tuples(csv_cell, csv_cell, csv_cell), min_size=1, max_size=8))
def test_trace_reader_rejects_bad_rows_with_their_line(tmp_path_factory, rows):
    p = tmp_path_factory.mktemp("t") / "t.csv"
    p.write_text("TIMESTAMP,ContextTokens,GeneratedTokens\n" + "".join(f"{a},{b},{c}\n" for a, b, c in rows))
    s = StageSpec.model_validate(
        {
            "name": "t",
            "api": "completions",
            "model": None,
            "requests": {},
            "stop": {},
            "slo": {},
            "load": {"arrival": "trace", "trace": {"path": str(p)}},
        }
    )
    try:
        list(plan_stage(s, 1, 0))
    except SpecError as e:
        assert str(p) in str(e)


def run_with(write, tmp_path, endpoint: str, workload_extra: str, n: int = 30):
    write("ep.yaml", endpoint)
    w = write(
        "w.yaml",
        "name: r\nendpoint: ep.yaml\nload: {arrival: closed, concurrency: 8}\n"
        f"requests: {{prompt_tokens: 16, output_tokens: 6}}\nstop: {{requests: {n}}}\n" + workload_extra,
    )
    db = tmp_path / "r.duckdb"
    res = loadgen("run", str(w), "--db", str(db))
    assert res.returncode == 0, res.stderr
    return duckdb.connect(str(db), read_only=True)


def test_first_token_and_total_timeouts(write, tmp_path):
    con = run_with(
        write, tmp_path, with_faults("stall_rate: 0.5, stall_first_ms: 400"), "timeouts: {first_token_s: 0.2}\n"
    )
    rows = con.execute("SELECT error, error_detail FROM requests WHERE status <> 'ok'").fetchall()
    assert rows and all(e == "timeout" and "first-token" in d for e, d in rows)
    con.close()
    con = run_with(write, tmp_path / "b", FAST_ENDPOINT, "timeouts: {total_s: 0.01}\n", n=5)
    assert {r[0] for r in con.execute("SELECT error_detail FROM requests").fetchall()} == {
        "the request outran the total timeout (0.01 s)"
    }


def test_429_is_retried_only_when_asked_honouring_retry_after(write, tmp_path):
    faulty = with_faults("rate_limit_rate: 0.4, retry_after_s: 0.05")
    con = run_with(write, tmp_path, faulty, "", n=40)
    assert con.execute("SELECT count(*) FROM requests WHERE error = 'http_429'").fetchone()[0] > 5
    assert con.execute("SELECT max(retries) FROM requests").fetchone() == (0,)
    con.close()
    con = run_with(write, tmp_path / "b", faulty, "retry: {on_429: true, max_retries: 10}\n", n=40)
    assert con.execute("SELECT count(*) FROM requests").fetchone() == (40,)
    assert con.execute("SELECT count(*) FROM requests WHERE status <> 'ok'").fetchone() == (0,)
    retried = con.execute("SELECT retries, ttft_sched_ms - ttft_ms FROM requests WHERE retries > 0").fetchall()
    assert retried and all(wait >= 45 * n for n, wait in retried)  # each retry waited Retry-After (50 ms)


def test_sigkill_leaves_a_readable_database(write, tmp_path):
    write("ep.yaml", FAST_ENDPOINT)
    w = write(
        "w.yaml",
        "name: k\nendpoint: ep.yaml\nload: {arrival: closed, concurrency: 4}\n"
        "requests: {prompt_tokens: 16, output_tokens: 20}\nstop: {requests: 100000}\n",
    )
    db = tmp_path / "k.duckdb"
    proc = subprocess.Popen(
        [sys.executable, "-m", "loadgen", "run", str(w), "--db", str(db)],
        cwd=ROOT,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )
    streaming(proc, 3)
    os.killpg(proc.pid, signal.SIGKILL)  # loadgen and its emulator, at once
    proc.wait()
    con = duckdb.connect(str(db), read_only=True)
    assert con.execute("SELECT status FROM runs").fetchall() == [("running",)]
    (n,) = con.execute("SELECT count(*) FROM requests").fetchone()
    assert n > 20  # everything up to about a second before the kill
    assert con.execute("SELECT count(*) FROM events").fetchone()[0] == 20 * n


def test_a_database_held_by_another_process_or_unwritable_is_a_clear_failure(write, tmp_path):
    write("ep.yaml", FAST_ENDPOINT)
    w = write("w.yaml", "name: h\nendpoint: ep.yaml\nstop: {requests: 2}\n")
    db = tmp_path / "held.duckdb"
    holder = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import duckdb, time; from loadgen.store import Store; "
            f"s = Store({str(db)!r}); print('ready', flush=True); time.sleep(60)",
        ],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == "ready"
        res = loadgen("run", str(w), "--db", str(db))
        assert res.returncode == 1 and "cannot open results database" in res.stderr
        assert res.stderr.strip().count("\n") == 0 and "Traceback" not in res.stderr
        # Reading it meanwhile works, from a snapshot, and says so.
        res = loadgen("query", str(db), "SELECT count(*) AS runs FROM runs")
        assert res.returncode == 0 and "held by another loadgen" in res.stderr and "snapshot" in res.stderr
        assert "runs" in res.stdout and "0" in res.stdout
    finally:
        holder.kill()
        holder.wait()
    blocker = write("file.txt", "not a folder")
    res = loadgen("run", str(w), "--db", str(blocker / "sub" / "r.duckdb"))
    assert res.returncode == 1 and "cannot open results database" in res.stderr


def test_credentials_in_urls_and_keys_appear_nowhere(write, tmp_path):
    with served(write("ep.yaml", FAST_ENDPOINT)) as url:
        port = url.split(":")[-1].split("/")[0]
        w = write("w.yaml", "name: s\nendpoint: x\nstop: {requests: 3}\n")
        db = tmp_path / "s.duckdb"
        secret = "hunter2canary"
        res = loadgen("run", str(w), "--db", str(db), "--endpoint", f"http://user:{secret}@127.0.0.1:{port}/v1")
        assert res.returncode == 0, res.stderr
        assert secret not in res.stdout + res.stderr
        assert secret.encode() not in Path(db).read_bytes()
        con = duckdb.connect(str(db), read_only=True)
        assert "***@127.0.0.1" in con.execute("SELECT spec FROM runs").fetchone()[0]


def test_a_wrong_endpoint_fails_fast_with_what_it_answered_and_the_likely_fix(write, tmp_path):
    w = write("w.yaml", "name: wrong\nendpoint: x\nstop: {requests: 40}\n")
    db = tmp_path / "w.duckdb"
    with served(write("ep.yaml", FAST_ENDPOINT)) as url:
        res = loadgen("run", str(w), "--db", str(db), "--endpoint", url.removesuffix("/v1"))
        assert res.returncode == 1 and f"(did you mean {url}?)" in res.stderr and "HTTP 404" in res.stderr
        assert len(res.stderr.strip().splitlines()) == 1 and not db.exists()
        res = loadgen("run", str(w), "--db", str(db), "--endpoint", url, "--set", "model=gpt-4")
        assert res.returncode == 1 and "does not serve model 'gpt-4'; it serves llama-2-7b" in res.stderr
        assert "--set model=llama-2-7b" in res.stderr and not db.exists()
        # Past the checks, every request refused alike (prompts beyond the context): the run stops as failed.
        res = loadgen("run", str(w), "--db", str(db), "--endpoint", url, "--set", "requests.prompt_tokens=5000")
    assert res.returncode == 1 and "Traceback" not in res.stderr
    last = res.stderr.strip().splitlines()[-1]
    assert last.startswith("loadgen: the first 5 requests all failed with HTTP 400") and "context length" in last
    con = duckdb.connect(str(db), read_only=True)
    assert con.execute("SELECT status FROM runs").fetchall() == [("failed",)]
    (n,) = con.execute("SELECT count(*) FROM requests").fetchone()
    assert 5 <= n < 40


def test_a_bind_beyond_loopback_is_said_on_the_terminal(write, tmp_path):
    # 192.0.2.1 (TEST-NET-1) is on no interface here: the bind fails after the note, and nothing listens.
    ep = write("ep.yaml", FAST_ENDPOINT)
    res = loadgen("serve", str(ep), "--host", "192.0.2.1", "--port", "0")
    assert res.returncode == 1 and "listens beyond this machine's loopback" in res.stderr
    assert "cannot listen on 192.0.2.1" in res.stderr and "Traceback" not in res.stderr
    w = write("w.yaml", "name: b\nendpoint: ep.yaml\nstop: {requests: 1}\n")
    res = loadgen("master", str(w), "--expect-workers", "1", "--bind", "192.0.2.1:0", "--db", str(tmp_path / "b.db"))
    assert res.returncode == 1 and "listens beyond this machine's loopback" in res.stderr
    assert "cannot listen for workers on 192.0.2.1" in res.stderr and "Traceback" not in res.stderr


def test_query_help_names_every_table_and_view(tmp_path):
    from loadgen.store import Store, schema

    store = Store(tmp_path / "x.duckdb")
    try:
        names = {r[0] for r in store.con.execute("SELECT table_name FROM information_schema.tables").fetchall()}
    finally:
        store.close()
    res = loadgen("query", "--help")
    help_text = " ".join(res.stdout.split())
    assert names == {*schema.names("TABLE"), *schema.names("VIEW")} and len(names) == 22
    assert all(f" {n}" in help_text for n in names), help_text


@pytest.mark.parametrize("option", [["--set", "nonsense"], ["--db"], ["--endpoint", "ftp://x"]])
def test_bad_options_exit_2_without_traceback(write, option):
    write("ep.yaml", FAST_ENDPOINT)
    w = write("w.yaml", "name: o\nendpoint: ep.yaml\nstop: {requests: 1}\n")
    res = loadgen("run", str(w), *option)
    assert res.returncode == 2 and "Traceback" not in res.stderr and res.stderr.startswith("loadgen:")


def test_a_server_without_token_prompts_or_stream_usage_is_coped_with(write, tmp_path):
    res, db = run_workload(
        write,
        tmp_path,
        with_faults("reject_token_prompts: true, omit_stream_usage: true"),
        "name: q\nendpoint: ep.yaml\napi: completions\nload: {arrival: closed, concurrency: 2}\n"
        "requests: {prompt_tokens: 40, output_tokens: 9}\nstop: {requests: 6}\n",
    )
    assert res.returncode == 0, res.stderr
    assert "refused token-ID prompts (HTTP 422)" in res.stderr
    con = duckdb.connect(str(db), read_only=True)
    assert con.execute(
        "SELECT DISTINCT status, output_tokens, output_tokens_source, server_prompt_tokens FROM requests"
    ).fetchall() == [("ok", 9, "events", None)]
    assert "text prompts were sent instead" in con.execute("SELECT note FROM runs").fetchone()[0]


def test_a_full_disk_is_a_clear_failure_and_keeps_what_was_committed(write, tmp_path):
    disk = tmp_path / "small"
    disk.mkdir()
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1536k", "tmpfs", str(disk)], capture_output=True)
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a small tmpfs here: {mounted.stderr.decode().strip()}")
    try:
        # An H100 with ten times its memory bandwidth: decode steps of under a millisecond fill the disk fast.
        write("ep.yaml", FAST_ENDPOINT.replace("overhead_ms: 0.2", "overhead_ms: 0.2, bandwidth: 3.35e13"))
        w = write(
            "w.yaml",
            "name: full\nendpoint: ep.yaml\napi: completions\nload: {arrival: closed, concurrency: 32}\n"
            "requests: {prompt_tokens: 16, output_tokens: 256}\nstop: {requests: 3000}\n",
        )
        db = disk / "full.duckdb"
        res = loadgen("run", str(w), "--db", str(db), timeout=300)
        assert res.returncode == 1, res.stderr
        assert "Traceback" not in res.stderr and "No space left" in res.stderr
        last = res.stderr.strip().splitlines()[-1]
        assert last.startswith("loadgen: ")
        subprocess.run(["mount", "-o", "remount,size=64m", str(disk)], check=True)  # room to open it again
        con = duckdb.connect(str(db), read_only=True)
        (n,) = con.execute("SELECT count(*) FROM requests").fetchone()
        (events,) = con.execute("SELECT count(*) FROM events").fetchone()
        assert 0 < n < 3000 and events == 256 * n  # whole batches only: nothing half-written
    finally:
        subprocess.run(["umount", "-l", str(disk)], capture_output=True)


def test_a_configured_tokenizer_makes_exact_prompts_and_counts_output(write, tmp_path):
    pytest.importorskip("tokenizers")
    word_tokenizer(tmp_path / "tokenizer.json")
    res, db = run_workload(
        write,
        tmp_path,
        with_faults("omit_stream_usage: true"),
        "name: tk\nendpoint: ep.yaml\napi: chat\nload: {arrival: closed, concurrency: 2}\n"
        "requests: {prompt_tokens: {dist: uniform, min: 10, max: 300}, output_tokens: 12, tokenizer: tokenizer.json}\n"
        "stop: {requests: 6}\n",
    )
    assert res.returncode == 0, res.stderr
    con = duckdb.connect(str(db), read_only=True)
    rows = con.execute("SELECT prompt_tokens, output_tokens, output_tokens_source FROM requests").fetchall()
    assert len(rows) == 6 and all(out == 12 and src == "tokenizer" for _, out, src in rows)
    res, _ = run_workload(
        write,
        tmp_path / "b",
        FAST_ENDPOINT,
        "name: tk\nendpoint: ep.yaml\nrequests: {tokenizer: missing.json}\nstop: {requests: 1}\n",
    )
    assert res.returncode == 2 and "missing.json" in res.stderr


def test_bare_loadgen_prints_usage_and_version_prints_the_version():
    from loadgen import __version__

    res = loadgen()
    assert res.returncode == 0 and "usage: loadgen" in res.stdout and "run" in res.stdout and "study" in res.stdout
    res = loadgen("--version")
    assert res.returncode == 0 and res.stdout.strip() == f"loadgen {__version__}"
