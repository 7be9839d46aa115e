"""The statistics' reads: the quantities of :mod:`.indicators` for the schools of an area and one period,
per school and class (the finest grain; :mod:`.service` adds them up to the level asked for).

Every query runs in the caller's row scope (the schools' ids are found under it first), aggregates in the
database and returns counts — never a child's name or id.

* **Stock** quantities count the left-behind children on the roster at the day ``on`` (the period's last
  day, or today if earlier): filed by then (``created_at``) and not moved off the roster before it
  (``status`` enrolled, or changed after ``on``). Their attributes (sex, class, flags, guardians, the
  completeness of the file) are as recorded now: the archive keeps no history of them. Age is reckoned on
  the period's last day. A proxy parent counts when the pairing had started by ``on`` and had not ended.
* **Flow** quantities count what happened within the period: care work due and done (the care rhythm's rule,
  :mod:`api.services.care.due`, as the schools' coverage report judges it), aid records, incidents by their
  Shanghai date of occurrence and the steps of their chains.
"""

import statistics
import uuid
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import date, datetime, time, timedelta
from typing import Any

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncSession
from sqlmodel import col

from api.models.care import CareKind, CarePairing, CareRecord, PairingKind
from api.models.children import Child, ChildStatus, ParentsAway, Sex
from api.models.enrolment import SchoolEnrolment
from api.models.escalation import EscalationStep
from api.models.guardians import ChildGuardian, GuardianRole
from api.models.incidents import Incident, IncidentCategory, Severity
from api.models.organisations import School, SchoolClass
from api.scoping import as_system
from api.services.care.due import cared_children, judged_periods, period_rows, school_rhythms, shanghai_day
from api.services.care.rules import Status
from api.services.completeness import incomplete_condition, link_facts_subquery
from api.services.emergency.decide import deadline_met
from api.services.stats import categories, periods
from api.services.stats.indicators import CARE_KINDS, SPECIAL_FLAGS
from api.services.stats.periods import SHANGHAI

Cell = tuple[uuid.UUID, uuid.UUID | None]  # (school, class) — the finest grain


@dataclass
class Figures:
    """Quantities per (school, class), and the chain's raw step times per (school, class)."""

    counts: dict[Cell, dict[str, int]] = field(default_factory=lambda: defaultdict(lambda: defaultdict(int)))
    # Per school only (a school's enrolment is not split by class).
    enrolment: dict[uuid.UUID, int] = field(default_factory=dict)
    # (step_no, minutes to told or None, deadline met True/False/None) per (school, class).
    steps: dict[Cell, list[tuple[int, float | None, bool | None]]] = field(default_factory=lambda: defaultdict(list))


def _instant(day: date) -> datetime:
    return datetime.combine(day, time(0), tzinfo=SHANGHAI)


