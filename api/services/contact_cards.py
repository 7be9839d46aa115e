"""联系卡 — the one page a teacher needs in an emergency: who to call, in which order, with which number.

A card shows the child, class and school, boarding, what matters medically, and the active guardians in
call order with full numbers (it is an emergency card, so staff who can see the child see the numbers;
every read and export is audited). Cards print from XLSX: one block per child, A4 portrait, kept on one
page. The workbook is built in a worker thread so the event loop never waits on openpyxl.
"""

import uuid
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import anyio
import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncSession
from sqlmodel import col, select

from api import audit
from api.clock import SHANGHAI
from api.errors import Forbidden, NotFound
from api.models.accounts import Account, Role
from api.models.children import Child, ChildStatus
from api.models.guardians import (
    GUARDIAN_ROLE_LABELS,
    ChildGuardian,
    ContactCard,
    ContactCardGuardian,
    Guardian,
    GuardianRole,
)
from api.models.organisations import School, SchoolClass, class_label
from api.scoping import Principal, as_system
from api.services.children.rules import today_in_china
from api.services.guardians.records import CHILD_NOT_FOUND

XLSX_MEDIA_TYPE = "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet"
NO_CLASS = "未分班"


@dataclass(frozen=True)
class Export:
    filename: str
    content: bytes
    count: int


# ---- collecting the cards (SQL: five queries for any number of children) ---------------------------------

# Plain columns, not ORM objects: a school export reads thousands of rows, and building identity-mapped
# objects for them would hold the event loop for the better part of a second.
CARD_CHILD_COLUMNS = (
    col(Child.id),
    col(Child.name),
    col(Child.sex),
    col(Child.birth_date),
    col(Child.school_id),
    col(Child.class_id),
    col(Child.is_boarding),
    col(Child.health),
    col(Child.disability),
    col(Child.home_address),
)


@dataclass(frozen=True)
class CardRows:
    """Everything a set of cards is made of, as fetched; turned into cards by :func:`assemble` (pure)."""

    children: Sequence[Any]
    schools: dict[uuid.UUID, str]
    classes: dict[uuid.UUID, Any]
    heads: dict[uuid.UUID, Any]
    school_phones: dict[uuid.UUID, str]
    guardians: dict[uuid.UUID, list[Any]]
    now: datetime


async def _collect(session: AsyncSession, children: Sequence[Any], *, now: datetime) -> CardRows:
    """The rows behind the cards of ``children`` (rows of :data:`CARD_CHILD_COLUMNS` from a scoped query):
    four more queries, whatever the number of children."""
    child_ids = [c.id for c in children]
    school_ids = {c.school_id for c in children}
    class_ids = {c.class_id for c in children if c.class_id is not None}
    if not children:
        return CardRows(children, {}, {}, {}, {}, {}, now)

    school_rows = (
        await session.execute(select(School.id, School.name, School.duty_phone).where(col(School.id).in_(school_ids)))
    ).all()
    schools = {row.id: row.name for row in school_rows}
    # The school's duty phone as the school admin sets it; a school without one falls back to the number its
    # admins keep on their accounts (值班/联系电话), oldest first.
    school_phones: dict[uuid.UUID, str] = {row.id: row.duty_phone for row in school_rows if row.duty_phone}
    classes = {
        row.id: row
        for row in await session.execute(
            select(SchoolClass.id, SchoolClass.grade, SchoolClass.name, SchoolClass.head_teacher_id).where(
                col(SchoolClass.id).in_(class_ids)
            )
        )
    }
    head_ids = {k.head_teacher_id for k in classes.values() if k.head_teacher_id is not None}
    staff = await session.execute(
        sa.select(
            col(Account.id), col(Account.role), col(Account.display_name), col(Account.phone), col(Account.school_id)
        )
        .where(
            sa.or_(
                col(Account.id).in_(head_ids),
                sa.and_(
                    col(Account.school_id).in_(school_ids),
                    col(Account.role) == Role.school_admin,
                    col(Account.phone).is_not(None),
                ),
            ),
            col(Account.is_active),
        )
        .order_by(col(Account.created_at))
    )
    heads: dict[uuid.UUID, Any] = {}
    for account in staff:
        if account.id in head_ids:
            heads[account.id] = account
        if account.role == Role.school_admin and account.phone and account.school_id is not None:
            school_phones.setdefault(account.school_id, account.phone)

    guardians: dict[uuid.UUID, list[Any]] = defaultdict(list)
    # SYSTEM: the guardians of children that were themselves found through a scoped query. The policies would
    # only repeat that (a link or guardian is visible through a visible child), as subqueries nested inside
    # the join; without table statistics (right after a roster import) PostgreSQL may then plan a nested loop
    # that took minutes for a school of 1,500 children. Keyed by those child ids, the look-up needs no policy.
    async with as_system(session):
        links: Any = (
            await session.execute(
                sa.select(
                    col(ChildGuardian.child_id),
                    col(ChildGuardian.role),
                    col(ChildGuardian.relation),
                    col(Guardian.id).label("guardian_id"),
                    col(Guardian.name),
                    col(Guardian.phone),
                    col(Guardian.phone_alt),
                    col(Guardian.work_city),
                    col(Guardian.address),
                    col(Guardian.health),
                )
                .join(Guardian, col(Guardian.id) == ChildGuardian.guardian_id)
                .where(col(ChildGuardian.child_id).in_(child_ids), col(ChildGuardian.is_active))
                .order_by(col(ChildGuardian.child_id), col(ChildGuardian.contact_order), col(ChildGuardian.created_at))
            )
        ).all()
    for link in links:
        guardians[link.child_id].append(link)
    return CardRows(children, schools, classes, heads, school_phones, guardians, now)


