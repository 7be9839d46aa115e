"""The bureau's tables and trends: an area (county, township or school) in the caller's scope, one level of
units, one period beside the previous one, every figure from :mod:`.queries` and hidden by
:mod:`.suppression` where it could identify a child.

:func:`build_table` and :func:`build_trend` are what the API and the exports (XLSX, CSV, bulletins) call; their
signatures stay put. The suppression is always worked out over every indicator of the registry, whichever
are asked for, and over the whole scope of the caller (:func:`scope_root`: the county, township or school;
:func:`joint`), so that every table the caller can fetch — any level, any area within the scope — shows cells
of one hidden set; a class table is solved after it, top down (:func:`suppress_classes`).
"""

import uuid
from collections import OrderedDict, defaultdict
from collections.abc import Hashable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import date, datetime, timedelta
from typing import Any, cast

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncSession
from sqlmodel import col

from api.errors import Forbidden, Invalid, NotFound, field_error
from api.models.accounts import Role
from api.models.organisations import SchoolClass, Township, class_label
from api.models.stats import Cell, IndicatorKind, Level, Period, StatsRow, StatsTable, StatsTrend, TrendPoint
from api.scoping import Principal
from api.services.stats import across, periods, preaggregate, queries
from api.services.stats import indicators as registry
from api.services.stats.suppression import Equation, implied, narrowed, suppress

DEFAULT_THRESHOLD = 5
DEFAULT_MAX_STALE = timedelta(minutes=5)  # the setting stats_max_stale_seconds
STATS_ROLES = (Role.platform_admin, Role.county_bureau, Role.township_official, Role.school_admin)
TOTAL = "total"
UNPLACED = "unplaced"
_LEVEL_RANK = {Level.county: 0, Level.township: 1, Level.school: 2, Level.klass: 3}


@dataclass(frozen=True)
class Area:
    level: Level
    id: uuid.UUID
    name: str
    schools: dict[uuid.UUID, "SchoolRef"]


@dataclass(frozen=True)
class Unit:
    key: Hashable  # a uuid, or UNPLACED (the children of a school without a class)
    name: str
    parent_id: uuid.UUID | None


# ---- the area ------------------------------------------------------------------------------------------------


def check_role(principal: Principal) -> None:
    if principal.role not in STATS_ROLES:
        raise Forbidden("当前角色无权查看统计 (your role cannot read statistics)", code="role_forbidden")


def _area_not_found() -> NotFound:
    return NotFound("统计范围不存在 (area not found)", code="area_not_found")


async def resolve_area(session: AsyncSession, principal: Principal, area_id: uuid.UUID | None) -> Area:
    """The area a table covers: the one named (a county, township or school the caller sees, never wider than
    the caller's own), else the caller's own (the bureau its county, a township official its township, a
    school admin its school). Platform administrators name one."""
    check_role(principal)
    role = principal.role
    assert role is not None
    if area_id is None:
        own = {
            Role.county_bureau: principal.county_id,
            Role.township_official: principal.township_id,
            Role.school_admin: principal.school_id,
        }.get(role)
        if own is None:
            message = "请指定统计范围 (name an area: a county, township or school)"
            raise Invalid(
                message,
                code="stats_area_required",
                fields=[field_error(["query", "area_id"], message, "stats_area_required")],
            )
        area_id = own
    widest = {Role.township_official: Level.township, Role.school_admin: Level.school}.get(role, Level.county)
    # Scoped reads: an area outside the caller's scope is not found.
    area = await _load_area(session, area_id)
    if area is None or _LEVEL_RANK[area.level] < _LEVEL_RANK[widest]:
        raise _area_not_found()
    return area


@dataclass(frozen=True)
class SchoolRef:
    """A school as the statistics need it: plain columns, no ORM object."""

    id: uuid.UUID
    name: str
    township_id: uuid.UUID
    county_id: uuid.UUID


# The county, township or school :id (whichever it is) and its schools, in one round trip: the first row names
# the area; a row per school (as the caller's row scope shows them), by name.
_AREA = sa.text(
    """
    WITH a AS (
        SELECT 'county' AS level, id, name FROM county WHERE id = :id
        UNION ALL SELECT 'township', id, name FROM township WHERE id = :id
        UNION ALL SELECT 'school', id, name FROM school WHERE id = :id
        LIMIT 1
    )
    SELECT a.level, a.name, s.id, s.name, s.township_id, s.county_id
    FROM a LEFT JOIN school s ON CASE a.level
        WHEN 'county' THEN s.county_id = a.id WHEN 'township' THEN s.township_id = a.id ELSE s.id = a.id END
    ORDER BY s.name, s.id
    """
)


