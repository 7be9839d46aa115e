"""应急机制 — the 30-minute / 1-hour / 2-hour chain as rows.

Per county: an :class:`EscalationPolicy` (deadlines within the legal maxima, waits, retries) and the
:class:`DutyContact` s (值班) of the county bureau and each township. When an incident is reported the chain is
frozen onto it: three :class:`EscalationStep` s with their deadlines; the :class:`EscalationParty` s each step
must tell (step 3 has two: the county bureau and the township government, both must acknowledge); for each
party the ordered :class:`EscalationTarget` s (contact × channel × address) the engine walks through. The
messages it sends are the outbox's (:mod:`api.models.notifications`). Nothing depends on a process staying
alive: the worker reads these rows.
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
from api.models.notifications import Channel
from api.models.row_security import COUNTY, ROLE, TOWNSHIP, Policy, of_visible_incident, row_security, unscoped

# The school plans' maxima (应急机制): nobody may configure a later deadline than these.
LEGAL_DEADLINE_MINUTES = {1: 30, 2: 60, 3: 120}


class Audience(StrEnum):
    """Whom a party of a step is: step 1 entrusted guardians, step 2 parents away, step 3 the authorities."""

    entrusted_guardian = "entrusted_guardian"  # 委托监护人
    parents_away = "parents_away"  # 在外务工家长
    county_bureau = "county_bureau"  # 县教育局
    township = "township"  # 镇党委政府


AUDIENCE_LABELS = {
    Audience.entrusted_guardian: "委托监护人",
    Audience.parents_away: "在外务工家长",
    Audience.county_bureau: "县教育局",
    Audience.township: "镇党委政府",
}
STEP_LABELS = {1: "告知委托监护人", 2: "告知在外务工家长", 3: "报告县教育局和镇党委政府"}


class StepStatus(StrEnum):
    held = "held"  # 暂缓 (学校先电话联系)
    notifying = "notifying"  # 通知中
    told = "told"  # 已告知 (every party acknowledged)


class PartyStatus(StrEnum):
    held = "held"  # 暂缓
    notifying = "notifying"  # 通知中
    told = "told"  # 已告知
    unreachable = "unreachable"  # 无可联系的人或号码 (flagged to the school's leaders)
    exhausted = "exhausted"  # 多轮联系均未确认 (flagged to the school's leaders)


PARTY_STATUS_OPEN = (PartyStatus.held, PartyStatus.notifying, PartyStatus.unreachable, PartyStatus.exhausted)


class AckRoute(StrEnum):
    """How a person acknowledged; only an acknowledgement counts as told."""

    mini_program = "mini_program"  # 小程序确认
    link = "link"  # 短信/微信链接确认
    sms_reply = "sms_reply"  # 短信回复确认码
    voice_dtmf = "voice_dtmf"  # 语音电话按键确认
    staff_call = "staff_call"  # 学校人员电话联系并登记


ACK_ROUTE_LABELS = {
    AckRoute.mini_program: "小程序确认",
    AckRoute.link: "链接确认",
    AckRoute.sms_reply: "短信回复确认",
    AckRoute.voice_dtmf: "电话按键确认",
    AckRoute.staff_call: "学校人员电话告知",
}


@audited("escalation_policy")
class EscalationPolicy(SQLModel, table=True):
    """A county's settings for the chain; a county without a row uses :data:`DEFAULT_POLICY`."""

    __tablename__ = "escalation_policy"
    __table_args__ = (
        sa.CheckConstraint(
            "guardian_deadline_minutes BETWEEN 1 AND 30 AND parents_deadline_minutes BETWEEN 1 AND 60"
            " AND authorities_deadline_minutes BETWEEN 1 AND 120",
            name="legal_deadlines",
        ),
    )

    id: uuid.UUID = id_field()
    county_id: uuid.UUID = Field(foreign_key="county.id", unique=True, ondelete="RESTRICT")
    guardian_deadline_minutes: int = Field(default=30)
    parents_deadline_minutes: int = Field(default=60)
    authorities_deadline_minutes: int = Field(default=120)
    ack_wait_minutes: int = Field(default=5)
    near_deadline_minutes: int = Field(default=10)
    max_hold_minutes: int = Field(default=10)
    min_attempts_before_deadline: int = Field(default=3)
    max_send_attempts: int = Field(default=5)
    retry_backoff_seconds: int = Field(default=15)
    max_rounds: int = Field(default=3)
    round_pause_minutes: int = Field(default=5)
    updated_at: datetime = timestamp_field()
    updated_by_id: uuid.UUID | None = fk_field("account.id", nullable=True, index=False)