def assemble(rows: CardRows) -> list[ContactCard]:
    """The cards, in the order of ``rows.children``. Pure: exports run it in the worker thread."""
    today = today_in_china(rows.now)
    generated_at = rows.now.astimezone(SHANGHAI)
    cards = []
    for child in rows.children:
        klass = rows.classes.get(child.class_id) if child.class_id else None
        head = rows.heads.get(klass.head_teacher_id) if klass and klass.head_teacher_id else None
        born = child.birth_date
        cards.append(
            ContactCard(
                child_id=child.id,
                child_name=child.name,
                sex=child.sex,
                age=today.year - born.year - ((today.month, today.day) < (born.month, born.day)),
                school_id=child.school_id,
                school_name=rows.schools[child.school_id],
                school_phone=rows.school_phones.get(child.school_id),
                class_id=child.class_id,
                class_label=class_label(klass.grade, klass.name) if klass else None,
                head_teacher_name=head.display_name if head else None,
                head_teacher_phone=head.phone if head else None,
                is_boarding=child.is_boarding,
                health=child.health,
                disability=child.disability,
                home_address=child.home_address,
                guardians=[
                    ContactCardGuardian(
                        order=number,
                        guardian_id=g.guardian_id,
                        name=g.name,
                        relation=g.relation,
                        role=g.role,
                        role_label=GUARDIAN_ROLE_LABELS[g.role],
                        phone=g.phone,
                        phone_alt=g.phone_alt,
                        where=g.work_city if g.role == GuardianRole.parent_away and g.work_city else g.address,
                        health=g.health,
                    )
                    # Numbered 1..n as printed, whatever gaps the stored order may have.
                    for number, g in enumerate(rows.guardians[child.id], start=1)
                ],
                generated_at=generated_at,
            )
        )
    return cards


async def contact_card(
    session: AsyncSession, principal: Principal, *, child_id: uuid.UUID, now: datetime
) -> ContactCard:
    """The contact card of one child (any staff who can see the child; audited)."""
    child = (await session.execute(sa.select(*CARD_CHILD_COLUMNS).where(col(Child.id) == child_id))).one_or_none()
    if child is None:
        raise NotFound(CHILD_NOT_FOUND, code="child_not_found")
    (card,) = assemble(await _collect(session, [child], now=now))
    audit.record(
        session,
        action="contact_card.read",
        resource_type="child",
        resource_id=child.id,
        school_id=child.school_id,
    )
    return card


def _enrolled() -> list[Any]:
    return [col(Child.status) == ChildStatus.enrolled]


async def export_class(session: AsyncSession, principal: Principal, *, class_id: uuid.UUID, now: datetime) -> Export:
    """The cards of every enrolled child of a class, for the class's teachers and the school's admins."""
    klass = await session.get(SchoolClass, class_id)
    if klass is None:
        raise NotFound("班级不存在 (class not found)", code="class_not_found")
    if principal.role == Role.teacher and klass.id not in principal.class_ids:
        raise Forbidden(
            "只能导出自己任教班级的联系卡 (teachers export the cards of their own classes)",
            code="contact_cards_forbidden",
        )
    children = (
        await session.execute(
            sa.select(*CARD_CHILD_COLUMNS)
            .where(col(Child.class_id) == klass.id, *_enrolled())
            .order_by(col(Child.name_pinyin), col(Child.name))
        )
    ).all()
    rows = await _collect(session, children, now=now)
    school = await session.get(School, klass.school_id)
    assert school is not None
    label = class_label(klass.grade, klass.name)
    content = await anyio.to_thread.run_sync(_workbook, f"{school.name} {label}", rows, label)
    _audit_export(session, scope="class", scope_id=klass.id, school_id=school.id, count=len(children))
    return Export(filename=f"联系卡-{school.name}-{label}.xlsx", content=content, count=len(children))


async def export_school(session: AsyncSession, principal: Principal, *, school_id: uuid.UUID, now: datetime) -> Export:
    """The cards of every enrolled child of a school, one sheet per class (school admins)."""
    school = await session.get(School, school_id)
    if school is None:
        raise NotFound("学校不存在 (school not found)", code="school_not_found")
    children = (
        await session.execute(
            sa.select(*CARD_CHILD_COLUMNS)
            .outerjoin(SchoolClass, col(SchoolClass.id) == Child.class_id)
            .where(col(Child.school_id) == school.id, *_enrolled())
            .order_by(
                col(SchoolClass.grade).nulls_last(),
                col(SchoolClass.name),
                col(Child.name_pinyin),
                col(Child.name),
            )
        )
    ).all()
    rows = await _collect(session, children, now=now)
    content = await anyio.to_thread.run_sync(_workbook, school.name, rows, None)
    _audit_export(session, scope="school", scope_id=school.id, school_id=school.id, count=len(children))
    return Export(filename=f"联系卡-{school.name}.xlsx", content=content, count=len(children))


def _workbook(title: str, rows: CardRows, only_group: str | None) -> bytes:
    """Worker-thread side of an export: cards, one group (sheet) per class in the rows' order, workbook."""
    groups: dict[str, list[ContactCard]] = {}
    for card in assemble(rows):
        groups.setdefault(only_group or card.class_label or NO_CLASS, []).append(card)
    if only_group is not None and not groups:
        groups[only_group] = []
    from api.services.contact_cards_xlsx import build_workbook  # openpyxl: only when a workbook is built

    return build_workbook(title, list(groups.items()) or [(NO_CLASS, [])], rows.now)


def _audit_export(session: AsyncSession, *, scope: str, scope_id: uuid.UUID, school_id: uuid.UUID, count: int) -> None:
    audit.record(
        session,
        action="contact_cards.export",
        resource_type=scope,
        resource_id=scope_id,
        school_id=school_id,
        detail={"format": "xlsx", "cards": count},
    )