async def _load_area(session: AsyncSession, area_id: uuid.UUID) -> Area | None:
    """The county, township or school ``area_id`` with its schools (as the caller's row scope shows them)."""
    rows = (await session.execute(_AREA, {"id": area_id})).all()
    if not rows:
        return None
    schools = {r[2]: SchoolRef(r[2], r[3], r[4], r[5]) for r in rows if r[2] is not None}
    return Area(level=Level(rows[0][0]), id=area_id, name=rows[0][1], schools=schools)


async def scope_root(session: AsyncSession, principal: Principal, area: Area) -> Area:
    """The widest area the caller can ask about that holds ``area``: the bureau's county, a township
    official's township, a school admin's school; for the platform, the county of the area. Every table the
    caller can fetch within it is cut from one suppression of this root (:func:`joint`)."""
    own = (
        {
            Role.county_bureau: principal.county_id,
            Role.township_official: principal.township_id,
            Role.school_admin: principal.school_id,
        }.get(principal.role)
        if principal.role is not None
        else None
    )
    if own is None:  # the platform: the county the area belongs to
        if area.level == Level.county:
            return area
        if area.level == Level.township:
            township = await session.get(Township, area.id)
            own = township.county_id if township is not None else None
        else:
            own = area.schools[area.id].county_id if area.id in area.schools else None
    if own is None or own == area.id:
        return area
    root = await _load_area(session, own)
    if root is None or not set(area.schools) <= set(root.schools):
        return area  # not expected: the area was found in the caller's scope, within the caller's own
    return root


def check_level(area: Area, level: Level) -> None:
    if level == Level.klass and area.level != Level.school:
        message = "班级统计只能在一所学校内 (class tables are within one school: give its area_id)"
        raise Invalid(
            message, code="class_needs_school", fields=[field_error(["query", "level"], message, "class_needs_school")]
        )
    if _LEVEL_RANK[level] < _LEVEL_RANK[area.level]:
        message = "统计层级不能高于统计范围 (the level is above the area)"
        raise Invalid(
            message, code="level_above_area", fields=[field_error(["query", "level"], message, "level_above_area")]
        )


def check_period(period: Period, today: date) -> None:
    if period.starts_on > today:
        message = "统计期尚未开始 (the period has not begun)"
        raise Invalid(
            message, code="period_in_future", fields=[field_error(["query", "key"], message, "period_in_future")]
        )


async def units_of(session: AsyncSession, area: Area, level: Level) -> list[Unit]:
    if level == Level.county:
        return [Unit(area.id, area.name, None)]
    if level == Level.township:
        if area.level == Level.township:
            return [Unit(area.id, area.name, None)]
        rows = (
            await session.execute(
                sa.select(Township).where(col(Township.county_id) == area.id).order_by(col(Township.name))
            )
        ).scalars()
        return [Unit(t.id, t.name, t.county_id) for t in rows]
    if level == Level.school:
        return [Unit(s.id, s.name, s.township_id) for s in area.schools.values()]
    classes = (
        await session.execute(
            sa.select(SchoolClass)
            .where(col(SchoolClass.school_id) == area.id)
            .order_by(col(SchoolClass.grade), col(SchoolClass.name))
        )
    ).scalars()
    return [Unit(c.id, class_label(c.grade, c.name), c.school_id) for c in classes if c.is_active]


# ---- computing a period ----------------------------------------------------------------------------------------


@dataclass
class Computed:
    units: list[Unit]
    counts: dict[Hashable, dict[str, int]]  # unit key (or TOTAL) → quantity → value
    minutes: dict[Hashable, dict[str, float | None]]
    hidden: set[tuple[Hashable, str]]
    as_of: datetime | None = None  # every change before it is counted (None: computed from the records now)
    # (row key, indicator keys) → its cells, made once per computed table (a reused table reuses them too)
    cells_made: dict[tuple[Hashable, tuple[str, ...]], dict[str, Cell]] = field(default_factory=dict)
    # what it was computed from (the kept rows' versions and the units), None when not from kept rows alone:
    # equal versions, equal tables (the exports are kept by it)
    version: Hashable | None = None


@dataclass
class Joint:
    """The caller's scope root and every unit below it down to the schools (county → townships → schools),
    for one period, suppressed together: every table above a class is a view of it (:func:`view`)."""

    root: Area
    units: dict[Hashable, Unit]  # the root first, then townships by name, then schools by name
    levels: dict[Hashable, Level]
    children: dict[Hashable, list[Hashable]]
    counts: dict[Hashable, dict[str, int]]
    minutes: dict[Hashable, dict[str, float | None]]
    hidden: set[tuple[Hashable, str]]
    as_of: datetime | None
    memo_key: Hashable | None
    views: dict[Hashable, Computed] = field(default_factory=dict)  # (area, level, …) → its table
    # a school → what the joint implies about its hidden cells (relations among them alone): a class table's
    # suppression knows them, rather than the whole joint
    relations: dict[Hashable, list[dict[tuple[Hashable, str], int]]] = field(default_factory=dict)
    equations: list[Equation] = field(default_factory=list)  # what a reader knows (:func:`tree_equations`)
    # a period longer than a month: its months' joints (begun by today), which decided its additive cells
    parts: list["Joint"] = field(default_factory=list)
    period: Period | None = None

    def below(self, area_id: Hashable) -> set[Hashable]:
        """``area_id`` and every unit under it."""
        out, todo = set(), [area_id]
        while todo:
            key = todo.pop()
            out.add(key)
            todo.extend(self.children.get(key, ()))
        return out