@audited("duty_contact")
class DutyContact(SQLModel, table=True):
    """值班: whom the chain's step 3 calls for a county bureau (``township_id`` empty) or a township."""

    __tablename__ = "duty_contact"
    __table_args__ = (
        sa.CheckConstraint("phone IS NOT NULL OR account_id IS NOT NULL", name="reachable"),
        sa.Index("ix_duty_contact_county_township", "county_id", "township_id", "position"),
    )

    id: uuid.UUID = id_field()
    county_id: uuid.UUID = fk_field("county.id", index=False)
    township_id: uuid.UUID | None = fk_field("township.id", nullable=True, index=False)
    name: str = Field(max_length=64, description="值班室或值班人员, e.g. 县教育局安全股值班室")
    phone: str | None = Field(default=None, max_length=32, description="值班电话 (normalised)")
    account_id: uuid.UUID | None = fk_field("account.id", nullable=True, index=False)
    position: int = Field(default=1, description="联系顺序, 1 = 最先")
    is_active: bool = Field(default=True)
    created_at: datetime = timestamp_field()
    updated_at: datetime = timestamp_field()


class EscalationStep(SQLModel, table=True):
    """One step of an incident's chain, frozen at the report: its deadline and the waits in force then."""

    __tablename__ = "escalation_step"
    __table_args__ = (
        sa.UniqueConstraint("incident_id", "step_no", name="uq_escalation_step_incident_step"),
        sa.Index(
            "ix_escalation_step_next_check_at", "next_check_at", postgresql_where=sa.text("next_check_at IS NOT NULL")
        ),
    )

    id: uuid.UUID = id_field()
    incident_id: uuid.UUID = fk_field("incident.id", index=False)
    step_no: int
    deadline_minutes: int
    deadline_at: datetime = timestamp_field()
    hold_until: datetime | None = timestamp_field(nullable=True)
    starts_at: datetime = timestamp_field()
    status: StepStatus = Field(sa_type=enum_type(StepStatus, 16))
    started_at: datetime | None = timestamp_field(nullable=True)
    told_at: datetime | None = timestamp_field(nullable=True)
    near_alerted_at: datetime | None = timestamp_field(nullable=True)
    breached_at: datetime | None = timestamp_field(nullable=True)
    # When the scheduler must look at this step again (hold end, near-deadline alert, deadline); null when told.
    next_check_at: datetime | None = timestamp_field(nullable=True)
    ack_wait_seconds: int
    near_margin_seconds: int
    max_rounds: int
    round_pause_seconds: int


class EscalationParty(SQLModel, table=True):
    """Someone a step must tell; told when any of its contacts acknowledges."""

    __tablename__ = "escalation_party"
    __table_args__ = (
        sa.Index(
            "ix_escalation_party_next_check_at",
            "next_check_at",
            postgresql_where=sa.text("next_check_at IS NOT NULL"),
        ),
    )

    id: uuid.UUID = id_field()
    incident_id: uuid.UUID = fk_field("incident.id")
    step_id: uuid.UUID = fk_field("escalation_step.id")
    audience: Audience = Field(sa_type=enum_type(Audience, 24))
    status: PartyStatus = Field(sa_type=enum_type(PartyStatus, 16))
    round: int = Field(default=1)
    # seq of the target tried last in this round (0: none yet).
    cursor: int = Field(default=0)
    current_message_id: uuid.UUID | None = Field(default=None)
    next_check_at: datetime | None = timestamp_field(nullable=True)
    told_at: datetime | None = timestamp_field(nullable=True)
    told_route: AckRoute | None = Field(default=None, sa_type=enum_type(AckRoute, 16))
    flagged_at: datetime | None = timestamp_field(nullable=True)


