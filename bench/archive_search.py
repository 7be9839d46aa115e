"""Archive search and 建档率 at county scale: a school of 2,000 children and a county of 100,000.

    .venv/bin/python -m bench.archive_search [--schools 50] [--per-school 2000] [--runs 30] [--explain]

Starts an embedded PostgreSQL in a temporary folder, migrates it with the app's Alembic migrations, bulk
loads a county (children, guardians, links) with COPY, ANALYZEs, then times the real service functions —
with the scope rules of a school admin or the county bureau applied by the session, exactly as a request
would — and prints p50/p95 per query. ``--explain`` prints EXPLAIN (ANALYZE, BUFFERS) of the slowest SQL
statement of each query.
"""

import argparse
import asyncio
import random
import statistics
import tempfile
import time
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import asyncpg
from sqlalchemy import event
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker, create_async_engine

from api.crypto import FieldCipher
from api.demo import people as demo_people
from api.embedded_pg import asyncpg_url, ensure_database, socket_dir, start_embedded
from api.idcard import Sex
from api.migrations import upgrade_to_head
from api.models.accounts import Role
from api.models.children import ChildFlag, ChildStatus
from api.scoping import Principal, set_principal
from api.services import completeness, identity
from api.services.children import records
from api.services.children import search as children_search
from api.settings import DEV_FIELD_KEYS

NOW = datetime(2026, 11, 24, 2, 0, tzinfo=UTC)
TOWNSHIPS = ("桃洪镇", "小沙江镇", "金石桥镇", "司门前镇", "高平镇")


@dataclass
class County:
    county_id: uuid.UUID
    township_ids: list[uuid.UUID]
    school_ids: list[uuid.UUID]
    sample_child: uuid.UUID


def _rows(rng: random.Random, args: argparse.Namespace, cipher: FieldCipher) -> tuple[County, dict[str, list]]:
    """Every row of the county, generated in memory (deterministic for a seed)."""
    county_id = uuid.uuid4()
    township_ids = [uuid.uuid4() for _ in TOWNSHIPS]
    tables: dict[str, list[tuple[Any, ...]]] = {
        "county": [(county_id, "隆回县", "430524", NOW)],
        "township": [(t, county_id, name, NOW) for t, name in zip(township_ids, TOWNSHIPS, strict=True)],
        "school": [],
        "school_class": [],
        "child": [],
        "guardian": [],
        "child_guardian": [],
    }
    keys: dict[str, tuple[str, str]] = {}
    seen_numbers: set[str | None] = set()
    school_ids = []
    for s in range(args.schools):
        school_id = uuid.uuid4()
        school_ids.append(school_id)
        township_id = township_ids[s % len(township_ids)]
        tables["school"].append(
            (school_id, county_id, township_id, f"{TOWNSHIPS[s % 5]}第{s + 1}完小", "完小", 5000, NOW)
        )
        class_ids = []
        for grade in range(1, 7):
            for number in range(1, 7):
                class_id = uuid.uuid4()
                class_ids.append(class_id)
                tables["school_class"].append((class_id, school_id, grade, f"{number}班", None, True, NOW))
        for _ in range(args.per_school):
            child_id = uuid.uuid4()
            sex = Sex.male if rng.random() < 0.52 else Sex.female
            born = demo_people.birth_date(rng, 2014, 2020)
            name = demo_people.child_name(rng, demo_people.surname(rng), sex=sex)
            if name not in keys:
                keys[name] = identity.name_keys(name)
            pinyin, initials = keys[name]
            has_id = rng.random() > 0.04
            number = demo_people.id_number(rng, born, sex) if has_id else None
            while number in seen_numbers:  # 100,000 children born over 7 years: some numbers repeat
                number = demo_people.id_number(rng, born, sex)
            seen_numbers.add(number)
            stored = identity.store_id_number(cipher, number, today=NOW.date()) if number else None
            left_behind = rng.random() < 0.9
            status = rng.choices(list(ChildStatus), weights=(95, 3, 2))[0]
            tables["child"].append(
                (
                    child_id, school_id, rng.choice(class_ids), name, pinyin, initials, sex.value, born, "汉族",
                    stored.cipher if stored else None, stored.index if stored else None,
                    stored.masked if stored else None, None,
                    demo_people.address(rng) if rng.random() > 0.05 else None, rng.random() < 0.3, "健康",
                    left_behind, "both" if left_behind else "none",
                    born + timedelta(days=400) if rng.random() > 0.03 else None,
                    None, None, None, None, None, None,
                    "good" if rng.random() > 0.03 else None,
                    rng.random() < 0.06, rng.random() < 0.05, rng.random() < 0.1, rng.random() < 0.01,
                    rng.random() < 0.03, None, status.value, None, None, NOW, NOW,
                )
            )  # fmt: skip
            for order, (role, relation) in enumerate((("entrusted_guardian", "祖母"), ("parent_away", "父亲")), 1):
                if rng.random() < 0.02:
                    continue
                guardian_id = uuid.uuid4()
                phone = demo_people.mobile(rng) if rng.random() > 0.06 else None
                tables["guardian"].append((guardian_id, f"{name[0]}某", phone, NOW, NOW))
                tables["child_guardian"].append(
                    (uuid.uuid4(), child_id, guardian_id, role, relation, order, rng.random() > 0.02, NOW)
                )
    county = County(county_id, township_ids, school_ids, sample_child=tables["child"][0][0])
    return county, tables


