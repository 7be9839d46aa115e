"""工作总结: a school's term summary, its figures counted from the records, submitted to the bureau.

Every figure comes from the function the rest of liushou uses for it: 建档率 from
:func:`api.services.completeness.school_completeness`, pairing and the care rules from
:func:`api.services.care.coverage.coverage`, 三个优先 from :func:`api.services.plan.activities.priority_shares`,
an item's progress from :func:`api.services.plan.progress.progress_of`, a step told in time from
:func:`api.services.emergency.decide.deadline_met`. Plain counts (records of a kind, completed calls, incidents)
are counted here over the span's Asia/Shanghai days.

A draft's figures are counted at each read; submitting freezes them on the row. Scope is the session's: a
summary of another school is not found, and the bureau and townships see only submitted ones (row security).
"""

import asyncio
import uuid
from collections.abc import Sequence
from datetime import date, datetime, time, timedelta

import sqlalchemy as sa
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession
from sqlmodel import col, select

from api import audit
from api.clock import SHANGHAI
from api.errors import Conflict, Invalid, NotFound, field_error
from api.models.care import CareKind, CarePairing, CareRecord
from api.models.children import Child, ChildStatus
from api.models.escalation import EscalationStep
from api.models.family_calls import CallStatus, FamilyCall
from api.models.incidents import Incident
from api.models.organisations import School
from api.models.plan import PROGRESS_LABELS, WORK_KIND_LABELS, ItemProgress, month_text
from api.models.term_summary import (
    SUMMARY_STATUS_LABELS,
    ActivityFigures,
    CareFigures,
    ChildrenFigures,
    IncidentFigures,
    PlanFigures,
    SubmissionReport,
    SubmissionRow,
    SummaryCreate,
    SummaryFigures,
    SummaryItem,
    SummaryListItem,
    SummaryStatus,
    SummaryUpdate,
    SummaryView,
    TermSummary,
)
from api.scoping import Principal, as_system
from api.services import completeness
from api.services.care.coverage import coverage
from api.services.care.todo import check_span
from api.services.emergency.decide import deadline_met
from api.services.plan import activities, plans, progress, rules, summary_document

NOT_FOUND = "找不到该工作总结 (summary not found)"


async def get_summary(session: AsyncSession, summary_id: uuid.UUID, *, for_update: bool = False) -> TermSummary:
    stmt = select(TermSummary).where(TermSummary.id == summary_id)
    if for_update:
        stmt = stmt.with_for_update()
    summary = (await session.execute(stmt)).scalar_one_or_none()
    if summary is None:
        raise NotFound(NOT_FOUND, code="summary_not_found")
    return summary


# ---- the figures ----------------------------------------------------------------------------------------


def _instants(starts_on: date, ends_on: date) -> tuple[datetime, datetime]:
    """The span's Asia/Shanghai days as UTC-comparable instants: [first midnight, the midnight after)."""
    return (
        datetime.combine(starts_on, time(0), tzinfo=SHANGHAI),
        datetime.combine(ends_on + timedelta(days=1), time(0), tzinfo=SHANGHAI),
    )


def _item(item: plans.CarePlanItem, now: datetime) -> SummaryItem:
    state = progress.progress_of(item.month, item.state, now)
    return SummaryItem(
        month=month_text(item.month),
        title=item.title,
        kind_label=WORK_KIND_LABELS[item.kind],
        progress=state,
        progress_label=PROGRESS_LABELS[state],
        owner=item.owner_name,
        done_on=item.done_on,
        done_note=item.done_note,
        dropped_reason=item.dropped_reason,
    )


async def _plan_figures(session: AsyncSession, plan_id: uuid.UUID, now: datetime) -> PlanFigures | None:
    plan = (await session.execute(select(plans.CarePlan).where(plans.CarePlan.id == plan_id))).scalar_one_or_none()
    if plan is None:  # deleted since (only a plan with nothing done can be)
        return None
    items = [_item(i, now) for i in await plans.plan_items(session, plan.id)]
    by = {p: [i for i in items if i.progress == p] for p in ItemProgress}
    return PlanFigures(
        plan_id=plan.id,
        plan_name=plan.name,
        items=len(items),
        progress=progress.count(i.progress for i in items),
        done=by[ItemProgress.done],
        late=by[ItemProgress.late],
        dropped=by[ItemProgress.dropped],
        planned=by[ItemProgress.planned],
    )


