"""亲情电话: a school's call lines (the family phone, a video room with booths), their hours, and the calls
parents book on them.

The rules that concurrency could break live in the database itself: a live call holds one booth of its line
over ``[starts_at, blocked_until)`` (the call plus the buffer after it) and no two live calls overlap on one
booth (an exclusion constraint), so a line is never booked beyond its capacity; a child is never in two
overlapping live calls (another exclusion constraint); the weekly quota per child is a counter row raised
by one conditional ``INSERT … ON CONFLICT DO UPDATE … WHERE count < limit``. Calls are never deleted: a
change is a status and an event row; a rescheduled call is a new call linked to the old one.
"""

import uuid
from datetime import date, datetime, time
from enum import StrEnum
from typing import Any, Self

import sqlalchemy as sa
from pydantic import AwareDatetime, BaseModel, model_validator
from pydantic import Field as PydanticField
from sqlalchemy.dialects.postgresql import ARRAY, JSONB, ExcludeConstraint
from sqlmodel import Field, SQLModel

from api.models.base import FormInput, audited, enum_type, fk_field, id_field, timestamp_field
from api.models.row_security import (
    ACCOUNT,
    COUNTY,
    FAMILY_CHILDREN,
    SCHOOLS,
    Policy,
    of_school,
    of_staff_child,
    row_security,
)


class CallLineKind(StrEnum):
    phone = "phone"  # 亲情电话 (a landline)
    video = "video"  # 视频室 (QQ/WeChat video, several booths)


class CallStatus(StrEnum):
    booked = "booked"  # 已预约
    confirmed = "confirmed"  # 学校已确认
    completed = "completed"  # 已通话
    missed = "missed"  # 未接通 / 未到
    cancelled = "cancelled"  # 已取消


LIVE_STATUSES = (CallStatus.booked, CallStatus.confirmed)
LIVE_SQL = "status IN ('booked', 'confirmed')"


class MissedBy(StrEnum):
    family = "family"  # 家长未来电
    child = "child"  # 孩子未到
    line_fault = "line_fault"  # 线路故障


class CancelledBy(StrEnum):
    family = "family"
    school = "school"


class CallEventKind(StrEnum):
    booked = "booked"
    confirmed = "confirmed"
    completed = "completed"
    missed = "missed"
    cancelled = "cancelled"
    rescheduled = "rescheduled"  # on the old call: the new call's id in detail


@audited("family_call_settings")
class FamilyCallSettings(SQLModel, table=True):
    """A school's rules for family calls; a school without a row uses the defaults below."""

    __tablename__ = "family_call_settings"

    school_id: uuid.UUID = Field(foreign_key="school.id", primary_key=True, ondelete="RESTRICT")
    weekly_quota: int = Field(default=2, ge=1, le=50, description="每个孩子每周可预约次数")
    requires_confirmation: bool = Field(default=False, description="预约需学校确认")
    family_cancel_cutoff_minutes: int = Field(default=120, ge=0, le=10080, description="家长最晚提前多久取消")
    reminder_lead_minutes: list[int] = Field(
        default_factory=lambda: [1440, 60], sa_type=ARRAY(sa.Integer()), description="提前多久提醒 (分钟)"
    )
    updated_at: datetime = timestamp_field(default_now=True)


@audited("call_line")
class CallLine(SQLModel, table=True):
    __tablename__ = "call_line"
    __table_args__ = (
        sa.CheckConstraint("capacity BETWEEN 1 AND 50", name="capacity"),
        sa.CheckConstraint("slot_minutes BETWEEN 5 AND 240", name="slot_minutes"),
    )

    id: uuid.UUID = id_field()
    school_id: uuid.UUID = fk_field("school.id")
    name: str = Field(max_length=64, description="亲情电话 / 视频室")
    kind: CallLineKind = Field(sa_type=enum_type(CallLineKind, 8))
    room: str = Field(max_length=64, description="在哪里: 留守儿童之家 …")
    number: str | None = Field(default=None, max_length=32, description="电话号码 / 视频账号 (shown to the family)")
    capacity: int = Field(default=1, description="同时可通话的座位数 (booths)")
    slot_minutes: int = Field(default=15)
    buffer_minutes: int = Field(default=5, ge=0, le=120)
    min_notice_minutes: int = Field(default=120, ge=0, le=20160)
    horizon_days: int = Field(default=14, ge=1, le=90)
    is_active: bool = Field(default=True)
    created_at: datetime = timestamp_field(default_now=True)


