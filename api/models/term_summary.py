"""工作总结: a school's term summary for the bureau, written from the records.

A summary covers ``starts_on``–``ends_on`` of one school (a plan's dates, or a span the school names); one per
school and span. While a draft its figures are counted afresh at each read; submitting freezes them
(``figures``), so the bureau reads what the school sent. Only the leader's text — highlights and problems —
is written by hand. ``plan_id`` is kept as an id, not a foreign key: a plan deleted later (only one with
nothing done can be) leaves the summary standing.
"""

import uuid
from datetime import date, datetime
from enum import StrEnum
from typing import Any, Self

import sqlalchemy as sa
from pydantic import BaseModel, model_validator
from pydantic import Field as PydanticField
from sqlalchemy.dialects import postgresql
from sqlmodel import Field, SQLModel

from api.models.base import FormInput, audited, enum_type, fk_field, id_field, timestamp_field
from api.models.care_rhythm import KindCompliance
from api.models.plan import ItemProgress, ProgressCounts
from api.models.row_security import ROLE, Policy, of_school, row_security


class SummaryStatus(StrEnum):
    draft = "draft"  # 草稿
    submitted = "submitted"  # 已上报


SUMMARY_STATUS_LABELS = {SummaryStatus.draft: "草稿", SummaryStatus.submitted: "已上报"}


@audited("term_summary")
class TermSummary(SQLModel, table=True):
    """关爱留守儿童工作总结 of one school for a term (or any span of at most a year)."""

    __tablename__ = "term_summary"
    __table_args__ = (
        sa.CheckConstraint("ends_on >= starts_on", name="dates"),
        sa.CheckConstraint(
            "(status = 'submitted') = (submitted_at IS NOT NULL)"
            " AND (submitted_at IS NULL) = (figures IS NULL)"
            " AND (submitted_at IS NULL OR submitted_by_id IS NOT NULL)",
            name="submission",
        ),
        sa.UniqueConstraint("school_id", "starts_on", "ends_on", name="uq_term_summary_school_span"),
        sa.Index("ix_term_summary_span", "starts_on", "ends_on"),
    )

    id: uuid.UUID = id_field()
    school_id: uuid.UUID = fk_field("school.id", index=False)
    plan_id: uuid.UUID | None = Field(default=None, description="the plan it was written from")
    title: str = Field(max_length=64)
    starts_on: date
    ends_on: date
    highlights: str = Field(default="", max_length=4000, description="工作亮点")
    problems: str = Field(default="", max_length=4000, description="存在问题与改进")
    status: SummaryStatus = Field(default=SummaryStatus.draft, sa_type=enum_type(SummaryStatus, 16))
    figures: dict[str, Any] | None = Field(
        default=None, sa_type=postgresql.JSONB(none_as_null=True), description="frozen at submission"
    )
    submitted_at: datetime | None = timestamp_field(nullable=True)
    submitted_by_id: uuid.UUID | None = fk_field("account.id", nullable=True, index=False)
    created_by_id: uuid.UUID | None = fk_field("account.id", nullable=True, index=False)
    created_at: datetime = timestamp_field(default_now=True)
    updated_at: datetime = timestamp_field(default_now=True)


# ---- row-level security (api/models/row_security.py) ----
# The school's staff read their school's summaries, drafts included; the bureau and the township read only
# what their schools submitted. School admins write.
row_security(
    "term_summary",
    Policy("school", using=f"{ROLE} IN ('school_admin', 'teacher') AND {of_school()}", command="SELECT"),
    Policy("area", using=f"status = 'submitted' AND {of_school()}", command="SELECT"),
    Policy("admin", using=f"{ROLE} = 'school_admin' AND {of_school()}"),
)


# ---- API schemas -------------------------------------------------------------------------------------


