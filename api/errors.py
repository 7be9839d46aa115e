"""One error shape for the whole API.

Every error answers ``{"error": {"code", "message", "fields", "request_id"}}``: ``code`` is stable and
machine-readable, ``message`` is for people (Chinese first where a clerk or parent reads it).
"""

import logging
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import BaseModel
from starlette.exceptions import HTTPException as StarletteHTTPException

from api.context import current_request

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


class UpstreamUnavailable(LiushouError):
    status_code = 503
    code = "upstream_unavailable"
    message = "外部服务暂时不可用，请稍后再试 (upstream service unavailable)"


class Busy(LiushouError):
    """The rows this request needs are held by other work longer than we wait; retrying shortly works."""

    status_code = 503
    code = "busy_retry"
    message = "正在处理同一事件的其他操作，请稍后重试 (busy, retry shortly)"

    def __init__(self, message: str | None = None, *, retry_after: int = 1) -> None:
        super().__init__(message, headers={"Retry-After": str(retry_after)})


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


def install_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(LiushouError)
    async def _liushou(_: Request, exc: LiushouError) -> JSONResponse:
        return JSONResponse(_body(exc.code, exc.message, exc.fields), status_code=exc.status_code, headers=exc.headers)

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

    @app.exception_handler(Exception)
    async def _unexpected(_: Request, exc: Exception) -> JSONResponse:
        # Logged with the request id only; the message may hold personal data so it is not echoed.
        log.exception("unhandled error")
        return JSONResponse(_body("internal_error", "服务器内部错误 (internal error)"), status_code=500)
