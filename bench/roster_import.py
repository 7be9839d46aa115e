"""花名册 at county scale: how long a 10,000-child roster takes to check, import, import again and export,
and how long the event loop stalls meanwhile (parsing and workbook building run in a thread).

    .venv/bin/python -m bench.roster_import [--children 10000]

Starts an embedded PostgreSQL in a temporary folder, creates one school with 24 classes and a school admin,
generates the roster from deterministic demo families (api.demo.people: siblings share their guardians),
and calls the real endpoints over ASGI. Prints timings; the target is "well under a minute" for 10,000 rows.
"""

import argparse
import asyncio
import random
import tempfile
import time
import uuid
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx

from api.clock import SHANGHAI, FrozenClock
from api.crypto import FieldCipher
from api.db import scoped_session
from api.demo.roster import demo_roster
from api.embedded_pg import asyncpg_url, ensure_database, start_embedded
from api.main import create_app
from api.models.accounts import Account, LoginSession, Role
from api.models.organisations import County, School, SchoolClass, Township
from api.scoping import SYSTEM
from api.security import issue_access_token
from api.services.roster.files import roster_csv, write_roster_xlsx
from api.services.roster.parse import parse_roster
from api.settings import Environment, Settings

NOW = datetime(2026, 11, 24, 2, 0, tzinfo=UTC)
TODAY = NOW.astimezone(SHANGHAI).date()
CLASSES = [(grade, f"{number}班") for grade in range(1, 7) for number in range(1, 5)]


async def seed(app: Any) -> dict[str, Any]:
    async with scoped_session(app.state.sessionmaker, SYSTEM) as s:
        county = County(name="隆回县", code="430524")
        s.add(county)
        await s.flush()
        township = Township(county_id=county.id, name="桃洪镇")
        s.add(township)
        await s.flush()
        school = School(county_id=county.id, township_id=township.id, name="桃洪镇中心小学", pupil_count=30000)
        s.add(school)
        await s.flush()
        admin = Account(
            role=Role.school_admin,
            display_name="周校长",
            county_id=county.id,
            township_id=township.id,
            school_id=school.id,
        )
        s.add(admin)
        s.add_all([SchoolClass(school_id=school.id, grade=g, name=n) for g, n in CLASSES])
        await s.flush()
        login = LoginSession(account_id=admin.id, method="password", created_at=NOW)
        s.add(login)
        await s.flush()
        token = issue_access_token(
            app.state.settings, account_id=admin.id, session_id=login.id, role=admin.role.value, now=NOW
        )
        return {"school": school.id, "token": token}


async def timed(call: Callable[[], Awaitable[httpx.Response]]) -> tuple[float, float, httpx.Response]:
    """Wall time (s) and the worst event-loop stall (ms) seen by a 5 ms ticker during the call."""
    stall = 0.0
    stop = asyncio.Event()

    async def ticker() -> None:
        nonlocal stall
        while not stop.is_set():
            before = time.perf_counter()
            await asyncio.sleep(0.005)
            stall = max(stall, (time.perf_counter() - before - 0.005) * 1000)

    task = asyncio.create_task(ticker())
    start = time.perf_counter()
    response = await call()
    elapsed = time.perf_counter() - start
    stop.set()
    await task
    assert response.status_code < 300, response.text[:500]
    return elapsed, stall, response


def summary(response: httpx.Response) -> str:
    if not response.headers.get("content-type", "").startswith("application/json"):
        return f"{len(response.content) / 1e6:.1f} MB"
    r = response.json()
    return (
        f"created {r['children_created']}, updated {r['children_updated']}, unchanged {r['children_unchanged']}; "
        f"guardians new {r['guardians_created']}, reused {r['guardians_reused']}"
    )


async def main(children: int) -> None:
    rows = demo_roster(random.Random(2026), children, classes=CLASSES, today=TODAY)
    t0 = time.perf_counter()
    xlsx = write_roster_xlsx(rows)
    csv = roster_csv(rows)
    print(f"{len(rows)} rows: xlsx {len(xlsx) / 1e6:.1f} MB, csv {len(csv) / 1e6:.1f} MB "
          f"(written in {time.perf_counter() - t0:.1f} s)")  # fmt: skip
    # Every 10th child moves class and every 7th gets a new health note: a realistic term-start re-import.
    edited = [
        dict(row, 班级="4班" if row["班级"] != "4班" else "1班") if i % 10 == 0 else row for i, row in enumerate(rows)
    ]
    edited = [dict(row, 健康状况="近视") if i % 7 == 0 else row for i, row in enumerate(edited)]

    settings = Settings(environment=Environment.test, argon2_time_cost=1, argon2_memory_cost=1024)
    cipher = FieldCipher.from_config(settings.field_keys)
    for label, content in (("xlsx", xlsx), ("csv", csv)):
        start = time.perf_counter()
        parsed = parse_roster(content, cipher=cipher, today=TODAY)
        assert not parsed.errors, parsed.errors[:3]
        print(f"parse + check only ({label}): {time.perf_counter() - start:.1f} s")

    data_dir = Path(tempfile.mkdtemp(prefix="liushou-bench-pg-"))
    uri = await asyncio.to_thread(start_embedded, data_dir)
    database = f"bench_{uuid.uuid4().hex[:8]}"
    await ensure_database(uri, database)
    app = create_app(settings, clock=FrozenClock(NOW), database_url=asyncpg_url(uri, database), migrate=True)
    async with app.router.lifespan_context(app):
        ids = await seed(app)
        headers = {"Authorization": f"Bearer {ids['token']}"}
        url = f"/schools/{ids['school']}/roster"
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://bench", timeout=600) as client:

            def upload(content: bytes, name: str, **params: str) -> Callable[[], Awaitable[httpx.Response]]:
                return lambda: client.post(
                    f"{url}/import", files={"file": (name, content)}, params=params, headers=headers
                )

            steps = [
                ("dry run (xlsx)", upload(xlsx, "roster.xlsx", dry_run="true")),
                ("first import (xlsx)", upload(xlsx, "roster.xlsx")),
                ("same roster again (csv)", upload(csv, "roster.csv")),
                ("edited roster (csv)", upload(roster_csv(edited), "roster.csv")),
                ("export (xlsx, masked)", lambda: client.get(f"{url}.xlsx", headers=headers)),
                (
                    "export (xlsx, revealed)",
                    lambda: client.get(f"{url}.xlsx", params={"reveal_id_numbers": "true"}, headers=headers),
                ),
            ]
            print(f"{'step':<26}{'seconds':>8}{'loop stall ms':>15}  result")
            exported = b""
            for label, call in steps:
                elapsed, stall, response = await timed(call)
                print(f"{label:<26}{elapsed:>8.1f}{stall:>15.1f}  {summary(response)}")
                exported = response.content
            elapsed, stall, response = await timed(upload(exported, "export.xlsx"))
            print(f"{'export imported back':<26}{elapsed:>8.1f}{stall:>15.1f}  {summary(response)}")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--children", type=int, default=10_000, help="rows in the roster (default 10000)")
    args = parser.parse_args()
    asyncio.run(main(args.children))
