"""一人一档: the child archive, the people who care for the child, and the child's life events.

A child is never deleted: they leave the roster with a status, a reason and a date. The people who care
for the child are in :mod:`api.models.guardians`.
"""

import uuid
from datetime import date, datetime
from enum import StrEnum
from typing import Annotated, Any, Literal, Self

import sqlalchemy as sa
from pydantic import BaseModel, field_validator, model_validator
from sqlmodel import Field, SQLModel

from api.models.base import SENSITIVE, FormInput, audited, enum_type, fk_field, id_field, timestamp_field
from api.models.row_security import FAMILY_CHILDREN, Policy, of_school, of_staff_child, row_security


class Sex(StrEnum):
    male = "male"  # 男
    female = "female"  # 女


class ChildStatus(StrEnum):
    """Whether the child is on a school's roster (在册) — never deleted, only moved off with a reason."""

    enrolled = "enrolled"  # 在册
    graduated = "graduated"  # 毕业
    left = "left"  # 离校 (转出县外、辍学、其他)


class ParentsAway(StrEnum):
    both = "both"  # 父母均外出务工
    father = "father"  # 父亲外出
    mother = "mother"  # 母亲外出
    none = "none"  # 父母均在家 (no longer left-behind)


class GuardianshipRating(StrEnum):
    """The national form's scale for how well the child is looked after."""

    good = "good"  # 好
    fairly_good = "fairly_good"  # 较好
    average = "average"  # 一般
    poor = "poor"  # 差
    none = "none"  # 无人监护


class ChildEventKind(StrEnum):
    enrolled = "enrolled"  # 建档/入学
    transferred = "transferred"  # 转学
    class_changed = "class_changed"  # 调班
    promoted = "promoted"  # 升级 (每学年末交接)
    parents_returned = "parents_returned"  # 父母返乡, 不再留守
    became_left_behind = "became_left_behind"  # 父母外出, 成为留守儿童
    graduated = "graduated"  # 毕业
    left = "left"  # 离校
    re_enrolled = "re_enrolled"  # 重新入学


@audited("child")
class Child(SQLModel, table=True):
    __tablename__ = "child"
    __table_args__ = (
        sa.Index("ix_child_school_status", "school_id", "status", "is_left_behind"),
        sa.Index("ix_child_name_trgm", "name", postgresql_using="gin", postgresql_ops={"name": "gin_trgm_ops"}),
        sa.Index(
            "ix_child_name_pinyin_trgm",
            "name_pinyin",
            postgresql_using="gin",
            postgresql_ops={"name_pinyin": "gin_trgm_ops"},
        ),
        # Initials are searched by prefix (zxm%): pattern ops serve LIKE whatever the database collation.
        sa.Index(
            "ix_child_name_initials_prefix", "name_initials", postgresql_ops={"name_initials": "varchar_pattern_ops"}
        ),
    )

    id: uuid.UUID = id_field()
    school_id: uuid.UUID = fk_field("school.id")
    class_id: uuid.UUID | None = fk_field("school_class.id", nullable=True)
    name: str = Field(max_length=32)
    name_pinyin: str = Field(default="", max_length=128, description="zhangxiaoming (search key)")
    name_initials: str = Field(default="", max_length=32, description="zxm (search key)")
    sex: Sex = Field(sa_type=enum_type(Sex, 8))
    birth_date: date
    ethnicity: str = Field(default="汉族", max_length=16)
    # 居民身份证号: AES-GCM ciphertext, a keyed blind index for uniqueness/look-up, and a masked form.
    id_number_cipher: str | None = Field(default=None, max_length=256, sa_column_kwargs=SENSITIVE)
    id_number_index: str | None = Field(default=None, max_length=64, unique=True, sa_column_kwargs=SENSITIVE)
    id_number_masked: str | None = Field(default=None, max_length=32)
    household_registration: str | None = Field(default=None, max_length=128, description="户籍所在地")
    home_address: str | None = Field(default=None, max_length=256, description="家庭住址")
    is_boarding: bool = Field(default=False, description="寄宿")
    health: str | None = Field(default=None, max_length=256, description="健康状况")

    is_left_behind: bool = Field(default=True, description="是否留守")
    parents_away: ParentsAway = Field(default=ParentsAway.both, sa_type=enum_type(ParentsAway, 8))
    left_behind_since: date | None = Field(default=None, description="何时开始留守")

    character: str | None = Field(default=None, max_length=512, description="性格")
    habits: str | None = Field(default=None, max_length=512, description="行为习惯")
    interests: str | None = Field(default=None, max_length=512, description="兴趣爱好")
    study_notes: str | None = Field(default=None, max_length=1024, description="学习动机与能力")
    guardian_relationship: str | None = Field(default=None, max_length=512, description="与监护人关系")
    parent_contact_frequency: str | None = Field(default=None, max_length=64, description="与父母联系频率")
    guardianship_rating: GuardianshipRating | None = Field(default=None, sa_type=enum_type(GuardianshipRating, 16))

    special_hardship: bool = Field(default=False, description="特困")
    single_parent: bool = Field(default=False, description="单亲")
    struggling_learner: bool = Field(default=False, description="学困生")
    disability: bool = Field(default=False, description="残疾")
    needs_individual_plan: bool = Field(default=False, description="需个别教育管理方案")
    notes: str | None = Field(default=None, max_length=2048)

    status: ChildStatus = Field(default=ChildStatus.enrolled, sa_type=enum_type(ChildStatus, 16))
    status_reason: str | None = Field(default=None, max_length=256)
    status_changed_on: date | None = None
    created_at: datetime = timestamp_field(default_now=True)
    updated_at: datetime = timestamp_field(default_now=True)


