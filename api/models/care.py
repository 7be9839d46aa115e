"""结对帮扶 and care records: who is paired with a child, and what was done for the child (谈心, 家访…).

Pairings end with a reason and are never deleted. Care records are tamper-evident: one ``care_record`` row per
real event holds the current content; corrections within the edit window keep the superseded versions in
``care_record_version``, later changes are ``care_record_amendment`` rows with a reason. Every one of those rows
is a link of its school's hash chain (``chain_seq``, ``prev_hash``, ``content_hash``, ``row_hash``); the head
of each chain is kept apart in ``care_chain_head`` so that a deleted newest row is noticed too.
"""

import uuid
from datetime import date, datetime
from enum import StrEnum
from typing import Any

import sqlalchemy as sa
from pydantic import BaseModel, ConfigDict
from sqlalchemy.dialects import postgresql
from sqlmodel import Field, SQLModel

from api.models.base import SENSITIVE, FormInput, audited, enum_type, fk_field, id_field, timestamp_field
from api.models.row_security import SCHOOLS, Policy, of_school, of_staff_child, row_security


class PairingKind(StrEnum):
    proxy_parent = "proxy_parent"  # 代理家长 / 爱心妈妈 / 爱心爸爸
    study_buddy = "study_buddy"  # 学习伙伴 (手拉手)
    mentor = "mentor"  # 导师 (党员包扶, 志愿者)


PAIRING_KIND_LABELS = {
    PairingKind.proxy_parent: "代理家长",
    PairingKind.study_buddy: "学习伙伴",
    PairingKind.mentor: "导师",
}


class PairingEndReason(StrEnum):
    transferred = "transferred"  # 儿童转学
    graduated = "graduated"  # 儿童毕业
    left_school = "left_school"  # 儿童离校
    staff_left = "staff_left"  # 教师离校/账号停用
    reassigned = "reassigned"  # 调整结对
    completed = "completed"  # 帮扶完成
    other = "other"  # 其他


PAIRING_END_REASON_LABELS = {
    PairingEndReason.transferred: "儿童转学",
    PairingEndReason.graduated: "儿童毕业",
    PairingEndReason.left_school: "儿童离校",
    PairingEndReason.staff_left: "教师离校",
    PairingEndReason.reassigned: "调整结对",
    PairingEndReason.completed: "帮扶完成",
    PairingEndReason.other: "其他",
}


class CareKind(StrEnum):
    talk = "talk"  # 谈心
    home_visit = "home_visit"  # 家访
    guardian_contact = "guardian_contact"  # 与监护人沟通
    parent_contact = "parent_contact"  # 与外出家长联系 (电话、视频、书信)
    counselling = "counselling"  # 心理咨询 (仅心理辅导教师与学校管理员可见)
    aid = "aid"  # 资助
    award = "award"  # 表彰


CARE_KIND_LABELS = {
    CareKind.talk: "谈心",
    CareKind.home_visit: "家访",
    CareKind.guardian_contact: "与监护人沟通",
    CareKind.parent_contact: "与家长联系",
    CareKind.counselling: "心理咨询",
    CareKind.aid: "资助",
    CareKind.award: "表彰",
}


@audited("care_setting")
class CareSetting(SQLModel, table=True):
    """A school's own limits for care work; a school without a row uses the defaults."""

    __tablename__ = "care_setting"
    __table_args__ = (
        sa.CheckConstraint("proxy_parent_cap BETWEEN 1 AND 50", name="proxy_parent_cap"),
        sa.CheckConstraint("mentor_cap BETWEEN 1 AND 20", name="mentor_cap"),
        sa.CheckConstraint("edit_window_minutes BETWEEN 0 AND 10080", name="edit_window"),
    )

    school_id: uuid.UUID = Field(foreign_key="school.id", primary_key=True, ondelete="CASCADE")
    proxy_parent_cap: int = Field(default=5, description="每位代理家长最多结对的儿童数")
    mentor_cap: int = Field(default=2, description="每位导师最多结对的儿童数 (党员包扶 1–2 名)")
    edit_window_minutes: int = Field(default=24 * 60, description="记录作者可直接更正的时限 (分钟)")
    updated_at: datetime = timestamp_field(default_now=True)
    updated_by_id: uuid.UUID | None = fk_field("account.id", nullable=True, index=False)


