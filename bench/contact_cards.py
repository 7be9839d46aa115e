"""Contact cards at school scale: how long a whole-school XLSX export, a class export, a single card and the
guardian list take, and how long the event loop stalls meanwhile (the workbook is built in a thread).

    .venv/bin/python -m bench.contact_cards [--children 1500] [--runs 3]

Starts an embedded PostgreSQL in a temporary folder, seeds one school with deterministic demo families
(api.demo.people: siblings share their guardians) and calls the real endpoints over ASGI. Prints timings.
"""

import argparse
import asyncio
import random
import statistics
import tempfile
import time
import uuid
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import sqlalchemy as sa

from api.clock import FrozenClock
from api.db import scoped_session
from api.demo import people as demo_people
from api.embedded_pg import asyncpg_url, ensure_database, start_embedded
from api.main import create_app
from api.models.accounts import Account, LoginSession, Role
from api.models.children import Child
from api.models.guardians import ChildGuardian, Guardian, GuardianRole
from api.models.organisations import County, School, SchoolClass, Township
from api.scoping import SYSTEM
from api.security import issue_access_token
from api.services.contact_cards import build_workbook
from api.settings import Environment, Settings

NOW = datetime(2026, 11, 24, 2, 0, tzinfo=UTC)


async def seed(app: Any, children: int) -> dict[str, Any]:
    rng = random.Random(20261124)
    async with scoped_session(app.state.sessionmaker, SYSTEM) as s:
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
            phone="0739-5220000",
            county_id=county.id,
            township_id=township.id,
            school_id=school.id,
        )
        s.add(admin)
        classes = [SchoolClass(school_id=school.id, grade=g, name=f"{n}班") for g in range(1, 7) for n in range(1, 5)]
        s.add_all(classes)
        await s.flush()
        made = 0
        for family in demo_people.families(rng, children):
            people: list[tuple[Guardian, str, GuardianRole]] = []
            for parent in family.parents_away:
                g = Guardian(
                    name=parent.person.name,
                    sex=parent.person.sex,
                    birth_year=parent.person.birth_date.year,
                    phone=parent.phone,
                    work_city=parent.work_city,
                    employer=parent.employer,
                    trade=parent.trade,
                )
                people.append((g, parent.relation, GuardianRole.parent_away))
            eg = family.guardian
            g = Guardian(
                name=eg.person.name,
                sex=eg.person.sex,
                birth_year=eg.person.birth_date.year,
                phone=eg.phone,
                health=eg.health,
                address=family.address,
            )
            people.insert(0, (g, eg.relation, GuardianRole.entrusted_guardian))
            s.add_all([p for p, _, _ in people])
            for kid in family.children:
                child = Child(
                    school_id=school.id,
                    class_id=rng.choice(classes).id,
                    name=kid.person.name,
                    sex=kid.person.sex,
                    birth_date=kid.person.birth_date,
                    is_boarding=kid.boarding,
                    health=kid.health,
                    home_address=family.address,
                )
                s.add(child)
                await s.flush()
                for order, (person, relation, role) in enumerate(people, start=1):
                    s.add(
                        ChildGuardian(
                            child_id=child.id, guardian_id=person.id, role=role, relation=relation, contact_order=order
                        )
                    )
                made += 1
            if made >= children:
                break
        login = LoginSession(account_id=admin.id, method="password", created_at=NOW)
        s.add(login)
        await s.flush()
        token = issue_access_token(
            app.state.settings, account_id=admin.id, session_id=login.id, role=admin.role.value, now=NOW
        )
        first_child = (await s.execute(Child.__table__.select().limit(1))).first()
        return {
            "school": school.id,
            "class": classes[0].id,
            "child": first_child.id if first_child else None,
            "token": token,
            "children": made,
        }


async def timed(call: Callable[[], Awaitable[httpx.Response]], runs: int) -> tuple[float, float, httpx.Response]:
    """Median wall time (ms) and the worst event-loop stall (ms) seen by a 5 ms ticker during the calls."""
    stall = 0.0
    stop = asyncio.Event()

    async def ticker() -> None:
        nonlocal stall
        while not stop.is_set():
            before = time.perf_counter()
            await asyncio.sleep(0.005)
            stall = max(stall, (time.perf_counter() - before - 0.005) * 1000)

    task = asyncio.create_task(ticker())
    times = []
    response = None
    for _ in range(runs):
        start = time.perf_counter()
        response = await call()
        times.append((time.perf_counter() - start) * 1000)
        assert response.status_code < 300, response.text[:300]
    stop.set()
    await task
    assert response is not None
    return statistics.median(times), stall, response