# Joint suppressions and class tables computed from kept figures, by what they were computed from (least
# recently used dropped).
MEMO_TABLES = 128
_MEMO: OrderedDict[Hashable, Any] = OrderedDict()


def _remember(key: Hashable | None, value: Any) -> None:
    if key is None:
        return
    _MEMO[key] = value
    while len(_MEMO) > MEMO_TABLES:
        _MEMO.popitem(last=False)


def _recall(key: Hashable | None) -> Any:
    if key is None or (hit := _MEMO.get(key)) is None:
        return None
    _MEMO.move_to_end(key)
    return hit


async def _figures(
    session: AsyncSession,
    school_ids: list[uuid.UUID],
    period: Period,
    *,
    today: date,
    now: datetime | None,
    max_stale: timedelta | None,
    by_class: bool,
) -> tuple[queries.Figures, datetime | None, Hashable | None]:
    if now is not None and max_stale is not None:
        return await preaggregate.figures_for(
            session, school_ids=school_ids, period=period, today=today, now=now, max_stale=max_stale, by_class=by_class
        )
    figures = queries.Figures()
    await preaggregate.compute_direct(session, figures, school_ids=school_ids, period=period, today=today)
    return figures, None, None


def _add_up(
    keys: Sequence[Hashable],
    figures: queries.Figures,
    owner: Any,
    quantities: list[str],
) -> tuple[dict[Hashable, dict[str, int]], dict[Hashable, dict[str, float | None]]]:
    """Counts and the chain's minutes per key, each figure of ``figures`` added to every key ``owner``
    gives for its (school, class)."""
    counts: dict[Hashable, dict[str, int]] = {k: dict.fromkeys(quantities, 0) for k in keys}
    steps: dict[Hashable, list[tuple[int, float | None, bool | None]]] = defaultdict(list)
    for (school_id, class_id), values in figures.counts.items():
        for key in owner(school_id, class_id):
            target = counts.setdefault(key, dict.fromkeys(quantities, 0))
            for q, v in values.items():
                target[q] += v
    for (school_id, class_id), mine in figures.steps.items():
        for key in owner(school_id, class_id):
            steps[key].extend(mine)
    minutes: dict[Hashable, dict[str, float | None]] = {}
    for key in counts:
        chain, durations = queries.chain_counts(steps.get(key, []))
        counts[key].update(chain)
        minutes[key] = durations
    return counts, minutes


