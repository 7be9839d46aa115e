"""The statistics' pre-aggregates: each school's figures for the periods the bureau asks about most, kept in
``stats_figures`` (:mod:`api.models.stats_cache`) and refreshed incrementally, so that a county's table reads
300 small rows instead of two years of records.

The figures kept are exactly what :mod:`.queries` computes for one school (:func:`compute_direct`, the same
functions with the same arguments), so a cached answer and a fresh one never differ — only in when they were
computed. Triggers mark a school in ``stats_dirty`` whenever a row its figures read changes (a care record, a
call, an incident or a step of its chain, a child, a guardian link, a pairing, a class, its enrolment or its
calendar); :func:`refresh` recomputes the marked schools and the figures of a day gone by, then deletes the
marks it read (and only those: a mark written meanwhile stays for the next pass).

A read (:func:`figures_for`) takes a school's row when it was judged today and the school has no pending
change older than ``max_stale``; any other school of the area is computed afresh, so an answer is never
staler than that. Its ``as_of``: the oldest pending change among the rows it used (every change before it is
counted), else now.

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


# The kept rows of the schools :ids for one period judged :today, each beside its oldest pending change (since).
_KEPT_ROWS = """
    FROM stats_figures f
    LEFT JOIN (SELECT school_id, min(at) AS since FROM stats_dirty WHERE school_id = ANY(:ids) GROUP BY school_id) d
      ON d.school_id = f.school_id
    WHERE f.school_id = ANY(:ids) AND f.period_kind = :kind AND f.period_key = :key AND f.judged_on = :today
    """

_STORED = "SELECT f.school_id, f.{counts}, f.steps, f.enrolment, d.since, f.xmin::text AS row_version" + _KEPT_ROWS


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


_VERSIONS = "SELECT f.school_id, f.xmin::text AS row_version, d.since" + _KEPT_ROWS


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

_MARKS = sa.text("SELECT id, school_id FROM stats_dirty")
_STALE_DAYS = sa.text("SELECT DISTINCT school_id FROM stats_figures WHERE judged_on <> :today")
_KEPT = sa.text("SELECT DISTINCT school_id FROM stats_figures WHERE judged_on = :today")
_UPSERT = sa.text(
    """
    INSERT INTO stats_figures (
        school_id, period_kind, period_key, judged_on, counts, totals, steps, enrolment, computed_at
    ) VALUES (
        :school_id, :kind, :key, :today, CAST(:counts AS jsonb), CAST(:totals AS jsonb), CAST(:steps AS jsonb),
        :enrolment, :at
    )
    ON CONFLICT (school_id, period_kind, period_key) DO UPDATE SET
        judged_on = excluded.judged_on, counts = excluded.counts, totals = excluded.totals, steps = excluded.steps,
        enrolment = excluded.enrolment, computed_at = excluded.computed_at
    """
)


def _batches(items: Sequence[uuid.UUID], size: int) -> Iterable[list[uuid.UUID]]:
    for at in range(0, len(items), size):
        yield list(items[at : at + size])


async def refresh(sessionmaker: async_sessionmaker[AsyncSession], *, clock: Clock, batch: int = 50) -> dict[str, float]:
    """One pass: recompute the kept periods of every school that changed, that was judged on another day or
    that has none kept yet; then delete the marks read at the start. Returns what it did (for logs)."""
    t0 = time.perf_counter()
    now = clock.now()
    today = periods.shanghai_date(now)
    async with scoped_session(sessionmaker, SYSTEM) as session:  # SYSTEM: every school's figures
        marks = (await session.execute(_MARKS)).all()
        stale = {r[0] for r in await session.execute(_STALE_DAYS, {"today": today})}
        kept = {r[0] for r in await session.execute(_KEPT, {"today": today})}
        schools = [r[0] for r in await session.execute(sa.text("SELECT id FROM school ORDER BY id"))]
    todo = sorted({s for _, s in marks} | stale | (set(schools) - kept), key=str)
    hot = hot_periods(today)
    for ids in _batches(todo, batch):
        rows = []
        # SYSTEM: the refresher works for every caller: each school's figures, counted from all its records.
        async with scoped_session(sessionmaker, SYSTEM) as session:
            for period in hot:
                figures = queries.Figures()
                await compute_direct(session, figures, school_ids=ids, period=period, today=today)
                for school_id in ids:
                    part = dump(figures, school_id)
                    rows.append(
                        {
                            "school_id": school_id,
                            "kind": period.kind.value,
                            "key": period.key,
                            "today": today,
                            "counts": json.dumps(part["counts"]),
                            "totals": json.dumps(part["totals"]),
                            "steps": json.dumps(part["steps"]),
                            "enrolment": part["enrolment"],
                            "at": now,
                        }
                    )
        # The batch's figures and the deletion of its marks commit together, in a short transaction.
        # SYSTEM: the kept figures and the marks are the refresher's own tables, written for every school.
        async with scoped_session(sessionmaker, SYSTEM) as session:
            await session.execute(_UPSERT, rows)
            done = [m for m, s in marks if s in set(ids)]
            if done:
                await session.execute(sa.text("DELETE FROM stats_dirty WHERE id = ANY(:ids)"), {"ids": done})
            hot_keys = [f"{p.kind.value}:{p.key}" for p in hot]
            await session.execute(
                sa.text(
                    "DELETE FROM stats_figures WHERE school_id = ANY(:ids)"
                    " AND (period_kind || ':' || period_key) <> ALL(:hot)"
                ),
                {"ids": ids, "hot": hot_keys},
            )
    elapsed = time.perf_counter() - t0
    if todo:
        log.info("statistics refreshed: %d schools × %d periods in %.1f s", len(todo), len(hot), elapsed)
    return {"schools": len(todo), "periods": len(hot), "seconds": elapsed}
