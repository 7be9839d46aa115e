"""The statistics' pre-aggregates: each school's figures for the periods the bureau asks about most, kept in
``stats_figures`` (:mod:`api.models.stats_cache`) and refreshed incrementally, so that a county's table reads
300 small rows instead of two years of records.

The figures kept are exactly what :mod:`.queries` computes for one school (:func:`compute_direct`, the same
functions with the same arguments), so a cached answer and a fresh one never differ — only in when they were
computed. Triggers mark a school in ``stats_dirty`` whenever a row its figures read changes (a care record, a
call, an incident or a step of its chain, a child, a guardian link, a pairing, a class, its enrolment or its
calendar); each mark carries its writing transaction (``xact``).

Rows are judged on a day (Shanghai): "up to today". In the last ``ahead`` (``stats_ahead_minutes``, 90) before
midnight :func:`refresh` keeps tomorrow's rows too (tomorrow's hot periods, judged on tomorrow) and keeps both
days fresh from the marks, so that the first reads of a day find rows judged that day already there; the rows
of days gone by are deleted.

The watermark is exact: each row records the snapshot it was computed under (one repeatable-read transaction
per batch computes and writes a school's whole day); a row includes a mark iff the mark's transaction is
visible in that snapshot. A change committed while a pass computes is not in its snapshot: its mark stays. The
refresher deletes exactly the marks every kept row of their school includes. One refresher at a time (an
advisory lock; a second one skips its pass and says so).

A read (:func:`figures_for`) takes a school's row when it was judged today and its oldest mark the row does not
include is younger than ``max_stale``; any other school of the area is computed afresh, so an answer is never
staler than that. Its ``as_of``: the oldest mark not included by the rows it used (every change before it is
counted), else now (every change a mark tells of is counted, and every change writes its mark).

The periods kept (:func:`hot_periods`): the current and the previous period of every kind, the last
:data:`HOT_MONTHS` months (the trends) and every month of those periods (a longer period's suppression reads its
months'). Others are computed when asked.
"""

import json
import logging
import time
import uuid
from collections import defaultdict
from collections.abc import Hashable, Iterable, Sequence
from datetime import date, datetime, timedelta
from datetime import time as dt_time
from typing import Any

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from api.clock import Clock
from api.db import scoped_session
from api.models.stats import Period, PeriodKind
from api.scoping import SYSTEM
from api.services.stats import periods, queries

log = logging.getLogger("liushou.stats")

HOT_MONTHS = 13  # a year of monthly trend and the month before it


def hot_periods(today: date) -> list[Period]:
    """The periods kept pre-aggregated on ``today``: current and previous of every kind, the last months."""
    found: dict[tuple[str, str], Period] = {}
    for kind in PeriodKind:
        current = periods.containing(kind, today)
        for p in (current, periods.previous(current)):
            found[(p.kind.value, p.key)] = p
    # The quarterly bulletin's default is the last complete quarter, beside the one before it.
    before = periods.previous(periods.previous(periods.containing(PeriodKind.quarter, today)))
    found[(before.kind.value, before.key)] = before
    month = periods.containing(PeriodKind.month, today)
    for _ in range(HOT_MONTHS):
        found[(month.kind.value, month.key)] = month
        month = periods.previous(month)
    # A longer period's suppression is decided by its months first (:mod:`.across`): keep them too (the previous
    # year's), begun by today.
    for p in [p for p in found.values() if p.kind != PeriodKind.month]:
        for m in periods.months_of(p):
            if m.starts_on <= today:
                found.setdefault((m.kind.value, m.key), m)
    return list(found.values())


async def compute_direct(
    session: AsyncSession, figures: queries.Figures, *, school_ids: Sequence[uuid.UUID], period: Period, today: date
) -> None:
    """Every quantity of ``period`` for these schools, from the living records (:mod:`.queries`)."""
    if not school_ids:
        return
    ids = list(school_ids)
    on = min(period.ends_on, today)
    await queries.children_figures(session, figures, school_ids=ids, on=on, age_on=period.ends_on)
    await queries.enrolment_figures(session, figures, school_ids=ids, on=on)
    await queries.care_figures(
        session, figures, school_ids=ids, starts_on=period.starts_on, ends_on=period.ends_on, today=today
    )
    await queries.aid_figures(session, figures, school_ids=ids, starts_on=period.starts_on, ends_on=period.ends_on)
    await queries.incident_figures(session, figures, school_ids=ids, starts_on=period.starts_on, ends_on=period.ends_on)


