"""一人一档 completeness: what a child's file still lacks, and 建档率 per class, school and county.

The rule exists twice on purpose and the tests hold the two forms together:
:func:`missing_items` is the pure function over one child and their guardian links (detail pages), and
:func:`missing_conditions` is the same rule as SQL expressions, so that lists can filter on it and the rates
are counted in the database in one aggregated query.

A file is complete when it has the child's ID number, birth date, home address and class; and for a
left-behind child also an active entrusted guardian (委托监护人) with a valid phone, an active parent working
away with a valid phone (when a parent is away), the guardianship rating and since when the child is
left-behind. 建档率 = complete files / all files of enrolled left-behind children.
"""

import re
import uuid
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import date
from typing import Any, Protocol

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.sql.elements import ColumnElement
from sqlmodel import col

from api.errors import NotFound
from api.models.children import (
    MISSING_LABELS,
    AreaCompleteness,
    Child,
    ChildStatus,
    ClassCompleteness,
    MissingItem,
    MissingPublic,
    ParentsAway,
    SchoolCompleteness,
)
from api.models.guardians import ChildGuardian, Guardian, GuardianRole
from api.models.organisations import School, SchoolClass, class_label

# A dialable number in the normalised forms of :mod:`api.phones`: a mobile, or a landline with its area code
# (010, 02x, 0xxx) and an optional extension. The same pattern runs in Python and in PostgreSQL.
PHONE_PATTERN = r"1[3-9][0-9]{9}|(010|02[0-9]|0[3-9][0-9]{2})-[2-9][0-9]{6,7}(-[0-9]{1,6})?"
_PHONE = re.compile(PHONE_PATTERN)
_PHONE_SQL = f"^({PHONE_PATTERN})$"
# What counts as blank in a text field, in both forms (PostgreSQL's btrim takes exactly these characters).
BLANK_CHARS = " \t\r\n\u3000"

ORDER = list(MissingItem)
_ORDER_LABELS = [(item, item.value) for item in ORDER]


class ChildFacts(Protocol):
    """The columns of a child the rule reads (a :class:`Child` row has them)."""

    @property
    def id_number_cipher(self) -> str | None: ...
    @property
    def birth_date(self) -> date | None: ...
    @property
    def home_address(self) -> str | None: ...
    @property
    def class_id(self) -> uuid.UUID | None: ...
    @property
    def is_left_behind(self) -> bool: ...
    @property
    def parents_away(self) -> ParentsAway: ...
    @property
    def guardianship_rating(self) -> Any: ...
    @property
    def left_behind_since(self) -> date | None: ...


@dataclass(frozen=True, slots=True)
class LinkFacts:
    """One guardian link as the rule sees it."""

    role: GuardianRole
    is_active: bool
    phone: str | None
    phone_alt: str | None


def link_facts(link: ChildGuardian, guardian: Guardian) -> LinkFacts:
    return LinkFacts(role=link.role, is_active=link.is_active, phone=guardian.phone, phone_alt=guardian.phone_alt)


def is_valid_phone(value: str | None) -> bool:
    return value is not None and _PHONE.fullmatch(value) is not None


def _filled(value: str | None) -> bool:
    return value is not None and value.strip(BLANK_CHARS) != ""


def missing_items(child: ChildFacts, links: Iterable[LinkFacts]) -> list[MissingItem]:
    """What the file lacks, in the stable order of :class:`MissingItem` (empty: the file is complete)."""
    active = [link for link in links if link.is_active]
    missing: set[MissingItem] = set()
    if child.id_number_cipher is None:
        missing.add(MissingItem.missing_id_number)
    if child.birth_date is None:
        missing.add(MissingItem.missing_birth_date)
    if not _filled(child.home_address):
        missing.add(MissingItem.missing_home_address)
    if child.class_id is None:
        missing.add(MissingItem.missing_class)
    if child.is_left_behind:
        for role, absent, no_phone in (
            (
                GuardianRole.entrusted_guardian,
                MissingItem.missing_entrusted_guardian,
                MissingItem.missing_entrusted_guardian_phone,
            ),
            (GuardianRole.parent_away, MissingItem.missing_parent_away, MissingItem.missing_parent_away_phone),
        ):
            if role == GuardianRole.parent_away and child.parents_away == ParentsAway.none:
                continue
            people = [link for link in active if link.role == role]
            if not people:
                missing.add(absent)
            elif not any(is_valid_phone(p.phone) or is_valid_phone(p.phone_alt) for p in people):
                missing.add(no_phone)
        if child.guardianship_rating is None:
            missing.add(MissingItem.missing_guardianship_rating)
        if child.left_behind_since is None:
            missing.add(MissingItem.missing_left_behind_since)
    return [item for item in ORDER if item in missing]


