"""Request-size limits and the JSON error shape every refusal shares."""

from __future__ import annotations

import json
from collections.abc import Callable

from starlette.exceptions import HTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send


class APIError(Exception):
    """A refusal the client caused; becomes ``{"error": {...}}`` with ``status``."""

    def __init__(self, status: int, code: str, message: str, limit: str | None = None,
                 headers: dict[str, str] | None = None):
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message
        self.limit = limit
        self.headers = headers

    def body(self) -> dict[str, object]:
        error: dict[str, object] = {"code": self.code, "message": self.message}
        if self.limit:
            error["limit"] = self.limit
        return {"error": error}


class BodySizeLimit:
    """Refuse bodies over the limit with 413 before the app reads them into memory.

    Checks Content-Length up front and counts streamed chunks too, so a chunked upload with
    no length cannot get around it. ``limit_for(path)`` lets uploads have a larger limit.
    """

    def __init__(self, app: ASGIApp, limit_for: Callable[[str], tuple[int, str]]):
        self.app = app
        self.limit_for = limit_for

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        limit, name = self.limit_for(scope["path"])
        headers = dict(scope.get("headers") or [])
        declared = headers.get(b"content-length")
        if declared is not None and declared.isdigit() and int(declared) > limit:
            await self._refuse(send, limit, name)
            return
        received = 0
        response_started = False

        async def counting_receive() -> Message:
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > limit:
                    raise BodyTooLarge(APIError(413, "body_too_large", f"request body exceeds {limit} bytes", name))
            return message

        async def tracking_send(message: Message) -> None:
            nonlocal response_started
            if message["type"] == "http.response.start":
                response_started = True
            await send(message)

        try:
            await self.app(scope, counting_receive, tracking_send)
        except BodyTooLarge:
            if not response_started:
                await self._refuse(send, limit, name)

    @staticmethod
    async def _refuse(send: Send, limit: int, name: str) -> None:
        error = APIError(413, "body_too_large", f"request body exceeds {limit} bytes", limit=name)
        payload = json.dumps(error.body()).encode()
        headers = [(b"content-type", b"application/json"), (b"content-length", str(len(payload)).encode())]
        await send({"type": "http.response.start", "status": 413, "headers": headers})
        await send({"type": "http.response.body", "body": payload})


class BodyTooLarge(HTTPException):
    """Raised while the app reads the body; an HTTPException so frameworks pass it through."""

    def __init__(self, error: APIError):
        super().__init__(status_code=413, detail=error.message)
        self.api_error = error
