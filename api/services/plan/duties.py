"""教师履职 (duties per teacher over a term, for the school's 考核细则): for each teacher of a school, the
children they answer for, each care rule's periods expected of them and kept, the care records they wrote by
kind, the plan items they own by progress, the activities they recorded — as a table and as an XLSX for the
leading group.

The rules are judged by the care rhythm's own SQL form (:func:`api.services.care.due.judged_periods`), exactly
as coverage judges them: the periods due in the span up to yesterday, each child by its own strictness, each
answered for by its active proxy parent (代理家长) or else its head teacher (班主任). Summed over teachers, the
expected and done counts are the school's coverage figures. Plan items are counted by the month they were
planned for, their progress (late included) from :mod:`api.services.plan.progress`.

Who reads it: the school's admins (the leading group), the township and the bureau for their schools, the
platform; a teacher reads the same table holding only their own row.
"""

import io
import uuid
from collections import defaultdict
from datetime import date, datetime, timedelta
from typing import Any

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncSession
from sqlmodel import col

from api import audit
from api.errors import Invalid, NotFound, field_error
from api.models.accounts import ROLE_LABELS, Account, Role
from api.models.care import CARE_KIND_LABELS, CareKind, CareRecord
from api.models.care_rhythm import RHYTHM_LABELS, RhythmKind
from api.models.children import Child
from api.models.duties import PlanItemCounts, RecordCount, RuleDuty, TeacherDutiesReport, TeacherDuty
from api.models.organisations import School
from api.models.plan import Activity, CarePlan, CarePlanItem, ItemState
from api.scoping import Principal, as_system
from api.services.care.due import cared_children, judged_periods, period_rows, school_rhythms
from api.services.care.rules import Status
from api.services.care.todo import check_span
from api.services.plan.progress import month_start, progress_of

STAFF_ROLES = (Role.school_admin, Role.teacher)


def _rate(done: int, expected: int) -> float | None:
    return round(done / expected, 4) if expected else None


async def resolve_span(
    session: AsyncSession,
    *,
    school_id: uuid.UUID,
    starts_on: date | None,
    ends_on: date | None,
    plan_id: uuid.UUID | None,
) -> tuple[date, date]:
    """The span asked for: ``from``/``to``, or a plan's dates (``plan_id``), one or the other."""
    if plan_id is not None:
        if starts_on is not None or ends_on is not None:
            message = "请指定日期或计划, 不能同时指定 (give dates or a plan, not both)"
            code = "duties_span_ambiguous"
            raise Invalid(message, code=code, fields=[field_error(["query", "plan_id"], message, code)])
        plan = await session.get(CarePlan, plan_id)  # scoped: only plans of schools the caller sees
        if plan is None or plan.school_id != school_id:
            raise NotFound("计划不存在 (plan not found)", code="plan_not_found")
        return plan.starts_on, plan.ends_on
    if starts_on is None or ends_on is None:
        message = "请指定起止日期 (from and to), 或一个计划 (plan_id)"
        missing = "from" if starts_on is None else "to"
        code = "duties_span_required"
        raise Invalid(message, code=code, fields=[field_error(["query", missing], message, code)])
    check_span(starts_on, ends_on)
    return starts_on, ends_on


