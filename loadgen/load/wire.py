"""What a master and its workers say to each other over Locust's channel (custom messages): the message names,
finished requests as bytes, and the clock-offset estimate.

The channel is neither authenticated nor encrypted, so nothing secret goes on it: the run description names the
API key's variable, never the key (description.py).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from dataclasses import dataclass

import orjson

from loadgen.results import RequestResult

# master -> worker
CLOCK = "lg_clock"  # {seq}: reply at once with this process's perf_counter
RUN = "lg_run"  # {description, origin, worker}: the run, and the master's origin on this worker's clock
PREPARE = "lg_prepare"  # {stage}: say when all your users wait for the stage
OPEN = "lg_open"  # {stage, start_s, slots, first_id}: send your share from start_s (run clock)
STOP = "lg_stop"  # {}: no new sends (Ctrl-C on the master, or the run cannot go on)
FINISH = "lg_finish"  # {}: end in-flight requests, send every row, report your timing
LATE = "lg_late"  # {}: the run started without you; leave
# worker -> master
CLOCK_REPLY = "lg_clock_reply"  # {seq, t}
JOINED = "lg_joined"  # {} or {refused: reason}: ready to run, or cannot (a missing API key, say)
READY = "lg_ready"  # {stage, users}
ROWS = "lg_rows"  # {rows: bytes, in_flight, in_flight_s}: finished requests, and LOAD's figures
LOAD = "lg_load"  # {in_flight, in_flight_s}: requests in flight now, and requests x seconds since the start
STAGE_DONE = "lg_stage_done"  # {stage, next_id}: this worker's share of the stage is done
FINISHED = "lg_finished"  # {client_delay_p99_ms, how}

# Everything a row needs except the output text, which a worker has already counted.
_FIELDS = tuple(f.name for f in dataclasses.fields(RequestResult) if f.name != "text_parts")


def encode_rows(rows: Sequence[RequestResult]) -> bytes:
    return orjson.dumps([[getattr(r, name) for name in _FIELDS] for r in rows])


def decode_rows(data: bytes, worker: int) -> list[RequestResult]:
    """Rows as the worker sent them, marked with the worker the master knows the sender as."""
    rows = [RequestResult(**dict(zip(_FIELDS, values, strict=True))) for values in orjson.loads(data)]
    for r in rows:
        r.worker = worker
    return rows


@dataclass(frozen=True)
class Offset:
    """A worker's clock minus the master's, and its error bound."""

    offset_s: float
    uncertainty_s: float


def estimate_offset(samples: Sequence[tuple[float, float, float]]) -> Offset:
    """From exchanges (master sent at t1, worker read its clock at tw, master got the reply at t2), NTP's way:
    the worker read its clock somewhere inside [t1, t2] of the master's, so taking the midpoint errs by at most
    half the round trip; the exchange with the smallest round trip is the tightest."""
    t1, tw, t2 = min(samples, key=lambda s: s[2] - s[0])
    return Offset(offset_s=tw - (t1 + t2) / 2, uncertainty_s=(t2 - t1) / 2)
