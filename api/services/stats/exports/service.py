"""The exports as the API serves them: the tables and trends from :func:`api.services.stats.build_table` /
:func:`~api.services.stats.build_trend` — the very answers of ``GET /stats/table`` and ``GET /stats/trend``,
with their suppression — written to files off the event loop, each export audited.

The figures are read on the statistics session (a replica when one is configured); the audit entry is
written on the request's own session, the primary, which commits before the response. A finished file is kept
(:mod:`.kept`) by the tables it was written from and the caller's scope: the same download again is served
from it — still read from the figures first (to know it is the same), still audited.
"""

import asyncio
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from typing import Any, cast

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncSession
from sqlmodel import col

from api import audit
from api.models.organisations import County, School, Township
from api.models.stats import Level, Period, StatsTable, StatsTrend
from api.scoping import Principal
from api.services.stats import answers, build_table, build_trend, periods
from api.services.stats import indicators as registry
from api.services.stats.exports import bulletin, charts, layout, table_csv, workbook
from api.services.stats.exports.kept import WRITER_VERSION, ExportStore, export_key, versioned_key
from api.services.stats.service import (
    DEFAULT_MAX_STALE,
    Area,
    check_level,
    check_period,
    resolve_area,
)

# The levels of a workbook for an area: its own, then every level below it.
WORKBOOK_LEVELS = {
    Level.county: [Level.county, Level.township, Level.school],
    Level.township: [Level.township, Level.school],
    Level.school: [Level.school, Level.klass],
}
# The monthly trends the workbook's and the bulletin's charts draw (those the registry defines).
TREND_KEYS = (
    "left_behind",
    "archive_rate",
    "pairing_rate",
    "care_talk_rate",
    "care_home_visit_rate",
    "care_guardian_contact_rate",
    "care_family_call_rate",
    "incidents",
    "chain_s1_on_time_rate",
    "chain_s2_on_time_rate",
    "chain_s3_on_time_rate",
)
TREND_MONTHS = 12


@dataclass(frozen=True)
class Export:
    file_name: str  # the Chinese name the bureau files it under
    ascii_name: str  # the fallback for clients that do not read RFC 5987
    media_type: str
    content: bytes


def trend_keys() -> list[str]:
    return [k for k in TREND_KEYS if k in registry.REGISTRY]


def trend_span(period: Period, today: date) -> tuple[str, str]:
    """The twelve months ending with the period's last month (or this month, if the period is running)."""
    last = periods.month(min(period.ends_on, today).year, min(period.ends_on, today).month)
    first = last
    for _ in range(TREND_MONTHS - 1):
        if first.starts_on.year == periods.MIN_YEAR and first.starts_on.month == 1:
            break  # the calendar's first month: no trend before it
        first = periods.previous(first)
    return first.key, last.key


def bulletin_parts() -> tuple[dict[str, list[str]], set[str]]:
    """How the bulletin's text tells the breakdowns of a count: the first breakdown of each after it
    ("其中…": left-behind children by how their parents are away, incidents by category); the others (sex,
    age band, severity …) only in the tables."""
    parts: dict[str, list[str]] = {}
    quiet: set[str] = set()
    for name, keys in registry.PARTITIONS.items():
        parent = registry.BREAKDOWN_PARENT[name]
        if parent in parts:
            quiet.update(keys)
        else:
            parts[parent] = list(keys)
    return parts, quiet


async def _tables(
    session: AsyncSession,
    principal: Principal,
    levels: Sequence[Level],
    *,
    period: Period,
    area_id: uuid.UUID | None,
    now: datetime,
    threshold: int,
    max_stale: timedelta | None = DEFAULT_MAX_STALE,
) -> list[StatsTable]:
    return [
        await build_table(
            session,
            principal,
            level=level,
            period=period,
            area_id=area_id,
            indicators=None,
            now=now,
            threshold=threshold,
            max_stale=max_stale,
        )
        for level in levels
    ]


