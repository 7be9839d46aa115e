"""Our SMS and voice provider contract (docs/providers.md), the parts both fakes share: the error body, the API
key, and the failures a test scripts for a number."""

from __future__ import annotations

import re

from fastapi.responses import JSONResponse, Response

from api.channels.fakes.scripts import NumberScript
from api.channels.fakes.state import Fake

_E164 = re.compile(r"^\+?[1-9]\d{5,14}$")


def contract_error(status: int, code: str, message: str, *, retry_after: int | None = None) -> Response:
    headers = {"Retry-After": str(retry_after)} if retry_after is not None else None
    return JSONResponse({"error": {"code": code, "message": message}}, status_code=status, headers=headers)


def check_api_key(authorization: str | None, expected: str) -> Response | None:
    if authorization != f"Bearer {expected}":
        return contract_error(401, "unauthorized", "missing or wrong API key")
    return None


def scripted_refusal(fake: Fake, channel: str, to: str, script: NumberScript | None) -> Response | None:
    """Apply a number's scripted failures to a new (not replayed) request."""
    if not _E164.match(to):
        fake.state.attempts.append({"channel": channel, "to": to, "outcome": "invalid_number"})
        return contract_error(400, "invalid_number", "not a valid E.164 number")
    if script is None:
        return None
    if script.temporary_failures > 0:
        script.temporary_failures -= 1
        fake.state.attempts.append({"channel": channel, "to": to, "outcome": "temporary_error"})
        code = "rate_limited" if script.temporary_status == 429 else "provider_unavailable"
        return contract_error(script.temporary_status, code, "scripted failure", retry_after=script.retry_after)
    if script.permanent_error is not None:
        fake.state.attempts.append({"channel": channel, "to": to, "outcome": script.permanent_error})
        return contract_error(400, script.permanent_error, "scripted failure")
    return None
