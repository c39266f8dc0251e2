"""The phase study: one database across endpoints, its views, the report and the comparison."""

from __future__ import annotations

import base64
import re

import duckdb
import pytest

from conftest import ROOT, loadgen

STUDY = """
name: mini-study
endpoint: x
api: completions
requests: {prompt_tokens: 32, output_tokens: 16}
stages:
  - name: p256
    phase: prefill
    load: {arrival: closed, concurrency: 1}
    requests: {prompt_tokens: 256, output_tokens: 1}
    stop: {requests: 2}
  - name: p1024
    phase: prefill
    load: {arrival: closed, concurrency: 1}
    requests: {prompt_tokens: 1024, output_tokens: 1}
    stop: {requests: 2}
  - {name: b1, phase: decode, load: {arrival: closed, concurrency: 1}, stop: {requests: 2}}
  - {name: b8, phase: decode, load: {arrival: closed, concurrency: 8}, stop: {requests: 8}}
"""
# A GroqRack made faster (pipelined prefill would not reproduce the study; keep token-serial, shorter hops).
GROQ = """
name: mini-groq
emulate: {engine: groq, hardware: groqrack-72, hardware_overrides: {hop_latency_us: 20}}
"""


@pytest.fixture(scope="module")
def study_db(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("study")
    (tmp / "w.yaml").write_text(STUDY)
    (tmp / "groq.yaml").write_text(GROQ)
    db = tmp / "study.duckdb"
    res = loadgen(
        "study",
        str(tmp / "w.yaml"),
        "--endpoints",
        str(ROOT / "endpoints" / "emulated-h100.yaml"),
        str(tmp / "groq.yaml"),
        "--db",
        str(db),
        timeout=300,
    )
    assert res.returncode == 0, res.stderr
    assert "crossover" in res.stdout
    return db


def test_study_fills_one_database_with_both_phases_per_endpoint(study_db):
    con = duckdb.connect(str(study_db), read_only=True)
    assert sorted(r[0] for r in con.execute("SELECT endpoint FROM runs").fetchall()) == ["emulated-h100", "mini-groq"]
    rows = con.execute("SELECT endpoint, prompt_tokens, ttft_p50_ms FROM prefill").fetchall()
    prefill = {(e, p): t for e, p, t in rows}
    assert set(prefill) == {(e, p) for e in ("emulated-h100", "mini-groq") for p in (256, 1024)}
    assert prefill[("emulated-h100", 1024)] < prefill[("mini-groq", 1024)]  # the GPU wins Prefill
    rows = con.execute("SELECT endpoint, batch, tpot_p50_ms, decode_tokens_per_s FROM decode").fetchall()
    decode = {(e, b): (t, tok) for e, b, t, tok in rows}
    assert decode[("mini-groq", 1)][0] < decode[("emulated-h100", 1)][0]  # the GroqRack wins TPOT at batch 1
    assert decode[("emulated-h100", 8)][1] > decode[("mini-groq", 8)][1]  # the GPU's throughput overtakes
    rows = con.execute(
        "SELECT endpoint, versus, decode_passes_at_batch, ttft_lower_from_prompt_tokens FROM crossover"
    ).fetchall()
    cross = {(e, v): (b, p) for e, v, b, p in rows}
    assert cross[("emulated-h100", "mini-groq")] == (8, 256)
    assert cross[("mini-groq", "emulated-h100")] == (1, None)


def test_report_is_one_self_contained_page_with_figures(study_db, tmp_path):
    out = tmp_path / "rep"
    res = loadgen("report", str(study_db), "--out", str(out))
    assert res.returncode == 0, res.stderr
    page = (out / "index.html").read_text()
    for name in (
        "ttft_vs_prompt",
        "tpot_vs_batch",
        "throughput_vs_batch",
        "cdf_ttft",
        "cdf_tpot",
        "timeline",
        "throughput_inflight",
    ):
        png = (out / f"{name}.png").read_bytes()
        assert png.startswith(b"\x89PNG") and len(png) > 10_000
        assert base64.b64encode(png).decode()[:200] in page  # inlined, so the page needs no other file
    assert not re.search(r"(src|href)=['\"]?(https?:)?//", page)  # nothing fetched from a network
    for heading in ("Phases", "Summary", "Distributions", "Run specs", "crossover"):
        assert heading in page


def test_compare_gives_deltas_with_intervals(study_db):
    res = loadgen("compare", str(study_db), "emulated-h100", "mini-groq")
    assert res.returncode == 0, res.stderr
    assert "ttft_ms" in res.stdout and "tpot_ms" in res.stdout and "95% interval" in res.stdout
    res = loadgen("compare", str(study_db), "emulated-h100", "nobody")
    assert res.returncode == 2 and "nobody" in res.stderr
