"""亲情电话 at a school's scale: a month of availability, 200 parents pressing one slot, booking throughput.

    .venv/bin/python -m bench.family_calls [--children 1500] [--runs 30] [--race 200] [--bookings 600]
        [--concurrency 50] [--no-write] [--profile] [--statements]

Starts an embedded PostgreSQL in a temporary folder, migrates it, seeds one school with a family phone
(1 booth) and a video room (4 booths), open 07:00–08:00, 12:00–13:30 and 18:00–21:00 every day, a month
of calls already booked on a third of the slots, and ``--children`` children each with a bound parent.
Then, with the app served by a real uvicorn on a loopback socket (clock frozen on a Tuesday 10:00):

- availability: the school's free slots for 31 days (``GET /schools/{id}/family-call-slots``) and a child's
  (``GET /children/{id}/family-call-slots``, as the family), and the service function alone — p50/p95;
- the race: ``--race`` parents press the same phone slot at once — successes, 409s, 5xx, p95;
- throughput: ``--bookings`` parents each book a different free slot, ``--concurrency`` at a time.

Results go to ``bench/results/family-calls.md`` (unless ``--no-write``).
"""

import argparse
import asyncio
import cProfile
import io
import platform
import pstats
import random
import tempfile
import time
import uuid
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

import asyncpg
import httpx
from sqlalchemy import event as sa_event

from api.channels.fakes import LoopbackServer
from api.clock import SHANGHAI, FrozenClock
from api.db import scoped_session
from api.embedded_pg import asyncpg_url, release, socket_dir, start_embedded
from api.main import create_app
from api.migrations import upgrade_to_head
from api.models.accounts import Account, LoginSession, Role
from api.models.children import Child, Sex
from api.models.family_calls import CallLine, CallLineKind, CallLineWindow, CallStatus, FamilyCall
from api.models.guardians import ChildGuardian, Guardian, GuardianRole
from api.models.organisations import County, School, SchoolClass, Township
from api.scoping import SYSTEM, Principal
from api.security import issue_access_token
from api.services.family_calls import service
from api.settings import Environment, Settings

ROOT = Path(__file__).resolve().parent.parent
NOW = datetime(2026, 11, 24, 2, 0, tzinfo=UTC)  # Tuesday 10:00 in Asia/Shanghai
WINDOWS = (("07:00", "08:00"), ("12:00", "13:30"), ("18:00", "21:00"))


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(q * (len(ordered) - 1))))] if ordered else float("nan")


def ms(values: list[float]) -> str:
    return f"p50 {percentile(values, 0.5) * 1000:.1f} ms, p95 {percentile(values, 0.95) * 1000:.1f} ms"


