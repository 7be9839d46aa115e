"""The rhythm of care work as data: each school's rules (谈心 monthly, 家访 期初/期中/期末 …), its term
calendar with holidays, and the bookkeeping of the weekly digest and of the leaders' overdue alerts.

A school without rule rows follows :data:`DEFAULT_RULES` (DOMAIN.md's defaults); a row overrides one kind.
What the rules mean — periods, done, due and overdue — is in :mod:`api.services.care.rules`.
"""

import uuid
from dataclasses import dataclass
from datetime import date, datetime
from enum import StrEnum
from typing import Self

import sqlalchemy as sa
from pydantic import BaseModel, ConfigDict, model_validator
from sqlalchemy.dialects.postgresql import ExcludeConstraint
from sqlmodel import Field, SQLModel

from api.models.base import audited, enum_type, fk_field, id_field, timestamp_field
from api.models.care import CareRecord
from api.models.row_security import Policy, of_school, row_security


class RhythmKind(StrEnum):
    """What a rule asks to be done for each left-behind child."""

    talk = "talk"  # 谈心 (谈心记录卡)
    home_visit = "home_visit"  # 家访
    guardian_contact = "guardian_contact"  # 与委托监护人沟通
    family_call = "family_call"  # 亲情电话 (the child talks with the parents away)


RHYTHM_LABELS = {
    RhythmKind.talk: "谈心",
    RhythmKind.home_visit: "家访",
    RhythmKind.guardian_contact: "监护人沟通",
    RhythmKind.family_call: "亲情电话",
}


class Cadence(StrEnum):
    """How often: calendar weeks (Mon–Sun), fortnights, calendar months (Asia/Shanghai dates), or the start,
    middle and end thirds of each term (期初、期中、期末)."""

    weekly = "weekly"  # 每周
    fortnightly = "fortnightly"  # 每两周
    monthly = "monthly"  # 每月
    term_points = "term_points"  # 每学期期初、期中、期末


CADENCE_LABELS = {
    Cadence.weekly: "每周",
    Cadence.fortnightly: "每两周",
    Cadence.monthly: "每月",
    Cadence.term_points: "期初、期中、期末",
}

DEFAULT_INCIDENT_DAYS = 30


@dataclass(frozen=True)
class RuleSpec:
    """A rule as the services read it: the default, or a school's own row. ``strict_cadence`` is for children
    flagged special (特困, 单亲, 个别教育) or with an incident in the last ``incident_days`` days."""

    kind: RhythmKind
    cadence: Cadence
    strict_cadence: Cadence
    incident_days: int = DEFAULT_INCIDENT_DAYS
    is_active: bool = True


DEFAULT_RULES: dict[RhythmKind, RuleSpec] = {
    RhythmKind.talk: RuleSpec(kind=RhythmKind.talk, cadence=Cadence.monthly, strict_cadence=Cadence.fortnightly),
    RhythmKind.home_visit: RuleSpec(
        kind=RhythmKind.home_visit, cadence=Cadence.term_points, strict_cadence=Cadence.monthly
    ),
    RhythmKind.guardian_contact: RuleSpec(
        kind=RhythmKind.guardian_contact, cadence=Cadence.monthly, strict_cadence=Cadence.fortnightly
    ),
    RhythmKind.family_call: RuleSpec(
        kind=RhythmKind.family_call, cadence=Cadence.weekly, strict_cadence=Cadence.weekly
    ),
}


@audited("care_rule")
class CareRule(SQLModel, table=True):
    """A school's own version of one rule (no row: the default)."""

    __tablename__ = "care_rule"
    __table_args__ = (
        sa.UniqueConstraint("school_id", "kind", name="uq_care_rule_school_kind"),
        sa.CheckConstraint("incident_days BETWEEN 0 AND 365", name="incident_days"),
    )

    id: uuid.UUID = id_field()
    school_id: uuid.UUID = fk_field("school.id", index=False)
    kind: RhythmKind = Field(sa_type=enum_type(RhythmKind, 24))
    cadence: Cadence = Field(sa_type=enum_type(Cadence, 16))
    strict_cadence: Cadence = Field(sa_type=enum_type(Cadence, 16))
    incident_days: int = Field(default=DEFAULT_INCIDENT_DAYS)
    is_active: bool = Field(default=True)
    updated_at: datetime = timestamp_field(default_now=True)
    updated_by_id: uuid.UUID | None = fk_field("account.id", nullable=True, index=False)


