"""An agent task's shape (docs/agents.md): the steps an agent takes in order, each a model call, a tool call (time
the client spends between an answer and the next call), a fan-out to sub-agents that run in parallel, or a
block of steps repeated. Every count and length is a distribution, drawn per task from the workload's seed."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import Discriminator, Field, PositiveInt, Tag, model_validator

from loadgen.spec.distributions import LengthSpec, SecondsSpec, Strict

STEP_KINDS = ("call", "tool_s", "fan_out", "repeat")


class CallSpec(Strict):
    """One model call: `prompt_tokens` new tokens on top of its agent's context (the message it adds: its
    instruction, a tool's result), answered with `output_tokens`."""

    prompt_tokens: LengthSpec
    output_tokens: LengthSpec


class CallStep(Strict):
    name: str = "call"
    call: CallSpec


class ToolStep(Strict):
    """A tool call between an answer and the agent's next call: the client's own time, from this distribution."""

    name: str = "tool"
    tool_s: SecondsSpec


class FanOutSpec(Strict):
    """`count` sub-agents that run these steps in parallel. The agent goes on once `wait_for` of them have
    answered (all, or the first m, at most `count`; the others run on, unread), with their answers appended to
    its context.
    Each starts from a `fresh` context (the system prompt alone) or from its parent's (`inherit`)."""

    count: LengthSpec
    wait_for: Literal["all"] | PositiveInt = "all"
    context: Literal["fresh", "inherit"] = "fresh"
    steps: Annotated[list[Step], Field(min_length=1)]


class FanOutStep(Strict):
    name: str = "fan_out"
    fan_out: FanOutSpec


class RepeatSpec(Strict):
    """These steps, `count` times in a row (an agent's loop of calls and tools)."""

    count: LengthSpec
    steps: Annotated[list[Step], Field(min_length=1)]


class RepeatStep(Strict):
    name: str = "repeat"
    repeat: RepeatSpec


def _kind(value: Any) -> str | None:
    """Which step a mapping is, by the one key of STEP_KINDS it has (None: pydantic names the expected ones)."""
    if isinstance(value, dict):
        kinds = [k for k in STEP_KINDS if k in value]
        return kinds[0] if len(kinds) == 1 else None
    return next((k for k in STEP_KINDS if hasattr(value, k)), None)


Step = Annotated[
    Annotated[CallStep, Tag("call")]
    | Annotated[ToolStep, Tag("tool_s")]
    | Annotated[FanOutStep, Tag("fan_out")]
    | Annotated[RepeatStep, Tag("repeat")],
    Discriminator(
        _kind,
        custom_error_type="step_kind",
        custom_error_message="a step is a mapping with exactly one of call, tool_s, fan_out or repeat",
    ),
]


def _depth(steps: list[Step]) -> int:
    """How deeply fan-outs nest in these steps."""
    deepest = 0
    for s in steps:
        if isinstance(s, FanOutStep):
            deepest = max(deepest, 1 + _depth(s.fan_out.steps))
        elif isinstance(s, RepeatStep):
            deepest = max(deepest, _depth(s.repeat.steps))
    return deepest


def _ends_with_tool(steps: list[Step]) -> bool:
    last = steps[-1]
    return isinstance(last, ToolStep) or (isinstance(last, RepeatStep) and _ends_with_tool(last.repeat.steps))


def order_problems(steps: list[Step], path: tuple[str | int, ...] = ("steps",)) -> list[tuple[tuple, str]]:
    """Where an agent's steps (the root's, or a fan-out's sub-agents') end with a tool call, whose result no call
    would read, or hold no call at all: (the key path of the offending list, what is wrong). A repeat's steps may
    end with one: the next pass, or the agent's next step, reads it."""
    problems: list[tuple[tuple, str]] = []
    if _ends_with_tool(steps):
        problems.append((path, "the agent's last step is a tool call, whose result no call would read"))
    if all(isinstance(s, ToolStep) for s in steps):
        problems.append((path, "the agent's steps hold no call, fan_out or repeat"))

    def nested(steps: list[Step], path: tuple[str | int, ...]) -> None:
        for i, s in enumerate(steps):
            if isinstance(s, FanOutStep):
                problems.extend(order_problems(s.fan_out.steps, (*path, i, "fan_out", "steps")))
            elif isinstance(s, RepeatStep):
                nested(s.repeat.steps, (*path, i, "repeat", "steps"))

    nested(steps, path)
    return problems


class TaskTraceSpec(Strict):
    """Task graphs replayed from a file (relative to the workload file): aiperf's DAG format, one task per root
    conversation, taken in turn (loadgen/trace/dag.py)."""

    path: str
    format: Literal["aiperf-dag"] = "aiperf-dag"
    output_tokens: PositiveInt = 128  # a turn's answer where it gives no max_tokens


class TasksSpec(Strict):
    """Agent tasks, each a graph of calls grown from `steps` (the root agent's), or replayed from a `trace`. Open
    loop: tasks arrive at `load.rate` a second; closed loop: each user runs tasks back to back."""

    steps: Annotated[list[Step], Field(min_length=1)] | None = None
    trace: TaskTraceSpec | None = None
    system_tokens: Annotated[int, Field(ge=0)] = 0  # every agent's system prompt, the same for all tasks
    max_depth: PositiveInt = 3  # fan-outs nested at most this deep
    max_calls: PositiveInt = 64  # a task's calls at most: drawn beyond it, the task ends there
    max_context: PositiveInt = 8192  # prompt + output a call may use: an agent whose next call would not fit ends
    idle_stage: str | None = None  # an earlier stage of lone requests: the idle endpoint a task's slowdown is against

    @model_validator(mode="after")
    def _shape(self) -> TasksSpec:
        if (self.steps is None) == (self.trace is None):
            raise ValueError("give the tasks' steps, or a trace to replay them from (one of the two)")
        if self.steps is None:
            return self
        if (depth := _depth(self.steps)) > self.max_depth:
            raise ValueError(f"fan-outs nest {depth} deep, more than max_depth ({self.max_depth})")
        return self


FanOutSpec.model_rebuild()
RepeatSpec.model_rebuild()
