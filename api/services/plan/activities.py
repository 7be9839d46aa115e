"""关爱活动: recording an activity with the children who took part, linking it to the plan item it fulfils,
a child's activities (for the timeline), and 三个优先 — the share of places that went to left-behind children.

Scope is the session's: another school's activity, child or plan item is not found. Participants must be
children of the activity's school; each place keeps whether the child was left-behind when it was recorded.
"""

import uuid
from collections.abc import Sequence
from datetime import date, datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession
from sqlmodel import col, select

from api import audit
from api.errors import Conflict, NotFound, field_error
from api.models.base import Page
from api.models.children import Child
from api.models.organisations import School, SchoolClass
from api.models.plan import (
    ACTIVITY_KIND_LABELS,
    ORGANISER_LABELS,
    Activity,
    ActivityCreate,
    ActivityKind,
    ActivityParticipant,
    ActivitySummary,
    ActivityUpdate,
    ActivityView,
    CarePlanItem,
    ChildActivity,
    FulfilmentKind,
    ItemState,
    ParticipantPublic,
    PriorityShare,
)
from api.scoping import Principal
from api.services.plan import plans, rules

# ---- look-ups -------------------------------------------------------------------------------------------


async def get_activity(session: AsyncSession, activity_id: uuid.UUID, *, for_update: bool = False) -> Activity:
    stmt = select(Activity).where(Activity.id == activity_id)
    if for_update:
        stmt = stmt.with_for_update()
    activity = (await session.execute(stmt)).scalar_one_or_none()
    if activity is None:
        raise NotFound("找不到该活动 (activity not found)", code="activity_not_found")
    return activity


async def _children(
    session: AsyncSession, school_id: uuid.UUID, child_ids: Sequence[uuid.UUID]
) -> dict[uuid.UUID, bool]:
    """Each listed child's left-behind status; a child not of this school (or not in scope) is refused."""
    rules.check_no_duplicates(child_ids)
    if not child_ids:
        return {}
    rows = await session.execute(
        select(Child.id, Child.school_id, Child.is_left_behind).where(col(Child.id).in_(child_ids))
    )
    found = {r.id: (r.school_id, r.is_left_behind) for r in rows}
    for i, child_id in enumerate(child_ids):
        if child_id not in found or found[child_id][0] != school_id:
            raise rules.invalid(
                "activity_child_not_in_school",
                "参加活动的学生须为本校档案中的学生 (a child not on this school's archive)",
                ["child_ids", i],
            )
    return {child_id: found[child_id][1] for child_id in child_ids}


async def _check_class(session: AsyncSession, school_id: uuid.UUID, class_id: uuid.UUID | None) -> None:
    if class_id is None:
        return
    klass = await session.get(SchoolClass, class_id)
    if klass is None or klass.school_id != school_id:
        raise rules.invalid("activity_class_not_in_school", "班级不属于本校 (class of another school)", ["class_id"])


async def _link(
    session: AsyncSession, activity: Activity, item_id: uuid.UUID, principal: Principal, now: datetime
) -> None:
    """The item (of the same school) becomes done, fulfilled by this activity."""
    item = (
        await session.execute(select(CarePlanItem).where(CarePlanItem.id == item_id).with_for_update())
    ).scalar_one_or_none()
    if item is None or item.school_id != activity.school_id:
        raise rules.invalid(
            "activity_plan_item_not_found", "找不到本校的该计划项目 (no such plan item)", ["plan_item_id"]
        )
    rules.check_item_can_take(item.state, item.fulfilled_by_id, activity.id)
    item.state = ItemState.done
    item.done_on = activity.held_on
    item.fulfilled_by_kind = FulfilmentKind.activity
    item.fulfilled_by_id = activity.id
    item.dropped_reason = None
    item.progress_by_id = principal.account_id
    item.updated_at = now
    activity.plan_item_id = item.id


async def _unlink(session: AsyncSession, activity: Activity, principal: Principal, now: datetime) -> None:
    """The item this activity fulfilled is planned again (late again, if its month has passed)."""
    if activity.plan_item_id is None:
        return
    item = (
        await session.execute(select(CarePlanItem).where(CarePlanItem.id == activity.plan_item_id).with_for_update())
    ).scalar_one_or_none()
    activity.plan_item_id = None
    if item is not None and item.fulfilled_by_id == activity.id:
        item.state = ItemState.planned
        item.done_on = None
        item.fulfilled_by_kind = None
        item.fulfilled_by_id = None
        item.progress_by_id = principal.account_id
        item.updated_at = now


