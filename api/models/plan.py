"""工作计划 and 关爱活动: a school's care plan for a term or school year, its 领导小组 and month-by-month items, and
the activities that carry the plan out (with the children who took part).

A plan covers ``starts_on``–``ends_on`` of one school (terms of item 3's summary are found by these dates); a
school's plans never overlap. An item is planned, done (linked to what fulfilled it: a kind and an id, an
activity today) or dropped with a reason; *late* is never stored — it is computed from the month and the clock
(:mod:`api.services.plan.progress`). An activity's participants are rows joinable to ``child.id``, with
whether the child was left-behind when the activity was recorded (三个优先 counts places, not children).
"""

import re
import uuid
from datetime import date, datetime
from enum import StrEnum
from typing import Annotated, Self

import sqlalchemy as sa
from pydantic import AfterValidator, BaseModel, model_validator
from pydantic import Field as PydanticField
from sqlalchemy.dialects.postgresql import ExcludeConstraint
from sqlmodel import Field, SQLModel

from api.models.base import FormInput, audited, enum_type, fk_field, id_field, timestamp_field
from api.models.row_security import ACCOUNT, ROLE, Policy, of_school, row_security

# ---- enums ---------------------------------------------------------------------------------------------


class PlanPeriod(StrEnum):
    term = "term"  # 学期
    school_year = "school_year"  # 学年


class MemberPosition(StrEnum):
    leader = "leader"  # 组长 (校长)
    deputy = "deputy"  # 副组长
    member = "member"  # 成员


class WorkKind(StrEnum):
    """The kind of work a planned item is (what the seeds' 具体活动安排 list, month by month)."""

    organisation = "organisation"  # 成立领导小组, 制定计划
    archive_update = "archive_update"  # 信息更新, 建档
    home_visit_talk = "home_visit_talk"  # 家访和谈心
    family_phone = "family_phone"  # 开通亲情电话 / 节日亲情热线
    activity = "activity"  # 关爱活动 (班会, 讲座, 比赛…)
    pairing = "pairing"  # 师生结对帮扶
    guardian_training = "guardian_training"  # 家长学校, 监护人培训
    psychological = "psychological"  # 心理健康咨询
    aid = "aid"  # 送温暖, 资助
    summary_archiving = "summary_archiving"  # 工作总结, 档案整理
    other = "other"  # 其他


class ItemState(StrEnum):
    """What is stored about an item; *late* is derived (:class:`ItemProgress`)."""

    planned = "planned"  # 计划中
    done = "done"  # 已完成
    dropped = "dropped"  # 已取消


class ItemProgress(StrEnum):
    planned = "planned"  # 计划中
    late = "late"  # 逾期未完成 (its month has passed in Asia/Shanghai)
    done = "done"  # 已完成
    dropped = "dropped"  # 已取消


class FulfilmentKind(StrEnum):
    """What a done item points at (kind + id); care records may join later."""

    activity = "activity"  # 关爱活动


class ActivityKind(StrEnum):
    class_meeting = "class_meeting"  # 主题班会
    lecture_law = "lecture_law"  # 法制讲座
    lecture_safety = "lecture_safety"  # 安全讲座
    lecture_psychology = "lecture_psychology"  # 心理健康讲座
    contest = "contest"  # 文体比赛
    reading = "reading"  # 读书活动
    family_chat = "family_chat"  # 亲情聊天
    social_practice = "social_practice"  # 社会实践
    parent_school = "parent_school"  # 家长学校
    festival = "festival"  # 六一 / 节日活动
    other = "other"  # 其他


class Organiser(StrEnum):
    school = "school"  # 学校
    school_class = "class"  # 班级
    guan_gong_wei = "guan_gong_wei"  # 关工委
    womens_federation = "womens_federation"  # 妇联
    young_pioneers = "young_pioneers"  # 少先队
    volunteers = "volunteers"  # 志愿者
    other = "other"  # 其他