async def teacher_duties(
    session: AsyncSession,
    principal: Principal,
    *,
    school_id: uuid.UUID,
    starts_on: date | None,
    ends_on: date | None,
    plan_id: uuid.UUID | None = None,
    now: datetime,
    today: date,
    export: bool = False,
) -> TeacherDutiesReport:
    """The table for ``[starts_on, ends_on]`` (or the plan's dates) as of ``today`` / ``now``."""
    school = await session.get(School, school_id)  # scoped: another school's reader is told it does not exist
    if school is None:
        raise NotFound("学校不存在 (school not found)", code="school_not_found")
    lo, hi = await resolve_span(session, school_id=school_id, starts_on=starts_on, ends_on=ends_on, plan_id=plan_id)
    judged_until = min(hi, today - timedelta(days=1))
    only = principal.account_id if principal.role == Role.teacher else None

    rhythms = await school_rhythms(session, [school_id])
    active = rhythms[school_id].active
    kid = cared_children(col(Child.school_id) == school_id, judged_on=judged_until, with_teacher=True)
    rows = period_rows(rhythms.values(), lo, judged_until) if judged_until >= lo else []
    judged = judged_periods(kid, rows, today=today, judged_on=judged_until)
    rule_stmt = sa.select(
        judged.c.teacher_id,
        judged.c.kind,
        sa.func.count().label("expected"),
        sa.func.count().filter(judged.c.status == Status.done.value).label("done"),
    ).group_by(judged.c.teacher_id, judged.c.kind)
    children_stmt = sa.select(kid.c.teacher_id, sa.func.count().label("children")).group_by(kid.c.teacher_id)
    # SYSTEM: the school was found in the caller's scope above; the statements read only its children and their
    # records, and give counts per teacher (row security would check every probe of a record again).
    async with as_system(session):
        rule_rows = (await session.execute(rule_stmt)).all()
        children_rows = (await session.execute(children_stmt)).all()
        staff_stmt = sa.select(col(Account.id), col(Account.display_name), col(Account.role)).where(
            col(Account.school_id) == school_id, col(Account.role).in_(STAFF_ROLES), col(Account.is_active)
        )
        staff = {a: (name, role) for a, name, role in (await session.execute(staff_stmt)).all()}
    rules: dict[uuid.UUID, dict[RhythmKind, tuple[int, int]]] = defaultdict(dict)
    for teacher_id, kind, expected, done in rule_rows:
        if teacher_id is not None:
            rules[teacher_id][RhythmKind(kind)] = (expected, done)
    children = {t: n for t, n in children_rows if t is not None}

    record_stmt = (
        sa.select(col(CareRecord.author_id), col(CareRecord.kind), sa.func.count())
        .where(col(CareRecord.school_id) == school_id, col(CareRecord.occurred_on).between(lo, hi))
        .group_by(col(CareRecord.author_id), col(CareRecord.kind))
    )
    # SYSTEM: counts only, per author, of the school's records (a counselling record is counted, never read).
    async with as_system(session):
        record_rows = (await session.execute(record_stmt)).all()
    records: dict[uuid.UUID, dict[CareKind, int]] = defaultdict(dict)
    for author_id, kind, n in record_rows:
        records[author_id][CareKind(kind)] = n

    item_stmt = sa.select(col(CarePlanItem.owner_account_id), col(CarePlanItem.month), col(CarePlanItem.state)).where(
        col(CarePlanItem.school_id) == school_id,
        col(CarePlanItem.owner_account_id).is_not(None),
        col(CarePlanItem.month).between(month_start(lo), hi),
    )
    items: dict[uuid.UUID, PlanItemCounts] = defaultdict(PlanItemCounts)
    for owner, month, state in (await session.execute(item_stmt)).all():
        if owner is None:
            continue
        counts = items[owner]
        progress = progress_of(month, ItemState(state), now)
        counts.total += 1
        setattr(counts, progress.value, getattr(counts, progress.value) + 1)

    activity_stmt = (
        sa.select(col(Activity.recorded_by_id), sa.func.count())
        .where(
            col(Activity.school_id) == school_id,
            col(Activity.recorded_by_id).is_not(None),
            col(Activity.held_on).between(lo, hi),
        )
        .group_by(col(Activity.recorded_by_id))
    )
    activities = {t: n for t, n in (await session.execute(activity_stmt)).all() if t is not None}

    # Everyone on the school's staff now, and anyone who did or answered for care work in the span since gone.
    ids: set[uuid.UUID] = set(staff) | set(rules) | set(children) | set(records) | set(items) | set(activities)
    missing = ids - set(staff)
    if missing:
        async with as_system(session):  # SYSTEM: the names and roles of these ids only
            gone = sa.select(col(Account.id), col(Account.display_name), col(Account.role)).where(
                col(Account.id).in_(missing)
            )
            staff.update({a: (name, role) for a, name, role in (await session.execute(gone)).all()})
    if only is not None:
        ids &= {only}
    out = [
        TeacherDuty(
            teacher_id=t,
            teacher_name=staff.get(t, ("", Role.teacher))[0],
            role=ROLE_LABELS[Role(staff.get(t, ("", Role.teacher))[1])],
            children=children.get(t, 0),
            rules=[
                RuleDuty(kind=kind, label=RHYTHM_LABELS[kind], expected=exp, done=done, rate=_rate(done, exp))
                for kind in active
                for exp, done in [rules[t].get(kind, (0, 0)) if t in rules else (0, 0)]
            ],
            records=[
                RecordCount(kind=kind, label=CARE_KIND_LABELS[kind], count=records[t][kind])
                for kind in CareKind
                if t in records and kind in records[t]
            ],
            records_total=sum(records[t].values()) if t in records else 0,
            plan_items=items[t] if t in items else PlanItemCounts(),
            activities=activities.get(t, 0),
        )
        for t in ids
    ]
    out.sort(key=lambda r: (r.teacher_name, str(r.teacher_id)))
    audit.record(
        session,
        action="teacher_duties.export" if export else "teacher_duties.read",
        resource_type="school",
        resource_id=school_id,
        school_id=school_id,
        detail={"from": str(lo), "to": str(hi), "teachers": len(out)},
    )
    return TeacherDutiesReport(
        school_id=school_id, school_name=school.name, starts_on=lo, ends_on=hi, judged_until=judged_until, rows=out
    )


