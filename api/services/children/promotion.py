"""每学年末交接: the end-of-year promotion of whole classes, as validate → plan → apply.

:func:`promote_classes` loads and validates what the request names (the school, its classes, the new head
teachers, the next-grade classes on file), asks the pure :func:`plan_classes` where each class goes, loads the
children and this school year's promotions, asks the pure :func:`check_conflicts` whether the promotion may
run, and only then writes: new classes, one event per child, the children's new class or status, head teachers.
"""

import uuid
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import date, datetime

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncSession
from sqlmodel import col, select

from api.errors import Conflict, NotFound
from api.models.accounts import Account, Role
from api.models.children import (
    Child,
    ChildEvent,
    ChildEventKind,
    ChildStatus,
    PromotedClass,
    PromotionRequest,
    PromotionResult,
)
from api.models.organisations import School, SchoolClass, class_label
from api.scoping import Principal
from api.services.children.rules import invalid, new_event, require_school_admin, school_year_start, today_in_china

DEFAULT_REASON = "学年末升级"


@dataclass
class ClassPlan:
    """Where each class of a promotion goes: a class of the next grade, or ``None`` — it graduates."""

    targets: dict[uuid.UUID, SchoolClass | None]
    new_classes: list[SchoolClass] = field(default_factory=list)  # next-grade classes this promotion creates

    @property
    def target_ids(self) -> set[uuid.UUID]:
        return {t.id for t in self.targets.values() if t is not None}


@dataclass(frozen=True)
class ArchiveFacts:
    """What the archive says about a planned promotion, loaded after planning (the children locked)."""

    moving: frozenset[uuid.UUID]  # enrolled children of the classes being promoted
    promoted_classes: frozenset[uuid.UUID]  # of those classes, the ones promoted already this school year
    already_promoted: int  # moving children promoted already this school year
    staying: int  # enrolled children of the target classes who are not moving on


# ---- validate: what the request names, loaded and checked ------------------------------------------------


def requested_classes(data: PromotionRequest) -> dict[uuid.UUID, uuid.UUID | None]:
    """{class to promote: the class it moves to, or None (to be found, created, or graduating)}."""
    return dict(data.classes) if data.classes is not None else dict.fromkeys(data.create_next_grade or [])


async def _check_head_teacher(session: AsyncSession, school_id: uuid.UUID, account_id: uuid.UUID) -> None:
    teacher = await session.get(Account, account_id)
    if (
        teacher is None
        or teacher.school_id != school_id
        or not teacher.is_active
        or teacher.role not in (Role.teacher, Role.school_admin)
    ):
        raise invalid(
            "head_teacher_invalid", "班主任必须是本校教师 (head teacher must be staff of this school)", "head_teachers"
        )


async def _load_classes(
    session: AsyncSession, school: School, data: PromotionRequest, requested: Mapping[uuid.UUID, uuid.UUID | None]
) -> dict[uuid.UUID, SchoolClass]:
    """Every class the request names, each of this school; the new head teachers, each staff of this school."""
    wanted = set(requested) | {t for t in requested.values() if t is not None}
    found = {
        c.id: c for c in (await session.execute(select(SchoolClass).where(col(SchoolClass.id).in_(wanted)))).scalars()
    }
    for class_id in wanted:
        klass = found.get(class_id)
        if klass is None:
            raise NotFound("班级不存在 (class not found)", code="class_not_found")
        if klass.school_id != school.id:
            raise invalid("class_not_in_school", "班级不属于该学校 (the class belongs to another school)", "classes")
    for from_id in data.head_teachers:
        if from_id not in requested:
            raise invalid(
                "head_teacher_invalid", "班主任只能指定给本次升级的班级 (class not in this promotion)", "head_teachers"
            )
        await _check_head_teacher(session, school.id, data.head_teachers[from_id])
    return found


async def _next_grade_classes(
    session: AsyncSession, school_id: uuid.UUID, sources: Iterable[SchoolClass]
) -> dict[tuple[int, str], SchoolClass]:
    """The active classes of the grades above ``sources``, by (grade, name): where 三年级1班 would go."""
    grades = {source.grade + 1 for source in sources}
    if not grades:
        return {}
    rows = await session.execute(
        select(SchoolClass).where(
            SchoolClass.school_id == school_id, col(SchoolClass.grade).in_(grades), col(SchoolClass.is_active)
        )
    )
    return {(c.grade, c.name): c for c in rows.scalars()}


# ---- plan: pure decisions on what was loaded --------------------------------------------------------------


