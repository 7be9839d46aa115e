"""The escalation engine under a burst: 10,000 incidents reported within one minute.

    .venv/bin/python -m bench.escalation [--incidents 10000] [--seconds 60] [--workers 2] [--report-processes 2]
        [--reporters 8] [--concurrency 50] [--backlog]

Production-shaped, on this machine: an embedded PostgreSQL (or ``DATABASE_URL``), the fake providers (one
process per channel: real HTTP on loopback, signed callbacks), the API in another process to receive those
callbacks, and ``--workers`` separate ``liushou worker`` processes. This process seeds a county (schools,
children with two grandparents and two parents, duty contacts) and ``--report-processes`` processes report
the incidents through the incident service at an even pace over ``--seconds`` (as fast as they can when they
fall behind). ``--backlog`` starts the workers only once every incident is reported: the burst arrived while
every worker was down, and the engine works through the backlog, earliest deadline first.

It then measures, from the database, for each step and each party: how late its first message went out
after the step was due (``sent_at`` − ``starts_at``; a step is due at the report), p50 / p99 / max, and
messages per second. Prints a table and writes it to bench/results/escalation.md (escalation-backlog.md).
"""

import argparse
import asyncio
import multiprocessing
import os
import platform
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from concurrent.futures import ProcessPoolExecutor
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any

import asyncpg
import httpx
import sqlalchemy as sa

