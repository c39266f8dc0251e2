"""Which requests a workload abandons mid-stream, and when (`requests.cancel`, spec CancelSpec): a chat UI's stop
button, an agent's timeout. Drawn per request from the run's seed and the request's ID, so that a rerun, or an
engine and its twin, abandon the same requests at the same points, whichever worker sends them."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from loadgen.schedule.lengths import LengthSampler, SecondsSampler
from loadgen.spec.workload import CancelSpec

STREAM = 7  # this draw's own random stream, apart from the plan's (items.stream)


@dataclass(frozen=True, slots=True)
class Cancel:
    """One request's point of abandon: `after_s` seconds after its send, or once `after_tokens` output tokens
    of any kind have come; with `before_first_token`, at after_s only where none has come by then."""

    after_s: float | None = None
    after_tokens: int | None = None
    before_first_token: bool = False

    def said(self, received: int) -> str:
        at = f"{self.after_s:.3g} s after its send" if self.after_s is not None else f"at {self.after_tokens} tokens"
        return f"the workload abandoned it {at} ({received} output tokens received)"


def draw(spec: CancelSpec | None, seed: int, request_id: int) -> Cancel | None:
    """This request's point of abandon, or None where the workload lets it finish."""
    if spec is None:
        return None
    rng = np.random.default_rng(np.random.SeedSequence([seed, STREAM, request_id]))
    if rng.random() >= spec.share:
        return None
    if spec.after_s is not None:
        return Cancel(after_s=SecondsSampler(spec.after_s, rng)(), before_first_token=spec.before_first_token)
    assert spec.after_tokens is not None
    return Cancel(after_tokens=LengthSampler(spec.after_tokens, rng)())  # lengths are at least 1