async def _incident_figures(
    session: AsyncSession, school_id: uuid.UUID, begin: datetime, end: datetime
) -> IncidentFigures:
    in_span = (
        col(Incident.school_id) == school_id,
        col(Incident.occurred_at) >= begin,
        col(Incident.occurred_at) < end,
    )
    incidents = (await session.execute(sa.select(sa.func.count()).select_from(Incident).where(*in_span))).scalar_one()
    steps = (
        (
            await session.execute(
                select(EscalationStep).join(Incident, col(Incident.id) == EscalationStep.incident_id).where(*in_span)
            )
        )
        .scalars()
        .all()
    )
    verdicts = [deadline_met(s) for s in steps]
    return IncidentFigures(
        incidents=incidents,
        steps=len(steps),
        told_in_time=sum(1 for s, v in zip(steps, verdicts, strict=True) if v is True and s.told_at is not None),
        told_late=sum(1 for s, v in zip(steps, verdicts, strict=True) if v is False and s.told_at is not None),
        not_told=sum(1 for s, v in zip(steps, verdicts, strict=True) if v is False and s.told_at is None),
        open=sum(1 for v in verdicts if v is None),
    )


async def figures(
    session: AsyncSession,
    *,
    school_id: uuid.UUID,
    starts_on: date,
    ends_on: date,
    plan_id: uuid.UUID | None,
    now: datetime,
) -> SummaryFigures:
    """Everything the summary counts for one school over ``starts_on``–``ends_on``, as of ``now``."""
    check_span(starts_on, ends_on)
    today = rules.today_in_china(now)
    begin, end = _instants(starts_on, ends_on)
    # SYSTEM: the school was found in the caller's scope (its summary, or the school itself, was read under
    # row security); these are counts, no child's data leaves, and a teacher reading the school's draft must
    # see the same numbers as its admin.
    async with as_system(session):
        files = await completeness.school_completeness(session, school_id=school_id)
        on_file = (
            await session.execute(
                sa.select(sa.func.count())
                .select_from(Child)
                .where(col(Child.school_id) == school_id, col(Child.status) == ChildStatus.enrolled)
            )
        ).scalar_one()
        cover = await coverage(session, school_ids=[school_id], starts_on=starts_on, ends_on=ends_on, today=today)
        row = next((r for r in cover.rows if r.class_id is None), None)
        pairings = (
            await session.execute(
                sa.select(sa.func.count())
                .select_from(CarePairing)
                .where(col(CarePairing.school_id) == school_id, col(CarePairing.ended_on).is_(None))
            )
        ).scalar_one()
        # A result has .keys() (its columns): build the mapping from its rows, not with dict(result).
        records: dict[CareKind, int] = {
            kind: n
            for kind, n in (
                await session.execute(
                    sa.select(col(CareRecord.kind), sa.func.count())
                    .where(
                        col(CareRecord.school_id) == school_id,
                        col(CareRecord.occurred_on).between(starts_on, ends_on),
                    )
                    .group_by(col(CareRecord.kind))
                )
            )
        }
        calls = (
            await session.execute(
                sa.select(sa.func.count())
                .select_from(FamilyCall)
                .where(
                    col(FamilyCall.school_id) == school_id,
                    col(FamilyCall.status) == CallStatus.completed,
                    col(FamilyCall.starts_at) >= begin,
                    col(FamilyCall.starts_at) < end,
                )
            )
        ).scalar_one()
        (share,) = await activities.priority_shares(
            session, starts_on=starts_on, ends_on=ends_on, school_ids=[school_id]
        )
        incidents = await _incident_figures(session, school_id, begin, end)
        plan = await _plan_figures(session, plan_id, now) if plan_id is not None else None
    return SummaryFigures(
        as_of=now,
        starts_on=starts_on,
        ends_on=ends_on,
        judged_until=cover.judged_until,
        children=ChildrenFigures(
            on_file=on_file, left_behind=files.left_behind, files_complete=files.complete, files_rate=files.rate
        ),
        care=CareFigures(
            pairings_active=pairings,
            paired_children=row.paired if row else 0,
            paired_rate=row.paired_rate if row else None,
            talks=records.get(CareKind.talk, 0),
            home_visits=records.get(CareKind.home_visit, 0),
            guardian_contacts=records.get(CareKind.guardian_contact, 0),
            parent_contacts=records.get(CareKind.parent_contact, 0),
            rules=row.kinds if row else [],
        ),
        family_calls_completed=calls,
        activities=ActivityFigures(
            activities=share.activities,
            places=share.places,
            left_behind_places=share.left_behind_places,
            priority_share=share.share,
        ),
        incidents=incidents,
        plan=plan,
    )


