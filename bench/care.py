"""The care rhythm at a school's scale: 2,000 children with two years of care records.

    .venv/bin/python -m bench.care [--children 2000] [--runs 40] [--keep DIR] [--explain]

Starts an embedded PostgreSQL in a temporary folder, migrates it, bulk loads one school (36 classes with
their head teachers, 60 more teachers as proxy parents of most children, two school years of terms and
holidays, incidents, and two years of care records — monthly talks and guardian contacts, home visits at the
term points, weekly calls with the parents — each done or missed at random) with COPY, ANALYZEs, then times
the real service functions with the scope rules of the caller applied by the session, as a request would:

* a head teacher's to-do list (``GET /care/todo``);
* the school admin's to-do list (every teacher's overdue items);
* the school's monthly compliance (``GET /care/coverage`` for November: every class and the school);
* done / due / overdue per class for the month (``GET /schools/{id}/care/status?group=class``).

Beside each, the **floor**: the same SQL statements the service sent, replayed with their parameters straight
through asyncpg on one connection (no ORM, no session, no scope rules, no Python shaping) — what PostgreSQL
alone costs, so the difference is our stack's share. p50 / p95 / max in milliseconds.
"""

import argparse
import asyncio
import json
import random
import statistics
import tempfile
import time
import uuid
from collections.abc import Awaitable, Callable
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

import asyncpg
from sqlalchemy import event
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker, create_async_engine

from api.embedded_pg import asyncpg_url, ensure_database, socket_dir, start_embedded
from api.migrations import upgrade_to_head
from api.models.accounts import Role
from api.models.care_rhythm import StatusGroup
from api.scoping import Principal, set_principal
from api.services.care import coverage, todo

NOW = datetime(2026, 11, 24, 2, 0, tzinfo=UTC)  # Tuesday 10:00 in Shanghai
TODAY = date(2026, 11, 24)
START = date(2024, 11, 25)  # two years of records
TERMS = [
    ("2024年秋季学期", date(2024, 9, 1), date(2025, 1, 17)),
    ("2025年春季学期", date(2025, 2, 17), date(2025, 7, 4)),
    ("2025年秋季学期", date(2025, 9, 1), date(2026, 1, 16)),
    ("2026年春季学期", date(2026, 2, 23), date(2026, 7, 3)),
    ("2026年秋季学期", date(2026, 9, 1), date(2027, 1, 20)),
]
HOLIDAYS = [
    ("国庆节", date(2025, 10, 1), date(2025, 10, 8)),
    ("劳动节", date(2026, 5, 1), date(2026, 5, 5)),
    ("国庆节", date(2026, 10, 1), date(2026, 10, 7)),
]
CLASSES = 36
PROXY_TEACHERS = 60


def _days(lo: date, hi: date) -> list[date]:
    return [lo + timedelta(days=i) for i in range((hi - lo).days + 1)]


