"""突发事件 — an emergency that happened to a child at school, and the append-only log of what followed.

An incident is never deleted (the database refuses). What happened afterwards — every message, delivery,
acknowledgement, breach, update — is an :class:`IncidentEvent`, which the database also refuses to change or
remove: the timeline that proves, minute by minute, who was told and when. The chain of people to tell is
in :mod:`api.models.escalation`.
"""

import uuid
from datetime import datetime
from enum import StrEnum
from typing import Any

import sqlalchemy as sa
from pydantic import BaseModel, ConfigDict
from pydantic import Field as PydanticField
from sqlalchemy.dialects.postgresql import JSONB
from sqlmodel import Field, SQLModel

from api.models.base import SENSITIVE, AwareInstant, audited, enum_type, fk_field, id_field, timestamp_field
from api.models.escalation import (
    AckRoute,
    Audience,
    PartyStatus,
    StepStatus,
)
from api.models.notifications import Channel
from api.models.row_security import FAMILY_CHILDREN, Policy, of_school, of_visible_incident, row_security


class IncidentCategory(StrEnum):
    injury = "injury"  # 意外受伤
    illness = "illness"  # 突发疾病
    missing = "missing"  # 走失/失联
    safety = "safety"  # 安全事故 (交通、溺水、火灾…)
    violence_bullying = "violence_bullying"  # 暴力/欺凌
    psychological_crisis = "psychological_crisis"  # 心理危机
    other = "other"  # 其他


CATEGORY_LABELS = {
    IncidentCategory.injury: "意外受伤",
    IncidentCategory.illness: "突发疾病",
    IncidentCategory.missing: "走失失联",
    IncidentCategory.safety: "安全事故",
    IncidentCategory.violence_bullying: "暴力欺凌",
    IncidentCategory.psychological_crisis: "心理危机",
    IncidentCategory.other: "突发情况",
}


class Severity(StrEnum):
    minor = "minor"  # 一般
    moderate = "moderate"  # 较重
    severe = "severe"  # 严重
    critical = "critical"  # 特别严重


SEVERITY_LABELS = {
    Severity.minor: "一般",
    Severity.moderate: "较重",
    Severity.severe: "严重",
    Severity.critical: "特别严重",
}


class TimeBasis(StrEnum):
    """What ``occurred_at`` is: when it happened, or (when that is unknown) when it was discovered."""

    occurred = "occurred"  # 发生时间
    discovered = "discovered"  # 发现时间


class IncidentStatus(StrEnum):
    open = "open"  # 处置中
    closed = "closed"  # 已结案


class ChildOutcome(StrEnum):
    """How the child is, as far as the school knows (孩子的情况)."""

    unharmed = "unharmed"  # 无碍
    treated_at_school = "treated_at_school"  # 校内处置
    hospital = "hospital"  # 送医治疗
    found_safe = "found_safe"  # 已找到, 安全
    handed_to_family = "handed_to_family"  # 已交监护人
    counselling = "counselling"  # 心理干预
    police = "police"  # 已报警/公安介入
    other = "other"  # 其他


OUTCOME_LABELS = {
    ChildOutcome.unharmed: "无碍",
    ChildOutcome.treated_at_school: "校内处置",
    ChildOutcome.hospital: "送医治疗",
    ChildOutcome.found_safe: "已找到，安全",
    ChildOutcome.handed_to_family: "已交监护人",
    ChildOutcome.counselling: "心理干预",
    ChildOutcome.police: "公安介入",
    ChildOutcome.other: "其他",
}


