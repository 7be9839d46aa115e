"""The bureau's tables and trends: an area (county, township or school) in the caller's scope, one level of
units, one period beside the previous one, every figure from :mod:`.queries` and hidden by
:mod:`.suppression` where it could identify a child.

:func:`build_table` and :func:`build_trend` are what the API and the exports (XLSX, CSV, bulletins) call; their
signatures stay put. The suppression is always worked out over every indicator of the registry, whichever
are asked for, so that two answers for the same area, level and period hide the same cells.
"""

import uuid
from collections import OrderedDict, defaultdict
from collections.abc import Hashable, Sequence
from dataclasses import dataclass, field, replace
from datetime import date, datetime, timedelta

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncSession
from sqlmodel import col

from api.errors import Forbidden, Invalid, NotFound, field_error
from api.models.accounts import Role
from api.models.organisations import County, School, SchoolClass, Township, class_label
from api.models.stats import Cell, IndicatorKind, Level, Period, StatsRow, StatsTable, StatsTrend, TrendPoint
from api.scoping import Principal
from api.services.stats import indicators as registry
from api.services.stats import periods, preaggregate, queries
from api.services.stats.suppression import Equation, suppress

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
    schools: dict[uuid.UUID, School]


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
    found: tuple[Level, str] | None = None
    # Scoped reads: an area outside the caller's scope is not found.
    county = await session.get(County, area_id)
    if county is not None:
        found = (Level.county, county.name)
        schools_q = sa.select(School).where(col(School.county_id) == area_id)
    else:
        township = await session.get(Township, area_id)
        if township is not None:
            found = (Level.township, township.name)
            schools_q = sa.select(School).where(col(School.township_id) == area_id)
        else:
            school = await session.get(School, area_id)
            if school is not None:
                found = (Level.school, school.name)
                schools_q = sa.select(School).where(col(School.id) == area_id)
    if found is None or _LEVEL_RANK[found[0]] < _LEVEL_RANK[widest]:
        raise _area_not_found()
    schools = {s.id: s for s in (await session.execute(schools_q.order_by(col(School.name)))).scalars()}
    return Area(level=found[0], id=area_id, name=found[1], schools=schools)


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


# Suppressed tables computed from kept figures, by what they were computed from (least recently used dropped).
MEMO_TABLES = 128
_MEMO: OrderedDict[Hashable, Computed] = OrderedDict()