@audited("care_pairing")
class CarePairing(SQLModel, table=True):
    """结对帮扶: a child paired with a proxy parent (staff), a study buddy (a classmate) or a mentor (staff or an
    outside person). Active while ``ended_on`` is null; ended with a reason, never deleted."""

    __tablename__ = "care_pairing"
    __table_args__ = (
        # 一对一: at most one active proxy parent per child, held by the database.
        sa.Index(
            "uq_care_pairing_active_proxy_parent",
            "child_id",
            unique=True,
            postgresql_where=sa.text("kind = 'proxy_parent' AND ended_on IS NULL"),
        ),
        sa.Index("ix_care_pairing_child_active", "child_id", "ended_on"),
        sa.Index("ix_care_pairing_staff_active", "staff_id", "kind", postgresql_where=sa.text("ended_on IS NULL")),
        sa.CheckConstraint(
            "(kind <> 'proxy_parent' OR (staff_id IS NOT NULL AND buddy_child_id IS NULL AND outside_name IS NULL))"
            " AND (kind <> 'study_buddy' OR (buddy_child_id IS NOT NULL AND staff_id IS NULL"
            " AND outside_name IS NULL AND buddy_child_id <> child_id))"
            " AND (kind <> 'mentor' OR (buddy_child_id IS NULL AND"
            " ((staff_id IS NOT NULL AND outside_name IS NULL AND outside_phone IS NULL)"
            " OR (staff_id IS NULL AND outside_name IS NOT NULL AND outside_phone IS NOT NULL))))",
            name="partner_of_kind",
        ),
        sa.CheckConstraint(
            "(ended_on IS NULL) = (end_reason IS NULL) AND (ended_on IS NULL OR ended_on >= started_on)",
            name="ended_with_reason",
        ),
    )

    id: uuid.UUID = id_field()
    school_id: uuid.UUID = fk_field("school.id")
    child_id: uuid.UUID = fk_field("child.id", index=False)
    kind: PairingKind = Field(sa_type=enum_type(PairingKind, 16))
    staff_id: uuid.UUID | None = fk_field("account.id", nullable=True, index=False)
    buddy_child_id: uuid.UUID | None = fk_field("child.id", nullable=True)
    outside_name: str | None = Field(default=None, max_length=64, description="校外导师姓名")
    outside_phone: str | None = Field(default=None, max_length=32, description="校外导师电话 (normalised)")
    started_on: date
    ended_on: date | None = None
    end_reason: PairingEndReason | None = Field(default=None, sa_type=enum_type(PairingEndReason, 16))
    end_note: str | None = Field(default=None, max_length=256)
    ended_by_id: uuid.UUID | None = fk_field("account.id", nullable=True, index=False)
    created_at: datetime = timestamp_field(default_now=True)
    created_by_id: uuid.UUID | None = fk_field("account.id", nullable=True, index=False)


@audited("care_help_plan")
class CareHelpPlan(SQLModel, table=True):
    """帮扶计划 of one pairing: goals, content, schedule and milestones (帮扶时间、内容和阶段性效果)."""

    __tablename__ = "care_help_plan"

    pairing_id: uuid.UUID = Field(foreign_key="care_pairing.id", primary_key=True, ondelete="RESTRICT")
    goals: str = Field(max_length=2048, description="帮扶目标")
    content: str = Field(max_length=4096, description="帮扶内容")
    schedule: str = Field(max_length=1024, description="帮扶时间安排")
    milestones: list[dict[str, Any]] = Field(
        default_factory=list,
        sa_type=postgresql.JSONB,
        description="阶段性目标: [{due_on, description, achieved_on}]",
    )
    updated_at: datetime = timestamp_field(default_now=True)
    updated_by_id: uuid.UUID | None = fk_field("account.id", nullable=True, index=False)


@audited("care_progress_note")
class CareProgressNote(SQLModel, table=True):
    """进步档案: a dated note on the child's progress within a pairing."""

    __tablename__ = "care_progress_note"
    __table_args__ = (sa.Index("ix_care_progress_note_pairing", "pairing_id", "noted_on"),)

    id: uuid.UUID = id_field()
    pairing_id: uuid.UUID = fk_field("care_pairing.id", index=False)
    noted_on: date
    text: str = Field(max_length=4096)
    author_id: uuid.UUID = fk_field("account.id", index=False)
    created_at: datetime = timestamp_field(default_now=True)