async def seed(app: Any, children: int, rng: random.Random) -> dict[str, Any]:
    """One school, its two lines, ``children`` children with bound parents, a third of the month booked."""
    settings = app.state.settings
    async with scoped_session(app.state.sessionmaker, SYSTEM) as s:
        county = County(name="青山县", code="430599")
        s.add(county)
        await s.flush()
        township = Township(county_id=county.id, name="石桥镇")
        s.add(township)
        await s.flush()
        school = School(county_id=county.id, township_id=township.id, name="石桥镇中心小学", pupil_count=children)
        s.add(school)
        await s.flush()
        admin = Account(role=Role.school_admin, display_name="校长", username="admin", county_id=county.id,
                        township_id=township.id, school_id=school.id)  # fmt: skip
        klass = SchoolClass(school_id=school.id, grade=3, name="1班")
        s.add_all([admin, klass])
        await s.flush()
        lines = []
        for name, kind, capacity in (("亲情电话", CallLineKind.phone, 1), ("视频室", CallLineKind.video, 4)):
            line = CallLine(school_id=school.id, name=name, kind=kind, room="留守儿童之家", capacity=capacity,
                            slot_minutes=15, buffer_minutes=5, min_notice_minutes=120, horizon_days=31,
                            created_at=NOW)  # fmt: skip
            s.add(line)
            await s.flush()
            for weekday in range(7):
                for a, b in WINDOWS:
                    s.add(CallLineWindow(line_id=line.id, weekday=weekday, starts=datetime.strptime(a, "%H:%M").time(),
                                         ends=datetime.strptime(b, "%H:%M").time()))  # fmt: skip
            lines.append(line)
        families: list[tuple[uuid.UUID, str]] = []
        kids, accounts = [], []
        for i in range(children):
            kids.append(Child(school_id=school.id, class_id=klass.id, name=f"学生{i}", sex=Sex.male,
                              birth_date=date(2016, 1, 1)))  # fmt: skip
            accounts.append(Account(role=Role.family, display_name=f"家长{i}"))
        s.add_all(kids + accounts)
        await s.flush()
        logins = []
        for i, (kid, account) in enumerate(zip(kids, accounts, strict=True)):
            guardian = Guardian(name=f"家长{i}", phone=f"139{i:08d}", account_id=account.id)
            s.add(guardian)
            logins.append((kid, account, guardian))
        await s.flush()
        sessions = []
        for kid, account, guardian in logins:
            s.add(ChildGuardian(child_id=kid.id, guardian_id=guardian.id, role=GuardianRole.parent_away,
                                relation="母亲"))  # fmt: skip
            login = LoginSession(account_id=account.id, method="wechat", created_at=NOW)
            s.add(login)
            sessions.append((kid, account, login))
        admin_login = LoginSession(account_id=admin.id, method="password", created_at=NOW)
        s.add(admin_login)
        await s.flush()
        for kid, account, login in sessions:
            token = issue_access_token(settings, account_id=account.id, session_id=login.id, role="family", now=NOW)
            families.append((kid.id, token))
        admin_token = issue_access_token(
            settings, account_id=admin.id, session_id=admin_login.id, role="school_admin", now=NOW
        )
        # A third of next month's booths already booked, by five children kept apart from those that book below
        # (one per booth of the two lines, so none is in two calls at once).
        booked = 0
        first = NOW.astimezone(SHANGHAI).date() + timedelta(days=1)
        for offset, line in enumerate(lines):
            for d in range(30):
                day = first + timedelta(days=d)
                for a, b in WINDOWS:
                    start = datetime.combine(day, datetime.strptime(a, "%H:%M").time(), SHANGHAI)
                    end = datetime.combine(day, datetime.strptime(b, "%H:%M").time(), SHANGHAI)
                    while start + timedelta(minutes=15) <= end:
                        ends = start + timedelta(minutes=15)
                        for booth in range(1, line.capacity + 1):
                            if rng.random() < 1 / 3:
                                booked += 1
                                call = FamilyCall(
                                    line_id=line.id,
                                    school_id=school.id,
                                    child_id=kids[offset + booth - 1].id,
                                    booked_by=admin.id,
                                    booth=booth,
                                    starts_at=start.astimezone(UTC),
                                    ends_at=ends.astimezone(UTC),
                                    blocked_until=(ends + timedelta(minutes=5)).astimezone(UTC),
                                    status=CallStatus.booked,
                                    created_at=NOW,
                                    updated_at=NOW,
                                )
                                s.add(call)
                        start += timedelta(minutes=20)
    return {
        "school": school.id,
        "county": county.id,
        "phone": lines[0].id,
        "room": lines[1].id,
        "families": families[5:],  # the first five children hold the pre-booked calls
        "admin_token": admin_token,
        "admin": Principal(
            account_id=admin.id,
            role=Role.school_admin,
            county_id=county.id,
            township_id=township.id,
            school_id=school.id,
        ),  # fmt: skip
        "prebooked": booked,
    }


class RoundTrips:
    """Counts what an engine sends to PostgreSQL — statements, BEGIN, COMMIT/ROLLBACK, savepoints — each a round
    trip; ``statements`` keeps the SQL of the last ``keep`` statements for a look at what one request does."""

    def __init__(self, engine: Any, keep: int = 0) -> None:
        self.count = 0
        self.keep = keep
        self.statements: list[str] = []
        self.engine = engine.sync_engine
        self.events = {
            "before_cursor_execute": self._statement,
            "begin": self._other,
            "commit": self._other,
            "rollback": self._other,
            "savepoint": self._other,
            "release_savepoint": self._other,
            "rollback_savepoint": self._other,
        }

    def _statement(self, _conn: Any, _cursor: Any, statement: str, *_: Any) -> None:
        self.count += 1
        if self.keep:
            self.statements.append(" ".join(statement.split())[:110])

    def _other(self, *args: Any) -> None:
        self.count += 1
        if self.keep:
            self.statements.append("-- transaction control")

    def __enter__(self) -> "RoundTrips":
        for name, fn in self.events.items():
            sa_event.listen(self.engine, name, fn)
        return self

    def __exit__(self, *_: Any) -> None:
        for name, fn in self.events.items():
            sa_event.remove(self.engine, name, fn)