class EscalationTarget(SQLModel, table=True):
    """One way to reach one contact of a party (contact × channel × address), tried in ``seq`` order."""

    __tablename__ = "escalation_target"
    __table_args__ = (sa.UniqueConstraint("party_id", "seq", name="uq_escalation_target_party_seq"),)

    id: uuid.UUID = id_field()
    incident_id: uuid.UUID = fk_field("incident.id")
    party_id: uuid.UUID = fk_field("escalation_party.id", index=False)
    seq: int
    contact_no: int
    contact_label: str = Field(max_length=64, description="关系或职务")
    contact_name: str | None = Field(default=None, max_length=64)
    guardian_id: uuid.UUID | None = fk_field("guardian.id", nullable=True, index=False)
    duty_contact_id: uuid.UUID | None = fk_field("duty_contact.id", nullable=True, index=False)
    account_id: uuid.UUID | None = fk_field("account.id", nullable=True, index=False)
    channel: Channel = Field(sa_type=enum_type(Channel, 8))
    address: str = Field(max_length=128, sa_column_kwargs=SENSITIVE, description="E.164 number or openid")
    dead_at: datetime | None = timestamp_field(nullable=True)
    dead_reason: str | None = Field(default=None, max_length=64)
    added_by_id: uuid.UUID | None = fk_field("account.id", nullable=True, index=False)
    created_at: datetime = timestamp_field()


class ReplyCode(SQLModel, table=True):
    """The SMS reply code an open party holds on one phone number.

    Unique among the number's open parties (a partial unique index, so two reports racing for the same code
    cannot both get it); released when the party is told or its incident closed, so a reply is matched only
    against parties still waiting for one."""

    __tablename__ = "reply_code"
    __table_args__ = (
        sa.Index(
            "uq_reply_code_open_address_code",
            "address",
            "code",
            unique=True,
            postgresql_where=sa.text("released_at IS NULL"),
        ),
    )

    id: uuid.UUID = id_field()
    incident_id: uuid.UUID = fk_field("incident.id")
    party_id: uuid.UUID = fk_field("escalation_party.id")
    address: str = Field(max_length=128, description="E.164 number the code was texted to")
    code: str = Field(max_length=8)
    created_at: datetime = timestamp_field()
    released_at: datetime | None = timestamp_field(nullable=True)


@audited("acknowledgement")
class Acknowledgement(SQLModel, table=True):
    """Proof that a person was told: by which route, who, when, and who recorded it."""

    __tablename__ = "acknowledgement"

    id: uuid.UUID = id_field()
    incident_id: uuid.UUID = fk_field("incident.id")
    school_id: uuid.UUID = fk_field("school.id", index=False)
    step_id: uuid.UUID = fk_field("escalation_step.id", index=False)
    party_id: uuid.UUID = fk_field("escalation_party.id")
    message_id: uuid.UUID | None = fk_field("outbound_message.id", nullable=True)
    target_id: uuid.UUID | None = fk_field("escalation_target.id", nullable=True, index=False)
    route: AckRoute = Field(sa_type=enum_type(AckRoute, 16))
    contact_label: str = Field(max_length=64)
    contact_name: str | None = Field(default=None, max_length=64)
    account_id: uuid.UUID | None = fk_field("account.id", nullable=True, index=False)
    acknowledged_at: datetime = timestamp_field()
    recorded_at: datetime = timestamp_field()
    recorded_by_id: uuid.UUID | None = fk_field("account.id", nullable=True, index=False)
    note: str | None = Field(default=None, max_length=1000, sa_column_kwargs=SENSITIVE)