def _rows(rng: random.Random, children: int) -> tuple[dict[str, Any], dict[str, list[tuple[Any, ...]]]]:
    county, township, school = uuid.uuid4(), uuid.uuid4(), uuid.uuid4()
    admin = uuid.uuid4()
    t: dict[str, list[tuple[Any, ...]]] = {
        "county": [(county, "隆回县", "430524", NOW)],
        "township": [(township, county, "桃洪镇", NOW)],
        "school": [(school, county, township, "桃洪镇中心小学", "中心小学", 4000, NOW)],
        "account": [(admin, "school_admin", "校长", county, township, school, True, NOW, False)],
        "school_class": [],
        "child": [],
        "care_pairing": [],
        "care_record": [],
        "school_term": [(uuid.uuid4(), school, n, a, b, NOW) for n, a, b in TERMS],
        "school_holiday": [(uuid.uuid4(), school, n, a, b, NOW) for n, a, b in HOLIDAYS],
        "incident": [],
    }
    heads, classes = [], []
    for c in range(CLASSES):
        head, klass = uuid.uuid4(), uuid.uuid4()
        heads.append(head)
        classes.append(klass)
        t["account"].append((head, "teacher", f"班主任{c + 1}", county, township, school, True, NOW, False))
        t["school_class"].append((klass, school, c // 6 + 1, f"{c % 6 + 1}班", head, True, NOW))
    proxies = [uuid.uuid4() for _ in range(PROXY_TEACHERS)]
    for i, p in enumerate(proxies):
        t["account"].append((p, "teacher", f"教师{i + 1}", county, township, school, True, NOW, False))
    every_day = _days(START, TODAY - timedelta(days=1))
    seq = 0
    for i in range(children):
        child = uuid.uuid4()
        klass = classes[i % CLASSES]
        flags = (rng.random() < 0.06, rng.random() < 0.05, rng.random() < 0.03)
        created = datetime.combine(START - timedelta(days=rng.randrange(0, 300)), datetime.min.time(), UTC)
        t["child"].append(
            (child, school, klass, f"学生{i}", f"xuesheng{i}", "xs", "male", date(2016, 1, 1), "汉族",
             False, True, "both", "good", flags[0], flags[1], False, False, flags[2], "enrolled", created, created)
        )  # fmt: skip
        if rng.random() < 0.85:
            t["care_pairing"].append(
                (uuid.uuid4(), school, child, "proxy_parent", rng.choice(proxies), date(2025, 9, 1), NOW)
            )
        diligence = rng.uniform(0.5, 0.98)  # how reliably this child's carers keep the rhythm
        author = heads[i % CLASSES]
        plan: list[tuple[str, date, str | None]] = []
        month = date(START.year, START.month, 1)
        while month < TODAY:
            nxt = date(month.year + (month.month == 12), month.month % 12 + 1, 1)
            days = [d for d in _days(month, nxt - timedelta(days=1)) if START <= d < TODAY]
            if days:
                for kind in ("talk", "guardian_contact"):
                    if rng.random() < diligence:
                        plan.append((kind, rng.choice(days), "phone" if kind == "guardian_contact" else None))
            month = nxt
        for _, a, b in TERMS:
            third = (b - a).days // 3
            for k in range(3):
                lo = a + timedelta(days=k * third)
                window = [d for d in _days(lo, lo + timedelta(days=third - 1)) if START <= d < TODAY]
                if window and rng.random() < diligence:
                    plan.append(("home_visit", rng.choice(window), None))
        for w in range(0, len(every_day), 7):
            if rng.random() < diligence:
                plan.append(("parent_contact", every_day[w + rng.randrange(0, min(7, len(every_day) - w))],
                             rng.choice(["phone", "video", "video", "letter"])))  # fmt: skip
        for kind, on, channel in sorted(plan, key=lambda p: p[1]):
            seq += 1
            content: dict[str, Any] = {"summary": "记录"}
            if channel:
                content["channel"] = channel
            at = datetime.combine(on, datetime.min.time(), UTC) + timedelta(hours=3)
            h = f"{seq:064x}"
            t["care_record"].append(
                (uuid.uuid4(), school, child, kind, on, author, at, json.dumps(content), 1, at, seq, h, h, h)
            )
        if rng.random() < 0.01:
            at = NOW - timedelta(days=rng.randrange(1, 60))
            t["incident"].append(
                (uuid.uuid4(), uuid.uuid4().hex[:12], county, township, school, child, klass, "missing", "severe",
                 "走失", "学校", at, "occurred", "寻找", at, author, "closed", "{}", at)
            )  # fmt: skip
    ids = {"school": school, "county": county, "township": township, "admin": admin, "head": heads[0]}
    return ids, t


COLUMNS = {
    "county": ("id", "name", "code", "created_at"),
    "township": ("id", "county_id", "name", "created_at"),
    "school": ("id", "county_id", "township_id", "name", "kind", "pupil_count", "created_at"),
    "account": (
        "id", "role", "display_name", "county_id", "township_id", "school_id", "is_active", "created_at",
        "is_counsellor",
    ),
    "school_class": ("id", "school_id", "grade", "name", "head_teacher_id", "is_active", "created_at"),
    "child": (
        "id", "school_id", "class_id", "name", "name_pinyin", "name_initials", "sex", "birth_date", "ethnicity",
        "is_boarding", "is_left_behind", "parents_away", "guardianship_rating", "special_hardship", "single_parent",
        "struggling_learner", "disability", "needs_individual_plan", "status", "created_at", "updated_at",
    ),
    "care_pairing": ("id", "school_id", "child_id", "kind", "staff_id", "started_on", "created_at"),
    "care_record": (
        "id", "school_id", "child_id", "kind", "occurred_on", "author_id", "created_at", "content", "version",
        "updated_at", "chain_seq", "prev_hash", "content_hash", "row_hash",
    ),
    "school_term": ("id", "school_id", "name", "starts_on", "ends_on", "created_at"),
    "school_holiday": ("id", "school_id", "name", "starts_on", "ends_on", "created_at"),
    "incident": (
        "id", "case_code", "county_id", "township_id", "school_id", "child_id", "class_id", "category", "severity",
        "summary", "location", "occurred_at", "time_basis", "first_actions", "reported_at", "reported_by_id",
        "status", "policy", "updated_at",
    ),
}  # fmt: skip


async def load(socket: str, database: str, tables: dict[str, list[tuple[Any, ...]]]) -> None:
    conn = await asyncpg.connect(host=socket, user="postgres", database=database)
    try:
        for table, rows in tables.items():
            if rows:
                await conn.copy_records_to_table(table, records=rows, columns=list(COLUMNS[table]))
        # As a table autovacuum has visited: statistics, and the visibility map index-only scans rely on.
        await conn.execute("VACUUM ANALYZE")
    finally:
        await conn.close()


async def existing(socket: str, database: str) -> dict[str, Any] | None:
    conn = await asyncpg.connect(host=socket, user="postgres", database=database)
    try:
        school = await conn.fetchrow("SELECT id, county_id, township_id FROM school")
        if school is None:
            return None
        admin = await conn.fetchval("SELECT id FROM account WHERE role = 'school_admin'")
        head = await conn.fetchval("SELECT head_teacher_id FROM school_class ORDER BY grade, name LIMIT 1")
        return {"school": school[0], "county": school[1], "township": school[2], "admin": admin, "head": head}
    finally:
        await conn.close()


class StatementLog:
    """Every SQL statement a timed call sends, with its parameters, for the floor and for --explain."""

    def __init__(self, engine: Any) -> None:
        self.entries: list[tuple[float, str, Any]] = []
        self.active = False
        sync = engine.sync_engine
        event.listen(sync, "before_cursor_execute", self._before)
        event.listen(sync, "after_cursor_execute", self._after)

    def _before(self, conn: Any, cursor: Any, statement: str, parameters: Any, context: Any, many: bool) -> None:
        conn.info["bench_t0"] = time.perf_counter()

    def _after(self, conn: Any, cursor: Any, statement: str, parameters: Any, context: Any, many: bool) -> None:
        if self.active:
            self.entries.append((time.perf_counter() - conn.info["bench_t0"], statement, parameters))


Call = Callable[[AsyncSession], Awaitable[Any]]


def pct(timings: list[float], q: float) -> float:
    ordered = sorted(timings)
    return ordered[min(len(ordered) - 1, int(round(q * (len(ordered) - 1))))]


async def time_call(
    maker: async_sessionmaker[AsyncSession], principal: Principal, call: Call, runs: int
) -> tuple[list[float], Any]:
    timings, result = [], None
    for i in range(runs + 3):
        async with maker() as session:
            await set_principal(session, principal)
            t0 = time.perf_counter()
            result = await call(session)
            elapsed = time.perf_counter() - t0
            await session.rollback()
        if i >= 3:
            timings.append(elapsed * 1000)
    return timings, result


async def time_floor(conn: asyncpg.Connection, statements: list[tuple[str, Any]], runs: int) -> list[float]:
    """The same statements, with the same parameters, straight through asyncpg (prepared, as asyncpg does)."""
    timings = []
    for i in range(runs + 3):
        t0 = time.perf_counter()
        for statement, parameters in statements:
            await conn.fetch(statement, *(parameters or ()))
        if i >= 3:
            timings.append((time.perf_counter() - t0) * 1000)
    return timings


def describe(result: Any) -> str:
    if hasattr(result, "items") and hasattr(result, "staff"):
        return f"{len(result.items)} own items, {sum(s.overdue for s in result.staff)} staff overdue"
    if hasattr(result, "judged_until"):
        school = next(r for r in result.rows if r.class_id is None)
        rates = ", ".join(f"{k.kind.value} {k.rate}" for k in school.kinds)
        return f"{len(result.rows)} rows; paired {school.paired_rate}; {rates}"
    if hasattr(result, "rows"):
        return f"{len(result.rows)} rows"
    return type(result).__name__


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--children", type=int, default=2000)
    parser.add_argument("--runs", type=int, default=40)
    parser.add_argument("--explain", action="store_true")
    parser.add_argument("--only", help="time only the calls whose label contains this")
    parser.add_argument("--keep", type=Path, help="data folder to keep (and reuse) instead of a temporary one")
    args = parser.parse_args()

    data_dir = args.keep or Path(tempfile.mkdtemp(prefix="liushou-bench-care-"))
    uri = await asyncio.to_thread(start_embedded, data_dir)
    database = f"bench_care_{args.children}"
    await ensure_database(uri, database)
    url = asyncpg_url(uri, database)
    await upgrade_to_head(url)
    ids = await existing(socket_dir(uri), database)
    if ids is None:
        t0 = time.perf_counter()
        ids, tables = _rows(random.Random(20261124), args.children)
        t1 = time.perf_counter()
        await load(socket_dir(uri), database, tables)
        print(
            f"generated {len(tables['child']):,} children, {len(tables['care_record']):,} care records, "
            f"{len(tables['care_pairing']):,} pairings ({t1 - t0:.1f} s); "
            f"COPY + ANALYZE {time.perf_counter() - t1:.1f} s"
        )
    else:
        print(f"reusing the school kept in {data_dir}")
    conn = await asyncpg.connect(host=socket_dir(uri), user="postgres", database=database)
    print(f"PostgreSQL {await conn.fetchval('SHOW server_version')}")

    engine = create_async_engine(url, pool_size=2, connect_args={"server_settings": {"timezone": "UTC"}})
    maker = async_sessionmaker(engine, expire_on_commit=False)
    log = StatementLog(engine)
    school = ids["school"]
    area = {"county_id": ids["county"], "township_id": ids["township"], "school_id": school}
    admin = Principal(account_id=ids["admin"], role=Role.school_admin, **area)
    head = Principal(account_id=ids["head"], role=Role.teacher, **area)
    november = (date(2026, 11, 1), date(2026, 11, 30))

    calls: list[tuple[str, Principal, Call]] = [
        ("to-do: a head teacher", head, lambda s: todo.todo_list(s, head, today=TODAY)),
        ("to-do: the school admin (all staff)", admin, lambda s: todo.todo_list(s, admin, today=TODAY)),
        (
            "monthly compliance: school + classes",
            admin,
            lambda s: coverage.coverage(
                s, school_ids=[school], starts_on=november[0], ends_on=november[1], today=TODAY
            ),
        ),
        (
            "status per class, November",
            admin,
            lambda s: todo.status_report(
                s,
                admin,
                school_id=school,
                starts_on=november[0],
                ends_on=november[1],
                today=TODAY,
                group=StatusGroup.class_,
            ),
        ),  # fmt: skip
    ]
    print(f"\n{'call':<40} {'p50 ms':>8} {'p95 ms':>8} {'max ms':>8} {'floor p50':>10} {'floor p95':>10}  result")
    print("-" * 132)
    lines = []
    slowest: dict[str, tuple[float, str, Any]] = {}
    for label, principal, call in calls:
        if args.only and args.only not in label:
            continue
        log.entries.clear()
        log.active = True
        await call_once(maker, principal, call)
        statements = [(stmt, params) for _, stmt, params in log.entries]
        log.active = False
        timings, result = await time_call(maker, principal, call, args.runs)
        floor = await time_floor(conn, statements, args.runs)
        line = (
            f"{label:<40} {statistics.median(timings):8.1f} {pct(timings, 0.95):8.1f} {max(timings):8.1f} "
            f"{statistics.median(floor):10.1f} {pct(floor, 0.95):10.1f}  {describe(result)} ({len(statements)} SQL)"
        )
        print(line)
        lines.append(line)
        if log.entries:
            slowest[label] = max(log.entries, key=lambda e: e[0])
    if args.explain:
        for label, (_, statement, parameters) in slowest.items():
            plan = await conn.fetch(f"EXPLAIN (ANALYZE, BUFFERS) {statement}", *(parameters or ()))
            print(f"\n=== {label}: slowest statement\n" + "\n".join(r[0] for r in plan))
    await conn.close()
    await engine.dispose()


async def call_once(maker: async_sessionmaker[AsyncSession], principal: Principal, call: Call) -> None:
    async with maker() as session:
        await set_principal(session, principal)
        await call(session)
        await session.rollback()


if __name__ == "__main__":
    asyncio.run(main())
