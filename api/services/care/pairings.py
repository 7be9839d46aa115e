"""结对帮扶: pair a child with a proxy parent, a study buddy or a mentor; end a pairing with a reason; the help
plan (帮扶计划) and progress notes (进步档案) of a pairing; the children of a school left without a proxy parent.

The rules concurrency could break are held by the database: one active proxy parent per child is a partial
unique index, and the caps on children per proxy parent or mentor are counted while the partner is locked
(the staff account's row, or an advisory lock on an outside mentor's phone number), so two requests pairing
the same teacher at once are counted one after the other. Pairings end by themselves (triggers of the
migration) when the child transfers, graduates or leaves, and when the teacher's account is deactivated or
moves to another school.
"""

import uuid
from collections.abc import Sequence
from datetime import date, datetime

import sqlalchemy as sa
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession
from sqlmodel import col, select

from api.db import lock_until_commit
from api.errors import Conflict, Forbidden, NotFound
from api.models.accounts import Account, Role
from api.models.base import Page
from api.models.care import (
    PAIRING_END_REASON_LABELS,
    PAIRING_KIND_LABELS,
    CareHelpPlan,
    CarePairing,
    CareProgressNote,
    HelpPlanIn,
    HelpPlanPublic,
    Milestone,
    PairingCreate,
    PairingDetail,
    PairingEnd,
    PairingEndReason,
    PairingKind,
    PairingPublic,
    ProgressNoteCreate,
    ProgressNotePublic,
    UnpairedChild,
)
from api.models.children import Child, ChildStatus
from api.models.organisations import School, SchoolClass, class_label
from api.phones import PhoneError, normalize_phone
from api.scoping import Principal, as_system
from api.services.care.limits import care_setting
from api.services.children.records import get_child, heads_class, require_writer
from api.services.children.rules import invalid, today_in_china

# Set by the archive when the child's life on the roster changes, never chosen by hand.
_ARCHIVE_REASONS = {PairingEndReason.transferred, PairingEndReason.graduated, PairingEndReason.left_school}


# ---- reading ------------------------------------------------------------------------------------------------


async def _names(
    session: AsyncSession, pairings: Sequence[CarePairing]
) -> tuple[dict[uuid.UUID, str], dict[uuid.UUID, str]]:
    staff_ids = {p.staff_id for p in pairings if p.staff_id is not None}
    child_ids = {p.child_id for p in pairings} | {p.buddy_child_id for p in pairings if p.buddy_child_id}
    staff: dict[uuid.UUID, str] = {}
    children: dict[uuid.UUID, str] = {}
    # SYSTEM: only the names of the people of pairings the caller already found in scope (a transferred
    # child's name on the old school's ended pairing, a teacher's name for the township's view).
    async with as_system(session):
        if staff_ids:
            rows = await session.execute(
                sa.select(col(Account.id), col(Account.display_name)).where(col(Account.id).in_(staff_ids))
            )
            staff = {i: n for i, n in rows.all()}
        if child_ids:
            rows = await session.execute(sa.select(col(Child.id), col(Child.name)).where(col(Child.id).in_(child_ids)))
            children = {i: n for i, n in rows.all()}
    return staff, children


def _public(p: CarePairing, staff: dict[uuid.UUID, str], children: dict[uuid.UUID, str]) -> PairingPublic:
    return PairingPublic(
        id=p.id,
        school_id=p.school_id,
        child_id=p.child_id,
        child_name=children.get(p.child_id),
        kind=p.kind,
        kind_label=PAIRING_KIND_LABELS[p.kind],
        staff_id=p.staff_id,
        staff_name=staff.get(p.staff_id) if p.staff_id else None,
        buddy_child_id=p.buddy_child_id,
        buddy_name=children.get(p.buddy_child_id) if p.buddy_child_id else None,
        outside_name=p.outside_name,
        outside_phone=p.outside_phone,
        started_on=p.started_on,
        ended_on=p.ended_on,
        end_reason=p.end_reason,
        end_reason_label=PAIRING_END_REASON_LABELS[p.end_reason] if p.end_reason else None,
        end_note=p.end_note,
        active=p.ended_on is None,
    )


async def publish(session: AsyncSession, pairings: Sequence[CarePairing]) -> list[PairingPublic]:
    staff, children = await _names(session, pairings)
    return [_public(p, staff, children) for p in pairings]


