"""Finding children: by name (characters, pinyin or initials), school, class, status and flags, paged."""

import functools
import re
import uuid
from dataclasses import dataclass
from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql
from sqlalchemy.ext.asyncio import AsyncSession
from sqlmodel import col

from api import audit, driver
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
    link_facts_for,
    link_facts_subquery,
    missing_columns,
    missing_of,
    with_link_facts,
)

_STATUSES = postgresql.ARRAY(sa.String(16))
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


def _name_match(q: str) -> tuple[str, dict[str, str]] | None:
    """How a name query matches (a kind that shapes the statement) and the patterns it binds."""
    key = normalize_query(q)
    if not key:
        return None
    if _HAN.search(key):
        if all(_HAN.fullmatch(ch) for ch in key):
            return "han", {"name_like": f"%{key}%"}
        _, initials = identity.name_keys(key)
        return "mixed", {"name_like": f"%{key}%", "initials_prefix": f"{initials}%"}
    return "letters", {"pinyin_like": f"%{key}%", "initials_prefix": f"{key}%"}


def _name_clause(kind: str) -> Any:
    """张晓明 by 晓明 (characters, partial), by xiaoming / zhangxm (pinyin, partial) or by zxm (initials)."""
    if kind == "han":
        # Characters: a partial match on the name (trigram index from three characters on). Han characters
        # have no case: LIKE, which is several times cheaper than ILIKE on a scan.
        return col(Child.name).like(sa.bindparam("name_like"))
    if kind == "mixed":
        # Characters mixed with letters (张xm): also the initials of the whole query as a prefix.
        return sa.or_(
            col(Child.name).ilike(sa.bindparam("name_like")),
            col(Child.name_initials).like(sa.bindparam("initials_prefix")),
        )
    return sa.or_(
        col(Child.name_pinyin).like(sa.bindparam("pinyin_like")),
        col(Child.name_initials).like(sa.bindparam("initials_prefix")),
    )


def name_condition(q: str) -> Any:
    """The name condition of a query with its patterns bound (None: the query has nothing to match)."""
    match = _name_match(q)
    return None if match is None else _name_clause(match[0]).params(**match[1])


@dataclass(frozen=True)
class _SearchShape:
    """What a search's statement depends on besides the values it binds: one statement is built per shape."""

    name: str | None
    school: bool
    klass: bool
    statuses: bool
    left_behind: bool | None
    flags: tuple[ChildFlag, ...]
    complete: bool | None


def _search_shape(filters: ChildFilters) -> tuple[_SearchShape, dict[str, Any]]:
    match = _name_match(filters.q) if filters.q else None
    params: dict[str, Any] = dict(match[1]) if match else {}
    if filters.school_id is not None:
        params["school_id"] = filters.school_id
    if filters.class_id is not None:
        params["class_id"] = filters.class_id
    if filters.statuses:
        params["statuses"] = [status.value for status in filters.statuses]
    shape = _SearchShape(
        name=match[0] if match else None,
        school=filters.school_id is not None,
        klass=filters.class_id is not None,
        statuses=bool(filters.statuses),
        left_behind=filters.left_behind,
        flags=tuple(sorted(set(filters.flags))),
        complete=filters.complete,
    )
    return shape, params


def _conditions(shape: _SearchShape) -> list[Any]:
    conditions: list[Any] = []
    if shape.name is not None:
        conditions.append(_name_clause(shape.name))
    if shape.school:
        conditions.append(col(Child.school_id) == sa.bindparam("school_id"))
    if shape.klass:
        conditions.append(col(Child.class_id) == sa.bindparam("class_id"))
    if shape.statuses:
        # An array parameter, not an IN list: the statement is compiled once (api.driver).
        conditions.append(col(Child.status) == sa.any_(sa.bindparam("statuses", type_=_STATUSES)))
    if shape.left_behind is not None:
        conditions.append(col(Child.is_left_behind).is_(shape.left_behind))
    for flag in shape.flags:
        conditions.append(FLAG_COLUMNS[flag].is_(True))
    return conditions


