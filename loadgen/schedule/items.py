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


def stream(seed: int, stage_index: int, stream: int) -> np.random.Generator:
    """One of a stage's independent random streams: each quantity draws from its own, so that changing one
    distribution leaves the others' draws as they were."""
    return np.random.default_rng(np.random.SeedSequence([seed, stage_index, stream]))
