"""A real HTTP receiver on 127.0.0.1 for webhook tests: plain asyncio, HTTP/1.1 keep-alive.

It records every request (headers lower-cased, raw body) and answers with the status that
``answer`` gives for it (200 by default). ``hold`` makes it keep requests open (never answer)
until released, to catch a worker mid-delivery.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable
from dataclasses import dataclass, field


@dataclass
class Request:
    headers: dict[str, str]
    body: bytes


@dataclass
class Receiver:
    answer: Callable[[Request, int], int] = lambda req, n: 200
    requests: list[Request] = field(default_factory=list)
    holding: bool = False  # while True, requests are recorded and left unanswered...
    release: asyncio.Event = field(default_factory=asyncio.Event)  # ...until this is set
    port: int = 0
    _server: asyncio.AbstractServer | None = None
    _conns: set[asyncio.StreamWriter] = field(default_factory=set)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/hook"

    async def start(self, port: int = 0) -> Receiver:
        self._server = await asyncio.start_server(self._serve, "127.0.0.1", port or self.port)
        self.port = self._server.sockets[0].getsockname()[1]
        return self

    async def stop(self) -> None:
        if self._server is not None:
            self._server.close()
            for w in list(self._conns):
                w.close()
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self._server.wait_closed(), 5)
            self._server = None

    def ids(self) -> list[str]:
        return [r.headers["webhook-id"] for r in self.requests]

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self._conns.add(writer)
        try:
            while True:
                line = await reader.readline()
                if not line:
                    return
                headers: dict[str, str] = {}
                while True:
                    h = await reader.readline()
                    if h in (b"\r\n", b"\n", b""):
                        break
                    name, _, value = h.decode("latin-1").partition(":")
                    headers[name.strip().lower()] = value.strip()
                body = await reader.readexactly(int(headers.get("content-length", "0")))
                req = Request(headers, body)
                if self.holding:
                    self.requests.append(req)
                    await self.release.wait()
                    status = 200
                else:
                    status = self.answer(req, len(self.requests))
                    self.requests.append(req)
                writer.write(f"HTTP/1.1 {status} X\r\ncontent-length: 2\r\n\r\nok".encode())
                await writer.drain()
        except (ConnectionError, asyncio.IncompleteReadError):
            return
        finally:
            self._conns.discard(writer)
            writer.close()