async def joint(
    session: AsyncSession,
    root: Area,
    period: Period,
    *,
    today: date,
    threshold: int,
    now: datetime | None = None,
    max_stale: timedelta | None = None,
) -> Joint:
    """Every quantity of the registry for the root and each township and school under it, suppressed as one
    system (:func:`suppress_tree`). Each school's figures come summed over its classes — from the
    pre-aggregates where fresh enough (with ``now`` and ``max_stale``), else from the living records."""
    units: dict[Hashable, Unit] = {root.id: Unit(root.id, root.name, None)}
    levels: dict[Hashable, Level] = {root.id: root.level}
    if root.level == Level.county:
        townships = (
            await session.execute(
                sa.select(Township).where(col(Township.county_id) == root.id).order_by(col(Township.name))
            )
        ).scalars()
        for t in townships:
            units[t.id] = Unit(t.id, t.name, root.id)
            levels[t.id] = Level.township
    if root.level != Level.school:
        for school in root.schools.values():
            parent = school.township_id if school.township_id in units else root.id
            units[school.id] = Unit(school.id, school.name, parent)
            levels[school.id] = Level.school
    shape = tuple((u.key, u.name, u.parent_id) for u in units.values())
    # A longer period is decided by its months first (:mod:`.across`): their joints, each reused as kept.
    parts = [
        await joint(session, root, m, today=today, threshold=threshold, now=now, max_stale=max_stale)
        for m in _months_within(period, today)
    ]
    parts_key = tuple(p.memo_key for p in parts)
    reusable = all(k is not None for k in parts_key)  # a month computed from the records: nor is the period
    # The same kept rows (and units) give the same suppression: look it up by the rows' versions before
    # reading the figures themselves (a month of the bureau's trend need not decode 300 schools' figures).
    if now is not None and max_stale is not None:
        kept, kept_as_of = await preaggregate.kept_version(
            session,
            school_ids=list(root.schools),
            period=period,
            today=today,
            now=now,
            max_stale=max_stale,
            by_class=False,
        )
        memo = ("joint", root.id, threshold, kept, shape, parts_key)
        if reusable and kept is not None and (hit := _recall(memo)) is not None:
            return replace(cast(Joint, hit), as_of=_earliest(kept_as_of, *(p.as_of for p in parts)))
    figures, as_of, version = await _figures(
        session, list(root.schools), period, today=today, now=now, max_stale=max_stale, by_class=False
    )
    memo_key = ("joint", root.id, threshold, version, shape, parts_key) if version is not None and reusable else None
    if (hit := _recall(memo_key)) is not None:
        return replace(cast(Joint, hit), as_of=_earliest(as_of, *(p.as_of for p in parts)))
    children: dict[Hashable, list[Hashable]] = defaultdict(list)
    for u in units.values():
        if u.parent_id is not None:
            children[u.parent_id].append(u.key)
    lineage: dict[uuid.UUID, tuple[Hashable, ...]] = {}
    for school_id in root.schools:
        chain: list[Hashable] = []
        key: Hashable = school_id
        while True:
            chain.append(key)
            above = units[key].parent_id
            if above is None:
                break
            key = above
        lineage[school_id] = tuple(chain)
    counts, minutes = _add_up(list(units), figures, lambda s, _c: lineage[s], _all_quantities())
    for school_id, pupils in figures.enrolment.items():
        for key in lineage[school_id]:
            counts[key]["enrolled_pupils"] += pupils
    tree = {k: list(v) for k, v in children.items()}
    equations = tree_equations(counts, tree)
    hidden = solve_joint(counts, minutes, tree, levels, parts, threshold=threshold, equations=equations)
    found = Joint(
        root=root,
        units=units,
        levels=levels,
        children=tree,
        counts=counts,
        minutes=minutes,
        hidden=hidden,
        as_of=as_of,
        memo_key=memo_key,
        equations=equations,
        parts=parts,
        period=period,
    )
    _remember(memo_key, found)
    return found


def _months_within(period: Period, today: date) -> list[Period]:
    """The months a longer period is made of, those begun by ``today`` (none for a month)."""
    if period.kind == periods.PeriodKind.month:
        return []
    return [m for m in periods.months_of(period) if m.starts_on <= today]


def solve_joint(
    counts: dict[Hashable, dict[str, int]],
    minutes: Mapping[Hashable, Mapping[str, float | None]],
    tree: Mapping[Hashable, Sequence[Hashable]],
    levels: Mapping[Hashable, Level],
    parts: Sequence[Joint],
    *,
    threshold: int,
    equations: list[Equation] | None = None,
) -> set[tuple[Hashable, str]]:
    """The hidden set of a joint: a month on its own; a longer period with what its months (``parts``)
    decided fixed (:func:`.across.period_fixed`); then the worst minutes no shown (school, month) attains
    (:func:`.across.worst_hidden`)."""
    fixed = across.period_fixed(counts, [(p.counts, p.hidden) for p in parts], threshold=threshold)
    hidden = suppress_tree(counts, tree, threshold=threshold, equations=equations, fixed=fixed or None)

    def schools_under(unit: Hashable) -> list[Hashable]:
        out, todo = [], [unit]
        while todo:
            key = todo.pop()
            if levels[key] == Level.school:
                out.append(key)
            todo.extend(tree.get(key, ()))
        return out

    def atoms(unit: Hashable) -> Iterable[tuple[Hashable, Mapping[str, float | None], set[tuple[Hashable, str]]]]:
        if parts:
            return [(s, p.minutes.get(s, {}), p.hidden) for p in parts for s in schools_under(unit)]
        return [(s, minutes.get(s, {}), hidden) for s in schools_under(unit)]

    return hidden | across.worst_hidden(counts, minutes, hidden, atoms)


