"""The people who care for a child: parents working away (在外务工家长) and entrusted guardians (委托监护人).

A guardian is a person stored once and linked to each child they care for (siblings share guardians), with
their role for that child and the order in which they are called in an emergency (联系卡).
"""

import uuid
from datetime import date, datetime
from enum import StrEnum

import sqlalchemy as sa
from sqlmodel import Field, SQLModel

from api.models.base import audited, fk_field, id_field, timestamp_field
from api.models.children import Sex


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
    sex: Sex | None = Field(default=None, sa_type=sa.String(8))
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
    role: GuardianRole = Field(sa_type=sa.String(24))
    relation: str = Field(max_length=16, description="父亲 / 母亲 / 祖父 / 祖母 / 外祖父 / 外祖母 / 叔叔 …")
    contact_order: int = Field(default=1, ge=1, le=99, description="紧急联系顺序, 1 = 最先联系")
    is_active: bool = Field(default=True)
    since: date | None = None
    until: date | None = None
    created_at: datetime = timestamp_field(default_now=True)
