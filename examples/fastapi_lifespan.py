"""A FastAPI service that enqueues jobs, with a soniq worker inside the web process.

    python examples/fastapi_lifespan.py           (in production: uvicorn module:web)

``soniq.contrib.fastapi.lifespan(app, worker=True, **run_worker_kwargs)`` opens the app's
pool at startup, runs a worker next to the web server, and at shutdown lets the worker
finish its jobs in flight before closing. Without ``worker=True`` it only opens and closes
the pool (run ``soniq worker`` separately).
"""

from __future__ import annotations

import sys
import time

try:
    from fastapi import FastAPI
    from fastapi.testclient import TestClient
except (ImportError, RuntimeError) as exc:
    print(f"SKIP {exc}: pip install 'soniq[fastapi]' httpx")
    sys.exit(0)

from soniq import Soniq
from soniq.contrib.fastapi import lifespan

app = Soniq()


@app.job(name="shop.resize_image")
async def resize_image(image_id: int) -> str:
    return f"image {image_id} resized"


web = FastAPI(lifespan=lifespan(app, worker=True, concurrency=2))


@web.post("/images/{image_id}")
async def upload(image_id: int) -> dict[str, str]:
    return {"job_id": await resize_image.enqueue(image_id=image_id)}


@web.get("/jobs/{job_id}")
async def job_status(job_id: str) -> dict[str, object]:
    job = await app.get_job(job_id)
    return {"status": str(job["status"]) if job else None, "result": await app.get_result(job_id)}


def main() -> None:
    import asyncio

    async def setup() -> None:  # once per database (in production: `soniq setup`)
        async with Soniq() as admin:
            await admin.setup()

    asyncio.run(setup())
    with TestClient(web) as client:  # runs the lifespan: startup ... shutdown
        job_id = client.post("/images/42").json()["job_id"]
        deadline = time.monotonic() + 20
        while (body := client.get(f"/jobs/{job_id}").json())["status"] != "done":
            assert time.monotonic() < deadline, body
            time.sleep(0.05)
        print("job:", body)
    print("OK fastapi")


if __name__ == "__main__":
    main()
