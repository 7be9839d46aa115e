"""The statistics' pre-aggregates: an answer read from them is the answer computed from the records, a change
marks its school, the refresher counts it, and an answer is never staler than the setting allows."""

import asyncio
import json
import logging
import os
import sys
import uuid
from datetime import UTC, date, datetime, timedelta
from typing import Any
from urllib.parse import unquote, urlsplit

import asyncpg
import pytest

from api.db import scoped_session
from api.models.accounts import Role
from api.models.stats import Level, PeriodKind
from api.scoping import Principal
from api.services.stats import build_table, build_trend, periods
from api.services.stats.preaggregate import compute_direct, dump, figures_for, hot_periods, refresh
from api.services.stats.queries import Figures
from bench.county import NOW, Size, build

TINY = Size(townships=2, schools=4, left_behind=160)


def _socket_and_name(database_url: str) -> tuple[str, str]:
    parts = urlsplit(database_url)
    return unquote(parts.query.split("host=", 1)[1].split("&", 1)[0]), parts.path.lstrip("/")


@pytest.fixture
async def county(app: Any, database_url: str) -> Any:
    socket, name = _socket_and_name(database_url)
    return await build(socket, name, seed=7, size=TINY)


@pytest.fixture
async def db(database_url: str) -> Any:
    socket, name = _socket_and_name(database_url)
    conn = await asyncpg.connect(host=socket, user="postgres", database=name)
    yield conn
    await conn.close()


def bureau(county: Any) -> Principal:
    return Principal(account_id=county.bureau_id, role=Role.county_bureau, county_id=county.county_id)


async def table(app: Any, county: Any, level: Level, kind: PeriodKind, *, now: datetime, fresh: bool) -> Any:
    """The bureau's table, from the pre-aggregates (``fresh`` False) or all from the records."""
    async with scoped_session(app.state.sessionmaker, bureau(county)) as session:
        return await build_table(
            session,
            bureau(county),
            level=level,
            period=periods.containing(kind, now.date()),
            area_id=None,
            indicators=None,
            now=now,
            **({"max_stale": None} if fresh else {}),
        )


def figures(answer: Any) -> Any:
    return answer.model_dump(exclude={"as_of"})


async def test_an_answer_from_the_pre_aggregates_is_the_answer_from_the_records(app, county, db, clock):
    first = await refresh(app.state.sessionmaker, clock=clock)
    assert first["schools"] == TINY.schools
    kept = await db.fetchval("SELECT count(*) FROM stats_figures")
    assert kept == TINY.schools * len(hot_periods(NOW.date()))
    for level in (Level.county, Level.township, Level.school):
        for kind in (PeriodKind.month, PeriodKind.term, PeriodKind.year):
            cached = await table(app, county, level, kind, now=NOW, fresh=False)
            direct = await table(app, county, level, kind, now=NOW, fresh=True)
            assert figures(cached) == figures(direct), (level, kind)
    async with scoped_session(app.state.sessionmaker, bureau(county)) as session:
        trend = {
            fresh: await build_trend(
                session,
                bureau(county),
                indicators=None,
                from_key="2025-12",
                to_key="2026-11",
                area_id=None,
                now=NOW,
                **({"max_stale": None} if fresh else {}),
            )  # fmt: skip
            for fresh in (False, True)
        }
    assert figures(trend[False]) == figures(trend[True])
    # Nothing changed: the next pass recomputes nothing.
    again = await refresh(app.state.sessionmaker, clock=clock)
    assert again["schools"] == 0


async def completed_call(db: Any, school_id: uuid.UUID, at: datetime) -> None:
    """A completed family call of one of the school's left-behind children, written as the app would."""
    child, line, staff = await db.fetchrow(
        "SELECT c.id, l.id, a.id FROM child c JOIN call_line l ON l.school_id = c.school_id"
        " JOIN account a ON a.school_id = c.school_id AND a.role = 'teacher'"
        " WHERE c.school_id = $1 AND c.is_left_behind AND c.status = 'enrolled' ORDER BY c.id LIMIT 1",
        school_id,
    )
    await db.execute(
        "INSERT INTO family_call (id, line_id, school_id, child_id, booked_by, booth, starts_at, ends_at,"
        " blocked_until, status, duration_minutes, created_at, updated_at)"
        " VALUES ($1, $2, $3, $4, $5, 1, $6, $7, $8, 'completed', 12, $6, $6)",
        uuid.uuid4(), line, school_id, child, staff, at, at + timedelta(minutes=15), at + timedelta(minutes=20),
    )  # fmt: skip