COLUMNS = {
    "county": ("id", "name", "code", "created_at"),
    "township": ("id", "county_id", "name", "created_at"),
    "school": ("id", "county_id", "township_id", "name", "kind", "pupil_count", "created_at"),
    "school_class": ("id", "school_id", "grade", "name", "head_teacher_id", "is_active", "created_at"),
    "child": (
        "id", "school_id", "class_id", "name", "name_pinyin", "name_initials", "sex", "birth_date", "ethnicity",
        "id_number_cipher", "id_number_index", "id_number_masked", "household_registration", "home_address",
        "is_boarding", "health", "is_left_behind", "parents_away", "left_behind_since", "character", "habits",
        "interests", "study_notes", "guardian_relationship", "parent_contact_frequency", "guardianship_rating",
        "special_hardship", "single_parent", "struggling_learner", "disability", "needs_individual_plan", "notes",
        "status", "status_reason", "status_changed_on", "created_at", "updated_at",
    ),
    "guardian": ("id", "name", "phone", "created_at", "updated_at"),
    "child_guardian": ("id", "child_id", "guardian_id", "role", "relation", "contact_order", "is_active", "created_at"),
}  # fmt: skip


async def load(socket: str, database: str, tables: dict[str, list]) -> None:
    conn = await asyncpg.connect(host=socket, user="postgres", database=database)
    try:
        for table, rows in tables.items():
            await conn.copy_records_to_table(table, records=rows, columns=list(COLUMNS[table]))
        await conn.execute("ANALYZE")
    finally:
        await conn.close()


async def _exists(uri: str, database: str) -> bool:
    conn = await asyncpg.connect(host=socket_dir(uri), user="postgres", database="postgres")
    try:
        return bool(await conn.fetchval("SELECT 1 FROM pg_database WHERE datname = $1", database))
    finally:
        await conn.close()


async def _existing_county(socket: str, database: str) -> County:
    conn = await asyncpg.connect(host=socket, user="postgres", database=database)
    try:
        county_id = await conn.fetchval("SELECT id FROM county")
        townships = [r[0] for r in await conn.fetch("SELECT id FROM township ORDER BY name")]
        schools = await conn.fetch("SELECT id, township_id FROM school ORDER BY name")
        child = await conn.fetchval("SELECT id FROM child WHERE school_id = $1 LIMIT 1", schools[0][0])
        return County(county_id, [schools[0][1], *townships], [s[0] for s in schools], sample_child=child)
    finally:
        await conn.close()


class StatementLog:
    """Records every SQL statement a query sends, with its duration, for --explain."""

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


Query = Callable[[AsyncSession], Awaitable[Any]]


async def time_query(
    maker: async_sessionmaker[AsyncSession], principal: Principal, query: Query, runs: int
) -> tuple[list[float], Any]:
    timings, result = [], None
    for i in range(runs + 3):
        async with maker() as session:
            await set_principal(session, principal)
            t0 = time.perf_counter()
            result = await query(session)
            elapsed = time.perf_counter() - t0
            await session.rollback()  # list queries add an audit entry; nothing is kept
        if i >= 3:
            timings.append(elapsed * 1000)
    return timings, result


