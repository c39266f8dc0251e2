"""Which server and which model a run speaks to, where the endpoint file does not say: detected, or said."""

from __future__ import annotations

import struct
from pathlib import Path

import orjson
import pytest
from aiohttp import web

from conftest import FAST_ENDPOINT, emulator_in_thread, loadgen
from loadgen.spec.endpoint import EndpointSpec
from loadgen.target.identify import identify, model_prompt_tail
from loadgen.target.probe import Endpoint

EMULATED = EndpointSpec.model_validate(
    {"name": "e", "emulate": {"engine": "gpu", "hardware": "h100-sxm", "hardware_overrides": {"overhead_ms": 0.2}}}
)


def models_answer(*cards: dict):
    """A middleware that answers GET /v1/models with these model cards (a server of another family, or several
    models)."""

    @web.middleware
    async def answer(request, handler):
        if request.path == "/v1/models":
            return web.json_response({"object": "list", "data": list(cards)})
        return await handler(request)

    return answer


def test_a_server_that_does_not_say_gets_vllms_options_with_a_note():
    with emulator_in_thread(EMULATED, models_answer({"id": "llama-2-7b", "owned_by": "someone"})) as url:
        found = identify(Endpoint(base_url=url, headers={}, server="vllm", model=""), None, None)
    assert (found.server, found.model) == ("vllm", "llama-2-7b")
    assert found.detected == {"server": "assumed", "model": "GET /v1/models"}
    assert found.notes == ["the server did not say which it is: vllm's request options were assumed"]


def test_the_emulator_says_what_it_is_and_a_named_model_is_not_asked_for():
    with emulator_in_thread(EMULATED) as url:
        found = identify(Endpoint(base_url=url, headers={}, server="vllm", model=""), None, None)
        named = identify(Endpoint(base_url=url, headers={}, server="vllm", model=""), "sglang", "mine")
    assert (found.server, found.model, found.detected["server"]) == (
        "emulator",
        "llama-2-7b",
        "GET /v1/models owned_by",
    )
    assert (named.server, named.model, named.detected, named.notes) == ("sglang", "mine", {}, [])


def test_a_llamacpp_server_says_its_slots_and_context_through_props():
    """A server in llama.cpp's shape (the emulator's, 6 sequences at most): its GET /props' total_slots and
    per-slot n_ctx are the run's limits, said as detected there; another family's are not asked for."""
    shaped = EndpointSpec.model_validate(
        {
            "name": "l",
            "emulate": {**EMULATED.emulate.model_dump(), "server": "llamacpp", "serving": {"max_num_seqs": 6}},
        }
    )
    with emulator_in_thread(shaped) as url:
        found = identify(Endpoint(base_url=url, headers={}, server="vllm", model=""), None, None)
        other = identify(Endpoint(base_url=url, headers={}, server="vllm", model=""), "vllm", "llama-2-7b")
    assert found.server == "llamacpp" and found.limits == {"slots": 6, "ctx_per_slot": 4096}
    assert found.detected["limits"] == "GET /props"
    assert other.limits == {} and "limits" not in other.detected


def test_several_models_and_no_model_named_fail_fast_with_the_list(write, tmp_path):
    cards = ({"id": "model-a", "owned_by": "vllm"}, {"id": "model-b", "owned_by": "vllm"})
    with emulator_in_thread(EMULATED, models_answer(*cards)) as url:
        w = write(
            "w.yaml",
            f"name: two\nendpoint: {url}\nrequests: {{prompt_tokens: 8, output_tokens: 2}}\nstop: {{requests: 1}}\n",
        )
        res = loadgen("run", str(w), "--db", str(tmp_path / "r.duckdb"))
    assert res.returncode == 1 and "Traceback" not in res.stderr
    assert "serves several: model-a, model-b" in res.stderr and "model:" in res.stderr
    assert not (tmp_path / "r.duckdb").exists()


def test_a_run_stores_the_family_and_model_it_was_run_against(write, tmp_path):
    write("ep.yaml", FAST_ENDPOINT)
    w = write(
        "w.yaml", "name: one\nendpoint: ep.yaml\nrequests: {prompt_tokens: 8, output_tokens: 2}\nstop: {requests: 1}\n"
    )
    db = tmp_path / "r.duckdb"
    assert loadgen("run", str(w), "--db", str(db)).returncode == 0
    import duckdb

    (spec,) = duckdb.connect(str(db), read_only=True).execute("SELECT spec FROM runs").fetchone()
    ep = orjson.loads(spec)["endpoint"]
    assert (ep["server"], ep["model"], ep["detected"]) == ("emulator", "llama-2-7b", {})


def uneven_tokenizer(bodies: list):
    """A middleware that answers completions as a server whose tokenizer splits every word longer than four
    letters in two, with 3 tokens of its own around a prompt; keeps each prompt."""

    @web.middleware
    async def answer(request, handler):
        if request.method == "POST" and request.path == "/v1/completions":
            prompt = orjson.loads(await request.read())["prompt"]
            bodies.append(prompt)
            n = 3 + sum(1 + (len(w) > 4) for w in prompt.split())
            return web.json_response({"choices": [{"text": "x"}], "usage": {"prompt_tokens": n}})
        return await handler(request)

    return answer


