"""What a plan is made of: planned requests, and what a session's turn adds to its conversation."""

from __future__ import annotations

from typing import NamedTuple

import numpy as np


class SessionTurn(NamedTuple):
    """A session's turn: the conversation so far, then `user_tokens` of new message (docs/sessions.md)."""

    user_tokens: int
    think_s: float  # from the answer it follows to its send; 0 for a session's first turn sent
    system: int | None  # the shared system prompt the session opens with (its index), or none
    system_tokens: int
    drop: int  # the conversation's oldest turns to drop before this one (at_context_limit: truncate)
    made_up: tuple[tuple[int, int], ...] = ()  # a session met partway: its earlier turns (user, answer tokens)


class TaskCall(NamedTuple):
    """A call of an agent task (docs/agents.md): where it sits in its task's graph and what its prompt adds."""

    task: int  # the task (its first call's request ID)
    step: str  # its place in the task: the step names down to it, sub-agents and repeats indexed
    agent: int  # its agent within the task (0: the root); an agent's calls go one after another
    depth: int  # fan-outs above its agent (0: the root)
    after: tuple[int, ...]  # calls that must all have answered before it goes: its agent's previous call
    results: tuple[int, ...]  # sub-agents' last calls whose answers it reads, appended to its context ...
    wait_for: int  # ... once this many of them have answered (all of them, or the first m)
    delay_s: float  # tool calls: the client's time between those answers and its send
    message_tokens: int  # the tokens it adds to its agent's context (its message)
    fork: int | None  # a sub-agent's first call that inherits: the parent's call whose context it starts from
    system_tokens: int  # every agent's system prompt
    calls: int = 0  # the task's calls, all told


class Planned(NamedTuple):
    request_id: int
    stage: str
    offset_s: float | None  # seconds after the stage's start; None in a closed loop (sent when a user is free)
    prompt_tokens: int
    output_tokens: int
    prefix: tuple[int, ...] | None = None  # ids of shared prompt blocks (a trace's hash_ids)
    group: int | None = None  # requests that must go out from one worker (a conversation, a session)
    parent: int | None = None  # the request whose answer this one follows: it is sent only once that has ended
    turn: int | None = None  # its place in its conversation (1: the first)
    session: SessionTurn | None = None  # a session's turn: sent after its parent's end plus think_s
    task: TaskCall | None = None  # a call of an agent task: sent once the calls it depends on have answered


def stream(seed: int, stage_index: int, stream: int) -> np.random.Generator:
    """One of a stage's independent random streams: each quantity draws from its own, so that changing one
    distribution leaves the others' draws as they were."""
    return np.random.default_rng(np.random.SeedSequence([seed, stage_index, stream]))