async def _flush(session: AsyncSession) -> None:
    """Flush; two activities claiming one plan item at once meet the unique index (a 409, not a 500)."""
    try:
        async with session.begin_nested():
            await session.flush()
    except IntegrityError as exc:
        if "uq_activity_plan_item" in str(exc.orig):
            raise Conflict(
                "该计划项目已由另一项活动落实 (the plan item is already fulfilled by another activity)",
                code="plan_item_already_fulfilled",
                fields=[field_error(["plan_item_id"], "already fulfilled", "conflict")],
            ) from None
        raise


# ---- writes ---------------------------------------------------------------------------------------------


async def create_activity(
    session: AsyncSession, principal: Principal, *, school_id: uuid.UUID, data: ActivityCreate, now: datetime
) -> Activity:
    """Record an activity of a school: not in the future, children of the school's archive (left-behind or
    not), each once; linked to the plan item it fulfils, which then shows done."""
    school = await plans.get_school(session, school_id)
    rules.check_held_on(data.held_on, rules.today_in_china(now))
    await _check_class(session, school.id, data.class_id)
    children = await _children(session, school.id, data.child_ids)
    activity = Activity(
        school_id=school.id,
        class_id=data.class_id,
        kind=data.kind,
        title=data.title,
        held_on=data.held_on,
        place=data.place,
        organiser=data.organiser,
        organiser_name=data.organiser_name,
        adult_count=data.adult_count,
        adult_names=data.adult_names,
        outcome=data.outcome,
        recorded_by_id=principal.account_id,
        created_at=now,
        updated_at=now,
    )
    session.add(activity)
    await session.flush()
    _add_participants(session, activity, children)
    if data.plan_item_id is not None:
        await _link(session, activity, data.plan_item_id, principal, now)
    await _flush(session)
    return activity


def _add_participants(session: AsyncSession, activity: Activity, children: dict[uuid.UUID, bool]) -> None:
    session.add_all(
        ActivityParticipant(
            activity_id=activity.id,
            child_id=child_id,
            school_id=activity.school_id,
            held_on=activity.held_on,
            left_behind=left_behind,
        )
        for child_id, left_behind in children.items()
    )


async def update_activity(
    session: AsyncSession, principal: Principal, *, activity_id: uuid.UUID, data: ActivityUpdate, now: datetime
) -> Activity:
    """Only the fields sent change. ``child_ids`` replaces the list (a child kept keeps the status it was
    recorded with); ``plan_item_id`` re-links (null unlinks: the item is planned again)."""
    activity = await get_activity(session, activity_id, for_update=True)
    fields = data.model_dump(exclude_unset=True)
    if fields.get("held_on") is not None:
        rules.check_held_on(fields["held_on"], rules.today_in_china(now))
    if fields.get("class_id") is not None:
        await _check_class(session, activity.school_id, fields["class_id"])
    for key in ("kind", "title", "held_on", "place", "organiser", "adult_count", "outcome"):
        if fields.get(key) is not None:
            setattr(activity, key, fields[key])
    for key in ("organiser_name", "adult_names", "class_id"):
        if key in fields:
            setattr(activity, key, fields[key])
    activity.updated_at = now

    current = (
        (await session.execute(select(ActivityParticipant).where(ActivityParticipant.activity_id == activity.id)))
        .scalars()
        .all()
    )
    if fields.get("child_ids") is not None:
        wanted = list(fields["child_ids"])
        rules.check_no_duplicates(wanted)
        kept = {p.child_id: p for p in current if p.child_id in set(wanted)}
        new = await _children(session, activity.school_id, [c for c in wanted if c not in kept])
        removed = [p for p in current if p.child_id not in kept]
        for p in removed:
            await session.delete(p)
        _add_participants(session, activity, new)
        if removed:  # a place's delete is audited without its values: say whose
            audit.record(
                session,
                action="activity.participants_removed",
                resource_type="activity",
                resource_id=activity.id,
                school_id=activity.school_id,
                detail={"child_ids": [str(p.child_id) for p in removed]},
            )
        current = list(kept.values())
    if "held_on" in fields:
        for p in current:
            p.held_on = activity.held_on

    if "plan_item_id" in fields and fields["plan_item_id"] != activity.plan_item_id:
        await _unlink(session, activity, principal, now)
        if fields["plan_item_id"] is not None:
            await _link(session, activity, fields["plan_item_id"], principal, now)
    elif activity.plan_item_id is not None and "held_on" in fields:
        item = await session.get(CarePlanItem, activity.plan_item_id)
        if item is not None and item.fulfilled_by_id == activity.id:
            item.done_on = activity.held_on
    await _flush(session)
    return activity