def _key(class_id: uuid.UUID | None) -> str | None:
    return str(class_id) if class_id is not None else None


def dump(figures: queries.Figures, school_id: uuid.UUID) -> dict[str, Any]:
    """One school's part of ``figures``, as a ``stats_figures`` row stores it."""
    totals: dict[str, int] = defaultdict(int)
    for (s, _), values in figures.counts.items():
        if s == school_id:
            for q, v in values.items():
                totals[q] += v
    return {
        "counts": [[_key(c), dict(v)] for (s, c), v in figures.counts.items() if s == school_id],
        "totals": dict(totals),
        "steps": [[_key(c), *step] for (s, c), mine in figures.steps.items() if s == school_id for step in mine],
        "enrolment": figures.enrolment.get(school_id),
    }


def load(
    figures: queries.Figures, school_id: uuid.UUID, counts: Any, steps: Any, enrolment: int | None, *, by_class: bool
) -> None:
    """Add a stored school's figures to ``figures``: per class (``counts``), or summed (``counts`` is the
    school's totals, filed under the school with no class: every level above a class adds classes up)."""
    if by_class:
        for class_key, values in counts or []:
            cell = figures.counts[(school_id, uuid.UUID(class_key) if class_key else None)]
            for q, v in values.items():
                cell[q] += v
    elif counts:
        cell = figures.counts[(school_id, None)]
        for q, v in counts.items():
            cell[q] += v
    for class_key, step_no, minutes, met in steps or []:
        figures.steps[(school_id, uuid.UUID(class_key) if class_key else None)].append((step_no, minutes, met))
    if enrolment is not None:
        figures.enrolment[school_id] = enrolment


# The kept rows of the schools :ids for one period judged :today, each beside its oldest change it does not
# include (since): a mark whose writing transaction is not visible in the snapshot the row was computed under.
_SINCE = (
    "(SELECT min(m.at) FROM stats_dirty m WHERE m.school_id = f.school_id"
    " AND NOT txid_visible_in_snapshot(m.xact, f.snapshot::txid_snapshot)) AS since"
)
_KEPT_ROWS = """
    FROM stats_figures f
    WHERE f.school_id = ANY(:ids) AND f.period_kind = :kind AND f.period_key = :key AND f.judged_on = :today
    """

_STORED = (
    "SELECT f.school_id, f.{counts}, f.steps, f.enrolment, " + _SINCE + ", f.xmin::text AS row_version" + _KEPT_ROWS
)


async def figures_for(
    session: AsyncSession,
    *,
    school_ids: Sequence[uuid.UUID],
    period: Period,
    today: date,
    now: datetime,
    max_stale: timedelta,
    by_class: bool = True,
) -> tuple[queries.Figures, datetime, Hashable | None]:
    """The figures of these schools for ``period``: the kept ones where fresh enough, the rest computed now;
    the time every change before which they count; and, when every school came from a kept row, the version
    of those rows (equal versions: equal figures), else None. ``by_class`` False: each school's kept figures
    come summed over its classes (enough for any level above a class, and much less to read)."""
    figures = queries.Figures()
    if not school_ids:
        return figures, now, None
    as_of = now
    versions: list[tuple[uuid.UUID, str]] = []  # each row's version (its xmin: new with every write)
    rows = await session.execute(
        sa.text(_STORED.format(counts="counts" if by_class else "totals")),
        {"ids": list(school_ids), "kind": period.kind.value, "key": period.key, "today": today},
    )
    used: set[uuid.UUID] = set()
    for school_id, counts, steps, enrolment, since, row_version in rows:
        if since is not None and now - since > max_stale:
            continue  # the refresher is behind on this school: count it afresh
        load(figures, school_id, counts, steps, enrolment, by_class=by_class)
        used.add(school_id)
        versions.append((school_id, row_version))
        if since is not None:
            as_of = min(as_of, since)
    missing = [s for s in school_ids if s not in used]
    await compute_direct(session, figures, school_ids=missing, period=period, today=today)
    version = None if missing else (period.kind.value, period.key, today, by_class, tuple(sorted(versions)))
    return figures, as_of, version