async def get_pairing(session: AsyncSession, pairing_id: uuid.UUID, *, for_update: bool = False) -> CarePairing:
    stmt = select(CarePairing).where(CarePairing.id == pairing_id)
    if for_update:
        stmt = stmt.with_for_update()
    pairing = (await session.execute(stmt)).scalar_one_or_none()
    if pairing is None:
        raise NotFound("结对不存在 (pairing not found)", code="pairing_not_found")
    return pairing


async def pairing_detail(session: AsyncSession, *, pairing_id: uuid.UUID) -> PairingDetail:
    """A pairing with its help plan and progress notes (newest first)."""
    pairing = await get_pairing(session, pairing_id)
    (public,) = await publish(session, [pairing])
    plan = await session.get(CareHelpPlan, pairing.id)
    notes = (
        (
            await session.execute(
                select(CareProgressNote)
                .where(CareProgressNote.pairing_id == pairing.id)
                .order_by(col(CareProgressNote.noted_on).desc(), col(CareProgressNote.created_at).desc())
            )
        )
        .scalars()
        .all()
    )
    authors: dict[uuid.UUID, str] = {}
    if notes:
        # SYSTEM: the names of the authors of notes the caller already found in scope.
        async with as_system(session):
            rows = await session.execute(
                sa.select(col(Account.id), col(Account.display_name)).where(
                    col(Account.id).in_({n.author_id for n in notes})
                )
            )
            authors = {i: n for i, n in rows.all()}
    return PairingDetail(
        **public.model_dump(),
        plan=_plan_public(plan) if plan is not None else None,
        progress_notes=[_note_public(note, authors.get(note.author_id)) for note in notes],
    )


def _plan_public(plan: CareHelpPlan) -> HelpPlanPublic:
    return HelpPlanPublic(
        goals=plan.goals,
        content=plan.content,
        schedule=plan.schedule,
        milestones=[Milestone.model_validate(m) for m in plan.milestones],
        updated_at=plan.updated_at,
        updated_by_id=plan.updated_by_id,
    )


def _note_public(note: CareProgressNote, author_name: str | None) -> ProgressNotePublic:
    return ProgressNotePublic(
        id=note.id,
        noted_on=note.noted_on,
        text=note.text,
        author_id=note.author_id,
        author_name=author_name,
        created_at=note.created_at,
    )


async def child_pairings(session: AsyncSession, *, child_id: uuid.UUID) -> list[PairingPublic]:
    """Every pairing of a child (as the child paired, not as someone's study buddy): active first, then the
    ended ones, newest first."""
    child = await get_child(session, child_id)
    rows = await session.execute(
        select(CarePairing)
        .where(CarePairing.child_id == child.id)
        .order_by(col(CarePairing.ended_on).is_not(None), col(CarePairing.started_on).desc())
    )
    return await publish(session, rows.scalars().all())


async def school_pairings(
    session: AsyncSession,
    *,
    school_id: uuid.UUID,
    kind: PairingKind | None,
    staff_id: uuid.UUID | None,
    active: bool | None,
    offset: int,
    limit: int,
) -> Page[PairingPublic]:
    if await session.get(School, school_id) is None:
        raise NotFound("学校不存在 (school not found)", code="school_not_found")
    stmt = select(CarePairing).where(CarePairing.school_id == school_id)
    if kind is not None:
        stmt = stmt.where(CarePairing.kind == kind)
    if staff_id is not None:
        stmt = stmt.where(CarePairing.staff_id == staff_id)
    if active is not None:
        stmt = stmt.where(col(CarePairing.ended_on).is_(None) if active else col(CarePairing.ended_on).is_not(None))
    count = (await session.execute(sa.select(sa.func.count()).select_from(stmt.subquery()))).scalar_one()
    rows = await session.execute(
        stmt.order_by(col(CarePairing.started_on).desc(), col(CarePairing.id)).offset(offset).limit(limit)
    )
    return Page(data=await publish(session, rows.scalars().all()), count=count)


