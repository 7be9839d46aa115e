"""The teacher's first screen — "what must I do this week" — and done / due / overdue for any span, per child,
teacher, class or school. Both read the rule's SQL form (:mod:`api.services.care.due`)."""

import functools
import uuid
from collections import defaultdict
from datetime import date, timedelta
from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects.postgresql import ARRAY
from sqlalchemy.ext.asyncio import AsyncSession
from sqlmodel import col

from api import audit
from api.errors import Forbidden, Invalid, NotFound, field_error
from api.models.accounts import Account, Role
from api.models.care_rhythm import (
    RHYTHM_LABELS,
    KindCounts,
    RhythmKind,
    StaffOverdue,
    StatusGroup,
    StatusReport,
    StatusRow,
    TodoEntry,
    TodoList,
)
from api.models.children import Child
from api.models.organisations import School, SchoolClass, class_label
from api.scoping import Principal, as_system
from api.services.care.due import (
    TodoRow,
    cared_children,
    judged_periods,
    last_done,
    period_rows,
    school_rhythms,
    teacher_children,
    todo_query,
    todo_rows,
)
from api.services.care.rules import TODO_HORIZON_DAYS, Status

# How far back the to-do looks for missed periods: a term and a bit (older misses are compliance history).
TODO_LOOKBACK_DAYS = 150
MAX_SPAN_DAYS = 366


# The teacher whose children a to-do is of: a parameter of the statement, so that one statement serves every
# teacher of the school.
_TEACHER = sa.bindparam("todo_teacher_id", type_=sa.Uuid())


@functools.lru_cache(maxsize=16)
def _todo_statement(
    school_ids: tuple[uuid.UUID, ...],
    of_teacher: bool,
    today: date,
    overdue_only: bool,
    rows: tuple[tuple[Any, ...], ...],
) -> Any:
    """The to-do statement, built once for the same schools, day, periods and shape. Building it (CTEs, the
    periods as arrays, a probe per rule) and computing its cache key took longer than running it; the same
    object's cache key is computed once. The periods are part of the key: a school that edits its rules or
    calendar gets a new statement."""
    where = [teacher_children(_TEACHER)] if of_teacher else []
    kid = cared_children(col(Child.school_id).in_(school_ids), *where, judged_on=today)
    judged = judged_periods(kid, list(rows), today=today, judged_on=today)
    return todo_query(judged, today=today, overdue_only=overdue_only)


async def _rows(
    session: AsyncSession,
    school_ids: list[uuid.UUID],
    teacher_id: uuid.UUID | None,
    *,
    today: date,
    overdue_only: bool,
) -> list[TodoRow]:
    """The to-do items of these schools' children (only ``teacher_id``'s children, when given)."""
    rhythms = await school_rhythms(session, school_ids)
    rows = period_rows(
        rhythms.values(), today - timedelta(days=TODO_LOOKBACK_DAYS), today + timedelta(days=TODO_HORIZON_DAYS)
    )
    stmt = _todo_statement(tuple(school_ids), teacher_id is not None, today, overdue_only, tuple(rows))
    result = await session.execute(stmt, {"todo_teacher_id": teacher_id} if teacher_id is not None else {})
    return todo_rows(result.all(), today=today)


async def school_todo_rows(session: AsyncSession, school_id: uuid.UUID, *, today: date) -> list[TodoRow]:
    """Every to-do item of a school (overdue, or due within the week), most urgent first."""
    return await _rows(session, [school_id], None, today=today, overdue_only=False)


# Built once; the ids are one array parameter (``IN`` with a list is a new statement for each length).
_IDS = sa.bindparam("ids", type_=ARRAY(sa.Uuid()))
_NAMES = sa.select(col(Child.id), col(Child.name)).where(col(Child.id) == sa.any_(_IDS))
_CLASSES = sa.select(col(SchoolClass.id), col(SchoolClass.grade), col(SchoolClass.name)).where(
    col(SchoolClass.id) == sa.any_(_IDS)
)