PLAN_PERIOD_LABELS = {PlanPeriod.term: "学期", PlanPeriod.school_year: "学年"}
POSITION_LABELS = {MemberPosition.leader: "组长", MemberPosition.deputy: "副组长", MemberPosition.member: "成员"}
WORK_KIND_LABELS = {
    WorkKind.organisation: "组织与计划",
    WorkKind.archive_update: "信息更新",
    WorkKind.home_visit_talk: "家访谈心",
    WorkKind.family_phone: "亲情电话",
    WorkKind.activity: "关爱活动",
    WorkKind.pairing: "结对帮扶",
    WorkKind.guardian_training: "家长学校",
    WorkKind.psychological: "心理健康",
    WorkKind.aid: "帮困送温暖",
    WorkKind.summary_archiving: "总结归档",
    WorkKind.other: "其他",
}
PROGRESS_LABELS = {
    ItemProgress.planned: "计划中",
    ItemProgress.late: "逾期",
    ItemProgress.done: "已完成",
    ItemProgress.dropped: "已取消",
}
ACTIVITY_KIND_LABELS = {
    ActivityKind.class_meeting: "主题班会",
    ActivityKind.lecture_law: "法制讲座",
    ActivityKind.lecture_safety: "安全讲座",
    ActivityKind.lecture_psychology: "心理健康讲座",
    ActivityKind.contest: "文体比赛",
    ActivityKind.reading: "读书活动",
    ActivityKind.family_chat: "亲情聊天",
    ActivityKind.social_practice: "社会实践",
    ActivityKind.parent_school: "家长学校",
    ActivityKind.festival: "六一及节日活动",
    ActivityKind.other: "其他",
}
ORGANISER_LABELS = {
    Organiser.school: "学校",
    Organiser.school_class: "班级",
    Organiser.guan_gong_wei: "关工委",
    Organiser.womens_federation: "妇联",
    Organiser.young_pioneers: "少先队",
    Organiser.volunteers: "志愿者",
    Organiser.other: "其他",
}


# ---- tables ------------------------------------------------------------------------------------------


@audited("care_plan")
class CarePlan(SQLModel, table=True):
    """关爱留守儿童工作计划 of one school for a term or a school year."""

    __tablename__ = "care_plan"
    __table_args__ = (
        sa.CheckConstraint("ends_on >= starts_on", name="dates"),
        # A plan item names (plan_id, school_id) so that it cannot sit under another school's plan.
        sa.UniqueConstraint("id", "school_id", name="uq_care_plan_id_school"),
        ExcludeConstraint(
            (sa.column("school_id"), "="),
            (sa.func.daterange(sa.column("starts_on"), sa.column("ends_on"), sa.literal_column("'[]'")), "&&"),
            name="ex_care_plan_overlap",
            using="gist",
        ),
    )

    id: uuid.UUID = id_field()
    school_id: uuid.UUID = fk_field("school.id", index=False)
    name: str = Field(max_length=64, description="e.g. 2026年秋季学期关爱留守儿童工作计划")
    period: PlanPeriod = Field(sa_type=enum_type(PlanPeriod, 16))
    starts_on: date
    ends_on: date
    goals: str = Field(default="", max_length=4000, description="工作目标")
    template_key: str | None = Field(default=None, max_length=32, description="从哪个典型计划开始")
    created_by_id: uuid.UUID | None = fk_field("account.id", nullable=True, index=False)
    created_at: datetime = timestamp_field(default_now=True)
    updated_at: datetime = timestamp_field(default_now=True)