class ChildEvent(SQLModel, table=True):
    """A change in the child's life on the roster: transfer, promotion, parents home, graduation…"""

    __tablename__ = "child_event"
    __table_args__ = (sa.Index("ix_child_event_child_at", "child_id", "recorded_at"),)

    id: uuid.UUID = id_field()
    child_id: uuid.UUID = fk_field("child.id", index=False)
    kind: ChildEventKind = Field(sa_type=enum_type(ChildEventKind, 24))
    effective_on: date
    reason: str | None = Field(default=None, max_length=256)
    from_school_id: uuid.UUID | None = fk_field("school.id", nullable=True, index=False)
    to_school_id: uuid.UUID | None = fk_field("school.id", nullable=True, index=False)
    from_class_id: uuid.UUID | None = fk_field("school_class.id", nullable=True, index=False)
    to_class_id: uuid.UUID | None = fk_field("school_class.id", nullable=True, index=False)
    recorded_at: datetime = timestamp_field(default_now=True)
    recorded_by_id: uuid.UUID | None = fk_field("account.id", nullable=True, index=False)


# ---- row-level security (api/models/row_security.py) ----
# Staff see the children of their schools; a family sees its own children (computed once per transaction from
# its active guardian links, so this policy does not read child_guardian, whose own policy reads child).
# Life events are for staff only.
row_security(
    "child",
    Policy("staff", using=of_school()),
    Policy("family", using=f"id = ANY ({FAMILY_CHILDREN})"),
)
row_security("child_event", Policy("staff", using=of_staff_child("child_event")))


# ---- labels shown to people ---------------------------------------------------------------------------

SEX_LABELS = {Sex.male: "男", Sex.female: "女"}
CHILD_STATUS_LABELS = {ChildStatus.enrolled: "在册", ChildStatus.graduated: "毕业", ChildStatus.left: "离校"}
PARENTS_AWAY_LABELS = {
    ParentsAway.both: "父母均外出务工",
    ParentsAway.father: "父亲外出务工",
    ParentsAway.mother: "母亲外出务工",
    ParentsAway.none: "父母均在家",
}
GUARDIANSHIP_RATING_LABELS = {
    GuardianshipRating.good: "好",
    GuardianshipRating.fairly_good: "较好",
    GuardianshipRating.average: "一般",
    GuardianshipRating.poor: "差",
    GuardianshipRating.none: "无人监护",
}
CHILD_EVENT_LABELS = {
    ChildEventKind.enrolled: "建档入学",
    ChildEventKind.transferred: "转学",
    ChildEventKind.class_changed: "调班",
    ChildEventKind.promoted: "升级",
    ChildEventKind.parents_returned: "父母返乡，不再留守",
    ChildEventKind.became_left_behind: "父母外出，成为留守儿童",
    ChildEventKind.graduated: "毕业",
    ChildEventKind.left: "离校",
    ChildEventKind.re_enrolled: "重新入学",
}


class ChildFlag(StrEnum):
    """特殊情况 — special situations a school watches for."""

    special_hardship = "special_hardship"  # 特困
    single_parent = "single_parent"  # 单亲
    struggling_learner = "struggling_learner"  # 学困生
    disability = "disability"  # 残疾
    needs_individual_plan = "needs_individual_plan"  # 需个别教育管理方案


CHILD_FLAG_LABELS = {
    ChildFlag.special_hardship: "特困",
    ChildFlag.single_parent: "单亲",
    ChildFlag.struggling_learner: "学困生",
    ChildFlag.disability: "残疾",
    ChildFlag.needs_individual_plan: "需个别教育管理方案",
}