async def _entries(session: AsyncSession, rows: list[TodoRow], *, today: date) -> list[TodoEntry]:
    if not rows:
        return []
    child_ids = list({r.child_id for r in rows})
    names = dict((await session.execute(_NAMES, {"ids": child_ids})).all())
    class_ids = list({r.class_id for r in rows if r.class_id})
    labels = {c.id: class_label(c.grade, c.name) for c in (await session.execute(_CLASSES, {"ids": class_ids}))}
    done = await last_done(session, child_ids, today=today)
    return [
        TodoEntry(
            child_id=r.child_id,
            child_name=names.get(r.child_id, ""),
            class_id=r.class_id,
            class_label=labels.get(r.class_id) if r.class_id else None,
            kind=r.kind,
            label=RHYTHM_LABELS[r.kind],
            status=r.status.value,
            days=r.days,
            due_on=r.due_on,
            period=r.label,
            missed=r.missed,
            last_done_on=done.get((r.child_id, r.kind)),
            teacher_id=r.teacher_id,
        )
        for r in rows
    ]


async def teacher_names(session: AsyncSession, ids: set[uuid.UUID]) -> dict[uuid.UUID, str]:
    if not ids:
        return {}
    stmt = sa.select(col(Account.id), col(Account.display_name)).where(col(Account.id).in_(ids))
    # SYSTEM: a proxy parent may since have left the school; only the display names of these ids are read.
    async with as_system(session):
        return dict((await session.execute(stmt)).all())


async def todo_list(session: AsyncSession, principal: Principal, *, today: date) -> TodoList:
    """The caller's children overdue or due within a week, most urgent first; a head teacher also sees the
    overdue items of their class's children that other staff answer for, a school admin those of the whole
    school, by teacher."""
    if (
        principal.role not in (Role.teacher, Role.school_admin)
        or principal.school_id is None
        or principal.account_id is None
    ):
        raise Forbidden("只有学校教职工有待办 (only a school's staff have a to-do list)", code="todo_staff_only")
    school_ids = [principal.school_id]
    me = principal.account_id
    own = await _rows(session, school_ids, me, today=today, overdue_only=False)
    if principal.role == Role.school_admin:
        staff_rows = await _rows(session, school_ids, None, today=today, overdue_only=True)
    else:
        # A teacher's own children are those they are proxy parent of (they answer for them) and those of the
        # class they head: the class's children another teacher answers for are already among them.
        staff_rows = [r for r in own if r.status == Status.overdue]
    staff_rows = [r for r in staff_rows if r.teacher_id != me]
    entries = await _entries(session, [*own, *staff_rows], today=today)
    items, staff_entries = entries[: len(own)], entries[len(own) :]
    by_teacher: dict[uuid.UUID | None, list[TodoEntry]] = defaultdict(list)
    for entry in staff_entries:
        by_teacher[entry.teacher_id].append(entry)
    names = await teacher_names(session, {t for t in by_teacher if t is not None})
    staff = [
        StaffOverdue(teacher_id=t, teacher_name=names.get(t) if t else None, overdue=len(entries), items=entries)
        for t, entries in by_teacher.items()
    ]
    staff.sort(key=lambda s: (-s.overdue, s.teacher_name or ""))
    # A list of named children and their care: audited like a list of files (child.list).
    audit.record(
        session,
        action="care.todo.read",
        resource_type="child",
        school_id=principal.school_id,
        detail={"child_ids": sorted({str(e.child_id) for e in entries}), "items": len(entries)},
    )
    return TodoList(today=today, items=items, staff=staff)


# ---- done / due / overdue for a span -------------------------------------------------------------------------


def check_span(starts_on: date, ends_on: date) -> None:
    if ends_on < starts_on:
        message = "结束日期早于开始日期 (ends_on is before starts_on)"
        raise Invalid(
            message, code="span_reversed", fields=[field_error(["query", "ends_on"], message, "span_reversed")]
        )
    if (ends_on - starts_on).days > MAX_SPAN_DAYS:
        message = "时间跨度最多一年 (a span is at most a year)"
        raise Invalid(
            message, code="span_too_long", fields=[field_error(["query", "ends_on"], message, "span_too_long")]
        )


