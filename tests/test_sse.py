"""SSE parsing and the reading of OpenAI stream chunks."""

from __future__ import annotations

import orjson
import pytest

from loadgen.client.openai import read_chunk
from loadgen.client.sse import SSEParser
from loadgen.target.bodies import request_body

STREAM = (
    b": keep-alive comment\n\n"
    b'data: {"choices":[{"delta":{"role":"assistant","content":""}}]}\n\n'
    b'data: {"choices":[{"delta":{"content":"Hel"}}]}\n\n'
    b"event: message\nid: 3\nretry: 100\n"
    b'data: {"choices":[{"delta":\n'
    b'data: {"content":"lo"}}]}\n\n'
    b'data: {"choices":[],"usage":{"prompt_tokens":5,"completion_tokens":2}}\n\n'
    b"data: [DONE]\n\n"
)
EXPECTED = [
    b'{"choices":[{"delta":{"role":"assistant","content":""}}]}',
    b'{"choices":[{"delta":{"content":"Hel"}}]}',
    b'{"choices":[{"delta":\n{"content":"lo"}}]}',
    b'{"choices":[],"usage":{"prompt_tokens":5,"completion_tokens":2}}',
    b"[DONE]",
]


def parse_in_pieces(data: bytes, size: int) -> list[bytes]:
    p = SSEParser()
    out: list[bytes] = []
    for i in range(0, len(data), size):
        out += p.feed(data[i : i + size])
    return out + p.close()


@pytest.mark.parametrize("size", [1, 2, 3, 7, 64, 10_000])
def test_events_split_anywhere_across_reads(size):
    assert parse_in_pieces(STREAM, size) == EXPECTED


@pytest.mark.parametrize("ending", [b"\r\n", b"\r"])
@pytest.mark.parametrize("size", [1, 5, 10_000])
def test_crlf_and_lone_cr_line_endings(ending, size):
    assert parse_in_pieces(STREAM.replace(b"\n", ending), size) == EXPECTED


def test_field_without_space_and_unknown_fields():
    p = SSEParser()
    assert p.feed(b"data:x\ndatum: no\nfoo\n\n") == [b"x"]
    assert p.feed(b"data\n\n") == [b""]  # a bare "data" field is an empty data line


def test_a_final_event_without_its_blank_line_is_delivered_on_close():
    p = SSEParser()
    assert p.feed(b"data: [DONE]") == []
    assert p.close() == [b"[DONE]"]


def test_role_only_and_empty_events_carry_no_text():
    assert read_chunk(EXPECTED[0]).text == ""
    assert read_chunk(b'{"choices":[{"delta":{}}]}').text == ""
    assert read_chunk(b'{"choices":[{"delta":{"content":null}}]}').text == ""
    assert read_chunk(EXPECTED[1]).text == "Hel"


def test_completions_text_and_usage_only_events():
    assert read_chunk(b'{"choices":[{"text":" world"}]}').text == " world"
    u = read_chunk(EXPECTED[3])
    assert (u.text, u.completion_tokens, u.prompt_tokens) == ("", 2, 5)
    assert read_chunk(b"[DONE]").done


def test_llamacpp_timings_give_the_servers_own_prefill_and_decode_times():
    """llama.cpp's last event (chat: after the finish event, with `choices: []`; without usage asked for: in the
    finish event itself) carries its own per-request times; a server without them leaves them unknown."""
    last = (
        b'{"choices":[],"usage":{"completion_tokens":5,"prompt_tokens":8,"prompt_tokens_details":{"cached_tokens":3}},'
        b'"timings":{"cache_n":3,"prompt_n":5,"prompt_ms":74.6,"predicted_n":5,"predicted_ms":79}}'
    )
    c = read_chunk(last)
    assert (c.completion_tokens, c.prompt_tokens, c.cached_tokens) == (5, 8, 3)
    assert (c.prefill_ms, c.decode_ms) == (74.6, 79.0)
    finish = b'{"choices":[{"delta":{},"finish_reason":"length"}],"timings":{"prompt_ms":12.5,"predicted_ms":null}}'
    assert (read_chunk(finish).prefill_ms, read_chunk(finish).decode_ms) == (12.5, None)
    assert (read_chunk(EXPECTED[3]).prefill_ms, read_chunk(EXPECTED[3]).decode_ms) == (None, None)


@pytest.mark.parametrize(
    "payload,reason",
    [
        (b"{not json", "not valid JSON"),
        (b"[1, 2]", "not a JSON object"),
        (b'{"choices": [3]}', "'choices'"),
        (b'{"error": {"message": "overloaded"}}', "overloaded"),
    ],
)
def test_malformed_and_error_payloads_say_why(payload, reason):
    c = read_chunk(payload)
    assert c.error is not None and reason in c.error


def test_request_body_asks_for_a_stream_with_usage_and_the_exact_length():
    body = orjson.loads(request_body("chat", "vllm", "m", "hi there", 64))
    assert body["stream"] is True and body["stream_options"] == {"include_usage": True}
    assert body["messages"] == [{"role": "user", "content": "hi there"}]
    assert body["max_tokens"] == 64 and body["min_tokens"] == 64 and body["ignore_eos"] is True
    body = orjson.loads(request_body("completions", "openai", "m", "hi", 8))
    assert body["prompt"] == "hi" and body["max_completion_tokens"] == 8 and "ignore_eos" not in body