class MissingItem(StrEnum):
    """What keeps a child's file (一人一档) from being complete; stable codes for clients."""

    missing_id_number = "missing_id_number"
    missing_birth_date = "missing_birth_date"
    missing_home_address = "missing_home_address"
    missing_class = "missing_class"
    missing_entrusted_guardian = "missing_entrusted_guardian"
    missing_entrusted_guardian_phone = "missing_entrusted_guardian_phone"
    missing_parent_away = "missing_parent_away"
    missing_parent_away_phone = "missing_parent_away_phone"
    missing_guardianship_rating = "missing_guardianship_rating"
    missing_left_behind_since = "missing_left_behind_since"


MISSING_LABELS = {
    MissingItem.missing_id_number: "缺少身份证号",
    MissingItem.missing_birth_date: "缺少出生日期",
    MissingItem.missing_home_address: "缺少家庭住址",
    MissingItem.missing_class: "未分班",
    MissingItem.missing_entrusted_guardian: "缺少委托监护人",
    MissingItem.missing_entrusted_guardian_phone: "缺少委托监护人联系电话",
    MissingItem.missing_parent_away: "缺少外出务工家长信息",
    MissingItem.missing_parent_away_phone: "缺少外出务工家长联系电话",
    MissingItem.missing_guardianship_rating: "缺少监护状况评定",
    MissingItem.missing_left_behind_since: "缺少留守起始时间",
}

# Labels of the child's fields, for the change history.
CHILD_FIELD_LABELS = {
    "school_id": "学校",
    "class_id": "班级",
    "name": "姓名",
    "sex": "性别",
    "birth_date": "出生日期",
    "ethnicity": "民族",
    "id_number_masked": "身份证号",
    "household_registration": "户籍所在地",
    "home_address": "家庭住址",
    "is_boarding": "寄宿",
    "health": "健康状况",
    "is_left_behind": "是否留守",
    "parents_away": "外出务工情况",
    "left_behind_since": "留守起始时间",
    "character": "性格",
    "habits": "行为习惯",
    "interests": "兴趣爱好",
    "study_notes": "学习动机与能力",
    "guardian_relationship": "与监护人关系",
    "parent_contact_frequency": "与父母联系频率",
    "guardianship_rating": "监护状况",
    "special_hardship": "特困",
    "single_parent": "单亲",
    "struggling_learner": "学困生",
    "disability": "残疾",
    "needs_individual_plan": "需个别教育管理方案",
    "notes": "备注",
    "status": "在册状态",
    "status_reason": "状态原因",
    "status_changed_on": "状态变更日期",
}


# ---- API schemas -------------------------------------------------------------------------------------


class _ChildFields(FormInput):
    """The parts of the file a form fills in over time (all optional when a child is first entered)."""

    ethnicity: str = Field(default="汉族", min_length=1, max_length=16, description="民族")
    household_registration: str | None = Field(default=None, max_length=128, description="户籍所在地")
    home_address: str | None = Field(default=None, max_length=256, description="家庭住址")
    is_boarding: bool = Field(default=False, description="寄宿")
    health: str | None = Field(default=None, max_length=256, description="健康状况")
    left_behind_since: date | None = Field(default=None, description="何时开始留守")
    character: str | None = Field(default=None, max_length=512, description="性格")
    habits: str | None = Field(default=None, max_length=512, description="行为习惯")
    interests: str | None = Field(default=None, max_length=512, description="兴趣爱好")
    study_notes: str | None = Field(default=None, max_length=1024, description="学习动机与能力")
    guardian_relationship: str | None = Field(default=None, max_length=512, description="与监护人关系")
    parent_contact_frequency: str | None = Field(default=None, max_length=64, description="与父母联系频率")
    guardianship_rating: GuardianshipRating | None = Field(
        default=None, description="监护状况: good 好 / fairly_good 较好 / average 一般 / poor 差 / none 无人监护"
    )
    special_hardship: bool = Field(default=False, description="特困")
    single_parent: bool = Field(default=False, description="单亲")
    struggling_learner: bool = Field(default=False, description="学困生")
    disability: bool = Field(default=False, description="残疾")
    needs_individual_plan: bool = Field(default=False, description="需个别教育管理方案")
    notes: str | None = Field(default=None, max_length=2048, description="备注")