# ---- views ----------------------------------------------------------------------------------------------


async def _school_names(session: AsyncSession, school_ids: Sequence[uuid.UUID]) -> dict[uuid.UUID, str]:
    rows = await session.execute(sa.select(col(School.id), col(School.name)).where(col(School.id).in_(school_ids)))
    return {i: n for i, n in rows}


def _list_item(s: TermSummary, school_name: str) -> SummaryListItem:
    return SummaryListItem(
        id=s.id,
        school_id=s.school_id,
        school_name=school_name,
        plan_id=s.plan_id,
        title=s.title,
        starts_on=s.starts_on,
        ends_on=s.ends_on,
        status=s.status,
        status_label=SUMMARY_STATUS_LABELS[s.status],
        submitted_at=s.submitted_at,
    )


async def summary_view(session: AsyncSession, summary: TermSummary, *, now: datetime) -> SummaryView:
    """The summary with its figures: frozen once submitted, counted now while a draft."""
    if summary.figures is not None:
        counted = SummaryFigures.model_validate(summary.figures)
    else:
        counted = await figures(
            session,
            school_id=summary.school_id,
            starts_on=summary.starts_on,
            ends_on=summary.ends_on,
            plan_id=summary.plan_id,
            now=now,
        )
    names = await _school_names(session, [summary.school_id])
    return SummaryView(
        **_list_item(summary, names.get(summary.school_id, "")).model_dump(),
        highlights=summary.highlights,
        problems=summary.problems,
        submitted_by_id=summary.submitted_by_id,
        figures=counted,
    )


async def list_summaries(session: AsyncSession, *, school_id: uuid.UUID) -> list[SummaryListItem]:
    """The school's summaries, newest span first (the bureau sees only the submitted ones)."""
    school = await plans.get_school(session, school_id)
    rows = await session.execute(
        select(TermSummary).where(TermSummary.school_id == school_id).order_by(col(TermSummary.starts_on).desc())
    )
    return [_list_item(s, school.name) for s in rows.scalars()]


async def submissions(session: AsyncSession, *, starts_on: date, ends_on: date) -> SubmissionReport:
    """Every school the caller sees, and whether it has submitted a summary whose span overlaps the term."""
    if ends_on < starts_on:
        message = "结束日期早于开始日期 (ends_on is before starts_on)"
        raise Invalid(
            message, code="span_reversed", fields=[field_error(["query", "ends_on"], message, "span_reversed")]
        )
    submitted = (
        select(TermSummary)
        .where(
            col(TermSummary.status) == SummaryStatus.submitted,
            col(TermSummary.starts_on) <= ends_on,
            col(TermSummary.ends_on) >= starts_on,
        )
        .subquery()
    )
    rows = await session.execute(
        sa.select(
            col(School.id),
            col(School.name),
            col(School.township_id),
            submitted.c.id,
            submitted.c.title,
            submitted.c.submitted_at,
        )
        .outerjoin(submitted, submitted.c.school_id == School.id)
        .order_by(col(School.name), submitted.c.submitted_at)
    )
    seen: dict[uuid.UUID, SubmissionRow] = {}
    for sid, name, township_id, summary_id, title, submitted_at in rows:
        if sid not in seen:  # a school with two overlapping summaries is listed once, by its first
            seen[sid] = SubmissionRow(
                school_id=sid,
                school_name=name,
                township_id=township_id,
                submitted=summary_id is not None,
                summary_id=summary_id,
                title=title,
                submitted_at=submitted_at,
            )
    out = list(seen.values())
    return SubmissionReport(
        starts_on=starts_on, ends_on=ends_on, schools=len(out), submitted=sum(r.submitted for r in out), rows=out
    )


