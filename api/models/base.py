"""Shared pieces of every table: naming convention, UUID keys, aware UTC timestamps."""

import enum
import uuid
from datetime import UTC, datetime
from typing import Annotated, Any, Generic, TypeVar

import sqlalchemy as sa
from pydantic import AfterValidator, AwareDatetime, BaseModel, ConfigDict, field_validator
from sqlmodel import Field, SQLModel

# Stable constraint names so that Alembic migrations can drop and rename them.
SQLModel.metadata.naming_convention = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}


AUDITED: dict[type, str] = {}


def audited(resource_type: str) -> Any:
    """Class decorator: every insert, update and delete of this table goes to the audit log."""

    def register(cls: type) -> type:
        AUDITED[cls] = resource_type
        return cls

    return register


SENSITIVE = {"info": {"sensitive": True}}

_Row = TypeVar("_Row", bound=SQLModel)
# Per table model: (field, default, default factory) of each optional field.
_ROW_DEFAULTS: dict[type, tuple[list[tuple[str, Any, Any]], Any]] = {}  # defaults, class manager


def new_row(model: type[_Row], **values: Any) -> _Row:
    """A new row of a table model, the same object ``model(**values)`` makes (defaults filled in, nothing
    validated: SQLModel never validates table models) for a tenth of the CPU. The constructor sets each field
    through SQLAlchemy's attribute events and pydantic's ``__setattr__`` (some 10 µs a field); a new object
    has no history to record, so the values go straight into its ``__dict__``, where the ORM (an INSERT when
    the row is added to a session) and pydantic read them. Used where requests create rows by the dozen."""
    known = _ROW_DEFAULTS.get(model)
    if known is None:
        known = _ROW_DEFAULTS[model] = (
            [
                (name, field.default, field.default_factory)
                for name, field in model.model_fields.items()
                if not field.is_required()
            ],
            sa.inspect(model).class_manager,
        )
    defaults, manager = known
    fields_set = set(values)
    for name, default, factory in defaults:
        if name not in values:
            values[name] = factory() if factory is not None else default
    obj: _Row = manager.new_instance()
    obj.__dict__.update(values)
    object.__setattr__(obj, "__pydantic_fields_set__", fields_set)
    return obj


class StrEnumType(sa.types.TypeDecorator[enum.StrEnum]):
    """A ``StrEnum`` stored as ``varchar(n)`` that loads back as the enum (a plain String would give str)."""

    impl = sa.String
    cache_ok = True

    def __init__(self, enum_class: type[enum.StrEnum], length: int) -> None:
        super().__init__(length)
        self.enum_class = enum_class

    def process_bind_param(self, value: Any, dialect: Any) -> str | None:
        return None if value is None else self.enum_class(value).value

    def process_result_value(self, value: Any, dialect: Any) -> enum.StrEnum | None:
        return None if value is None else self.enum_class(value)


def enum_type(enum_class: type[enum.StrEnum], length: int) -> Any:
    """Column type for a ``StrEnum`` field: ``Field(sa_type=enum_type(Role, 32))``."""
    return StrEnumType(enum_class, length)


def utcnow() -> datetime:
    return datetime.now(UTC)


def id_field() -> Any:
    return Field(default_factory=uuid.uuid4, primary_key=True)


def timestamp_field(*, nullable: bool = False, index: bool = False, default_now: bool = False) -> Any:
    """A ``timestamptz`` column (a plain datetime field would be ``timestamp without time zone``)."""
    kwargs: dict[str, Any] = {}
    if default_now:
        kwargs["default_factory"] = utcnow
    elif nullable:
        kwargs["default"] = None
    return Field(sa_type=sa.DateTime(timezone=True), nullable=nullable, index=index, **kwargs)


def fk_field(target: str, *, nullable: bool = False, index: bool = True, ondelete: str = "RESTRICT") -> Any:
    kwargs: dict[str, Any] = {"default": None} if nullable else {}
    return Field(foreign_key=target, nullable=nullable, index=index, ondelete=ondelete, **kwargs)  # type: ignore[call-overload]


class FormInput(BaseModel):
    """Form input as people type it: surrounding spaces (also full-width) are dropped, a blank optional field
    means "not filled in", and unknown fields are refused."""

    model_config = ConfigDict(str_strip_whitespace=True, extra="forbid")

    @field_validator("*", mode="before")
    @classmethod
    def _blank_is_none(cls, value: Any) -> Any:
        if isinstance(value, str) and not value.strip():
            return None
        return value


T = TypeVar("T")


class Page(BaseModel, Generic[T]):
    """A page of results with the total count (``XsPublic{data, count}``)."""

    data: list[T]
    count: int


def _on_the_calendar(value: datetime) -> datetime:
    """An instant must still be a date once converted to UTC: year 1 at +19:04 is year 0 in UTC, 9999-12-31 at
    -19:04 is year 10000, and Python and PostgreSQL both fail on those instead of refusing them."""
    if value.tzinfo is not None:
        try:
            value.astimezone(UTC)
        except OverflowError:
            raise ValueError("时间超出日历范围 (instant out of range)") from None
    return value


# Datetimes a client sends (query filters, body fields): refused with 422 when they fall off the calendar in UTC.
Instant = Annotated[datetime, AfterValidator(_on_the_calendar)]
AwareInstant = Annotated[AwareDatetime, AfterValidator(_on_the_calendar)]