class CallLineWindow(SQLModel, table=True):
    """One weekly opening window of a line in Asia/Shanghai; ``ends`` at or before ``starts`` crosses midnight."""

    __tablename__ = "call_line_window"
    __table_args__ = (
        sa.CheckConstraint("weekday BETWEEN 0 AND 6", name="weekday"),
        sa.CheckConstraint("starts <> ends", name="not_empty"),
    )

    id: uuid.UUID = id_field()
    line_id: uuid.UUID = fk_field("call_line.id")
    weekday: int = Field(description="0 = 星期一 … 6 = 星期日")
    starts: time
    ends: time


class CallLineOverride(SQLModel, table=True):
    """The hours of one date, replacing the weekly hours (and festival hours): ``windows`` empty = closed."""

    __tablename__ = "call_line_override"
    __table_args__ = (sa.UniqueConstraint("line_id", "day"),)

    id: uuid.UUID = id_field()
    line_id: uuid.UUID = fk_field("call_line.id", index=False)
    day: date
    windows: list[list[str]] = Field(default_factory=list, sa_type=JSONB, description='[["08:00","09:00"], …]')
    reason: str = Field(max_length=128)
    created_at: datetime = timestamp_field(default_now=True)


class FestivalDay(SQLModel, table=True):
    """A festival hotline day (三八, 六一, 国庆, 中秋, 春节 eves) the county bureau declares once for all its schools:
    every line of every school of the county opens these extra hours that day."""

    __tablename__ = "festival_day"
    __table_args__ = (sa.UniqueConstraint("county_id", "day"),)

    id: uuid.UUID = id_field()
    county_id: uuid.UUID = fk_field("county.id", index=False)
    day: date
    name: str = Field(max_length=32)
    windows: list[list[str]] = Field(default_factory=list, sa_type=JSONB)
    created_at: datetime = timestamp_field(default_now=True)


@audited("family_call")
class FamilyCall(SQLModel, table=True):
    __tablename__ = "family_call"
    __table_args__ = (
        ExcludeConstraint(
            (sa.column("line_id"), "="),
            (sa.column("booth"), "="),
            (sa.func.tstzrange(sa.column("starts_at"), sa.column("blocked_until")), "&&"),
            name="ex_family_call_booth",
            using="gist",
            where=sa.text(LIVE_SQL),
        ),
        ExcludeConstraint(
            (sa.column("child_id"), "="),
            (sa.func.tstzrange(sa.column("starts_at"), sa.column("ends_at")), "&&"),
            name="ex_family_call_child",
            using="gist",
            where=sa.text(LIVE_SQL),
        ),
        sa.CheckConstraint("starts_at < ends_at AND ends_at <= blocked_until", name="times"),
        sa.Index("ix_family_call_school_starts", "school_id", "starts_at"),
        sa.Index("ix_family_call_line_starts", "line_id", "starts_at"),
        sa.Index("ix_family_call_child_starts", "child_id", "starts_at"),
    )

    id: uuid.UUID = id_field()
    line_id: uuid.UUID = fk_field("call_line.id", index=False)
    school_id: uuid.UUID = fk_field("school.id", index=False)
    child_id: uuid.UUID = fk_field("child.id", index=False)
    guardian_id: uuid.UUID | None = fk_field("guardian.id", nullable=True)  # who will call
    booked_by: uuid.UUID = fk_field("account.id", index=False)
    booth: int = Field(default=1)
    starts_at: datetime = timestamp_field()
    ends_at: datetime = timestamp_field()
    blocked_until: datetime = timestamp_field()
    status: CallStatus = Field(sa_type=enum_type(CallStatus, 16))
    rescheduled_from: uuid.UUID | None = fk_field("family_call.id", nullable=True, index=False)
    duration_minutes: int | None = Field(default=None)
    note: str | None = Field(default=None, max_length=500)
    brought_by: str | None = Field(default=None, max_length=32, description="带孩子来的老师")
    missed_by: MissedBy | None = Field(default=None, sa_type=enum_type(MissedBy, 16))
    cancelled_by: CancelledBy | None = Field(default=None, sa_type=enum_type(CancelledBy, 8))
    cancel_reason: str | None = Field(default=None, max_length=256)
    created_at: datetime = timestamp_field()
    updated_at: datetime = timestamp_field()