@audited("school_term")
class SchoolTerm(SQLModel, table=True):
    """学期: a term of one school; terms of a school never overlap (the database refuses it)."""

    __tablename__ = "school_term"
    __table_args__ = (
        sa.CheckConstraint("ends_on >= starts_on", name="dates"),
        ExcludeConstraint(
            (sa.column("school_id"), "="),
            (sa.func.daterange(sa.column("starts_on"), sa.column("ends_on"), sa.literal_column("'[]'")), "&&"),
            name="ex_school_term_overlap",
            using="gist",
        ),
    )

    id: uuid.UUID = id_field()
    school_id: uuid.UUID = fk_field("school.id")
    name: str = Field(max_length=64, description="e.g. 2026年秋季学期")
    starts_on: date
    ends_on: date
    created_at: datetime = timestamp_field(default_now=True)


@audited("school_holiday")
class SchoolHoliday(SQLModel, table=True):
    """A holiday inside (or beside) a term — 国庆, 春节 — when weekly and monthly rules pause."""

    __tablename__ = "school_holiday"
    __table_args__ = (sa.CheckConstraint("ends_on >= starts_on", name="dates"),)

    id: uuid.UUID = id_field()
    school_id: uuid.UUID = fk_field("school.id")
    name: str = Field(max_length=64, description="e.g. 国庆节")
    starts_on: date
    ends_on: date
    created_at: datetime = timestamp_field(default_now=True)


class CareDigestRun(SQLModel, table=True):
    """A school's weekly digest that was queued (one row per school and ISO week): the worker looks for schools
    without this week's row. The messages themselves are deduplicated by the outbox."""

    __tablename__ = "care_digest_run"

    school_id: uuid.UUID = Field(foreign_key="school.id", primary_key=True)
    week_start: date = Field(primary_key=True, description="the Monday of the ISO week (Asia/Shanghai)")
    finished_at: datetime = timestamp_field()
    digests: int = Field(default=0)
    flagged: int = Field(default=0)


class CareOverdueFlag(SQLModel, table=True):
    """An item overdue by more than a week, told to the school's leaders once: one row per child, rule and
    period, so the same missed period is never flagged twice."""

    __tablename__ = "care_overdue_flag"
    __table_args__ = (sa.UniqueConstraint("child_id", "kind", "due_on", name="uq_care_overdue_flag_item"),)

    id: uuid.UUID = id_field()
    school_id: uuid.UUID = fk_field("school.id")
    child_id: uuid.UUID = fk_field("child.id", index=False)
    kind: RhythmKind = Field(sa_type=enum_type(RhythmKind, 24))
    due_on: date
    flagged_at: datetime = timestamp_field()


# The family-call rule probes, for every child and week, whether a call or video with the parents was recorded:
# an index of exactly those records answers from the index alone (the general one would read each record's
# content for its channel). On care_record (api/models/care.py), declared here beside the rule that needs it.
def call_records_where(table: str = "") -> str:
    """The records of calls and videos with the parents (constants: the planner matches the partial index)."""
    at = f"{table}." if table else ""
    return f"{at}kind = 'parent_contact' AND ({at}content ->> 'channel') IN ('phone', 'video')"


sa.Index(
    "ix_care_record_calls",
    CareRecord.__table__.c.school_id,  # type: ignore[attr-defined]
    CareRecord.__table__.c.child_id,  # type: ignore[attr-defined]
    CareRecord.__table__.c.occurred_on,  # type: ignore[attr-defined]
    postgresql_where=sa.text(call_records_where()),
)


# ---- row-level security (api/models/row_security.py) ----
# All of it is the school's: its staff and those above it read the rules and the calendar (only school admins
# change them, in the service); the digest's runs and flags are written by the worker as the system.
for _table in ("care_rule", "school_term", "school_holiday", "care_digest_run", "care_overdue_flag"):
    row_security(_table, Policy("staff", using=of_school()))


# ---- API schemas -------------------------------------------------------------------------------------------


class RulePublic(BaseModel):
    kind: RhythmKind
    label: str
    cadence: Cadence
    cadence_label: str
    strict_cadence: Cadence
    incident_days: int
    is_active: bool
    is_default: bool


class RuleUpdate(BaseModel):
    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={"examples": [{"cadence": "fortnightly", "strict_cadence": "weekly", "incident_days": 30}]},
    )

    cadence: Cadence
    strict_cadence: Cadence | None = Field(default=None, description="null: the same as cadence")
    incident_days: int = Field(default=DEFAULT_INCIDENT_DAYS, ge=0, le=365)
    is_active: bool = True


class DateSpan(BaseModel):
    model_config = ConfigDict(extra="forbid", str_strip_whitespace=True)

    name: str = Field(min_length=1, max_length=64)
    starts_on: date
    ends_on: date

    @model_validator(mode="after")
    def _ordered(self) -> Self:
        if self.ends_on < self.starts_on:
            raise ValueError("结束日期早于开始日期 (ends_on is before starts_on)")
        if (self.ends_on - self.starts_on).days > 366:
            raise ValueError("时间跨度超过一年 (a span is at most a year)")
        if self.starts_on.year < 2000 or self.ends_on.year > 2100:
            raise ValueError("日期超出范围 (dates between 2000 and 2100)")
        return self


