"""Finding children: by name (characters, pinyin or initials), school, class, status and flags, paged."""

import re
import uuid
from dataclasses import dataclass
from typing import Any

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncSession
from sqlmodel import col

from api import audit
from api.models.base import Page
from api.models.children import (
    Child,
    ChildFlag,
    ChildStatus,
    ChildSummary,
)
from api.models.organisations import School, SchoolClass, class_label
from api.pinyin import normalize_query
from api.scoping import Principal
from api.services import identity
from api.services.children.records import (
    summary_fields,
)
from api.services.children.rules import (
    FLAG_COLUMNS,
)
from api.services.completeness import (
    incomplete_condition,
    link_facts_subquery,
    missing_by_child,
    with_link_facts,
)

_HAN = re.compile("[\u3400-\u9fff\uf900-\ufaff\U00020000-\U0003134f]")


@dataclass(frozen=True)
class ChildFilters:
    q: str | None = None
    school_id: uuid.UUID | None = None
    class_id: uuid.UUID | None = None
    statuses: tuple[ChildStatus, ...] = (ChildStatus.enrolled,)
    left_behind: bool | None = None
    flags: tuple[ChildFlag, ...] = ()
    complete: bool | None = None


def name_condition(q: str) -> Any:
    """张晓明 by 晓明 (characters, partial), by xiaoming / zhangxm (pinyin, partial) or by zxm (initials)."""
    key = normalize_query(q)
    if not key:
        return None
    if _HAN.search(key):
        # Characters: a partial match on the name (trigram index from three characters on). Characters
        # mixed with letters (张xm): also the initials of the whole query as a prefix.
        if all(_HAN.fullmatch(ch) for ch in key):
            # Han characters have no case: LIKE, which is several times cheaper than ILIKE on a scan.
            return col(Child.name).like(f"%{key}%")
        _, initials = identity.name_keys(key)
        return sa.or_(col(Child.name).ilike(f"%{key}%"), col(Child.name_initials).like(f"{initials}%"))
    return sa.or_(col(Child.name_pinyin).like(f"%{key}%"), col(Child.name_initials).like(f"{key}%"))


def _conditions(filters: ChildFilters) -> list[Any]:
    conditions: list[Any] = []
    if filters.q:
        condition = name_condition(filters.q)
        if condition is not None:
            conditions.append(condition)
    if filters.school_id is not None:
        conditions.append(col(Child.school_id) == filters.school_id)
    if filters.class_id is not None:
        conditions.append(col(Child.class_id) == filters.class_id)
    if filters.statuses:
        conditions.append(col(Child.status).in_(list(filters.statuses)))
    if filters.left_behind is not None:
        conditions.append(col(Child.is_left_behind).is_(filters.left_behind))
    for flag in filters.flags:
        conditions.append(FLAG_COLUMNS[flag].is_(True))
    return conditions


async def _summaries(session: AsyncSession, ids: list[uuid.UUID]) -> list[ChildSummary]:
    """The summaries of these children, in this order (one query for the files, one for what is missing)."""
    rows = {
        child.id: (child, grade, klass, school_name)
        for child, grade, klass, school_name in (
            await session.execute(
                sa.select(Child, col(SchoolClass.grade), col(SchoolClass.name), col(School.name))
                .join(School, col(School.id) == Child.school_id)
                .outerjoin(SchoolClass, col(SchoolClass.id) == Child.class_id)
                .where(col(Child.id).in_(ids))
            )
        ).all()
    }
    missing = await missing_by_child(session, ids)
    data = []
    for child_id in ids:
        child, grade, klass, school_name = rows[child_id]
        data.append(
            ChildSummary(
                **summary_fields(
                    child,
                    school_name=school_name,
                    class_label=class_label(grade, klass) if grade is not None else None,
                    grade=grade,
                    missing=missing.get(child.id, []),
                )
            )
        )
    return data


async def search_children(
    session: AsyncSession,
    principal: Principal,
    *,
    filters: ChildFilters,
    offset: int,
    limit: int,
) -> Page[ChildSummary]:
    """Children in scope matching the filters, by school, class and name, with the total; one audit entry."""
    conditions = _conditions(filters)
    count_stmt = sa.select(sa.func.count()).select_from(Child)
    # First the page's ids in order, with the total as a window count over narrow rows (one pass over the
    # matching children); then the 50 files themselves.
    keys_stmt = (
        sa.select(col(Child.id), sa.func.count().over())
        .select_from(Child)
        .join(School, col(School.id) == Child.school_id)
        .outerjoin(SchoolClass, col(SchoolClass.id) == Child.class_id)
    )
    if filters.complete is not None:
        links = link_facts_subquery(*conditions)
        incomplete = incomplete_condition(links)
        conditions.append(sa.not_(incomplete) if filters.complete else incomplete)
        count_stmt = with_link_facts(count_stmt, links)
        keys_stmt = with_link_facts(keys_stmt, links)
    keys = (
        await session.execute(
            keys_stmt.where(*conditions)
            .order_by(
                col(School.name),
                col(Child.school_id),
                col(SchoolClass.grade).asc().nulls_last(),
                col(SchoolClass.name).asc().nulls_last(),
                col(Child.name_pinyin),
                col(Child.name),
                col(Child.id),
            )
            .offset(offset)
            .limit(limit)
        )
    ).all()
    if keys:
        count = keys[0][1]
    elif offset == 0:
        count = 0
    else:  # a page past the end: the total needs its own count
        count = (await session.execute(count_stmt.where(*conditions))).scalar_one()
    data = await _summaries(session, [child_id for child_id, _ in keys])
    audit.record(
        session,
        action="child.list",
        resource_type="child",
        school_id=filters.school_id or principal.school_id,
        detail={
            "q": filters.q,
            "school_id": str(filters.school_id) if filters.school_id else None,
            "class_id": str(filters.class_id) if filters.class_id else None,
            "status": [s.value for s in filters.statuses],
            "left_behind": filters.left_behind,
            "flags": [f.value for f in filters.flags],
            "complete": filters.complete,
            "offset": offset,
            "count": count,
            "child_ids": [str(c.id) for c in data],
        },
    )
    return Page(data=data, count=count)
