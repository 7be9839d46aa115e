"""The people who care for a child: parents working away (在外务工家长) and entrusted guardians (委托监护人).

A guardian is a person stored once and linked to each child they care for (siblings share guardians), with
their role for that child and the order in which they are called in an emergency (联系卡).
"""

import uuid
from datetime import date, datetime
from enum import StrEnum
from typing import Annotated, Literal, Self

import sqlalchemy as sa
from pydantic import BaseModel, model_validator
from pydantic import Field as PydanticField
from sqlalchemy.dialects import postgresql
from sqlmodel import Field, SQLModel

from api.models.accounts import Invite, InviteIssued
from api.models.base import FormInput, audited, enum_type, fk_field, id_field, timestamp_field
from api.models.children import ChildBasic, ChildFull, Sex
from api.models.row_security import (
    FAMILY_CHILDREN,
    FAMILY_GUARDIANS,
    ROLE,
    SCHOOLS,
    STAFF,
    Policy,
    of_school,
    row_security,
)


class GuardianRole(StrEnum):
    parent_away = "parent_away"  # 在外务工家长
    entrusted_guardian = "entrusted_guardian"  # 委托监护人 / 临时监护人
    parent_home = "parent_home"  # 在家的父/母
    other_contact = "other_contact"  # 其他紧急联系人


@audited("guardian")
class Guardian(SQLModel, table=True):
    """A person who cares for one or more children: a parent working away or an entrusted guardian."""

    __tablename__ = "guardian"

    id: uuid.UUID = id_field()
    name: str = Field(max_length=32)
    sex: Sex | None = Field(default=None, sa_type=enum_type(Sex, 8))
    birth_year: int | None = Field(default=None, ge=1900, le=2100)
    education: str | None = Field(default=None, max_length=32, description="文化程度")
    occupation: str | None = Field(default=None, max_length=64, description="职业")
    phone: str | None = Field(default=None, max_length=32, index=True, description="normalised phone")
    phone_alt: str | None = Field(default=None, max_length=32, description="备用电话")
    address: str | None = Field(default=None, max_length=256)
    health: str | None = Field(default=None, max_length=64, description="身体状况")
    upbringing: str | None = Field(default=None, max_length=512, description="教养方式")
    # Parents working away.
    work_city: str | None = Field(default=None, max_length=64, description="务工城市")
    employer: str | None = Field(default=None, max_length=128, description="工作单位")
    employer_address: str | None = Field(default=None, max_length=256)
    trade: str | None = Field(default=None, max_length=64, description="工种")
    income: str | None = Field(default=None, max_length=64, description="收入情况")
    hopes: str | None = Field(default=None, max_length=512, description="对孩子的期望")
    contact_method: str | None = Field(default=None, max_length=64, description="联系方式 (电话/微信/视频)")
    # The family account bound to this person with a guardian invite.
    account_id: uuid.UUID | None = Field(default=None, foreign_key="account.id", unique=True, nullable=True)
    created_at: datetime = timestamp_field(default_now=True)
    updated_at: datetime = timestamp_field(default_now=True)


@audited("child_guardian")
class ChildGuardian(SQLModel, table=True):
    """A guardian of a child, with their role, relation and place in the emergency call order."""

    __tablename__ = "child_guardian"
    __table_args__ = (sa.UniqueConstraint("child_id", "guardian_id", name="uq_child_guardian_pair"),)

    id: uuid.UUID = id_field()
    child_id: uuid.UUID = fk_field("child.id")
    guardian_id: uuid.UUID = fk_field("guardian.id")
    role: GuardianRole = Field(sa_type=enum_type(GuardianRole, 24))
    relation: str = Field(max_length=16, description="父亲 / 母亲 / 祖父 / 祖母 / 外祖父 / 外祖母 / 叔叔 …")
    contact_order: int = Field(default=1, ge=1, le=99, description="紧急联系顺序, 1 = 最先联系")
    is_active: bool = Field(default=True)
    since: date | None = None
    until: date | None = None
    end_reason: str | None = Field(default=None, max_length=256, description="结束原因: 去世、外出、不再监护 …")
    created_at: datetime = timestamp_field(default_now=True)


# The invite table belongs to accounts, which cannot import the archive; a guardian invite points at its
# guardian record, so the archive adds that foreign key here (migration 0002 creates it).
Invite.__table__.append_constraint(  # type: ignore[attr-defined]
    sa.ForeignKeyConstraint(["guardian_id"], ["guardian.id"], ondelete="RESTRICT")
)


GUARDIAN_ROLE_LABELS: dict[GuardianRole, str] = {
    GuardianRole.parent_away: "在外务工家长",
    GuardianRole.entrusted_guardian: "委托监护人",
    GuardianRole.parent_home: "在家父母",
    GuardianRole.other_contact: "其他紧急联系人",
}