async def unpaired_children(
    session: AsyncSession, *, school_id: uuid.UUID, offset: int, limit: int
) -> Page[UnpairedChild]:
    """The school's enrolled left-behind children with no active proxy parent (一对一 not yet met), with when
    and why their last proxy parent's pairing ended — a teacher who left shows here at once."""
    if await session.get(School, school_id) is None:
        raise NotFound("学校不存在 (school not found)", code="school_not_found")
    active = sa.exists().where(
        col(CarePairing.child_id) == col(Child.id),
        col(CarePairing.kind) == PairingKind.proxy_parent,
        col(CarePairing.ended_on).is_(None),
    )
    last = (
        sa.select(col(CarePairing.ended_on), col(CarePairing.end_reason))
        .where(col(CarePairing.child_id) == col(Child.id), col(CarePairing.kind) == PairingKind.proxy_parent)
        .order_by(col(CarePairing.ended_on).desc())
        .limit(1)
        .lateral("last_pairing")
    )
    base = (
        sa.select(
            col(Child.id),
            col(Child.name),
            col(Child.class_id),
            col(SchoolClass.grade),
            col(SchoolClass.name),
            last.c.ended_on,
            last.c.end_reason,
        )
        .select_from(Child)
        .join(SchoolClass, col(SchoolClass.id) == col(Child.class_id), isouter=True)
        .join(last, sa.true(), isouter=True)
        .where(
            col(Child.school_id) == school_id,
            col(Child.status) == ChildStatus.enrolled,
            col(Child.is_left_behind),
            ~active,
        )
    )
    count = (await session.execute(sa.select(sa.func.count()).select_from(base.subquery()))).scalar_one()
    rows = await session.execute(
        base.order_by(col(SchoolClass.grade), col(SchoolClass.name), col(Child.name_pinyin), col(Child.id))
        .offset(offset)
        .limit(limit)
    )
    return Page(
        data=[
            UnpairedChild(
                child_id=child_id,
                name=name,
                class_id=class_id,
                class_label=class_label(grade, class_name) if grade is not None else None,
                last_proxy_parent_ended_on=ended_on,
                last_end_reason=PairingEndReason(reason) if reason else None,
            )
            for child_id, name, class_id, grade, class_name, ended_on, reason in rows.all()
        ],
        count=count,
    )


# ---- pairing -----------------------------------------------------------------------------------------------


async def _lock_staff(session: AsyncSession, staff_id: uuid.UUID, school_id: uuid.UUID) -> Account:
    """The partner's account, locked until the pairing commits: pairings of one teacher are counted one after
    another. ``FOR NO KEY UPDATE`` leaves the foreign-key checks of other tables' inserts unblocked."""
    staff = (
        await session.execute(select(Account).where(Account.id == staff_id).with_for_update(key_share=True))
    ).scalar_one_or_none()
    if (
        staff is None
        or staff.school_id != school_id
        or staff.role not in (Role.teacher, Role.school_admin)
        or not staff.is_active
    ):
        raise invalid(
            "staff_not_in_school", "结对教师须为本校在职教职工 (a serving staff member of the school)", "staff_id"
        )
    return staff


async def _lock_outside_mentor(session: AsyncSession, school_id: uuid.UUID, phone: str) -> None:
    await lock_until_commit(session, f"care_mentor:{school_id}:{phone}")


async def _active_count(session: AsyncSession, *conditions: sa.ColumnElement[bool]) -> int:
    stmt = sa.select(sa.func.count()).select_from(CarePairing).where(col(CarePairing.ended_on).is_(None), *conditions)
    return int((await session.execute(stmt)).scalar_one())


def _cap_reached(kind: PairingKind, cap: int) -> Conflict:
    label = PAIRING_KIND_LABELS[kind]
    return Conflict(
        f"该{label}结对的儿童已达上限 {cap} 名 (this {kind.value} already has {cap} children)",
        code="pairing_cap_reached",
    )


def _only(data: PairingCreate, *allowed: str) -> None:
    for name in ("staff_id", "buddy_child_id", "outside_name", "outside_phone"):
        if name not in allowed and getattr(data, name) is not None:
            raise invalid("partner_not_of_kind", f"{name} 不适用于该结对类型 (not for this kind of pairing)", name)


