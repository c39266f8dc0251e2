"""The Locust user: takes the next planned request, waits for its scheduled time, streams it, records it."""

from __future__ import annotations

from dataclasses import replace
from typing import ClassVar

import gevent
from locust import User, constant, task

from loadgen.client.http import Attempt, StreamClient
from loadgen.load.dispatch import Dispatch, in_conversation, unsent_row
from loadgen.load.state import RunState
from loadgen.load.tasks import TaskRun, Waited
from loadgen.results import RequestResult
from loadgen.schedule import cancel
from loadgen.schedule.plan import Planned
from loadgen.target.targeter import Target


def sleep_to_send(delay: float) -> None:
    """gevent.sleep with the loop's highest priority: when the timer and a burst of streamed data are due in the
    same loop iteration, the send goes first instead of waiting behind the reads."""
    hub = gevent.get_hub()
    timer = hub.loop.timer(delay, 0.0, True, 2)
    try:
        hub.wait(timer)
    finally:
        timer.close()


def user_class(ctx: RunState | None, host: str | None) -> type[StreamUser]:
    """The run's user class. Locust's master and workers name the users they spawn by class name, so every
    process makes it here, alike; a worker's has no state until the master sends the run."""
    return type("LLMUser", (StreamUser,), {"abstract": False, "ctx": ctx, "host": host})


def _stop_if_interrupted(r: RequestResult | None) -> RequestResult | None:
    """The run is stopping where a request was cut off in flight: its user ends there, the request recorded."""
    if r is not None and r.status == "interrupted":
        raise gevent.GreenletExit
    return r