async def test_a_change_marks_its_school_and_the_refresher_counts_it(app, county, db, clock):
    await refresh(app.state.sessionmaker, clock=clock)
    school = county.school_ids[0]
    before = await table(app, county, Level.school, PeriodKind.month, now=NOW, fresh=True)
    await completed_call(db, school, datetime(2026, 11, 20, 11, 0, tzinfo=UTC))
    marks = await db.fetch("SELECT school_id FROM stats_dirty")
    assert [m["school_id"] for m in marks] == [school]
    changed = await table(app, county, Level.school, PeriodKind.month, now=NOW, fresh=True)
    assert figures(changed) != figures(before)
    # The mark is recent: the kept figures are still used, and the answer says since when a change waits.
    await db.execute("UPDATE stats_dirty SET at = $1", NOW - timedelta(minutes=1))
    pending = await table(app, county, Level.school, PeriodKind.month, now=NOW, fresh=False)
    assert figures(pending) == figures(before)
    assert pending.as_of == NOW - timedelta(minutes=1)
    done = await refresh(app.state.sessionmaker, clock=clock)
    assert done["schools"] == 1
    assert await db.fetchval("SELECT count(*) FROM stats_dirty") == 0
    after = await table(app, county, Level.school, PeriodKind.month, now=NOW, fresh=False)
    assert figures(after) == figures(changed)
    assert after.as_of == NOW


async def test_a_school_whose_change_waits_too_long_is_counted_afresh(app, county, db, clock):
    await refresh(app.state.sessionmaker, clock=clock)
    school = county.school_ids[1]
    await completed_call(db, school, datetime(2026, 11, 21, 11, 0, tzinfo=UTC))
    await db.execute("UPDATE stats_dirty SET at = $1", NOW - timedelta(minutes=6))  # past the 5 allowed
    answer = await table(app, county, Level.school, PeriodKind.month, now=NOW, fresh=False)
    direct = await table(app, county, Level.school, PeriodKind.month, now=NOW, fresh=True)
    assert figures(answer) == figures(direct)
    assert answer.as_of == NOW


async def test_figures_judged_on_another_day_are_not_used(app, county, db, clock):
    await refresh(app.state.sessionmaker, clock=clock)
    # A day later nothing kept was judged today: the answer is computed, and the refresher renews every school.
    tomorrow = NOW + timedelta(days=1)
    answer = await table(app, county, Level.county, PeriodKind.month, now=tomorrow, fresh=False)
    direct = await table(app, county, Level.county, PeriodKind.month, now=tomorrow, fresh=True)
    assert figures(answer) == figures(direct)
    clock.advance(timedelta(days=1))
    done = await refresh(app.state.sessionmaker, clock=clock)
    assert done["schools"] == TINY.schools
    rows = await db.fetch("SELECT DISTINCT judged_on FROM stats_figures")
    assert [r["judged_on"] for r in rows] == [tomorrow.date()]


async def test_the_kept_figures_hold_no_child(app, county, db, clock):
    await refresh(app.state.sessionmaker, clock=clock)
    children = {str(r["id"]) for r in await db.fetch("SELECT id FROM child")}
    for counts, steps in await db.fetch("SELECT counts, steps FROM stats_figures"):
        text = json.dumps([json.loads(counts), json.loads(steps)])
        assert not any(child in text for child in children)


# ---- the night: tomorrow kept ahead, the exact watermark, one refresher --------------------------------------

SHANGHAI_NIGHT = datetime(2026, 11, 30, 14, 0, tzinfo=UTC)  # 22:00 on the last day of November in Shanghai


def at_night(hour: int, minute: int, second: int = 0) -> datetime:
    """An instant of the night of 30 November → 1 December (Shanghai), ``hour`` ≥ 24 being the next day."""
    return SHANGHAI_NIGHT + timedelta(hours=hour - 22, minutes=minute, seconds=second)


async def kept(app: Any, county: Any, period: Any, *, today: Any, now: datetime) -> tuple[Any, Any, Any]:
    """The figures of every school for ``period`` as a read finds them (kept where fresh), its as_of and version."""
    async with scoped_session(app.state.sessionmaker, bureau(county)) as session:
        found, as_of, version = await figures_for(
            session, school_ids=county.school_ids, period=period, today=today, now=now, max_stale=timedelta(minutes=5)
        )
    return [dump(found, s) for s in county.school_ids], as_of, version