# ---- where a guardian belongs, for row security ----
# The school of each link (its child's) and the schools of each guardian (of all their children, linked now or
# before: one grandparent may care for grandchildren in two schools). The database keeps both, by triggers on
# child_guardian and on a child's school (migration 0019), so that the policies below compare a column with
# the scope instead of looking the children up for every row. In the tables but not mapped: the ORM neither
# loads nor writes them (an ORM or Core insert leaves them to the triggers).
Guardian.__table__.append_column(  # type: ignore[attr-defined]
    sa.Column("school_ids", postgresql.ARRAY(sa.Uuid()), server_default=sa.text("'{}'::uuid[]"), nullable=False)
)
ChildGuardian.__table__.append_column(sa.Column("school_id", sa.Uuid(), nullable=False))  # type: ignore[attr-defined]


# ---- row-level security (api/models/row_security.py) ----
# Staff see the guardians linked to children of their schools (and may file a new guardian, which is linked
# right after) and those links; a family sees its own guardian records and the links of its own children.
row_security(
    "guardian",
    Policy("staff", using=f"school_ids && {SCHOOLS}"),
    Policy("staff_new", command="INSERT", using=None, check=f"{ROLE} IN {STAFF}"),
    Policy("family", using=f"id = ANY ({FAMILY_GUARDIANS})"),
)
row_security(
    "child_guardian",
    Policy("staff", using=of_school()),
    Policy("family", using=f"child_id = ANY ({FAMILY_CHILDREN})"),
)


# ---- API schemas -------------------------------------------------------------------------------------


class _GuardianDetails(FormInput):
    """What the school records about a guardian besides the name (all optional: forms fill in over time)."""

    sex: Sex | None = None
    birth_year: int | None = Field(default=None, ge=1900, le=2100, description="出生年份")
    age: int | None = Field(default=None, ge=12, le=120, description="年龄 (instead of birth_year; stored as a year)")
    education: str | None = Field(default=None, max_length=32, description="文化程度")
    occupation: str | None = Field(default=None, max_length=64, description="职业")
    phone: str | None = Field(
        default=None, max_length=40, description="手机或固定电话 (0739-5221234, 转分机); stored normalised"
    )
    phone_alt: str | None = Field(default=None, max_length=40, description="备用电话")
    address: str | None = Field(default=None, max_length=256, description="住址")
    health: str | None = Field(default=None, max_length=64, description="身体状况")
    upbringing: str | None = Field(default=None, max_length=512, description="教养方式")
    work_city: str | None = Field(default=None, max_length=64, description="务工城市")
    employer: str | None = Field(default=None, max_length=128, description="工作单位")
    employer_address: str | None = Field(default=None, max_length=256, description="单位地址")
    trade: str | None = Field(default=None, max_length=64, description="工种")
    income: str | None = Field(default=None, max_length=64, description="收入情况")
    hopes: str | None = Field(default=None, max_length=512, description="对孩子的期望")
    contact_method: str | None = Field(default=None, max_length=64, description="联系方式 (电话/微信/视频)")

    @model_validator(mode="after")
    def _one_way_to_give_age(self) -> Self:
        if self.age is not None and self.birth_year is not None:
            raise ValueError("年龄和出生年份只填一项 (give age or birth_year, not both)")
        return self


class GuardianCreate(_GuardianDetails):
    name: str = Field(min_length=1, max_length=32, description="姓名")


class GuardianUpdate(_GuardianDetails):
    """Only the fields sent change; ``null`` clears a field (the name cannot be cleared)."""

    name: str | None = Field(default=None, min_length=1, max_length=32)


class FamilyGuardianPublic(BaseModel):
    """A parent's or guardian's own record as they see it in the mini-program: without the school's
    assessment of how they bring the child up (``upbringing``)."""

    id: uuid.UUID
    name: str
    sex: Sex | None
    birth_year: int | None
    age: int | None
    education: str | None
    occupation: str | None
    phone: str | None = Field(description="normalised; masked (138****5678) for staff without detail access")
    phone_alt: str | None
    address: str | None
    health: str | None
    work_city: str | None
    employer: str | None
    employer_address: str | None
    trade: str | None
    income: str | None
    hopes: str | None
    contact_method: str | None
    wechat_bound: bool = Field(description="已绑定微信 (the guardian uses the mini-program)")
    updated_at: datetime


class GuardianPublic(FamilyGuardianPublic):
    """A guardian as staff see them."""

    upbringing: str | None = Field(description="教养方式 (the school's assessment; not shown to the family)")


class GuardianLinkCreate(FormInput):
    """Link a guardian to a child: a new person (``guardian``) or one already on file (``guardian_id``)."""

    guardian_id: uuid.UUID | None = Field(default=None, description="已登记的监护人 (siblings share guardians)")
    guardian: GuardianCreate | None = None
    role: GuardianRole = Field(description="parent_away 在外务工家长 / entrusted_guardian 委托监护人 / …")
    relation: str = Field(min_length=1, max_length=16, description="与孩子关系: 父亲 / 母亲 / 祖母 …")
    contact_order: int | None = Field(default=None, ge=1, le=99, description="紧急联系顺序; default: last")
    since: date | None = None

    @model_validator(mode="after")
    def _exactly_one_person(self) -> Self:
        if (self.guardian_id is None) == (self.guardian is None):
            raise ValueError("guardian 与 guardian_id 必须且只能填一项 (give guardian or guardian_id)")
        return self


