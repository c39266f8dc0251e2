"""The plan of an agent-task stage: each task's graph of calls, drawn whole from the workload's seed.

A task grows from its root agent's steps (docs/agents.md). An agent's calls go one after another, each adding its
message and its answer to the agent's context; a tool call adds the client's time before the agent's next call;
a fan-out starts sub-agents that run in parallel, each from a fresh context or its parent's, and the agent's next
call reads their answers (all, or the first m to come). An agent that ends with a fan-out passes its
sub-agents' answers up as its own. Lengths are planned as if every answer is as long as asked for. Tasks
replayed from a trace (`tasks.trace`: loadgen/trace/dag.py) take its roots' graphs in turn instead.

Tasks are planned whole: a stage bounded by `stop.requests` plans tasks until it holds that many calls (the last
task may take it past), one bounded by `stop.duration_s` plans the tasks that start before it ends.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterator
from dataclasses import dataclass, field

from loadgen.schedule.items import Planned, TaskCall, stream
from loadgen.schedule.lengths import LengthSampler, SecondsSampler
from loadgen.schedule.pacer import make_pacer
from loadgen.spec.distributions import LengthSpec, SecondsSpec
from loadgen.spec.tasks import CallStep, FanOutStep, RepeatStep, Step, TasksSpec, ToolStep
from loadgen.spec.workload import StageSpec
from loadgen.trace import dag


class _Draws:
    """Every random quantity of a stage's tasks, each kind from its own stream."""

    def __init__(self, seed: int, stage_index: int):
        self.rngs = {kind: stream(seed, stage_index, n) for n, kind in enumerate(("count", "prompt", "output"), 12)}
        self.tool_rng = stream(seed, stage_index, 15)
        self._lengths: dict[tuple[str, int], LengthSampler] = {}
        self._seconds: dict[int, SecondsSampler] = {}

    def length(self, kind: str, spec: LengthSpec) -> int:
        key = (kind, id(spec))
        if key not in self._lengths:
            self._lengths[key] = LengthSampler(spec, self.rngs[kind])
        return self._lengths[key]()

    def seconds(self, spec: SecondsSpec) -> float:
        if id(spec) not in self._seconds:
            self._seconds[id(spec)] = SecondsSampler(spec, self.tool_rng)
        return self._seconds[id(spec)]()


@dataclass
class _Agent:
    """An agent while its steps are drawn."""

    index: int
    depth: int
    context: int  # planned tokens in its context: the system prompt, its messages and answers
    prev: int | None  # its last call
    start: int | None  # the parent's call that a sub-agent's first call waits for
    fork: int | None  # ... and, where the sub-agent inherits, whose context it starts from
    delay_s: float = 0.0  # tool time before its next call
    results: list[tuple[int, int]] = field(default_factory=list)  # answers its next call reads: (call, tokens)
    wait_for: int = 0  # ... how many of them it waits for
    ended: bool = False  # its next call would not fit max_context