async def computed(app: Any, county: Any, period: Any, *, today: Any) -> Any:
    """The same figures computed now from the records."""
    async with scoped_session(app.state.sessionmaker, bureau(county)) as session:
        found = Figures()
        await compute_direct(session, found, school_ids=county.school_ids, period=period, today=today)
    return [dump(found, s) for s in county.school_ids]


async def mark_dated(db: Any, at: datetime) -> None:
    """The marks just written dated by the test's clock (the database's now() is the machine's)."""
    await db.execute("UPDATE stats_dirty SET at = $1 WHERE at > $1", at)


async def test_tomorrow_is_kept_before_midnight_and_read_at_once_after_it(app, county, db, clock):
    today, tomorrow = date(2026, 11, 30), date(2026, 12, 1)
    hot_tomorrow = hot_periods(tomorrow)
    assert {(p.kind, p.key) for p in hot_tomorrow} != {(p.kind, p.key) for p in hot_periods(today)}
    checked = [p for p in hot_tomorrow if p.kind in (PeriodKind.month, PeriodKind.term, PeriodKind.year)]
    # 21:00: only today's figures.
    clock.set(at_night(21, 0))
    first = await refresh(app.state.sessionmaker, clock=clock)
    assert (first["schools"], first["tomorrow"]) == (TINY.schools, 0)
    assert await db.fetchval("SELECT count(*) FROM stats_figures WHERE judged_on = $1", tomorrow) == 0
    # 22:31, within the 90 minutes before midnight: tomorrow's rows appear, with tomorrow's periods.
    clock.set(at_night(22, 31))
    ahead = await refresh(app.state.sessionmaker, clock=clock)
    assert (ahead["schools"], ahead["tomorrow"]) == (0, TINY.schools)
    keys = {(r["period_kind"], r["period_key"]) for r in await db.fetch(
        "SELECT period_kind, period_key FROM stats_figures WHERE judged_on = $1", tomorrow
    )}  # fmt: skip
    assert keys == {(p.kind.value, p.key) for p in hot_tomorrow} and ("month", "2026-12") in keys
    for period in checked:
        assert (await kept(app, county, period, today=tomorrow, now=clock.now()))[0] == await computed(
            app, county, period, today=tomorrow
        )
    # 23:59: a call in one school; the pass at 23:59:30 renews that school on both days, and only it.
    school = county.school_ids[2]
    await completed_call(db, school, datetime(2026, 11, 25, 11, 0, tzinfo=UTC))  # a call of last week, written late
    await mark_dated(db, at_night(23, 59))
    clock.set(at_night(23, 59, 30))
    late = await refresh(app.state.sessionmaker, clock=clock)
    assert (late["schools"], late["tomorrow"]) == (1, 1)
    assert await db.fetchval("SELECT count(*) FROM stats_dirty") == 0
    # 23:59:50, after the last pass: another call, pending at midnight.
    await completed_call(db, county.school_ids[3], datetime(2026, 11, 26, 11, 0, tzinfo=UTC))
    await mark_dated(db, at_night(23, 59, 50))
    # 00:00:01: every read is of kept rows (a version), the pending change says since when; the figures are
    # the records' except that one change.
    clock.set(at_night(24, 0, 1))
    pending = county.school_ids.index(county.school_ids[3])
    for period in checked:
        figures_kept, as_of, version = await kept(app, county, period, today=tomorrow, now=clock.now())
        fresh = await computed(app, county, period, today=tomorrow)
        assert version is not None and as_of == at_night(23, 59, 50)
        assert [f for i, f in enumerate(figures_kept) if i != pending] == [
            f for i, f in enumerate(fresh) if i != pending
        ]
    month = periods.containing(PeriodKind.month, today)
    with_call = await computed(app, county, month, today=tomorrow)
    assert (await kept(app, county, month, today=tomorrow, now=clock.now()))[0] != with_call
    # The whole table through the service, from kept rows too: the 23:59 call is in it.
    answer = await table_at(app, county, Level.county, month, now=clock.now(), fresh=False)
    assert answer.as_of == at_night(23, 59, 50)
    # The first pass after midnight: the one school changed since, nothing else; yesterday's rows are gone.
    clock.set(at_night(24, 1))
    after = await refresh(app.state.sessionmaker, clock=clock)
    assert (after["schools"], after["tomorrow"]) == (1, 0)
    assert [r["judged_on"] for r in await db.fetch("SELECT DISTINCT judged_on FROM stats_figures")] == [tomorrow]
    assert await db.fetchval("SELECT count(*) FROM stats_dirty") == 0
    for period in checked:
        figures_kept, as_of, version = await kept(app, county, period, today=tomorrow, now=clock.now())
        assert version is not None and as_of == clock.now()
        assert figures_kept == await computed(app, county, period, today=tomorrow)
    cached = await table_at(app, county, Level.township, month, now=clock.now(), fresh=False)
    direct = await table_at(app, county, Level.township, month, now=clock.now(), fresh=True)
    assert figures(cached) == figures(direct)