class WorkerHeartbeat(SQLModel, table=True):
    """Each escalation worker beats here every few seconds; readiness reads the freshest beat."""

    __tablename__ = "worker_heartbeat"

    worker_id: str = Field(max_length=64, primary_key=True)
    hostname: str = Field(max_length=128)
    pid: int
    started_at: datetime = timestamp_field()
    beat_at: datetime = timestamp_field(index=True)
    detail: dict[str, Any] = Field(default_factory=dict, sa_type=JSONB)


# ---- row-level security (api/models/row_security.py) ----
# A county's chain settings are its staff's; duty contacts are seen by the bureau (its county), a township (its
# own) and school staff (those the chain would call for their school). The chain of an incident — steps,
# parties, contacts, reply codes, acknowledgements — follows the incident, for staff only (its messages: in
# api/models/notifications.py).
row_security("escalation_policy", Policy("staff", using=f"county_id = {COUNTY}"))
row_security(
    "duty_contact",
    Policy(
        "scoped",
        using=(
            f"({ROLE} = 'county_bureau' AND county_id = {COUNTY})"
            f" OR ({ROLE} = 'township_official' AND township_id = {TOWNSHIP})"
            f" OR ({ROLE} IN ('school_admin', 'teacher') AND county_id = {COUNTY}"
            f" AND (township_id IS NULL OR township_id = {TOWNSHIP}))"
        ),
    ),
)
for _table in (
    "escalation_step",
    "escalation_party",
    "escalation_target",
    "reply_code",
    "acknowledgement",
):
    row_security(_table, Policy("staff", using=of_visible_incident(_table)))
unscoped("worker_heartbeat", "the workers' liveness, read by readiness checks; holds no personal data")


# ---- API schemas -------------------------------------------------------------------------------------


class PolicyValues(BaseModel):
    """A county's chain settings; deadlines can only be shorter than the plans' 30 / 60 / 120 minutes."""

    model_config = ConfigDict(
        json_schema_extra={
            "examples": [{"guardian_deadline_minutes": 20, "parents_deadline_minutes": 45, "ack_wait_minutes": 4}]
        }
    )

    guardian_deadline_minutes: int = PydanticField(default=30, ge=5, le=30, description="告知委托监护人时限")
    parents_deadline_minutes: int = PydanticField(default=60, ge=5, le=60, description="告知在外务工家长时限")
    authorities_deadline_minutes: int = PydanticField(default=120, ge=5, le=120, description="报告县教育局和镇政府时限")
    ack_wait_minutes: int = PydanticField(
        default=5, ge=1, le=30, description="每次通知等待确认的时间, 之后换渠道/联系人"
    )
    near_deadline_minutes: int = PydanticField(default=10, ge=1, le=30, description="到期前多久提醒校领导")
    max_hold_minutes: int = PydanticField(default=10, ge=0, le=30, description="学校可暂缓发送的最长时间")
    min_attempts_before_deadline: int = PydanticField(
        default=3, ge=1, le=10, description="暂缓后到期前至少还能完成的通知次数"
    )
    max_send_attempts: int = PydanticField(default=5, ge=1, le=10, description="一条消息临时失败时最多发送次数")
    retry_backoff_seconds: int = PydanticField(default=15, ge=5, le=300, description="重试间隔 (指数增长)")
    max_rounds: int = PydanticField(default=3, ge=1, le=10, description="所有联系人未确认时最多轮数")
    round_pause_minutes: int = PydanticField(default=5, ge=1, le=60, description="两轮之间的间隔")


DEFAULT_POLICY = PolicyValues()


class PolicyPublic(PolicyValues):
    county_id: uuid.UUID
    is_default: bool = PydanticField(description="该县未配置, 使用默认值")
    updated_at: datetime | None
    updated_by_id: uuid.UUID | None


