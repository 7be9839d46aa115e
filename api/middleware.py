"""A pure ASGI middleware around every request: its id, the client address, the security headers, and the
last word on errors nothing else handled.

* Request id: we always mint our own (``X-Request-ID`` on the response, ``request_id`` in error bodies, logs
  and the audit log). A client's ``X-Request-ID`` is kept apart as ``client_request_id`` if it is short and
  plain (``[A-Za-z0-9._-]{1,64}``), else dropped; it is never used as ours.
* Headers on every response: ``Cache-Control: no-store`` (answers carry children's files; a shared or
  browser cache must not keep them) unless the response chose its own caching, ``X-Content-Type-Options:
  nosniff``, ``X-Frame-Options: DENY`` with CSP ``frame-ancestors 'none'`` (the acknowledgement page must not
  be framed into a click trap) and ``Referrer-Policy: no-referrer`` (its URL is a bearer token).
* An exception that reached here is a bug: it answers 500 with the request id in the one error shape, is
  logged once without its message (``api.logs``), and is not re-raised — uvicorn would log it again with
  the message and drop the connection.
"""

import logging
import os
import re

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from api.context import RequestContext, reset_request, set_request
from api.errors import internal_error_response

log = logging.getLogger("liushou.errors")

_VALID_CLIENT_ID = re.compile(r"^[A-Za-z0-9._\-]{1,64}$")

SECURITY_HEADERS: list[tuple[bytes, bytes]] = [
    (b"x-content-type-options", b"nosniff"),
    (b"x-frame-options", b"DENY"),
    (b"referrer-policy", b"no-referrer"),
]
FRAME_ANCESTORS = b"frame-ancestors 'none'"


def new_request_id() -> str:
    """32 random hex digits (as a UUID4's hex was, without building the UUID on every request)."""
    return os.urandom(16).hex()


def client_request_id(raw: bytes) -> str | None:
    """The client's own request id if it is short and plain, else None."""
    value = raw.decode("latin-1")
    return value if _VALID_CLIENT_ID.match(value) else None


def _with_security_headers(headers: list[tuple[bytes, bytes]], request_id: str) -> list[tuple[bytes, bytes]]:
    names = {name.lower() for name, _ in headers}
    out = [(n, v) for n, v in headers if n.lower() not in (b"x-request-id", b"content-security-policy")]
    out.append((b"x-request-id", request_id.encode()))
    out.extend(h for h in SECURITY_HEADERS if h[0] not in names)
    if b"cache-control" not in names:
        out.append((b"cache-control", b"no-store"))
    csp = [v for n, v in headers if n.lower() == b"content-security-policy"]
    if not csp:
        out.append((b"content-security-policy", FRAME_ANCESTORS))
    for value in csp:
        out.append(
            (b"content-security-policy", value if b"frame-ancestors" in value else value + b"; " + FRAME_ANCESTORS)
        )
    return out


class RequestContextMiddleware:
    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        request_id = new_request_id()
        client = scope.get("client")
        headers = dict(scope.get("headers") or [])
        token = set_request(
            RequestContext(
                request_id=request_id,
                client_ip=client[0] if client else None,
                method=scope.get("method"),
                path=scope.get("path"),
                client_request_id=client_request_id(headers.get(b"x-request-id", b"")),
            )
        )
        response_started = False

        async def send_with_headers(message: Message) -> None:
            nonlocal response_started
            if message["type"] == "http.response.start":
                response_started = True
                message["headers"] = _with_security_headers(list(message.get("headers") or []), request_id)
            await send(message)

        try:
            await self.app(scope, receive, send_with_headers)
        except Exception as exc:
            response = internal_error_response(exc)
            if response_started:
                # Too late for an error answer: end here; the client sees an incomplete response.
                return
            await response(scope, receive, send_with_headers)
        finally:
            reset_request(token)