_VERSIONS = "SELECT f.school_id, f.xmin::text AS row_version, " + _SINCE + _KEPT_ROWS


async def kept_version(
    session: AsyncSession,
    *,
    school_ids: Sequence[uuid.UUID],
    period: Period,
    today: date,
    now: datetime,
    max_stale: timedelta,
    by_class: bool = True,
) -> tuple[Hashable | None, datetime]:
    """The version :func:`figures_for` would report for these schools, and its ``as_of``, without reading the
    figures themselves (a table computed from that version can be reused as it is)."""
    if not school_ids:
        return None, now
    prefetched = session.info.get(_PREFETCHED_KEY, {}).get(
        _prefetch_key(school_ids, period, today=today, now=now, max_stale=max_stale, by_class=by_class)
    )
    if prefetched is not None:
        return prefetched
    rows = await session.execute(
        sa.text(_VERSIONS),
        {"ids": list(school_ids), "kind": period.kind.value, "key": period.key, "today": today},
    )
    return _version_of(rows, school_ids, period, today=today, now=now, max_stale=max_stale, by_class=by_class)


def _version_of(
    rows: Iterable[Any],
    school_ids: Sequence[uuid.UUID],
    period: Period,
    *,
    today: date,
    now: datetime,
    max_stale: timedelta,
    by_class: bool,
) -> tuple[Hashable | None, datetime]:
    as_of = now
    versions: list[tuple[uuid.UUID, str]] = []
    for school_id, row_version, since in rows:
        if since is not None and now - since > max_stale:
            return None, now
        versions.append((school_id, row_version))
        if since is not None:
            as_of = min(as_of, since)
    if len(versions) != len(set(school_ids)):
        return None, now
    return (period.kind.value, period.key, today, by_class, tuple(sorted(versions))), as_of


# Versions read ahead for several periods at once (:func:`prefetch_versions`), in the session's info, by what
# :func:`kept_version` would be asked: it answers from there (one request reads them once, not per period).
_PREFETCHED_KEY = "liushou.stats.kept_versions"
# The same as _VERSIONS (each kept row's version beside what it does not include), for several periods at once.
_VERSIONS_OF_PERIODS = "SELECT f.period_kind, f.period_key, " + _VERSIONS.removeprefix("SELECT ").replace(
    "f.period_kind = :kind AND f.period_key = :key", "(f.period_kind || ':' || f.period_key) = ANY(:periods)"
)


def _prefetch_key(
    school_ids: Sequence[uuid.UUID], period: Period, *, today: date, now: datetime, max_stale: timedelta, by_class: bool
) -> Hashable:
    return (frozenset(school_ids), period.kind.value, period.key, today, now, max_stale, by_class)


async def prefetch_versions(
    session: AsyncSession,
    *,
    school_ids: Sequence[uuid.UUID],
    periods: Sequence[Period],
    today: date,
    now: datetime,
    max_stale: timedelta,
    by_class: bool = False,
) -> None:
    """Read the kept rows' versions of these schools for every one of ``periods`` in one query; the session's
    :func:`kept_version` calls with the same arguments answer from them (an annual bulletin asks for 30-odd
    periods: the year, its months, the year before and its months, the trend's months)."""
    if not school_ids or not periods:
        return
    rows = await session.execute(
        sa.text(_VERSIONS_OF_PERIODS),
        {"ids": list(school_ids), "periods": [f"{p.kind.value}:{p.key}" for p in periods], "today": today},
    )
    by_period: dict[tuple[str, str], list[Any]] = defaultdict(list)
    for kind, key, school_id, row_version, since in rows:
        by_period[(kind, key)].append((school_id, row_version, since))
    kept = session.info.setdefault(_PREFETCHED_KEY, {})
    if len(kept) > 4096:
        kept.clear()
    for p in periods:
        kept[_prefetch_key(school_ids, p, today=today, now=now, max_stale=max_stale, by_class=by_class)] = _version_of(
            by_period.get((p.kind.value, p.key), []),
            school_ids,
            p,
            today=today,
            now=now,
            max_stale=max_stale,
            by_class=by_class,
        )