def plan_classes(
    data: PromotionRequest,
    *,
    school_id: uuid.UUID,
    classes: Mapping[uuid.UUID, SchoolClass],
    next_grade: Mapping[tuple[int, str], SchoolClass],
) -> ClassPlan:
    """Where each requested class goes. The last grade graduates (and takes neither a target nor a head
    teacher); with ``classes`` the target must be an active class of the next grade; with
    ``create_next_grade`` it is the next grade's class of the same name, created if there is none."""
    plan = ClassPlan(targets={})
    for from_id, to_id in requested_classes(data).items():
        source = classes[from_id]
        if source.grade >= data.last_grade:
            if to_id is not None:
                raise invalid(
                    "promotion_last_grade",
                    f"{class_label(source.grade, source.name)}是毕业年级，应毕业而非升级 (the last grade graduates)",
                    "classes",
                )
            if from_id in data.head_teachers:
                raise invalid("head_teacher_invalid", "毕业班无需指定班主任 (a graduating class)", "head_teachers")
            plan.targets[from_id] = None
        elif data.classes is not None:
            plan.targets[from_id] = _chosen_target(source, classes[to_id] if to_id is not None else None)
        else:
            target = next_grade.get((source.grade + 1, source.name))
            if target is None:
                target = SchoolClass(school_id=school_id, grade=source.grade + 1, name=source.name)
                plan.new_classes.append(target)
            plan.targets[from_id] = target
    return plan


def _chosen_target(source: SchoolClass, target: SchoolClass | None) -> SchoolClass:
    if target is None:
        raise invalid(
            "promotion_target_required",
            f"请为{class_label(source.grade, source.name)}指定升入的班级 (target class required)",
            "classes",
        )
    if target.grade != source.grade + 1 or not target.is_active:
        raise invalid(
            "promotion_grade_mismatch",
            f"{class_label(target.grade, target.name)}不是{class_label(source.grade, source.name)}"
            "的下一年级 (the target must be an active class of the next grade)",
            "classes",
        )
    return target


def check_conflicts(facts: ArchiveFacts, *, classes: Mapping[uuid.UUID, SchoolClass]) -> None:
    """Refuse (409) a promotion that would move anyone twice in a school year, or fill a class that still
    holds children who are not moving on."""
    if facts.promoted_classes:
        labels = "、".join(sorted(class_label(classes[c].grade, classes[c].name) for c in facts.promoted_classes))
        raise Conflict(
            f"{labels}本学年已升级，不能重复升级 (already promoted this school year)", code="already_promoted"
        )
    if facts.already_promoted:
        already = facts.already_promoted
        raise Conflict(
            f"本学年已有{already}名学生升过级，不能重复升级 ({already} children were already promoted this school "
            "year)",
            code="already_promoted",
        )
    if facts.staying:
        raise Conflict(
            f"升入的班级里还有{facts.staying}名未升级的学生；请先升级高年级，或一次升级全校 "
            "(a target class still holds children who are not moving on)",
            code="target_class_not_empty",
        )


def promotion_summary(
    plan: ClassPlan, children: Iterable[Child], *, classes: Mapping[uuid.UUID, SchoolClass]
) -> list[PromotedClass]:
    """Per class, where it goes and how many children are promoted or graduate, lowest grade first (from the
    children as loaded, before they move)."""
    counts: dict[uuid.UUID, list[int]] = {from_id: [0, 0] for from_id in plan.targets}
    for child in children:
        assert child.class_id is not None
        counts[child.class_id][0 if plan.targets[child.class_id] is not None else 1] += 1
    created = {c.id for c in plan.new_classes}
    result = []
    for from_id, target in plan.targets.items():
        source = classes[from_id]
        result.append(
            PromotedClass(
                from_class_id=from_id,
                from_label=class_label(source.grade, source.name),
                to_class_id=target.id if target else None,
                to_label=class_label(target.grade, target.name) if target else None,
                created=target is not None and target.id in created,
                promoted=counts[from_id][0],
                graduated=counts[from_id][1],
            )
        )
    result.sort(key=lambda c: (classes[c.from_class_id].grade, classes[c.from_class_id].name))
    return result


# ---- load the children, apply ------------------------------------------------------------------------------