class _Task:
    """One task's calls, drawn depth first from its root agent's steps."""

    def __init__(self, spec: TasksSpec, draws: _Draws, first_id: int):
        self.spec, self.draws = spec, draws
        self.first_id = first_id
        self.calls: list[tuple[TaskCall, int, int]] = []  # (call, planned prompt tokens, output tokens)
        self.agents = 1

    @property
    def full(self) -> bool:
        return len(self.calls) >= self.spec.max_calls

    def run(self, agent: _Agent, steps: list[Step], path: str) -> None:
        for step in steps:
            if self.full or agent.ended:
                return
            if isinstance(step, CallStep):
                self._call(agent, step, path + step.name)
            elif isinstance(step, ToolStep):
                agent.delay_s += self.draws.seconds(step.tool_s)
            elif isinstance(step, RepeatStep):
                for j in range(self.draws.length("count", step.repeat.count)):
                    self.run(agent, step.repeat.steps, f"{path}{step.name}[{j}]/")
            elif isinstance(step, FanOutStep):
                self._fan_out(agent, step, path)

    def _call(self, agent: _Agent, step: CallStep, path: str) -> None:
        message = self.draws.length("prompt", step.call.prompt_tokens)
        output = self.draws.length("output", step.call.output_tokens)
        read = [tokens for _, tokens in agent.results[: agent.wait_for]]
        prompt = agent.context + sum(read) + message
        if prompt + output > self.spec.max_context:
            agent.ended = True
            return
        rid = self.first_id + len(self.calls)
        call = TaskCall(
            task=self.first_id,
            step=path,
            agent=agent.index,
            depth=agent.depth,
            after=tuple(c for c in (agent.prev if agent.prev is not None else agent.start,) if c is not None),
            results=tuple(c for c, _ in agent.results),
            wait_for=agent.wait_for,
            delay_s=agent.delay_s,
            message_tokens=message,
            fork=agent.fork,
            system_tokens=self.spec.system_tokens,
        )
        self.calls.append((call, prompt, output))
        agent.context, agent.prev, agent.fork = prompt + output, rid, None
        agent.delay_s, agent.results, agent.wait_for = 0.0, [], 0

    def _fan_out(self, agent: _Agent, step: FanOutStep, path: str) -> None:
        spec = step.fan_out
        answers: list[tuple[int, int]] = []
        for j in range(self.draws.length("count", spec.count)):
            if self.full:
                break
            inherit = spec.context == "inherit"
            sub = _Agent(
                index=self.agents,
                depth=agent.depth + 1,
                context=agent.context if inherit else self.spec.system_tokens,
                prev=None,
                start=agent.prev if agent.prev is not None else agent.start,
                fork=agent.prev if inherit else None,
                delay_s=agent.delay_s,  # a tool call before the fan-out comes before each sub-agent's first call
                results=list(agent.results),  # answers the agent had yet to read go to its sub-agents
                wait_for=agent.wait_for,
            )
            self.agents += 1
            self.run(sub, spec.steps, f"{path}{step.name}[{j}]/")
            answers += self._answers(sub)
        agent.delay_s = 0.0
        agent.results = answers
        agent.wait_for = len(answers) if spec.wait_for == "all" else min(spec.wait_for, len(answers))

    def _answers(self, agent: _Agent) -> list[tuple[int, int]]:
        """What an agent hands its parent: its last call's answer, or, where it ended with a fan-out, its
        sub-agents' answers."""
        if agent.results:
            return agent.results
        return [] if agent.prev is None else [(agent.prev, self.calls[agent.prev - self.first_id][2])]

    def planned(self, stage: str, offset_s: float | None) -> Iterator[Planned]:
        for k, (call, prompt, output) in enumerate(self.calls):
            parent = call.after[0] if call.after else (call.results[0] if call.results else None)
            rid = self.first_id + k
            call = call._replace(calls=len(self.calls))
            yield Planned(rid, stage, offset_s if k == 0 else None, prompt, output, None, call.task, parent, task=call)


def _replayed(spec: TasksSpec, draws: _Draws, calls: list[dag.Call], first_id: int) -> _Task:
    """A task of a trace's graph (loadgen/trace/dag.py), its calls numbered from `first_id`, each prompt planned
    as its agent's context (its parent's, where it forked) and its message."""
    task = _Task(spec, draws, first_id)  # nothing drawn: the graph is the trace's
    context: dict[int, int] = {}
    for c in calls:
        if c.agent not in context:
            context[c.agent] = spec.system_tokens
            if c.fork is not None:
                _, prompt, output = task.calls[c.fork]
                context[c.agent] = prompt + output
        prompt = context[c.agent] + c.message_tokens
        call = TaskCall(
            task=first_id,
            step=c.step,
            agent=c.agent,
            depth=c.depth,
            after=tuple(first_id + a for a in c.after),
            results=(),
            wait_for=0,
            delay_s=c.delay_s,
            message_tokens=c.message_tokens,
            fork=None if c.fork is None else first_id + c.fork,
            system_tokens=spec.system_tokens,
        )
        task.calls.append((call, prompt, c.output_tokens))
        context[c.agent] = prompt + c.output_tokens
    return task


def task_plan(stage: StageSpec, seed: int, stage_index: int, first_id: int = 0) -> Iterator[Planned]:
    """The stage's calls, task after task, in the order each task's calls were drawn (or, replayed from a trace,
    its root conversations' graphs in turn)."""
    spec = stage.tasks
    assert spec is not None
    draws = _Draws(seed, stage_index)
    graphs = None
    if spec.trace is not None:
        graphs = dag.tasks(spec.trace.path, spec.max_depth, spec.max_calls, spec.trace.output_tokens)
    load = stage.load
    if load.arrival == "closed":
        offsets: Iterator[float | None] = itertools.repeat(None)
    else:
        assert load.rate is not None
        pacer = make_pacer(load.arrival, load.rate, load.burstiness, stream(seed, stage_index, 0))
        offsets = (pacer.next_offset() for _ in itertools.count())
    left, horizon = stage.stop.requests, stage.stop.duration_s
    rid = first_id
    for n, offset in enumerate(offsets):
        if (left is not None and rid - first_id >= left) or (horizon is not None and (offset or 0.0) >= horizon):
            return
        if graphs is not None:
            task = _replayed(spec, draws, graphs[n % len(graphs)], rid)
        else:
            assert spec.steps is not None
            task = _Task(spec, draws, rid)
            root = _Agent(index=0, depth=0, context=spec.system_tokens, prev=None, start=None, fork=None)
            task.run(root, spec.steps, "")
        if not task.calls:  # nothing fit: a task of no calls sends nothing
            continue
        yield from task.planned(stage.name, offset)
        rid += len(task.calls)