class FamilyCallEvent(SQLModel, table=True):
    """Every change of a call, appended: who did what and when."""

    __tablename__ = "family_call_event"

    id: uuid.UUID = id_field()
    # Written order: events of one transaction share their time.
    seq: int | None = Field(default=None, sa_column=sa.Column(sa.BigInteger, sa.Identity(), nullable=False))
    call_id: uuid.UUID = fk_field("family_call.id")
    kind: CallEventKind = Field(sa_type=enum_type(CallEventKind, 16))
    at: datetime = timestamp_field()
    account_id: uuid.UUID | None = fk_field("account.id", nullable=True, index=False)
    detail: dict[str, Any] = Field(default_factory=dict, sa_type=JSONB)


class FamilyCallQuota(SQLModel, table=True):
    """Calls booked per child per week (Monday in Asia/Shanghai): raised atomically, lowered on cancellation."""

    __tablename__ = "family_call_quota"

    child_id: uuid.UUID = Field(foreign_key="child.id", primary_key=True, ondelete="RESTRICT")
    week_start: date = Field(primary_key=True)
    count: int = Field(default=0)


class FamilyCallRequest(SQLModel, table=True):
    """A booking's ``Idempotency-Key``: the same key and body from the same account replays the answer."""

    __tablename__ = "family_call_request"

    account_id: uuid.UUID = Field(foreign_key="account.id", primary_key=True, ondelete="RESTRICT")
    key: str = Field(primary_key=True, max_length=128)
    body_hash: str = Field(max_length=64)
    call_id: uuid.UUID | None = fk_field("family_call.id", nullable=True, index=False)
    created_at: datetime = timestamp_field()


# ---- row-level security (api/models/row_security.py) ----
# A school's lines, hours and settings are its staff's; a family reads those of its children's schools (to see
# the lines and book), never writes them. Calls follow the school for staff and the child for families, so a
# family never reads another family's booking: what is taken of a slot, it learns only from
# family_call_holds() (migration 0010), which returns times and booths, never who booked them.
CHILDS_SCHOOL = f"SELECT c.school_id FROM child c WHERE c.id = ANY ({FAMILY_CHILDREN})"


def _of_line(table: str, who: str) -> str:
    return f"EXISTS (SELECT 1 FROM call_line l WHERE l.id = {table}.line_id AND l.school_id {who})"


def _of_call(table: str, which: str) -> str:
    return f"EXISTS (SELECT 1 FROM family_call f WHERE f.id = {table}.call_id AND {which})"


row_security(
    "family_call_settings",
    Policy("staff", using=of_school()),
    Policy("family", command="SELECT", using=f"school_id IN ({CHILDS_SCHOOL})"),
)
row_security(
    "call_line",
    Policy("staff", using=of_school()),
    Policy("family", command="SELECT", using=f"school_id IN ({CHILDS_SCHOOL})"),
)
for _table in ("call_line_window", "call_line_override"):
    row_security(
        _table,
        Policy("staff", using=_of_line(_table, f"= ANY ({SCHOOLS})")),
        Policy("family", command="SELECT", using=_of_line(_table, f"IN ({CHILDS_SCHOOL})")),
    )