class CareChainHead(SQLModel, table=True):
    """The head of a school's chain of care records, kept apart from the rows: the last link's number and
    hash. Locked for every new link, so links of one school are numbered one after another."""

    __tablename__ = "care_chain_head"

    school_id: uuid.UUID = Field(foreign_key="school.id", primary_key=True, ondelete="RESTRICT")
    seq: int = Field(sa_type=sa.BigInteger, default=0)
    head_hash: str = Field(max_length=64)
    updated_at: datetime = timestamp_field(default_now=True)


# Content is personal data about a child (and counselling notes): the audit log marks it changed without
# copying it, so the log's readers (the bureau among them) do not read records they may not see.
_CONTENT = {**SENSITIVE}


@audited("care_record")
class CareRecord(SQLModel, table=True):
    """One real event of care work for a child (a talk, a home visit…), with its current content."""

    __tablename__ = "care_record"
    __table_args__ = (
        sa.Index("ix_care_record_school_child_kind_on", "school_id", "child_id", "kind", "occurred_on"),
        sa.Index("ix_care_record_child_on", "child_id", "occurred_on"),
        sa.UniqueConstraint("school_id", "chain_seq", name="uq_care_record_chain_seq"),
        sa.CheckConstraint("version >= 1", name="version"),
    )

    id: uuid.UUID = id_field()
    school_id: uuid.UUID = fk_field("school.id", index=False)
    child_id: uuid.UUID = fk_field("child.id", index=False)
    kind: CareKind = Field(sa_type=enum_type(CareKind, 24))
    occurred_on: date = Field(description="Asia/Shanghai calendar date, never in the future")
    author_id: uuid.UUID = fk_field("account.id")
    created_at: datetime = timestamp_field()
    content: dict[str, Any] = Field(sa_type=postgresql.JSONB, sa_column_kwargs=_CONTENT)
    version: int = Field(default=1)
    updated_at: datetime = timestamp_field()
    chain_seq: int = Field(sa_type=sa.BigInteger)
    prev_hash: str = Field(max_length=64)
    content_hash: str = Field(max_length=64)
    row_hash: str = Field(max_length=64)


@audited("care_record_version")
class CareRecordVersion(SQLModel, table=True):
    """A superseded version of a record, kept when its author corrected it within the edit window. The link
    hashes the superseded content and the content that replaced it."""

    __tablename__ = "care_record_version"
    __table_args__ = (
        sa.UniqueConstraint("record_id", "version", name="uq_care_record_version_record_version"),
        sa.UniqueConstraint("school_id", "chain_seq", name="uq_care_record_version_chain_seq"),
    )

    id: uuid.UUID = id_field()
    record_id: uuid.UUID = fk_field("care_record.id", index=False)
    school_id: uuid.UUID = fk_field("school.id", index=False)
    version: int = Field(description="the version this row keeps (the record moved on to version + 1)")
    occurred_on: date
    content: dict[str, Any] = Field(sa_type=postgresql.JSONB, sa_column_kwargs=_CONTENT)
    replaced_by_hash: str = Field(max_length=64, description="hash of the content that replaced this version")
    corrected_by_id: uuid.UUID = fk_field("account.id", index=False)
    corrected_at: datetime = timestamp_field()
    chain_seq: int = Field(sa_type=sa.BigInteger)
    prev_hash: str = Field(max_length=64)
    content_hash: str = Field(max_length=64)
    row_hash: str = Field(max_length=64)


@audited("care_record_amendment")
class CareRecordAmendment(SQLModel, table=True):
    """A later addition to a record whose edit window has passed: what is added or corrected, and why."""

    __tablename__ = "care_record_amendment"
    __table_args__ = (
        sa.Index("ix_care_record_amendment_record", "record_id", "created_at"),
        sa.UniqueConstraint("school_id", "chain_seq", name="uq_care_record_amendment_chain_seq"),
    )

    id: uuid.UUID = id_field()
    record_id: uuid.UUID = fk_field("care_record.id", index=False)
    school_id: uuid.UUID = fk_field("school.id", index=False)
    reason: str = Field(max_length=512, sa_column_kwargs=_CONTENT)
    text: str = Field(max_length=4096, sa_column_kwargs=_CONTENT)
    author_id: uuid.UUID = fk_field("account.id", index=False)
    created_at: datetime = timestamp_field()
    chain_seq: int = Field(sa_type=sa.BigInteger)
    prev_hash: str = Field(max_length=64)
    content_hash: str = Field(max_length=64)
    row_hash: str = Field(max_length=64)


