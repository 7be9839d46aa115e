"""Logging that carries the request id and never writes personal data or secrets.

What reaches a log line is decided here, once, for our loggers and uvicorn's:

* every record gets ``request_id`` (ours, minted per request) and ``client_request_id`` (what the client
  sent, bounded) from the request context;
* an exception is written as its types, SQLSTATE and stack frames, never its message: driver and database
  messages quote the values they choke on (``invalid input for query argument $1: '张晓明'``,
  ``Key (phone)=(138…) already exists``) and SQLAlchemy appends the statement's parameters;
* exceptions passed as arguments (``log.warning("… %s", exc)``) are written as their type;
* uvicorn's access log gets the path with every query value and every secret path segment (the token of an
  acknowledgement link) replaced by ``***``: searches are by children's names, links are bearer secrets.

``configure_logging()`` is what the CLI uses (``liushou serve`` hands uvicorn ``log_config=None`` so that it
stays in force); ``install_redaction()`` also puts the access-log and error-log filters on uvicorn's own
loggers, so an app served by a bare ``uvicorn api.main:app`` does not leak either.
"""

import logging
import re
import sys
import traceback
from typing import IO, Any
from urllib.parse import quote, unquote

from api.context import current_request

FORMAT = "%(asctime)s %(levelname)s %(name)s [%(request_id)s] %(message)s"
REDACTED = "***"

# Path segments that are bearer secrets: the segment after these prefixes, and any long segment that is not
# a UUID (signed tokens are long; our ids are UUIDs).
SECRET_PATH_PREFIXES = ("/ack/",)
_UUID = re.compile(r"^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}$")
_LONG_SEGMENT = 32


def redact_target(target: str) -> str:
    """A request target (path and query) fit for a log: query values and secret segments replaced."""
    path, sep, query = target.partition("?")
    segments = path.split("/")
    for prefix in SECRET_PATH_PREFIXES:
        if path.startswith(prefix):
            depth = prefix.count("/") - 1
            segments[depth + 1 :] = [REDACTED] if len(segments) > depth + 1 else []
    segments = [REDACTED if len(unquote(s)) >= _LONG_SEGMENT and not _UUID.match(unquote(s)) else s for s in segments]
    redacted = "/".join(segments)
    if sep:
        names = [part.partition("=")[0] for part in query.split("&") if part]
        redacted += "?" + "&".join(f"{quote(unquote(n), safe='')[:64]}={REDACTED}" for n in names)
    return redacted


def _sqlstate(exc: BaseException) -> str | None:
    for candidate in (exc, getattr(exc, "orig", None)):
        state = getattr(candidate, "sqlstate", None) or getattr(candidate, "pgcode", None)
        if isinstance(state, str):
            return state
    return None


def _chain(exc: BaseException) -> list[BaseException]:
    seen: list[BaseException] = []
    current: BaseException | None = exc
    while current is not None and not any(current is s for s in seen) and len(seen) < 10:
        seen.append(current)
        current = current.__cause__ or (None if current.__suppress_context__ else current.__context__)
    return seen


def describe_exception(exc: BaseException) -> str:
    """One line: the exception's type and SQLSTATE, and those of its causes. No message."""
    parts = []
    for e in _chain(exc):
        state = _sqlstate(e)
        parts.append(f"{type(e).__module__}.{type(e).__qualname__}" + (f" [sqlstate {state}]" if state else ""))
    return " <- ".join(parts)


def safe_traceback(exc: BaseException) -> str:
    """Where it happened: each exception of the chain as type and SQLSTATE, with its stack frames (file, line,
    function and the code line) — the code, not the data."""
    blocks = []
    for e in reversed(_chain(exc)):
        frames = "".join(traceback.format_list(traceback.extract_tb(e.__traceback__)))
        state = _sqlstate(e)
        head = f"{type(e).__module__}.{type(e).__qualname__}" + (f" [sqlstate {state}]" if state else "")
        blocks.append(f"Traceback (most recent call last):\n{frames}{head} (message withheld)")
    return "\n\nThe above led to:\n\n".join(blocks)


class RequestIdFilter(logging.Filter):
    """Adds ``request_id`` and ``client_request_id`` ("-" outside a request) to every record."""

    def filter(self, record: logging.LogRecord) -> bool:
        ctx = current_request()
        if not getattr(record, "request_id", None):
            record.request_id = ctx.request_id if ctx else "-"
        if not getattr(record, "client_request_id", None):
            record.client_request_id = (ctx.client_request_id if ctx else None) or "-"
        return True


class RedactingFilter(logging.Filter):
    """Strips what may hold personal data from a record before any handler writes it (see the module doc)."""

    def filter(self, record: logging.LogRecord) -> bool:
        if getattr(record, "liushou_redacted", False):
            return True  # already cleaned by the logger's own filter (install_redaction) before the handler's
        record.liushou_redacted = True
        if record.exc_info and record.exc_info[1] is not None:
            record.exc_text = safe_traceback(record.exc_info[1])
            record.exc_info = None
        elif record.exc_info:
            record.exc_info = None
        if record.name == "uvicorn.access" and isinstance(record.args, tuple) and len(record.args) >= 3:
            args = list(record.args)
            args[2] = redact_target(str(args[2]))
            record.args = tuple(args)
        elif isinstance(record.args, tuple):
            record.args = tuple(self._plain(a) for a in record.args)
        elif isinstance(record.args, dict):
            record.args = {k: self._plain(v) for k, v in record.args.items()}
        if isinstance(record.msg, BaseException):
            record.msg = describe_exception(record.msg)
        return True

    @staticmethod
    def _plain(value: Any) -> Any:
        return describe_exception(value) if isinstance(value, BaseException) else value


def log_handler(stream: IO[str] | None = None) -> logging.Handler:
    """The handler every log line goes through: request ids added, personal data stripped."""
    handler = logging.StreamHandler(stream or sys.stderr)
    handler.addFilter(RequestIdFilter())
    handler.addFilter(RedactingFilter())
    handler.setFormatter(logging.Formatter(FORMAT))
    return handler


def configure_logging(level: int = logging.INFO, stream: IO[str] | None = None) -> None:
    """Root logging for the CLI and the server: one handler, uvicorn's loggers routed through it."""
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
    root.addHandler(log_handler(stream))
    root.setLevel(level)
    # A record need not find its caller's frame, thread or process: FORMAT prints none of them, and looking
    # them up was a fifth of the cost of the access line every request writes (the logging HOWTO's
    # "Optimization").
    logging._srcfile = None
    logging.logThreads = False
    logging.logProcesses = False
    logging.logMultiprocessing = False
    for name in ("uvicorn", "uvicorn.error", "uvicorn.access"):
        logger = logging.getLogger(name)
        for old in list(logger.handlers):
            logger.removeHandler(old)
        logger.propagate = True
    # httpx logs every request URL at INFO; WeChat URLs carry the app secret, login codes and access tokens.
    logging.getLogger("httpx").setLevel(logging.WARNING)
    logging.getLogger("httpcore").setLevel(logging.WARNING)
    logging.getLogger("pgserver").setLevel(logging.WARNING)
    install_redaction()


def install_redaction() -> None:
    """Put the redacting filter on uvicorn's access and error loggers themselves (once), whatever handlers
    were configured for them: a record logged there is cleaned before any handler sees it."""
    for name in ("uvicorn.access", "uvicorn.error"):
        logger = logging.getLogger(name)
        if not any(isinstance(f, RedactingFilter) for f in logger.filters):
            logger.addFilter(RequestIdFilter())
            logger.addFilter(RedactingFilter())
