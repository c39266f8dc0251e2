"""The master of a run spread over Locust workers (worker.py), on this machine or others.

It holds the run clock and the only database writer. At the start it estimates each worker's clock offset and
sends it the run with the master's origin mapped onto the worker's clock, so that every stamp a worker takes is
on the master's timeline. Each stage: Locust spawns the stage's users across the workers, every worker says when
its users wait, and the master deals the stage's plan to the workers in proportion to their users (plan.slots)
and names one start instant a little ahead; each worker sends its share at the planned times from that instant.
Workers send their finished requests back as rows. A worker that vanishes loses only what was in flight on it:
what it had sent back is kept, and its share that never came back is recorded as `not_sent` / `worker_lost`.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import gevent
import gevent.event
import zmq
from locust.env import Environment
from locust.exception import RPCError

from loadgen.load import drive, wire
from loadgen.load.description import RunDescription
from loadgen.load.dispatch import unsent_row
from loadgen.load.drive import Outcome
from loadgen.load.monitor import saturation_note
from loadgen.load.recorder import Recorder
from loadgen.load.stages import START_TIMEOUT_S, finite, planned_requests
from loadgen.load.state import Clock
from loadgen.load.user import user_class
from loadgen.results import Progress, RequestResult, WorkerReport
from loadgen.schedule.plan import owner, plan_stage, slots

LEAD_S = 0.3  # a stage starts this long after the master decides, so that its instant reaches every worker first
CLOCK_EXCHANGES = 16
CLOCK_ATTEMPTS = 5  # sends of one exchange before giving up, REPLY_TIMEOUT_S in all
REPLY_TIMEOUT_S = 5.0
FINISH_TIMEOUT_S = 30.0  # after FINISH, how long the master waits for a worker's last rows


class MasterError(Exception):
    """The run cannot start or go on with its workers (none came, one refused, a port is taken)."""


@dataclass
class Node:
    """One worker as the master sees it."""

    client_id: str
    index: int
    offset: wire.Offset | None = None
    joined: bool = False
    users: int = 0  # users it ran in its latest stage
    ready: int = -1  # the latest stage whose users it said were waiting
    done: int = -1  # the latest stage whose share it finished
    next_id: int = 0
    in_flight: int = 0
    in_flight_s: float = 0.0  # as of its latest report (the Recorder's)
    finished: dict[str, Any] | None = None
    lost: str | None = None  # why it is gone

    def report(self) -> WorkerReport:
        bound = self.finished.get("client_delay_p99_ms") if self.finished else None
        return WorkerReport(
            worker=self.index,
            node=self.client_id,
            users=self.users,
            clock_offset_ms=None if self.offset is None else self.offset.offset_s * 1000.0,
            clock_uncertainty_ms=None if self.offset is None else self.offset.uncertainty_s * 1000.0,
            client_delay_p99_ms=bound,
            status="lost" if self.lost else "finished",
            note=self.lost,
        )


class Master(drive.Load):
    def __init__(
        self,
        description: RunDescription,
        recorder: Recorder,
        bind: tuple[str, int],
        on_progress: Callable[[Progress], None] | None = None,
    ):
        self.description = description
        self.recorder = recorder
        self.on_progress = on_progress
        self.stages = description.stages
        self.slo = {s.name: s.slo for s in self.stages}
        self.planned = planned_requests(self.stages, description.seed)
        self.env = Environment(user_classes=[user_class(None, description.base_url)], host=description.base_url)
        try:
            self.runner = self.env.create_master_runner(*bind)
        except SystemExit:  # Locust's way of saying the port is taken
            raise MasterError(f"cannot listen for workers on {bind[0]}:{bind[1]}: the port is in use") from None
        except (RPCError, zmq.ZMQError) as e:  # an address not on this machine, say
            raise MasterError(f"cannot listen for workers on {bind[0]}:{bind[1]}: {e}") from None
        self.clock = Clock()
        self.nodes: dict[str, Node] = {}
        self.index = -1  # the stage being run or prepared
        self.phase = "idle"  # idle | asking (for users) | preparing (waiting for READY) | open
        self._asked_at = 0.0
        self.next_id = 0  # the next stage's first request ID
        self.opened: dict[int, tuple[float, tuple[int, ...], int]] = {}  # stage -> (start_s, slots, first_id)
        self.seen: set[int] = set()  # request IDs whose rows arrived
        self.stopping = False
        self.finishing = False
        self.grace_s = description.timeouts.grace_s
        self.failure: str | None = None
        self._clock_replies: dict[tuple[str, int], gevent.event.AsyncResult] = {}
        self._told_late: dict[str, float] = {}  # workers that came after the start: when each was last told
        for name, handler in {
            wire.CLOCK_REPLY: self._on_clock_reply,
            wire.JOINED: self._on_joined,
            wire.READY: self._on_ready,
            wire.ROWS: self._on_rows,
            wire.LOAD: self._on_load,
            wire.STAGE_DONE: self._on_stage_done,
            wire.FINISHED: self._on_finished,
        }.items():
            self.runner.register_message(name, handler)

    # -- messages from workers (run on the master's event loop, in arrival order per worker) --

    def _node(self, msg: Any) -> Node | None:
        return self.nodes.get(msg.node_id)

    def _on_clock_reply(self, msg: Any, **_: Any) -> None:
        t2 = time.perf_counter()
        waiting = self._clock_replies.pop((msg.node_id, msg.data["seq"]), None)
        if waiting is not None:
            waiting.set((msg.data["t"], t2))

    def _on_joined(self, msg: Any, **_: Any) -> None:
        if (node := self._node(msg)) is not None:
            if msg.data.get("refused"):
                self.failure = msg.data["refused"]
            node.joined = True

    def _on_ready(self, msg: Any, **_: Any) -> None:
        if (node := self._node(msg)) is not None:
            node.ready, node.users = msg.data["stage"], msg.data["users"]

    def _on_rows(self, msg: Any, **_: Any) -> None:
        if (node := self._node(msg)) is None:
            return
        self._on_load(msg)
        for r in wire.decode_rows(msg.data["rows"], node.index):
            self.seen.add(r.request_id)
            if r.status == "not_sent":
                self.recorder.add_unsent(r, self.slo[r.stage])
            else:
                self.recorder.collect(r, self.slo[r.stage])

    def _on_load(self, msg: Any, **_: Any) -> None:
        if (node := self._node(msg)) is not None:
            node.in_flight, node.in_flight_s = msg.data["in_flight"], msg.data["in_flight_s"]

    def _on_stage_done(self, msg: Any, **_: Any) -> None:
        if (node := self._node(msg)) is not None:
            node.done = msg.data["stage"]
            node.next_id = max(node.next_id, msg.data["next_id"])

    def _on_finished(self, msg: Any, **_: Any) -> None:
        if (node := self._node(msg)) is not None:
            node.finished = msg.data
            node.in_flight = 0
            if not self.finishing and node.lost is None:
                node.lost = f"worker {node.index} left the run at {self.clock.elapsed_s():.1f} s (interrupted)"

    # -- setting up --

    def wait_for_workers(self, expect: int, timeout_s: float | None, on_wait: Callable[[int], None]) -> None:
        """Until `expect` workers have connected; then they are the run's workers."""
        deadline = None if timeout_s is None else time.perf_counter() + timeout_s
        said = -1
        while len(self.runner.clients) < expect:
            if len(self.runner.clients) != said:
                said = len(self.runner.clients)
                on_wait(said)
            if deadline is not None and time.perf_counter() > deadline:
                raise MasterError(f"only {said} of {expect} workers connected within {timeout_s:.0f} s")
            gevent.sleep(0.05)
        on_wait(len(self.runner.clients))
        for client_id in list(self.runner.clients):
            self.nodes[client_id] = Node(client_id, self.runner.get_worker_index(client_id))

    def _sync_clock(self, node: Node) -> wire.Offset:
        samples: list[tuple[float, float, float]] = []
        seq = 0
        # A worker that has just connected may drop the first message: Locust reads the master's messages
        # before it returns from connecting, so before the worker has registered its handlers. An exchange is
        # asked again (under a new number: a late answer to the old one is ignored) before giving up.
        for _ in range(CLOCK_EXCHANGES):
            for _ in range(CLOCK_ATTEMPTS):
                reply = gevent.event.AsyncResult()
                self._clock_replies[(node.client_id, seq)] = reply
                t1 = time.perf_counter()
                self.runner.send_message(wire.CLOCK, {"seq": seq}, node.client_id)
                seq += 1
                try:
                    tw, t2 = reply.get(timeout=REPLY_TIMEOUT_S / CLOCK_ATTEMPTS)
                except gevent.Timeout:
                    continue
                samples.append((t1, tw, t2))
                break
            else:
                raise MasterError(f"worker {node.index} did not answer the clock exchange")
        return wire.estimate_offset(samples)

    def join(self) -> None:
        """Estimate every worker's clock offset, start the run clock, and hand each worker the run."""
        for node in self.nodes.values():
            node.offset = self._sync_clock(node)
        self.clock.start()
        description = self.description.to_json()
        for node in self.nodes.values():
            assert node.offset is not None
            origin = self.clock.origin + node.offset.offset_s  # the master's origin, on the worker's clock
            self.runner.send_message(wire.RUN, {"description": description, "origin": origin}, node.client_id)
        deadline = time.perf_counter() + REPLY_TIMEOUT_S * 6
        while not all(n.joined for n in self.nodes.values()):
            if time.perf_counter() > deadline:
                raise MasterError("not every worker took the run within 30 s")
            gevent.sleep(0.01)
        if self.failure is not None:
            raise MasterError(self.failure)

    # -- running --

    def _live(self) -> list[Node]:
        return [n for n in self.nodes.values() if n.lost is None]

    def _send_live(self, kind: str, data: dict[str, Any]) -> None:
        for node in self._live():
            self.runner.send_message(kind, data, node.client_id)

    def _turn_away_late(self) -> None:
        """A worker that connects once the run has its workers takes no part; it is told so (again each second,
        as a message that reaches it before it has set up is dropped). Locust has already moved some users onto
        it, cutting short a request they had in hand (recorded as interrupted or not sent); they come back when it
        has left."""
        now = time.perf_counter()
        for client_id in self.runner.clients:
            if client_id not in self.nodes and now - self._told_late.get(client_id, 0.0) > 1.0:
                self._told_late[client_id] = now
                self.runner.send_message(wire.LATE, {}, client_id)

    def _check_lost(self) -> None:
        """Locust marks a worker missing when its heartbeats stop (a few seconds), or forgets one that quit."""
        for node in self._live():
            client = self.runner.clients.get(node.client_id)
            if node.finished is None and (client is None or client.state == "missing"):
                node.lost = f"worker {node.index} ({node.client_id}) was lost at {self.clock.elapsed_s():.1f} s"

    def step(self, users_running: int) -> int | None:
        """Advance the stages as far as possible; the users wanted now, or None when the run is over."""
        self._check_lost()
        self._turn_away_late()
        live = self._live()
        if not live:
            self.failure = self.failure or "every worker was lost"
            self.stopping = True
            return None
        if self.phase == "open":
            stage = self.stages[self.index]
            if any(n.done < self.index for n in live):
                return stage.load.users
            self.next_id = max([self.next_id, *(n.next_id for n in self.nodes.values() if n.done == self.index)])
            self.phase = "idle"
        if self.stopping:
            return None
        if self.phase == "idle":
            if self.index + 1 >= len(self.stages):
                return None
            self.index += 1
            self.phase = "asking"
            self._asked_at = time.perf_counter()
        stage = self.stages[self.index]
        timed_out = time.perf_counter() - self._asked_at > START_TIMEOUT_S
        if self.phase == "asking":
            if users_running == stage.load.users or timed_out:
                self._send_live(wire.PREPARE, {"stage": self.index})
                self.phase = "preparing"
            return stage.load.users
        if all(n.ready == self.index for n in live) or timed_out:
            users = [0] * (1 + max(n.index for n in self.nodes.values()))
            for n in live:
                if n.ready == self.index:
                    users[n.index] = n.users
            dealt = slots(users)
            if not dealt:
                self.failure = f"no worker had users for stage {stage.name}"
                self.stopping = True
                return None
            start_s = self.clock.elapsed_s() + LEAD_S
            self.opened[self.index] = (start_s, dealt, self.next_id)
            self._send_live(
                wire.OPEN, {"stage": self.index, "start_s": start_s, "slots": list(dealt), "first_id": self.next_id}
            )
            self.phase = "open"
        return stage.load.users

    def stop(self) -> None:
        """No new sends on any worker; what is in flight finishes."""
        if not self.stopping:
            self.stopping = True
            self._send_live(wire.STOP, {})

    def progress(self) -> Progress:
        rec = self.recorder
        opened = self.opened.get(self.index)
        return Progress(  # the workers' timing bounds come with their last rows: none live
            planned=self.planned,
            done=rec.done,
            in_flight=sum(n.in_flight for n in self._live()),
            in_flight_s=sum(n.in_flight_s for n in self.nodes.values()),
            stage=self.stages[self.index].name if self.index >= 0 else "",
            elapsed_s=self.clock.elapsed_s(),
            stage_start_s=opened[0] if opened is not None else None,
        )

    def begin(self) -> None:
        self.recorder.start()  # the run clock started when the workers joined

    def pointless(self) -> bool:
        return self.recorder.write_error is not None or self.recorder.refused is not None

    def end(self) -> Outcome:
        self._finish()
        return self._outcome()

    def _finish(self) -> None:
        """Every live worker ends what is in flight and sends its last rows; then the rows that never came are
        recorded. (The drive loop's runner.quit() then lets the workers go.)"""
        self.finishing = True
        self._send_live(wire.FINISH, {})
        deadline = time.perf_counter() + self.grace_s + FINISH_TIMEOUT_S
        while any(n.finished is None for n in self._live()) and time.perf_counter() < deadline:
            self._check_lost()
            gevent.sleep(0.01)
        for node in self._live():
            if node.finished is None:
                node.lost = f"worker {node.index} ({node.client_id}) did not finish within {FINISH_TIMEOUT_S:.0f} s"
        if self.recorder.write_error is None:
            for r, slo_stage in self._unsent():
                self.recorder.add_unsent(r, self.slo[slo_stage])
        self.recorder.stop()

    def _unsent(self) -> Iterator[tuple[RequestResult, str]]:
        """Planned requests with no row: after a stop, all of them; otherwise those a lost worker owed."""
        lost = {n.index: n.lost for n in self.nodes.values() if n.lost is not None}
        if not self.stopping and not lost:
            return
        next_id = 0
        seed = self.description.seed
        for index, stage in enumerate(self.stages):
            start_s, dealt, first = self.opened.get(index, (None, None, next_id))
            if not finite(stage):
                next_id = max(next_id, self.next_id)
                continue
            for item in plan_stage(stage, seed, index, first_id=first):
                next_id = item.request_id + 1
                if item.request_id in self.seen:
                    continue
                worker = None if dealt is None else owner(item, dealt)
                if not self.stopping and worker not in lost:
                    continue
                scheduled = None if start_s is None or item.offset_s is None else start_s + item.offset_s
                r = unsent_row(item, stage, scheduled, first)
                r.worker = worker
                if worker in lost:
                    r.error = "worker_lost"
                    r.error_detail = f"{lost[worker]} before this request's result reached the master"
                yield r, stage.name

    def _outcome(self) -> Outcome:
        reports = [n.report() for n in self.nodes.values()]
        bounds = [r.client_delay_p99_ms for r in reports if r.client_delay_p99_ms is not None]
        notes = [n.lost for n in self.nodes.values() if n.lost is not None]
        for n in self.nodes.values():
            if n.finished is not None:
                note = saturation_note(n.finished.get("client_delay_p99_ms"), n.finished["how"], f"worker {n.index}")
                if note is not None:
                    notes.append(note)
        bound = max(bounds) if bounds else None
        return drive.outcome(self.recorder, bound, "; ".join(notes) or None, self.signum, self.failure)

    def workers(self) -> list[WorkerReport]:
        return [n.report() for n in sorted(self.nodes.values(), key=lambda n: n.index)]