def view(found: Joint, area: Area, level: Level) -> Computed:
    """The table of ``level`` within ``area`` cut from the joint suppression: its rows are the units of that
    level under the area, its totals row the area's own unit — every cell hidden exactly as the joint hid it."""
    made = found.views.get((area.id, level))
    if made is not None:
        return replace(made, as_of=found.as_of)
    if level == area.level:
        own = area.schools[area.id].township_id if level == Level.school and area.id in area.schools else None
        units = [replace(found.units[area.id], parent_id=own)]
    else:
        under = found.below(area.id)
        units = [u for k, u in found.units.items() if k in under and found.levels[k] == level]
    keys = {u.key for u in units}
    counts: dict[Hashable, dict[str, int]] = {u.key: found.counts[u.key] for u in units}
    counts[TOTAL] = found.counts[area.id]
    minutes: dict[Hashable, dict[str, float | None]] = {u.key: found.minutes[u.key] for u in units}
    minutes[TOTAL] = found.minutes[area.id]
    hidden = {(k, q) for k, q in found.hidden if k in keys}
    hidden |= {(TOTAL, q) for k, q in found.hidden if k == area.id}
    version = (found.memo_key, area.id, level) if found.memo_key is not None else None
    made = Computed(units=units, counts=counts, minutes=minutes, hidden=hidden, as_of=found.as_of, version=version)
    found.views[(area.id, level)] = made
    return made


async def classes(
    session: AsyncSession,
    found: Joint,
    school: Area,
    period: Period,
    *,
    today: date,
    threshold: int,
    now: datetime | None = None,
    max_stale: timedelta | None = None,
    strict: bool = True,
) -> Computed | None:
    """The class table of ``school``, solved top-down under the joint suppression: the school's cells (the
    totals row) are fixed as the joint left them — hidden ones stay hidden, shown ones are known — and only
    class cells are added as complements, with every equation of the joint beside the class table's own, so
    that no combination of this table with any other the caller can fetch solves a hidden cell. None (with
    ``strict``) when the classes do not add up to the school's figures in ``found`` (a change landed between
    the two reads): the caller reads both again."""
    units = await units_of(session, school, Level.klass)
    shape = tuple((u.key, u.name, u.parent_id) for u in units)
    if now is not None and max_stale is not None and found.memo_key is not None:
        kept, kept_as_of = await preaggregate.kept_version(
            session, school_ids=[school.id], period=period, today=today, now=now, max_stale=max_stale
        )
        if kept is not None and (hit := _recall(("classes", found.memo_key, school.id, kept, shape))) is not None:
            return replace(cast(Computed, hit), as_of=_earliest(found.as_of, kept_as_of))
    figures, as_of, version = await _figures(
        session, [school.id], period, today=today, now=now, max_stale=max_stale, by_class=True
    )
    memo_key = ("classes", found.memo_key, school.id, version, shape) if found.memo_key and version else None
    if (hit := _recall(memo_key)) is not None:
        return replace(cast(Computed, hit), as_of=_earliest(found.as_of, as_of))
    quantities = [q for q in _all_quantities() if q != "enrolled_pupils"]  # a class has no enrolment of its own
    counts, minutes = _add_up(
        [u.key for u in units],
        figures,
        lambda _s, c: (c if c is not None else UNPLACED,),
        quantities,
    )
    for key in counts:
        if key not in {u.key for u in units}:  # a class no longer active that still has children, or none
            if key == UNPLACED:
                units.append(Unit(UNPLACED, "未分班", school.id))
            else:
                klass = await session.get(SchoolClass, key)
                name = class_label(klass.grade, klass.name) if klass is not None else "其他"
                units.append(Unit(key, name, school.id))
    school_row = found.counts[school.id]
    if strict and any(sum(counts[k][q] for k in counts) != v for q, v in school_row.items() if q != "enrolled_pupils"):
        return None  # the classes do not add up to the school's figures of the joint: read at different times
    counts[TOTAL] = school_row
    minutes[TOTAL] = found.minutes[school.id]
    # A longer period: its months' class tables first (their additive class cells decide its own, :mod:`.across`).
    months = []
    for part in found.parts:
        assert part.period is not None
        month_table = await classes(
            session,
            part,
            school,
            part.period,
            today=today,
            threshold=threshold,
            now=now,
            max_stale=max_stale,
            strict=strict,
        )
        if month_table is None:
            return None  # read at different times: the caller reads again
        months.append(month_table)
    hidden = suppress_classes(found, school.id, counts, threshold=threshold, minutes=minutes, months=months)
    made = Computed(
        units=units,
        counts=counts,
        minutes=minutes,
        hidden=hidden,
        as_of=_earliest(found.as_of, as_of),
        version=memo_key,
    )
    _remember(memo_key, made)
    return made