@audited("care_plan_member")
class CarePlanMember(SQLModel, table=True):
    """A member of the plan's 领导小组: a staff account of the school, or a named outside person."""

    __tablename__ = "care_plan_member"
    __table_args__ = (
        sa.ForeignKeyConstraint(
            ["plan_id", "school_id"],
            ["care_plan.id", "care_plan.school_id"],
            name="fk_care_plan_member_plan",
            ondelete="CASCADE",
        ),
        sa.CheckConstraint("account_id IS NOT NULL OR name IS NOT NULL", name="who"),
        # One 组长 per plan.
        sa.Index("uq_care_plan_member_leader", "plan_id", unique=True, postgresql_where=sa.text("position = 'leader'")),
        sa.Index("uq_care_plan_member_account", "plan_id", "account_id", unique=True),
    )

    id: uuid.UUID = id_field()
    plan_id: uuid.UUID = Field(index=False)
    school_id: uuid.UUID = fk_field("school.id", index=False)
    position: MemberPosition = Field(sa_type=enum_type(MemberPosition, 16))
    account_id: uuid.UUID | None = fk_field("account.id", nullable=True, index=False)
    name: str | None = Field(default=None, max_length=32, description="校外人员姓名 (or the account's name)")
    affiliation: str | None = Field(default=None, max_length=64, description="单位/职务, e.g. 村委会主任")
    duty: str = Field(default="", max_length=256, description="职责")
    sort_order: int = Field(default=0)
    created_at: datetime = timestamp_field(default_now=True)


@audited("care_plan_item")
class CarePlanItem(SQLModel, table=True):
    """One planned piece of work in one month (具体活动安排), with its owner and its progress."""

    __tablename__ = "care_plan_item"
    __table_args__ = (
        sa.ForeignKeyConstraint(
            ["plan_id", "school_id"],
            ["care_plan.id", "care_plan.school_id"],
            name="fk_care_plan_item_plan",
            ondelete="CASCADE",
        ),
        sa.UniqueConstraint("id", "school_id", name="uq_care_plan_item_id_school"),
        sa.CheckConstraint("extract(day from month) = 1", name="month_start"),
        sa.CheckConstraint(
            "(state = 'done') = (done_on IS NOT NULL)"
            " AND (state = 'dropped') = (dropped_reason IS NOT NULL)"
            " AND (fulfilled_by_id IS NULL OR state = 'done')"
            " AND ((fulfilled_by_kind IS NULL) = (fulfilled_by_id IS NULL))",
            name="progress",
        ),
        sa.Index("ix_care_plan_item_plan_month", "plan_id", "month", "sort_order"),
        sa.Index("ix_care_plan_item_school_month", "school_id", "month"),
        sa.Index("ix_care_plan_item_owner", "owner_account_id"),
        sa.Index("ix_care_plan_item_fulfilled_by", "fulfilled_by_kind", "fulfilled_by_id"),
    )

    id: uuid.UUID = id_field()
    plan_id: uuid.UUID = Field(index=False)
    school_id: uuid.UUID = fk_field("school.id", index=False)
    month: date = Field(description="the first day of the item's month")
    title: str = Field(max_length=128)
    kind: WorkKind = Field(sa_type=enum_type(WorkKind, 24))
    owner_account_id: uuid.UUID | None = fk_field("account.id", nullable=True, index=False)
    owner_name: str | None = Field(default=None, max_length=64, description="负责人/部门, e.g. 少先队大队部")
    notes: str | None = Field(default=None, max_length=1024)
    source: str | None = Field(default=None, max_length=128, description="典型计划的出处 (seed and month)")
    sort_order: int = Field(default=0)
    state: ItemState = Field(default=ItemState.planned, sa_type=enum_type(ItemState, 16))
    done_on: date | None = None
    done_note: str | None = Field(default=None, max_length=1024)
    fulfilled_by_kind: FulfilmentKind | None = Field(default=None, sa_type=enum_type(FulfilmentKind, 16))
    fulfilled_by_id: uuid.UUID | None = None
    dropped_reason: str | None = Field(default=None, max_length=256)
    progress_by_id: uuid.UUID | None = fk_field("account.id", nullable=True, index=False)
    created_at: datetime = timestamp_field(default_now=True)
    updated_at: datetime = timestamp_field(default_now=True)


