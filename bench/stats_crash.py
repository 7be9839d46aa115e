"""The statistics' refresher killed with SIGKILL at random instants, while a writer keeps changing the records.

    .venv/bin/python -m bench.stats_crash [--kills 40] [--keep DIR] [--seed 13]     (the small county)
    python -m bench.stats_crash refresher ISO-INSTANT BATCH    (one refresher process; DATABASE_URL from the env)

A refresher process (the same :func:`api.services.stats.preaggregate.refresh` as ``liushou stats-refresh``, its
clock frozen at 23:00 in Shanghai so that it keeps today's figures and tomorrow's, one school a batch) runs in a
loop; a writer adds a completed family call in a random school every few tens of milliseconds. At a random
instant the refresher is killed; the writer pauses and :func:`audit` checks what is kept:

* each school's day is whole or absent: every hot period of that day, all written under one snapshot;
* the marks are consistent: every write (its transaction noted by the writer) that a kept row does not
  include is still marked, and every school's day whose rows include all its marks (nothing pending) holds
  exactly the figures computed now from the records;

then the writer resumes and a new refresher starts. At the end one pass runs to completion: nothing is pending
and every school's days equal the records. ``tests/test_stats_preaggregate_crash.py`` runs a bounded slice.
"""

import argparse
import asyncio
import json
import os
import random
import signal
import subprocess
import sys
import time
import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import asyncpg
import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from api.clock import FrozenClock
from api.db import make_engine, make_sessionmaker, scoped_session
from api.models.stats import PeriodKind
from api.scoping import SYSTEM
from api.services.stats import periods, queries
from api.services.stats.preaggregate import compute_direct, dump, hot_periods, judged_days, refresh
from api.settings import Environment, Settings, get_settings
from bench.county import NOW

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "bench" / "results"
NIGHT = NOW.replace(hour=15, minute=0)  # 23:00 in Shanghai on the county's day: today and tomorrow kept
CHECKED = (PeriodKind.month, PeriodKind.term, PeriodKind.year)  # the periods a written call changes


# ---- the refresher process -----------------------------------------------------------------------------------


def refresher_command(at: datetime, batch: int) -> list[str]:
    return [sys.executable, "-m", "bench.stats_crash", "refresher", at.isoformat(), str(batch)]


async def run_refresher(at: datetime, batch: int) -> None:
    settings = get_settings()
    assert settings.database_url, "DATABASE_URL"
    engine = make_engine(settings.database_url, settings)
    maker = make_sessionmaker(engine)
    clock = FrozenClock(at)
    print("started", flush=True)
    while True:
        done = await refresh(maker, clock=clock, batch=batch)
        print(json.dumps(done), flush=True)
        await asyncio.sleep(0.05)


# ---- the writer ----------------------------------------------------------------------------------------------


@dataclass
class Writer:
    """Completed family calls, each in a random school, at times no booth has yet (November of the county)."""

    conn: asyncpg.Connection
    school_ids: list[uuid.UUID]
    rng: random.Random
    running: asyncio.Event = field(default_factory=asyncio.Event)
    written: int = 0
    writes: list[tuple[uuid.UUID, int]] = field(default_factory=list)  # (school, writing transaction)
    _who: dict[uuid.UUID, tuple[Any, Any, Any]] = field(default_factory=dict)

    async def call(self, school_id: uuid.UUID) -> None:
        if school_id not in self._who:
            self._who[school_id] = tuple(
                await self.conn.fetchrow(
                    "SELECT c.id, l.id, a.id FROM child c JOIN call_line l ON l.school_id = c.school_id"
                    " JOIN account a ON a.school_id = c.school_id AND a.role = 'teacher'"
                    " WHERE c.school_id = $1 AND c.is_left_behind AND c.status = 'enrolled'"
                    " ORDER BY c.id LIMIT 1",
                    school_id,
                )
            )  # type: ignore[assignment]
        child, line, staff = self._who[school_id]
        at = datetime(2026, 11, 1, tzinfo=UTC) + timedelta(minutes=30 * (self.written % 1300))
        self.written += 1
        async with self.conn.transaction():
            await self.conn.execute(
                "INSERT INTO family_call (id, line_id, school_id, child_id, booked_by, booth, starts_at, ends_at,"
                " blocked_until, status, duration_minutes, created_at, updated_at)"
                " VALUES ($1, $2, $3, $4, $5, 1, $6, $7, $8, 'completed', 12, $6, $6)",
                uuid.uuid4(), line, school_id, child, staff, at, at + timedelta(minutes=15), at + timedelta(minutes=20),
            )  # fmt: skip
            xact = await self.conn.fetchval("SELECT txid_current()")
        self.writes.append((school_id, xact))

    async def run(self, stop: asyncio.Event, every: float = 0.05) -> None:
        while not stop.is_set():
            await self.running.wait()
            await self.call(self.rng.choice(self.school_ids))
            await asyncio.sleep(self.rng.uniform(0, 2 * every))


