"""OpenTelemetry tracing (extra ``otel``: ``opentelemetry-api`` only).

When the application has configured a tracer provider, ``enqueue`` opens a PRODUCER span
``send {queue}`` and stores the W3C trace context (``traceparent``, ``tracestate``) on the
job (column ``trace_context``); each attempt a worker runs is a CONSUMER span
``process {task}`` whose parent is that context, so retries are separate spans of the same
trace. Attributes follow the messaging semantic conventions (``messaging.system=soniq``,
``messaging.destination.name``, ``messaging.message.id``, ``messaging.operation.type``)
plus ``soniq.task`` and ``soniq.attempt``; a failed attempt records its exception and sets
the span's status to ERROR.

Nothing happens, and nothing is imported, while no provider is configured: :func:`active`
is a dictionary look-up until then (soniq never imports ``opentelemetry`` itself; an
application that configured a provider already has).
"""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from soniq.states import Kind, Outcome

SYSTEM = "soniq"
# a provider named in the environment is loaded by the API on first use
_env_provider = "OTEL_PYTHON_TRACER_PROVIDER" in os.environ
_on = False  # a real provider was seen: it cannot be unset, so the answer stays True


def active() -> bool:
    """True once the application has configured an OpenTelemetry tracer provider."""
    global _on
    if _on:
        return True
    trace = sys.modules.get("opentelemetry.trace")
    if trace is None:
        return False
    if getattr(trace, "_TRACER_PROVIDER", 0) is None and not _env_provider:
        return False  # the API is loaded but nobody set a provider (the cheap answer)
    provider = trace.get_tracer_provider()
    if isinstance(provider, (trace.ProxyTracerProvider, trace.NoOpTracerProvider)):
        return False
    _on = True
    return True


def _tracer() -> Any:
    from opentelemetry import trace

    from soniq import __version__

    return trace.get_tracer("soniq", __version__)


@contextmanager
def producer(queue: str, task: str, *, job_id: str | None = None, count: int = 1) -> Iterator[str]:
    """A PRODUCER span around an enqueue; yields the W3C context to store (JSON text)."""
    from opentelemetry import propagate, trace

    attributes: dict[str, Any] = {
        "messaging.system": SYSTEM,
        "messaging.destination.name": queue,
        "messaging.operation.type": "send",
        "soniq.task": task,
    }
    if job_id is not None:
        attributes["messaging.message.id"] = job_id
    if count != 1:
        attributes["messaging.batch.message_count"] = count
    with _tracer().start_as_current_span(
        f"send {queue}", kind=trace.SpanKind.PRODUCER, attributes=attributes
    ):
        carrier: dict[str, str] = {}
        propagate.inject(carrier)
        yield json.dumps(carrier)


@contextmanager
def consumer(job: Any) -> Iterator[Any]:
    """A CONSUMER span around one attempt of ``job`` (a ``ClaimedJob``), parented to the
    context stored at enqueue (if any)."""
    from opentelemetry import propagate, trace

    stored = job.trace_context
    if isinstance(stored, str):
        stored = json.loads(stored)
    parent = propagate.extract(stored) if isinstance(stored, dict) else None
    attributes = {
        "messaging.system": SYSTEM,
        "messaging.destination.name": job.queue,
        "messaging.operation.type": "process",
        "messaging.message.id": str(job.id),
        "soniq.task": job.job_name,
        "soniq.attempt": job.attempt,
    }
    with _tracer().start_as_current_span(
        f"process {job.job_name}",
        context=parent,
        kind=trace.SpanKind.CONSUMER,
        attributes=attributes,
        record_exception=False,
        set_status_on_exception=False,
    ) as span:
        yield span


def finish(span: Any, outcome: Outcome | None) -> None:
    """Record how the attempt ended on its span."""
    from opentelemetry.trace import Status, StatusCode

    if outcome is None:  # a sync handler still running past its timeout
        span.set_status(Status(StatusCode.ERROR, "timed out (thread still running)"))
        return
    span.set_attribute("soniq.outcome", outcome.kind.value)
    if outcome.kind in (Kind.ERROR, Kind.TIMEOUT, Kind.NOT_FOUND):
        if isinstance(outcome.result, BaseException):
            span.record_exception(outcome.result)
        span.set_status(Status(StatusCode.ERROR, outcome.error or outcome.kind.value))