@audited("incident")
class Incident(SQLModel, table=True):
    __tablename__ = "incident"
    __table_args__ = (
        sa.Index("ix_incident_school_status", "school_id", "status", "occurred_at"),
        sa.Index("ix_incident_county_occurred", "county_id", "occurred_at"),
    )

    id: uuid.UUID = id_field()
    case_code: str = Field(max_length=16, unique=True, description="事件编号, e.g. 261124-K7QF2M (不含姓名)")
    county_id: uuid.UUID = fk_field("county.id", index=False)
    township_id: uuid.UUID = fk_field("township.id")
    school_id: uuid.UUID = fk_field("school.id", index=False)
    child_id: uuid.UUID = fk_field("child.id")
    class_id: uuid.UUID | None = fk_field("school_class.id", nullable=True, index=False)
    category: IncidentCategory = Field(sa_type=enum_type(IncidentCategory, 24))
    severity: Severity = Field(sa_type=enum_type(Severity, 16))
    # Free text may name people: kept out of the audit log's values.
    summary: str = Field(max_length=2000, sa_column_kwargs=SENSITIVE, description="事件经过")
    location: str = Field(max_length=256, sa_column_kwargs=SENSITIVE, description="地点")
    # 发生或发现时间: the chain's clock starts here.
    occurred_at: datetime = timestamp_field()
    time_basis: TimeBasis = Field(default=TimeBasis.occurred, sa_type=enum_type(TimeBasis, 16))
    first_actions: str = Field(max_length=2000, sa_column_kwargs=SENSITIVE, description="已采取的措施")
    reported_at: datetime = timestamp_field()
    reported_by_id: uuid.UUID = fk_field("account.id", index=False)
    status: IncidentStatus = Field(default=IncidentStatus.open, sa_type=enum_type(IncidentStatus, 16))
    outcome: ChildOutcome | None = Field(default=None, sa_type=enum_type(ChildOutcome, 24))
    outcome_note: str | None = Field(default=None, max_length=2000, sa_column_kwargs=SENSITIVE)
    closed_at: datetime | None = timestamp_field(nullable=True)
    closed_by_id: uuid.UUID | None = fk_field("account.id", nullable=True, index=False)
    closure_summary: str | None = Field(default=None, max_length=4000, sa_column_kwargs=SENSITIVE)
    # The county's policy as it was at the report (deadlines, waits, retries), for the record.
    policy: dict[str, Any] = Field(sa_type=JSONB)
    updated_at: datetime = timestamp_field()


class EventKind(StrEnum):
    """What an entry of the timeline records; labels in :data:`EVENT_LABELS`."""

    reported = "reported"
    chain_frozen = "chain_frozen"
    step_held = "step_held"
    step_started = "step_started"
    message_queued = "message_queued"
    message_sent = "message_sent"
    message_retry = "message_retry"
    message_failed = "message_failed"
    message_unconfirmed = "message_unconfirmed"
    message_delivered = "message_delivered"
    message_cancelled = "message_cancelled"
    call_answered = "call_answered"
    call_ended = "call_ended"
    keys_pressed = "keys_pressed"
    reply_received = "reply_received"
    ack_after_close = "ack_after_close"
    no_ack_within_wait = "no_ack_within_wait"
    round_finished = "round_finished"
    acknowledged = "acknowledged"
    party_told = "party_told"
    step_told = "step_told"
    party_unreachable = "party_unreachable"
    party_exhausted = "party_exhausted"
    leaders_alerted = "leaders_alerted"
    leaders_unreachable = "leaders_unreachable"
    near_deadline = "near_deadline"
    breach = "breach"
    escalated = "escalated"
    contact_added = "contact_added"
    resend = "resend"
    update = "update"
    outcome_recorded = "outcome_recorded"
    closed = "closed"