def missing_public(items: Iterable[MissingItem]) -> list[MissingPublic]:
    return [MissingPublic(code=item, label=MISSING_LABELS[item]) for item in items]


# ---- the same rule in SQL ---------------------------------------------------------------------------------


def link_facts_subquery(*child_conditions: Any) -> Any:
    """Per child: which kinds of active guardians it has, and whether one of each has a valid phone.

    Aggregated once per child over the links of exactly the children the outer query asks about (the same
    ``child_conditions``), so the planner probes the link index for a school page and hash-joins all links
    for a county in one pass. Join it with :func:`with_link_facts`: children without links get no row.

    The links and guardians are read as plain tables, not ORM entities, so the scope criteria are not
    re-applied to them: the children come from the scoped ``child`` entity, and only yes/no facts about
    their own links leave the subquery (no guardian data).
    """
    return link_facts_of(sa.select(col(Child.id)).where(*child_conditions))


def _link_facts(cg: Any, g: Any) -> list[Any]:
    phone_ok = sa.or_(
        sa.func.coalesce(g.c.phone, "").regexp_match(_PHONE_SQL),
        sa.func.coalesce(g.c.phone_alt, "").regexp_match(_PHONE_SQL),
    )
    entrusted = cg.c.role == GuardianRole.entrusted_guardian.value
    away = cg.c.role == GuardianRole.parent_away.value
    return [
        sa.func.bool_or(entrusted).label("entrusted"),
        sa.func.bool_or(sa.and_(entrusted, phone_ok)).label("entrusted_phone"),
        sa.func.bool_or(away).label("away"),
        sa.func.bool_or(sa.and_(away, phone_ok)).label("away_phone"),
    ]


def _links_tables() -> tuple[Any, Any]:
    return ChildGuardian.__table__.alias("cg"), Guardian.__table__.alias("g")  # type: ignore[attr-defined]


def link_facts_of(child_ids: Any) -> Any:
    """:func:`link_facts_subquery` over the children whose ids ``child_ids`` (a one-column select) gives."""
    cg, g = _links_tables()
    return (
        sa.select(cg.c.child_id.label("child_id"), *_link_facts(cg, g))
        .select_from(cg.join(g, g.c.id == cg.c.guardian_id))
        .where(cg.c.is_active, cg.c.child_id.in_(child_ids))
        .group_by(cg.c.child_id)
        .subquery("links")
    )


def link_facts_for(child_id: Any) -> Any:
    """The facts of :func:`link_facts_subquery` for the one child whose id is ``child_id`` (a column of the
    outer query), as a LATERAL subquery: join it ``ON true``; a child without links gets a row of NULLs.

    For a page of a few children: their links are read by the link index once per child. The aggregate
    over a page's links joined back to the page was, in the plans PostgreSQL chose under row-level security
    (which makes it expect a row or two), recomputed for every row of the page — every guardian's phone
    matched against the pattern once per child on the page."""
    cg, g = _links_tables()
    return (
        sa.select(*_link_facts(cg, g))
        .select_from(cg.join(g, g.c.id == cg.c.guardian_id))
        .where(cg.c.is_active, cg.c.child_id == child_id)
        .lateral("links")
    )


def with_link_facts(stmt: Any, links: Any) -> Any:
    """``stmt`` (selecting from ``child``) left-joined with the facts of :func:`link_facts_subquery`."""
    return stmt.outerjoin(links, links.c.child_id == Child.id)