def suppress_classes(
    found: Joint,
    school_id: Hashable,
    counts: dict[Hashable, dict[str, int]],
    *,
    threshold: int,
    minutes: Mapping[Hashable, Mapping[str, float | None]] | None = None,
    months: Sequence[Computed] = (),
) -> set[tuple[Hashable, str]]:
    """The cells to hide of a class table: ``counts`` holds each class (or the children without one) and,
    under :data:`TOTAL`, the school's figures as the joint suppression ``found`` has them. The school's cells
    are fixed (hidden or shown as the joint left them); what the joint implies about the school's hidden cells
    (the relations among them alone, every other hidden cell eliminated — the same as knowing every equation
    of the joint, for cells of this table) is known beside the class table's own equations (the school is the
    sum of its classes, each class's breakdowns), and only class cells may be chosen as complements.

    A period longer than a month: ``months`` are its months' class tables, which decide its additive class cells
    (:func:`.across.period_fixed`). ``minutes``: the table's minutes, for the worst minutes
    (:func:`.across.worst_hidden` over the (class, month) worsts, :func:`.across.worst_candidates`)."""
    relations = found.relations.get(school_id)
    if relations is None:
        mine = {(k, q) for k, q in found.hidden if k == school_id}
        equations = found.equations or tree_equations(found.counts, found.children)
        relations = implied(found.hidden, equations, mine)
        found.relations[school_id] = relations
    known: list[dict[tuple[Hashable, str], int]] = [{(TOTAL, q): c for (_, q), c in row.items()} for row in relations]
    fixed: dict[tuple[Hashable, str], bool] = {(TOTAL, q): (school_id, q) in found.hidden for q in counts[TOTAL]}
    rows = [k for k in counts if k != TOTAL]
    if months:
        mine_by_month = [({k: t.counts[k] for k in t.counts if k != TOTAL}, t.hidden) for t in months]
        fixed |= across.period_fixed({k: counts[k] for k in rows}, mine_by_month, threshold=threshold)
    own = tree_equations(counts, {TOTAL: rows})
    school_row = tree_equations({TOTAL: counts[TOTAL]}, {})
    school_hidden = {var for var, is_hidden in fixed.items() if is_hidden and var[0] == TOTAL}
    forced: dict[tuple[Hashable, str], bool] = {}
    while True:
        hidden = suppress_tree(
            counts,
            {TOTAL: rows},
            threshold=threshold,
            fixed={**fixed, **forced},
            known=known,
        )
        # The classes must tell nothing about the school's hidden cells beyond its own breakdowns (so that
        # class tables of several schools, together, still pin nothing): where they would, hide one more
        # class cell of each such quantity and solve again.
        culprits = narrowed(hidden, own, school_row, school_hidden)
        more = []
        for _, q in sorted(culprits, key=repr):
            spare = [(k, q) for k in rows if q in counts[k] and (k, q) not in hidden]
            if spare:
                more.append(min(spare, key=lambda v: (counts[v[0]][q] == 0, counts[v[0]][q], repr(v))))
        if not more:
            break
        forced |= dict.fromkeys(more, True)
    hidden = {(k, q) for k, q in hidden if k in counts}
    hidden |= {(TOTAL, across.worst_key(n)) for n in across.STEPS if (school_id, across.worst_key(n)) in found.hidden}
    if minutes is None:
        return hidden
    if months:
        hidden |= across.worst_hidden(
            rows, minutes, hidden, lambda k: [(k, t.minutes.get(k, {}), t.hidden) for t in months]
        )
    return hidden | across.worst_candidates(rows, counts, minutes, hidden, TOTAL)


async def compute(
    session: AsyncSession,
    root: Area,
    area: Area,
    level: Level,
    period: Period,
    *,
    today: date,
    threshold: int,
    now: datetime | None = None,
    max_stale: timedelta | None = None,
) -> Computed:
    """Every quantity of the registry for each unit of ``level`` in ``area`` and the totals, suppressed as
    part of the joint suppression of the caller's ``root`` (:func:`scope_root`)."""
    found = await joint(session, root, period, today=today, threshold=threshold, now=now, max_stale=max_stale)
    if level != Level.klass:
        return view(found, area, level)
    made = await classes(session, found, area, period, today=today, threshold=threshold, now=now, max_stale=max_stale)
    if made is None:  # the school's figures changed between the two reads: read both again (once)
        found = await joint(session, root, period, today=today, threshold=threshold, now=now, max_stale=max_stale)
        made = await classes(
            session, found, area, period, today=today, threshold=threshold, now=now, max_stale=max_stale, strict=False
        )
    assert made is not None
    return made


def _earliest(*times: datetime | None) -> datetime | None:
    known = [t for t in times if t is not None]
    return min(known) if known else None


def _all_quantities() -> list[str]:
    return registry.quantities_of(list(registry.REGISTRY))


def tree_equations(
    counts: Mapping[Hashable, Mapping[str, int]], children: Mapping[Hashable, Sequence[Hashable]]
) -> list[Equation]:
    """What a reader knows of these units: each parent is the sum of its children (per quantity all of them
    have), and each unit's breakdowns add up to their parent count."""
    equations: list[Equation] = []
    for parent, kids in children.items():
        if not kids:
            continue
        for q in counts[parent]:
            if all(q in counts[k] for k in kids):
                equations.append(Equation((parent, q), tuple((k, q) for k in kids)))
    for name, parts in registry.PARTITIONS.items():
        whole = registry.BREAKDOWN_PARENT[name]
        for key, row in counts.items():
            if whole in row and all(p in row for p in parts):
                equations.append(Equation((key, whole), tuple((key, p) for p in parts)))
    return equations


