"""Sampling the server's Prometheus metrics during a run, beside the load and off its hot path.

One greenlet fetches `/metrics` every interval (a single cooperative request); parsing, with prometheus_client's
text-format parser, and writing run on a real thread of gevent's hub pool, as the request writer does. A server
without metrics, or a slow or broken page, never fails the run: the first problem is noted once, and sampling
goes on (or stops, when the server has no such page).
"""

from __future__ import annotations

import time
import urllib.error
import urllib.request
from collections.abc import Callable

import gevent
import gevent.event
import orjson
from prometheus_client.parser import text_string_to_metric_families

Sample = tuple[float, str, str, float]  # run-clock time, name, labels (JSON), value
Writer = Callable[[list[Sample]], None]
INTERVAL_S = 0.25
TIMEOUT_S = 2.0


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
    def __init__(
        self,
        url: str,
        headers: dict[str, str],
        elapsed_s: Callable[[], float | None],
        write: Writer,
        interval_s: float = INTERVAL_S,
    ):
        self.url, self.headers = url, headers
        self.elapsed_s = elapsed_s  # the run clock: None before the load starts
        self.write, self.interval_s = write, interval_s
        self.note: str | None = None  # the first problem, said once in the run's note
        self.scrapes = 0
        self._stop = gevent.event.Event()
        self._greenlet: gevent.Greenlet | None = None

    def start(self) -> None:
        self._greenlet = gevent.spawn(self._loop)

    def stop(self) -> None:
        self._stop.set()
        if self._greenlet is not None:
            self._greenlet.join(TIMEOUT_S + 1)
            self._greenlet.kill()

    def _problem(self, what: str) -> None:
        if self.note is None:
            self.note = f"server metrics ({self.url}): {what}"

    def _loop(self) -> None:
        while not self._stop.wait(self.interval_s):
            if self.elapsed_s() is None:
                continue
            t0 = time.perf_counter()
            try:
                req = urllib.request.Request(self.url, headers=self.headers)
                with urllib.request.urlopen(req, timeout=TIMEOUT_S) as resp:
                    body = resp.read()
            except urllib.error.HTTPError as e:
                self._problem(f"HTTP {e.code}: not sampled")
                if e.code in (401, 403, 404, 405):
                    return  # the server has no metrics page for us: stop asking
                continue
            except (urllib.error.URLError, OSError) as e:
                self._problem(f"not reached ({getattr(e, 'reason', e)}); samples are missing where it was not")
                continue
            at = self.elapsed_s()
            if at is None:
                continue
            at -= (time.perf_counter() - t0) / 2  # the sample's time: the middle of its fetch
            error = gevent.get_hub().threadpool.apply(self._store, (body, at))
            if error is not None:
                self._problem(error)
                return

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
