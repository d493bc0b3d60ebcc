"""FastAPI / Starlette lifespan for a Soniq app (extra ``fastapi``).

```python
web = FastAPI(lifespan=soniq.contrib.fastapi.lifespan(app, worker=True, concurrency=2))
```

On startup the app's pool is opened; with ``worker=True`` a worker runs inside the web
process (``run_worker_kwargs`` are ``app.run_worker``'s). On shutdown the worker stops
claiming and lets its in-flight jobs finish (up to ``shutdown_timeout``, the rest go back to
the queue), then the pool is closed. The lifespan state carries ``soniq`` (the app), so a
request handler may use ``request.state.soniq``.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from typing import Any

from soniq.app import Soniq

__all__ = ["lifespan"]


def lifespan(
    app: Soniq, *, worker: bool = False, **run_worker_kwargs: Any
) -> Callable[[Any], AbstractAsyncContextManager[dict[str, Any]]]:
    """A lifespan function for ``FastAPI(lifespan=...)`` / ``Starlette(lifespan=...)``."""
    if "shutdown_event" in run_worker_kwargs:
        raise TypeError("lifespan() sets shutdown_event itself; do not pass it")

    @asynccontextmanager
    async def soniq_lifespan(_web_app: Any) -> AsyncIterator[dict[str, Any]]:
        await app.ensure_initialized()
        stop = asyncio.Event()
        task: asyncio.Task[None] | None = None
        if worker:
            task = asyncio.create_task(
                app.run_worker(shutdown_event=stop, **run_worker_kwargs), name="soniq-worker"
            )
        try:
            yield {"soniq": app}
        finally:
            try:
                if task is not None:
                    stop.set()
                    with contextlib.suppress(asyncio.CancelledError):
                        await task
            finally:
                await app.close()

    return soniq_lifespan