async def _trend(
    session: AsyncSession,
    principal: Principal,
    *,
    period: Period,
    area_id: uuid.UUID,
    now: datetime,
    threshold: int,
    max_stale: timedelta | None = DEFAULT_MAX_STALE,
) -> StatsTrend:
    first, last = trend_span(period, periods.shanghai_date(now))
    return await build_trend(
        session,
        principal,
        indicators=trend_keys(),
        from_key=first,
        to_key=last,
        area_id=area_id,
        now=now,
        threshold=threshold,
        max_stale=max_stale,
    )


async def _written(
    store: ExportStore | None,
    key: str,
    write: Any,
    *args: Any,
) -> bytes:
    """The file of ``key``: kept, else written now off the event loop (``write(*args)``) and kept."""
    if store is not None and (content := await asyncio.to_thread(store.get, key)) is not None:
        return content
    content = cast(bytes, await asyncio.to_thread(write, *args))
    if store is not None:
        await asyncio.to_thread(store.put, key, content)
    return content


def _audit(
    session: AsyncSession, area: Area, period: Period, threshold: int, *, export: str, levels: Sequence[Level]
) -> None:
    audit.record(
        session,
        action="stats.export",
        resource_type=area.level.value,
        resource_id=area.id,
        school_id=area.id if area.level == Level.school else None,
        county_id=area.id if area.level == Level.county else None,
        detail={
            "format": export,
            "period_kind": period.kind.value,
            "period": period.key,
            "levels": [level.value for level in levels],
            "threshold": threshold,
        },
    )


async def _versions(
    session: AsyncSession,
    principal: Principal,
    area: Area,
    levels: Sequence[Level],
    *,
    period: Period,
    now: datetime,
    threshold: int,
    max_stale: timedelta | None,
    trend: bool,
) -> tuple[str | None, datetime]:
    """What the export's tables (and trend) would be computed from (:func:`.answers.versions`), as a
    key, and the ``as_of`` they would say; None when one of them is not from kept rows alone (then the tables
    themselves are the key). Every period's kept versions are read in one query."""
    months: list[Period] = []
    if trend:
        first, last = trend_span(period, periods.shanghai_date(now))
        months = periods.month_range(first, last)
    return await answers.versions(
        session,
        principal,
        area,
        levels=levels,
        table_periods=[period],
        trend_months=months,
        now=now,
        threshold=threshold,
        max_stale=max_stale,
    )


async def _kept(store: ExportStore | None, key: str | None) -> bytes | None:
    if store is None or key is None:
        return None
    return await asyncio.to_thread(store.get, key)


def _ask(kind: str, principal: Principal, area: Area, period: Period, threshold: int, **more: Any) -> answers.Ask:
    return answers.Ask.of(
        kind,
        principal,
        area.id,
        period_kind=period.kind.value,
        period_key=period.key,
        threshold=threshold,
        writer=WRITER_VERSION,
        **more,
    )


async def _file_with_trend(
    stats_session: AsyncSession,
    session: AsyncSession,
    principal: Principal,
    area: Area,
    levels: Sequence[Level],
    ask: answers.Ask,
    *,
    write: Callable[[list[StatsTable], StatsTrend], bytes],
    extra: str = "",
    period: Period,
    now: datetime,
    threshold: int,
    max_stale: timedelta | None,
    store: ExportStore | None,
    warm: bool,
) -> answers.Served:
    """A file of the tables of ``levels`` beside the twelve months' trend (the workbook, the bulletin): kept
    while fresh enough, else re-stamped, else found among the kept files by its version, else written."""

    async def version_of() -> tuple[str | None, datetime]:
        return await _versions(
            stats_session,
            principal,
            area,
            levels,
            period=period,
            now=now,
            threshold=threshold,
            max_stale=max_stale,
            trend=True,
        )

    async def build() -> tuple[bytes, datetime, str | None]:
        version, as_of = await version_of()
        key = versioned_key(ask.kind, principal, version, extra=extra) if version is not None else None
        content = await _kept(store, key)
        if content is None:
            tables = await _tables(
                stats_session,
                principal,
                levels,
                period=period,
                area_id=area.id,
                now=now,
                threshold=threshold,
                max_stale=max_stale,
            )
            trend = await _trend(
                stats_session,
                principal,
                period=period,
                area_id=area.id,
                now=now,
                threshold=threshold,
                max_stale=max_stale,
            )
            as_of = min([*(t.as_of for t in tables), trend.as_of])
            key = key or export_key(ask.kind, principal, tables, trend, extra=extra)
            content = await _written(store, key, write, tables, trend)
        return content, as_of, version

    return await answers.answer(
        session, ask, now=now, max_stale=max_stale, build=build, version_of=version_of, warm=warm
    )