def missing_conditions(links: Any) -> dict[MissingItem, ColumnElement[bool]]:
    """For each missing item, a boolean SQL expression over ``child`` and its joined link facts."""

    def has(fact: Any) -> ColumnElement[bool]:
        return sa.func.coalesce(fact, sa.false())  # no active link at all: no row in the facts

    left_behind = col(Child.is_left_behind)
    parent_expected = sa.and_(left_behind, col(Child.parents_away) != ParentsAway.none)
    address = sa.func.coalesce(sa.func.btrim(col(Child.home_address), BLANK_CHARS), "")
    return {
        MissingItem.missing_id_number: col(Child.id_number_cipher).is_(None),
        MissingItem.missing_birth_date: col(Child.birth_date).is_(None),
        MissingItem.missing_home_address: address == "",
        MissingItem.missing_class: col(Child.class_id).is_(None),
        MissingItem.missing_entrusted_guardian: sa.and_(left_behind, sa.not_(has(links.c.entrusted))),
        MissingItem.missing_entrusted_guardian_phone: sa.and_(
            left_behind, has(links.c.entrusted), sa.not_(has(links.c.entrusted_phone))
        ),
        MissingItem.missing_parent_away: sa.and_(parent_expected, sa.not_(has(links.c.away))),
        MissingItem.missing_parent_away_phone: sa.and_(
            parent_expected, has(links.c.away), sa.not_(has(links.c.away_phone))
        ),
        MissingItem.missing_guardianship_rating: sa.and_(left_behind, col(Child.guardianship_rating).is_(None)),
        MissingItem.missing_left_behind_since: sa.and_(left_behind, col(Child.left_behind_since).is_(None)),
    }


def incomplete_condition(links: Any) -> ColumnElement[bool]:
    return sa.or_(*missing_conditions(links).values())


def missing_columns(links: Any) -> list[Any]:
    """One boolean column per missing item, labelled with the item's value (read back by :func:`missing_of`)."""
    return [cond.label(item.value) for item, cond in missing_conditions(links).items()]


def missing_of(row: Any) -> list[MissingItem]:
    """The missing items of a row that has the :func:`missing_columns`, in the stable order."""
    # By attribute, the labels read once: a driver row's _mapping is a dict built per call, and an enum's
    # value a descriptor call (a class page asked both once per child and item).
    return [item for item, label in _ORDER_LABELS if getattr(row, label)]


def _missing_by_child_statement() -> Any:
    # Built once: the children to look at are one array parameter (one statement, prepared once per
    # connection, whatever the page size).
    among = col(Child.id) == sa.any_(sa.bindparam("child_ids", type_=postgresql.ARRAY(sa.Uuid())))
    links = link_facts_subquery(among)
    return with_link_facts(sa.select(col(Child.id), *missing_columns(links)).select_from(Child), links).where(among)


_MISSING_BY_CHILD = _missing_by_child_statement()


async def missing_by_child(session: AsyncSession, child_ids: list[uuid.UUID]) -> dict[uuid.UUID, list[MissingItem]]:
    """The missing items of each of these children (already found in scope), computed in one query."""
    if not child_ids:
        return {}
    rows = await session.execute(_MISSING_BY_CHILD, {"child_ids": list(child_ids)})
    return {row[0]: missing_of(row) for row in rows}


# ---- 建档率 -------------------------------------------------------------------------------------------------


def _counts(total: int, complete: int, missing: dict[MissingItem, int]) -> dict[str, Any]:
    return {
        "left_behind": total,
        "complete": complete,
        "incomplete": total - complete,
        "rate": round(complete / total, 4) if total else None,
        "missing": {item: missing.get(item, 0) for item in ORDER},
    }


