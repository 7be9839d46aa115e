"""一人一档: the child archive, the people who care for the child, and the child's life events.

A child is never deleted: they leave the roster with a status, a reason and a date. The people who care
for the child are in :mod:`api.models.guardians`.
"""

import uuid
from datetime import date, datetime
from enum import StrEnum

import sqlalchemy as sa
from sqlmodel import Field, SQLModel

from api.models.base import SENSITIVE, audited, fk_field, id_field, timestamp_field


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
    )

    id: uuid.UUID = id_field()
    school_id: uuid.UUID = fk_field("school.id")
    class_id: uuid.UUID | None = fk_field("school_class.id", nullable=True)
    name: str = Field(max_length=32)
    name_pinyin: str = Field(default="", max_length=128, description="zhangxiaoming (search key)")
    name_initials: str = Field(default="", max_length=32, index=True, description="zxm (search key)")
    sex: Sex = Field(sa_type=sa.String(8))
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
    parents_away: ParentsAway = Field(default=ParentsAway.both, sa_type=sa.String(8))
    left_behind_since: date | None = Field(default=None, description="何时开始留守")

    character: str | None = Field(default=None, max_length=512, description="性格")
    habits: str | None = Field(default=None, max_length=512, description="行为习惯")
    interests: str | None = Field(default=None, max_length=512, description="兴趣爱好")
    study_notes: str | None = Field(default=None, max_length=1024, description="学习动机与能力")
    guardian_relationship: str | None = Field(default=None, max_length=512, description="与监护人关系")
    parent_contact_frequency: str | None = Field(default=None, max_length=64, description="与父母联系频率")
    guardianship_rating: GuardianshipRating | None = Field(default=None, sa_type=sa.String(16))

    special_hardship: bool = Field(default=False, description="特困")
    single_parent: bool = Field(default=False, description="单亲")
    struggling_learner: bool = Field(default=False, description="学困生")
    disability: bool = Field(default=False, description="残疾")
    needs_individual_plan: bool = Field(default=False, description="需个别教育管理方案")
    notes: str | None = Field(default=None, max_length=2048)

    status: ChildStatus = Field(default=ChildStatus.enrolled, sa_type=sa.String(16))
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
    kind: ChildEventKind = Field(sa_type=sa.String(24))
    effective_on: date
    reason: str | None = Field(default=None, max_length=256)
    from_school_id: uuid.UUID | None = fk_field("school.id", nullable=True, index=False)
    to_school_id: uuid.UUID | None = fk_field("school.id", nullable=True, index=False)
    from_class_id: uuid.UUID | None = fk_field("school_class.id", nullable=True, index=False)
    to_class_id: uuid.UUID | None = fk_field("school_class.id", nullable=True, index=False)
    recorded_at: datetime = timestamp_field(default_now=True)
    recorded_by_id: uuid.UUID | None = fk_field("account.id", nullable=True, index=False)