def suppress_tree(
    counts: dict[Hashable, dict[str, int]],
    children: Mapping[Hashable, Sequence[Hashable]],
    *,
    threshold: int,
    fixed: Mapping[tuple[Hashable, str], bool] | None = None,
    known: Iterable[dict[tuple[Hashable, str], int]] = (),
    equations: list[Equation] | None = None,
) -> set[tuple[Hashable, str]]:
    """The cells to hide of units tied by ``children`` (a parent is the sum of its children), each with its
    breakdowns. ``fixed``: cells decided already (True hidden); ``known``: relations among fixed hidden cells
    a reader also has."""
    values: dict[tuple[Hashable, str], int] = {}
    for key, row in counts.items():
        for q, v in row.items():
            values[(key, q)] = v
    if equations is None:
        equations = tree_equations(counts, children)
    frozen = dict(fixed or {})
    suppressible = [v for v in values if v[1] not in registry.NOT_SUPPRESSIBLE and v not in frozen]
    ties = [((key, a), (key, b)) for key in counts for a, b in registry.TIES if a in counts[key] and b in counts[key]]
    return suppress(
        values,
        threshold=threshold,
        suppressible=suppressible,
        equations=equations,
        ties=ties,
        fixed=frozen or None,
        known=known,
    )


def suppress_counts(counts: dict[Hashable, dict[str, int]], *, threshold: int) -> set[tuple[Hashable, str]]:
    """The cells to hide of one table whose rows are ``counts`` (the totals row under :data:`TOTAL`)."""
    return suppress_tree(counts, {TOTAL: [k for k in counts if k != TOTAL]}, threshold=threshold)


# ---- cells -------------------------------------------------------------------------------------------------------


def cell(computed: Computed, key: Hashable, indicator: registry.Indicator) -> Cell:
    row = computed.counts[key]
    definition = indicator.definition
    qs = indicator.quantities
    if any(q not in row for q in qs):
        return Cell(value=None)
    if any((key, q) in computed.hidden for q in qs) or (
        indicator.minutes is not None and (key, indicator.minutes) in computed.hidden
    ):
        return Cell(value=None, suppressed=True)
    if definition.kind == IndicatorKind.count:
        v = row[qs[0]]
        if indicator.scale == 1:
            return Cell(value=v)
        return Cell(value=round(v / indicator.scale, definition.digits))
    if definition.kind == IndicatorKind.rate:
        num, den = row[qs[0]], row[qs[1]]
        value = round(num / den, definition.digits + 2) if den else None
        return Cell(value=value, numerator=num, denominator=den)
    assert indicator.minutes is not None
    told = row[qs[0]]
    m = computed.minutes[key].get(indicator.minutes)
    return Cell(value=None if m is None else round(m, definition.digits), denominator=told)


def cells(computed: Computed, key: Hashable, keys: Sequence[str]) -> dict[str, Cell]:
    made = computed.cells_made.get((key, tuple(keys)))
    if made is None:
        made = computed.cells_made[(key, tuple(keys))] = {k: cell(computed, key, registry.REGISTRY[k]) for k in keys}
    return made


# ---- the answers -------------------------------------------------------------------------------------------------


async def build_table(
    session: AsyncSession,
    principal: Principal,
    *,
    level: Level,
    period: Period,
    area_id: uuid.UUID | None,
    indicators: list[str] | None,
    now: datetime,
    threshold: int = DEFAULT_THRESHOLD,
    max_stale: timedelta | None = DEFAULT_MAX_STALE,
) -> StatsTable:
    """A level × period table of ``area_id`` (else the caller's own area), with the previous period beside
    each row, the totals row and the time the figures were computed. ``indicators``: keys of the registry
    (None: all). ``threshold``: the small-count threshold (the setting ``stats_suppression_threshold``)."""
    keys = list(indicators) if indicators is not None else list(registry.REGISTRY)
    unknown = [k for k in keys if k not in registry.REGISTRY]
    if unknown:
        registry.parse_keys(",".join(unknown))
    today = periods.shanghai_date(now)
    check_period(period, today)
    area = await resolve_area(session, principal, area_id)
    check_level(area, level)
    previous_period = periods.previous(period)
    root = await scope_root(session, principal, area)
    current, before = [
        await compute(session, root, area, level, p, today=today, threshold=threshold, now=now, max_stale=max_stale)
        for p in (period, previous_period)
    ]
    rows = [
        StatsRow(
            unit_id=u.key if isinstance(u.key, uuid.UUID) else None,
            unit_name=u.name,
            level=level,
            parent_id=u.parent_id,
            cells=cells(current, u.key, keys),
            previous=cells(before, u.key, keys) if u.key in before.counts else {k: Cell(value=None) for k in keys},
        )
        for u in current.units
    ]
    total = StatsRow(
        unit_id=None,
        unit_name="合计",
        level=level,
        parent_id=None,
        cells=cells(current, TOTAL, keys),
        previous=cells(before, TOTAL, keys),
    )
    return StatsTable(
        area_level=area.level,
        area_id=area.id,
        area_name=area.name,
        level=level,
        period=period,
        previous_period=previous_period,
        indicators=registry.definitions(keys),
        rows=rows,
        total=total,
        threshold=threshold,
        as_of=min(c.as_of or now for c in (current, before)),
    )


