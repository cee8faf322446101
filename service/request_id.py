"""A request id on every response (``X-Request-ID``) and in every log line written for it.

A client's own id (up to 128 printable ASCII characters) is echoed, so one id follows a
request through the client's logs and ours; otherwise a fresh one is made. The id lives in a
context variable for the request's task, and :class:`RequestIdFilter` puts it on each log
record (``-`` outside any request). A plain ASGI middleware: the hot path pays one header scan.
"""

from __future__ import annotations

import logging
import uuid
from contextvars import ContextVar

from starlette.types import ASGIApp, Message, Receive, Scope, Send

HEADER = b"x-request-id"
MAX_LEN = 128
NO_REQUEST = "-"

request_id: ContextVar[str] = ContextVar("request_id", default=NO_REQUEST)


def _acceptable(raw: bytes) -> bool:
    return 0 < len(raw) <= MAX_LEN and all(0x21 <= byte <= 0x7E for byte in raw)


class RequestIdMiddleware:
    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        given = next((value for name, value in scope["headers"] if name == HEADER), None)
        rid = given.decode("ascii") if given is not None and _acceptable(given) else uuid.uuid4().hex
        token = request_id.set(rid)
        encoded = rid.encode("ascii")

        async def send_with_id(message: Message) -> None:
            if message["type"] == "http.response.start":
                message["headers"] = [*message.get("headers", []), (HEADER, encoded)]
            await send(message)

        try:
            await self.app(scope, receive, send_with_id)
        finally:
            request_id.reset(token)


class RequestIdFilter(logging.Filter):
    """Adds ``record.request_id`` (the current request's, or ``-``) for the log format."""

    def filter(self, record: logging.LogRecord) -> bool:
        record.request_id = request_id.get()
        return True