@audited("activity")
class Activity(SQLModel, table=True):
    """关爱活动: what was done, when, where, by whom, for whom, and with what outcome."""

    __tablename__ = "activity"
    __table_args__ = (
        sa.UniqueConstraint("id", "school_id", name="uq_activity_id_school"),
        sa.ForeignKeyConstraint(
            ["plan_item_id", "school_id"],
            ["care_plan_item.id", "care_plan_item.school_id"],
            name="fk_activity_plan_item",
        ),
        sa.CheckConstraint("adult_count >= 0", name="adult_count"),
        sa.Index("ix_activity_school_held", "school_id", "held_on"),
        # An item is fulfilled by one activity.
        sa.Index("uq_activity_plan_item", "plan_item_id", unique=True),
    )

    id: uuid.UUID = id_field()
    school_id: uuid.UUID = fk_field("school.id", index=False)
    class_id: uuid.UUID | None = fk_field("school_class.id", nullable=True, index=False)
    plan_item_id: uuid.UUID | None = Field(default=None)
    kind: ActivityKind = Field(sa_type=enum_type(ActivityKind, 24))
    title: str = Field(max_length=64)
    held_on: date
    place: str = Field(max_length=128)
    organiser: Organiser = Field(sa_type=enum_type(Organiser, 24))
    organiser_name: str | None = Field(default=None, max_length=64, description="e.g. 市关工委, 三年级1班")
    adult_count: int = Field(default=0)
    adult_names: str | None = Field(default=None, max_length=512)
    outcome: str = Field(default="", max_length=1024)
    recorded_by_id: uuid.UUID | None = fk_field("account.id", nullable=True, index=False)
    created_at: datetime = timestamp_field(default_now=True)
    updated_at: datetime = timestamp_field(default_now=True)


@audited("activity_participant")
class ActivityParticipant(SQLModel, table=True):
    """A child who took part in an activity — one place. ``left_behind`` is the child's status when recorded."""

    __tablename__ = "activity_participant"
    __table_args__ = (
        sa.ForeignKeyConstraint(
            ["activity_id", "school_id"],
            ["activity.id", "activity.school_id"],
            name="fk_activity_participant_activity",
            ondelete="CASCADE",
        ),
        sa.Index("ix_activity_participant_child", "child_id", "held_on"),
        sa.Index("ix_activity_participant_school_held", "school_id", "held_on"),
    )

    activity_id: uuid.UUID = Field(primary_key=True)
    child_id: uuid.UUID = Field(foreign_key="child.id", primary_key=True, ondelete="RESTRICT")
    school_id: uuid.UUID = fk_field("school.id", index=False)
    held_on: date = Field(description="the activity's date, kept here for the per-child and per-term reads")
    left_behind: bool


# ---- row-level security (api/models/row_security.py) ----
# Every staff member of a school reads its plan and activities (the bureau and the township their schools');
# only school admins write. An item's owner may update that item (its progress: the service limits which
# fields). Families see none of it: an activity lists other children who took part.
_ADMIN = f"{ROLE} = 'school_admin' AND {of_school()}"
for _table in ("care_plan", "care_plan_member", "activity", "activity_participant"):
    row_security(_table, Policy("staff", using=of_school(), command="SELECT"), Policy("admin", using=_ADMIN))
row_security(
    "care_plan_item",
    Policy("staff", using=of_school(), command="SELECT"),
    Policy("admin", using=_ADMIN),
    Policy("owner", using=f"owner_account_id = {ACCOUNT} AND {of_school()}", command="UPDATE"),
)


# ---- API schemas -------------------------------------------------------------------------------------

MONTH_PATTERN = r"^[0-9]{4}-(0[1-9]|1[0-2])$"
_MONTH = re.compile(MONTH_PATTERN)


def parse_month(value: str) -> date:
    """``2026-10`` → 2026-10-01."""
    if not _MONTH.match(value):
        raise ValueError("月份格式应为 YYYY-MM (month must be YYYY-MM)")
    return date(int(value[:4]), int(value[5:]), 1)


def month_text(month: date) -> str:
    return f"{month.year:04d}-{month.month:02d}"


def _check_month(value: str) -> str:
    parse_month(value)
    return value


MonthText = Annotated[str, AfterValidator(_check_month)]