async def status_report(
    session: AsyncSession,
    principal: Principal,
    *,
    school_id: uuid.UUID,
    starts_on: date,
    ends_on: date,
    today: date,
    group: StatusGroup,
    class_id: uuid.UUID | None = None,
    teacher_id: uuid.UUID | None = None,
    child_id: uuid.UUID | None = None,
) -> StatusReport:
    """Every period due in ``[starts_on, ends_on]`` judged for each child (as of ``today``), counted per child,
    teacher, class or school: done, due, overdue and the longest overdue."""
    check_span(starts_on, ends_on)
    if await session.get(School, school_id) is None:
        raise NotFound("学校不存在 (school not found)", code="school_not_found")
    where: list[Any] = []
    if class_id is not None:
        where.append(col(Child.class_id) == class_id)
    if teacher_id is not None:
        where.append(teacher_children(teacher_id))
    if child_id is not None:
        where.append(col(Child.id) == child_id)
    rhythms = await school_rhythms(session, [school_id])
    judged_on = min(ends_on, today)
    kid = cared_children(
        col(Child.school_id) == school_id, *where, judged_on=judged_on, with_teacher=group == StatusGroup.teacher
    )
    judged = judged_periods(kid, period_rows(rhythms.values(), starts_on, ends_on), today=today, judged_on=judged_on)
    key = {
        StatusGroup.child: judged.c.child_id,
        StatusGroup.teacher: judged.c.teacher_id,
        StatusGroup.class_: judged.c.class_id,
        StatusGroup.school: judged.c.school_id,
    }[group]
    stmt = sa.select(
        key.label("key"),
        judged.c.kind,
        sa.func.count(sa.distinct(judged.c.child_id)).label("children"),
        sa.func.count().filter(judged.c.status == Status.done.value).label("done"),
        sa.func.count().filter(judged.c.status == Status.due.value).label("due"),
        sa.func.count().filter(judged.c.status == Status.overdue.value).label("overdue"),
        sa.func.max(judged.c.days).filter(judged.c.status == Status.overdue.value).label("max_days"),
    ).group_by(key, judged.c.kind)
    grouped: dict[Any, dict[RhythmKind, Any]] = defaultdict(dict)
    children: dict[Any, int] = defaultdict(int)
    # SYSTEM: the school was found in the caller's scope above and the statement reads only its children and
    # their records (for counts); row security would check every probe of a record again.
    async with as_system(session):
        counted = (await session.execute(stmt)).all()
    for row in counted:
        grouped[row.key][RhythmKind(row.kind)] = row
        children[row.key] = max(children[row.key], row.children)
    labels = await _labels(session, group, {k for k in grouped if k is not None})
    rows = [
        StatusRow(
            key=k,
            label=labels.get(k) if k is not None else None,
            children=children[k],
            kinds=[
                KindCounts(kind=kind, done=r.done, due=r.due, overdue=r.overdue, max_overdue_days=r.max_days)
                for kind, r in sorted(kinds.items(), key=lambda kv: list(RhythmKind).index(kv[0]))
            ],
        )
        for k, kinds in grouped.items()
    ]
    rows.sort(key=lambda r: (-sum(k.overdue for k in r.kinds), r.label or ""))
    if group == StatusGroup.child:
        audit.record(
            session,
            action="care.status.read",
            resource_type="child",
            school_id=school_id,
            detail={"child_ids": sorted(str(r.key) for r in rows), "from": str(starts_on), "to": str(ends_on)},
        )
    return StatusReport(group=group, starts_on=starts_on, ends_on=ends_on, today=today, rows=rows)


async def _labels(session: AsyncSession, group: StatusGroup, keys: set[Any]) -> dict[Any, str]:
    if not keys:
        return {}
    if group == StatusGroup.child:
        return dict(
            (await session.execute(sa.select(col(Child.id), col(Child.name)).where(col(Child.id).in_(keys)))).all()
        )
    if group == StatusGroup.teacher:
        return await teacher_names(session, keys)
    if group == StatusGroup.class_:
        classes = (await session.execute(sa.select(SchoolClass).where(col(SchoolClass.id).in_(keys)))).scalars()
        return {c.id: class_label(c.grade, c.name) for c in classes}
    return dict(
        (await session.execute(sa.select(col(School.id), col(School.name)).where(col(School.id).in_(keys)))).all()
    )
