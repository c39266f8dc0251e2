"""Running one agent task: each call in a greenlet of its own, sent once the calls it depends on have answered
and its tool time has passed, on a connection of its own (sub-agents run in parallel), with its agent's context
grown from the answers the server really returned."""

from __future__ import annotations

from typing import NamedTuple, Protocol

import gevent
import gevent.event

from loadgen.load.dispatch import Dispatch, unsent_row
from loadgen.load.state import RunState
from loadgen.results import RequestResult, not_sent
from loadgen.schedule.items import Planned
from loadgen.target.conversation import Conversation, Part
from loadgen.target.targeter import Target


class Waited(NamedTuple):
    """The calls a task's call waited for, as its row stores them."""

    parent: int | None  # the last of them to answer (on the task's critical path)
    depends_on: list[int]


class Sender(Protocol):
    """The user that runs the task (load/user.py): it sends and records each call."""

    ctx: RunState

    def send(
        self, d: Dispatch, item: Planned, scheduled: float, target: Target, waited: Waited | None = None
    ) -> RequestResult | None: ...

    def record_unsent(self, d: Dispatch, item: Planned, scheduled: float | None) -> RequestResult: ...


class TaskRun:
    """One task's calls, each in a greenlet of its own (a task's sub-agents run in parallel)."""

    def __init__(self, user: Sender, d: Dispatch, calls: list[Planned]):
        self.user, self.d = user, d
        self.stage = d.stage
        self.calls = calls
        self.done = {c.request_id: gevent.event.Event() for c in calls}
        self.rows: dict[int, RequestResult] = {}  # each call's row, once it has one
        self.answers: dict[int, tuple[str, int | None]] = {}  # each answer: its text, its tokens where usage said
        self.contexts: dict[int, Conversation] = {}  # each agent's context, as it grows
        self.forks = {c.task.fork for c in calls if c.task is not None and c.task.fork is not None}
        self.snapshots: dict[int, Conversation] = {}  # an agent's context just after a call that sub-agents fork at
        first = calls[0]
        self.start_s = d.now_s() if first.offset_s is None else d.start_s + first.offset_s

    def run(self) -> None:
        greenlets = [gevent.spawn(self._call, c) for c in self.calls]
        try:
            gevent.joinall(greenlets)
        except BaseException:  # the run stopped: each call not yet sent records itself as such
            gevent.killall(greenlets)
            raise
        if any(r.status == "interrupted" for r in self.rows.values()):
            raise gevent.GreenletExit  # the run is stopping: this user ends here, as after any request

    def _call(self, item: Planned) -> None:
        sending = False  # from there on, the user's send records the call whatever happens
        try:
            ready = self._wait(item)
            if ready is None:
                self._cut(item)
                return
            ready_s, read, waited = ready
            convo = self._context(item)
            target, message = self.user.ctx.targeter.task_call(
                self.stage, item, convo, [self.answers[rid] for rid in read]
            )
            sending = True
            r = self.user.send(self.d, item, ready_s, target, waited=waited)
            self._answered(item, convo, message, r)
        except BaseException:
            if not sending:
                self.rows[item.request_id] = self.user.record_unsent(self.d, item, None)
            raise
        finally:
            self.rows.setdefault(item.request_id, not_sent(item.request_id, item.stage, None, 0, 0, False))
            self.done[item.request_id].set()

    def _wait(self, item: Planned) -> tuple[float, list[int], Waited] | None:
        """When the call may go (the run clock), the answers it reads, and what it waited for; None where a call
        it depends on got no answer."""
        t = item.task
        assert t is not None
        for dep in t.after:
            self.done[dep].wait()
        if any(self.rows[dep].status != "ok" for dep in t.after):
            return None
        read: list[int] = []
        pending = set(t.results)
        while len(read) < t.wait_for:
            for rid in [r for r in pending if self.done[r].is_set()]:
                pending.discard(rid)
                if self.rows[rid].status == "ok":
                    read.append(rid)
            if len(read) >= t.wait_for:
                break
            if len(read) + len(pending) < t.wait_for:
                return None
            gevent.wait([self.done[r] for r in pending], count=1)
        read.sort(key=lambda rid: self._end(rid))
        read = read[: t.wait_for]  # the first m to answer, where more came in the same instant
        waited = [*t.after, *read]
        if not waited:
            return self.start_s + t.delay_s, read, Waited(None, [])
        last = max(waited, key=self._end)
        return self._end(last) + t.delay_s, read, Waited(last, sorted(waited))

    def _end(self, rid: int) -> float:
        r = self.rows[rid]
        return r.end_s if r.end_s is not None else self.d.now_s()

    def _context(self, item: Planned) -> Conversation:
        t = item.task
        assert t is not None
        if t.agent not in self.contexts:  # its first call: the parent's context at the fork, or a fresh one
            fork = self.snapshots.get(t.fork) if t.fork is not None else None
            if fork is not None:
                self.contexts[t.agent] = fork.fork()
            else:
                self.contexts[t.agent] = self.user.ctx.targeter.agent_context(self.stage, item)
        return self.contexts[t.agent]

    def _answered(self, item: Planned, convo: Conversation, message: Part, r: RequestResult | None) -> None:
        """A call has its row (None: the run stopped before it went); an answer joins its agent's context."""
        if r is None:
            return
        self.rows[item.request_id] = r
        if r.status == "ok":
            answer = "".join(r.text_parts or ())
            self.answers[item.request_id] = (answer, r.usage_completion_tokens)
            convo.add(message, answer, item.output_tokens, r.usage_completion_tokens, r.server_prompt_tokens)
            if item.request_id in self.forks:
                self.snapshots[item.request_id] = convo.fork()

    def _cut(self, item: Planned) -> None:
        """A call that will never be sent: a call it depends on got no answer (where the run is stopping, it is
        simply not sent)."""
        t = item.task
        assert t is not None
        failed = [self.rows[r] for r in (*t.after, *t.results) if r in self.rows and self.rows[r].status != "ok"]
        if self.d.stopping or any(f.status == "interrupted" or f.error == "not_sent" for f in failed):
            self.rows[item.request_id] = self.user.record_unsent(self.d, item, None)
            return
        self.d.finish()
        row = unsent_row(item, self.stage, None, self.d.first_id)
        row.error = "task_ended"
        row.error_detail = (
            "; ".join(f"call {f.request_id} ended with {f.error or f.status}" for f in failed)
            + ": the task cannot go on without its answer"
        )
        self.user.ctx.recorder.add_unsent(row, self.stage.slo)
        self.rows[item.request_id] = row
