"""Care records at school scale: verifying a school's hash chain, writing records while other teachers write
(every link of a school waits for the chain head), and reading a child's records.

    .venv/bin/python -m bench.care_chain [--children 2000] [--records 100000] [--writers 20]

Starts an embedded PostgreSQL in a temporary folder, seeds one school with ``--children`` children and
``--records`` care records over two school years — a valid chain built with the service's own hashing, one
correction in fifty — and calls the real endpoints over ASGI. Prints timings.
"""

import argparse
import asyncio
import random
import shutil
import statistics
import tempfile
import time
import uuid
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import sqlalchemy as sa

from api.clock import FrozenClock
from api.db import scoped_session
from api.embedded_pg import asyncpg_url, ensure_database, release, start_embedded
from api.main import create_app
from api.models.accounts import Account, LoginSession, Role
from api.models.care import CareChainHead, CareKind, CareRecord, CareRecordVersion
from api.models.children import Child, Sex
from api.models.organisations import County, School, SchoolClass, Township
from api.scoping import SYSTEM
from api.security import issue_access_token
from api.services.care import chain
from api.settings import Environment, Settings

NOW = datetime(2026, 11, 24, 2, 0, tzinfo=UTC)
TALK = {
    "place": "教室",
    "topics": "学习和生活",
    "mood": "good",
    "mood_note": None,
    "follow_up_needed": False,
    "follow_up": None,
}