class SummaryCreate(FormInput):
    """From a plan (its dates and name), or for a span the school names."""

    plan_id: uuid.UUID | None = PydanticField(None, description="总结哪个工作计划 (its dates are the summary's)")
    starts_on: date | None = PydanticField(None, description="without a plan: the span's first day")
    ends_on: date | None = PydanticField(None, description="without a plan: the span's last day")
    title: str | None = PydanticField(None, max_length=64, min_length=1, description="default: from the plan")
    highlights: str = PydanticField("", max_length=4000, description="工作亮点")
    problems: str = PydanticField("", max_length=4000, description="存在问题与改进")

    @model_validator(mode="after")
    def _span(self) -> Self:
        if self.plan_id is not None:
            if self.starts_on is not None or self.ends_on is not None:
                raise ValueError("已选工作计划时不填日期 (a plan's dates are the summary's)")
        elif self.starts_on is None or self.ends_on is None:
            raise ValueError("请选择工作计划或填写起止日期 (a plan, or starts_on and ends_on)")
        elif self.ends_on < self.starts_on:
            raise ValueError("结束日期早于开始日期 (ends_on is before starts_on)")
        return self


class SummaryUpdate(FormInput):
    title: str | None = PydanticField(None, max_length=64, min_length=1)
    highlights: str | None = PydanticField(None, max_length=4000)
    problems: str | None = PydanticField(None, max_length=4000)


class SummaryItem(BaseModel):
    """A planned item as the summary tells it."""

    month: str
    title: str
    kind_label: str
    progress: ItemProgress
    progress_label: str
    owner: str | None
    done_on: date | None
    done_note: str | None
    dropped_reason: str | None


class PlanFigures(BaseModel):
    plan_id: uuid.UUID
    plan_name: str
    items: int
    progress: ProgressCounts
    done: list[SummaryItem]
    late: list[SummaryItem]
    dropped: list[SummaryItem]
    planned: list[SummaryItem]


class ChildrenFigures(BaseModel):
    on_file: int = PydanticField(description="在册学生 (enrolled children on file)")
    left_behind: int = PydanticField(description="在册留守儿童")
    files_complete: int = PydanticField(description="档案完整的留守儿童")
    files_rate: float | None = PydanticField(description="建档率")


class CareFigures(BaseModel):
    pairings_active: int = PydanticField(description="在结对 (active pairings of any kind)")
    paired_children: int = PydanticField(description="有代理家长的留守儿童")
    paired_rate: float | None
    talks: int = PydanticField(description="谈心")
    home_visits: int = PydanticField(description="家访")
    guardian_contacts: int = PydanticField(description="与监护人沟通")
    parent_contacts: int = PydanticField(description="与外出家长联系")
    rules: list[KindCompliance] = PydanticField(description="each care rule: periods due and done (覆盖率)")


class ActivityFigures(BaseModel):
    activities: int
    places: int
    left_behind_places: int
    priority_share: float | None = PydanticField(description="三个优先: places that went to left-behind children")


class IncidentFigures(BaseModel):
    incidents: int
    steps: int
    told_in_time: int = PydanticField(description="按时告知的步骤")
    told_late: int
    not_told: int = PydanticField(description="超时未告知")
    open: int = PydanticField(description="仍在时限内")


class SummaryFigures(BaseModel):
    as_of: datetime
    starts_on: date
    ends_on: date
    judged_until: date = PydanticField(description="care rules are judged up to this day")
    children: ChildrenFigures
    care: CareFigures
    family_calls_completed: int = PydanticField(description="亲情电话 (completed calls)")
    activities: ActivityFigures
    incidents: IncidentFigures
    plan: PlanFigures | None


class SummaryListItem(BaseModel):
    id: uuid.UUID
    school_id: uuid.UUID
    school_name: str
    plan_id: uuid.UUID | None
    title: str
    starts_on: date
    ends_on: date
    status: SummaryStatus
    status_label: str
    submitted_at: datetime | None


class SummaryView(SummaryListItem):
    highlights: str
    problems: str
    submitted_by_id: uuid.UUID | None
    figures: SummaryFigures


class SubmissionRow(BaseModel):
    """One school in the caller's area and whether it has submitted a summary for the term."""

    school_id: uuid.UUID
    school_name: str
    township_id: uuid.UUID
    submitted: bool
    summary_id: uuid.UUID | None
    title: str | None
    submitted_at: datetime | None


class SubmissionReport(BaseModel):
    starts_on: date
    ends_on: date
    schools: int
    submitted: int
    rows: list[SubmissionRow]