async def timed(fn: Any, runs: int) -> list[float]:
    out = []
    for _ in range(runs):
        t0 = time.perf_counter()
        await fn()
        out.append(time.perf_counter() - t0)
    return out


async def run(args: argparse.Namespace) -> str:
    rng = random.Random(12)
    folder = Path(tempfile.mkdtemp(prefix="liushou-bench-calls-"))
    uri = start_embedded(folder / "pgdata")
    try:
        admin = await asyncpg.connect(host=socket_dir(uri), user="postgres", database="postgres")
        await admin.execute('CREATE DATABASE "calls"')
        await admin.close()
        url = asyncpg_url(uri, "calls")
        await upgrade_to_head(url)
        settings = Settings(
            environment=Environment.test, db_pool_size=10, run_worker_in_process=False, argon2_time_cost=1,
            argon2_memory_cost=1024,
        )  # fmt: skip
        clock = FrozenClock(NOW)
        app = create_app(settings, clock=clock, database_url=url, migrate=False)
        async with app.router.lifespan_context(app):
            return await measure(app, settings, clock, url, args, rng)
    finally:
        release(folder / "pgdata")


async def measure(
    app: Any, settings: Settings, clock: FrozenClock, url: str, args: argparse.Namespace, rng: random.Random
) -> str:
    t0 = time.perf_counter()
    world = await seed(app, args.children, rng)
    seeded = time.perf_counter() - t0

    served = create_app(settings, clock=clock, database_url=url, migrate=False)
    server = LoopbackServer(
        served,
        log_config=None, log_level="warning", access_log=False, proxy_headers=False, backlog=1024,
    )  # fmt: skip
    base = server.start(30)
    lines: list[str] = [f"# 亲情电话 benchmark ({datetime.now(UTC):%Y-%m-%d %H:%M} UTC)", ""]
    lines.append(
        f"Machine: {platform.machine()}, {platform.python_version()}; one school, {args.children} children with "
        f"bound parents, a family phone (1 booth) and a video room (4 booths) open 3 windows a day, "
        f"{world['prebooked']} calls already booked over the month (seeded in {seeded:.1f} s). API: one uvicorn "
        "process, pool of 10 connections, PostgreSQL embedded, on the same 2 cores."
    )
    lines.append("")
    try:
        limits = httpx.Limits(max_connections=max(args.race, args.concurrency) + 10, max_keepalive_connections=0)
        async with httpx.AsyncClient(base_url=base, timeout=120, limits=limits) as c:
            month = {"since": "2026-11-25", "until": "2026-12-25"}
            admin_h = {"Authorization": f"Bearer {world['admin_token']}"}
            child, family_token = world["families"][0]
            family_h = {"Authorization": f"Bearer {family_token}"}

            async def school_month() -> None:
                r = await c.get(f"/schools/{world['school']}/family-call-slots", params=month, headers=admin_h)
                assert r.status_code == 200, r.text

            async def child_month() -> None:
                r = await c.get(f"/children/{child}/family-call-slots", params=month, headers=family_h)
                assert r.status_code == 200, r.text

            await school_month()
            r = await c.get(f"/schools/{world['school']}/family-call-slots", params=month, headers=admin_h)
            slots = r.json()
            school_api = await timed(school_month, args.runs)
            child_api = await timed(child_month, args.runs)
            with RoundTrips(served.state.engine) as trips:
                await school_month()
            school_trips = trips.count
            with RoundTrips(served.state.engine) as trips:
                await child_month()
            child_trips = trips.count

            async with scoped_session(app.state.sessionmaker, world["admin"]) as s:
                first, last = date(2026, 11, 25), date(2026, 12, 25)

                async def service_only() -> None:
                    await service.school_slots(s, world["admin"], school_id=world["school"], first=first,
                                               last=last, now=NOW)  # fmt: skip

                service_times = await timed(service_only, args.runs)
                if args.profile:
                    profile = cProfile.Profile()
                    profile.enable()
                    await timed(service_only, args.runs)
                    profile.disable()
                    out = io.StringIO()
                    pstats.Stats(profile, stream=out).sort_stats("cumulative").print_stats(40)
                    print(out.getvalue())
            lines += [
                "## Availability for a month (31 days, both lines)",
                "",
                f"- {len(slots)} free slots answered.",
                f"- `GET /schools/{{id}}/family-call-slots` over HTTP: {ms(school_api)}; "
                f"{school_trips} round trips to PostgreSQL",
                f"- `GET /children/{{id}}/family-call-slots` as the family: {ms(child_api)}; {child_trips} round trips",
                f"- the service function alone (queries + slot arithmetic): {ms(service_times)}",
                "",
            ]

            # The race: every parent presses the same phone slot at the same moment.
            target = next(s for s in slots if s["line_id"] == str(world["phone"]))
            racers = world["families"][1 : 1 + args.race]
            gate = asyncio.Event()

            async def press(kid: uuid.UUID, token: str, start: str, line: uuid.UUID) -> tuple[int, str, float]:
                await gate.wait()
                t = time.perf_counter()
                r = await c.post("/family-calls", json={"child_id": str(kid), "line_id": str(line),
                                                        "starts_at": start},
                                 headers={"Authorization": f"Bearer {token}"})  # fmt: skip
                took = time.perf_counter() - t
                return (
                    r.status_code,
                    (r.json().get("error", {}).get("code", "") if r.status_code >= 300 else ""),
                    took,
                )

            tasks = [asyncio.create_task(press(k, t, target["starts_at"], world["phone"])) for k, t in racers]
            await asyncio.sleep(0.1)
            t0 = time.perf_counter()
            gate.set()
            results = await asyncio.gather(*tasks)
            wall = time.perf_counter() - t0
            tally: dict[str, int] = {}
            for status, code, _ in results:
                tally[f"{status} {code}".strip()] = tally.get(f"{status} {code}".strip(), 0) + 1
            fivexx = sum(1 for status, _, _ in results if status >= 500)
            lines += [
                f"## The race: {len(racers)} parents press one phone slot at once",
                "",
                f"- answers: {', '.join(f'{k}: {v}' for k, v in sorted(tally.items()))}; 5xx: {fivexx}",
                f"- latency {ms([t for _, _, t in results])}; all answered in {wall:.2f} s",
                "",
            ]

            # Throughput: many parents booking different free slots.
            free = [s for s in slots if s["starts_at"] != target["starts_at"] or s["line_id"] != str(world["phone"])]
            rng.shuffle(free)
            bookers = world["families"][1 + args.race : 1 + args.race + args.bookings]
            jobs = list(zip(bookers, free, strict=False))
            sem = asyncio.Semaphore(args.concurrency)
            gate = asyncio.Event()
            gate.set()

            async def limited(job: Any) -> tuple[int, str, float]:
                (kid, token), slot = job
                async with sem:
                    return await press(kid, token, slot["starts_at"], uuid.UUID(slot["line_id"]))

            # Round trips of one booking, alone (the first few jobs, one after another).
            alone, jobs = jobs[:5], jobs[5:]
            with RoundTrips(served.state.engine, keep=1) as trips:
                for job in alone:
                    status, code, _ = await limited(job)
                    assert status == 201, code
            per_booking = trips.count / len(alone)
            one_booking = trips.statements[: len(trips.statements) // len(alone)]
            t0 = time.perf_counter()
            results = await asyncio.gather(*(limited(j) for j in jobs))
            wall = time.perf_counter() - t0
            tally = {}
            for status, code, _ in results:
                tally[f"{status} {code}".strip()] = tally.get(f"{status} {code}".strip(), 0) + 1
            lines += [
                f"## Throughput: {len(jobs)} parents book different slots, {args.concurrency} at a time",
                "",
                f"- {len(jobs) / wall:.0f} bookings/s ({wall:.1f} s); answers: "
                f"{', '.join(f'{k}: {v}' for k, v in sorted(tally.items()))}",
                f"- latency {ms([t for _, _, t in results])}",
                f"- round trips to PostgreSQL per booking (with its reminders, sign-in and audit): {per_booking:.0f}",
                "",
            ]
            if args.statements:
                print("\n".join(["One booking, statement by statement:", *one_booking]))
    finally:
        server.stop(30)
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--children", type=int, default=1500)
    parser.add_argument("--runs", type=int, default=30)
    parser.add_argument("--race", type=int, default=200)
    parser.add_argument("--bookings", type=int, default=600)
    parser.add_argument("--concurrency", type=int, default=50)
    parser.add_argument("--no-write", action="store_true")
    parser.add_argument("--statements", action="store_true", help="print the statements of one booking")
    parser.add_argument("--profile", action="store_true", help="print where the availability service spends its time")
    args = parser.parse_args()
    report = asyncio.run(run(args))
    print(report)
    if not args.no_write:
        (ROOT / "bench" / "results" / "family-calls.md").write_text(report + "\n", encoding="utf-8")


if __name__ == "__main__":
    main()