async def create_pairing(
    session: AsyncSession, principal: Principal, *, child_id: uuid.UUID, data: PairingCreate, now: datetime
) -> PairingDetail:
    """Pair an enrolled child: school admins, or the head teacher of the child's class."""
    child = await get_child(session, child_id)
    await require_writer(session, principal, child.class_id)
    if child.status != ChildStatus.enrolled:
        raise Conflict("该儿童已不在册 (the child is no longer on the roster)", code="child_not_enrolled")
    today = today_in_china(now)
    started_on = data.started_on or today
    if started_on > today:
        raise invalid("started_in_future", "开始日期不能晚于今天 (start date in the future)", "started_on")
    if started_on < child.birth_date:
        raise invalid("started_too_early", "开始日期早于儿童出生 (before the child was born)", "started_on")
    setting = await care_setting(session, child.school_id)
    pairing = CarePairing(
        school_id=child.school_id,
        child_id=child.id,
        kind=data.kind,
        started_on=started_on,
        created_at=now,
        created_by_id=principal.account_id,
    )
    same_partner: sa.ColumnElement[bool]
    if data.kind == PairingKind.study_buddy:
        _only(data, "buddy_child_id")
        if data.buddy_child_id is None:
            raise invalid("buddy_required", "请选择学习伙伴 (choose the study buddy)", "buddy_child_id")
        if data.buddy_child_id == child.id:
            raise invalid("self_pairing", "不能与自己结对 (a child cannot be their own buddy)", "buddy_child_id")
        buddy = await session.get(Child, data.buddy_child_id)
        if buddy is None or buddy.school_id != child.school_id or buddy.status != ChildStatus.enrolled:
            raise invalid(
                "buddy_not_in_school", "学习伙伴须为本校在册学生 (an enrolled pupil of the school)", "buddy_child_id"
            )
        pairing.buddy_child_id = buddy.id
        same_partner = col(CarePairing.buddy_child_id) == buddy.id
    elif data.staff_id is not None or data.kind == PairingKind.proxy_parent:
        _only(data, "staff_id")
        if data.staff_id is None:
            raise invalid("staff_required", "请选择代理家长 (choose the proxy parent)", "staff_id")
        staff = await _lock_staff(session, data.staff_id, child.school_id)
        cap = setting.proxy_parent_cap if data.kind == PairingKind.proxy_parent else setting.mentor_cap
        if (
            await _active_count(session, col(CarePairing.staff_id) == staff.id, col(CarePairing.kind) == data.kind)
            >= cap
        ):
            raise _cap_reached(data.kind, cap)
        pairing.staff_id = staff.id
        same_partner = col(CarePairing.staff_id) == staff.id
    else:
        _only(data, "outside_name", "outside_phone")
        if data.outside_name is None or data.outside_phone is None:
            raise invalid(
                "mentor_required", "请选择校内导师或填写校外导师姓名和电话 (a mentor and their phone)", "staff_id"
            )
        try:
            phone = normalize_phone(data.outside_phone).normalized
        except PhoneError as exc:
            raise invalid(exc.code, exc.message_zh, "outside_phone") from None
        await _lock_outside_mentor(session, child.school_id, phone)
        count = await _active_count(
            session,
            col(CarePairing.school_id) == child.school_id,
            col(CarePairing.outside_phone) == phone,
            col(CarePairing.kind) == PairingKind.mentor,
        )
        if count >= setting.mentor_cap:
            raise _cap_reached(data.kind, setting.mentor_cap)
        pairing.outside_name, pairing.outside_phone = data.outside_name, phone
        same_partner = col(CarePairing.outside_phone) == phone
    if await _active_count(
        session, col(CarePairing.child_id) == child.id, col(CarePairing.kind) == data.kind, same_partner
    ):
        raise Conflict("该结对已存在 (this pairing already exists)", code="already_paired")
    session.add(pairing)
    pairing_id = pairing.id
    try:
        async with session.begin_nested():
            await session.flush()
    except IntegrityError as exc:
        if "uq_care_pairing_active_proxy_parent" not in str(exc.orig):
            raise
        raise Conflict(
            "该儿童已有代理家长, 请先结束原结对 (the child already has a proxy parent)", code="proxy_parent_exists"
        ) from None
    return await pairing_detail(session, pairing_id=pairing_id)


async def _require_pairing_writer(session: AsyncSession, principal: Principal, pairing: CarePairing) -> None:
    """The school's admins, the child's head teacher, and the paired staff member themselves."""
    if principal.account_id is not None and pairing.staff_id == principal.account_id:
        return
    if principal.role == Role.school_admin:
        return
    child = await get_child(session, pairing.child_id)
    if principal.role == Role.teacher and child.class_id and await heads_class(session, principal, child.class_id):
        return
    raise Forbidden(
        "只有学校管理员、班主任或结对教师可以填写 (school admins, the head teacher or the paired teacher)",
        code="not_pairing_writer",
    )