from api.clock import SystemClock
from api.db import make_engine, make_sessionmaker, scoped_session
from api.embedded_pg import asyncpg_url, socket_dir, start_embedded
from api.migrations import upgrade_to_head
from api.models.accounts import Account, Role
from api.models.children import Child, Sex
from api.models.escalation import DutyContact
from api.models.guardians import ChildGuardian, Guardian, GuardianRole
from api.models.incidents import IncidentCategory, IncidentCreate, Severity
from api.models.organisations import County, School, SchoolClass, Township
from api.scoping import SYSTEM, Principal
from api.services.emergency.incidents import report_incident
from api.settings import Environment, Settings

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "bench" / "results" / "escalation.md"
SECRET = "bench-callback-secret"
FAKE = (
    "import sys, uvicorn; from api.channels.fakes import create_fake_app; "
    "uvicorn.run(create_fake_app(callback_secret=sys.argv[2], callback_concurrency=int(sys.argv[3])),"
    " host='127.0.0.1', port=int(sys.argv[1]), log_level='warning', access_log=False)"
)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def percentile(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    index = min(len(ordered) - 1, max(0, round(q * (len(ordered) - 1))))
    return ordered[index]


# ---- the world -------------------------------------------------------------------------------------------


async def seed(sessionmaker: Any, *, schools: int, children_per_school: int) -> list[tuple[Principal, uuid.UUID]]:
    """A county with two townships and its schools; returns (reporting teacher, child) pairs."""
    pairs: list[tuple[Principal, uuid.UUID]] = []
    async with scoped_session(sessionmaker, SYSTEM) as s:
        county = County(name="青山县", code="430599")
        s.add(county)
        await s.flush()
        townships = [Township(county_id=county.id, name=n) for n in ("石桥镇", "柳河乡")]
        s.add_all(townships)
        await s.flush()
        now = datetime.now(UTC)
        s.add(
            DutyContact(
                county_id=county.id, name="县教育局值班室", phone="0739-5551100", created_at=now, updated_at=now
            )
        )
        for i, t in enumerate(townships):
            s.add(
                DutyContact(
                    county_id=county.id, township_id=t.id, name=f"{t.name}值班室", phone=f"1390739550{i}",
                    created_at=now, updated_at=now,
                )
            )  # fmt: skip
        number = 0
        for k in range(schools):
            t = townships[k % 2]
            school = School(county_id=county.id, township_id=t.id, name=f"第{k + 1}完小", pupil_count=600)
            s.add(school)
            await s.flush()
            admin = Account(
                role=Role.school_admin, display_name=f"校长{k}", phone=f"1360000{k:04d}",
                county_id=county.id, township_id=t.id, school_id=school.id,
            )  # fmt: skip
            teacher = Account(
                role=Role.teacher, display_name=f"老师{k}", county_id=county.id, township_id=t.id, school_id=school.id
            )
            s.add_all([admin, teacher])
            await s.flush()
            klass = SchoolClass(school_id=school.id, grade=3, name="1班", head_teacher_id=teacher.id)
            s.add(klass)
            await s.flush()
            principal = Principal(
                account_id=teacher.id, role=Role.teacher, county_id=county.id, township_id=t.id, school_id=school.id
            )
            for _ in range(children_per_school):
                number += 1
                child = Child(
                    school_id=school.id, class_id=klass.id, name="刘小明", sex=Sex.male, birth_date=date(2016, 3, 1)
                )
                s.add(child)
                await s.flush()
                family = []
                for role, relation, prefix in (
                    (GuardianRole.entrusted_guardian, "祖母", "138"),
                    (GuardianRole.entrusted_guardian, "祖父", "137"),
                    (GuardianRole.parent_away, "父亲", "139"),
                    (GuardianRole.parent_away, "母亲", "135"),
                ):
                    account = None
                    if relation == "父亲":
                        account = Account(role=Role.family, display_name="父亲", wechat_openid=f"o-bench-{number}")
                        s.add(account)
                        await s.flush()
                    g = Guardian(
                        name="王桂英", phone=f"{prefix}{number:08d}", account_id=account.id if account else None
                    )
                    family.append((g, role, relation))
                s.add_all([g for g, _, _ in family])
                await s.flush()
                s.add_all(
                    ChildGuardian(
                        child_id=child.id, guardian_id=g.id, role=role, relation=relation, contact_order=i + 1
                    )
                    for i, (g, role, relation) in enumerate(family)
                )
                pairs.append((principal, child.id))
    return pairs


# ---- processes -------------------------------------------------------------------------------------------


async def embedded_database(pgdata: Path, name: str) -> str:
    """Start an embedded PostgreSQL in ``pgdata`` and create the (empty) database ``name``; its URL."""
    uri = start_embedded(pgdata)
    admin = await asyncpg.connect(host=socket_dir(uri), user="postgres", database="postgres")
    await admin.execute(f'CREATE DATABASE "{name}"')
    await admin.close()
    return asyncpg_url(uri, name)


def service_env(url: str, fake_ports: dict[str, int], api_port: int, extra: dict[str, str]) -> dict[str, str]:
    """The environment of the API and worker processes: the database at ``url``, the fake provider of each
    channel on its port, callbacks to the API on ``api_port``, the worker in processes of its own; ``extra``:
    more settings."""
    return {
        **os.environ,
        "DATABASE_URL": url,
        "LIUSHOU_ENVIRONMENT": "development",
        "LIUSHOU_CALLBACK_SECRET": SECRET,
        "LIUSHOU_SMS_BASE_URL": f"http://127.0.0.1:{fake_ports['sms']}/sms",
        "LIUSHOU_VOICE_BASE_URL": f"http://127.0.0.1:{fake_ports['voice']}/voice",
        "LIUSHOU_WECHAT_BASE_URL": f"http://127.0.0.1:{fake_ports['wechat']}/wechat",
        "LIUSHOU_PUBLIC_BASE_URL": f"http://127.0.0.1:{api_port}",
        "LIUSHOU_RUN_WORKER_IN_PROCESS": "false",
        "LIUSHOU_ESCALATION_POLL_SECONDS": "0.2",
        "LIUSHOU_DB_POOL_SIZE": "10",
        **extra,
    }


def spawn(args: list[str], env: dict[str, str], log: Path) -> subprocess.Popen[bytes]:
    return subprocess.Popen(args, env=env, stdout=log.open("wb"), stderr=subprocess.STDOUT, cwd=ROOT)


def stop_processes(procs: list[subprocess.Popen[bytes]]) -> None:
    """Ask every process to end (SIGTERM), then kill those that have not within 15 s."""
    for proc in procs:
        if proc.poll() is None:
            proc.terminate()
    for proc in procs:
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            proc.kill()


async def wait_http(url: str, within: float = 60.0) -> None:
    deadline = time.monotonic() + within
    async with httpx.AsyncClient() as client:
        while time.monotonic() < deadline:
            try:
                await client.get(url, timeout=1.0)
                return
            except httpx.HTTPError:
                await asyncio.sleep(0.2)
    raise RuntimeError(f"{url} did not come up")


# ---- the run -------------------------------------------------------------------------------------------


async def report_one(
    sessionmaker: Any, settings: Settings, pairs: list[tuple[Principal, uuid.UUID]], i: int, *, summary: str
) -> None:
    """Report incident number ``i``: about the ``i``-th child of ``pairs`` (round and round), by its teacher, in a
    category that turns with ``i``, through the incident service in a transaction of its own."""
    clock = SystemClock()
    principal, child_id = pairs[i % len(pairs)]
    categories = list(IncidentCategory)
    async with scoped_session(sessionmaker, principal) as session:
        await report_incident(
            session,
            principal,
            data=IncidentCreate(
                child_id=child_id,
                category=categories[i % len(categories)],
                severity=Severity.moderate,
                summary=summary,
                location="操场",
                occurred_at=clock.now(),
                first_actions="已处置",
            ),
            settings=settings,
            now=clock.now(),
        )


async def report_all(
    sessionmaker: Any, settings: Settings, pairs: list[tuple[Principal, uuid.UUID]], *, count: int, seconds: float,
    reporters: int, part: int = 0, parts: int = 1, start_at: float | None = None,
) -> tuple[float, list[float]]:  # fmt: skip
    """Report incidents ``part``, ``part + parts``, … of ``count`` spread evenly over ``seconds`` from ``start_at``
    (a ``time.time()``); returns the wall time and each report's time."""
    queue: asyncio.Queue[int] = asyncio.Queue()
    for i in range(part, count, parts):
        queue.put_nowait(i)
    durations: list[float] = []
    start = time.monotonic() - (time.time() - start_at if start_at is not None else 0.0)

    async def reporter() -> None:
        while True:
            try:
                i = queue.get_nowait()
            except asyncio.QueueEmpty:
                return
            due = start + i * seconds / count
            if (pause := due - time.monotonic()) > 0:
                await asyncio.sleep(pause)
            began = time.monotonic()
            await report_one(sessionmaker, settings, pairs, i, summary="基准测试事件")
            durations.append(time.monotonic() - began)

    await asyncio.gather(*(reporter() for _ in range(reporters)))
    return time.monotonic() - start, durations


def report_part(
    url: str, pairs: list[tuple[Principal, uuid.UUID]], count: int, seconds: float, reporters: int, part: int,
    parts: int, start_at: float,
) -> tuple[float, list[float]]:  # fmt: skip
    """One reporting process: its own engine, every ``parts``-th incident."""

    async def run() -> tuple[float, list[float]]:
        settings = Settings(
            environment=Environment.development, callback_secret=SECRET, public_base_url="http://127.0.0.1",
            db_pool_size=max(5, reporters + 1),
        )  # fmt: skip
        engine = make_engine(url, settings)
        try:
            return await report_all(
                make_sessionmaker(engine), settings, pairs, count=count, seconds=seconds, reporters=reporters,
                part=part, parts=parts, start_at=start_at,
            )  # fmt: skip
        finally:
            await engine.dispose()

    return asyncio.run(run())


FIRST_MESSAGES = """
SELECT s.step_no, p.audience, extract(epoch FROM min(m.sent_at) - s.starts_at) AS late
FROM escalation_step s
JOIN escalation_party p ON p.step_id = s.id
LEFT JOIN outbound_message m ON m.party_id = p.id AND m.purpose = 'notify' AND m.sent_at IS NOT NULL
GROUP BY s.id, s.step_no, s.starts_at, p.id, p.audience
"""


async def first_messages(engine: Any) -> list[tuple[int, str, float | None]]:
    async with engine.connect() as conn:
        rows = (await conn.execute(sa.text(FIRST_MESSAGES))).all()
    return [(r[0], r[1], r[2]) for r in rows]


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--incidents", type=int, default=10_000)
    parser.add_argument("--seconds", type=float, default=60.0)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--reporters", type=int, default=8, help="concurrent reports in each reporting process")
    parser.add_argument("--api-processes", type=int, default=1, help="uvicorn processes receiving callbacks")
    parser.add_argument("--report-processes", type=int, default=2, help="processes reporting side by side")
    parser.add_argument("--schools", type=int, default=20)
    parser.add_argument("--children", type=int, default=50, help="children per school (incidents reuse them)")
    parser.add_argument(
        "--drain",
        type=float,
        default=600.0,
        help="max seconds after the last report to wait for every first message and every step 1 told",
    )
    parser.add_argument("--fake-callbacks", type=int, default=32, help="callbacks in flight from each fake")
    parser.add_argument("--concurrency", type=int, default=50, help="sends in flight per worker")
    parser.add_argument("--http-timeout", type=float, default=10.0, help="seconds before a send is retried")
    parser.add_argument(
        "--backlog", action="store_true",
        help="start the workers only after every incident is reported (workers down during the burst)",
    )  # fmt: skip
    parser.add_argument("--no-write", action="store_true", help="do not write bench/results/escalation.md")
    args = parser.parse_args()

    workdir = Path(tempfile.mkdtemp(prefix="liushou-bench-esc-"))
    if os.environ.get("DATABASE_URL"):
        base = os.environ["DATABASE_URL"].replace("postgresql+asyncpg://", "postgresql://")
        admin = await asyncpg.connect(base)
        name = f"liushou_bench_{os.getpid()}"
        await admin.execute(f'CREATE DATABASE "{name}"')
        await admin.close()
        url = base.rsplit("/", 1)[0].replace("postgresql://", "postgresql+asyncpg://") + f"/{name}"
    else:
        url = await embedded_database(workdir / "pg", "liushou_bench")
    await upgrade_to_head(url)

    # One fake provider process per channel, as they are separate services in life (each keeps its own
    # idempotency keys), without access logs.
    fake_ports = {channel: free_port() for channel in ("sms", "voice", "wechat")}
    api_port = free_port()
    env = service_env(
        url,
        fake_ports,
        api_port,
        {
            "LIUSHOU_ESCALATION_SEND_CONCURRENCY": str(args.concurrency),
            "LIUSHOU_HTTP_TIMEOUT_SECONDS": str(args.http_timeout),
            "LIUSHOU_ESCALATION_LEASE_SECONDS": str(max(60, int(args.http_timeout * 6))),
        },
    )
    settings = Settings(
        environment=Environment.development,
        callback_secret=SECRET,
        public_base_url=env["LIUSHOU_PUBLIC_BASE_URL"],
        db_pool_size=max(10, args.reporters + 2),
    )
    engine = make_engine(url, settings)
    sessionmaker = make_sessionmaker(engine)
    print(f"seeding {args.schools} schools × {args.children} children …", flush=True)
    pairs = await seed(sessionmaker, schools=args.schools, children_per_school=args.children)

    procs = [
        spawn(
            [sys.executable, "-c", FAKE, str(port), SECRET, str(args.fake_callbacks)],
            env,
            workdir / f"fake-{channel}.log",
        )
        for channel, port in fake_ports.items()
    ]
    procs.append(
        spawn([sys.executable, "-m", "uvicorn", "--factory", "api.main:create_app", "--port", str(api_port),
               "--log-level", "warning", "--workers", str(args.api_processes)], env, workdir / "api.log"),
    )  # fmt: skip
    try:
        for port in fake_ports.values():
            await wait_http(f"http://127.0.0.1:{port}/_fake/outbox")
        await wait_http(f"http://127.0.0.1:{api_port}/healthz")

        async def start_workers() -> None:
            for i in range(args.workers):
                procs.append(spawn([sys.executable, "-m", "api.cli", "worker"], env, workdir / f"worker{i}.log"))
            await asyncio.sleep(3)  # the workers migrate (a no-op) and start listening

        if not args.backlog:
            await start_workers()

        print(f"reporting {args.incidents} incidents over {args.seconds:.0f} s …", flush=True)
        # The first report, once every reporting process has started and connected.
        start_at, started = time.time() + 2.0, time.monotonic() + 2.0
        with ProcessPoolExecutor(args.report_processes, mp_context=multiprocessing.get_context("spawn")) as pool:
            futures = [
                asyncio.wrap_future(
                    pool.submit(
                        report_part,
                        url,
                        pairs,
                        args.incidents,
                        args.seconds,
                        args.reporters,
                        part,
                        args.report_processes,
                        start_at,
                    )
                )
                for part in range(args.report_processes)
            ]
            results = await asyncio.gather(*futures)
        wall = max(w for w, _ in results)
        durations = [d for _, ds in results for d in ds]
        print(f"reported in {wall:.1f} s; waiting for every step's first message …", flush=True)
        if args.backlog:
            await start_workers()
        deadline = time.monotonic() + args.drain
        while True:
            rows = await first_messages(engine)
            missing = sum(1 for r in rows if r[2] is None)
            if missing == 0 or time.monotonic() > deadline:
                break
            await asyncio.sleep(1.0)
        drained = time.monotonic() - started
        async with engine.connect() as conn:
            callbacks_then = (await conn.execute(sa.text("SELECT count(*) FROM provider_event"))).scalar_one()
            sent, first_sent, last_sent = (
                await conn.execute(
                    sa.text(
                        "SELECT count(*), min(sent_at), max(sent_at) FROM outbound_message WHERE sent_at IS NOT NULL"
                    )
                )
            ).one()
            by_status = dict(
                (await conn.execute(sa.text("SELECT status, count(*) FROM outbound_message GROUP BY 1"))).all()
            )
        # Entrusted guardians press 1 as soon as the call is answered: step 1 is told when that keypress has
        # come back through the provider's signed callback and the API. How long until every step 1 is?
        print(f"first messages out after {drained:.1f} s; waiting for every step 1 to be told …", flush=True)
        while True:
            async with engine.connect() as conn:
                untold = (
                    await conn.execute(
                        sa.text("SELECT count(*) FROM escalation_step WHERE step_no = 1 AND told_at IS NULL")
                    )
                ).scalar_one()
            if untold == 0 or time.monotonic() > deadline:
                break
            await asyncio.sleep(1.0)
        all_told = time.monotonic() - started
        async with engine.connect() as conn:
            told_late = [
                float(r[0])
                for r in await conn.execute(
                    sa.text(
                        "SELECT extract(epoch FROM told_at - starts_at) FROM escalation_step"
                        " WHERE step_no = 1 AND told_at IS NOT NULL"
                    )
                )
            ]
            callbacks = (await conn.execute(sa.text("SELECT count(*) FROM provider_event"))).scalar_one()
            total_messages = (await conn.execute(sa.text("SELECT count(*) FROM outbound_message"))).scalar_one()
            breaches = (
                await conn.execute(sa.text("SELECT count(*) FROM escalation_step WHERE breached_at IS NOT NULL"))
            ).scalar_one()
    finally:
        stop_processes(procs)
        await engine.dispose()

    span = (last_sent - first_sent).total_seconds() if sent else 0.0
    groups: dict[str, list[float]] = {}
    for step_no, audience, late in rows:
        if late is not None:
            groups.setdefault(f"step {step_no}", []).append(float(late))
            groups.setdefault(f"step {step_no} · {audience}", []).append(float(late))
    lines = [
        f"# Escalation engine: {args.incidents:,} incidents reported within {args.seconds:.0f} s"
        + (", workers started after the burst" if args.backlog else ""),
        "",
        f"Run {datetime.now(UTC):%Y-%m-%d %H:%M} UTC on {platform.platform()}, {os.cpu_count()} CPUs (shared),"
        f" Python {platform.python_version()}; {args.workers} `liushou worker` processes ({args.concurrency} sends in"
        f" flight each, {args.http_timeout:.0f} s send timeout); the fake SMS, voice and"
        " WeChat providers (one process each) and the API receiving their signed callbacks in processes of"
        " their own; embedded PostgreSQL.",
        "",
        f"- reporting: {args.incidents:,} incidents in {wall:.1f} s ({args.incidents / wall:.0f}/s;"
        f" one report p50 {statistics.median(durations) * 1000:.0f} ms,"
        f" p99 {percentile(durations, 0.99) * 1000:.0f} ms,"
        f" {args.report_processes} reporting processes × {args.reporters} concurrent reports)",
        f"- messages sent: {sent:,} in {span:.1f} s = **{sent / span if span else 0:.0f} messages/s**"
        f" (statuses then: {', '.join(f'{k} {v:,}' for k, v in sorted(by_status.items()))});"
        f" {callbacks_then:,} provider callbacks processed by then",
        f"- every first message out {drained:.1f} s after the first report;"
        f" {missing} parties without one (nobody to reach, or the drain timed out)",
        f"- step 1 told (the guardian's keypress back through the signed voice callback): {len(told_late):,} of"
        f" {args.incidents:,} {all_told:.1f} s after the first report;"
        f" told after it was due p50 {percentile(told_late, 0.5):.1f} s,"
        f" p99 {percentile(told_late, 0.99):.1f} s, max {max(told_late, default=float('nan')):.1f} s"
        f" ({callbacks:,} callbacks and {total_messages:,} messages by then; {breaches} deadlines missed)",
        "",
        "How late each step's first message went out after the step was due (seconds):",
        "",
        "| | n | p50 | p99 | max |",
        "|---|---:|---:|---:|---:|",
    ]
    for name in sorted(groups):
        values = groups[name]
        lines.append(
            f"| {name} | {len(values):,} | {percentile(values, 0.5):.2f} | {percentile(values, 0.99):.2f} |"
            f" {max(values):.2f} |"
        )
    text = "\n".join(lines) + "\n"
    print()
    print(text)
    if not args.no_write:
        out = RESULTS.with_name("escalation-backlog.md") if args.backlog else RESULTS
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(text)
        print(f"written to {out.relative_to(ROOT)}")


if __name__ == "__main__":
    # SIGTERM unwinds like Ctrl-C, so the provider, API and worker processes are stopped too.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    asyncio.run(main())