def test_text_is_calibrated_to_the_tokenizers_average_over_the_prompt_words():
    """On a tokenizer that splits some of loadgen's prompt words, the fit takes the vocabulary's average tokens a
    word, and prompts of a planned length come within 1% of it on average as that server counts them; the probes
    are short."""
    from loadgen.target.probe import calibrate_text
    from loadgen.target.prompts import WORDS, make_prompt

    bodies: list[str] = []
    with emulator_in_thread(EMULATED, uneven_tokenizer(bodies)) as url:
        cal = calibrate_text(Endpoint(base_url=url, headers={}, server="vllm", model="llama-2-7b"), "completions")
    average = sum(1 + (len(w) > 4) for w in WORDS) / len(WORDS)
    assert cal is not None and 1.1 < average < 1.9  # the test's tokenizer splits some words, not all
    assert cal.per_word == pytest.approx(average, rel=0.01) and cal.overhead == pytest.approx(3, abs=1)
    for planned in (64, 512):
        # One prompt's count varies with the words drawn (about 3% at 64 tokens here); over many, none is left.
        counts = [
            3 + sum(1 + (len(w) > 4) for w in str(make_prompt(cal.words(planned), i, 7)).split()) for i in range(60)
        ]
        assert sum(counts) / len(counts) == pytest.approx(planned, rel=0.01)
    assert len(bodies) <= 3 and max(len(b.split()) for b in bodies) < 200


def gguf_file(path, meta: dict) -> Path:
    """A GGUF file holding only this metadata (strings, ints, lists of strings) and no tensors."""
    out = bytearray(b"GGUF" + struct.pack("<IQQ", 3, 0, len(meta)))

    def text(s: str) -> bytes:
        return struct.pack("<Q", len(s.encode())) + s.encode()

    for key, value in meta.items():
        out += text(key)
        if isinstance(value, str):
            out += struct.pack("<I", 8) + text(value)
        elif isinstance(value, int):
            out += struct.pack("<II", 4, value)
        else:  # a tokenizer's vocabulary: an array of strings, skipped
            out += struct.pack("<IIQ", 9, 8, len(value)) + b"".join(text(v) for v in value)
    path.write_bytes(bytes(out))
    return path


def test_the_model_file_says_whether_llamacpp_prefills_a_prompts_last_tokens_apart(tmp_path):
    """llama.cpp's server prefills a prompt's last 4 tokens apart for a sliding-window or recurrent model: read
    from the GGUF file GET /props names, past a vocabulary array; not for a plain one; nothing claimed where the
    file is not there or not GGUF."""
    vocab = ["<bos>", "a", "b"] * 100
    gguf_file(tmp_path / "g.gguf", {"general.architecture": "gemma3", "tokenizer.ggml.tokens": vocab,
                                          "gemma3.attention.sliding_window": 512})  # fmt: skip
    gguf_file(tmp_path / "l.gguf", {"general.architecture": "llama", "tokenizer.ggml.tokens": vocab})
    gguf_file(tmp_path / "m.gguf", {"general.architecture": "mamba", "mamba.ssm.conv_kernel": 4})
    (tmp_path / "x.gguf").write_bytes(b"not a model")
    tails = {p: model_prompt_tail({"model_path": str(tmp_path / p)}) for p in ("g.gguf", "l.gguf", "m.gguf")}
    assert tails["g.gguf"] == (4, "GET /props model_path: sliding-window attention "
                                   "(gemma3.attention.sliding_window 512 in the GGUF file)")  # fmt: skip
    assert tails["l.gguf"][0] == 0 and tails["m.gguf"][0] == 4
    assert model_prompt_tail({"model_path": str(tmp_path / "x.gguf")}) is None
    assert model_prompt_tail({"model_path": str(tmp_path / "absent.gguf")}) is None
    assert model_prompt_tail({}) is None


def test_a_probe_answer_that_breaks_off_mid_body_is_no_count_not_a_crash():
    """A server that starts its answer and drops the connection (http.client's IncompleteRead): the probe
    reports no count, as for any unusable answer, and the run goes on to say what is wrong."""
    from loadgen.target.probe import calibrate_text

    @web.middleware
    async def broken(request, handler):
        if request.method != "POST":
            return await handler(request)
        resp = web.StreamResponse(headers={"Content-Type": "application/json"})
        await resp.prepare(request)
        await resp.write(b'{"usage": ')
        raise RuntimeError("the server drops the connection")

    with emulator_in_thread(EMULATED, broken) as url:
        ep = Endpoint(base_url=url, headers={}, server="vllm", model="llama-2-7b")
        assert calibrate_text(ep, "chat") is None
