"""工作计划: a school's plan, its 领导小组 and its items — created (from a typical plan or blank), read with each
item's progress, edited, and each item's progress recorded.

Scope is the session's: a plan of another school is not found. School admins write (the routers admit them);
an item's owner may record that item's progress. Every write is audited by the tables' ``@audited``.
"""

import uuid
from collections.abc import Sequence
from datetime import date, datetime

import sqlalchemy as sa
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession
from sqlmodel import col, select

from api.db import lock_until_commit
from api.errors import Conflict, Forbidden, NotFound, field_error
from api.models.accounts import Account, Role
from api.models.organisations import School
from api.models.plan import (
    POSITION_LABELS,
    PROGRESS_LABELS,
    WORK_KIND_LABELS,
    Activity,
    CarePlan,
    CarePlanItem,
    CarePlanMember,
    FulfilledBy,
    FulfilmentKind,
    ItemCreate,
    ItemPublic,
    ItemState,
    ItemUpdate,
    MemberCreate,
    MemberPosition,
    MemberPublic,
    MemberUpdate,
    PlanCreate,
    PlanSummary,
    PlanUpdate,
    PlanView,
    ProgressUpdate,
    TemplateItemPublic,
    TemplatePublic,
    month_text,
    parse_month,
)
from api.scoping import Principal
from api.services.plan import progress, rules, templates

ADMINS = (Role.school_admin, Role.platform_admin)


# ---- look-ups -------------------------------------------------------------------------------------------


async def get_school(session: AsyncSession, school_id: uuid.UUID) -> School:
    school = await session.get(School, school_id)
    if school is None:
        raise NotFound("找不到该学校 (school not found)", code="school_not_found")
    return school


async def get_plan(session: AsyncSession, plan_id: uuid.UUID, *, for_update: bool = False) -> CarePlan:
    stmt = select(CarePlan).where(CarePlan.id == plan_id)
    if for_update:
        stmt = stmt.with_for_update()
    plan = (await session.execute(stmt)).scalar_one_or_none()
    if plan is None:
        raise NotFound("找不到该工作计划 (plan not found)", code="plan_not_found")
    return plan


async def get_item(session: AsyncSession, item_id: uuid.UUID, *, for_update: bool = False) -> CarePlanItem:
    stmt = select(CarePlanItem).where(CarePlanItem.id == item_id)
    if for_update:
        stmt = stmt.with_for_update()
    item = (await session.execute(stmt)).scalar_one_or_none()
    if item is None:
        raise NotFound("找不到该计划项目 (plan item not found)", code="plan_item_not_found")
    return item


async def get_member(session: AsyncSession, member_id: uuid.UUID) -> CarePlanMember:
    member = await session.get(CarePlanMember, member_id)
    if member is None:
        raise NotFound("找不到该领导小组成员 (member not found)", code="plan_member_not_found")
    return member


async def staff_of_school(
    session: AsyncSession, account_id: uuid.UUID, school_id: uuid.UUID, loc: Sequence[str | int]
) -> Account:
    """A staff account of the school (a 领导小组 member or an item's owner)."""
    account = await session.get(Account, account_id)
    if account is None or account.school_id != school_id or account.role not in (Role.school_admin, Role.teacher):
        raise rules.invalid("plan_account_not_staff", "该账号不是本校教职工 (not a staff account of this school)", loc)
    return account


# ---- templates ------------------------------------------------------------------------------------------


def template_list() -> list[TemplatePublic]:
    return [
        TemplatePublic(
            key=t.key,
            name=t.name,
            months=list(t.months),
            goals=t.goals,
            goals_source=t.goals_source,
            items=[
                TemplateItemPublic(month=i.month, title=i.title, kind=i.kind, owner_hint=i.owner_hint, source=i.source)
                for i in t.items
            ],
        )
        for t in templates.TEMPLATES.values()
    ]


# ---- views ----------------------------------------------------------------------------------------------


def item_public(item: CarePlanItem, now: datetime) -> ItemPublic:
    state = progress.progress_of(item.month, item.state, now)
    fulfilled = (
        FulfilledBy(kind=item.fulfilled_by_kind, id=item.fulfilled_by_id)
        if item.fulfilled_by_kind is not None and item.fulfilled_by_id is not None
        else None
    )
    return ItemPublic(
        id=item.id,
        plan_id=item.plan_id,
        month=month_text(item.month),
        title=item.title,
        kind=item.kind,
        kind_label=WORK_KIND_LABELS[item.kind],
        owner_account_id=item.owner_account_id,
        owner_name=item.owner_name,
        notes=item.notes,
        source=item.source,
        state=item.state,
        progress=state,
        progress_label=PROGRESS_LABELS[state],
        done_on=item.done_on,
        done_note=item.done_note,
        fulfilled_by=fulfilled,
        dropped_reason=item.dropped_reason,
    )