def _require_active(pairing: CarePairing) -> None:
    if pairing.ended_on is not None:
        raise Conflict("该结对已结束 (the pairing has ended)", code="pairing_ended")


async def end_pairing(
    session: AsyncSession, principal: Principal, *, pairing_id: uuid.UUID, data: PairingEnd, now: datetime
) -> PairingDetail:
    """End a pairing with a reason (school admins, the child's head teacher). Transfer, graduation and leaving
    end pairings by themselves and are not chosen here."""
    pairing = await get_pairing(session, pairing_id, for_update=True)
    child = await get_child(session, pairing.child_id)
    await require_writer(session, principal, child.class_id)
    _require_active(pairing)
    if data.reason in _ARCHIVE_REASONS:
        raise invalid(
            "reason_from_archive",
            "转学、毕业、离校由档案办理时自动结束结对 (recorded through the child's file)",
            "reason",
        )
    today = today_in_china(now)
    ended_on = data.ended_on or today
    if ended_on > today:
        raise invalid("ended_in_future", "结束日期不能晚于今天 (end date in the future)", "ended_on")
    if ended_on < pairing.started_on:
        raise invalid("ended_before_start", "结束日期早于开始日期 (ends before it started)", "ended_on")
    pairing.ended_on, pairing.end_reason, pairing.end_note = ended_on, data.reason, data.note
    pairing.ended_by_id = principal.account_id
    await session.flush()
    return await pairing_detail(session, pairing_id=pairing.id)


async def set_help_plan(
    session: AsyncSession, principal: Principal, *, pairing_id: uuid.UUID, data: HelpPlanIn, now: datetime
) -> PairingDetail:
    """Write or rewrite the help plan of an active pairing (the audit log keeps every earlier plan)."""
    pairing = await get_pairing(session, pairing_id, for_update=True)
    await _require_pairing_writer(session, principal, pairing)
    _require_active(pairing)
    plan = await session.get(CareHelpPlan, pairing.id)
    if plan is None:
        plan = CareHelpPlan(pairing_id=pairing.id, goals=data.goals, content=data.content, schedule=data.schedule)
        session.add(plan)
    plan.goals, plan.content, plan.schedule = data.goals, data.content, data.schedule
    plan.milestones = [m.model_dump(mode="json") for m in data.milestones]
    plan.updated_at, plan.updated_by_id = now, principal.account_id
    await session.flush()
    return await pairing_detail(session, pairing_id=pairing.id)


async def add_progress_note(
    session: AsyncSession, principal: Principal, *, pairing_id: uuid.UUID, data: ProgressNoteCreate, now: datetime
) -> PairingDetail:
    """进步档案: a dated note of the child's progress, within the pairing's time."""
    pairing = await get_pairing(session, pairing_id)
    await _require_pairing_writer(session, principal, pairing)
    today = today_in_china(now)
    noted_on = data.noted_on or today
    last_day: date = min(today, pairing.ended_on) if pairing.ended_on else today
    if noted_on > last_day or noted_on < pairing.started_on:
        raise invalid(
            "noted_outside_pairing", "日期须在结对期间且不晚于今天 (within the pairing, not future)", "noted_on"
        )
    if principal.account_id is None:
        raise Forbidden("需要教职工账号 (a staff account is needed)", code="staff_only")
    session.add(
        CareProgressNote(
            pairing_id=pairing.id, noted_on=noted_on, text=data.text, author_id=principal.account_id, created_at=now
        )
    )
    await session.flush()
    return await pairing_detail(session, pairing_id=pairing.id)


async def set_counsellor(
    session: AsyncSession, principal: Principal, *, account_id: uuid.UUID, is_counsellor: bool
) -> bool:
    """Mark a staff account of the school as a counsellor (心理辅导教师), who reads and writes counselling
    records; school admins of that school only."""
    if principal.role != Role.school_admin:
        raise Forbidden("只有学校管理员可以设置 (only school admins)", code="school_admin_only")
    account = await session.get(Account, account_id)
    if account is None:
        raise NotFound("账号不存在 (account not found)")
    if account.role != Role.teacher or account.school_id != principal.school_id:
        raise invalid("not_a_teacher", "只能设置本校教师 (a teacher of the school)", "account_id")
    account.is_counsellor = is_counsellor
    await session.flush()
    return account.is_counsellor