class GuardianLinkUpdate(FormInput):
    role: GuardianRole | None = None
    relation: str | None = Field(default=None, min_length=1, max_length=16)
    contact_order: int | None = Field(default=None, ge=1, le=99)
    is_active: bool | None = Field(default=None, description="false ends the link (as /end), true restores it")


class GuardianLinkEnd(FormInput):
    reason: str = Field(min_length=1, max_length=256, description="原因: 去世 / 外出务工 / 不再监护 …")
    until: date | None = Field(default=None, description="结束日期; default: today (Asia/Shanghai)")


class ContactOrderUpdate(FormInput):
    link_ids: list[uuid.UUID] = Field(
        min_length=1, max_length=99, description="every active link of the child, first to call first"
    )


class GuardianLinkPublic(BaseModel):
    id: uuid.UUID = Field(description="link id")
    child_id: uuid.UUID
    guardian_id: uuid.UUID
    role: GuardianRole
    role_label: str
    relation: str
    contact_order: int
    is_active: bool
    since: date | None
    until: date | None
    end_reason: str | None
    guardian: GuardianPublic
    full_detail: bool = Field(description="false: phones masked, personal details left out (not your class)")


class GuardianLinkCreated(GuardianLinkPublic):
    reused: bool = Field(description="true: the same person (same name and phone) was already on file")


class GuardianChildLink(BaseModel):
    link_id: uuid.UUID
    child_id: uuid.UUID
    child_name: str
    role: GuardianRole
    relation: str
    contact_order: int
    is_active: bool


class GuardianDetail(BaseModel):
    """A guardian with the children they are linked to (those the caller can see)."""

    guardian: GuardianPublic
    children: list[GuardianChildLink]


class GuardianInviteIssued(InviteIssued):
    guardian_id: uuid.UUID
    child_id: uuid.UUID


# ---- 联系卡 contact card -------------------------------------------------------------------------------


class ContactCardGuardian(BaseModel):
    order: int
    guardian_id: uuid.UUID
    name: str
    relation: str
    role: GuardianRole
    role_label: str
    phone: str | None
    phone_alt: str | None
    where: str | None = Field(description="务工城市 for parents away, else 住址")
    health: str | None


class ContactCard(BaseModel):
    """The one page a teacher needs in an emergency: who to call, in which order, with full numbers."""

    child_id: uuid.UUID
    child_name: str
    sex: Sex
    age: int
    school_id: uuid.UUID
    school_name: str
    school_phone: str | None = Field(
        description="学校值班电话 (the school's duty phone; without one, the phone of the school's admins)"
    )
    class_id: uuid.UUID | None
    class_label: str | None
    head_teacher_name: str | None
    head_teacher_phone: str | None
    is_boarding: bool
    health: str | None = Field(description="健康状况 (allergies, illnesses)")
    disability: bool
    home_address: str | None
    guardians: list[ContactCardGuardian] = Field(description="active guardians, first to call first")
    generated_at: datetime = Field(description="Asia/Shanghai")


# ---- the family's own view ----------------------------------------------------------------------------


class FamilyChild(BaseModel):
    id: uuid.UUID
    name: str
    sex: Sex
    age: int
    school_id: uuid.UUID
    school_name: str
    class_id: uuid.UUID | None
    class_label: str | None
    relation: str = Field(description="your relation to the child (父亲, 祖母 …)")
    role: GuardianRole


class FamilyChildDetail(FamilyChild):
    """One of the family's own children: never the school's rating of the family's care or teachers' notes."""

    birth_date: date
    ethnicity: str
    id_number_masked: str | None = Field(description="身份证号 (masked; the full number is never shown here)")
    is_boarding: bool
    health: str | None
    home_address: str | None
    head_teacher_name: str | None
    contact_order: int = Field(description="your place in the emergency call order")


class FamilyChildView(FamilyChildDetail):
    """``GET /children/{id}`` read by a family account: the family view, never the staff file."""

    detail: Literal["family"] = "family"


ChildReadView = Annotated[ChildFull | ChildBasic | FamilyChildView, PydanticField(discriminator="detail")]


class FamilyGuardianUpdate(FormInput):
    """What a parent or guardian may correct on their own record; the school keeps the rest."""

    phone: str | None = Field(default=None, max_length=40)
    phone_alt: str | None = Field(default=None, max_length=40)
    address: str | None = Field(default=None, max_length=256)
    occupation: str | None = Field(default=None, max_length=64)
    work_city: str | None = Field(default=None, max_length=64)
    employer: str | None = Field(default=None, max_length=128)
    employer_address: str | None = Field(default=None, max_length=256)
    trade: str | None = Field(default=None, max_length=64)
    contact_method: str | None = Field(default=None, max_length=64)