async def workbook_answer(
    stats_session: AsyncSession,
    session: AsyncSession,
    principal: Principal,
    area: Area,
    *,
    period: Period,
    now: datetime,
    threshold: int,
    max_stale: timedelta | None = DEFAULT_MAX_STALE,
    store: ExportStore | None = None,
    warm: bool = False,
) -> answers.Served:
    """The workbook's file: kept while fresh enough, else re-stamped or written (:func:`.answers.answer`)."""
    return await _file_with_trend(
        stats_session,
        session,
        principal,
        area,
        WORKBOOK_LEVELS[area.level],
        _ask("xlsx", principal, area, period, threshold),
        write=workbook.workbook,
        period=period,
        now=now,
        threshold=threshold,
        max_stale=max_stale,
        store=store,
        warm=warm,
    )


async def export_workbook(
    stats_session: AsyncSession,
    session: AsyncSession,
    principal: Principal,
    *,
    period: Period,
    area_id: uuid.UUID | None,
    now: datetime,
    threshold: int,
    max_stale: timedelta | None = DEFAULT_MAX_STALE,
    store: ExportStore | None = None,
) -> Export:
    """The workbook of the area (the caller's own unless named): a sheet for its level and each level below,
    and the twelve months' trends with their charts."""
    check_period(period, periods.shanghai_date(now))
    area = await resolve_area(stats_session, principal, area_id)
    served = await workbook_answer(
        stats_session,
        session,
        principal,
        area,
        period=period,
        now=now,
        threshold=threshold,
        max_stale=max_stale,
        store=store,
    )
    _audit(session, area, period, threshold, export="xlsx", levels=WORKBOOK_LEVELS[area.level])
    await session.flush()
    return Export(
        file_name=f"{area.name}留守儿童关爱工作统计表（{period.label}）.xlsx",
        ascii_name=f"statistics-{period.key}.xlsx",
        media_type=workbook.MEDIA_TYPE,
        content=served.body,
    )


async def parent_names(session: AsyncSession, table: StatsTable) -> dict[uuid.UUID, str]:
    """The names of the units a table's rows belong to (a school's township, a class's school)."""
    ids = {row.parent_id for row in table.rows if row.parent_id is not None}
    if not ids:
        return {}
    if table.level == Level.township:
        query = sa.select(col(County.id), col(County.name)).where(col(County.id).in_(ids))
    elif table.level == Level.school:
        query = sa.select(col(Township.id), col(Township.name)).where(col(Township.id).in_(ids))
    elif table.level == Level.klass:
        query = sa.select(col(School.id), col(School.name)).where(col(School.id).in_(ids))
    else:
        return {}
    return {row[0]: row[1] for row in await session.execute(query)}


async def csv_answer(
    stats_session: AsyncSession,
    session: AsyncSession,
    principal: Principal,
    area: Area,
    *,
    level: Level,
    period: Period,
    now: datetime,
    threshold: int,
    max_stale: timedelta | None = DEFAULT_MAX_STALE,
    store: ExportStore | None = None,
    warm: bool = False,
    real_now: datetime | None = None,
) -> answers.Served:
    """One level's CSV file: kept while fresh enough, else re-stamped or written (:func:`.answers.answer`);
    ``real_now`` as there (the file itself says no time, so the warm-up builds it ahead of midnight too)."""

    async def version_of() -> tuple[str | None, datetime]:
        return await _versions(
            stats_session,
            principal,
            area,
            [level],
            period=period,
            now=now,
            threshold=threshold,
            max_stale=max_stale,
            trend=False,
        )

    async def build() -> tuple[bytes, datetime, str | None]:
        version, as_of = await version_of()
        key = versioned_key("csv", principal, version) if version is not None else None
        content = await _kept(store, key)
        if content is None:
            (table,) = await _tables(
                stats_session,
                principal,
                [level],
                period=period,
                area_id=area.id,
                now=now,
                threshold=threshold,
                max_stale=max_stale,
            )
            as_of = table.as_of
            names = await parent_names(stats_session, table)
            parents = ";".join(f"{k}={v}" for k, v in sorted(names.items(), key=lambda kv: str(kv[0])))
            key = key or export_key("csv", principal, [table], None, extra=parents)
            content = await _written(store, key, table_csv.table_csv, table, names)
        return content, as_of, version

    ask = _ask("csv", principal, area, period, threshold, level=level.value)
    return await answers.answer(
        session, ask, now=now, max_stale=max_stale, build=build, version_of=version_of, warm=warm, real_now=real_now
    )


