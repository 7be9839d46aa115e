"""Coverage and compliance of care work per school and class — defined once, in the form the bureau's
statistics read (DHIS2's way: an indicator is numerator / denominator, fixed as metadata).

For a span of days, for the enrolled left-behind children of each school and each of its classes:

* ``children`` — 在册留守儿童; ``special`` — flagged 特困, 单亲 or 需个别教育;
* ``paired`` — with an active proxy parent (代理家长) now; ``paired_rate = paired / children``;
* per rule (谈心, 家访, 监护人沟通, 亲情电话): ``expected`` — the periods due in the span whose due date has
  passed, over all the children (each child by its own strictness, none before its file existed), ``done`` —
  those with a matching record inside the period, ``rate = done / expected``.

Periods not yet due are not counted: a month's compliance asked mid-month counts the weeks already over.
One query for the children and one for the rules, each with grouping sets (school, school+class).
"""

import uuid
from datetime import date, timedelta
from typing import Any

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncSession
from sqlmodel import col

from api.errors import Invalid, NotFound, field_error
from api.models.accounts import Role
from api.models.care_rhythm import CoverageReport, CoverageRow, KindCompliance, RhythmKind
from api.models.children import Child, ChildStatus
from api.models.organisations import School, SchoolClass, class_label
from api.scoping import Principal, as_system
from api.services.care.due import (
    cared_children,
    flagged_expr,
    has_proxy_parent,
    judged_periods,
    period_rows,
    school_rhythms,
)
from api.services.care.rules import Status
from api.services.care.todo import check_span


def _rate(num: int, den: int) -> float | None:
    return round(num / den, 4) if den else None


async def coverage(
    session: AsyncSession, *, school_ids: list[uuid.UUID], starts_on: date, ends_on: date, today: date
) -> CoverageReport:
    """Rows for each school (``class_id`` null) and each class of it with children, for ``[starts_on,
    ends_on]`` judged as of ``today``. Schools out of the caller's scope are simply absent."""
    check_span(starts_on, ends_on)
    judged_until = min(ends_on, today - timedelta(days=1))
    schools = {
        s.id: s for s in (await session.execute(sa.select(School).where(col(School.id).in_(school_ids)))).scalars()
    }
    ids = list(schools)
    if not ids:
        return CoverageReport(starts_on=starts_on, ends_on=ends_on, judged_until=judged_until, rows=[])
    active_proxy = has_proxy_parent(Child.id)
    school_key, class_key = col(Child.school_id), col(Child.class_id)
    counts = (
        sa.select(
            school_key,
            class_key,
            sa.func.grouping(class_key).label("is_school"),
            sa.func.count().label("children"),
            sa.func.count().filter(active_proxy).label("paired"),
            sa.func.count().filter(flagged_expr()).label("special"),
        )
        .where(school_key.in_(ids), col(Child.status) == ChildStatus.enrolled, col(Child.is_left_behind))
        .group_by(sa.func.grouping_sets(sa.tuple_(school_key), sa.tuple_(school_key, class_key)))
    )
    per: dict[tuple[uuid.UUID, uuid.UUID | None, bool], dict[str, Any]] = {}
    for row in (await session.execute(counts)).mappings():
        per[(row["school_id"], row["class_id"], bool(row["is_school"]))] = {
            "children": row["children"],
            "paired": row["paired"],
            "special": row["special"],
            "kinds": {},
        }
    rhythms = await school_rhythms(session, ids)
    rows = period_rows(rhythms.values(), starts_on, judged_until) if judged_until >= starts_on else []
    kid = cared_children(col(Child.school_id).in_(ids), judged_on=judged_until, with_teacher=False)
    judged = judged_periods(kid, rows, today=today, judged_on=judged_until)
    j_school, j_class = judged.c.school_id, judged.c.class_id
    rules = sa.select(
        j_school,
        j_class,
        sa.func.grouping(j_class).label("is_school"),
        judged.c.kind,
        sa.func.count().label("expected"),
        sa.func.count().filter(judged.c.status == Status.done.value).label("done"),
    ).group_by(j_school, judged.c.kind, sa.func.grouping_sets(sa.tuple_(), sa.tuple_(j_class)))
    # SYSTEM: the schools were found in the caller's scope above and the statement reads only their children
    # and those children's records (for counts); row security would check every probe of a record again.
    async with as_system(session):
        judged_rows = (await session.execute(rules)).mappings().all()
    for row in judged_rows:
        entry = per.get((row["school_id"], row["class_id"], bool(row["is_school"])))
        if entry is not None:
            entry["kinds"][RhythmKind(row["kind"])] = (row["expected"], row["done"])
    class_ids = {c for (_, c, _) in per if c is not None}
    labels = {
        c.id: class_label(c.grade, c.name)
        for c in (await session.execute(sa.select(SchoolClass).where(col(SchoolClass.id).in_(class_ids)))).scalars()
    }
    out: list[CoverageRow] = []
    for (school_id, class_id, is_school), entry in per.items():
        school = schools[school_id]
        kinds = [
            KindCompliance(kind=kind, expected=exp, done=done, rate=_rate(done, exp))
            for kind in RhythmKind
            if kind in rhythms[school_id].active
            for exp, done in [entry["kinds"].get(kind, (0, 0))]
        ]
        out.append(
            CoverageRow(
                school_id=school_id,
                school_name=school.name,
                township_id=school.township_id,
                class_id=None if is_school else class_id,
                class_label=None if is_school or class_id is None else labels.get(class_id),
                children=entry["children"],
                paired=entry["paired"],
                paired_rate=_rate(entry["paired"], entry["children"]),
                special=entry["special"],
                kinds=kinds,
            )
        )
    out.sort(key=lambda r: (r.school_name, r.class_id is not None, r.class_label or ""))
    return CoverageReport(starts_on=starts_on, ends_on=ends_on, judged_until=judged_until, rows=out)


async def area_coverage(
    session: AsyncSession,
    principal: Principal,
    *,
    school_id: uuid.UUID | None,
    township_id: uuid.UUID | None,
    starts_on: date,
    ends_on: date,
    today: date,
) -> CoverageReport:
    """Coverage of one school, of a township's schools, or of every school the caller sees (a county for the
    bureau, a township for its officials, their own school for a school admin). The platform names an area."""
    check_span(starts_on, ends_on)
    query = sa.select(col(School.id))  # scoped: only schools the caller sees
    if school_id is not None:
        query = query.where(col(School.id) == school_id)
    if township_id is not None:
        query = query.where(col(School.township_id) == township_id)
    if school_id is None and township_id is None and principal.role == Role.platform_admin:
        raise Invalid(
            "请指定学校或乡镇 (name a school or a township)",
            code="coverage_area_required",
            fields=[field_error(["query", "township_id"], "请指定学校或乡镇", "coverage_area_required")],
        )
    ids = list((await session.execute(query)).scalars())
    if school_id is not None and not ids:
        raise NotFound("学校不存在 (school not found)", code="school_not_found")
    return await coverage(session, school_ids=ids, starts_on=starts_on, ends_on=ends_on, today=today)
