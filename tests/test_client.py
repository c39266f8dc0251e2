"""The streaming client: one result per attempt, and the error class of every way a server can answer badly."""

from __future__ import annotations

import socket
import socketserver
import threading
import time

import pytest

from loadgen.client import stamps
from loadgen.client.http import Attempt, StreamClient
from loadgen.client.stamps import Delays
from loadgen.spec.workload import TimeoutSpec

OK_EVENTS = (
    b'data: {"choices": [{"text": "a"}]}\n\n'
    b'data: {"choices": [{"text": "b"}]}\n\n'
    b'data: {"choices": [], "usage": {"completion_tokens": 2, "prompt_tokens": 7}}\n\n'
    b"data: [DONE]\n\n"
)


def _sse(events: bytes) -> bytes:
    return b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nConnection: close\r\n\r\n" + events


ANSWERS = {
    "ok": _sse(OK_EVENTS),
    "server_error": b"HTTP/1.1 500 Internal Server Error\r\nContent-Length: 4\r\nConnection: close\r\n\r\noops",
    "rate_limited": b"HTTP/1.1 429 Too Many Requests\r\nRetry-After: 2\r\nContent-Length: 0\r\n"
    b"Connection: close\r\n\r\n",
    "not_found": b"HTTP/1.1 404 Not Found\r\nContent-Length: 2\r\nConnection: close\r\n\r\nno",
    "error_event": _sse(b'data: {"choices": [{"text": "a"}]}\n\ndata: {"error": {"message": "overloaded"}}\n\n'),
    "bad_json": _sse(b'data: {"choices": [{"text": "a"}]}\n\ndata: {not json\n\n'),
    "no_done": _sse(b'data: {"choices": [{"text": "a"}]}\n\n'),
    "plain_text": b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: 2\r\nConnection: close\r\n\r\nhi",
}


class _Handler(socketserver.BaseRequestHandler):
    def handle(self) -> None:
        data = b""
        while b"\r\n\r\n" not in data:
            data += self.request.recv(65536)
        head, _, body = data.partition(b"\r\n\r\n")
        length = int(next(x for x in head.split(b"\r\n") if x.lower().startswith(b"content-length")).split(b":")[1])
        while len(body) < length:
            body += self.request.recv(65536)
        path = head.split(b" ")[1].decode().rsplit("/", 1)[-1]
        self.request.sendall(ANSWERS[path])


@pytest.fixture(scope="module")
def server():
    srv = socketserver.ThreadingTCPServer(("127.0.0.1", 0), _Handler)
    srv.daemon_threads = True
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{srv.server_address[1]}/v1"
    srv.shutdown()


def _attempt(path: str) -> Attempt:
    return Attempt(7, "s", 0.0, 16, 2, False, f"/{path}", b'{"prompt": "x"}', keep_text=True, retries=1)


def _stream(base_url: str, path: str):
    client = StreamClient(base_url, {}, TimeoutSpec(connect_s=2, first_token_s=5, idle_s=5, total_s=10), Delays())
    t0 = time.perf_counter()
    try:
        return client.stream(_attempt(path), t0)
    finally:
        client.close()


def test_a_complete_stream_is_one_ok_result_with_its_stamps(server):
    r = _stream(server, "ok")
    assert (r.request_id, r.stage, r.retries, r.status, r.error) == (7, "s", 1, "ok", None)
    assert r.http_status == 200 and r.usage_completion_tokens == 2 and r.server_prompt_tokens == 7
    assert len(r.event_times) == 2 and r.text_parts == ["a", "b"]
    assert 0 < r.sent_s <= r.first_token_s <= r.last_token_s <= r.end_s


@pytest.mark.parametrize(
    ("path", "error", "status"),
    [
        ("server_error", "http_5xx", 500),
        ("rate_limited", "http_429", 429),
        ("not_found", "http_4xx", 404),
        ("error_event", "stream_error", 200),
        ("bad_json", "malformed", 200),
        ("no_done", "stream_broken", 200),
        ("plain_text", "malformed", 200),
    ],
)
def test_each_bad_answer_has_its_error_class(server, path, error, status):
    r = _stream(server, path)
    assert (r.status, r.error, r.http_status) == ("error", error, status), r.error_detail
    assert r.error_detail and r.end_s is not None and r.end_s >= r.sent_s > 0
    if path == "rate_limited":
        assert r.retry_after_s == 2.0
    if path == "error_event":
        assert "overloaded" in r.error_detail and len(r.event_times) == 1  # the token before the error stays


def test_a_refused_connection_is_a_connect_error_never_sent():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # closed again: nothing listens there
    r = _stream(f"http://127.0.0.1:{port}/v1", "ok")
    assert (r.status, r.error, r.http_status) == ("error", "connect", None)
    assert r.sent_s == r.scheduled_s == 0.0 and r.end_s is not None


def test_a_kernel_stamp_is_not_moved_by_a_preemption_while_the_clocks_are_read(monkeypatch):
    """The kernel stamps arrivals on the wall clock; mapping one onto the run clock reads both clocks. A process
    preempted between those reads (5 ms here) must not move the arrival by as long as it waited."""
    with socket.create_server(("127.0.0.1", 0)) as listener:
        a = socket.create_connection(listener.getsockname())
        b, _ = listener.accept()
    with a, b:
        if not stamps.enable(b):
            pytest.skip("no kernel receive stamps on this platform")
        # Linux turns stamping on for the whole machine a moment after the first socket asks for it (deferred
        # work): packets before then come unstamped, and loadgen falls back to the read time. Wait for a stamp.
        for _ in range(200):
            a.sendall(b"w")
            if b.recvmsg(16, 64)[1]:
                break
            time.sleep(0.01)
        else:
            pytest.skip("the kernel stamped no packet within 2 s")
        real_time, calls = time.time, []

        def preempted_once() -> float:
            calls.append(1)
            if len(calls) == 1:
                time.sleep(0.005)
            return real_time()

        before = time.perf_counter()
        a.sendall(b"x")
        time.sleep(0.02)
        monkeypatch.setattr(time, "time", preempted_once)
        data, arrived, read_at = stamps.recv_stamped(b, 16)
    assert data == b"x" and calls
    assert before - 0.0005 <= arrived <= read_at - 0.015, (arrived - before, read_at - before)