row_security(
    "festival_day",
    Policy("staff", using=f"county_id = {COUNTY}"),
    Policy(
        "family",
        command="SELECT",
        using=f"county_id IN (SELECT s.county_id FROM school s WHERE s.id IN ({CHILDS_SCHOOL}))",
    ),
)
row_security(
    "family_call",
    Policy("staff", using=of_school()),
    Policy("family", using=f"child_id = ANY ({FAMILY_CHILDREN})"),
)
row_security(
    "family_call_event",
    Policy("staff", using=_of_call("family_call_event", of_school("f.school_id"))),
    Policy("family", using=_of_call("family_call_event", f"f.child_id = ANY ({FAMILY_CHILDREN})")),
)
row_security(
    "family_call_quota",
    Policy("staff", using=of_staff_child("family_call_quota")),
    Policy("family", using=f"child_id = ANY ({FAMILY_CHILDREN})"),
)
# An Idempotency-Key is its account's own.
row_security("family_call_request", Policy("own", using=f"account_id = {ACCOUNT}"))


# ---- API shapes ----

_HHMM = r"^([01]\d|2[0-3]):[0-5]\d$"


class WindowIn(BaseModel):
    starts: str = PydanticField(pattern=_HHMM, description="HH:MM, Asia/Shanghai")
    ends: str = PydanticField(pattern=_HHMM, description="HH:MM; at or before starts = the next day")

    @model_validator(mode="after")
    def _not_empty(self) -> Self:
        if self.starts == self.ends:
            raise ValueError("开放时段不能为空 (a window cannot start and end at the same time)")
        return self


class WeeklyWindowIn(WindowIn):
    weekday: int = Field(ge=0, le=6, description="0 = 星期一 … 6 = 星期日")


class CallLineCreate(FormInput):
    name: str = Field(min_length=1, max_length=64)
    kind: CallLineKind
    room: str = Field(min_length=1, max_length=64)
    number: str | None = Field(default=None, max_length=32)
    capacity: int = Field(default=1, ge=1, le=50)
    slot_minutes: int = Field(default=15, ge=5, le=240)
    buffer_minutes: int = Field(default=5, ge=0, le=120)
    min_notice_minutes: int = Field(default=120, ge=0, le=20160)
    horizon_days: int = Field(default=14, ge=1, le=90)
    windows: list[WeeklyWindowIn] = Field(default_factory=list, max_length=70)


class CallLineUpdate(FormInput):
    name: str | None = Field(default=None, min_length=1, max_length=64)
    room: str | None = Field(default=None, min_length=1, max_length=64)
    number: str | None = Field(default=None, max_length=32)
    capacity: int | None = Field(default=None, ge=1, le=50)
    slot_minutes: int | None = Field(default=None, ge=5, le=240)
    buffer_minutes: int | None = Field(default=None, ge=0, le=120)
    min_notice_minutes: int | None = Field(default=None, ge=0, le=20160)
    horizon_days: int | None = Field(default=None, ge=1, le=90)
    is_active: bool | None = None


class WeeklyHours(BaseModel):
    windows: list[WeeklyWindowIn] = Field(max_length=70)


class CallLinePublic(BaseModel):
    id: uuid.UUID
    school_id: uuid.UUID
    name: str
    kind: CallLineKind
    room: str
    number: str | None
    capacity: int
    slot_minutes: int
    buffer_minutes: int
    min_notice_minutes: int
    horizon_days: int
    is_active: bool
    windows: list[WeeklyWindowIn]


class OverrideIn(BaseModel):
    day: date
    windows: list[WindowIn] | None = Field(
        max_length=12, description="the day's hours; [] = closed; null = back to the weekly hours"
    )
    reason: str = Field(min_length=1, max_length=128)


