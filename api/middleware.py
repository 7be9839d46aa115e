"""A pure ASGI middleware that gives each request an id (``X-Request-ID``) and records the client address."""

import re
import uuid

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from api.context import RequestContext, reset_request, set_request

_VALID_ID = re.compile(r"^[A-Za-z0-9._\-]{1,64}$")


class RequestContextMiddleware:
    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        incoming = dict(scope.get("headers") or []).get(b"x-request-id", b"").decode("latin-1")
        request_id = incoming if _VALID_ID.match(incoming) else uuid.uuid4().hex
        client = scope.get("client")
        token = set_request(
            RequestContext(
                request_id=request_id,
                client_ip=client[0] if client else None,
                method=scope.get("method"),
                path=scope.get("path"),
            )
        )

        async def send_with_id(message: Message) -> None:
            if message["type"] == "http.response.start":
                message.setdefault("headers", [])
                message["headers"] = [*message["headers"], (b"x-request-id", request_id.encode())]
            await send(message)

        try:
            await self.app(scope, receive, send_with_id)
        finally:
            reset_request(token)