EVENT_LABELS = {
    EventKind.reported: "报告突发事件",
    EventKind.chain_frozen: "确定通知链",
    EventKind.step_held: "暂缓发送 (学校先电话联系)",
    EventKind.step_started: "开始通知",
    EventKind.message_queued: "通知排队",
    EventKind.message_sent: "已发出",
    EventKind.message_retry: "发送失败，稍后重试",
    EventKind.message_failed: "发送失败",
    EventKind.message_unconfirmed: "发送结果不明 (可能已送达)，改用下一方式",
    EventKind.message_delivered: "已送达",
    EventKind.message_cancelled: "已取消 (已告知)",
    EventKind.call_answered: "电话已接听",
    EventKind.call_ended: "通话结束",
    EventKind.keys_pressed: "电话按键 (非确认键)",
    EventKind.reply_received: "收到短信回复",
    EventKind.ack_after_close: "结案后收到确认 (不计入)",
    EventKind.no_ack_within_wait: "等待确认超时，转下一渠道/联系人",
    EventKind.round_finished: "一轮联系均未确认，稍后再试",
    EventKind.acknowledged: "确认收到",
    EventKind.party_told: "已告知",
    EventKind.step_told: "本步完成",
    EventKind.party_unreachable: "无可联系的人或号码，已提醒校领导",
    EventKind.party_exhausted: "多轮联系均未确认，已提醒校领导",
    EventKind.leaders_alerted: "已提醒校领导",
    EventKind.leaders_unreachable: "无法提醒校领导 (无联系方式)",
    EventKind.near_deadline: "即将超时",
    EventKind.breach: "超时未告知",
    EventKind.escalated: "立即升级",
    EventKind.contact_added: "添加联系人",
    EventKind.resend: "重新发送",
    EventKind.update: "情况更新",
    EventKind.outcome_recorded: "登记孩子情况",
    EventKind.closed: "结案",
}


class IncidentEvent(SQLModel, table=True):
    """One line of the incident's timeline. Append-only: the database refuses UPDATE and DELETE."""

    __tablename__ = "incident_event"
    __table_args__ = (sa.Index("ix_incident_event_incident_id_id", "incident_id", "id"),)

    id: int | None = Field(default=None, sa_type=sa.BigInteger, primary_key=True)
    incident_id: uuid.UUID = fk_field("incident.id", index=False)
    at: datetime = timestamp_field()
    kind: EventKind = Field(sa_type=enum_type(EventKind, 32))
    step_no: int | None = Field(default=None)
    party_id: uuid.UUID | None = Field(default=None)
    message_id: uuid.UUID | None = Field(default=None)
    channel: Channel | None = Field(default=None, sa_type=enum_type(Channel, 8))
    actor_account_id: uuid.UUID | None = Field(default=None)
    detail: dict[str, Any] = Field(default_factory=dict, sa_type=JSONB)


# ---- row-level security (api/models/row_security.py) ----
# Incidents are school data: staff see those of their schools (the bureau and a township: of their area), a
# family those of its own children. The timeline follows the incident, for staff only.
row_security(
    "incident",
    Policy("staff", using=of_school()),
    Policy("family", using=f"child_id = ANY ({FAMILY_CHILDREN})"),
)
row_security("incident_event", Policy("staff", using=of_visible_incident("incident_event")))


# ---- API schemas -------------------------------------------------------------------------------------


class StepHold(BaseModel):
    step_no: int = PydanticField(ge=1, le=3, description="1 委托监护人 / 2 在外务工家长 / 3 县教育局和镇政府")
    minutes: int = PydanticField(ge=1, le=60, description="暂缓发送的分钟数 (学校先电话联系)")


class IncidentCreate(BaseModel):
    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {
                    "child_id": "5b1f0d2e-0000-4000-8000-000000000007",
                    "category": "injury",
                    "severity": "moderate",
                    "summary": "体育课跳远落地时扭伤右脚踝，肿胀明显",
                    "location": "学校操场沙坑",
                    "occurred_at": "2026-11-24T10:12:00+08:00",
                    "time_basis": "occurred",
                    "first_actions": "冰敷固定，校医检查，班主任陪同",
                    "holds": [],
                }
            ]
        }
    )

    child_id: uuid.UUID
    category: IncidentCategory = PydanticField(description="受伤/疾病/走失/安全事故/暴力欺凌/心理危机/其他")
    severity: Severity = PydanticField(description="一般/较重/严重/特别严重")
    summary: str = PydanticField(min_length=1, max_length=2000, description="事件经过")
    location: str = PydanticField(min_length=1, max_length=256, description="地点")
    occurred_at: AwareInstant = PydanticField(
        description="发生时间 (或发现时间), with a time zone; the clock starts here"
    )
    time_basis: TimeBasis = TimeBasis.occurred
    first_actions: str = PydanticField(min_length=1, max_length=2000, description="已采取的措施")
    holds: list[StepHold] = PydanticField(default_factory=list, max_length=3, description="暂缓某一步的发送")