# ---- the audit -----------------------------------------------------------------------------------------------

_DAYS = sa.text(
    """
    SELECT f.school_id, f.judged_on, count(*) AS periods, count(DISTINCT f.snapshot) AS snapshots,
           array_agg(f.period_kind || ':' || f.period_key) AS keys,
           bool_or(EXISTS (SELECT 1 FROM stats_dirty m WHERE m.school_id = f.school_id
                           AND NOT txid_visible_in_snapshot(m.xact, f.snapshot::txid_snapshot))) AS pending
    FROM stats_figures f GROUP BY 1, 2 ORDER BY 1, 2
    """
)
_ROW = sa.text(
    "SELECT counts, totals, steps, enrolment FROM stats_figures"
    " WHERE school_id = :s AND period_kind = :kind AND period_key = :key AND judged_on = :day"
)


def _same(figures: dict[str, Any]) -> Any:
    """Kept figures in an order-free form (their lists follow the order the queries returned rows in)."""
    return (
        {str(c): v for c, v in figures["counts"]},
        figures["totals"],
        sorted(json.dumps(s) for s in figures["steps"]),
        figures["enrolment"],
    )


# Every write a kept row does not include must still be marked: each such write whose mark is gone.
_LOST = sa.text(
    """
    SELECT w.school_id, w.xact, f.judged_on
    FROM unnest(CAST(:schools AS uuid[]), CAST(:xacts AS bigint[])) AS w(school_id, xact)
    JOIN (SELECT DISTINCT school_id, judged_on, snapshot FROM stats_figures) f ON f.school_id = w.school_id
    WHERE NOT txid_visible_in_snapshot(w.xact, f.snapshot::txid_snapshot)
      AND NOT EXISTS (SELECT 1 FROM stats_dirty m WHERE m.school_id = w.school_id AND m.xact = w.xact)
    """
)


@dataclass
class Audit:
    days: int = 0  # schools' days kept
    verified: int = 0  # of which nothing pending, compared with the records
    pending: int = 0
    problems: list[str] = field(default_factory=list)


async def audit(maker: async_sessionmaker[AsyncSession], *, at: datetime, writes: list[tuple[uuid.UUID, int]]) -> Audit:
    """What is kept, checked (while nobody writes): whole days; every write a kept row does not include still
    marked; and the figures of every day with nothing pending equal to the records'."""
    found = Audit()
    allowed = set(judged_days(at, ahead=timedelta(minutes=90)))
    # SYSTEM: the audit reads every school's kept figures and records.
    async with scoped_session(maker, SYSTEM) as session:
        lost = await session.execute(_LOST, {"schools": [w[0] for w in writes], "xacts": [w[1] for w in writes]})
        for school_id, xact, day in lost:
            found.problems.append(f"{school_id} {day}: the mark of transaction {xact} is gone, its change not counted")
        for school_id, day, count, snapshots, keys, pending in (await session.execute(_DAYS)).all():
            found.days += 1
            expected = {f"{p.kind.value}:{p.key}" for p in hot_periods(day)}
            if day not in allowed:
                found.problems.append(f"{school_id} {day}: a day not kept at {at}")
            if set(keys) != expected or count != len(expected) or snapshots != 1:
                found.problems.append(f"{school_id} {day}: {count} periods under {snapshots} snapshots")
                continue
            if pending:
                found.pending += 1
                continue
            found.verified += 1
            for period in hot_periods(day):
                if period.kind not in CHECKED or periods.containing(period.kind, day) != period:
                    continue
                fresh = queries.Figures()
                await compute_direct(session, fresh, school_ids=[school_id], period=period, today=day)
                want = json.loads(json.dumps(dump(fresh, school_id)))
                args = {"s": school_id, "kind": period.kind.value, "key": period.key, "day": day}
                row = (await session.execute(_ROW, args)).one()
                got = {"counts": row.counts, "totals": row.totals, "steps": row.steps, "enrolment": row.enrolment}
                if _same(got) != _same(want):
                    found.problems.append(f"{school_id} {day} {period.key}: kept figures differ from the records")
    return found


# ---- the chaos -----------------------------------------------------------------------------------------------


@dataclass
class Chaos:
    writes: int = 0  # the writer's transactions
    kills: int = 0
    passes: int = 0  # passes the killed processes completed
    audits: list[Audit] = field(default_factory=list)
    seconds: float = 0.0