async def table_at(app: Any, county: Any, level: Level, period: Any, *, now: datetime, fresh: bool) -> Any:
    async with scoped_session(app.state.sessionmaker, bureau(county)) as session:
        return await build_table(
            session, bureau(county), level=level, period=period, area_id=None, indicators=None, now=now,
            **({"max_stale": None} if fresh else {}),
        )  # fmt: skip


async def test_a_change_committed_while_a_pass_computes_waits_for_the_next(app, county, db, clock, database_url):
    """A real concurrent writer: its transaction (a call, then a lock the pass will wait on) is open when the
    pass takes its snapshot and commits while the pass computes. The rows written do not include it, so its
    mark stays (and the answer says since when); the next pass counts it."""
    await refresh(app.state.sessionmaker, clock=clock)
    school = county.school_ids[0]
    await completed_call(db, school, datetime(2026, 11, 20, 11, 0, tzinfo=UTC))  # committed before the pass
    month = periods.containing(PeriodKind.month, NOW.date())
    before_writer = await computed(app, county, month, today=NOW.date())
    socket, name = _socket_and_name(database_url)
    writer = await asyncpg.connect(host=socket, user="postgres", database=name)
    try:
        writing = writer.transaction()
        await writing.start()
        await completed_call(writer, school, datetime(2026, 11, 10, 11, 0, tzinfo=UTC))  # another week's
        await writer.execute("LOCK TABLE incident IN ACCESS EXCLUSIVE MODE")
        passing = asyncio.create_task(refresh(app.state.sessionmaker, clock=clock))
        while not await db.fetchval(
            "SELECT count(*) FROM pg_stat_activity WHERE datname = $1 AND wait_event_type = 'Lock'", name
        ):
            assert not passing.done(), passing
            await asyncio.sleep(0.05)
        await writing.commit()
        done = await passing
    finally:
        await writer.close()
    assert done["schools"] == 1
    marks = await db.fetch("SELECT school_id, xact FROM stats_dirty")
    assert [m["school_id"] for m in marks] == [school]  # the writer's: the first mark, included, is gone
    await db.execute("UPDATE stats_dirty SET at = $1", NOW - timedelta(minutes=1))
    figures_kept, as_of, version = await kept(app, county, month, today=NOW.date(), now=NOW)
    assert figures_kept == before_writer and as_of == NOW - timedelta(minutes=1) and version is not None
    assert figures_kept != await computed(app, county, month, today=NOW.date())
    again = await refresh(app.state.sessionmaker, clock=clock)
    assert again["schools"] == 1 and await db.fetchval("SELECT count(*) FROM stats_dirty") == 0
    figures_kept, as_of, _ = await kept(app, county, month, today=NOW.date(), now=NOW)
    assert figures_kept == await computed(app, county, month, today=NOW.date()) and as_of == NOW


async def test_one_refresher_at_a_time(app, county, db, clock, caplog, database_url):
    await db.execute("SELECT pg_advisory_lock(hashtext('liushou stats-refresh'))")
    with caplog.at_level(logging.INFO, logger="liushou.stats"):
        skipped = await refresh(app.state.sessionmaker, clock=clock)
    assert skipped["skipped"] == 1 and skipped["schools"] == 0
    assert "another refresher holds the lock" in caplog.text
    assert await db.fetchval("SELECT count(*) FROM stats_figures") == 0
    # The command says so too.
    env = {**os.environ, "DATABASE_URL": database_url, "LIUSHOU_ENVIRONMENT": "test"}
    cli = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "api.cli", "stats-refresh", "--once", env=env,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT,
    )  # fmt: skip
    out, _ = await asyncio.wait_for(cli.communicate(), 60)
    assert cli.returncode == 0 and "skipped: another stats-refresh holds the lock" in out.decode(), out.decode()
    await db.execute("SELECT pg_advisory_unlock(hashtext('liushou stats-refresh'))")
    done = await refresh(app.state.sessionmaker, clock=clock)
    assert done["schools"] == TINY.schools and "skipped" not in done
