"""Text the database can hold: a NUL character (U+0000) is refused at the door.

PostgreSQL cannot store NUL in a text value and rejects the whole statement when one is bound, which would
surface as a 500 from whichever query first meets it (a login, a search, a save). No person types it, so every
request is checked once, before it is routed (:class:`RefuseNulText`): the path, the query string and a JSON or
form body. Uploaded files (multipart) are not text and are left to their parsers.
"""

import json
from collections.abc import Iterator
from typing import Any

from starlette.datastructures import QueryParams
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from api.errors import Invalid, error_response, field_error

NUL = "\x00"


def _strings(value: Any) -> Iterator[str]:
    """Every string in a parsed JSON value, object keys included."""
    if isinstance(value, str):
        yield value
    elif isinstance(value, dict):
        for key, item in value.items():
            yield key
            yield from _strings(item)
    elif isinstance(value, list):
        for item in value:
            yield from _strings(item)


def _refuse(where: str) -> Invalid:
    return Invalid(
        "文字中不能含有空字符 (text must not contain NUL characters)",
        code="nul_character",
        fields=[field_error([where], "不能含有空字符 U+0000", "nul_character")],
    )


class RefuseNulText:
    """Pure ASGI middleware: ``422 nul_character`` for a request whose text carries U+0000, before routing.

    A middleware rather than an app-wide dependency: FastAPI solving a dependency on every request (its
    sub-dependant, cache key and call) cost ~25 µs of CPU where the check of a path and a query string is
    ~1 µs. A JSON or form body is read whole here (as ``Request.body()`` would have been) and handed on
    unchanged: an endpoint that checks a signature over the raw body reads the same bytes."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        where = _nul_in_target(scope)
        if where is None:
            kind = _text_body(scope)
            if kind is not None:
                body = await _read_body(receive)
                if body is None:
                    return  # the client left before its body ended: no one to answer
                if _nul_in_body(kind, body):
                    where = "body"
                receive = _replay(body, receive)
        if where is not None:
            await error_response(_refuse(where))(scope, receive, send)
            return
        await self.app(scope, receive, send)


def _nul_in_target(scope: Scope) -> str | None:
    """Where in the request line a NUL is: ``path``, ``query`` or None."""
    if NUL in scope.get("path", ""):
        return "path"
    return "query" if _nul_in_urlencoded(scope.get("query_string", b"")) else None


def _nul_in_urlencoded(raw: bytes) -> bool:
    """Whether a query string or form body (``a=1&b=2``) carries a NUL in a name or value once decoded."""
    # A NUL reaches a decoded part only raw or as %00: text with neither (almost all) is not parsed.
    if b"\x00" not in raw and b"%00" not in raw:
        return False
    return any(NUL in part for pair in QueryParams(raw).multi_items() for part in pair)


def _text_body(scope: Scope) -> str | None:
    """``json`` or ``form`` for a body of text to check; None for none (multipart uploads are files)."""
    for name, value in scope.get("headers", ()):
        if name == b"content-type":
            if value.startswith(b"application/json"):
                return "json"
            if value.startswith(b"application/x-www-form-urlencoded"):
                return "form"
            return None
    return None


async def _read_body(receive: Receive) -> bytes | None:
    """The whole request body, or None if the client disconnected before its end."""
    chunks: list[bytes] = []
    while True:
        message = await receive()
        if message["type"] != "http.request":
            return None
        chunks.append(message.get("body", b""))
        if not message.get("more_body", False):
            return b"".join(chunks)


def _replay(body: bytes, receive: Receive) -> Receive:
    """A ``receive`` that gives the body already read, then whatever the client sends next (a disconnect)."""
    given = False

    async def replay() -> Message:
        nonlocal given
        if given:
            return await receive()
        given = True
        return {"type": "http.request", "body": body, "more_body": False}

    return replay


def _nul_in_body(kind: str, raw: bytes) -> bool:
    if kind == "json":
        # JSON can carry a NUL only escaped (control characters are not allowed raw in its strings): a body
        # without that escape needs no parse here, the endpoint parses it once.
        if b"\\u0000" not in raw and b"\x00" not in raw:
            return False
        try:
            body = json.loads(raw)
        except ValueError:
            return False  # not JSON: the endpoint's own validation answers that
        return any(NUL in text for text in _strings(body))
    return _nul_in_urlencoded(raw)