async def _archive_facts(
    session: AsyncSession, plan: ClassPlan, *, year_start: date
) -> tuple[list[Child], ArchiveFacts]:
    """The enrolled children of the promoted classes, locked, and this school year's promotions."""
    sources = list(plan.targets)
    children = list(
        (
            await session.execute(
                select(Child)
                .where(col(Child.class_id).in_(sources), Child.status == ChildStatus.enrolled)
                .with_for_update()
            )
        ).scalars()
    )
    moving = frozenset(c.id for c in children)
    this_year = (
        col(ChildEvent.kind) == ChildEventKind.promoted,
        col(ChildEvent.effective_on) >= year_start,
        col(ChildEvent.effective_on) < date(year_start.year + 1, 9, 1),
    )
    promoted_classes = await session.execute(
        sa.select(col(ChildEvent.from_class_id))
        .where(col(ChildEvent.from_class_id).in_(sources), *this_year)
        .distinct()
    )
    already = 0
    if moving:
        already = (
            await session.execute(
                sa.select(sa.func.count(sa.distinct(col(ChildEvent.child_id)))).where(
                    col(ChildEvent.child_id).in_(moving), *this_year
                )
            )
        ).scalar_one()
    staying = 0
    if plan.target_ids:
        staying = (
            await session.execute(
                sa.select(sa.func.count()).where(
                    col(Child.class_id).in_(plan.target_ids),
                    col(Child.status) == ChildStatus.enrolled,
                    col(Child.id).not_in(moving) if moving else sa.true(),
                )
            )
        ).scalar_one()
    facts = ArchiveFacts(
        moving=moving,
        promoted_classes=frozenset(c for c in promoted_classes.scalars() if c is not None),
        already_promoted=already,
        staying=staying,
    )
    return children, facts


async def _apply(
    session: AsyncSession,
    principal: Principal,
    plan: ClassPlan,
    children: list[Child],
    *,
    school_id: uuid.UUID,
    head_teachers: Mapping[uuid.UUID, uuid.UUID],
    effective_on: date,
    reason: str,
    now: datetime,
) -> None:
    """The one place a promotion writes: new classes, then each child's event and new class or status."""
    for klass in plan.new_classes:
        session.add(klass)
    await session.flush()
    for child in children:
        assert child.class_id is not None
        target = plan.targets[child.class_id]
        if target is None:
            graduated = new_event(child, ChildEventKind.graduated, principal=principal, now=now,
                                  effective_on=effective_on, reason="毕业", from_school_id=school_id,
                                  from_class_id=child.class_id)  # fmt: skip
            session.add(graduated)
            child.status = ChildStatus.graduated
            child.status_reason = "毕业"
            child.status_changed_on = effective_on
        else:
            promoted = new_event(child, ChildEventKind.promoted, principal=principal, now=now,
                                 effective_on=effective_on, reason=reason, from_class_id=child.class_id,
                                 to_class_id=target.id)  # fmt: skip
            session.add(promoted)
            child.class_id = target.id
        child.updated_at = now
    for from_id, account_id in head_teachers.items():
        target = plan.targets[from_id]
        assert target is not None
        target.head_teacher_id = account_id
    await session.flush()


async def promote_classes(
    session: AsyncSession, principal: Principal, *, school_id: uuid.UUID, data: PromotionRequest, now: datetime
) -> PromotionResult:
    """Move every enrolled child of the given classes to the class of the next grade; the last grade graduates.

    One transaction: either every child moves or none does. A child already promoted in the same school
    year (from 1 September, by ``effective_on``) makes the whole promotion refuse with 409, so that running it
    twice never moves anyone two grades. A next-grade class that still holds children who are not moving on
    in the same promotion is refused too: promote the higher grades first, or the whole school at once.
    """
    require_school_admin(principal)
    school = await session.get(School, school_id)
    if school is None:
        raise NotFound("学校不存在 (school not found)", code="school_not_found")
    today = today_in_china(now)
    effective_on = data.effective_on or today
    if effective_on > today:
        raise invalid("effective_on_in_future", "生效日期不能晚于今天 (the date is in the future)", "effective_on")
    year_start = school_year_start(effective_on)

    requested = requested_classes(data)
    classes = await _load_classes(session, school, data, requested)
    next_grade = {}
    if data.create_next_grade is not None:
        next_grade = await _next_grade_classes(session, school.id, (classes[c] for c in requested))
    plan = plan_classes(data, school_id=school.id, classes=classes, next_grade=next_grade)
    children, facts = await _archive_facts(session, plan, year_start=year_start)
    check_conflicts(facts, classes=classes)
    summary = promotion_summary(plan, children, classes=classes)  # before the children move
    await _apply(session, principal, plan, children, school_id=school.id, head_teachers=data.head_teachers,
                 effective_on=effective_on, reason=data.reason or DEFAULT_REASON, now=now)  # fmt: skip
    return PromotionResult(
        school_id=school.id,
        school_year=f"{year_start.year}-{year_start.year + 1}",
        effective_on=effective_on,
        promoted=sum(c.promoted for c in summary),
        graduated=sum(c.graduated for c in summary),
        classes=summary,
    )