async def delete_activity(
    session: AsyncSession, principal: Principal, *, activity_id: uuid.UUID, now: datetime
) -> None:
    """An activity entered by mistake goes, with its places; the item it fulfilled is planned again. The
    audit log keeps what it was."""
    activity = await get_activity(session, activity_id, for_update=True)
    await _unlink(session, activity, principal, now)
    places = (
        (await session.execute(select(ActivityParticipant).where(ActivityParticipant.activity_id == activity.id)))
        .scalars()
        .all()
    )
    # The row deletes below are audited without their values; this entry says what went.
    audit.record(
        session,
        action="activity.removed",
        resource_type="activity",
        resource_id=activity.id,
        school_id=activity.school_id,
        detail={
            "title": activity.title,
            "kind": activity.kind.value,
            "held_on": activity.held_on.isoformat(),
            "child_ids": [str(p.child_id) for p in places],
        },
    )
    for place in places:
        await session.delete(place)
    await session.flush()
    await session.delete(activity)
    await session.flush()


# ---- reads ----------------------------------------------------------------------------------------------


_COUNTS = (
    select(
        ActivityParticipant.activity_id,
        sa.func.count().label("children"),
        sa.func.count().filter(col(ActivityParticipant.left_behind)).label("left_behind"),
    )
    .group_by(col(ActivityParticipant.activity_id))
    .subquery()
)


def _summary(a: Activity, children: int, left_behind: int) -> ActivitySummary:
    return ActivitySummary(
        id=a.id,
        school_id=a.school_id,
        kind=a.kind,
        kind_label=ACTIVITY_KIND_LABELS[a.kind],
        title=a.title,
        held_on=a.held_on,
        place=a.place,
        organiser=a.organiser,
        organiser_label=ORGANISER_LABELS[a.organiser],
        organiser_name=a.organiser_name,
        class_id=a.class_id,
        plan_item_id=a.plan_item_id,
        children=children,
        left_behind_children=left_behind,
        adult_count=a.adult_count,
    )


async def list_activities(
    session: AsyncSession,
    *,
    school_id: uuid.UUID,
    held_from: date | None,
    held_to: date | None,
    kind: ActivityKind | None,
    offset: int,
    limit: int,
) -> Page[ActivitySummary]:
    """A school's activities, newest first, with how many children (and left-behind children) took part."""
    await plans.get_school(session, school_id)
    where: list[Any] = [Activity.school_id == school_id]
    if held_from is not None:
        where.append(col(Activity.held_on) >= held_from)
    if held_to is not None:
        where.append(col(Activity.held_on) <= held_to)
    if kind is not None:
        where.append(Activity.kind == kind)
    total = (await session.execute(select(sa.func.count()).select_from(Activity).where(*where))).scalar_one()
    rows = await session.execute(
        select(Activity, sa.func.coalesce(_COUNTS.c.children, 0), sa.func.coalesce(_COUNTS.c.left_behind, 0))
        .outerjoin(_COUNTS, _COUNTS.c.activity_id == Activity.id)
        .where(*where)
        .order_by(col(Activity.held_on).desc(), col(Activity.created_at).desc())
        .offset(offset)
        .limit(limit)
    )
    return Page(data=[_summary(a, c, lb) for a, c, lb in rows], count=total)


