"""The statistics' pre-aggregates: an answer read from them is the answer computed from the records, a change
marks its school, the refresher counts it, and an answer is never staler than the setting allows."""

import json
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any
from urllib.parse import unquote, urlsplit

import asyncpg
import pytest

from api.db import scoped_session
from api.models.accounts import Role
from api.models.stats import Level, PeriodKind
from api.scoping import Principal
from api.services.stats import build_table, build_trend, periods
from api.services.stats.preaggregate import hot_periods, refresh
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