# ---- the refresher -------------------------------------------------------------------------------------------

DEFAULT_AHEAD = timedelta(minutes=90)  # the setting stats_ahead_minutes

# One refresher at a time: a session-level advisory lock, held on a connection of its own for the whole pass
# (released by PostgreSQL when that connection dies with its process).
_LOCK_KEY = "hashtext('liushou stats-refresh')"
_TRY_LOCK = sa.text(f"SELECT pg_try_advisory_lock({_LOCK_KEY})")
_UNLOCK = sa.text(f"SELECT pg_advisory_unlock({_LOCK_KEY})")

# The schools whose figures judged on :day must be (re)computed: the hot periods not all kept, or a change
# (a mark) their rows do not include.
_TODO = sa.text(
    """
    SELECT s.id FROM school s
    WHERE (SELECT count(*) FROM stats_figures f WHERE f.school_id = s.id AND f.judged_on = :day
            AND (f.period_kind || ':' || f.period_key) = ANY(:hot)) < :periods
       OR EXISTS (SELECT 1 FROM stats_dirty m JOIN stats_figures f ON f.school_id = m.school_id AND f.judged_on = :day
                  WHERE m.school_id = s.id AND NOT txid_visible_in_snapshot(m.xact, f.snapshot::txid_snapshot))
    ORDER BY s.id
    """
)
_UPSERT = sa.text(
    """
    INSERT INTO stats_figures (
        school_id, period_kind, period_key, judged_on, counts, totals, steps, enrolment, computed_at, snapshot
    ) VALUES (
        :school_id, :kind, :key, :day, CAST(:counts AS jsonb), CAST(:totals AS jsonb), CAST(:steps AS jsonb),
        :enrolment, :at, :snapshot
    )
    ON CONFLICT (school_id, period_kind, period_key, judged_on) DO UPDATE SET
        counts = excluded.counts, totals = excluded.totals, steps = excluded.steps, enrolment = excluded.enrolment,
        computed_at = excluded.computed_at, snapshot = excluded.snapshot
    """
)
# Exactly the marks every kept row of their school (judged today or later) includes; a school with no such
# row keeps its marks.
_INCLUDED_MARKS = """
    DELETE FROM stats_dirty m
    WHERE {schools}
      AND EXISTS (SELECT 1 FROM stats_figures f WHERE f.school_id = m.school_id AND f.judged_on >= :today)
      AND NOT EXISTS (SELECT 1 FROM stats_figures f WHERE f.school_id = m.school_id AND f.judged_on >= :today
                      AND NOT txid_visible_in_snapshot(m.xact, f.snapshot::txid_snapshot))
    """
_DELETE_INCLUDED = sa.text(_INCLUDED_MARKS.format(schools="m.school_id = ANY(:ids)"))
_DELETE_ALL_INCLUDED = sa.text(_INCLUDED_MARKS.format(schools="true"))


def judged_days(now: datetime, *, ahead: timedelta) -> list[date]:
    """The days kept at ``now``: today, and tomorrow too in the last ``ahead`` before Shanghai midnight."""
    today = periods.shanghai_date(now)
    tomorrow = today + timedelta(days=1)
    midnight = datetime.combine(tomorrow, dt_time(0), tzinfo=periods.SHANGHAI)
    return [today, tomorrow] if midnight - now <= ahead else [today]


def _batches(items: Sequence[uuid.UUID], size: int) -> Iterable[list[uuid.UUID]]:
    for at in range(0, len(items), size):
        yield list(items[at : at + size])