def member_public(member: CarePlanMember) -> MemberPublic:
    return MemberPublic(
        id=member.id,
        position=member.position,
        position_label=POSITION_LABELS[member.position],
        account_id=member.account_id,
        name=member.name or "",
        affiliation=member.affiliation,
        duty=member.duty,
    )


def plan_summary(plan: CarePlan) -> PlanSummary:
    return PlanSummary(
        id=plan.id,
        school_id=plan.school_id,
        name=plan.name,
        period=plan.period,
        starts_on=plan.starts_on,
        ends_on=plan.ends_on,
        template_key=plan.template_key,
    )


async def plan_view(session: AsyncSession, plan_id: uuid.UUID, *, now: datetime) -> PlanView:
    """The plan with its 领导小组 and its items in month order, each with its progress at ``now``."""
    plan = await get_plan(session, plan_id)
    members = (
        await session.execute(
            select(CarePlanMember)
            .where(CarePlanMember.plan_id == plan.id)
            .order_by(
                sa.case({"leader": 0, "deputy": 1}, value=CarePlanMember.position, else_=2),
                col(CarePlanMember.sort_order),
                col(CarePlanMember.created_at),
            )
        )
    ).scalars()
    items = [item_public(i, now) for i in await plan_items(session, plan.id)]
    return PlanView(
        **plan_summary(plan).model_dump(),
        goals=plan.goals,
        leading_group=[member_public(m) for m in members],
        items=items,
        progress=progress.count(i.progress for i in items),
    )


async def plan_items(session: AsyncSession, plan_id: uuid.UUID) -> Sequence[CarePlanItem]:
    return (
        (
            await session.execute(
                select(CarePlanItem)
                .where(CarePlanItem.plan_id == plan_id)
                .order_by(col(CarePlanItem.month), col(CarePlanItem.sort_order), col(CarePlanItem.created_at))
            )
        )
        .scalars()
        .all()
    )


async def list_plans(session: AsyncSession, *, school_id: uuid.UUID) -> list[PlanSummary]:
    await get_school(session, school_id)
    plans = await session.execute(
        select(CarePlan).where(CarePlan.school_id == school_id).order_by(col(CarePlan.starts_on).desc())
    )
    return [plan_summary(p) for p in plans.scalars()]


# ---- writes: the plan -----------------------------------------------------------------------------------


async def _queue_for_school_plans(session: AsyncSession, school_id: uuid.UUID) -> None:
    """Writers of a school's plan dates one after another, so the second of two overlapping plans is a 409
    (the exclusion constraint, seeing the first committed), not a deadlock between their uncommitted rows."""
    await lock_until_commit(session, f"care-plan-dates:{school_id}")


async def _flush_plan(session: AsyncSession) -> None:
    """Flush; a plan overlapping another of the school (also one written concurrently) is a 409."""
    try:
        async with session.begin_nested():
            await session.flush()
    except IntegrityError as exc:
        text = str(exc.orig)
        if "ex_care_plan_overlap" in text:
            raise Conflict(
                "该校在这段时间已有工作计划 (the school already has a plan for these dates)",
                code="plan_overlaps",
                fields=[field_error(["starts_on"], "overlaps another plan", "conflict")],
            ) from None
        if "uq_care_plan_member_leader" in text:
            raise Conflict("领导小组只能有一位组长 (the group has one leader)", code="plan_one_leader") from None
        if "uq_care_plan_member_account" in text:
            raise Conflict("该教职工已在领导小组中 (already a member)", code="plan_member_duplicate") from None
        raise


async def create_plan(
    session: AsyncSession, principal: Principal, *, school_id: uuid.UUID, data: PlanCreate, now: datetime
) -> CarePlan:
    """A plan for a term or a school year, blank or from a typical plan (its items placed in the plan's months,
    its goals when none are given), with its 领导小组."""
    school = await get_school(session, school_id)
    await _queue_for_school_plans(session, school.id)
    template = None
    placed: list[templates.PlacedItem] = []
    if data.template is not None:
        template = templates.TEMPLATES.get(data.template)
        if template is None:
            raise rules.invalid("plan_template_unknown", "没有这个典型计划 (no such template)", ["template"])
        try:
            placed = templates.instantiate(template, data.starts_on, data.ends_on)
        except templates.TemplateDoesNotFit:
            raise rules.invalid(
                "plan_template_does_not_fit",
                "典型计划的月份与计划日期不符 (the template's months are not in the plan's dates)",
                ["template"],
            ) from None
    plan = CarePlan(
        school_id=school.id,
        name=data.name,
        period=data.period,
        starts_on=data.starts_on,
        ends_on=data.ends_on,
        goals=data.goals if data.goals is not None else (template.goals if template else ""),
        template_key=template.key if template else None,
        created_by_id=principal.account_id,
        created_at=now,
        updated_at=now,
    )
    session.add(plan)
    for i, p in enumerate(placed):
        session.add(
            CarePlanItem(
                plan_id=plan.id,
                school_id=school.id,
                month=p.month,
                title=p.item.title,
                kind=p.item.kind,
                owner_name=p.item.owner_hint,
                source=p.item.source,
                notes="典型计划的月份不在本计划日期内，已移到最近的月份" if p.moved else None,
                sort_order=i,
                created_at=now,
                updated_at=now,
            )
        )
    leaders = [i for i, m in enumerate(data.leading_group) if m.position == MemberPosition.leader]
    if len(leaders) > 1:
        raise rules.invalid(
            "plan_one_leader", "领导小组只能有一位组长 (the group has one leader)", ["leading_group", leaders[1]]
        )
    for i, m in enumerate(data.leading_group):
        session.add(await _new_member(session, plan, m, ["leading_group", i], now))
    await _flush_plan(session)
    return plan