async def export_csv(
    stats_session: AsyncSession,
    session: AsyncSession,
    principal: Principal,
    *,
    level: Level,
    period: Period,
    area_id: uuid.UUID | None,
    now: datetime,
    threshold: int,
    max_stale: timedelta | None = DEFAULT_MAX_STALE,
    store: ExportStore | None = None,
) -> Export:
    """One level of the area as CSV, with the same cells and suppression marks as the workbook."""
    check_period(period, periods.shanghai_date(now))
    area = await resolve_area(stats_session, principal, area_id)
    check_level(area, level)
    served = await csv_answer(
        stats_session,
        session,
        principal,
        area,
        level=level,
        period=period,
        now=now,
        threshold=threshold,
        max_stale=max_stale,
        store=store,
    )
    _audit(session, area, period, threshold, export="csv", levels=[level])
    await session.flush()
    level_name = layout.LEVEL_NAMES[level]
    return Export(
        file_name=f"{area.name}各{level_name}统计表（{period.label}）.csv",
        ascii_name=f"statistics-{level.value}-{period.key}.csv",
        media_type=table_csv.MEDIA_TYPE,
        content=served.body,
    )


def _render_bulletin(tables: list[StatsTable], trend: StatsTrend, font: str | None) -> bytes:
    parts, quiet = bulletin_parts()
    drawn = charts.trend_charts(trend, font=font)
    return bulletin.render(tables, drawn, parts=parts, quiet=quiet)


async def bulletin_answer(
    stats_session: AsyncSession,
    session: AsyncSession,
    principal: Principal,
    area: Area,
    *,
    period: Period,
    now: datetime,
    threshold: int,
    max_stale: timedelta | None = DEFAULT_MAX_STALE,
    store: ExportStore | None = None,
    warm: bool = False,
) -> answers.Served:
    """The bulletin's file: kept while fresh enough, else re-stamped or written (:func:`.answers.answer`)."""
    font = await asyncio.to_thread(charts.cjk_font)
    return await _file_with_trend(
        stats_session,
        session,
        principal,
        area,
        WORKBOOK_LEVELS[area.level][1:],
        _ask("docx", principal, area, period, threshold, font=font),
        write=lambda tables, trend: _render_bulletin(tables, trend, font),
        extra=f"font={font}",
        period=period,
        now=now,
        threshold=threshold,
        max_stale=max_stale,
        store=store,
        warm=warm,
    )


async def export_bulletin(
    stats_session: AsyncSession,
    session: AsyncSession,
    principal: Principal,
    *,
    period: Period,
    area_id: uuid.UUID | None,
    now: datetime,
    threshold: int,
    max_stale: timedelta | None = DEFAULT_MAX_STALE,
    store: ExportStore | None = None,
) -> Export:
    """The quarterly or annual bulletin of the area: its figures from the tables of the levels below it
    (townships and schools for a county), the lagging units named, the twelve months' charts."""
    check_period(period, periods.shanghai_date(now))
    area = await resolve_area(stats_session, principal, area_id)
    served = await bulletin_answer(
        stats_session,
        session,
        principal,
        area,
        period=period,
        now=now,
        threshold=threshold,
        max_stale=max_stale,
        store=store,
    )
    _audit(session, area, period, threshold, export="docx", levels=WORKBOOK_LEVELS[area.level][1:])
    await session.flush()
    return Export(
        file_name=bulletin.file_name_of(area.name, period),
        ascii_name=f"bulletin-{period.key}.docx",
        media_type=bulletin.MEDIA_TYPE,
        content=served.body,
    )