async def main(children: int, runs: int) -> None:
    data_dir = Path(tempfile.mkdtemp(prefix="liushou-bench-pg-"))
    uri = await asyncio.to_thread(start_embedded, data_dir)
    database = f"bench_{uuid.uuid4().hex[:8]}"
    await ensure_database(uri, database)
    settings = Settings(environment=Environment.test, argon2_time_cost=1, argon2_memory_cost=1024)
    app = create_app(settings, clock=FrozenClock(NOW), database_url=asyncpg_url(uri, database), migrate=True)
    async with app.router.lifespan_context(app):
        async with app.state.engine.begin() as conn:
            for table in ("child", "guardian", "child_guardian"):
                # Keep the "fresh import" phase honest: no analysis behind the benchmark's back.
                await conn.execute(sa.text(f"ALTER TABLE {table} SET (autovacuum_enabled = off)"))
        t0 = time.perf_counter()
        ids = await seed(app, children)
        print(f"seeded {ids['children']} children in {time.perf_counter() - t0:.1f} s (data in {data_dir})")
        headers = {"Authorization": f"Bearer {ids['token']}"}
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://bench", timeout=300) as client:
            rows = [
                ("school export (xlsx)", f"/schools/{ids['school']}/contact-cards.xlsx", runs),
                ("class export (xlsx)", f"/classes/{ids['class']}/contact-cards.xlsx", runs * 3),
                ("one contact card (json)", f"/children/{ids['child']}/contact-card", 30),
                ("guardian list (json)", f"/children/{ids['child']}/guardians", 30),
            ]
            counter = iter(range(10_000))

            async def add_guardian() -> httpx.Response:
                # A new contact each time: the same-person look-up runs, finds nobody, and a link is added.
                n = next(counter)
                return await client.post(
                    f"/children/{ids['child']}/guardians",
                    json={
                        "role": "other_contact",
                        "relation": "邻居",
                        "guardian": {"name": f"邻居{n}", "phone": f"1350739{n:04d}"},
                    },
                    headers=headers,
                )

            # First as right after a roster import (autovacuum has not analysed the new rows yet), then
            # with statistics, as the tables normally are.
            for phase in ("fresh tables, no statistics", "after ANALYZE"):
                if phase == "after ANALYZE":
                    async with app.state.engine.begin() as conn:
                        await conn.execute(sa.text("ANALYZE"))
                print(f"-- {phase}")
                print(f"{'endpoint':<30}{'median ms':>10}{'loop stall ms':>15}{'bytes':>10}  cards")
                for label, url, n in rows:
                    median, stall, response = await timed(lambda url=url: client.get(url, headers=headers), n)
                    cards = response.headers.get("x-card-count", "1")
                    print(f"{label:<30}{median:>10.1f}{stall:>15.1f}{len(response.content):>10}  {cards}")
                median, stall, _ = await timed(add_guardian, 20)
                print(f"{'add guardian (dedupe check)':<30}{median:>10.1f}{stall:>15.1f}")

    # The pure workbook build alone, for the share of openpyxl in the export.
    from api.models.guardians import ContactCard, ContactCardGuardian

    card = ContactCard(
        child_id=uuid.uuid4(),
        child_name="张子轩",
        sex="male",
        age=9,
        school_id=uuid.uuid4(),
        school_name="桃洪镇中心小学",
        school_phone="0739-5220000",
        class_id=None,
        class_label="三年级1班",
        head_teacher_name="李老师",
        head_teacher_phone="13700001111",
        is_boarding=True,
        health="哮喘",
        disability=False,
        home_address="石门村3组",
        guardians=[
            ContactCardGuardian(
                order=i,
                guardian_id=uuid.uuid4(),
                name="王桂兰",
                relation="祖母",
                role=GuardianRole.entrusted_guardian,
                role_label="委托监护人",
                phone="13807391234",
                phone_alt=None,
                where="石门村3组",
                health="高血压",
            )
            for i in (1, 2, 3)
        ],
        generated_at=NOW,
    )
    groups = [(f"{g}年级{n}班", [card] * (children // 24)) for g in range(1, 7) for n in range(1, 5)]
    start = time.perf_counter()
    content = build_workbook("桃洪镇中心小学", groups, NOW)
    print(
        f"build_workbook alone, {children} cards: {(time.perf_counter() - start) * 1000:.0f} ms, {len(content)} bytes"
    )


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--children", type=int, default=1500, help="children in the school (default 1500)")
    parser.add_argument("--runs", type=int, default=3)
    args = parser.parse_args()
    asyncio.run(main(args.children, args.runs))