class ChildCreate(_ChildFields):
    """A new file. With an ID number, sex and birth date are read from it (if also given, they must agree)."""

    school_id: uuid.UUID | None = Field(default=None, description="学校; default: your own school")
    class_id: uuid.UUID | None = Field(default=None, description="班级 (of that school)")
    name: str = Field(min_length=1, max_length=32, description="姓名")
    sex: Sex | None = Field(default=None, description="性别 (required without an ID number)")
    birth_date: date | None = Field(default=None, description="出生日期 (required without an ID number)")
    id_number: str | None = Field(default=None, max_length=40, description="居民身份证号 (18位, GB 11643)")
    parents_away: ParentsAway = Field(
        default=ParentsAway.both, description="both 父母均外出 / father 父亲外出 / mother 母亲外出 / none 不留守"
    )
    enrolled_on: date | None = Field(default=None, description="建档日期; default: today (Asia/Shanghai)")


# Columns that cannot be emptied by an update (sending null for them is a 422).
NOT_NULL_UPDATES = ("name", "sex", "birth_date", "parents_away", "ethnicity")


class ChildUpdate(_ChildFields):
    """Only the fields sent change; ``null`` clears an optional field. Status, school and being left-behind
    change through the lifecycle endpoints (transfer, parents returned, graduate, leave…)."""

    class_id: uuid.UUID | None = Field(default=None, description="调班 (a class of the same school); null: 未分班")
    name: str | None = Field(default=None, min_length=1, max_length=32)
    sex: Sex | None = None
    birth_date: date | None = None
    id_number: str | None = Field(default=None, max_length=40, description="居民身份证号; null removes it")
    parents_away: ParentsAway | None = Field(default=None, description="which parents are away (not none)")

    @model_validator(mode="after")
    def _required_stay_filled(self) -> Self:
        emptied = [name for name in NOT_NULL_UPDATES if name in self.model_fields_set and getattr(self, name) is None]
        if emptied:
            raise ValueError(f"这些项不能清空 (cannot be emptied): {', '.join(emptied)}")
        return self


class MissingPublic(BaseModel):
    code: MissingItem
    label: str


class ChildSummary(BaseModel):
    """What every staff member of the school may see: the basic view, also used in lists."""

    id: uuid.UUID
    school_id: uuid.UUID
    school_name: str | None
    class_id: uuid.UUID | None
    class_label: str | None = Field(description="e.g. 三年级1班")
    grade: int | None
    name: str
    sex: Sex
    status: ChildStatus
    is_left_behind: bool
    parents_away: ParentsAway
    flags: list[ChildFlag] = Field(description="特殊情况")
    complete: bool = Field(description="档案完整 (一人一档)")
    missing: list[MissingPublic] = Field(description="what the file still lacks, in a stable order")


class ChildBasic(ChildSummary):
    """The basic view for staff who do not teach the child: no ID number, address, health or notes."""

    detail: Literal["basic"] = "basic"


class ChildFull(ChildSummary):
    """The full file, for those who look after the child."""

    detail: Literal["full"] = "full"
    birth_date: date
    age: int = Field(description="周岁 (today in Asia/Shanghai)")
    ethnicity: str
    id_number_masked: str | None = Field(description="身份证号, masked (the full number: reveal endpoint)")
    household_registration: str | None
    home_address: str | None
    is_boarding: bool
    health: str | None
    left_behind_since: date | None
    character: str | None
    habits: str | None
    interests: str | None
    study_notes: str | None
    guardian_relationship: str | None
    parent_contact_frequency: str | None
    guardianship_rating: GuardianshipRating | None
    special_hardship: bool
    single_parent: bool
    struggling_learner: bool
    disability: bool
    needs_individual_plan: bool
    notes: str | None
    status_reason: str | None
    status_changed_on: date | None
    created_at: datetime
    updated_at: datetime


ChildView = Annotated[ChildFull | ChildBasic, Field(discriminator="detail")]


class RevealedIdNumber(BaseModel):
    child_id: uuid.UUID
    id_number: str = Field(description="完整身份证号 (this read is recorded in the audit log)")


# ---- lifecycle (动态管理) -------------------------------------------------------------------------------


class LifecycleChange(FormInput):
    effective_on: date | None = Field(
        default=None, description="生效日期 (Asia/Shanghai); default today; never in the future"
    )
    reason: str = Field(min_length=1, max_length=256, description="原因")


class GraduationRequest(FormInput):
    effective_on: date | None = Field(default=None, description="毕业日期; default today")
    reason: str | None = Field(default=None, max_length=256, description="default: 毕业")


class TransferRequest(LifecycleChange):
    to_school_id: uuid.UUID = Field(description="转入学校 (any school on the platform, in this county or another)")


