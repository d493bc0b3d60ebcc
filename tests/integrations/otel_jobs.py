"""Jobs module for the OpenTelemetry test: configures the SDK's tracer provider with an
exporter appending each finished span as a JSON line to $SONIQ_TEST_SPANS, then defines
the jobs (the same module serves the producer script and `soniq worker`)."""

from __future__ import annotations

import json
import os
from collections.abc import Sequence

from opentelemetry import trace
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor, SpanExporter, SpanExportResult

from soniq import JobContext, Soniq


class FileExporter(SpanExporter):
    def __init__(self, path: str) -> None:
        self.path = path

    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        with open(self.path, "a", encoding="utf-8") as f:
            for s in spans:
                ctx = s.get_span_context()
                assert ctx is not None
                f.write(
                    json.dumps(
                        {
                            "name": s.name,
                            "kind": s.kind.name,
                            "trace_id": format(ctx.trace_id, "032x"),
                            "span_id": format(ctx.span_id, "016x"),
                            "parent": format(s.parent.span_id, "016x") if s.parent else None,
                            "attributes": dict(s.attributes or {}),
                            "status": s.status.status_code.name,
                            "events": [e.name for e in s.events],
                        }
                    )
                    + "\n"
                )
        return SpanExportResult.SUCCESS


provider = TracerProvider()
provider.add_span_processor(SimpleSpanProcessor(FileExporter(os.environ["SONIQ_TEST_SPANS"])))
trace.set_tracer_provider(provider)

app = Soniq()


@app.job(name="ship")
async def ship(order_id: int) -> str:
    return f"shipped {order_id}"


@app.job(name="flaky", retries=1)
async def flaky(ctx: JobContext) -> None:
    raise ValueError(f"attempt {ctx.attempt} failed")