async def _refresh_batch(
    sessionmaker: async_sessionmaker[AsyncSession],
    ids: list[uuid.UUID],
    *,
    day: date,
    today: date,
    hot: list[Period],
    now: datetime,
) -> None:
    """The hot periods of these schools judged on ``day``, written with the marks they include deleted: one
    transaction, under one snapshot (repeatable read), so a school's day is whole or absent and the snapshot
    recorded is exactly what the figures count. A change committed meanwhile is not in that snapshot: its
    mark stays for the next pass."""
    # SYSTEM: the refresher works for every caller: each school's figures, counted from all its records, written
    # to the refresher's own tables.
    async with scoped_session(sessionmaker, SYSTEM) as session:
        await session.connection(execution_options={"isolation_level": "REPEATABLE READ"})
        snapshot = await session.scalar(sa.text("SELECT txid_current_snapshot()::text"))
        rows = []
        for period in hot:
            figures = queries.Figures()
            await compute_direct(session, figures, school_ids=ids, period=period, today=day)
            for school_id in ids:
                part = dump(figures, school_id)
                rows.append(
                    {
                        "school_id": school_id,
                        "kind": period.kind.value,
                        "key": period.key,
                        "day": day,
                        "counts": json.dumps(part["counts"]),
                        "totals": json.dumps(part["totals"]),
                        "steps": json.dumps(part["steps"]),
                        "enrolment": part["enrolment"],
                        "at": now,
                        "snapshot": snapshot,
                    }
                )
        await session.execute(_UPSERT, rows)
        await session.execute(
            sa.text(
                "DELETE FROM stats_figures WHERE school_id = ANY(:ids) AND judged_on = :day"
                " AND (period_kind || ':' || period_key) <> ALL(:hot)"
            ),
            {"ids": ids, "day": day, "hot": [f"{p.kind.value}:{p.key}" for p in hot]},
        )
        await session.execute(_DELETE_INCLUDED, {"ids": ids, "today": today})


async def refresh(
    sessionmaker: async_sessionmaker[AsyncSession],
    *,
    clock: Clock,
    batch: int = 50,
    ahead: timedelta = DEFAULT_AHEAD,
) -> dict[str, float]:
    """One pass: the figures judged today (and, in the last ``ahead`` before midnight, tomorrow) of every school
    that changed since its rows were computed or has none kept yet; the rows of days gone by deleted, and the
    marks every kept row includes. Skipped (``skipped`` 1) while another refresher holds the lock. Returns what
    it did (for logs)."""
    t0 = time.perf_counter()
    now = clock.now()
    days = judged_days(now, ahead=ahead)
    today = days[0]
    engine = sessionmaker.kw["bind"]
    async with engine.connect() as lock:
        await lock.execution_options(isolation_level="AUTOCOMMIT")
        if not await lock.scalar(_TRY_LOCK):
            log.info("statistics refresh skipped: another refresher holds the lock")
            return {"schools": 0, "tomorrow": 0, "periods": 0, "seconds": time.perf_counter() - t0, "skipped": 1}
        try:
            done: dict[date, int] = {}
            # SYSTEM: the refresher's own table: the figures of days gone by are nobody's any more.
            async with scoped_session(sessionmaker, SYSTEM) as session:
                await session.execute(sa.text("DELETE FROM stats_figures WHERE judged_on < :today"), {"today": today})
            for day in days:
                hot = hot_periods(day)
                keys = [f"{p.kind.value}:{p.key}" for p in hot]
                # SYSTEM: which schools' figures are missing or behind, across every school.
                async with scoped_session(sessionmaker, SYSTEM) as session:
                    todo = list(
                        (await session.execute(_TODO, {"day": day, "hot": keys, "periods": len(hot)})).scalars()
                    )
                for ids in _batches(todo, batch):
                    await _refresh_batch(sessionmaker, ids, day=day, today=today, hot=hot, now=now)
                done[day] = len(todo)
            # Marks left behind by rows since deleted (yesterday's): included by every row still kept.
            # SYSTEM: the refresher's own table of marks, across every school.
            async with scoped_session(sessionmaker, SYSTEM) as session:
                await session.execute(_DELETE_ALL_INCLUDED, {"today": today})
        finally:
            await lock.scalar(_UNLOCK)
    elapsed = time.perf_counter() - t0
    schools, ahead_count = done[today], done.get(days[-1], 0) if len(days) > 1 else 0
    if schools or ahead_count:
        log.info(
            "statistics refreshed: %d schools judged on %s, %d on %s ahead of midnight, in %.1f s",
            schools, today, ahead_count, days[-1], elapsed,
        )  # fmt: skip
    return {"schools": schools, "tomorrow": ahead_count, "periods": len(hot_periods(today)), "seconds": elapsed}