class MemberCreate(FormInput):
    position: MemberPosition = MemberPosition.member
    account_id: uuid.UUID | None = PydanticField(None, description="本校教职工账号")
    name: str | None = PydanticField(None, max_length=32, description="校外人员姓名 (when no account)")
    affiliation: str | None = PydanticField(None, max_length=64)
    duty: str = PydanticField("", max_length=256, description="职责")
    sort_order: int = PydanticField(0, ge=0, le=1000)

    @model_validator(mode="after")
    def _someone(self) -> Self:
        if self.account_id is None and self.name is None:
            raise ValueError("请选择教职工账号或填写姓名 (an account or a name)")
        return self


class MemberUpdate(FormInput):
    position: MemberPosition | None = None
    name: str | None = PydanticField(None, max_length=32)
    affiliation: str | None = PydanticField(None, max_length=64)
    duty: str | None = PydanticField(None, max_length=256)
    sort_order: int | None = PydanticField(None, ge=0, le=1000)


class MemberPublic(BaseModel):
    id: uuid.UUID
    position: MemberPosition
    position_label: str
    account_id: uuid.UUID | None
    name: str
    affiliation: str | None
    duty: str


class PlanCreate(FormInput):
    name: str = PydanticField(max_length=64, min_length=1)
    period: PlanPeriod = PlanPeriod.term
    starts_on: date
    ends_on: date
    goals: str | None = PydanticField(None, max_length=4000, description="工作目标 (the template's when empty)")
    template: str | None = PydanticField(
        None, max_length=32, description="典型计划: autumn_term / spring_term / school_year (GET /plan-templates)"
    )
    leading_group: list[MemberCreate] = PydanticField([], max_length=50)

    @model_validator(mode="after")
    def _dates(self) -> Self:
        if self.ends_on < self.starts_on:
            raise ValueError("结束日期早于开始日期 (ends_on is before starts_on)")
        if (self.ends_on - self.starts_on).days > 400:
            raise ValueError("计划最长一个学年 (a plan covers at most a school year)")
        return self


class PlanUpdate(FormInput):
    name: str | None = PydanticField(None, max_length=64, min_length=1)
    starts_on: date | None = None
    ends_on: date | None = None
    goals: str | None = PydanticField(None, max_length=4000)


class FulfilledBy(BaseModel):
    kind: FulfilmentKind
    id: uuid.UUID


class ItemCreate(FormInput):
    month: MonthText = PydanticField(description="YYYY-MM", examples=["2026-10"], pattern=MONTH_PATTERN)
    title: str = PydanticField(max_length=128, min_length=1)
    kind: WorkKind
    owner_account_id: uuid.UUID | None = None
    owner_name: str | None = PydanticField(None, max_length=64)
    notes: str | None = PydanticField(None, max_length=1024)
    sort_order: int = PydanticField(0, ge=0, le=1000)


class ItemUpdate(FormInput):
    month: MonthText | None = PydanticField(None, description="YYYY-MM", pattern=MONTH_PATTERN)
    title: str | None = PydanticField(None, max_length=128, min_length=1)
    kind: WorkKind | None = None
    owner_account_id: uuid.UUID | None = None
    owner_name: str | None = PydanticField(None, max_length=64)
    notes: str | None = PydanticField(None, max_length=1024)
    sort_order: int | None = PydanticField(None, ge=0, le=1000)


class ProgressUpdate(FormInput):
    """Mark an item done (with what fulfilled it, or a note), dropped (with a reason), or planned again."""

    state: ItemState
    done_on: date | None = PydanticField(None, description="完成日期 (default: the linked activity's date)")
    note: str | None = PydanticField(None, max_length=1024, description="完成情况")
    fulfilled_by: FulfilledBy | None = None
    reason: str | None = PydanticField(None, max_length=256, description="取消原因")