async def compute(
    session: AsyncSession,
    area: Area,
    level: Level,
    period: Period,
    *,
    today: date,
    threshold: int,
    now: datetime | None = None,
    max_stale: timedelta | None = None,
) -> Computed:
    """Every quantity of the registry for each unit of ``level`` in ``area`` and the totals, suppressed. With
    ``now`` and ``max_stale``, each school's figures come from the pre-aggregates where they are fresh enough
    (:mod:`.preaggregate`); otherwise all from the living records."""
    ids = list(area.schools)
    by_class = level == Level.klass
    units = await units_of(session, area, level)
    shape = tuple((u.key, u.name, u.parent_id) for u in units)
    as_of: datetime | None = None
    # The same kept rows (and units) give the same suppressed table: reuse it rather than read, add up and
    # suppress again (a 300-school table is most of a second of Python; the bureau and the exports ask often).
    if now is not None and max_stale is not None:
        version, kept_as_of = await preaggregate.kept_version(
            session, school_ids=ids, period=period, today=today, now=now, max_stale=max_stale, by_class=by_class
        )
        if version is not None and (hit := _MEMO.get((area.id, level, threshold, version, shape))) is not None:
            _MEMO.move_to_end((area.id, level, threshold, version, shape))
            return replace(hit, as_of=kept_as_of)
    version = None
    if now is not None and max_stale is not None:
        figures, as_of, version = await preaggregate.figures_for(
            session,
            school_ids=ids,
            period=period,
            today=today,
            now=now,
            max_stale=max_stale,
            by_class=by_class,
        )
    else:
        figures = queries.Figures()
        await preaggregate.compute_direct(session, figures, school_ids=ids, period=period, today=today)
    memo_key = (area.id, level, threshold, version, shape) if version is not None else None

    def unit_of(school_id: uuid.UUID, class_id: uuid.UUID | None) -> Hashable:
        school = area.schools[school_id]
        if level == Level.county:
            return area.id
        if level == Level.township:
            return school.township_id
        if level == Level.school:
            return school_id
        return class_id if class_id is not None else UNPLACED

    quantities = _all_quantities()
    counts: dict[Hashable, dict[str, int]] = {u.key: dict.fromkeys(quantities, 0) for u in units}
    counts[TOTAL] = dict.fromkeys(quantities, 0)
    steps: dict[Hashable, list[tuple[int, float | None, bool | None]]] = defaultdict(list)
    extra: list[Hashable] = []

    def row(key: Hashable) -> dict[str, int]:
        if key not in counts:
            counts[key] = dict.fromkeys(quantities, 0)
            extra.append(key)
        return counts[key]

    for (school_id, class_id), values in figures.counts.items():
        target = row(unit_of(school_id, class_id))
        for q, v in values.items():
            target[q] += v
            counts[TOTAL][q] += v
    for (school_id, class_id), mine in figures.steps.items():
        steps[unit_of(school_id, class_id)].extend(mine)
        steps[TOTAL].extend(mine)
    minutes: dict[Hashable, dict[str, float | None]] = {}
    for key in counts:
        chain, durations = queries.chain_counts(steps.get(key, []))
        counts[key].update(chain)
        minutes[key] = durations
    # Enrolment is a school's: summed up to townships and the county; a class has none of its own.
    for school_id, pupils in figures.enrolment.items():
        counts[TOTAL]["enrolled_pupils"] += pupils
        if level != Level.klass:
            counts[unit_of(school_id, None)]["enrolled_pupils"] += pupils
    if level == Level.klass:
        for key in counts:
            if key != TOTAL:
                counts[key].pop("enrolled_pupils", None)
    for key in extra:  # a class no longer active that still has children, or the children without a class
        if key == UNPLACED:
            units.append(Unit(UNPLACED, "未分班", area.id))
        else:
            klass = await session.get(SchoolClass, key)
            name = class_label(klass.grade, klass.name) if klass is not None else "其他"
            units.append(Unit(key, name, area.id))
    hidden = suppress_counts(counts, threshold=threshold)
    computed = Computed(units=units, counts=counts, minutes=minutes, hidden=hidden, as_of=as_of)
    if memo_key is not None:
        _MEMO[memo_key] = computed
        while len(_MEMO) > MEMO_TABLES:
            _MEMO.popitem(last=False)
    return computed


def _all_quantities() -> list[str]:
    return registry.quantities_of(list(registry.REGISTRY))


def suppress_counts(counts: dict[Hashable, dict[str, int]], *, threshold: int) -> set[tuple[Hashable, str]]:
    """The cells to hide of a table whose rows are ``counts`` (the totals row under :data:`TOTAL`)."""
    values: dict[tuple[Hashable, str], int] = {}
    for key, row in counts.items():
        for q, v in row.items():
            values[(key, q)] = v
    rows = [k for k in counts if k != TOTAL]
    equations: list[Equation] = []
    for q in counts[TOTAL]:
        if all(q in counts[k] for k in rows):
            equations.append(Equation((TOTAL, q), tuple((k, q) for k in rows)))
    for name, parts in registry.PARTITIONS.items():
        parent = registry.BREAKDOWN_PARENT[name]
        for key, row in counts.items():
            if parent in row and all(p in row for p in parts):
                equations.append(Equation((key, parent), tuple((key, p) for p in parts)))
    suppressible = [v for v in values if v[1] not in registry.NOT_SUPPRESSIBLE]
    ties = [((key, a), (key, b)) for key in counts for a, b in registry.TIES if a in counts[key] and b in counts[key]]
    return suppress(values, threshold=threshold, suppressible=suppressible, equations=equations, ties=ties)


# ---- cells -------------------------------------------------------------------------------------------------------


def cell(computed: Computed, key: Hashable, indicator: registry.Indicator) -> Cell:
    row = computed.counts[key]
    definition = indicator.definition
    qs = indicator.quantities
    if any(q not in row for q in qs):
        return Cell(value=None)
    if any((key, q) in computed.hidden for q in qs):
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
    current, before = [
        await compute(session, area, level, p, today=today, threshold=threshold, now=now, max_stale=max_stale)
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
    points = []
    as_of = now
    for month in months:
        computed = await compute(
            session, area, area.level, month, today=today, threshold=threshold, now=now, max_stale=max_stale
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