async def seed(app: Any, children: int, records: int) -> dict[str, Any]:
    rng = random.Random(20261124)
    async with scoped_session(app.state.sessionmaker, SYSTEM) as s:  # seeding: nobody is signed in
        county = County(name="隆回县", code="430524")
        s.add(county)
        await s.flush()
        township = Township(county_id=county.id, name="桃洪镇")
        s.add(township)
        await s.flush()
        school = School(county_id=county.id, township_id=township.id, name="桃洪镇中心小学", pupil_count=children * 3)
        s.add(school)
        await s.flush()
        admin = Account(
            role=Role.school_admin,
            display_name="周校长",
            county_id=county.id,
            township_id=township.id,
            school_id=school.id,
        )
        teachers = [
            Account(
                role=Role.teacher,
                display_name=f"教师{i}",
                county_id=county.id,
                township_id=township.id,
                school_id=school.id,
            )
            for i in range(40)
        ]
        s.add_all([admin, *teachers])
        classes = [SchoolClass(school_id=school.id, grade=g, name=f"{n}班") for g in range(1, 7) for n in range(1, 5)]
        s.add_all(classes)
        await s.flush()
        kids = [
            Child(
                school_id=school.id,
                class_id=classes[i % len(classes)].id,
                name=f"学生{i}",
                sex=Sex.male if i % 2 else Sex.female,
                birth_date=date(2015 + i % 5, 1 + i % 12, 1 + i % 28),
            )
            for i in range(children)
        ]
        s.add_all(kids)
        await s.flush()
        tokens = []
        for account in (admin, *teachers):
            login = LoginSession(account_id=account.id, method="password", created_at=NOW)
            s.add(login)
            await s.flush()
            tokens.append(
                issue_access_token(
                    app.state.settings, account_id=account.id, session_id=login.id, role=account.role.value, now=NOW
                )
            )
        ids = {"school": school.id, "child": kids[0].id, "admin_token": tokens[0], "teacher_tokens": tokens[1:]}
        teacher_ids = [t.id for t in teachers]
        kid_rows = [(k.id, k.birth_date) for k in kids]

    start = NOW - timedelta(days=730)
    prev, seq = chain.GENESIS, 0
    record_rows: list[dict[str, Any]] = []
    version_rows: list[dict[str, Any]] = []
    kinds = [CareKind.talk] * 6 + [CareKind.guardian_contact] * 3 + [CareKind.home_visit]
    for i in range(records):
        child_id, _ = kid_rows[i % len(kid_rows)]
        created_at = start + timedelta(seconds=i * (730 * 86400 // max(records, 1)))
        occurred_on = created_at.date()
        kind = rng.choice(kinds)
        content = (
            TALK
            if kind == CareKind.talk
            else {"channel": "phone", "with_whom": None, "summary": "电话沟通"}
            if kind == CareKind.guardian_contact
            else {"met": "祖母", "living_conditions": "整洁", "guardian_situation": "身体尚可", "notes": None}
        )
        record_id, author = uuid.uuid4(), rng.choice(teacher_ids)
        corrected = i % 50 == 0 and kind == CareKind.talk
        current = {**content, "mood": "fair"} if corrected else content
        seq += 1
        ch = chain.record_content_hash(
            record_id=record_id,
            school_id=ids["school"],
            child_id=child_id,
            kind=kind,
            author_id=author,
            created_at=created_at,
            first_state_hash=chain.state_hash(occurred_on, content),
        )
        row = chain.link_hash(seq, prev, ch)
        record_rows.append(
            {
                "id": record_id,
                "school_id": ids["school"],
                "child_id": child_id,
                "kind": kind,
                "occurred_on": occurred_on,
                "author_id": author,
                "created_at": created_at,
                "content": current,
                "version": 2 if corrected else 1,
                "updated_at": created_at,
                "chain_seq": seq,
                "prev_hash": prev,
                "content_hash": ch,
                "row_hash": row,
            }
        )
        prev = row
        if corrected:
            seq += 1
            version_id, at = uuid.uuid4(), created_at + timedelta(minutes=30)
            vh = chain.version_content_hash(
                version_id=version_id,
                record_id=record_id,
                school_id=ids["school"],
                version=1,
                superseded_state_hash=chain.state_hash(occurred_on, content),
                replaced_by_hash=chain.state_hash(occurred_on, current),
                corrected_by_id=author,
                corrected_at=at,
            )
            row = chain.link_hash(seq, prev, vh)
            version_rows.append(
                {
                    "id": version_id,
                    "record_id": record_id,
                    "school_id": ids["school"],
                    "version": 1,
                    "occurred_on": occurred_on,
                    "content": content,
                    "replaced_by_hash": chain.state_hash(occurred_on, current),
                    "corrected_by_id": author,
                    "corrected_at": at,
                    "chain_seq": seq,
                    "prev_hash": prev,
                    "content_hash": vh,
                    "row_hash": row,
                }
            )
            prev = row
    async with app.state.engine.begin() as conn:
        for at in range(0, len(record_rows), 5000):
            await conn.execute(sa.insert(CareRecord.__table__), record_rows[at : at + 5000])  # type: ignore[attr-defined]
        for at in range(0, len(version_rows), 5000):
            await conn.execute(sa.insert(CareRecordVersion.__table__), version_rows[at : at + 5000])  # type: ignore[attr-defined]
        await conn.execute(
            sa.insert(CareChainHead.__table__).values(school_id=ids["school"], seq=seq, head_hash=prev, updated_at=NOW)  # type: ignore[attr-defined]
        )
        await conn.execute(sa.text("ANALYZE"))
    ids["links"] = seq
    return ids


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


async def main(children: int, records: int, writers: int) -> None:
    data_dir = Path(tempfile.mkdtemp(prefix="liushou-bench-pg-"))
    uri = await asyncio.to_thread(start_embedded, data_dir)
    database = f"bench_{uuid.uuid4().hex[:8]}"
    await ensure_database(uri, database)
    settings = Settings(environment=Environment.test, argon2_time_cost=1, argon2_memory_cost=1024)
    app = create_app(settings, clock=FrozenClock(NOW), database_url=asyncpg_url(uri, database), migrate=True)
    async with app.router.lifespan_context(app):
        t0 = time.perf_counter()
        ids = await seed(app, children, records)
        print(f"seeded {children} children, {ids['links']} links in {time.perf_counter() - t0:.1f} s")
        admin = {"Authorization": f"Bearer {ids['admin_token']}"}
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://bench", timeout=600) as client:
            times = []
            for _ in range(3):
                t = time.perf_counter()
                r = await client.get(f"/schools/{ids['school']}/care-records/verify", headers=admin)
                times.append((time.perf_counter() - t) * 1000)
                assert r.status_code == 200 and r.json()["intact"], r.text[:300]
            print(f"verify a chain of {ids['links']} links: median {statistics.median(times):.0f} ms")

            async def write(token: str, n: int) -> float:
                body = {"kind": "talk", "occurred_on": "2026-11-24", "content": {**TALK, "place": f"教室{n}"}}
                t = time.perf_counter()
                r = await client.post(
                    f"/children/{ids['child']}/care-records", json=body, headers={"Authorization": f"Bearer {token}"}
                )
                assert r.status_code == 201, r.text[:300]
                return (time.perf_counter() - t) * 1000

            for concurrency in (1, writers):
                latencies: list[float] = []
                t = time.perf_counter()
                for batch in range(10):
                    tokens = ids["teacher_tokens"][:concurrency]
                    latencies += await asyncio.gather(*(write(tok, batch * 100 + k) for k, tok in enumerate(tokens)))
                wall = time.perf_counter() - t
                print(
                    f"write a record, {concurrency:>2} at once: p50 {pct(latencies, 0.5):.0f} ms, "
                    f"p95 {pct(latencies, 0.95):.0f} ms, {len(latencies) / wall:.0f} records/s"
                )
            times = []
            for _ in range(20):
                t = time.perf_counter()
                r = await client.get(f"/children/{ids['child']}/care-records", headers=admin)
                times.append((time.perf_counter() - t) * 1000)
                assert r.status_code == 200
            count = r.json()["count"]
            print(f"a child's records (page 1 of {count}): p50 {pct(times, 0.5):.0f} ms, p95 {pct(times, 0.95):.0f} ms")
            r = await client.get(f"/schools/{ids['school']}/care-records/verify", headers=admin)
            assert r.json()["intact"], r.text
    await asyncio.to_thread(remove_server, data_dir)


def remove_server(data_dir: Path) -> None:
    """Stop the benchmark's server and remove its data (a run leaves a few hundred megabytes otherwise)."""
    release(data_dir)
    shutil.rmtree(data_dir, ignore_errors=True)
    for suffix in (".lock", ".users"):
        Path(f"{data_dir}{suffix}").unlink(missing_ok=True)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--children", type=int, default=2000)
    parser.add_argument("--records", type=int, default=100_000)
    parser.add_argument("--writers", type=int, default=20)
    args = parser.parse_args()
    asyncio.run(main(args.children, args.records, args.writers))