class TermCreate(DateSpan):
    model_config = ConfigDict(
        json_schema_extra={"examples": [{"name": "2026年秋季学期", "starts_on": "2026-09-01", "ends_on": "2027-01-20"}]}
    )


class HolidayCreate(DateSpan):
    model_config = ConfigDict(
        json_schema_extra={"examples": [{"name": "国庆节", "starts_on": "2026-10-01", "ends_on": "2026-10-07"}]}
    )


class SpanPublic(BaseModel):
    id: uuid.UUID
    name: str
    starts_on: date
    ends_on: date


class CalendarPublic(BaseModel):
    school_id: uuid.UUID
    terms: list[SpanPublic]
    holidays: list[SpanPublic]


class TodoEntry(BaseModel):
    """One thing to do for one child: a rule overdue (since its earliest missed period) or due within a week."""

    child_id: uuid.UUID
    child_name: str
    class_id: uuid.UUID | None
    class_label: str | None
    kind: RhythmKind
    label: str = Field(description="谈心 / 家访 / 监护人沟通 / 亲情电话")
    status: str = Field(description="overdue (已逾期) | due (待完成)")
    days: int = Field(description="overdue: days late; due: days left")
    due_on: date
    period: str = Field(description="the period asked for, e.g. 2026-11, 2026-W48, 2026年秋季学期 期中")
    missed: int = Field(description="periods missed since the last done one")
    last_done_on: date | None
    teacher_id: uuid.UUID | None = Field(description="the proxy parent, else the head teacher")


class StaffOverdue(BaseModel):
    teacher_id: uuid.UUID | None
    teacher_name: str | None = Field(description="null: no proxy parent and no head teacher (unpaired)")
    overdue: int
    items: list[TodoEntry]


class TodoList(BaseModel):
    today: date
    items: list[TodoEntry] = Field(description="the caller's own children, most urgent first")
    staff: list[StaffOverdue] = Field(description="head teachers and school admins: their staff's overdue items")


class StatusGroup(StrEnum):
    child = "child"
    teacher = "teacher"
    class_ = "class"
    school = "school"


class KindCounts(BaseModel):
    kind: RhythmKind
    done: int
    due: int
    overdue: int
    max_overdue_days: int | None


class StatusRow(BaseModel):
    key: uuid.UUID | None = Field(description="the child, teacher, class or school (null: no teacher / no class)")
    label: str | None
    children: int
    kinds: list[KindCounts]


class StatusReport(BaseModel):
    group: StatusGroup
    starts_on: date
    ends_on: date
    today: date
    rows: list[StatusRow]


class KindCompliance(BaseModel):
    kind: RhythmKind
    expected: int = Field(description="periods due in the span and already past, over all children")
    done: int
    rate: float | None


class CoverageRow(BaseModel):
    """One school (``class_id`` null) or one class of it: what the bureau's statistics read."""

    school_id: uuid.UUID
    school_name: str
    township_id: uuid.UUID
    class_id: uuid.UUID | None
    class_label: str | None
    children: int = Field(description="在册留守儿童")
    paired: int = Field(description="有代理家长的")
    paired_rate: float | None
    special: int = Field(description="特困、单亲或需个别教育的")
    kinds: list[KindCompliance]


class CoverageReport(BaseModel):
    starts_on: date
    ends_on: date
    judged_until: date = Field(description="periods due up to this day are counted (yesterday at most)")
    rows: list[CoverageRow]


class TimelineKind(StrEnum):
    care_record = "care_record"  # 关爱记录 (谈心, 家访 …)
    pairing = "pairing"  # 结对
    pairing_ended = "pairing_ended"  # 结对结束
    status = "status"  # 学籍变动 (转学, 升级, 父母返乡 …)
    archive = "archive"  # 档案变更
    incident = "incident"  # 突发事件
    family_call = "family_call"  # 亲情电话 (a booked call that took place or was missed)
    activity = "activity"  # 关爱活动 the child took part in


class TimelineEntry(BaseModel):
    day: date = Field(description="the day it happened (Asia/Shanghai)")
    at: datetime = Field(description="when it was recorded (Asia/Shanghai)")
    kind: TimelineKind
    sub_kind: str | None = Field(description="the record's kind, the event's kind, the change …")
    label: str
    ref_id: str = Field(description="the record, pairing, event, audit entry or incident to open")
    actor_name: str | None


class TimelinePage(BaseModel):
    data: list[TimelineEntry]
    next_cursor: str | None = Field(description="pass as cursor for the next (older) page; null: no more")
