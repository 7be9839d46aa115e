"""What a care record of each kind holds: checked against the kind's schema and put in its canonical form.

Pure: no I/O. The canonical form (every field of the kind's schema, in JSON types) is what is stored and what
the hash chain hashes, so two equal records always hash alike.
"""

from datetime import date
from typing import Any

from pydantic import ValidationError

from api.errors import FieldError, Invalid
from api.models.care import CONTENT_OF, CareKind

# A record is about something that happened; one dated before this is a typing error, not a memory.
EARLIEST = date(2000, 1, 1)


def canonical_content(kind: CareKind, raw: Any, *, loc: tuple[str, ...] = ("body", "content")) -> dict[str, Any]:
    """The content of a record of ``kind`` in canonical form; ``Invalid`` (422, ``invalid_content``) naming
    each wrong field otherwise."""
    schema = CONTENT_OF[kind]
    if not isinstance(raw, dict):
        raise _invalid([FieldError(loc=list(loc), message="内容应为对象 (content must be an object)", type="type")])
    try:
        parsed = schema.model_validate(raw)
    except ValidationError as exc:
        raise _invalid(
            [
                FieldError(loc=[*loc, *(str(p) for p in error["loc"])], message=error["msg"], type=error["type"])
                for error in exc.errors()
            ]
        ) from None
    content: dict[str, Any] = parsed.model_dump(mode="json")
    return content


def check_occurred_on(day: date, *, today: date, birth_date: date | None, loc: str = "occurred_on") -> date:
    """A record's date is a Shanghai calendar date: today or before, and not before the child was born."""
    if day > today:
        raise _invalid(
            [FieldError(loc=["body", loc], message="日期不能晚于今天 (date in the future)", type="future")],
            code="occurred_in_future",
            message="记录日期不能晚于今天 (the date is in the future)",
        )
    if day < EARLIEST or (birth_date is not None and day < birth_date):
        raise _invalid(
            [FieldError(loc=["body", loc], message="日期早于儿童出生或过早 (date too early)", type="too_early")],
            code="occurred_too_early",
            message="记录日期早于儿童出生日期 (the date is before the child was born)",
        )
    return day


def _invalid(fields: list[FieldError], *, code: str = "invalid_content", message: str | None = None) -> Invalid:
    return Invalid(message or "记录内容有误 (invalid record content)", code=code, fields=fields)
