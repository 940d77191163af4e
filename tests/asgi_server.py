"""A real HTTP server for in-process tests of the HTTP client: hypercorn on trio, on 127.0.0.1, serving an
ASGI app the test writes (`tests/test_lean.py`, `tests/test_api_window.py`)."""

from __future__ import annotations

import functools
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import trio
from hypercorn.config import Config
from hypercorn.trio import serve

Receive = Callable[[], Awaitable[dict[str, Any]]]
Send = Callable[[dict[str, Any]], Awaitable[None]]
App = Callable[[dict[str, Any], Receive, Send], Awaitable[None]]
START_DEADLINE = 60.0


async def lifespan(scope: dict[str, Any], receive: Receive, send: Send) -> bool:
    """Answer hypercorn's startup and shutdown messages when `scope` is the lifespan; False otherwise (an
    HTTP request for the app to answer)."""
    if scope["type"] != "lifespan":
        return False
    while True:
        message = await receive()
        if message["type"] == "lifespan.startup":
            await send({"type": "lifespan.startup.complete"})
        elif message["type"] == "lifespan.shutdown":
            await send({"type": "lifespan.shutdown.complete"})
            return True


@asynccontextmanager
async def running(
    app: App,
    *,
    certificate: tuple[Path, Path] | None = None,
    http11_only: bool = False,
    keep_alive: float | None = None,
) -> AsyncIterator[str]:
    """The base URL of `app` served until the block ends: https with `certificate` (its PEM file and key),
    HTTP/1.1 only when asked (else ALPN offers HTTP/2 too), keep-alive `keep_alive` seconds when given."""
    config = Config()
    config.bind = ["127.0.0.1:0"]
    config.accesslog = None
    config.errorlog = None
    if http11_only:
        config.alpn_protocols = ["http/1.1"]
    if keep_alive is not None:
        config.keep_alive_timeout = keep_alive
    if certificate is not None:
        config.certfile, config.keyfile = (str(path) for path in certificate)
    stop = trio.Event()
    async with trio.open_nursery() as nursery:
        with trio.fail_after(START_DEADLINE):
            binds: list[str] = await nursery.start(
                functools.partial(serve, app, config, shutdown_trigger=stop.wait)
            )
        base = binds[0].replace("0.0.0.0", "127.0.0.1")
        if certificate is not None:
            base = base.replace("http://", "https://")
        try:
            yield base
        finally:
            stop.set()