class ChainBreak(BaseModel):
    """The first link of a chain that does not hold."""

    seq: int | None = Field(description="the link's position (null: the head itself)")
    table: str | None
    row_id: uuid.UUID | None
    problem: str = Field(description="content_changed | link_changed | missing_link | head_mismatch | …")
    message: str


# ---- the content of each kind of record (谈心记录卡, 家访…) ---------------------------------------------------


class Mood(StrEnum):
    """The child's state of mind on the record card's five-step scale."""

    very_good = "very_good"  # 很好
    good = "good"  # 较好
    fair = "fair"  # 一般
    low = "low"  # 较差
    very_low = "very_low"  # 很差


MOOD_LABELS = {
    Mood.very_good: "很好",
    Mood.good: "较好",
    Mood.fair: "一般",
    Mood.low: "较差",
    Mood.very_low: "很差",
}


class ContactChannel(StrEnum):
    phone = "phone"  # 电话
    video = "video"  # 视频
    letter = "letter"  # 书信
    in_person = "in_person"  # 面谈


CONTACT_CHANNEL_LABELS = {
    ContactChannel.phone: "电话",
    ContactChannel.video: "视频",
    ContactChannel.letter: "书信",
    ContactChannel.in_person: "面谈",
}


class AidSource(StrEnum):
    two_exemptions_one_subsidy = "two_exemptions_one_subsidy"  # 两免一补
    government = "government"  # 政府救助
    donation = "donation"  # 社会捐助
    school = "school"  # 学校资助
    other = "other"  # 其他


AID_SOURCE_LABELS = {
    AidSource.two_exemptions_one_subsidy: "两免一补",
    AidSource.government: "政府救助",
    AidSource.donation: "社会捐助",
    AidSource.school: "学校资助",
    AidSource.other: "其他",
}


class _Content(FormInput):
    pass


class TalkContent(_Content):
    """谈心记录卡."""

    place: str = Field(min_length=1, max_length=64, description="地点")
    topics: str = Field(min_length=1, max_length=2048, description="谈话内容")
    mood: Mood = Field(description="心理状态 (五级)")
    mood_note: str | None = Field(default=None, max_length=512, description="心理状态描述")
    follow_up_needed: bool = Field(default=False, description="需要跟进")
    follow_up: str | None = Field(default=None, max_length=512, description="跟进措施")


class HomeVisitContent(_Content):
    """家访."""

    met: str = Field(min_length=1, max_length=128, description="见到的人 (如: 祖母、父亲视频)")
    living_conditions: str = Field(min_length=1, max_length=1024, description="生活条件")
    guardian_situation: str = Field(min_length=1, max_length=1024, description="监护人情况")
    notes: str | None = Field(default=None, max_length=2048, description="其他情况与建议")


class ContactContent(_Content):
    """与监护人沟通 / 与外出家长联系."""

    channel: ContactChannel = Field(description="方式: 电话、视频、书信、面谈")
    with_whom: str | None = Field(default=None, max_length=64, description="联系对象")
    summary: str = Field(min_length=1, max_length=2048, description="内容摘要")


class CounsellingContent(_Content):
    """心理咨询 (仅心理辅导教师与学校管理员可见)."""

    summary: str = Field(min_length=1, max_length=4096, description="咨询内容")
    assessment: str | None = Field(default=None, max_length=2048, description="评估")
    follow_up_needed: bool = Field(default=False, description="需要跟进")
    referral: str | None = Field(default=None, max_length=256, description="转介")


class AidContent(_Content):
    """资助."""

    amount_fen: int = Field(gt=0, le=100_000_000, description="金额 (分)")
    source: AidSource = Field(description="来源, 如 两免一补、社会捐助")
    donor: str | None = Field(default=None, max_length=128, description="资助方")
    note: str | None = Field(default=None, max_length=512)


class AwardContent(_Content):
    """表彰."""

    title: str = Field(min_length=1, max_length=128, description="表彰名称, 如 六一优秀少先队员")
    awarded_by: str | None = Field(default=None, max_length=128, description="颁发单位")
    note: str | None = Field(default=None, max_length=512)


CONTENT_OF: dict[CareKind, type[_Content]] = {
    CareKind.talk: TalkContent,
    CareKind.home_visit: HomeVisitContent,
    CareKind.guardian_contact: ContactContent,
    CareKind.parent_contact: ContactContent,
    CareKind.counselling: CounsellingContent,
    CareKind.aid: AidContent,
    CareKind.award: AwardContent,
}


# ---- API schemas: settings, pairings ------------------------------------------------------------------------


