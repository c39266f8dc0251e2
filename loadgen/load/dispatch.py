"""Handing one stage's planned requests to Locust users, in order, and knowing when the stage is over."""

from __future__ import annotations

import time
from collections.abc import Iterator

import gevent.event

from loadgen.results import RequestResult, not_sent
from loadgen.schedule.plan import Planned
from loadgen.spec.workload import StageSpec


def unsent_row(
    item: Planned, stage: StageSpec, scheduled_s: float | None, first_id: int, why: str | None = None
) -> RequestResult:
    """The row of a planned request the run stopped before sending (`first_id`: the stage's first request;
    `why`: the stage ended early for this reason)."""
    warmup = item.request_id - first_id < stage.warmup.requests
    r = not_sent(item.request_id, item.stage, scheduled_s, item.prompt_tokens, item.output_tokens, warmup)
    if why is not None:
        r.error_detail = f"the stage ended before this planned request was sent: {why}"
    return in_conversation(r, item)


def in_conversation(r: RequestResult, item: Planned) -> RequestResult:
    """A row carries the conversation or the agent task its planned request belongs to, if any."""
    if item.task is None:
        r.session, r.turn, r.parent_request_id = item.group, item.turn, item.parent
    else:  # the calls it depends on, as planned; one that goes says which it waited for (a fan-in's first m)
        t = item.task
        r.task_id, r.task_step, r.task_calls, r.tool_ms = t.task, t.step, t.calls, t.delay_s * 1000
        r.parent_request_id, r.depends_on = item.parent, sorted({*t.after, *t.results})
    return r


class Dispatch:
    """Shared by all users of a stage. Greenlets switch only at I/O, so take() needs no lock."""

    def __init__(
        self,
        stage: StageSpec,
        plan: Iterator[Planned],
        t0: float,
        first_id: int,
        start_s: float | None = None,
        clock=time.perf_counter,
    ):
        self.stage = stage
        self.first_id = first_id
        self.next_id = first_id  # one past the highest request ID taken, for the next stage's plan
        self.plan = plan
        self.t0 = t0  # the run clock's origin
        self.clock = clock
        # The stage's start on the run clock: now, or the instant a master chose for all its workers.
        self.start_s = clock() - t0 if start_s is None else start_s
        self.outstanding = 0  # taken from the plan and not yet finished
        self.exhausted = False
        self.stopping = False  # set on interrupt: no new sends
        self.why: str | None = None  # why the stage stopped early, when the run goes on
        self.ended = gevent.event.Event()
        # When each request of a stage with conversations ended, for the turns that follow it.
        self.follows = stage.load.trace is not None and stage.load.trace.conversational
        self.ends: dict[int, float] = {}
        self._held: Planned | None = None  # looked at past a session's last turn, not yet taken
        self._awaited: dict[int, gevent.event.Event] = {}

    def now_s(self) -> float:
        return self.clock() - self.t0

    def take(self) -> Planned | None:
        """The next request to send, or None when the stage sends no more."""
        if self.exhausted or self.stopping:
            return None
        limit = self.stage.stop.duration_s
        if limit is not None and self.now_s() - self.start_s >= limit:
            self.exhausted = True
            return None
        item = self._next()
        if item is None:
            self.exhausted = True
            return None
        self._taken(item)
        return item

    def take_group(self) -> list[Planned] | None:
        """The next session's turns or agent task's calls, all for one user to send; None when the stage starts
        no more."""
        first = self.take()
        if first is None:
            return None
        turns = [first]
        while (item := self._next()) is not None:
            if item.group != first.group:
                self._held = item
                break
            self._taken(item)
            turns.append(item)
        return turns

    def _next(self) -> Planned | None:
        item, self._held = self._held, None
        return item if item is not None else next(self.plan, None)

    def _taken(self, item: Planned) -> None:
        self.outstanding += 1
        self.next_id = item.request_id + 1

    def remaining(self) -> Iterator[Planned]:
        """What was never taken from the plan."""
        if self._held is not None:
            yield self._held
        yield from self.plan

    def request_ended(self, request_id: int, end_s: float) -> None:
        """A request of this stage has ended (answered, failed or never sent): a turn that follows it may go."""
        if self.follows:
            self.ends[request_id] = end_s
            if (waiting := self._awaited.pop(request_id, None)) is not None:
                waiting.set()

    def end_of(self, request_id: int) -> float:
        """When a request ended (run clock), waiting for it if it has not; a parent is always taken from the plan
        before its children, so it is on its way."""
        if request_id not in self.ends:
            self._awaited.setdefault(request_id, gevent.event.Event()).wait()
        return self.ends[request_id]

    def warmup(self, item: Planned) -> bool:
        """The stage's first `warmup.requests` requests stay out of `summary`."""
        return item.request_id - self.first_id < self.stage.warmup.requests

    def stop(self, why: str | None = None) -> None:
        """No new sends; what is in flight finishes. `why`: the stage, not the run, ends here (saturation)."""
        self.stopping = True
        self.why = why

    def end(self) -> None:
        """The stage is over: wake the users that wait for more of its work."""
        self.ended.set()

    def finish(self) -> None:
        """A taken item is done with: sent and finished, or given up because the run is stopping."""
        self.outstanding -= 1

    @property
    def done(self) -> bool:
        return (self.exhausted or self.stopping) and self.outstanding == 0
