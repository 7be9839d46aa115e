"""One error shape for the whole API.

Every error answers ``{"error": {"code", "message", "fields", "request_id"}}``: ``code`` is stable and
machine-readable, ``message`` is for people (Chinese first where a clerk or parent reads it).
"""

import logging
import traceback
from typing import Any

import asyncpg
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import BaseModel
from sqlalchemy import exc as sa_exc
from starlette.exceptions import HTTPException as StarletteHTTPException

from api.context import current_request
from api.logs import describe_exception, safe_traceback

log = logging.getLogger("liushou.errors")


class FieldError(BaseModel):
    loc: list[str | int]
    message: str
    type: str


class ErrorBody(BaseModel):
    code: str
    message: str
    fields: list[FieldError] = []
    request_id: str | None = None


class ErrorResponse(BaseModel):
    error: ErrorBody


class LiushouError(Exception):
    """Base of every error the API answers on purpose."""

    status_code = 400
    code = "bad_request"
    message = "请求无效 (bad request)"

    def __init__(
        self,
        message: str | None = None,
        *,
        code: str | None = None,
        fields: list[FieldError] | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        self.message = message or self.message
        self.code = code or self.code
        self.fields = fields or []
        self.headers = headers
        super().__init__(self.message)


class NotFound(LiushouError):
    status_code = 404
    code = "not_found"
    message = "找不到该资源 (not found)"


class Unauthorized(LiushouError):
    status_code = 401
    code = "unauthorized"
    message = "需要登录 (authentication required)"

    def __init__(self, message: str | None = None, *, code: str | None = None) -> None:
        super().__init__(message, code=code, headers={"WWW-Authenticate": "Bearer"})


class Forbidden(LiushouError):
    status_code = 403
    code = "forbidden"
    message = "无权执行此操作 (forbidden)"


class Conflict(LiushouError):
    status_code = 409
    code = "conflict"
    message = "与现有数据冲突 (conflict)"


class Invalid(LiushouError):
    status_code = 422
    code = "validation_error"
    message = "输入有误 (invalid input)"


class TooManyRequests(LiushouError):
    status_code = 429
    code = "too_many_requests"
    message = "请求过于频繁，请稍后再试 (too many requests)"


class ServiceUnavailable(LiushouError):
    """503 with ``Retry-After``: nothing was done, the same request may be sent again later. Providers retry
    a callback answered so (a 500 they may give up on)."""

    status_code = 503
    code = "service_unavailable"
    message = "服务暂时不可用，请稍后重试 (service unavailable, retry later)"
    retry_after = 5

    def __init__(
        self,
        message: str | None = None,
        *,
        code: str | None = None,
        retry_after: int | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(
            message, code=code, headers={"Retry-After": str(retry_after or self.retry_after), **(headers or {})}
        )


class UpstreamUnavailable(ServiceUnavailable):
    code = "upstream_unavailable"
    message = "外部服务暂时不可用，请稍后再试 (upstream service unavailable)"


class DatabaseUnavailable(ServiceUnavailable):
    """The database cannot be reached (down, restarting, no connection to be had): retry in a few seconds.
    Raise it (or :class:`DatabaseBusy`) wherever a database failure should tell the client to come back."""

    code = "database_unavailable"
    message = "数据库暂时不可用，请稍后重试 (database unavailable, retry later)"
    retry_after = 5


class DatabaseBusy(DatabaseUnavailable):
    """The transaction lost a race (serialization failure, deadlock, lock or statement timeout) and was
    rolled back: sending the same request again is safe and likely to work at once."""

    code = "database_busy"
    message = "系统繁忙，请稍后重试 (busy, retry)"
    retry_after = 1


def error_responses(*status_codes: int) -> dict[int | str, dict[str, Any]]:
    """OpenAPI ``responses=`` entries documenting the error shape for the given status codes."""
    return {code: {"model": ErrorResponse} for code in status_codes}


def field_error(loc: list[str | int], message: str, type_: str) -> FieldError:
    return FieldError(loc=loc, message=message, type=type_)


def _body(code: str, message: str, fields: list[FieldError] | None = None) -> dict[str, Any]:
    ctx = current_request()
    return ErrorResponse(
        error=ErrorBody(code=code, message=message, fields=fields or [], request_id=ctx.request_id if ctx else None)
    ).model_dump()


_HTTP_CODES = {
    400: "bad_request",
    401: "unauthorized",
    403: "forbidden",
    404: "not_found",
    405: "method_not_allowed",
    406: "not_acceptable",
    413: "payload_too_large",
    415: "unsupported_media_type",
}


# SQLSTATEs (https://www.postgresql.org/docs/current/errcodes-appendix.html) and what they tell the client.
_UNAVAILABLE_STATES = {"57P01", "57P02", "57P03", "53300", "53400"}  # shutdown, crash, starting, connections
_BUSY_STATES = {"40001", "40P01", "55P03", "57014"}  # serialization, deadlock, lock timeout, statement timeout
_CONFLICT_STATES = {"23505", "23503", "23P01", "23514"}  # unique, foreign key, exclusion, check
_DRIVER_MODULES = ("sqlalchemy", "asyncpg")


def _chain(exc: BaseException) -> list[BaseException]:
    seen: list[BaseException] = []
    current: BaseException | None = exc
    while current is not None and not any(current is s for s in seen) and len(seen) < 10:
        seen.append(current)
        current = getattr(current, "orig", None) or current.__cause__ or current.__context__
    return seen


def _raised_by_driver(exc: BaseException) -> bool:
    return any(
        any(f"/{m}/" in frame.filename for m in _DRIVER_MODULES) for frame in traceback.extract_tb(exc.__traceback__)
    )


def database_error(exc: BaseException) -> LiushouError | None:
    """What a database failure means to the client, or None if it is not one we can name (a bug: 500).

    Lost connections and a database that is down or starting answer 503 ``database_unavailable``; a lost
    race answers 503 ``database_busy`` (both with ``Retry-After``); a constraint that the data broke (a
    deferred one at commit, say) 409 ``conflict``; a value the driver or the database cannot take 422.
    """
    for e in _chain(exc):
        state = getattr(e, "sqlstate", None)
        if isinstance(e, sa_exc.DBAPIError) and e.connection_invalidated:
            return DatabaseUnavailable()
        if isinstance(e, sa_exc.TimeoutError):  # no pooled connection to be had in time
            return DatabaseUnavailable()
        if isinstance(state, str):
            if state.startswith("08") or state in _UNAVAILABLE_STATES:
                return DatabaseUnavailable()
            if state in _BUSY_STATES:
                return DatabaseBusy()
            if state in _CONFLICT_STATES:
                return Conflict()
            if state.startswith("22"):
                return Invalid("输入的值无法处理 (a value is out of range or malformed)", code="invalid_value")
        if isinstance(e, asyncpg.exceptions.InterfaceError):
            if isinstance(e, ValueError):  # the driver's DataError: a value it cannot encode (int64 overflow)
                return Invalid("输入的值无法处理 (a value is out of range or malformed)", code="invalid_value")
            if "connection is closed" in str(e) or "connection was closed" in str(e):
                return DatabaseUnavailable()
        if isinstance(e, ConnectionError | TimeoutError) or (isinstance(e, OSError) and _raised_by_driver(e)):
            return DatabaseUnavailable()
    return None


def internal_error_response(exc: BaseException) -> JSONResponse:
    """The answer to an error no one handled: 500 with the request id, logged without its message (the
    message of a database error quotes the data; see ``api.logs``)."""
    log.error("unhandled error: %s\n%s", describe_exception(exc), safe_traceback(exc))
    return JSONResponse(_body("internal_error", "服务器内部错误 (internal error)"), status_code=500)


def error_response(exc: LiushouError) -> JSONResponse:
    """The answer to one of our errors: its status, the one error shape (with the request id), its headers."""
    return JSONResponse(_body(exc.code, exc.message, exc.fields), status_code=exc.status_code, headers=exc.headers)


def install_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(LiushouError)
    async def _liushou(_: Request, exc: LiushouError) -> JSONResponse:
        return error_response(exc)

    @app.exception_handler(RequestValidationError)
    async def _validation(_: Request, exc: RequestValidationError) -> JSONResponse:
        fields = []
        for err in exc.errors():
            loc = [p if isinstance(p, int) else str(p) for p in err.get("loc", ())]
            fields.append(FieldError(loc=loc, message=str(err.get("msg", "")), type=str(err.get("type", ""))))
        return JSONResponse(_body("validation_error", "输入有误 (invalid input)", fields), status_code=422)

    @app.exception_handler(StarletteHTTPException)
    async def _http(_: Request, exc: StarletteHTTPException) -> JSONResponse:
        code = _HTTP_CODES.get(exc.status_code, f"http_{exc.status_code}")
        return JSONResponse(
            _body(code, str(exc.detail)), status_code=exc.status_code, headers=getattr(exc, "headers", None)
        )

    async def _database(_: Request, exc: Exception) -> JSONResponse:
        mapped = database_error(exc)
        if mapped is None:
            return internal_error_response(exc)
        log.warning("database error answered %d %s: %s", mapped.status_code, mapped.code, describe_exception(exc))
        return error_response(mapped)

    # Anything else reaches api.middleware, which answers 500 (Starlette's own last-resort handler would
    # answer without our request id, and re-raise to the server, which logs the message and drops the line).
    for kind in (sa_exc.SQLAlchemyError, asyncpg.exceptions.PostgresError, asyncpg.exceptions.InterfaceError, OSError):
        app.add_exception_handler(kind, _database)


_METHODS = ("get", "put", "post", "delete", "patch", "head", "options")
_DESCRIPTIONS = {
    400: "Malformed body: bytes that cannot be read as this body (bad_request)",
    401: "Not signed in, or the token is invalid, expired or revoked",
    403: "Signed in, but this role (or this account) may not do it",
    422: "Invalid input: `fields` says which and why",
    503: "Database or provider unavailable, or busy: retry after `Retry-After` seconds",
}


def document_errors(schema: dict[str, Any]) -> dict[str, Any]:
    """Add to every operation of an OpenAPI schema the errors the plumbing answers, in the one error shape:
    401 where it needs a token, 403 where it also needs a role, 422 where it takes parameters or a body,
    400 where it takes a body (bytes that cannot be read as that body), 503 everywhere (database unavailable or
    busy). Routers document only the errors of their own (404, 409, …); these follow from the dependencies, so a
    new endpoint gets them."""
    schemas = schema.setdefault("components", {}).setdefault("schemas", {})
    if "ErrorResponse" not in schemas:
        from pydantic.json_schema import models_json_schema

        _, defs = models_json_schema([(ErrorResponse, "serialization")], ref_template="#/components/schemas/{model}")
        schemas.update(defs.get("$defs", {}))
    ref = {"application/json": {"schema": {"$ref": "#/components/schemas/ErrorResponse"}}}
    for item in schema.get("paths", {}).values():
        for method, operation in item.items():
            if method not in _METHODS:
                continue
            security = operation.get("security") or []
            body_types = operation.get("requestBody", {}).get("content", {})
            wanted = {503}
            if security:
                wanted.add(401)
            if any(scopes for requirement in security for scopes in requirement.values()):
                wanted.add(403)
            if operation.get("parameters") or body_types:
                wanted.add(422)
            if body_types:
                wanted.add(400)
            responses = operation.setdefault("responses", {})
            for status in sorted(wanted):
                entry = responses.setdefault(str(status), {})
                entry.setdefault("description", _DESCRIPTIONS[status])
                if status == 422 or "content" not in entry:
                    # FastAPI documents its own 422 body (HTTPValidationError); ours is the one error shape.
                    entry["content"] = ref
                if status == 422 and entry.get("description") == "Validation Error":
                    entry["description"] = _DESCRIPTIONS[422]
    return schema