class CareSettingPublic(BaseModel):
    school_id: uuid.UUID
    proxy_parent_cap: int = Field(description="每位代理家长最多结对的儿童数")
    mentor_cap: int = Field(description="每位导师最多结对的儿童数")
    edit_window_minutes: int = Field(description="记录作者可直接更正的时限 (分钟)")


class CareSettingUpdate(FormInput):
    model_config = ConfigDict(json_schema_extra={"examples": [{"proxy_parent_cap": 4, "edit_window_minutes": 720}]})

    proxy_parent_cap: int | None = Field(default=None, ge=1, le=50)
    mentor_cap: int | None = Field(default=None, ge=1, le=20)
    edit_window_minutes: int | None = Field(default=None, ge=0, le=10080)


class PairingCreate(FormInput):
    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {"kind": "proxy_parent", "staff_id": "5b1f0d2e-0000-4000-8000-000000000002"},
                {"kind": "mentor", "outside_name": "王建国", "outside_phone": "138 0013 8000"},
            ]
        }
    )

    kind: PairingKind = Field(description="proxy_parent 代理家长 | study_buddy 学习伙伴 | mentor 导师")
    staff_id: uuid.UUID | None = Field(default=None, description="代理家长 / 校内导师的教师账号")
    buddy_child_id: uuid.UUID | None = Field(default=None, description="学习伙伴: 同校的另一名学生")
    outside_name: str | None = Field(default=None, max_length=64, description="校外导师姓名")
    outside_phone: str | None = Field(default=None, max_length=32, description="校外导师电话")
    started_on: date | None = Field(default=None, description="开始日期 (默认今天)")


class PairingEnd(FormInput):
    model_config = ConfigDict(json_schema_extra={"examples": [{"reason": "reassigned", "note": "调整为王老师结对"}]})

    reason: PairingEndReason
    note: str | None = Field(default=None, max_length=256)
    ended_on: date | None = Field(default=None, description="结束日期 (默认今天)")


class Milestone(FormInput):
    due_on: date | None = Field(default=None, description="预计时间")
    description: str = Field(min_length=1, max_length=512, description="阶段性目标")
    achieved_on: date | None = Field(default=None, description="达成日期")


class HelpPlanIn(FormInput):
    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {
                    "goals": "提高数学成绩, 养成按时完成作业的习惯",
                    "content": "每周两次辅导作业, 每月一次谈心",
                    "schedule": "每周二、周四放学后",
                    "milestones": [{"due_on": "2026-12-31", "description": "数学单元测验及格"}],
                }
            ]
        }
    )

    goals: str = Field(min_length=1, max_length=2048, description="帮扶目标")
    content: str = Field(min_length=1, max_length=4096, description="帮扶内容")
    schedule: str = Field(min_length=1, max_length=1024, description="帮扶时间安排")
    milestones: list[Milestone] = Field(default=[], max_length=50, description="阶段性目标")


class HelpPlanPublic(BaseModel):
    goals: str
    content: str
    schedule: str
    milestones: list[Milestone]
    updated_at: datetime
    updated_by_id: uuid.UUID | None


class ProgressNoteCreate(FormInput):
    model_config = ConfigDict(json_schema_extra={"examples": [{"text": "本月数学测验 78 分, 比上月提高 15 分"}]})

    noted_on: date | None = Field(default=None, description="日期 (默认今天)")
    text: str = Field(min_length=1, max_length=4096)


class ProgressNotePublic(BaseModel):
    id: uuid.UUID
    noted_on: date
    text: str
    author_id: uuid.UUID
    author_name: str | None
    created_at: datetime


class PairingPublic(BaseModel):
    id: uuid.UUID
    school_id: uuid.UUID
    child_id: uuid.UUID
    child_name: str | None
    kind: PairingKind
    kind_label: str
    staff_id: uuid.UUID | None
    staff_name: str | None
    buddy_child_id: uuid.UUID | None
    buddy_name: str | None
    outside_name: str | None
    outside_phone: str | None
    started_on: date
    ended_on: date | None
    end_reason: PairingEndReason | None
    end_reason_label: str | None
    end_note: str | None
    active: bool


class PairingDetail(PairingPublic):
    plan: HelpPlanPublic | None
    progress_notes: list[ProgressNotePublic]


class UnpairedChild(BaseModel):
    child_id: uuid.UUID
    name: str
    class_id: uuid.UUID | None
    class_label: str | None
    last_proxy_parent_ended_on: date | None = Field(description="上一位代理家长结对结束的日期")
    last_end_reason: PairingEndReason | None