class ItemPublic(BaseModel):
    id: uuid.UUID
    plan_id: uuid.UUID
    month: str
    title: str
    kind: WorkKind
    kind_label: str
    owner_account_id: uuid.UUID | None
    owner_name: str | None
    notes: str | None
    source: str | None
    state: ItemState
    progress: ItemProgress
    progress_label: str
    done_on: date | None
    done_note: str | None
    fulfilled_by: FulfilledBy | None
    dropped_reason: str | None


class ProgressCounts(BaseModel):
    planned: int = 0
    late: int = 0
    done: int = 0
    dropped: int = 0


class PlanSummary(BaseModel):
    id: uuid.UUID
    school_id: uuid.UUID
    name: str
    period: PlanPeriod
    starts_on: date
    ends_on: date
    template_key: str | None


class PlanView(PlanSummary):
    goals: str
    leading_group: list[MemberPublic]
    items: list[ItemPublic]
    progress: ProgressCounts


class TemplateItemPublic(BaseModel):
    month: int = PydanticField(description="calendar month 1–12")
    title: str
    kind: WorkKind
    owner_hint: str
    source: str


class TemplatePublic(BaseModel):
    key: str
    name: str
    months: list[int]
    goals: str
    goals_source: str
    items: list[TemplateItemPublic]


class ActivityCreate(FormInput):
    kind: ActivityKind
    title: str = PydanticField(max_length=64, min_length=1, description="e.g. 留守儿童拔河比赛")
    held_on: date = PydanticField(description="活动日期 (not in the future)")
    place: str = PydanticField(max_length=128, min_length=1)
    organiser: Organiser
    organiser_name: str | None = PydanticField(None, max_length=64)
    class_id: uuid.UUID | None = PydanticField(None, description="组织班级 (organiser = class)")
    child_ids: list[uuid.UUID] = PydanticField([], max_length=2000, description="参加的学生 (本校档案)")
    adult_count: int = PydanticField(0, ge=0, le=100_000)
    adult_names: str | None = PydanticField(None, max_length=512)
    outcome: str = PydanticField("", max_length=1024, description="活动效果")
    plan_item_id: uuid.UUID | None = PydanticField(None, description="落实的计划项目")


class ActivityUpdate(FormInput):
    kind: ActivityKind | None = None
    title: str | None = PydanticField(None, max_length=64, min_length=1)
    held_on: date | None = None
    place: str | None = PydanticField(None, max_length=128, min_length=1)
    organiser: Organiser | None = None
    organiser_name: str | None = PydanticField(None, max_length=64)
    class_id: uuid.UUID | None = None
    child_ids: list[uuid.UUID] | None = PydanticField(None, max_length=2000, description="replaces the list")
    adult_count: int | None = PydanticField(None, ge=0, le=100_000)
    adult_names: str | None = PydanticField(None, max_length=512)
    outcome: str | None = PydanticField(None, max_length=1024)
    plan_item_id: uuid.UUID | None = None


class ParticipantPublic(BaseModel):
    child_id: uuid.UUID
    name: str
    left_behind: bool


class ActivitySummary(BaseModel):
    id: uuid.UUID
    school_id: uuid.UUID
    kind: ActivityKind
    kind_label: str
    title: str
    held_on: date
    place: str
    organiser: Organiser
    organiser_label: str
    organiser_name: str | None
    class_id: uuid.UUID | None
    plan_item_id: uuid.UUID | None
    children: int
    left_behind_children: int
    adult_count: int


class ActivityView(ActivitySummary):
    adult_names: str | None
    outcome: str
    participants: list[ParticipantPublic]


class ChildActivity(BaseModel):
    """One activity a child took part in (for the child's timeline)."""

    activity_id: uuid.UUID
    held_on: date
    kind: ActivityKind
    kind_label: str
    title: str
    place: str
    organiser_label: str
    left_behind: bool


class PriorityShare(BaseModel):
    """三个优先 in activities: of the places in a school's activities over a period, how many went to
    left-behind children."""

    school_id: uuid.UUID
    school_name: str
    starts_on: date
    ends_on: date
    activities: int
    places: int
    left_behind_places: int
    share: float | None = PydanticField(description="left_behind_places / places (null when no places)")