async def update_plan(session: AsyncSession, *, plan_id: uuid.UUID, data: PlanUpdate, now: datetime) -> CarePlan:
    plan = await get_plan(session, plan_id, for_update=True)
    fields = data.model_dump(exclude_unset=True)
    starts_on = fields.get("starts_on") or plan.starts_on
    ends_on = fields.get("ends_on") or plan.ends_on
    if "starts_on" in fields or "ends_on" in fields:
        await _queue_for_school_plans(session, plan.school_id)
        rules.check_plan_dates(starts_on, ends_on, [i.month for i in await plan_items(session, plan.id)])
    for key in ("name", "goals"):
        if fields.get(key) is not None:
            setattr(plan, key, fields[key])
    plan.starts_on, plan.ends_on, plan.updated_at = starts_on, ends_on, now
    await _flush_plan(session)
    return plan


async def delete_plan(session: AsyncSession, *, plan_id: uuid.UUID) -> None:
    """A plan with nothing done yet goes (one made for the wrong dates), with its group and items, each
    delete audited; once work is recorded against it, it stays."""
    plan = await get_plan(session, plan_id, for_update=True)
    items = await plan_items(session, plan.id)
    if any(i.state == ItemState.done for i in items):
        raise Conflict("计划中已有完成的项目，不能删除 (work is recorded against this plan)", code="plan_not_deletable")
    members = await session.execute(select(CarePlanMember).where(CarePlanMember.plan_id == plan.id))
    for row in [*items, *members.scalars()]:
        await session.delete(row)
    await session.flush()
    await session.delete(plan)
    await session.flush()


# ---- writes: the 领导小组 ---------------------------------------------------------------------------------


async def _new_member(
    session: AsyncSession, plan: CarePlan, data: MemberCreate, loc: list[str | int], now: datetime
) -> CarePlanMember:
    name = data.name
    if data.account_id is not None:
        account = await staff_of_school(session, data.account_id, plan.school_id, [*loc, "account_id"])
        name = name or account.display_name[:32]
    return CarePlanMember(
        plan_id=plan.id,
        school_id=plan.school_id,
        position=data.position,
        account_id=data.account_id,
        name=name,
        affiliation=data.affiliation,
        duty=data.duty,
        sort_order=data.sort_order,
        created_at=now,
    )


async def add_member(session: AsyncSession, *, plan_id: uuid.UUID, data: MemberCreate, now: datetime) -> CarePlanMember:
    plan = await get_plan(session, plan_id)
    member = await _new_member(session, plan, data, [], now)
    session.add(member)
    await _flush_plan(session)
    return member


async def update_member(session: AsyncSession, *, member_id: uuid.UUID, data: MemberUpdate) -> CarePlanMember:
    member = await get_member(session, member_id)
    for key, value in data.model_dump(exclude_unset=True).items():
        if value is not None or key == "affiliation":
            setattr(member, key, value)
    await _flush_plan(session)
    return member


async def remove_member(session: AsyncSession, *, member_id: uuid.UUID) -> None:
    member = await get_member(session, member_id)
    await session.delete(member)
    await session.flush()


# ---- writes: items and their progress -------------------------------------------------------------------


async def add_item(session: AsyncSession, *, plan_id: uuid.UUID, data: ItemCreate, now: datetime) -> CarePlanItem:
    plan = await get_plan(session, plan_id)
    month = parse_month(data.month)
    rules.check_month_in_plan(month, plan.starts_on, plan.ends_on)
    if data.owner_account_id is not None:
        await staff_of_school(session, data.owner_account_id, plan.school_id, ["owner_account_id"])
    item = CarePlanItem(
        plan_id=plan.id,
        school_id=plan.school_id,
        month=month,
        title=data.title,
        kind=data.kind,
        owner_account_id=data.owner_account_id,
        owner_name=data.owner_name,
        notes=data.notes,
        sort_order=data.sort_order,
        created_at=now,
        updated_at=now,
    )
    session.add(item)
    await session.flush()
    return item


