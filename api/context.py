"""Per-request context (request id, client address) carried in contextvars for logs and the audit trail."""

from contextvars import ContextVar
from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class RequestContext:
    # Ours, minted for every request; the client's own id (``X-Request-ID``, if well-formed) is kept apart
    # and never taken for ours: two clients could send the same one, or forge another request's.
    request_id: str
    client_ip: str | None
    method: str | None = None
    path: str | None = None
    client_request_id: str | None = None


_current: ContextVar[RequestContext | None] = ContextVar("liushou_request", default=None)


def current_request() -> RequestContext | None:
    return _current.get()


def set_request(ctx: RequestContext | None) -> object:
    return _current.set(ctx)


def reset_request(token: object) -> None:
    _current.reset(token)  # type: ignore[arg-type]
