"""Prometheus metrics for soniq, via prometheus-client.

An observer on ``app.observers`` counts enqueues and job outcomes as they happen in this
process. Queue depth, running and dead-lettered counts and the oldest due job's age come from
the database: a background task samples them with one query every ``sample_interval`` seconds,
so scrapes never query the database. ::

    from soniq.contrib import metrics
    metrics.install(app)                  # default registry; or registry=my_registry
    metrics.serve(9108)                   # or expose the registry your app already serves

``soniq worker --metrics-port 9108`` does both for the worker's instances. Needs the
``metrics`` extra (``pip install 'soniq[metrics]'``).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from soniq.errors import EXTRA_MISSING, SoniqError

try:
    from prometheus_client import REGISTRY, CollectorRegistry, Counter, Gauge, Histogram
except ImportError:
    raise SoniqError(
        EXTRA_MISSING,
        "soniq's Prometheus metrics need prometheus-client, which is not installed. "
        "Fix: pip install 'soniq[metrics]'.",
    ) from None

if TYPE_CHECKING:
    from soniq.app import Soniq

log = logging.getLogger("soniq.metrics")

DURATION_BUCKETS = (
    0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0,
    float("inf"),
)  # fmt: skip


@dataclass(frozen=True)
class _Families:
    """The metric families, registered once per registry and shared by every instance."""

    enqueued: Counter
    started: Counter
    succeeded: Counter
    failed: Counter
    retried: Counter
    dead_lettered: Counter
    snoozed: Counter
    duration: Histogram
    queue_depth: Gauge
    queue_processing: Gauge
    queue_dead_letter: Gauge
    queue_oldest_age: Gauge
    worker_in_flight: Gauge

    @classmethod
    def register(cls, registry: CollectorRegistry) -> _Families:
        def counter(name: str, doc: str) -> Counter:
            return Counter(name, doc, ("queue", "task"), registry=registry)

        def gauge(name: str, doc: str, labels: tuple[str, ...] = ("queue",)) -> Gauge:
            return Gauge(name, doc, labels, registry=registry)

        return cls(
            enqueued=counter("soniq_jobs_enqueued", "Jobs enqueued by this process."),
            started=counter("soniq_jobs_started", "Job attempts started by this process."),
            succeeded=counter("soniq_jobs_succeeded", "Job attempts that succeeded."),
            failed=counter(
                "soniq_jobs_failed", "Job attempts that failed (retried + dead-lettered)."
            ),
            retried=counter("soniq_jobs_retried", "Failed attempts that will be retried."),
            dead_lettered=counter(
                "soniq_jobs_dead_lettered", "Jobs dead-lettered after their last attempt."
            ),
            snoozed=counter("soniq_jobs_snoozed", "Job attempts that returned Snooze."),
            duration=Histogram(
                "soniq_job_duration_seconds",
                "Handler run time per attempt.",
                ("queue", "task"),
                registry=registry,
                buckets=DURATION_BUCKETS,
            ),
            queue_depth=gauge(
                "soniq_queue_depth", "Queued jobs (due now or scheduled later), sampled."
            ),
            queue_processing=gauge("soniq_queue_processing", "Jobs running now, sampled."),
            queue_dead_letter=gauge("soniq_queue_dead_letter", "Dead-lettered jobs, sampled."),
            queue_oldest_age=gauge(
                "soniq_queue_oldest_age_seconds",
                "Age of the oldest due queued job (0 when none is due), sampled.",
            ),
            worker_in_flight=gauge(
                "soniq_worker_in_flight",
                "Jobs a worker of this process is running.",
                ("worker_id",),
            ),
        )


_families: dict[int, tuple[CollectorRegistry, _Families]] = {}


def _families_for(registry: CollectorRegistry) -> _Families:
    entry = _families.get(id(registry))
    if entry is None or entry[0] is not registry:
        entry = (registry, _Families.register(registry))
        _families[id(registry)] = entry
    return entry[1]


class SoniqMetrics:
    """Observer of one ``Soniq`` instance that records Prometheus metrics."""

    def __init__(
        self,
        app: Soniq,
        registry: CollectorRegistry | None = None,
        sample_interval: float = 5.0,
    ) -> None:
        if sample_interval <= 0:
            raise ValueError("sample_interval must be greater than 0")
        self.app = app
        self.registry = registry if registry is not None else REGISTRY
        self.m = _families_for(self.registry)
        self.sample_interval = sample_interval
        self._queues: set[str] = set()
        self._sampler: asyncio.Task[None] | None = None

    # -- observer interface (called by the app and its workers) ------------------------------

    def job_enqueued(self, queue: str, task: str, n: int) -> None:
        self.m.enqueued.labels(queue, task).inc(n)
        self.ensure_sampler()

    def job_started(self, queue: str, task: str) -> None:
        self.m.started.labels(queue, task).inc()
        self.ensure_sampler()

    def job_ended(self, queue: str, task: str, outcome: str, duration_seconds: float) -> None:
        self.m.duration.labels(queue, task).observe(duration_seconds)
        if outcome == "succeeded":
            self.m.succeeded.labels(queue, task).inc()
        elif outcome == "retried":
            self.m.retried.labels(queue, task).inc()
            self.m.failed.labels(queue, task).inc()
        elif outcome == "dead_lettered":
            self.m.dead_lettered.labels(queue, task).inc()
            self.m.failed.labels(queue, task).inc()
        elif outcome == "snoozed":
            self.m.snoozed.labels(queue, task).inc()
        elif outcome == "aborted":
            pass  # cancel_job(abort=True): neither a success nor a failure
        else:
            log.warning("unknown job outcome %r for %s (not counted)", outcome, task)

    def worker_in_flight(self, worker_id: str, n: int) -> None:
        self.m.worker_in_flight.labels(worker_id).set(n)

    # -- sampled gauges ---------------------------------------------------------------------

    async def sample(self) -> None:
        """Read queue depths once (one query) and set the queue gauges."""
        rows = await self.app.queue_depths()
        seen = set()
        for row in rows:
            q = row["queue"]
            seen.add(q)
            self.m.queue_depth.labels(q).set(row["queued"])
            self.m.queue_processing.labels(q).set(row["processing"])
            self.m.queue_dead_letter.labels(q).set(row["dead_letter"])
            self.m.queue_oldest_age.labels(q).set(row["oldest_queued_age"] or 0.0)
        for q in self._queues - seen:  # a queue that emptied out reads 0, not its last value
            for gauge in (
                self.m.queue_depth,
                self.m.queue_processing,
                self.m.queue_dead_letter,
                self.m.queue_oldest_age,
            ):
                gauge.labels(q).set(0)
        self._queues |= seen

    async def run_sampler(self, stop: asyncio.Event | None = None) -> None:
        """Sample every ``sample_interval`` seconds until ``stop`` is set (or cancelled).

        Database errors are logged and the next sample is tried on schedule.
        """
        stop = stop if stop is not None else asyncio.Event()
        while not stop.is_set():
            try:
                await self.sample()
            except Exception as exc:  # a failed sample must not end the loop
                log.warning("metrics sample failed: %s", exc)
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(stop.wait(), self.sample_interval)

    def ensure_sampler(self) -> None:
        """Start the background sampler on the running loop, if it is not running there."""
        task = self._sampler
        if task is not None and not task.done():
            return
        try:
            asyncio.get_running_loop()
        except RuntimeError:
            return
        self._sampler = asyncio.create_task(self.run_sampler(), name="soniq-metrics-sampler")

    async def stop_sampler(self) -> None:
        task, self._sampler = self._sampler, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task


def install(
    app: Soniq, registry: CollectorRegistry | None = None, *, sample_interval: float = 5.0
) -> SoniqMetrics:
    """Record ``app``'s metrics in ``registry`` (default: prometheus-client's global one).

    Returns the observer, already in ``app.observers``. The queue sampler starts now if an
    event loop is running, else on the first enqueue or job in a loop (or call
    ``ensure_sampler()``). Installing twice on one registry returns the first observer.
    """
    reg = registry if registry is not None else REGISTRY
    for observer in app.observers:
        if isinstance(observer, SoniqMetrics) and observer.registry is reg:
            return observer
    observer = SoniqMetrics(app, reg, sample_interval)
    app.observers.append(observer)
    observer.ensure_sampler()
    return observer


def serve(port: int, host: str = "127.0.0.1", registry: CollectorRegistry | None = None) -> Any:
    """Serve ``registry`` on http://host:port/metrics from a daemon thread; returns the server."""
    from prometheus_client import start_http_server

    server, _thread = start_http_server(
        port, addr=host, registry=registry if registry is not None else REGISTRY
    )
    return server