class IncidentNote(BaseModel):
    model_config = ConfigDict(json_schema_extra={"examples": [{"note": "已送镇卫生院拍片，未见骨折"}]})

    note: str = PydanticField(min_length=1, max_length=2000, description="情况更新")
    severity: Severity | None = PydanticField(default=None, description="调整严重程度")


class OutcomeRecord(BaseModel):
    model_config = ConfigDict(
        json_schema_extra={"examples": [{"outcome": "handed_to_family", "note": "祖母下午到校接回家休养"}]}
    )

    outcome: ChildOutcome
    note: str | None = PydanticField(default=None, max_length=2000)


class IncidentClose(BaseModel):
    model_config = ConfigDict(
        json_schema_extra={"examples": [{"summary": "各方均已按时告知，孩子已回家休养，班主任次日家访。"}]}
    )

    summary: str = PydanticField(min_length=1, max_length=4000, description="结案总结")


class ContactPublic(BaseModel):
    """One way to reach one person of a party, in the order the engine tries them (联系卡)."""

    id: uuid.UUID
    seq: int
    contact_no: int
    label: str = PydanticField(description="关系或职务, e.g. 祖母 / 县教育局值班室")
    name: str | None
    channel: Channel
    address: str = PydanticField(description="号码 (学校人员可见完整号码) 或微信 (已绑定)")
    usable: bool
    unusable_reason: str | None


class PartyPublic(BaseModel):
    id: uuid.UUID
    audience: Audience
    label: str
    status: PartyStatus
    told_at: datetime | None
    told_route: AckRoute | None
    round: int
    contacts: list[ContactPublic]


class StepPublic(BaseModel):
    step_no: int
    label: str
    deadline_minutes: int
    deadline_at: datetime
    hold_until: datetime | None
    starts_at: datetime
    status: StepStatus
    told_at: datetime | None
    breached_at: datetime | None = PydanticField(description="超时被记录的时间")
    deadline_met: bool | None = PydanticField(description="按时告知? null while still open and not yet late")
    parties: list[PartyPublic]


class IncidentPublic(BaseModel):
    id: uuid.UUID
    case_code: str
    county_id: uuid.UUID
    township_id: uuid.UUID
    school_id: uuid.UUID
    child_id: uuid.UUID
    child_name: str
    class_id: uuid.UUID | None
    category: IncidentCategory
    category_label: str
    severity: Severity
    severity_label: str
    summary: str
    location: str
    occurred_at: datetime
    time_basis: TimeBasis
    first_actions: str
    reported_at: datetime
    reported_by_id: uuid.UUID
    status: IncidentStatus
    outcome: ChildOutcome | None
    outcome_note: str | None
    closed_at: datetime | None
    closure_summary: str | None
    steps: list[StepPublic]


class StepSummary(BaseModel):
    step_no: int
    status: StepStatus
    deadline_at: datetime
    told_at: datetime | None
    breached: bool
    deadline_met: bool | None


class IncidentSummary(BaseModel):
    id: uuid.UUID
    case_code: str
    school_id: uuid.UUID
    child_id: uuid.UUID
    category: IncidentCategory
    severity: Severity
    occurred_at: datetime
    reported_at: datetime
    status: IncidentStatus
    needs_attention: bool = PydanticField(description="有超时、无人可联系或多轮未确认的步骤")
    steps: list[StepSummary]


class TimelineEntry(BaseModel):
    at: datetime
    at_local: str = PydanticField(description="北京时间, e.g. 2026-11-24 10:05:12")
    t_plus: str = PydanticField(description="距事件发生/发现的时间, e.g. T+05:12 (T-00:30 before it)")
    kind: EventKind
    label: str
    step_no: int | None
    channel: Channel | None
    actor_account_id: uuid.UUID | None
    detail: dict[str, Any]


class Timeline(BaseModel):
    incident_id: uuid.UUID
    case_code: str
    clock_start: datetime
    steps: list[StepSummary]
    entries: list[TimelineEntry]
