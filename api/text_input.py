"""Text the database can hold: a NUL character (U+0000) is refused at the door.

PostgreSQL cannot store NUL in a text value and rejects the whole statement when one is bound, which would
surface as a 500 from whichever query first meets it (a login, a search, a save). No person types it, so every
request is checked once, before any endpoint runs: the path, the query string and a JSON or form body. Uploaded
files (multipart) are not text and are left to their parsers.
"""

import json
from collections.abc import Iterator
from typing import Any
from urllib.parse import parse_qsl

from fastapi import Request

from api.errors import Invalid, field_error

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


async def refuse_nul_text(request: Request) -> None:
    """App-wide dependency: 422 ``nul_character`` for a request whose text carries U+0000."""
    if NUL in request.scope.get("path", ""):
        raise _refuse("path")
    if any(NUL in part for pair in request.query_params.multi_items() for part in pair):
        raise _refuse("query")
    content_type = request.headers.get("content-type", "")
    if content_type.startswith("application/json"):
        raw_json = await request.body()
        # JSON can carry a NUL only escaped (control characters are not allowed raw in its strings): a body
        # without that escape needs no parse here, the endpoint parses it once.
        if b"\\u0000" not in raw_json and b"\x00" not in raw_json:
            return
        try:
            body = json.loads(raw_json)
        except ValueError:
            return  # not JSON: the endpoint's own validation answers that
        if any(NUL in text for text in _strings(body)):
            raise _refuse("body")
    elif content_type.startswith("application/x-www-form-urlencoded"):
        try:
            # Read (and so keep) the raw body: an endpoint that checks a signature over it reads it again.
            raw = await request.body()
        except RuntimeError:  # already parsed by FastAPI as the endpoint's form
            form = await request.form()
            parts = [part for pair in form.multi_items() for part in pair if isinstance(part, str)]
        else:
            parts = [
                part for pair in parse_qsl(raw.decode("utf-8", "replace"), keep_blank_values=True) for part in pair
            ]
        if any(NUL in part for part in parts):
            raise _refuse("body")