# ---- writes ---------------------------------------------------------------------------------------------


async def create_summary(
    session: AsyncSession, principal: Principal, *, school_id: uuid.UUID, data: SummaryCreate, now: datetime
) -> TermSummary:
    """A draft for a plan (its dates, its name) or for a span; one per school and span (409 ``summary_exists``)."""
    school = await plans.get_school(session, school_id)
    if data.plan_id is not None:
        plan = (
            await session.execute(select(plans.CarePlan).where(plans.CarePlan.id == data.plan_id))
        ).scalar_one_or_none()
        if plan is None or plan.school_id != school.id:
            raise rules.invalid("summary_plan_not_found", "找不到本校的该工作计划 (no such plan)", ["plan_id"])
        starts_on, ends_on = plan.starts_on, plan.ends_on
        title = data.title or plan.name.replace("计划", "总结")[:64]
    else:
        assert data.starts_on is not None and data.ends_on is not None  # the schema's validator
        starts_on, ends_on = data.starts_on, data.ends_on
        title = data.title or f"{school.name}关爱留守儿童工作总结"[:64]
    check_span(starts_on, ends_on)
    summary = TermSummary(
        school_id=school.id,
        plan_id=data.plan_id,
        title=title,
        starts_on=starts_on,
        ends_on=ends_on,
        highlights=data.highlights,
        problems=data.problems,
        created_by_id=principal.account_id,
        created_at=now,
        updated_at=now,
    )
    session.add(summary)
    try:
        async with session.begin_nested():
            await session.flush()
    except IntegrityError as exc:
        if "uq_term_summary_school_span" in str(exc.orig):
            raise Conflict(
                "该校这段时间已有工作总结 (the school already has a summary for these dates)", code="summary_exists"
            ) from None
        raise
    return summary


def _check_draft(summary: TermSummary) -> None:
    if summary.status != SummaryStatus.draft:
        raise Conflict("工作总结已上报，不能再修改 (the summary has been submitted)", code="summary_submitted")


async def update_summary(
    session: AsyncSession, *, summary_id: uuid.UUID, data: SummaryUpdate, now: datetime
) -> TermSummary:
    """The leader's text (highlights, problems) and the title, while a draft."""
    summary = await get_summary(session, summary_id, for_update=True)
    _check_draft(summary)
    for key, value in data.model_dump(exclude_unset=True).items():
        if value is not None:
            setattr(summary, key, value)
    summary.updated_at = now
    await session.flush()
    return summary


async def submit_summary(
    session: AsyncSession, principal: Principal, *, summary_id: uuid.UUID, now: datetime
) -> TermSummary:
    """Submit to the bureau: the figures are counted now and frozen. Once only (409 ``summary_submitted``);
    the row lock makes two concurrent submits one submit and one 409."""
    summary = await get_summary(session, summary_id, for_update=True)
    _check_draft(summary)
    counted = await figures(
        session,
        school_id=summary.school_id,
        starts_on=summary.starts_on,
        ends_on=summary.ends_on,
        plan_id=summary.plan_id,
        now=now,
    )
    summary.figures = counted.model_dump(mode="json")
    summary.status = SummaryStatus.submitted
    summary.submitted_at = now
    summary.submitted_by_id = principal.account_id
    summary.updated_at = now
    await session.flush()
    return summary


async def document(session: AsyncSession, *, summary_id: uuid.UUID, now: datetime) -> tuple[str, bytes]:
    """The summary as an editable Word document (file name, bytes); the export is audited."""
    summary = await get_summary(session, summary_id)
    view = await summary_view(session, summary, now=now)
    audit.record(
        session,
        action="term_summary.export",
        resource_type="term_summary",
        resource_id=summary.id,
        school_id=summary.school_id,
        detail={"format": "docx", "status": summary.status.value},
    )
    await session.flush()
    return summary_document.file_name(view), await asyncio.to_thread(summary_document.render, view)
