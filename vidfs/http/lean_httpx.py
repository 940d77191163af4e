"""The lean pool's answers as httpx objects (`vidfs.http.lean` says why the pool exists).

- `LeanResponse`: an API call's `Answer` as an `httpx.Response`, for the callers that parse it;
- `LeanTransport`: an httpx transport over the pool, for the requests httpx must still build itself.
"""

from __future__ import annotations

import httpx

from vidfs.http.lean import Answer, LeanPool
from vidfs.http.wire import content_coded


class LeanResponse(httpx.Response):
    """An `Answer` as an `httpx.Response` for the API's callers, its body read; its `request` (and so its
    `url`) made only when asked for: parsing the URL again into an `httpx.Request` for every answer was a
    tenth of an API call's CPU, and only a redirect's Location or an index's base URL needs it."""

    def __init__(self, answer: Answer, method: str) -> None:
        super().__init__(
            answer.status_code,
            headers=answer.fields,
            stream=httpx.ByteStream(answer.content),
            extensions={"http_version": b"HTTP/1.1"},
        )
        if content_coded(answer.fields):
            self.read()  # httpx's decoders (gzip, br, ...)
        else:  # the body as read: `content=` would run it through httpx's stream and decoder (11 µs, 2)
            self._content = answer.content
            self.is_stream_consumed = self.is_closed = True
        self._lean_request = (method, answer.url)
        self.streamed = answer.streamed

    @property
    def request(self) -> httpx.Request:
        if self._request is None:
            self._request = httpx.Request(*self._lean_request)
        return self._request

    @request.setter
    def request(self, value: httpx.Request) -> None:
        self._request = value


class LeanTransport(httpx.AsyncBaseTransport):
    """An httpx transport over a `LeanPool`: the answer comes back as an `httpx.Response`, body read."""

    def __init__(self, pool: LeanPool) -> None:
        self.pool = pool

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        url = request.url
        scheme = url.scheme
        origin = (
            scheme,
            url.raw_host.decode("ascii").lower(),
            url.port or (443 if scheme == "https" else 80),
        )
        body = await request.aread()
        try:
            answer = await self.pool.send(
                origin, request.method.encode(), url.raw_path, request.headers.raw, body, str(url)
            )
        except httpx.RequestError as exc:
            exc.request = request
            raise
        return httpx.Response(
            answer.status_code,
            headers=answer.fields,
            content=answer.content,
            request=request,
            extensions={"http_version": b"HTTP/1.1"},
        )

    async def aclose(self) -> None:
        await self.pool.aclose()
