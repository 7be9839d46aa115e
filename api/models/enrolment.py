"""在校学生数 per term: the enrolment a school records each term, the denominator of the left-behind share.

One row per school and term (``2026-2027-1`` the autumn term, ``2026-2027-2`` the spring term, as
:mod:`api.services.stats.periods` names them); a school admin records it, the bureau's statistics read it.
"""

import uuid
from datetime import datetime
from typing import Self

import sqlalchemy as sa
from pydantic import BaseModel, ConfigDict, model_validator
from sqlmodel import Field, SQLModel

from api.models.base import FormInput, audited, fk_field, timestamp_field
from api.models.row_security import ROLE, Policy, of_school, row_security


@audited("school_enrolment")
class SchoolEnrolment(SQLModel, table=True):
    __tablename__ = "school_enrolment"
    __table_args__ = (
        sa.CheckConstraint("pupils BETWEEN 0 AND 100000", name="pupils"),
        sa.CheckConstraint("boarders BETWEEN 0 AND pupils", name="boarders"),
    )

    school_id: uuid.UUID = Field(foreign_key="school.id", primary_key=True, ondelete="RESTRICT")
    term_key: str = Field(max_length=16, primary_key=True, description="学期, e.g. 2026-2027-1")
    pupils: int = Field(description="在校学生数 (all pupils, left-behind or not)")
    boarders: int = Field(default=0, description="其中寄宿生数")
    updated_at: datetime = timestamp_field()
    updated_by_id: uuid.UUID | None = fk_field("account.id", nullable=True, index=False)


# ---- row-level security (api/models/row_security.py) ----
# The staff of a school (and the township, the bureau) read its enrolment; its school admins record it.
row_security(
    "school_enrolment",
    Policy("staff", using=of_school(), command="SELECT"),
    Policy("admin", using=f"{ROLE} = 'school_admin' AND {of_school()}"),
)


class EnrolmentUpdate(FormInput):
    model_config = ConfigDict(json_schema_extra={"examples": [{"pupils": 743, "boarders": 120}]})

    pupils: int = Field(ge=0, le=100_000, description="在校学生数")
    boarders: int = Field(default=0, ge=0, le=100_000, description="其中寄宿生数")

    @model_validator(mode="after")
    def _boarders_are_pupils(self) -> Self:
        if self.boarders > self.pupils:
            raise ValueError("寄宿生数不能多于在校学生数 (boarders exceed pupils)")
        return self


class EnrolmentPublic(BaseModel):
    school_id: uuid.UUID
    term_key: str
    term_label: str
    pupils: int
    boarders: int
    recorded: bool = Field(description="false: not recorded for this term (pupils is the school's own count)")
    updated_at: datetime | None
