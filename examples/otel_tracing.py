"""OpenTelemetry: a job's span continues the trace of the request that enqueued it.

    python examples/otel_tracing.py

With ``soniq[otel]`` installed and a tracer provider configured (here the SDK's, printing
to an in-memory exporter), ``enqueue`` opens a PRODUCER span and stores the W3C trace
context on the job; the worker runs each attempt in a CONSUMER span parented to it. In
production the worker is another process (``soniq worker``) and the trace still joins up.
"""

from __future__ import annotations

import asyncio
import sys

try:
    from opentelemetry import trace
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import SimpleSpanProcessor
    from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
except ImportError as exc:
    print(f"SKIP {exc.name} is not installed: pip install 'soniq[otel]' opentelemetry-sdk")
    sys.exit(0)

from soniq import Soniq

exporter = InMemorySpanExporter()
provider = TracerProvider()
provider.add_span_processor(SimpleSpanProcessor(exporter))
trace.set_tracer_provider(provider)

app = Soniq()


@app.job(name="shop.charge", retries=1)
async def charge(order_id: int) -> str:
    current = trace.get_current_span()
    current.add_event("charging", {"order_id": order_id})
    return f"charged {order_id}"


async def main() -> None:
    async with app:
        await app.setup()
        tracer = trace.get_tracer("shop.web")
        with tracer.start_as_current_span("POST /orders") as request:
            await charge.enqueue(order_id=7)
        await app.run_worker(run_once=True)

    spans = exporter.get_finished_spans()
    for s in spans:
        parent = f"{s.parent.span_id:016x}" if s.parent else "-"
        print(f"{s.kind.name:9} {s.name:22} trace={s.context.trace_id:032x} parent={parent}")
    process = next(s for s in spans if s.name == "process shop.charge")
    send = next(s for s in spans if s.name == "send default")
    assert process.context.trace_id == request.get_span_context().trace_id
    assert process.parent is not None and process.parent.span_id == send.context.span_id
    print("OK otel")


if __name__ == "__main__":
    asyncio.run(main())