class DutyContactCreate(BaseModel):
    model_config = ConfigDict(
        json_schema_extra={"examples": [{"name": "县教育局安全股值班室", "phone": "0739-5551100", "position": 1}]}
    )

    township_id: uuid.UUID | None = PydanticField(default=None, description="空 = 县教育局值班; 否则该乡镇值班")
    name: str = PydanticField(min_length=1, max_length=64)
    phone: str | None = PydanticField(default=None, max_length=32)
    account_id: uuid.UUID | None = PydanticField(default=None, description="值班人员账号 (微信通知)")
    position: int = PydanticField(default=1, ge=1, le=99)


class DutyContactUpdate(BaseModel):
    name: str | None = PydanticField(default=None, min_length=1, max_length=64)
    phone: str | None = PydanticField(default=None, max_length=32)
    account_id: uuid.UUID | None = None
    position: int | None = PydanticField(default=None, ge=1, le=99)
    is_active: bool | None = None


class DutyContactPublic(BaseModel):
    id: uuid.UUID
    county_id: uuid.UUID
    township_id: uuid.UUID | None
    name: str
    phone: str | None
    account_id: uuid.UUID | None
    position: int
    is_active: bool


class ContactAdd(BaseModel):
    """A number the school learned during the emergency (e.g. a neighbour of the grandmother)."""

    model_config = ConfigDict(
        json_schema_extra={"examples": [{"label": "邻居", "name": "李婶", "phone": "13800138009"}]}
    )

    label: str = PydanticField(min_length=1, max_length=64, description="关系, e.g. 祖母 / 邻居")
    name: str | None = PydanticField(default=None, max_length=64)
    phone: str = PydanticField(min_length=3, max_length=32)


class StaffCall(BaseModel):
    """A staff member reached the person by phone: who, when (the call, not the typing)."""

    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {
                    "party_id": "5b1f0d2e-0000-4000-8000-0000000000a1",
                    "contact_label": "祖母",
                    "called_at": "2026-11-24T10:20:00+08:00",
                    "note": "班主任电话告知，祖母正赶来学校",
                }
            ]
        }
    )

    party_id: uuid.UUID
    contact_id: uuid.UUID | None = PydanticField(default=None, description="联系卡上的联系人 (ContactPublic.id)")
    contact_label: str | None = PydanticField(default=None, max_length=64, description="不在联系卡上时: 关系/职务")
    contact_name: str | None = PydanticField(default=None, max_length=64)
    called_at: AwareInstant = PydanticField(description="通话时间")
    note: str | None = PydanticField(default=None, max_length=1000)


class Resend(BaseModel):
    contact_id: uuid.UUID | None = PydanticField(default=None, description="默认: 当前联系人")


class Escalate(BaseModel):
    step_no: int | None = PydanticField(default=None, ge=1, le=3, description="默认: 所有未完成的步骤")


class AcknowledgementPublic(BaseModel):
    id: uuid.UUID
    party_id: uuid.UUID
    step_no: int
    audience: Audience
    route: AckRoute
    contact_label: str
    contact_name: str | None
    acknowledged_at: datetime
    recorded_at: datetime
    recorded_by_id: uuid.UUID | None


class AckPage(BaseModel):
    """What the acknowledgement link shows (JSON for the mini-program)."""

    case_code: str
    school_name: str
    category_label: str
    occurred_at: datetime
    occurred_at_local: str
    audience: Audience
    acknowledged: bool
    acknowledged_at: datetime | None
    closed: bool = PydanticField(default=False, description="事件已结案: nothing left to acknowledge")
    severity: str = PydanticField(default="", description="minor / moderate / severe / critical")
    severity_label: str = PydanticField(default="", description="一般 / 较重 / 严重 / 特别严重")
    time_label: str = PydanticField(default="发生时间", description="发生时间, or 发现时间 when only that is known")
    school_phone: str | None = PydanticField(default=None, description="学校值班电话 (to call the school)")