async def children_figures(
    session: AsyncSession, figures: Figures, *, school_ids: Sequence[uuid.UUID], on: date, age_on: date
) -> None:
    """The stock quantities of the left-behind children on the roster at ``on``."""
    on_roster = (
        col(Child.school_id).in_(list(school_ids)),
        col(Child.is_left_behind),
        shanghai_day(col(Child.created_at)) <= on,
        sa.or_(col(Child.status) == ChildStatus.enrolled, col(Child.status_changed_on) > on),
    )
    links = link_facts_subquery(*on_roster)
    pairing: Any = CarePairing.__table__  # type: ignore[attr-defined]
    paired = sa.exists().where(
        pairing.c.child_id == Child.id,
        pairing.c.kind == PairingKind.proxy_parent.value,
        pairing.c.started_on <= on,
        sa.or_(pairing.c.ended_on.is_(None), pairing.c.ended_on > on),
    )
    cg: Any = ChildGuardian.__table__  # type: ignore[attr-defined]
    relation = (
        sa.select(cg.c.relation)
        .where(cg.c.child_id == Child.id, cg.c.is_active, cg.c.role == GuardianRole.entrusted_guardian.value)
        .order_by(cg.c.contact_order, cg.c.created_at)
        .limit(1)
        .scalar_subquery()
    )
    klass: Any = SchoolClass.__table__  # type: ignore[attr-defined]
    grade = klass.c.grade
    conds: dict[str, Any] = {
        "left_behind": sa.true(),
        "lb_parents_both": col(Child.parents_away) == ParentsAway.both,
        "lb_parents_father": col(Child.parents_away) == ParentsAway.father,
        "lb_parents_mother": col(Child.parents_away) == ParentsAway.mother,
        "lb_parents_other": col(Child.parents_away) == ParentsAway.none,
        "lb_sex_male": col(Child.sex) == Sex.male,
        "lb_sex_female": col(Child.sex) == Sex.female,
        "lb_boarding": col(Child.is_boarding),
        "lb_day": sa.not_(col(Child.is_boarding)),
        "archive_complete": sa.not_(incomplete_condition(links)),
        "paired": paired,
    }
    for key, cond in categories.age_band_sql(col(Child.birth_date), age_on).items():
        conds[f"lb_age_{key}"] = cond
    placed = []
    for key, low, high, _ in categories.STAGES:
        conds[f"lb_stage_{key}"] = grade.between(low, high)
        placed.append(grade.between(low, high))
    conds["lb_stage_unplaced"] = sa.not_(sa.func.coalesce(sa.or_(*placed), sa.false()))
    for g in categories.GRADES:
        conds[f"lb_grade_{g}"] = grade == g
    conds["lb_grade_unplaced"] = sa.not_(sa.func.coalesce(grade.in_(categories.GRADES), sa.false()))
    for key, cond in categories.guardian_type_sql(relation).items():
        conds[f"lb_guardian_{key}"] = cond
    for flag in SPECIAL_FLAGS:
        conds[f"lb_{flag.value}"] = getattr(Child, flag.value)
    # The relation is looked up once per child (a lateral column), not once per guardian-type condition.
    base = (
        sa.select(
            col(Child.school_id).label("school_id"),
            col(Child.class_id).label("class_id"),
            *[sa.func.coalesce(cond, sa.false()).label(key) for key, cond in conds.items() if "guardian" not in key],
            relation.label("relation"),
        )
        .select_from(Child)
        .outerjoin(klass, klass.c.id == Child.class_id)
        .outerjoin(links, links.c.child_id == Child.id)
        .where(*on_roster)
        .subquery("kid")
    )
    guardian = categories.guardian_type_sql(base.c.relation)
    columns = [sa.func.count().filter(base.c[key]).label(key) for key in conds if "guardian" not in key] + [
        sa.func.count().filter(cond).label(f"lb_guardian_{key}") for key, cond in guardian.items()
    ]
    stmt = sa.select(base.c.school_id, base.c.class_id, *columns).group_by(base.c.school_id, base.c.class_id)
    for row in (await session.execute(stmt)).mappings():
        cell = figures.counts[(row["school_id"], row["class_id"])]
        for key in conds:
            cell[key] += row[key]


async def enrolment_figures(
    session: AsyncSession, figures: Figures, *, school_ids: Sequence[uuid.UUID], on: date
) -> None:
    """Each school's pupils in the term of ``on``: as recorded for that term, else the school's own count."""
    term_key = periods.containing(periods.PeriodKind.term, on).key
    recorded = {
        row.school_id: row.pupils
        for row in (
            await session.execute(
                sa.select(SchoolEnrolment).where(
                    col(SchoolEnrolment.school_id).in_(list(school_ids)), col(SchoolEnrolment.term_key) == term_key
                )
            )
        ).scalars()
    }
    for school_id, pupils in (
        await session.execute(
            sa.select(col(School.id), col(School.pupil_count)).where(col(School.id).in_(list(school_ids)))
        )
    ).all():
        figures.enrolment[school_id] = recorded.get(school_id, pupils)


async def care_figures(
    session: AsyncSession,
    figures: Figures,
    *,
    school_ids: Sequence[uuid.UUID],
    starts_on: date,
    ends_on: date,
    today: date,
) -> None:
    """Care work due and done within the period, judged as the schools' coverage report judges it (periods
    due by yesterday, each child by its own strictness, none before its file existed)."""
    judged_until = min(ends_on, today - timedelta(days=1))
    if judged_until < starts_on or not school_ids:
        return
    rhythms = await school_rhythms(session, school_ids)
    rows = period_rows(rhythms.values(), starts_on, judged_until)
    if not rows:
        return
    kid = cared_children(col(Child.school_id).in_(list(school_ids)), judged_on=judged_until, with_teacher=False)
    judged = judged_periods(kid, rows, today=today, judged_on=judged_until)
    stmt = sa.select(
        judged.c.school_id,
        judged.c.class_id,
        judged.c.kind,
        sa.func.count().label("expected"),
        sa.func.count().filter(judged.c.status == Status.done.value).label("done"),
    ).group_by(judged.c.school_id, judged.c.class_id, judged.c.kind)
    # SYSTEM: the schools were found in the caller's scope and the statement reads only their children and
    # those children's records, for counts (as the coverage report does); row security would check every
    # probe of a record again.
    async with as_system(session):
        result = (await session.execute(stmt)).mappings().all()
    wanted = {kind.value for kind, _ in CARE_KINDS}
    for row in result:
        if row["kind"] in wanted:
            cell = figures.counts[(row["school_id"], row["class_id"])]
            cell[f"care_{row['kind']}_expected"] += row["expected"]
            cell[f"care_{row['kind']}_done"] += row["done"]