async def activity_view(session: AsyncSession, *, activity_id: uuid.UUID, audit_read: bool = True) -> ActivityView:
    """One activity with the children who took part (names: the read is audited as ``activity.read``)."""
    activity = await get_activity(session, activity_id)
    rows = (
        await session.execute(
            select(ActivityParticipant.child_id, Child.name, ActivityParticipant.left_behind)
            .join(Child, col(Child.id) == ActivityParticipant.child_id)
            .where(ActivityParticipant.activity_id == activity.id)
            .order_by(col(Child.name_pinyin), col(Child.name))
        )
    ).all()
    if audit_read:
        audit.record(
            session,
            action="activity.read",
            resource_type="activity",
            resource_id=activity.id,
            school_id=activity.school_id,
        )
    participants = [ParticipantPublic(child_id=r[0], name=r[1], left_behind=r[2]) for r in rows]
    return ActivityView(
        **_summary(activity, len(participants), sum(p.left_behind for p in participants)).model_dump(),
        adult_names=activity.adult_names,
        outcome=activity.outcome,
        participants=participants,
    )


async def child_activities(
    session: AsyncSession, *, child_id: uuid.UUID, offset: int, limit: int
) -> Page[ChildActivity]:
    """The activities a child took part in, newest first (for the child's timeline; audited as
    ``child.activities.read``). Only activities of schools in the caller's scope."""
    child = (await session.execute(select(Child.id, Child.school_id).where(Child.id == child_id))).one_or_none()
    if child is None:
        raise NotFound("找不到该儿童档案 (child not found)", code="child_not_found")
    where = ActivityParticipant.child_id == child_id
    total = (await session.execute(select(sa.func.count()).select_from(ActivityParticipant).where(where))).scalar_one()
    rows = await session.execute(
        select(Activity, ActivityParticipant.left_behind)
        .join(ActivityParticipant, col(ActivityParticipant.activity_id) == Activity.id)
        .where(where)
        .order_by(col(ActivityParticipant.held_on).desc(), col(Activity.created_at).desc())
        .offset(offset)
        .limit(limit)
    )
    audit.record(
        session,
        action="child.activities.read",
        resource_type="child",
        resource_id=child_id,
        school_id=child.school_id,
    )
    return Page(
        data=[
            ChildActivity(
                activity_id=a.id,
                held_on=a.held_on,
                kind=a.kind,
                kind_label=ACTIVITY_KIND_LABELS[a.kind],
                title=a.title,
                place=a.place,
                organiser_label=ORGANISER_LABELS[a.organiser],
                left_behind=lb,
            )
            for a, lb in rows
        ],
        count=total,
    )


async def priority_shares(
    session: AsyncSession,
    *,
    starts_on: date,
    ends_on: date,
    school_ids: Sequence[uuid.UUID] | None = None,
) -> list[PriorityShare]:
    """三个优先 in activities, per school in the caller's scope (or the given schools), over ``starts_on``–
    ``ends_on`` (a term's dates): activities held, places (child × activity) and places of left-behind
    children. One aggregate in the database; schools with no activity are listed with zeros."""
    if ends_on < starts_on:
        raise rules.invalid("priority_dates", "结束日期早于开始日期 (ends_on is before starts_on)", ["ends_on"])
    places = (
        select(
            ActivityParticipant.school_id,
            sa.func.count().label("places"),
            sa.func.count().filter(col(ActivityParticipant.left_behind)).label("left_behind"),
        )
        .where(col(ActivityParticipant.held_on).between(starts_on, ends_on))
        .group_by(col(ActivityParticipant.school_id))
        .subquery()
    )
    held = (
        select(Activity.school_id, sa.func.count().label("activities"))
        .where(col(Activity.held_on).between(starts_on, ends_on))
        .group_by(col(Activity.school_id))
        .subquery()
    )
    stmt = (
        sa.select(
            col(School.id),
            col(School.name),
            sa.func.coalesce(held.c.activities, 0),
            sa.func.coalesce(places.c.places, 0),
            sa.func.coalesce(places.c.left_behind, 0),
        )
        .outerjoin(held, held.c.school_id == School.id)
        .outerjoin(places, places.c.school_id == School.id)
        .order_by(col(School.name))
    )
    if school_ids is not None:
        stmt = stmt.where(col(School.id).in_(school_ids))
    rows = await session.execute(stmt)
    return [
        PriorityShare(
            school_id=sid,
            school_name=name,
            starts_on=starts_on,
            ends_on=ends_on,
            activities=n,
            places=p,
            left_behind_places=lb,
            share=rules.share(lb, p),
        )
        for sid, name, n, p, lb in rows
    ]
