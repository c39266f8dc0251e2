"""Sampling the server's Prometheus metrics during a run, beside the load and off its hot path.

A run is bracketed by two scrapes of its own: a baseline after the pre-run probes and before the first request,
and a final one after the last request has ended, so that each counter's rise over the run is the run's alone.
Between them one greenlet fetches `/metrics` every interval, one fetch in flight at a time; parsing, with
prometheus_client's text-format parser, and writing run on a real thread of gevent's hub pool, as the request
writer does. A server without metrics, or a slow or broken page, never fails the run: the first problem is noted
once, and sampling goes on (or stops, when the server has no such page).
"""

from __future__ import annotations

import urllib.error
import urllib.request
from collections.abc import Callable

import gevent
import gevent.event
import orjson
from prometheus_client.parser import text_string_to_metric_families

from loadgen.target.probe import CALL_FAILED

Sample = tuple[float, str, str, float]  # run-clock time, name, labels (JSON), value
Writer = Callable[[list[Sample]], None]
INTERVAL_S = 0.25
# A busy server may be slow to answer: its HTTP threads may all be taken, or it may build the page on the loop
# that runs the engine. A late answer is still a true sample (of the state when it was built), so the timeout only
# guards against a server that never answers; ticks wait for it rather than stack up. (llama.cpp's own server
# answered within 0.08 s at saturation: benchmarks/llamacpp_scrapes.py.)
TIMEOUT_S = 30.0


def metrics_url(base_url: str) -> str:
    """Servers serve /metrics beside the OpenAI API's /v1, at the root."""
    return base_url.rstrip("/").removesuffix("/v1") + "/metrics"


def parse(text: str, t_s: float) -> list[Sample]:
    """Every sample of a scrape; a page that is not Prometheus text raises ValueError."""
    return [
        (t_s, s.name, orjson.dumps(s.labels, option=orjson.OPT_SORT_KEYS).decode() if s.labels else "", s.value)
        for family in text_string_to_metric_families(text)
        for s in family.samples
    ]


class Sampler:
    """Scrapes `url` for one run: `start()` takes the baseline and starts the ticks, `stop()` ends them and takes
    the final scrape.

    Samples are stamped on the run clock (`elapsed_s`, None before the load starts) when the answer arrived: a
    server slow to answer has the scrape wait in a queue and builds the page when it gets to it, at the end of the
    wait rather than its middle. The baseline is taken before the clock starts, as the load is about to start: it
    is stamped 0.0, the load's start, which it stands for (nothing of the run is sent in between). Where the clock
    already runs (a master starts it as workers join, before any stage opens) it gets its true time."""

    def __init__(
        self,
        url: str,
        headers: dict[str, str],
        elapsed_s: Callable[[], float | None],
        write: Writer,
        interval_s: float = INTERVAL_S,
        timeout_s: float = TIMEOUT_S,
    ):
        self.url, self.headers = url, headers
        self.elapsed_s = elapsed_s
        self.write, self.interval_s, self.timeout_s = write, interval_s, timeout_s
        self.note: str | None = None  # the first problem, said once in the run's note
        self.scrapes = 0  # scrapes stored
        self._given_up = False  # the page is missing or unreadable: no more scrapes
        self._stop = gevent.event.Event()
        self._greenlet: gevent.Greenlet | None = None

    def start(self) -> None:
        """The baseline scrape (here, before returning), then one every interval once the clock runs."""
        self.scrape_once()
        self._greenlet = gevent.spawn(self._loop)

    def stop(self) -> None:
        """End the ticks, let a scrape in flight come back (a late answer still counts), then the final scrape:
        call it after the last request has ended. A load that never started (Ctrl-C first) needs no final one."""
        if self._stop.is_set():
            return
        self._stop.set()
        if self._greenlet is not None:
            self._greenlet.join(self.timeout_s + 1)
            self._greenlet.kill()
        if self.elapsed_s() is not None:
            self.scrape_once()

    def scrape_once(self) -> bool:
        """Fetch, parse and store one scrape; False once sampling has given up (no page, or not Prometheus)."""
        if self._given_up:
            return False
        body = self._fetch()
        if body is not None:
            at = self.elapsed_s()
            error = gevent.get_hub().threadpool.apply(self._store, (body, 0.0 if at is None else at))
            if error is not None:
                self._give_up(error)
        return not self._given_up

    def _loop(self) -> None:
        # The wait starts when the last scrape has ended: a slow page slows the cadence, never stacks fetches.
        while not self._stop.wait(self.interval_s):
            if self.elapsed_s() is not None and not self.scrape_once():
                return

    def _fetch(self) -> bytes | None:
        """The page, or None (the problem noted)."""
        try:
            req = urllib.request.Request(self.url, headers=self.headers)
            with urllib.request.urlopen(req, timeout=self.timeout_s) as resp:
                return resp.read()
        except urllib.error.HTTPError as e:
            if e.code in (401, 403, 404, 405):  # the server has no metrics page for us: stop asking
                self._give_up(f"HTTP {e.code}: not sampled")
            else:
                self._problem(f"HTTP {e.code}: not sampled")
        except CALL_FAILED as e:  # unreachable, or an answer cut short
            self._problem(f"not reached ({getattr(e, 'reason', e)}); samples are missing where it was not")
        return None

    def _problem(self, what: str) -> None:
        if self.note is None:
            self.note = f"server metrics ({self.url}): {what}"

    def _give_up(self, what: str) -> None:
        self._problem(what)
        self._given_up = True

    def _store(self, body: bytes, t_s: float) -> str | None:
        """On the pool's thread: parse and write one scrape; a problem comes back as text."""
        try:
            samples = parse(body.decode("utf-8", "replace"), t_s)
        except ValueError as e:
            return f"not Prometheus text ({e}); sampling stopped"
        try:
            self.write(samples)
        except Exception as e:  # the database's own error types
            return f"cannot be stored ({str(e).splitlines()[0]}); sampling stopped"
        self.scrapes += 1
        return None