class OverridePublic(BaseModel):
    day: date
    windows: list[WindowIn]
    reason: str


class FestivalDayIn(BaseModel):
    day: date
    name: str = Field(min_length=1, max_length=32, description="六一儿童节 / 中秋节前夕 …")
    windows: list[WindowIn] = Field(min_length=1, max_length=12, description="extra hours on every line")


class FestivalDayPublic(BaseModel):
    id: uuid.UUID
    county_id: uuid.UUID
    day: date
    name: str
    windows: list[WindowIn]


class CallSettingsIn(BaseModel):
    weekly_quota: int = Field(default=2, ge=1, le=50)
    requires_confirmation: bool = False
    family_cancel_cutoff_minutes: int = Field(default=120, ge=0, le=10080)
    reminder_lead_minutes: list[int] = Field(default=[1440, 60], max_length=5)

    @model_validator(mode="after")
    def _leads(self) -> Self:
        if any(m < 5 or m > 10080 for m in self.reminder_lead_minutes):
            raise ValueError("提醒时间须在 5 分钟到 7 天之间 (reminder leads are 5 minutes to 7 days)")
        return self


class CallSettingsPublic(CallSettingsIn):
    school_id: uuid.UUID


class SlotPublic(BaseModel):
    line_id: uuid.UUID
    starts_at: datetime
    ends_at: datetime
    free: int = Field(description="剩余座位 (booths left)")


class AvailabilityPublic(BaseModel):
    lines: list[CallLinePublic]
    slots: list[SlotPublic]


class FamilyCallCreate(BaseModel):
    child_id: uuid.UUID
    line_id: uuid.UUID
    starts_at: AwareDatetime
    guardian_id: uuid.UUID | None = Field(
        default=None, description="who will call (staff booking for a family must name them; a family: itself)"
    )


class FamilyCallReschedule(BaseModel):
    line_id: uuid.UUID | None = Field(default=None, description="another line of the school; default: the same")
    starts_at: AwareDatetime


class FamilyCallComplete(BaseModel):
    duration_minutes: int = Field(ge=0, le=240)
    note: str | None = Field(default=None, max_length=500)
    brought_by: str = Field(min_length=1, max_length=32, description="带孩子来的老师")


class FamilyCallMissed(BaseModel):
    missed_by: MissedBy
    note: str | None = Field(default=None, max_length=500)


class FamilyCallCancel(BaseModel):
    reason: str | None = Field(default=None, max_length=256, description="required when the school cancels")


class CallEventPublic(BaseModel):
    kind: CallEventKind
    at: datetime
    account_id: uuid.UUID | None
    detail: dict[str, Any]


class FamilyCallPublic(BaseModel):
    id: uuid.UUID
    line_id: uuid.UUID
    line_name: str
    room: str
    number: str | None
    school_id: uuid.UUID
    child_id: uuid.UUID
    child_name: str
    guardian_id: uuid.UUID | None
    booth: int
    starts_at: datetime
    ends_at: datetime
    status: CallStatus
    rescheduled_from: uuid.UUID | None
    rescheduled_to: uuid.UUID | None = None
    duration_minutes: int | None
    note: str | None
    brought_by: str | None
    missed_by: MissedBy | None
    cancelled_by: CancelledBy | None
    cancel_reason: str | None
    created_at: datetime
    events: list[CallEventPublic] = []


class FamilyCallsPublic(BaseModel):
    upcoming: list[FamilyCallPublic]
    past: list[FamilyCallPublic]


class TodayCall(BaseModel):
    id: uuid.UUID
    child_id: uuid.UUID
    child_name: str
    class_name: str | None
    starts_at: datetime
    ends_at: datetime
    line_name: str
    room: str
    booth: int
    status: CallStatus


class LastCall(BaseModel):
    child_id: uuid.UUID
    call_id: uuid.UUID | None
    at: datetime | None
    duration_minutes: int | None