def describe(result: Any) -> str:
    if hasattr(result, "count") and hasattr(result, "data"):
        return f"{len(result.data)} of {result.count}"
    if hasattr(result, "schools"):
        return f"{len(result.schools)} schools, rate {result.rate}"
    if hasattr(result, "classes"):
        return f"{len(result.classes)} classes, rate {result.rate}"
    return type(result).__name__


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--schools", type=int, default=50)
    parser.add_argument("--per-school", type=int, default=2000)
    parser.add_argument("--runs", type=int, default=30)
    parser.add_argument("--explain", action="store_true")
    parser.add_argument("--keep", type=Path, help="data folder to keep (and reuse) instead of a temporary one")
    args = parser.parse_args()

    data_dir = args.keep or Path(tempfile.mkdtemp(prefix="liushou-bench-"))
    uri = await asyncio.to_thread(start_embedded, data_dir)
    database = f"bench_{args.schools}x{args.per_school}"
    fresh = not await _exists(uri, database)
    await ensure_database(uri, database)
    url = asyncpg_url(uri, database)
    await upgrade_to_head(url)

    t0 = time.perf_counter()
    if fresh:
        county, tables = _rows(random.Random(20261124), args, FieldCipher.from_config(DEV_FIELD_KEYS))
        t1 = time.perf_counter()
        await load(socket_dir(uri), database, tables)
        print(
            f"generated {len(tables['child']):,} children, {len(tables['guardian']):,} guardians in "
            f"{args.schools} schools ({t1 - t0:.1f} s); COPY + ANALYZE {time.perf_counter() - t1:.1f} s"
        )
    else:
        county = await _existing_county(socket_dir(uri), database)
        print(f"reusing the {args.schools} x {args.per_school} county kept in {data_dir}")
    conn = await asyncpg.connect(host=socket_dir(uri), user="postgres", database=database)
    version, collation = await conn.fetchrow(
        "SELECT current_setting('server_version'), datcollate FROM pg_database WHERE datname = $1", database
    )
    await conn.close()
    print(f"PostgreSQL {version}, collation {collation}")

    engine = create_async_engine(url, pool_size=2, connect_args={"server_settings": {"timezone": "UTC"}})
    maker = async_sessionmaker(engine, expire_on_commit=False)
    log = StatementLog(engine)
    school_id = county.school_ids[0]
    admin = Principal(
        account_id=uuid.uuid4(),
        role=Role.school_admin,
        county_id=county.county_id,
        township_id=county.township_ids[0],
        school_id=school_id,
    )
    bureau = Principal(account_id=uuid.uuid4(), role=Role.county_bureau, county_id=county.county_id)

    def search(**filters: Any) -> Query:
        async def run(session: AsyncSession) -> Any:
            return await children_search.search_children(
                session,
                session.info["liushou_principal"],
                filters=children_search.ChildFilters(**filters),
                offset=0,
                limit=50,
            )

        return run

    queries: list[tuple[str, Principal, Query]] = [
        ("school: list page (50, by class)", admin, search()),
        ("school: name search 子轩", admin, search(q="子轩")),
        ("school: pinyin initials lzx", admin, search(q="lzx")),
        ("school: incomplete files", admin, search(left_behind=True, complete=False)),
        ("school: 建档率 by class", admin, lambda s: completeness.school_completeness(s, school_id=school_id)),
        (
            "school: one child's file",
            admin,
            lambda s: records.read_child(s, admin, child_id=county.sample_child, now=NOW),
        ),
        ("county: list page (50)", bureau, search()),
        ("county: name search 子轩", bureau, search(q="子轩")),
        ("county: pinyin initials lzx", bureau, search(q="lzx")),
        ("county: pinyin zixuan", bureau, search(q="zixuan")),
        ("county: special hardship", bureau, search(flags=(ChildFlag.special_hardship,))),
        ("county: incomplete files", bureau, search(left_behind=True, complete=False)),
        ("county: 建档率 per school", bureau, lambda s: completeness.area_completeness(s)),
    ]
    print(f"\n{'query':<36} {'p50 ms':>8} {'p95 ms':>8} {'max ms':>8}   result")
    print("-" * 90)
    slowest: dict[str, tuple[float, str, Any]] = {}
    for label, principal, query in queries:
        log.entries.clear()
        log.active = True
        timings, result = await time_query(maker, principal, query, args.runs)
        log.active = False
        timings.sort()
        p95 = timings[min(len(timings) - 1, int(round(0.95 * (len(timings) - 1))))]
        print(f"{label:<36} {statistics.median(timings):8.1f} {p95:8.1f} {timings[-1]:8.1f}   {describe(result)}")
        if log.entries:
            slowest[label] = max(log.entries, key=lambda e: e[0])

    if args.explain:
        for label, (_, statement, parameters) in slowest.items():
            async with engine.connect() as conn:
                rows = await conn.exec_driver_sql(f"EXPLAIN (ANALYZE, BUFFERS) {statement}", parameters)
                print(f"\n=== {label}: slowest statement\n" + "\n".join(r[0] for r in rows))
    await engine.dispose()


if __name__ == "__main__":
    asyncio.run(main())