async def answer_version(
    session: AsyncSession,
    principal: Principal,
    area: Area,
    *,
    levels: Sequence[Level],
    table_periods: Sequence[Period],
    trend_months: Sequence[Period] = (),
    now: datetime,
    threshold: int = DEFAULT_THRESHOLD,
    max_stale: timedelta | None = DEFAULT_MAX_STALE,
) -> tuple[Hashable | None, datetime]:
    """What the tables of ``levels`` of ``area`` for each of ``table_periods`` (beside the previous period)
    and the trend over ``trend_months`` are computed from — the kept rows' versions, the units and their names,
    the caller's scope root, the threshold; equal versions, equal tables and trend (apart from ``as_of``) — and
    the ``as_of`` they would say; (None, now) when a part is not from kept rows alone. The kept rows' versions of
    every period involved (their months too) are read in one query first."""
    today = periods.shanghai_date(now)
    root = await scope_root(session, principal, area)
    wanted = [q for p in table_periods for q in (p, periods.previous(p))]
    if now is not None and max_stale is not None:
        involved = {(p.kind, p.key): p for p in [*wanted, *trend_months]}
        for p in list(involved.values()):
            for m in _months_within(p, today):
                involved.setdefault((m.kind, m.key), m)
        await preaggregate.prefetch_versions(
            session,
            school_ids=list(root.schools),
            periods=list(involved.values()),
            today=today,
            now=now,
            max_stale=max_stale,
            by_class=False,
        )
    out: list[Hashable] = []
    as_of = now
    for p in wanted:
        found = await joint(session, root, p, today=today, threshold=threshold, now=now, max_stale=max_stale)
        if found.memo_key is None:
            return None, now
        as_of = min(as_of, found.as_of or now)
        for level in levels:
            if level != Level.klass:
                out.append((found.memo_key, area.id, level.value))  # the view's own version
                continue
            made = await compute(
                session, root, area, level, p, today=today, threshold=threshold, now=now, max_stale=max_stale
            )
            if made.version is None:
                return None, now
            as_of = min(as_of, made.as_of or now)
            out.append(made.version)
    for month in trend_months:
        found = await joint(session, root, month, today=today, threshold=threshold, now=now, max_stale=max_stale)
        if found.memo_key is None:
            return None, now
        as_of = min(as_of, found.as_of or now)
        out.append((found.memo_key, area.id))
    return (root.id, area.id, threshold, tuple(out)), as_of


async def build_trend(
    session: AsyncSession,
    principal: Principal,
    *,
    indicators: list[str] | None,
    from_key: str,
    to_key: str,
    area_id: uuid.UUID | None,
    now: datetime,
    threshold: int = DEFAULT_THRESHOLD,
    max_stale: timedelta | None = DEFAULT_MAX_STALE,
) -> StatsTrend:
    """The monthly figures of the area (its totals, suppressed as in the area's own table) from ``from_key`` to
    ``to_key`` (months such as ``2026-01``; at most 36, none after this month)."""
    keys = list(indicators) if indicators is not None else list(registry.REGISTRY)
    unknown = [k for k in keys if k not in registry.REGISTRY]
    if unknown:
        registry.parse_keys(",".join(unknown))
    months = periods.month_range(from_key, to_key)
    today = periods.shanghai_date(now)
    check_period(months[-1], today)
    area = await resolve_area(session, principal, area_id)
    root = await scope_root(session, principal, area)
    points = []
    as_of = now
    for month in months:
        computed = await compute(
            session, root, area, area.level, month, today=today, threshold=threshold, now=now, max_stale=max_stale
        )
        as_of = min(as_of, computed.as_of or now)
        points.append(TrendPoint(period=month, cells=cells(computed, TOTAL, keys)))
    return StatsTrend(
        area_level=area.level,
        area_id=area.id,
        area_name=area.name,
        indicators=registry.definitions(keys),
        points=points,
        threshold=threshold,
        as_of=as_of,
    )
