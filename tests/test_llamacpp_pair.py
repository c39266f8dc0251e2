"""A prefill/decode pair of real llama.cpp engines (loadgen.launch.pair): engine A prefills, its slot's KV cache
moves to engine B through a file, B decodes; loadgen stores each request's handoff."""

from __future__ import annotations

import urllib.error
import urllib.request

import duckdb
import orjson
import pytest
import yaml

from conftest import ROOT, loadgen, served

pytest.importorskip("xllamacpp", reason="the real-engine tests need the llamacpp extra: pip install '.[llamacpp]'")


@pytest.mark.slow
def test_a_run_through_the_pair_stores_every_requests_handoff(tiny_model, write, tmp_path):
    """endpoints/llamacpp-gemma-pd.yaml (on the tiny model) starts both engines and the proxy for the run; every
    request, streamed, completions and chat, comes back whole with its KV move timed and sized, and the pair's own
    account: the prefill engine's prompt figures, the decode engine's decode."""
    pair = yaml.safe_load((ROOT / "endpoints" / "llamacpp-gemma-pd.yaml").read_text())
    pair["launch"]["model"] = str(tiny_model)
    ep = write("pair.yaml", yaml.safe_dump(pair))
    w = write(
        "w.yaml",
        f"name: pair\nendpoint: {ep}\n"
        "load: {arrival: closed, concurrency: 2}\nrequests: {prompt_tokens: 48, output_tokens: 6}\n"
        "stages:\n  - {name: completions, api: completions, stop: {requests: 2}}\n"
        "  - {name: chat, api: chat, stop: {requests: 2}}\n",
    )
    db = tmp_path / "r.duckdb"
    res = loadgen("run", str(w), "--db", str(db), timeout=300)
    assert res.returncode == 0, res.stderr
    con = duckdb.connect(str(db), read_only=True)
    rows = con.execute(
        "SELECT stage, status, output_tokens, kv_handoff_ms, kv_bytes, server_prefill_ms, server_decode_ms, "
        "server_prompt_tokens, cached_tokens FROM requests ORDER BY request_id"
    ).fetchall()
    assert [r[0] for r in rows] == ["completions"] * 2 + ["chat"] * 2
    for _, status, out, handoff, size, prefill, decode, prompt, cached in rows:
        assert status == "ok" and out == 6, rows
        assert 0 < handoff < 10_000 and size > 0 and prefill > 0 and decode > 0 and prompt >= 48, rows
        # The prefill engine's account: its cache held at most a chat template's opening of these unrelated
        # prompts (the decode engine's held all but the last 5 tokens, restored).
        assert cached < prompt / 2, rows
    (spec,) = con.execute("SELECT spec FROM runs").fetchone()
    assert orjson.loads(spec)["endpoint"]["server"] == "llamacpp"


def _post(url: str, body: dict) -> tuple[int, bytes]:
    req = urllib.request.Request(url, data=orjson.dumps(body), headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(req, timeout=120) as r:
            return r.status, r.read()
    except urllib.error.HTTPError as e:
        return e.code, e.read()


def test_the_pair_serves_any_client_and_gives_its_slots_back(tiny_model, write):
    """One slot on each side: a client that leaves mid-stream, and a prompt the engines refuse, both give their
    slots back (the requests after them are answered); the handoff is in a plain answer too."""
    import openai

    ep = write(
        "ep.yaml",
        f"name: pair-one-slot\nlaunch: {{kind: llamacpp-pd, model: {tiny_model}, prefill: {{slots: 1, ctx: 1024}}, "
        "decode: {slots: 1, ctx: 1024}, link_gbps: 1}\n",
    )
    with served(ep) as url:
        client = openai.OpenAI(base_url=url, api_key="none", max_retries=0)
        stream = client.completions.create(model="m", prompt="the sea " * 30, max_tokens=200, stream=True)
        next(iter(stream))
        stream.close()  # leaves with most of the answer unsent
        code, body = _post(url + "/completions", {"prompt": "the sea " * 2000, "max_tokens": 4})
        assert code == 400 and b"error" in body  # longer than a slot's context: the prefill engine's refusal
        code, body = _post(url + "/completions", "not an object")  # type: ignore[arg-type]
        assert code == 400 and b"not a JSON object" in body
        for _ in range(2):
            answer = client.completions.create(model="m", prompt="the sea " * 30, max_tokens=4)
            handoff = answer.model_extra["handoff"]
            assert answer.usage.completion_tokens == 4
            # 1 Gb/s: the KV file's bits over the link at least.
            assert handoff["copy_ms"] >= handoff["kv_bytes"] * 8 / 1e9 * 1000 * 0.99
            assert handoff["total_ms"] == pytest.approx(handoff["save_ms"] + handoff["copy_ms"] + handoff["restore_ms"])


def test_an_engine_pinned_to_cores_the_machine_lacks_is_one_line(write):
    ep = write("ep.yaml", "name: pinned\nlaunch: {kind: llamacpp, cores: [4096]}\n")
    res = loadgen("serve", str(ep), "--port", "0", script=True)  # the console script, as a user runs it
    assert res.returncode == 1 and "Traceback" not in res.stderr
    assert "cores [4096] are not all among this machine's" in res.stderr
