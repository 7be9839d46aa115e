"""教师履职 — the care work each teacher did over a span against what the care rules expected of them (the
school's 考核细则). Read models only: every figure is computed from care records, pairings, plan items and
activities."""

import uuid
from datetime import date

from pydantic import BaseModel

from api.models.care import CareKind
from api.models.care_rhythm import RhythmKind


class RuleDuty(BaseModel):
    """One care rule for one teacher: the periods due in the span (over the children they answer for) and those
    kept. ``rate`` is ``done / expected`` (null when nothing was expected)."""

    kind: RhythmKind
    label: str
    expected: int
    done: int
    rate: float | None


class RecordCount(BaseModel):
    kind: CareKind
    label: str
    count: int


class PlanItemCounts(BaseModel):
    """The plan items the teacher owns whose month lies in the span, by progress."""

    total: int = 0
    planned: int = 0
    done: int = 0
    late: int = 0
    dropped: int = 0


class TeacherDuty(BaseModel):
    teacher_id: uuid.UUID
    teacher_name: str
    role: str
    children: int  # the enrolled left-behind children they answer for (active proxy parent, else head teacher)
    rules: list[RuleDuty]
    records: list[RecordCount]  # care records they wrote, dated in the span
    records_total: int
    plan_items: PlanItemCounts
    activities: int  # activities they recorded, held in the span


class TeacherDutiesReport(BaseModel):
    school_id: uuid.UUID
    school_name: str
    starts_on: date
    ends_on: date
    judged_until: date  # rule periods are counted when due on or before this day (yesterday at the latest)
    rows: list[TeacherDuty]