# ---- the XLSX -------------------------------------------------------------------------------------------------

SHEET_NAME = "教师履职"


def _percent(rate: float | None) -> str:
    return "—" if rate is None else f"{rate * 100:.1f}%"


def duties_xlsx(report: TeacherDutiesReport) -> bytes:
    """The table as a workbook: a title row (school and period), the Chinese headers, one row per teacher."""
    kinds = [r.kind for r in report.rows[0].rules] if report.rows else []
    headers: list[tuple[str, int]] = [("教师", 12), ("身份", 12), ("负责儿童", 10)]
    for kind in kinds:
        label = RHYTHM_LABELS[kind]
        headers += [(f"{label}应做", 10), (f"{label}已做", 10), (f"{label}完成率", 12)]
    headers += [(f"{CARE_KIND_LABELS[k]}记录", 10) for k in CareKind]
    headers += [("记录合计", 10), ("计划事项", 10), ("已完成", 8), ("逾期", 8), ("已取消", 8), ("关爱活动", 10)]
    # openpyxl where a workbook is written, not at start-up (it and what it pulls in weigh some 25 MB)
    import openpyxl
    from openpyxl.styles import Alignment, Font
    from openpyxl.utils import get_column_letter

    workbook = openpyxl.Workbook()
    sheet: Any = workbook.active
    sheet.title = SHEET_NAME
    title = f"{report.school_name} 教师履职情况 {report.starts_on.isoformat()} 至 {report.ends_on.isoformat()}"
    sheet.append([title])
    sheet.merge_cells(start_row=1, start_column=1, end_row=1, end_column=len(headers))
    sheet.cell(row=1, column=1).font = Font(bold=True, size=14)
    sheet.cell(row=1, column=1).alignment = Alignment(horizontal="center")
    sheet.append([f"规则完成情况统计至 {report.judged_until.isoformat()}（已到期的周期）"])
    sheet.append([h for h, _ in headers])
    for index, (_, width) in enumerate(headers, start=1):
        sheet.cell(row=3, column=index).font = Font(bold=True)
        sheet.column_dimensions[get_column_letter(index)].width = width + 2
    for row in report.rows:
        by_kind = {r.kind: r for r in row.rules}
        values: list[Any] = [row.teacher_name, row.role, row.children]
        for kind in kinds:
            rule = by_kind[kind]
            values += [rule.expected, rule.done, _percent(rule.rate)]
        counted = {r.kind: r.count for r in row.records}
        values += [counted.get(k, 0) for k in CareKind]
        items = row.plan_items
        values += [row.records_total, items.total, items.done, items.late, items.dropped, row.activities]
        sheet.append(values)
    sheet.freeze_panes = "B4"
    buffer = io.BytesIO()
    workbook.save(buffer)
    return buffer.getvalue()