_SUMMARY_COLUMNS = (
    Child.id, Child.school_id, Child.class_id, Child.name, Child.sex, Child.status, Child.is_left_behind,
    Child.parents_away, *FLAG_COLUMNS.values(),
)  # fmt: skip


@functools.lru_cache(maxsize=256)
def _search_statements(shape: _SearchShape) -> tuple[driver.DriverStatement, driver.DriverStatement]:
    """The page of a search as one statement, and the count of its matches (for a page past the end).

    The page: the ids in order with the total as a window count over narrow rows (one pass over the matching
    children), then for those ids the summary columns, school, class and what each file lacks — read as
    columns, not loaded as objects. Built once per shape; offset and limit are parameters too."""
    conditions = _conditions(shape)
    count_stmt = sa.select(sa.func.count()).select_from(Child)
    order = (
        col(School.name),
        col(Child.school_id),
        col(SchoolClass.grade).asc().nulls_last(),
        col(SchoolClass.name).asc().nulls_last(),
        col(Child.name_pinyin),
        col(Child.name),
        col(Child.id),
    )
    keys = (
        sa.select(
            col(Child.id).label("id"),
            sa.func.count().over().label("total"),
            sa.func.row_number().over(order_by=order).label("n"),
        )
        .select_from(Child)
        .join(School, col(School.id) == Child.school_id)
        .outerjoin(SchoolClass, col(SchoolClass.id) == Child.class_id)
    )
    if shape.complete is not None:
        matching = link_facts_subquery(*conditions)
        incomplete = incomplete_condition(matching)
        conditions.append(sa.not_(incomplete) if shape.complete else incomplete)
        count_stmt = with_link_facts(count_stmt, matching)
        keys = with_link_facts(keys, matching)
    page = (
        keys.where(*conditions)
        .order_by(*order)
        .offset(sa.bindparam("offset", type_=sa.Integer()))
        .limit(sa.bindparam("limit", type_=sa.Integer()))
        .cte("page")
    )
    links = link_facts_for(page.c.id)
    stmt = (
        sa.select(
            page.c.total,
            *[col(column) for column in _SUMMARY_COLUMNS],
            col(School.name).label("school_name"),
            col(SchoolClass.grade).label("grade"),
            col(SchoolClass.name).label("class_name"),
            *missing_columns(links),
        )
        .select_from(page)
        .join(Child, col(Child.id) == page.c.id)
        .join(School, col(School.id) == Child.school_id)
        .outerjoin(SchoolClass, col(SchoolClass.id) == Child.class_id)
        .outerjoin(links, sa.true())
        .order_by(page.c.n)
    )
    return driver.DriverStatement(stmt), driver.DriverStatement(count_stmt.where(*conditions))


async def search_children(
    session: AsyncSession | driver.Transaction,
    principal: Principal,
    *,
    filters: ChildFilters,
    offset: int,
    limit: int,
) -> Page[ChildSummary]:
    """Children in scope matching the filters, by school, class and name, with the total; one audit entry.

    One query for the page with what each file lacks (a second only for a page past the end, to count)."""
    shape, params = _search_shape(filters)
    page_stmt, count_stmt = _search_statements(shape)
    rows = await driver.fetch(session, page_stmt, params | {"offset": offset, "limit": limit})
    if rows:
        count = rows[0].total
    elif offset == 0:
        count = 0
    else:  # a page past the end: the total needs its own count
        count = (await driver.fetch_one(session, count_stmt, params))[0]
    data = [
        ChildSummary(
            **summary_fields(
                row,
                school_name=row.school_name,
                class_label=class_label(row.grade, row.class_name) if row.grade is not None else None,
                grade=row.grade,
                missing=missing_of(row),
            )
        )
        for row in rows
    ]
    await audit.write(
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
