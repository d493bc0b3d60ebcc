"""Lifecycle webhooks end to end: a receiver that verifies with ``soniq.webhooks.verify``.

    pip install 'soniq[webhooks]'
    python examples/webhook_receiver.py

A tiny plain-asyncio HTTP receiver listens on 127.0.0.1; the app subscribes it to job events,
enqueues a job that succeeds and one that fails once, and runs a worker (which also takes the
queue ``soniq.webhooks``, where deliveries are jobs). Every request is verified (signature
and timestamp) before it is trusted; ``webhook-id`` is the key to deduplicate on, since
delivery is at least once.
"""

from __future__ import annotations

import asyncio

from soniq import JobContext, Soniq, SoniqError
from soniq.webhooks import verify

app = Soniq(poll_interval=0.5)
SECRETS: list[str] = []  # the receiver's copy of the secret(s): old and new while rotating
seen: dict[str, dict] = {}  # webhook-id -> event: a receiver deduplicates on webhook-id
all_seen = asyncio.Event()  # (for this demo: set once the 3 expected events are in)


@app.job(name="webhook_demo.ok")
async def ok(n: int) -> int:
    return n * 2


@app.job(name="webhook_demo.flaky", retries=2, retry_delay=0.2)
async def flaky(ctx: JobContext) -> str:
    if ctx.attempt == 1:
        raise ConnectionError("first attempt fails")
    return "ok"


def handle(body: bytes, headers: dict[str, str]) -> int:
    """What a web framework's route would do: verify, deduplicate, act, answer 2xx."""
    try:
        event = verify(body, headers, SECRETS)
    except SoniqError as exc:
        print(f"rejected: {exc.message}")
        return 400
    if headers["webhook-id"] not in seen:
        seen[headers["webhook-id"]] = event
        print(f"{event['type']:<16} job {event['data']['job_name']} ({event['data']['id']})")
        if len(seen) == 3:  # 2 successes, 1 failed attempt
            all_seen.set()
    return 204


async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    """Minimal HTTP/1.1 with keep-alive: enough for the demo (use Starlette, aiohttp, ...)."""
    try:
        while await reader.readline():  # request line
            headers: dict[str, str] = {}
            while (line := await reader.readline()) not in (b"\r\n", b""):
                name, _, value = line.decode("latin-1").partition(":")
                headers[name.strip().lower()] = value.strip()
            body = await reader.readexactly(int(headers.get("content-length", "0")))
            status = handle(body, headers)
            writer.write(f"HTTP/1.1 {status} -\r\ncontent-length: 0\r\n\r\n".encode())
            await writer.drain()
    except (ConnectionError, asyncio.IncompleteReadError):
        pass
    finally:
        writer.close()


async def main() -> None:
    server = await asyncio.start_server(serve, "127.0.0.1", 0)
    url = f"http://127.0.0.1:{server.sockets[0].getsockname()[1]}/webhooks"
    async with app:
        await app.setup()
        hook = await app.webhooks.add(url, events=["job.succeeded", "job.failed"])
        SECRETS.append(hook["secret"])  # shown this once: store it with the receiver
        await ok.enqueue(n=21)  # type: ignore[attr-defined]
        await flaky.enqueue()  # type: ignore[attr-defined]
        stop = asyncio.Event()
        worker = asyncio.create_task(app.run_worker(concurrency=4, shutdown_event=stop))
        try:
            await asyncio.wait_for(all_seen.wait(), 30)
        finally:
            stop.set()
        await worker
        attempts = await app.webhooks.deliveries(webhook_id=hook["id"])
        await app.webhooks.remove(hook["id"])
    server.close()
    types = sorted(e["type"] for e in seen.values())
    assert types == ["job.failed", "job.succeeded", "job.succeeded"], types
    print(f"OK: {len(seen)} verified events, {len(attempts)} delivery attempts recorded")


if __name__ == "__main__":
    asyncio.run(main())
