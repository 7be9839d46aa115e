"""县 county → 乡镇 township → 学校 school → 班级 class."""

import uuid
from datetime import datetime

from pydantic import BaseModel, ConfigDict
from sqlmodel import Field, SQLModel

from api.models.base import audited, fk_field, id_field, timestamp_field
from api.models.row_security import COUNTY, FAMILY_CHILDREN, ROLE, TOWNSHIPS, Policy, of_school, row_security


@audited("county")
class County(SQLModel, table=True):
    __tablename__ = "county"

    id: uuid.UUID = id_field()
    name: str = Field(max_length=64, description="县名, e.g. 青山县")
    code: str = Field(max_length=12, unique=True, description="行政区划代码 (6 digits)")
    created_at: datetime = timestamp_field(default_now=True)


@audited("township")
class Township(SQLModel, table=True):
    __tablename__ = "township"

    id: uuid.UUID = id_field()
    county_id: uuid.UUID = fk_field("county.id")
    name: str = Field(max_length=64, description="乡镇名, e.g. 石桥镇")
    created_at: datetime = timestamp_field(default_now=True)


@audited("school")
class School(SQLModel, table=True):
    __tablename__ = "school"

    id: uuid.UUID = id_field()
    county_id: uuid.UUID = fk_field("county.id")
    township_id: uuid.UUID = fk_field("township.id")
    name: str = Field(max_length=128, description="学校名, e.g. 石桥镇中心小学")
    kind: str = Field(default="完小", max_length=32, description="中心小学 / 完小 / 初级中学 / 九年一贯制 …")
    pupil_count: int = Field(default=0, ge=0, description="在校学生总数 (all pupils, for the left-behind share)")
    duty_phone: str | None = Field(default=None, max_length=32, description="值班电话 (normalised, api.phones)")
    created_at: datetime = timestamp_field(default_now=True)


@audited("class")
class SchoolClass(SQLModel, table=True):
    """A class such as 三年级1班; ``grade`` 1–9 (小学 1–6, 初中 7–9)."""

    __tablename__ = "school_class"

    id: uuid.UUID = id_field()
    school_id: uuid.UUID = fk_field("school.id")
    grade: int = Field(ge=1, le=12)
    name: str = Field(max_length=32, description="班级名, e.g. 1班")
    head_teacher_id: uuid.UUID | None = fk_field("account.id", nullable=True, ondelete="SET NULL")
    is_active: bool = Field(default=True)
    created_at: datetime = timestamp_field(default_now=True)


@audited("teaching_assignment")
class TeachingAssignment(SQLModel, table=True):
    """A subject teacher (任课教师) of a class: full detail of that class's children."""

    __tablename__ = "teaching_assignment"

    class_id: uuid.UUID = Field(foreign_key="school_class.id", primary_key=True, ondelete="CASCADE")
    account_id: uuid.UUID = Field(foreign_key="account.id", primary_key=True, ondelete="CASCADE")


GRADE_LABELS = {1: "一", 2: "二", 3: "三", 4: "四", 5: "五", 6: "六", 7: "七", 8: "八", 9: "九"}


def class_label(grade: int, name: str) -> str:
    return f"{GRADE_LABELS.get(grade, str(grade))}年级{name}"


class CountyPublic(BaseModel):
    id: uuid.UUID
    name: str
    code: str


class TownshipPublic(BaseModel):
    id: uuid.UUID
    county_id: uuid.UUID
    name: str


DUTY_PHONE = (
    "学校值班电话: the number families call — on the acknowledgement page, the contact card and the notices "
    "(mobile or landline with area code, e.g. 0739-5220000; 422 phone_format / phone_area_code)"
)


class SchoolCreate(BaseModel):
    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {
                    "township_id": "5b1f0d2e-0000-4000-8000-000000000001",
                    "name": "石桥镇第三完小",
                    "kind": "完小",
                    "pupil_count": 320,
                }
            ]
        }
    )

    township_id: uuid.UUID
    name: str = Field(min_length=2, max_length=128)
    kind: str = Field(default="完小", max_length=32)
    pupil_count: int = Field(default=0, ge=0, le=100_000)
    duty_phone: str | None = Field(default=None, max_length=40, description=DUTY_PHONE)


class SchoolUpdate(BaseModel):
    name: str | None = Field(default=None, min_length=2, max_length=128)
    kind: str | None = Field(default=None, max_length=32)
    pupil_count: int | None = Field(default=None, ge=0, le=100_000)
    duty_phone: str | None = Field(default=None, max_length=40, description=f"{DUTY_PHONE}; null or empty clears it")


class SchoolPublic(BaseModel):
    id: uuid.UUID
    county_id: uuid.UUID
    township_id: uuid.UUID
    name: str
    kind: str
    pupil_count: int
    duty_phone: str | None = Field(description="学校值班电话 (normalised)")


class ClassCreate(BaseModel):
    model_config = ConfigDict(json_schema_extra={"examples": [{"grade": 3, "name": "1班"}]})

    grade: int = Field(ge=1, le=12, description="年级 (1–9)")
    name: str = Field(min_length=1, max_length=32, description="班级名, e.g. 1班")
    head_teacher_id: uuid.UUID | None = Field(default=None, description="班主任 account id")


class ClassUpdate(BaseModel):
    grade: int | None = Field(default=None, ge=1, le=12)
    name: str | None = Field(default=None, min_length=1, max_length=32)
    head_teacher_id: uuid.UUID | None = None
    is_active: bool | None = None


class ClassPublic(BaseModel):
    id: uuid.UUID
    school_id: uuid.UUID
    grade: int
    name: str
    label: str
    head_teacher_id: uuid.UUID | None
    is_active: bool


# ---- row-level security (api/models/row_security.py) ----
# Staff see their own county, the townships and schools of their area (the bureau: all of its county; a
# township: its own; school staff: their school), and the classes of those schools. A family sees the school
# and class rows of its own children (their names head the child's file), nothing else.
row_security("county", Policy("staff", using=f"id = {COUNTY}"))
row_security("township", Policy("staff", using=f"id = ANY ({TOWNSHIPS})"))
row_security(
    "school",
    Policy("staff", using=of_school("id")),
    # The bureau opens schools in its county (the scope's list of schools is read when the transaction starts).
    Policy("bureau_new", command="INSERT", using=None, check=f"{ROLE} = 'county_bureau' AND county_id = {COUNTY}"),
    Policy(
        "family",
        command="SELECT",
        using=f"id IN (SELECT c.school_id FROM child c WHERE c.id = ANY ({FAMILY_CHILDREN}))",
    ),
)
row_security(
    "school_class",
    Policy("staff", using=of_school()),
    Policy(
        "family", command="SELECT", using=f"id IN (SELECT c.class_id FROM child c WHERE c.id = ANY ({FAMILY_CHILDREN}))"
    ),
)
row_security(
    "teaching_assignment",
    Policy(
        "staff",
        using=(
            "EXISTS (SELECT 1 FROM school_class c"
            f" WHERE c.id = teaching_assignment.class_id AND {of_school('c.school_id')})"
        ),
    ),
)
