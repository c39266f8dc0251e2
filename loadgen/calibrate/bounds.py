"""What a run asks of a twin beyond what its calibration measured: a fit is a guess outside its data, so the run's
note says where (prompt lengths, sequences decoded together, a conversation's context)."""

from __future__ import annotations

from loadgen.spec.distributions import Choice, Fixed, Normal, Uniform
from loadgen.spec.endpoint import EndpointSpec
from loadgen.spec.workload import DEFAULT_PROMPT, StageSpec


def _prompts(stage: StageSpec) -> tuple[int, int] | None:
    """A stage's smallest and largest prompt; None where the trace or the conversation decides."""
    if stage.load.arrival == "trace" or stage.sessions is not None:
        return None
    d = stage.requests.prompt_tokens or DEFAULT_PROMPT
    if isinstance(d, Fixed):
        return d.value, d.value
    if isinstance(d, Uniform):
        return d.min, d.max
    if isinstance(d, Choice):
        return min(d.values), max(d.values)
    assert isinstance(d, Normal)
    return d.min, d.max or int(d.mean + 3 * d.std)  # unbounded above: three deviations stand for its top


def beyond(stages: tuple[StageSpec, ...] | list[StageSpec], endpoint: EndpointSpec) -> list[str]:
    fitted = endpoint.emulate.fitted if endpoint.emulate is not None else None
    if fitted is None or fitted.calibration is None:
        return []
    c = fitted.calibration
    notes = []
    for s in stages:
        said = []
        span = _prompts(s)
        if span is not None and (span[0] < c.prompt_tokens[0] or span[1] > c.prompt_tokens[1]):
            said.append(f"prompts of {span[0]}-{span[1]} tokens (measured {c.prompt_tokens[0]}-{c.prompt_tokens[1]})")
        # Closed loop: as many decode together as there are users, up to the slots; open loop: up to the slots.
        batch = min(s.load.users, fitted.slots) if s.load.arrival == "closed" else fitted.slots
        if batch > c.batches[1]:
            said.append(f"up to {batch} sequences decoded together (measured {c.batches[0]}-{c.batches[1]})")
        if s.sessions is not None and c.contexts is not None and s.sessions.max_context > c.contexts[1]:
            said.append(
                f"conversations of up to {s.sessions.max_context} tokens of context (measured up to {c.contexts[1]})"
            )
        if said:
            notes.append(f"stage {s.name}: the twin predicts beyond its calibration: {', '.join(said)}")
    return notes
