"""``app.sync``: the app's async methods for code without an event loop (Flask, scripts).

Each call runs the async method on a private event loop in a daemon thread (started on
first use, one per app), so it is safe from any number of threads at once; the caller's
context variables (say, the current OpenTelemetry span) go along. Any async method
of the app is available under the same name and arguments (``app.sync.enqueue``,
``get_job``, ``get_result``, ``wait``, ...). ``enqueue(..., connection=conn)`` with a
psycopg 3 connection runs in the calling thread, on that connection, in its transaction.

``close()`` closes the app's pool on that loop and stops it; an interpreter exiting without
it does not hang (the thread is a daemon and an exit hook closes the pool, bounded in time).
"""

from __future__ import annotations

import asyncio
import atexit
import contextvars
import inspect
import threading
import weakref
from collections.abc import Callable, Coroutine
from typing import TYPE_CHECKING, Any

from soniq.errors import SoniqError
from soniq.foreign import enqueue_dbapi, enqueue_many_dbapi, is_psycopg

if TYPE_CHECKING:
    from soniq.app import Soniq

EXIT_CLOSE_TIMEOUT = 2.0  # seconds the exit hook gives the pool to close
SYNC_MISUSE = "SONIQ_SYNC_MISUSE"


class SyncApp:
    """Blocking versions of an app's async methods (see the module docstring)."""

    def __init__(self, app: Soniq) -> None:
        self._app = app
        self._lock = threading.Lock()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None

    def __getattr__(self, name: str) -> Callable[..., Any]:
        method = getattr(self._app, name)
        if not inspect.iscoroutinefunction(method):
            raise AttributeError(f"app.sync has no {name!r}: app.{name} is not an async method")

        def call(*args: Any, **kwargs: Any) -> Any:
            return self.run(method(*args, **kwargs))

        call.__name__ = name
        call.__doc__ = method.__doc__
        return call

    def enqueue(self, target: Any, *, args: dict[str, Any] | None = None, **kwargs: Any) -> str:
        """``app.enqueue``; with ``connection=`` a psycopg 3 connection, on that connection
        (in its transaction) from the calling thread."""
        conn = kwargs.get("connection")
        if conn is not None and is_psycopg(conn):
            del kwargs["connection"]
            return enqueue_dbapi(self._app, conn, target, args, kwargs)
        return self.run(self._app.enqueue(target, args=args, **kwargs))  # type: ignore[no-any-return]

    def enqueue_many(self, target: Any, args_list: Any, **kwargs: Any) -> list[str]:
        """``app.enqueue_many``; with ``connection=`` a psycopg 3 connection, on it."""
        conn = kwargs.get("connection")
        if conn is not None and is_psycopg(conn):
            del kwargs["connection"]
            return enqueue_many_dbapi(self._app, conn, target, args_list, kwargs)
        return self.run(self._app.enqueue_many(target, args_list, **kwargs))  # type: ignore[no-any-return]

    def run(self, coro: Coroutine[Any, Any, Any]) -> Any:
        """Run ``coro`` on the private loop and return its result (or raise its error)."""
        loop = self._ensure_loop()
        if threading.current_thread() is self._thread:
            coro.close()
            raise SoniqError(
                SYNC_MISUSE,
                "app.sync.* was called from inside soniq's own sync loop; await the async "
                "method instead",
            )
        # the caller's context variables go along (an OpenTelemetry span, testing depth)
        ctx = contextvars.copy_context()
        return asyncio.run_coroutine_threadsafe(_in_context(ctx, coro), loop).result()

    def _ensure_loop(self) -> asyncio.AbstractEventLoop:
        with self._lock:
            if self._loop is None:
                loop = asyncio.new_event_loop()
                ready = threading.Event()

                def serve() -> None:
                    asyncio.set_event_loop(loop)
                    loop.call_soon(ready.set)
                    loop.run_forever()

                thread = threading.Thread(target=serve, name="soniq-sync", daemon=True)
                thread.start()
                ready.wait()
                self._loop, self._thread = loop, thread
                _open.add(self)
            return self._loop

    async def _shutdown(self) -> None:
        """Cancel calls still running (their callers get CancelledError, never a hang),
        then close the app's pool."""
        me = asyncio.current_task()
        tasks = [t for t in asyncio.all_tasks() if t is not me]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        await self._app.close()

    def close(self, timeout: float | None = None) -> None:
        """Close the app's connections opened through ``app.sync`` and stop its loop."""
        with self._lock:
            loop, thread = self._loop, self._thread
            self._loop = self._thread = None
        _open.discard(self)
        if loop is None or thread is None:
            return
        try:
            fut = asyncio.run_coroutine_threadsafe(self._shutdown(), loop)
            fut.result(timeout)
        finally:
            loop.call_soon_threadsafe(loop.stop)
            thread.join(timeout)
            if not thread.is_alive():
                loop.close()


async def _in_context(ctx: contextvars.Context, coro: Coroutine[Any, Any, Any]) -> Any:
    """Await ``coro`` as a task running in (a copy of) ``ctx``."""
    return await ctx.run(asyncio.get_running_loop().create_task, coro)


_open: weakref.WeakSet[SyncApp] = weakref.WeakSet()


@atexit.register
def _close_at_exit() -> None:
    """Close pools still open at interpreter exit, each within ``EXIT_CLOSE_TIMEOUT``."""
    for sync in list(_open):
        try:
            sync.close(EXIT_CLOSE_TIMEOUT)
        except Exception:  # exiting: a server gone away must not stop the exit
            pass