async def update_item(session: AsyncSession, *, item_id: uuid.UUID, data: ItemUpdate, now: datetime) -> CarePlanItem:
    item = await get_item(session, item_id, for_update=True)
    fields = data.model_dump(exclude_unset=True)
    if fields.get("month") is not None:
        plan = await get_plan(session, item.plan_id)
        month = parse_month(fields["month"])
        rules.check_month_in_plan(month, plan.starts_on, plan.ends_on)
        item.month = month
    if fields.get("owner_account_id") is not None:
        await staff_of_school(session, fields["owner_account_id"], item.school_id, ["owner_account_id"])
    for key in ("title", "kind", "sort_order"):
        if fields.get(key) is not None:
            setattr(item, key, fields[key])
    for key in ("owner_account_id", "owner_name", "notes"):  # may be cleared with null
        if key in fields:
            setattr(item, key, fields[key])
    item.updated_at = now
    await session.flush()
    return item


async def delete_item(session: AsyncSession, *, item_id: uuid.UUID) -> None:
    """Only an item still planned goes away (a school trimming the typical plan); done work stays, and work
    given up is dropped with a reason."""
    item = await get_item(session, item_id, for_update=True)
    if item.state != ItemState.planned:
        raise Conflict(
            "已完成或已取消的项目不能删除 (only a planned item can be deleted; drop it instead)",
            code="plan_item_not_deletable",
        )
    await session.delete(item)
    await session.flush()


async def set_progress(
    session: AsyncSession, principal: Principal, *, item_id: uuid.UUID, data: ProgressUpdate, now: datetime
) -> CarePlanItem:
    """Done (with the activity that fulfilled it, or a note), dropped (with a reason), or planned again.

    School admins, and the item's owner for their own item. An item fulfilled by an activity changes only
    through the activity (re-link or unlink it there)."""
    # Read first (every staff member of the school sees the item), then lock: FOR UPDATE also needs the
    # update policy, which a teacher who does not own the item lacks — they get 403, not "not found".
    item = await get_item(session, item_id)
    if principal.role not in ADMINS and item.owner_account_id != principal.account_id:
        raise Forbidden(
            "只有学校管理员或该项目负责人可以登记进度 (only school admins or the item's owner)",
            code="plan_item_not_yours",
        )
    item = await get_item(session, item_id, for_update=True)
    fulfilled = None
    if data.state == ItemState.done and data.fulfilled_by is not None:
        if principal.role not in ADMINS:
            # The link is written on the activity too, and activities are the school admins' to write.
            raise Forbidden(
                "关联活动由学校管理员办理；负责人可填写完成情况 (school admins link activities)",
                code="plan_item_link_admin_only",
            )
        fulfilled = await _fulfilment(session, item, data.fulfilled_by)
    try:
        change = progress.decide(
            linked=item.fulfilled_by_kind is not None,
            target=data.state,
            today=rules.today_in_china(now),
            done_on=data.done_on,
            note=data.note,
            fulfilled=fulfilled,
            reason=data.reason,
        )
    except progress.ProgressRefused as refused:
        if refused.code == "plan_item_linked":
            raise Conflict(refused.message, code=refused.code) from None
        raise rules.invalid(refused.code, refused.message, [refused.field]) from None
    apply_change(item, change, principal, now)
    await session.flush()
    return item


def apply_change(item: CarePlanItem, change: progress.Change, principal: Principal, now: datetime) -> None:
    item.state = change.state
    item.done_on = change.done_on
    item.done_note = change.done_note
    item.fulfilled_by_kind = change.fulfilled_by_kind
    item.fulfilled_by_id = change.fulfilled_by_id
    item.dropped_reason = change.dropped_reason
    item.progress_by_id = principal.account_id
    item.updated_at = now


async def _fulfilment(
    session: AsyncSession, item: CarePlanItem, link: FulfilledBy
) -> tuple[FulfilmentKind, uuid.UUID, date]:
    """The record an item is marked done by: an activity of the same school, not fulfilling another item."""
    assert link.kind == FulfilmentKind.activity
    # Locked: two items claiming one activity at once would otherwise both see it free.
    activity = (
        await session.execute(select(Activity).where(Activity.id == link.id).with_for_update())
    ).scalar_one_or_none()
    if activity is None or activity.school_id != item.school_id:
        raise rules.invalid("plan_fulfilment_not_found", "找不到本校的该项活动 (no such activity)", ["fulfilled_by"])
    rules.check_activity_free(activity.plan_item_id, item.id)
    # The activity now points at the item too, so the link reads the same from both ends.
    activity.plan_item_id = item.id
    return link.kind, activity.id, activity.held_on