class StreamUser(User):
    abstract = True
    wait_time = constant(0)
    ctx: ClassVar[RunState]  # set by the engine on a subclass made for the run

    def on_start(self) -> None:
        while self.ctx is None:  # a worker's users before the run reaches it (a late worker's, for good)
            gevent.sleep(0.1)
        self.http = self._connect()
        self.spare: list[StreamClient] = []  # more connections, for an agent task's calls in parallel

    def _connect(self) -> StreamClient:
        c, d = self.ctx, self.ctx.description
        http = StreamClient(d.base_url, c.headers, d.timeouts, c.read_delays)
        http.connect()
        return http

    def on_stop(self) -> None:
        if hasattr(self, "http"):  # not when stopped before the run reached it
            for http in (self.http, *self.spare):
                http.close()

    def lend(self) -> StreamClient:
        """A connection for one of a task's calls, which may run beside others: back with give_back()."""
        return self.spare.pop() if self.spare else self._connect()

    def give_back(self, http: StreamClient) -> None:
        self.spare.append(http)

    @task
    def send_next(self) -> None:
        c = self.ctx
        d = c.dispatch
        if d is None:
            c.wait_at_gate()
            return
        if d.stage.sessions is not None or d.stage.tasks is not None:
            group = d.take_group()
            if group is None:
                d.ended.wait()
                return
            if d.stage.tasks is not None:
                TaskRun(self, d, group).run()
            else:
                self._session(d, group)
            return
        item = d.take()
        if item is None:
            d.ended.wait()
            return
        scheduled: float | None = None
        try:
            if item.offset_s is None:  # closed loop: send as soon as this user is free
                scheduled = d.now_s()
            else:  # open loop: keep the schedule; a late pick-up shows as lag, never as a shifted schedule
                scheduled = d.start_s + item.offset_s
                if item.parent is not None:  # a turn follows its parent's answer: not before that has ended
                    scheduled = max(scheduled, d.end_of(item.parent))
        except BaseException:  # the run stopped while this request waited for its parent
            self.record_unsent(d, item, scheduled)
            raise
        _stop_if_interrupted(self.send(d, item, scheduled, c.targeter.target(d.stage, item)))

    def _session(self, d: Dispatch, turns: list[Planned]) -> None:
        """A session's turns in order, each sent its think time after the answer it follows has ended, resending
        the conversation so far with that answer."""
        stage, targeter = d.stage, self.ctx.targeter
        convo = targeter.conversation(stage, turns[0])
        first = turns[0]
        scheduled = d.now_s() if first.offset_s is None else d.start_s + first.offset_s
        rest = iter(turns)
        answered_s = scheduled  # when the answer the next turn follows ended
        try:
            for item in rest:
                if item is not first:
                    assert item.session is not None
                    scheduled = answered_s + item.session.think_s
                    limit = stage.stop.duration_s
                    if limit is not None and scheduled - d.start_s >= limit:
                        # The stage is over before this turn: it and the rest are not part of the stage.
                        for _ in (item, *rest):
                            d.finish()
                        return
                target, message = targeter.turn(stage, item, convo)
                r = _stop_if_interrupted(self.send(d, item, scheduled, target))
                if r is None or r.status != "ok":
                    for later in rest:
                        self._cut(d, later, item, r)
                    return
                answer = "".join(r.text_parts or ())
                convo.add(message, answer, item.output_tokens, r.usage_completion_tokens, r.server_prompt_tokens)
                answered_s = r.end_s if r.end_s is not None else d.now_s()
        except BaseException:  # the run stopped: every turn not yet sent is recorded as such
            for later in rest:
                self.record_unsent(d, later, None)
            raise

    def _cut(self, d: Dispatch, item: Planned, failed: Planned, r: RequestResult | None) -> None:
        """A turn that will never be sent because an earlier turn of its session got no answer."""
        if r is None:  # the run stopped
            self.record_unsent(d, item, None)
            return
        d.finish()
        row = unsent_row(item, d.stage, None, d.first_id)
        row.error = "session_ended"
        row.error_detail = (
            f"turn {failed.turn} (request {failed.request_id}) ended with {r.error or r.status}: "
            "the session cannot go on without its answer"
        )
        self.ctx.recorder.add_unsent(row, d.stage.slo)

    def send(
        self, d: Dispatch, item: Planned, scheduled: float, target: Target, waited: Waited | None = None
    ) -> RequestResult | None:
        """Wait for the scheduled time, send, and record; None when the run stopped first (recorded unsent). A
        task's call (`waited`: the calls it waited for) goes on a connection of its own."""
        c = self.ctx
        stage = d.stage
        try:
            delay = scheduled - d.now_s()
            if delay > 0:
                sleep_to_send(delay)
        except BaseException:  # the run stopped while this request waited for its time
            self.record_unsent(d, item, scheduled)
            raise
        if d.stopping:
            self.record_unsent(d, item, scheduled)
            return None
        tok = target.tokenizer
        attempt = Attempt(
            request_id=item.request_id,
            stage=item.stage,
            scheduled_s=scheduled,
            prompt_tokens=item.prompt_tokens,
            max_tokens=item.output_tokens,
            warmup=d.warmup(item),
            path=target.path,
            body=target.body,
            keep_text=tok is not None or item.session is not None or item.task is not None,  # counted, or resent
            think_tags=stage.requests.think_tags,
            cancel=cancel.draw(stage.requests.cancel, c.description.seed, item.request_id),
        )
        c.recorder.sending()
        r: RequestResult | None = None
        http = self.http if waited is None else self.lend()
        try:
            r = http.stream(attempt, c.clock.origin)
            retry = c.description.retry
            while retry.on_429 and r.error == "http_429" and r.retries < retry.max_retries and not d.stopping:
                gevent.sleep(r.retry_after_s if r.retry_after_s is not None else retry.backoff_s * 2**r.retries)
                attempt = replace(attempt, retries=r.retries + 1)
                r = http.stream(attempt, c.clock.origin)
        finally:
            if waited is not None:
                self.give_back(http)
            if r is None:  # stream() returns even when its greenlet is killed: anything else sent nothing
                c.recorder.gave_up()
                self.record_unsent(d, item, scheduled)
            else:
                d.finish()
                d.request_ended(item.request_id, r.end_s if r.end_s is not None else d.now_s())
                in_conversation(r, item)
                if waited is not None:
                    r.parent_request_id, r.depends_on = waited
                if tok is not None and r.usage_completion_tokens is None and r.text_parts:
                    r.tokenizer_tokens = tok.count("".join(r.text_parts))
                derived = c.recorder.add(r, stage.slo)
                self._report(attempt.path, r, derived.e2e_ms)
        return r

    def record_unsent(self, d: Dispatch, item: Planned, scheduled: float | None) -> RequestResult:
        d.finish()
        d.request_ended(item.request_id, d.now_s())
        row = unsent_row(item, d.stage, scheduled, d.first_id, d.why)
        self.ctx.recorder.add_unsent(row, d.stage.slo)
        return row

    def _report(self, path: str, r: RequestResult, e2e: float | None) -> None:
        """Locust's own statistics: one request event per request (E2E as its response time), so that its
        requests/s, failures and Aggregated row count each request once. TTFT, TPOT and the rest are in the LLM
        tab and the terminal's live panel (loadgen/live), from the same values the database holds."""
        self.environment.events.request.fire(
            request_type="POST",
            name=path,
            response_time=e2e or 0.0,
            response_length=r.output_tokens,
            exception=None if r.status in ("ok", "cancelled") else Exception(f"{r.error}: {r.error_detail}"),
            context={},
        )