class CounsellorFlag(BaseModel):
    model_config = ConfigDict(extra="forbid", json_schema_extra={"examples": [{"is_counsellor": True}]})

    is_counsellor: bool = Field(description="心理辅导教师: 可查看和填写心理咨询记录")


# ---- API schemas: care records --------------------------------------------------------------------------------


class CareRecordCreate(BaseModel):
    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={
            "examples": [
                {
                    "kind": "talk",
                    "occurred_on": "2026-11-27",
                    "content": {
                        "place": "心理咨询室",
                        "topics": "想念在外打工的妈妈, 最近作业拖拉",
                        "mood": "low",
                        "mood_note": "情绪低落, 说话少",
                        "follow_up_needed": True,
                        "follow_up": "联系妈妈本周视频通话",
                    },
                }
            ]
        },
    )

    kind: CareKind
    occurred_on: date = Field(description="发生日期 (北京时间, 不能晚于今天)")
    content: dict[str, Any] = Field(description="按类型填写的内容 (见 TalkContent、HomeVisitContent …)")


class CareRecordCorrection(BaseModel):
    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={"examples": [{"content": {"place": "教室", "topics": "…", "mood": "fair"}}]},
    )

    occurred_on: date | None = Field(default=None, description="更正后的日期 (不填则不变)")
    content: dict[str, Any] = Field(description="更正后的完整内容")


class AmendmentCreate(FormInput):
    model_config = ConfigDict(
        json_schema_extra={"examples": [{"reason": "补充家访后了解的情况", "text": "祖母近期住院, 由姑姑临时照看"}]}
    )

    reason: str = Field(min_length=1, max_length=512, description="补正原因")
    text: str = Field(min_length=1, max_length=4096, description="补充或更正的内容")


class CareRecordVersionPublic(BaseModel):
    version: int
    occurred_on: date
    content: dict[str, Any]
    corrected_by_id: uuid.UUID
    corrected_at: datetime


class AmendmentPublic(BaseModel):
    id: uuid.UUID
    reason: str
    text: str
    author_id: uuid.UUID
    author_name: str | None
    created_at: datetime


class CareRecordPublic(BaseModel):
    id: uuid.UUID
    school_id: uuid.UUID
    child_id: uuid.UUID
    kind: CareKind
    kind_label: str
    occurred_on: date
    author_id: uuid.UUID
    author_name: str | None
    created_at: datetime
    content: dict[str, Any]
    version: int
    editable_until: datetime = Field(description="作者可直接更正至此时; 之后只能补正 (amendment)")
    amendment_count: int


class CareRecordDetail(CareRecordPublic):
    versions: list[CareRecordVersionPublic] = Field(description="被更正前的各版本, 旧的在前")
    amendments: list[AmendmentPublic]


class ChainReport(BaseModel):
    school_id: uuid.UUID
    links: int = Field(description="链上的记录数 (记录、更正、补正)")
    head_seq: int
    intact: bool
    first_break: ChainBreak | None
    verified_at: datetime


# ---- row-level security (api/models/row_security.py) ----
# Pairings and a school's care settings and chain head are the school's: its staff and those above it. Care
# records follow the child (staff who see the child's school see them — a transferred child's records go with
# the file); versions and amendments follow their record. Families see none of it. Counselling records are
# narrowed further in the service (api/services/care/scope.py): that depends on a flag of the caller's account.
_OF_PAIRING = "EXISTS (SELECT 1 FROM care_pairing p WHERE p.id = {table}.pairing_id AND p.school_id = ANY ({schools}))"
_OF_RECORD = (
    "EXISTS (SELECT 1 FROM care_record r JOIN child c ON c.id = r.child_id"
    " WHERE r.id = {table}.record_id AND c.school_id = ANY ({schools}))"
)
row_security("care_setting", Policy("staff", using=of_school()))
row_security("care_chain_head", Policy("staff", using=of_school()))
row_security("care_pairing", Policy("staff", using=of_school()))
for _table in ("care_help_plan", "care_progress_note"):
    row_security(_table, Policy("staff", using=_OF_PAIRING.format(table=_table, schools=SCHOOLS)))
row_security("care_record", Policy("staff", using=of_staff_child("care_record")))
for _table in ("care_record_version", "care_record_amendment"):
    row_security(_table, Policy("staff", using=_OF_RECORD.format(table=_table, schools=SCHOOLS)))