def _rate_query(key: Any, *where: Any) -> Any:
    """Counts of enrolled left-behind children, complete files and each missing item, aggregated in SQL:
    one row per value of ``key`` and one total row (``is_total``), through grouping sets."""
    counted = (col(Child.status) == ChildStatus.enrolled, col(Child.is_left_behind), *where)
    links = link_facts_subquery(*counted)
    conditions = missing_conditions(links)
    incomplete = sa.or_(*conditions.values())
    columns = [
        sa.func.count().label("total"),
        sa.func.count().filter(sa.not_(incomplete)).label("complete"),
        *[sa.func.count().filter(cond).label(item.value) for item, cond in conditions.items()],
    ]
    stmt = with_link_facts(
        sa.select(key, sa.func.grouping(key).label("is_total"), *columns).select_from(Child), links
    ).where(*counted)
    return stmt.group_by(sa.func.grouping_sets(sa.tuple_(), sa.tuple_(key)))


def _missing_of(row: Any) -> dict[MissingItem, int]:
    return {item: row[item.value] for item in ORDER}


async def school_completeness(session: AsyncSession, *, school_id: uuid.UUID) -> SchoolCompleteness:
    """建档率 of one school and of each of its classes (one aggregated query with grouping sets)."""
    school = await session.get(School, school_id)
    if school is None:
        raise NotFound("学校不存在 (school not found)", code="school_not_found")
    stmt = _rate_query(col(Child.class_id), col(Child.school_id) == school_id)
    total_row: Any = None
    by_class: dict[uuid.UUID | None, Any] = {}
    for row in (await session.execute(stmt)).mappings():
        if row["is_total"]:
            total_row = row
        else:
            by_class[row["class_id"]] = row
    classes = (
        await session.execute(
            sa.select(SchoolClass)
            .where(col(SchoolClass.school_id) == school_id)
            .order_by(col(SchoolClass.grade), col(SchoolClass.name))
        )
    ).scalars()
    out_classes: list[ClassCompleteness] = []
    for klass in classes:
        row = by_class.pop(klass.id, None)
        if row is None and not klass.is_active:
            continue
        counts = _counts(row["total"], row["complete"], _missing_of(row)) if row else _counts(0, 0, {})
        out_classes.append(
            ClassCompleteness(class_id=klass.id, class_label=class_label(klass.grade, klass.name), **counts)
        )
    unplaced = by_class.pop(None, None)
    if unplaced is not None:
        counts = _counts(unplaced["total"], unplaced["complete"], _missing_of(unplaced))
        out_classes.append(ClassCompleteness(class_id=None, class_label=None, **counts))
    totals = (
        _counts(total_row["total"], total_row["complete"], _missing_of(total_row)) if total_row else _counts(0, 0, {})
    )
    return SchoolCompleteness(
        school_id=school.id, school_name=school.name, township_id=school.township_id, classes=out_classes, **totals
    )


async def area_completeness(session: AsyncSession, *, township_id: uuid.UUID | None = None) -> AreaCompleteness:
    """建档率 of every school in scope (a county for the bureau, a township for its officials), with totals."""
    where = []
    schools_stmt = sa.select(School).order_by(col(School.name))
    if township_id is not None:
        where.append(col(Child.school_id).in_(sa.select(col(School.id)).where(col(School.township_id) == township_id)))
        schools_stmt = schools_stmt.where(col(School.township_id) == township_id)
    stmt = _rate_query(col(Child.school_id), *where)
    total_row: Any = None
    by_school: dict[uuid.UUID, Any] = {}
    for row in (await session.execute(stmt)).mappings():
        if row["is_total"]:
            total_row = row
        else:
            by_school[row["school_id"]] = row
    schools: list[SchoolCompleteness] = []
    for school in (await session.execute(schools_stmt)).scalars():
        found = by_school.get(school.id)
        counts = _counts(found["total"], found["complete"], _missing_of(found)) if found else _counts(0, 0, {})
        schools.append(
            SchoolCompleteness(school_id=school.id, school_name=school.name, township_id=school.township_id, **counts)
        )
    totals = (
        _counts(total_row["total"], total_row["complete"], _missing_of(total_row)) if total_row else _counts(0, 0, {})
    )
    return AreaCompleteness(schools=schools, **totals)