async def aid_figures(
    session: AsyncSession, figures: Figures, *, school_ids: Sequence[uuid.UUID], starts_on: date, ends_on: date
) -> None:
    """Aid (资助) records of left-behind children within the period: children aided, records, amount."""
    record: Any = CareRecord.__table__  # type: ignore[attr-defined]
    amount = sa.cast(record.c.content["amount_fen"].astext, sa.BigInteger)
    stmt = (
        sa.select(
            record.c.school_id,
            col(Child.class_id),
            sa.func.count(sa.distinct(record.c.child_id)).label("children"),
            sa.func.count().label("records"),
            sa.func.coalesce(sa.func.sum(amount), 0).label("amount_fen"),
        )
        .select_from(record.join(Child, col(Child.id) == record.c.child_id))
        .where(
            record.c.school_id.in_(list(school_ids)),
            record.c.kind == CareKind.aid.value,
            record.c.occurred_on.between(starts_on, ends_on),
            col(Child.is_left_behind),
        )
        .group_by(record.c.school_id, col(Child.class_id))
    )
    for row in (await session.execute(stmt)).mappings():
        cell = figures.counts[(row["school_id"], row["class_id"])]
        cell["aid_children"] += row["children"]
        cell["aid_records"] += row["records"]
        cell["aid_amount_fen"] += int(row["amount_fen"])


async def incident_figures(
    session: AsyncSession, figures: Figures, *, school_ids: Sequence[uuid.UUID], starts_on: date, ends_on: date
) -> None:
    """Incidents that happened (or were found) within the period, by category and severity, and the times of
    their chains' steps (judged by :func:`deadline_met`, the chain's own rule)."""
    in_span = (
        col(Incident.school_id).in_(list(school_ids)),
        col(Incident.occurred_at) >= _instant(starts_on),
        col(Incident.occurred_at) < _instant(ends_on + timedelta(days=1)),
    )
    stmt = (
        sa.select(
            col(Incident.school_id),
            col(Incident.class_id),
            col(Incident.category),
            col(Incident.severity),
            sa.func.count().label("n"),
        )
        .where(*in_span)
        .group_by(col(Incident.school_id), col(Incident.class_id), col(Incident.category), col(Incident.severity))
    )
    for row in (await session.execute(stmt)).mappings():
        cell = figures.counts[(row["school_id"], row["class_id"])]
        cell["incidents"] += row["n"]
        cell[f"incidents_{IncidentCategory(row['category']).value}"] += row["n"]
        cell[f"incidents_sev_{Severity(row['severity']).value}"] += row["n"]
    steps = (
        sa.select(
            col(Incident.school_id),
            col(Incident.class_id),
            col(Incident.occurred_at),
            EscalationStep,
        )
        .join(EscalationStep, col(EscalationStep.incident_id) == Incident.id)
        .where(*in_span)
    )
    for school_id, class_id, occurred_at, step in (await session.execute(steps)).all():
        verdict = deadline_met(step)
        minutes = (step.told_at - occurred_at).total_seconds() / 60 if step.told_at is not None else None
        figures.steps[(school_id, class_id)].append((step.step_no, minutes, verdict))


def chain_counts(steps: list[tuple[int, float | None, bool | None]]) -> tuple[dict[str, int], dict[str, float | None]]:
    """From a unit's steps: per step, told on time, judged and told counts; the median and worst minutes."""
    counts: dict[str, int] = {}
    minutes: dict[str, float | None] = {}
    for n in (1, 2, 3):
        mine = [s for s in steps if s[0] == n]
        told = [m for _, m, _ in mine if m is not None]
        counts[f"chain_s{n}_on_time"] = sum(1 for _, _, v in mine if v is True)
        counts[f"chain_s{n}_judged"] = sum(1 for _, _, v in mine if v is not None)
        counts[f"chain_s{n}_told"] = len(told)
        minutes[f"s{n}_median"] = statistics.median(told) if told else None
        minutes[f"s{n}_worst"] = max(told) if told else None
    return counts, minutes