async def chaos(
    database_url: str,
    school_ids: list[uuid.UUID],
    *,
    kills: int,
    logdir: Path,
    rng: random.Random,
    alive: tuple[float, float] = (0.5, 5.0),
    burst: tuple[float, float] = (0.0, 1.5),
    batch: int = 1,
    at: datetime = NIGHT,
) -> Chaos:
    """Refresher processes killed ``kills`` times, each a random ``alive`` seconds after it started; the records
    change for the first ``burst`` seconds of each life (then the passes catch up, so that some days are found
    with nothing pending); an audit after each kill and after a last pass run to completion."""
    t0 = time.perf_counter()
    settings = Settings(environment=Environment.test, database_url=database_url)
    engine = make_engine(database_url, settings)
    maker = make_sessionmaker(engine)
    url = engine.url
    conn = await asyncpg.connect(
        host=url.query["host"], user=url.username or "postgres", database=url.database
    )  # the writer's own connection
    env = {**os.environ, "DATABASE_URL": database_url, "LIUSHOU_ENVIRONMENT": "test"}
    writer = Writer(conn, school_ids, rng)
    stop = asyncio.Event()
    writing = asyncio.create_task(writer.run(stop))
    result = Chaos()
    try:
        for n in range(kills):
            log = logdir / f"refresher{n}.log"
            with log.open("wb") as out:
                proc = await asyncio.create_subprocess_exec(
                    *refresher_command(at, batch), env=env, stdout=out, stderr=subprocess.STDOUT, cwd=ROOT
                )
            began = time.monotonic()
            while "started" not in log.read_text() and time.monotonic() - began < 30:  # noqa: ASYNC110 (imports)
                await asyncio.sleep(0.05)
            life, writing_for = rng.uniform(*alive), rng.uniform(*burst)
            writer.running.set()
            await asyncio.sleep(min(life, writing_for))
            writer.running.clear()
            await asyncio.sleep(max(0.0, life - writing_for))
            proc.send_signal(signal.SIGKILL)
            await proc.wait()
            writer.running.clear()
            await asyncio.sleep(0.1)  # the writer's statement in flight, if any
            result.kills += 1
            result.passes += sum(1 for line in log.read_text().splitlines() if line.startswith("{"))
            result.audits.append(await audit(maker, at=at, writes=writer.writes))
        stop.set()
        writer.running.set()
        await writing
        # The dead refreshers' sessions end as PostgreSQL notices; then one pass to completion.
        for _ in range(100):
            done = await refresh(maker, clock=FrozenClock(at))
            if not done.get("skipped"):
                break
            await asyncio.sleep(0.1)
        final = await audit(maker, at=at, writes=writer.writes)
        marks = await conn.fetchval("SELECT count(*) FROM stats_dirty")
        if final.pending or marks:
            final.problems.append(f"after a last pass: {final.pending} days pending, {marks} marks left")
        result.audits.append(final)
        result.writes = len(writer.writes)
    finally:
        stop.set()
        writer.running.set()
        writing.cancel()
        await conn.close()
        await engine.dispose()
    result.seconds = time.perf_counter() - t0
    return result


async def main() -> None:
    import tempfile

    from api.embedded_pg import asyncpg_url
    from bench.county import prepare

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--kills", type=int, default=40)
    parser.add_argument("--keep", type=Path, help="data folder of the small county (built there if need be)")
    parser.add_argument("--seed", type=int, default=13)
    parser.add_argument("--no-write", action="store_true")
    args = parser.parse_args()
    load_before = os.getloadavg()
    data_dir = args.keep or Path(tempfile.mkdtemp(prefix="liushou-county-"))
    uri, database, county = await prepare(data_dir, small=True, seed=args.seed)
    logdir = Path(tempfile.mkdtemp(prefix="liushou-stats-crash-"))
    result = await chaos(
        asyncpg_url(uri, database), county.school_ids, kills=args.kills, logdir=logdir, rng=random.Random()
    )
    problems = [p for a in result.audits for p in a.problems]
    verified = sum(a.verified for a in result.audits[:-1])
    load_after = os.getloadavg()
    text = "\n".join(
        [
            "# The statistics' refresher killed at random instants (small county)",
            "",
            f"`.venv/bin/python -m bench.stats_crash --kills {args.kills}` — 2 cores shared: load average "
            f"{load_before[0]:.1f} before, {load_after[0]:.1f} after.",
            "",
            f"- {result.kills} SIGKILLs of a refresher process (killed 0.5–5 s after it started, one school a batch, "
            "today and tomorrow kept), a completed call written in a random school every ~50 ms for the first "
            "0–1.5 s of each life; "
            f"{result.passes} passes completed between kills; {result.seconds:.0f} s in all.",
            f"- After each kill: {sum(a.days for a in result.audits[:-1])} schools' days audited, every one whole; "
            f"{verified} with nothing pending compared with the records (month, term, year); each of the "
            f"{result.writes} writes, whenever a kept row did not include it, found still marked.",
            f"- After a last pass: {result.audits[-1].verified} schools' days, all equal to the records, no mark left.",
            f"- Problems: {len(problems)}" + ("" if not problems else ": " + "; ".join(problems[:5])),
        ]
    )
    print(text)
    if not args.no_write:
        (RESULTS / "stats-crash.md").write_text(text + "\n")


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == "refresher":
        asyncio.run(run_refresher(datetime.fromisoformat(sys.argv[2]), int(sys.argv[3])))
    else:
        asyncio.run(main())