class BecameLeftBehindRequest(LifecycleChange):
    parents_away: ParentsAway = Field(description="both / father / mother")
    left_behind_since: date | None = Field(default=None, description="default: effective_on")

    @field_validator("parents_away")
    @classmethod
    def _someone_is_away(cls, value: ParentsAway) -> ParentsAway:
        if value == ParentsAway.none:
            raise ValueError("父母至少一方外出 (parents_away must be both, father or mother)")
        return value


class ReEnrolRequest(LifecycleChange):
    class_id: uuid.UUID | None = Field(default=None, description="班级 (of the child's school)")


class ChildEventPublic(BaseModel):
    id: uuid.UUID
    child_id: uuid.UUID
    kind: ChildEventKind
    label: str
    effective_on: date
    reason: str | None
    from_school_id: uuid.UUID | None
    to_school_id: uuid.UUID | None
    from_class_id: uuid.UUID | None
    to_class_id: uuid.UUID | None
    recorded_at: datetime
    recorded_by_id: uuid.UUID | None


class FieldChange(BaseModel):
    field: str
    label: str
    old: Any = None
    new: Any = None
    redacted: bool = Field(default=False, description="a protected value: only the fact that it changed is shown")


class HistoryEntry(BaseModel):
    at: datetime = Field(description="Asia/Shanghai")
    source: Literal["change", "event"]
    action: str = Field(description="child.create / child.update, or the event kind")
    actor_id: uuid.UUID | None
    actor_name: str | None
    changes: list[FieldChange] = []
    event: ChildEventPublic | None = None


# ---- 每学年末交接: promotion of whole classes ------------------------------------------------------------


class PromotionRequest(FormInput):
    """Move every enrolled child of the given classes up one grade; the last grade graduates.

    Give either ``classes`` (a mapping to existing classes of the next grade) or ``create_next_grade``
    (classes whose children move to the class of the next grade with the same name, created if missing).
    """

    classes: dict[uuid.UUID, uuid.UUID | None] | None = Field(
        default=None, max_length=300, description="{from_class_id: to_class_id}; null for a graduating class"
    )
    create_next_grade: list[uuid.UUID] | None = Field(
        default=None, max_length=300, description="三年级1班 → 四年级1班 (found or created)"
    )
    last_grade: int = Field(default=6, ge=1, le=12, description="毕业年级 (小学 6, 初中 9)")
    effective_on: date | None = Field(
        default=None,
        description="生效日期; default today. It decides the school year (from 1 September): "
        "a promotion done in early September for the year just ended should give the end of August.",
    )
    reason: str | None = Field(default=None, max_length=256, description="default: 学年末升级")
    head_teachers: dict[uuid.UUID, uuid.UUID] = Field(
        default_factory=dict, max_length=300, description="{from_class_id: account_id}: 新班主任 of the new class"
    )

    @model_validator(mode="after")
    def _one_way(self) -> Self:
        if (self.classes is None) == (self.create_next_grade is None):
            raise ValueError("classes 与 create_next_grade 必须且只能填一项 (give classes or create_next_grade)")
        if not (self.classes or self.create_next_grade):
            raise ValueError("至少选择一个班级 (no class given)")
        return self


class PromotedClass(BaseModel):
    from_class_id: uuid.UUID
    from_label: str
    to_class_id: uuid.UUID | None = Field(description="null: the class graduated")
    to_label: str | None
    created: bool = Field(description="the next-grade class was created by this promotion")
    promoted: int
    graduated: int


class PromotionResult(BaseModel):
    school_id: uuid.UUID
    school_year: str = Field(description="e.g. 2025-2026")
    effective_on: date
    promoted: int
    graduated: int
    classes: list[PromotedClass]


# ---- 建档率: archive completeness -------------------------------------------------------------------------


class CompletenessCounts(BaseModel):
    left_behind: int = Field(description="在册留守儿童")
    complete: int = Field(description="档案完整")
    incomplete: int
    rate: float | None = Field(description="建档率 complete / left_behind (null when there are none)")
    missing: dict[MissingItem, int] = Field(description="how many files lack each item")


class ClassCompleteness(CompletenessCounts):
    class_id: uuid.UUID | None = Field(description="null: children not yet placed in a class")
    class_label: str | None


class SchoolCompleteness(CompletenessCounts):
    school_id: uuid.UUID
    school_name: str
    township_id: uuid.UUID
    classes: list[ClassCompleteness] = []


class AreaCompleteness(CompletenessCounts):
    """Every school in the caller's scope (a county, a township), with the totals."""

    schools: list[SchoolCompleteness]
