"""The bureau's statistics at county scale, beside a floor: every statistics endpoint as the bureau, a township
official and a school admin, and the same figures as hand-written SQL straight through asyncpg.

    .venv/bin/python -m bench.stats [--small] [--seed 13] [--keep DIR] [--runs 20] [--no-write] [--floor-only]
        [--only TEXT] [--profile]

The county comes from :mod:`bench.county` (built in ``--keep DIR`` the first time, reused after). The API runs
as ``liushou serve`` runs it (one uvicorn process, its logging, no worker in it) on a loopback port, its clock
frozen on the county's day (:mod:`bench.stats_app`); the three callers sign in with a password. Then, one
endpoint after another and side by side in the same run:

* the API: ``--runs`` sequential requests (after two warm-ups) — p50 / p95 / max in milliseconds, the
  answer's ``as_of``;
* the floor over the records: the same figures for the same area, level and periods by
  :mod:`bench.stats_floor` (four aggregates over the living rows, no ORM, no row security, no suppression);
* the floor over the pre-aggregates: the same ``stats_figures`` rows the API reads, summed per unit in SQL;
* the ratios of the p95s. Targets: every endpoint p95 ≤ 300 ms, ≤ 3× the floor over the pre-aggregates.

Before that, the refresher's passes are timed (:func:`refresh_passes`): the first keeps every school's
figures, the next ones recompute the schools a change marked.

The endpoints are found in the API's OpenAPI document (``/stats/…`` routes): the tables at each level the
caller may ask for × month / term / year, and the monthly trend of the last twelve months; then the exports
(:func:`export_endpoints`: the bureau's county workbook and its schools as CSV this month, the quarterly and
annual bulletins, a school admin's workbook) — the API run keeps its exports in a fresh folder, so the first
request of each writes the file and the next ones are served from it. Results go to
``bench/results/stats.md`` (unless ``--no-write``), with the load average before and after: the machine is
shared, so ratios measured side by side are the point. ``--floor-only`` times the floor alone (no API).
``--profile``: py-spy samples the API while each table endpoint is requested again, flame graphs beside the
results (``bench/results/stats/``).
"""

import argparse
import asyncio
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import date, timedelta
from pathlib import Path
from typing import Any

import asyncpg
import httpx

from api.clock import SHANGHAI, FrozenClock
from api.db import make_engine, make_sessionmaker
from api.embedded_pg import asyncpg_url, socket_dir
from api.security import Passwords
from api.services.stats.preaggregate import refresh
from api.services.stats.warm import warm
from api.settings import Environment, Settings
from bench import stats_floor
from bench.county import NOW, TODAY, County, prepare
from bench.escalation import free_port, percentile, service_env, spawn, stop_processes, wait_http

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "bench" / "results"
PASSWORD = "bench-stats-2026"  # the benchmark's throwaway accounts
KINDS = ("month", "term", "year")
TARGET_MS, TARGET_RATIO = 300.0, 3.0


@dataclass
class Caller:
    label: str  # 县教育局, 镇专干, 校长
    username: str
    area: str  # county / township / school
    school_ids: list[Any]  # the schools of the caller's area
    levels: tuple[str, ...]  # the table levels this caller asks for


@dataclass
class Endpoint:
    caller: Caller
    name: str  # e.g. "table school × term"
    path: str  # with its query
    floor: Callable[[asyncpg.Connection], Awaitable[Any]] | None
    kept: Callable[[asyncpg.Connection], Awaitable[Any]] | None = None  # the floor over the pre-aggregates


@dataclass
class Row:
    endpoint: Endpoint
    api: list[float] = field(default_factory=list)
    floor: list[float] = field(default_factory=list)
    kept: list[float] = field(default_factory=list)
    status: str = ""
    as_of: str | None = None
    cold: float = float("nan")  # the first request (nothing remembered from an earlier one)
    # the first request after a change in the caller's schools, counted by the refresher:
    within: float = float("nan")  # the kept answer's as_of still within the bound (served as kept)
    unwarmed: float = float("nan")  # past the bound, no warm-up since (the versions moved: built)
    warmed: float = float("nan")  # after the warm-up's pass (built by the refresher's process)

    def p(self, values: list[float], q: float) -> float:
        return percentile(values, q) if values else float("nan")


def callers(county: County) -> list[Caller]:
    return [
        Caller("县教育局 (bureau)", "bureau", "county", county.school_ids, ("county", "township", "school")),
        Caller("镇专干 (township)", "township1", "township", [], ("township", "school")),
        Caller("校长 (school admin)", "admin1", "school", [county.school_ids[0]], ("school", "class")),
    ]


async def sign_in_accounts(conn: asyncpg.Connection) -> None:
    """Passwords for the bureau, the first township's official and the first school's admin."""
    hashed = await Passwords(Settings(environment=Environment.development)).hash(PASSWORD)
    await conn.execute(
        "UPDATE account SET password_hash = $1 WHERE username = ANY($2::text[])",
        hashed,
        ["bureau", "township1", "admin1"],
    )


def _param(params: list[dict[str, Any]], *names: str) -> str | None:
    known = {p["name"] for p in params}
    return next((n for n in names if n in known), None)


def stats_routes(openapi: dict[str, Any]) -> dict[str, list[dict[str, Any]]]:
    """The statistics' GET routes and their query parameters."""
    return {
        path: ops["get"].get("parameters", [])
        for path, ops in openapi["paths"].items()
        if path.startswith("/stats") and "get" in ops
    }


def period_key(kind: str, today: date) -> str:
    """The key of the period of ``kind`` holding ``today``, as the read models name it."""
    if kind == "month":
        return f"{today:%Y-%m}"
    if kind == "term":
        first = today.year if today.month >= 9 else today.year - 1
        return f"{first}-{first + 1}-{1 if today.month >= 9 or today.month < 2 else 2}"
    if kind == "year":
        return str(today.year)
    raise ValueError(kind)


Floor = Callable[[asyncpg.Connection], Awaitable[Any]]


def table_floor(ids: list[Any], level: str, kind: str, today: date) -> Floor:
    async def floor(conn: asyncpg.Connection) -> Any:
        return await stats_floor.table(conn, school_ids=ids, level=level, kind=kind, today=today)

    return floor


def trend_floor(ids: list[Any], today: date) -> Floor:
    async def floor(conn: asyncpg.Connection) -> Any:
        return await stats_floor.trend(conn, school_ids=ids, today=today)

    return floor


def kept_table_floor(ids: list[Any], level: str, kind: str, today: date) -> Floor:
    async def floor(conn: asyncpg.Connection) -> Any:
        return await stats_floor.kept_table(conn, school_ids=ids, level=level, kind=kind, today=today)

    return floor


def kept_trend_floor(ids: list[Any], today: date) -> Floor:
    async def floor(conn: asyncpg.Connection) -> Any:
        return await stats_floor.kept_trend(conn, school_ids=ids, today=today)

    return floor


def endpoints(routes: dict[str, list[dict[str, Any]]], who: list[Caller], today: date) -> list[Endpoint]:
    found: list[Endpoint] = []
    table = next((p for p in routes if p.rstrip("/").endswith("/table")), None)
    trend = next((p for p in routes if p.rstrip("/").endswith("/trend")), None)
    for caller in who:
        ids = caller.school_ids
        if table is not None:
            params = routes[table]
            kind_name = _param(params, "period", "period_kind", "kind")
            key_name = _param(params, "key", "period_key")
            for level in caller.levels:
                for kind in KINDS:
                    query = f"level={level}&{kind_name}={kind}&{key_name}={period_key(kind, today)}"
                    floor = table_floor(ids, level, kind, today)
                    kept = kept_table_floor(ids, level, kind, today)
                    found.append(Endpoint(caller, f"table {level} × {kind}", f"{table}?{query}", floor, kept))
        if trend is not None:
            params = routes[trend]
            first = today.replace(day=1)
            for _ in range(11):
                first = (first - timedelta(days=1)).replace(day=1)
            lo = _param(params, "from", "from_key", "start")
            hi = _param(params, "to", "to_key", "end")
            query = f"{lo}={first:%Y-%m}&{hi}={today:%Y-%m}"
            found.append(
                Endpoint(
                    caller,
                    "trend, 12 months",
                    f"{trend}?{query}",
                    trend_floor(ids, today),
                    kept_trend_floor(ids, today),
                )
            )
    return found


def quarter_key(today: date) -> str:
    """The last complete quarter (the bulletin's default)."""
    q = (today.month - 1) // 3
    return f"{today.year}-Q{q}" if q else f"{today.year - 1}-Q4"


def export_endpoints(routes: dict[str, list[dict[str, Any]]], who: list[Caller], today: date) -> list[Endpoint]:
    """The files: the bureau's county workbook (this month), the schools as CSV (this month), the quarterly and
    annual bulletins (the last complete quarter, this year); a school admin's workbook. No floor: the figures
    are the tables' (timed above); what these add is writing the file."""
    found: list[Endpoint] = []
    bureau, admin = who[0], who[-1]
    month = period_key("month", today)
    wanted = [
        (bureau, "export xlsx, county workbook × month", "/stats/export.xlsx", f"period=month&key={month}"),
        (bureau, "export csv, schools × month", "/stats/export.csv", f"level=school&period=month&key={month}"),
        (bureau, "export docx, quarterly bulletin", "/stats/bulletin.docx", f"period=quarter&key={quarter_key(today)}"),
        (bureau, "export docx, annual bulletin", "/stats/bulletin.docx", f"period=year&key={today.year}"),
        (admin, "export xlsx, school workbook × month", "/stats/export.xlsx", f"period=month&key={month}"),
    ]
    for caller, name, path, query in wanted:
        if path in routes:
            found.append(Endpoint(caller, name, f"{path}?{query}", None))
    return found


def floor_endpoints(who: list[Caller], today: date) -> list[Endpoint]:
    """The floor's statements alone, for every endpoint the API will have (``--floor-only``)."""
    found = []
    for caller in who:
        ids = caller.school_ids
        for level in caller.levels:
            for kind in KINDS:
                found.append(Endpoint(caller, f"table {level} × {kind}", "", table_floor(ids, level, kind, today)))
        found.append(Endpoint(caller, "trend, 12 months", "", trend_floor(ids, today)))
    return found


async def time_floor(conn: asyncpg.Connection, endpoint: Endpoint, runs: int, *, kept: bool = False) -> list[float]:
    run = endpoint.kept if kept else endpoint.floor
    if run is None:
        return []
    warm = 0 if not kept else 1  # the floor over the records takes seconds: no warm-up to speak of
    timings = []
    for i in range(runs + warm):
        t0 = time.perf_counter()
        await run(conn)
        if i >= warm:
            timings.append((time.perf_counter() - t0) * 1000)
    return timings


async def time_api(
    client: httpx.AsyncClient, token: str, endpoint: Endpoint, runs: int
) -> tuple[list[float], str, Any, float]:
    timings, status, as_of, cold = [], "", None, float("nan")
    headers = {"Authorization": f"Bearer {token}"}
    for i in range(runs + 2):
        t0 = time.perf_counter()
        r = await client.get(endpoint.path, headers=headers)
        elapsed = (time.perf_counter() - t0) * 1000
        status = str(r.status_code)
        if r.status_code != 200:
            return timings, f"{status}: {r.text[:200]}", None, cold
        if r.headers.get("content-type", "").startswith("application/json"):
            as_of = r.json().get("as_of")
        if i == 0:
            cold = elapsed
        if i >= 2:
            timings.append(elapsed)
    return timings, status, as_of, cold


def fmt(v: float) -> str:
    return "—" if v != v else f"{v:.0f}"  # NaN → —


def table_lines(rows: list[Row]) -> list[str]:
    lines = [
        "| caller | endpoint | API first | API p50 | API p95 | API max | floor over the records p50 / p95 | ratio | "
        "floor over the pre-aggregates p50 / p95 | ratio | target met |",
        "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---|",
    ]
    for r in rows:
        api95, floor95, kept95 = r.p(r.api, 0.95), r.p(r.floor, 0.95), r.p(r.kept, 0.95)
        raw_ratio = api95 / floor95 if r.api and r.floor else float("nan")
        ratio = api95 / kept95 if r.api and r.kept else float("nan")
        met = (
            "—"
            if not r.api
            else ("yes" if api95 <= TARGET_MS and (ratio <= TARGET_RATIO or not r.kept) else "no")
            + ("" if r.status == "200" else f" ({r.status})")
        )
        lines.append(
            f"| {r.endpoint.caller.label} | {r.endpoint.name} | {fmt(r.cold)} | {fmt(r.p(r.api, 0.5))} | "
            f"{fmt(api95)} | "
            f"{fmt(max(r.api) if r.api else float('nan'))} | {fmt(r.p(r.floor, 0.5))} / {fmt(floor95)} | "
            f"{'—' if raw_ratio != raw_ratio else f'{raw_ratio:.2f}'} | "
            f"{fmt(r.p(r.kept, 0.5))} / {fmt(kept95)} | {'—' if ratio != ratio else f'{ratio:.2f}'} | {met} |"
        )
    return lines


async def profile_api(py_spy: str, pid: int, client: httpx.AsyncClient, token: str, ep: Endpoint, out: Path) -> None:
    """py-spy the API process while ``ep`` is requested again and again."""
    await asyncio.to_thread(out.mkdir, parents=True, exist_ok=True)
    slug = ep.name.replace(" × ", "-").replace(" ", "-").replace(",", "")
    name = f"{ep.caller.username}-{slug}"
    proc = await asyncio.create_subprocess_exec(
        py_spy, "record", "-p", str(pid), "-o", str(out / f"{name}.txt"), "-f", "raw", "-d", "12", "-r", "200",
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    deadline = time.monotonic() + 11
    while time.monotonic() < deadline:
        await client.get(ep.path, headers={"Authorization": f"Bearer {token}"})
    await proc.wait()


async def refresh_passes(url: str, conn: asyncpg.Connection, county: County) -> list[str]:
    """The pre-aggregates: a pass over whatever is not yet kept for today (all of it, the first time), then
    incremental passes after a change in one school and in a tenth of them — what the refresher spends."""
    settings = Settings(environment=Environment.development)
    engine = make_engine(url, settings)
    maker = make_sessionmaker(engine)
    clock = FrozenClock(NOW)
    notes = []
    try:
        first = await refresh(maker, clock=clock)
        notes.append(
            f"Pre-aggregates: the first pass kept {first['schools']:.0f} schools × {first['periods']:.0f} periods in "
            f"{first['seconds']:.1f} s"
            + (" (all were kept for the county's day by an earlier run)." if not first["schools"] else ".")
        )
        for n in (1, max(1, len(county.school_ids) // 10)):
            # A real change in each of n schools (a file edited): the triggers mark them.
            await conn.execute(
                "UPDATE child SET updated_at = updated_at WHERE id IN (SELECT DISTINCT ON (school_id) id FROM child"
                " WHERE school_id = ANY($1::uuid[]) ORDER BY school_id, id)",
                county.school_ids[:n],
            )
            done = await refresh(maker, clock=clock)
            notes.append(
                f"After a change in {n} school(s): the refresher recomputed {done['schools']:.0f} school(s) × "
                f"{done['periods']:.0f} periods in {done['seconds']:.1f} s."
            )
    finally:
        await engine.dispose()
    for note in notes:
        print(note, flush=True)
    return notes


# The night of the county's day (Asia/Shanghai): the refresher's evening pass (tomorrow kept ahead), a change at
# 23:59 and a pass after it, changes after that last pass, then the reads at 00:00:01 and the first pass after.
EVENING = NOW.replace(hour=14, minute=30)  # 22:30 in Shanghai
LATE_CHANGE, LATE_PASS = NOW.replace(hour=15, minute=59), NOW.replace(hour=15, minute=59, second=30)
LAST_CHANGE = NOW.replace(hour=15, minute=59, second=50)
MIDNIGHT = NOW.replace(hour=16, minute=0, second=1)  # 00:00:01 the next day
AFTER_MIDNIGHT = NOW.replace(hour=16, minute=1)


async def change_schools(conn: asyncpg.Connection, school_ids: list[Any], at: Any) -> None:
    """A real change in each of these schools (a file edited): the triggers mark them; the marks dated ``at``
    (the clock of the night, not the machine's)."""
    latest = await conn.fetchval("SELECT coalesce(max(id), 0) FROM stats_dirty")
    await conn.execute(
        "UPDATE child SET updated_at = updated_at WHERE id IN (SELECT DISTINCT ON (school_id) id FROM child"
        " WHERE school_id = ANY($1::uuid[]) ORDER BY school_id, id)",
        school_ids,
    )
    await conn.execute("UPDATE stats_dirty SET at = $1 WHERE id > $2", at, latest)


async def midnight_passes(url: str, conn: asyncpg.Connection, county: County, late: int) -> tuple[Any, list[str]]:
    """The refresher through the evening: what the evening pass keeps for today and tomorrow, a pass after a
    change at 23:59; then ``late`` schools changed after the last pass (still pending at midnight). Returns a
    function timing the first pass after midnight, and the notes."""
    settings = Settings(environment=Environment.development)
    engine = make_engine(url, settings)
    maker = make_sessionmaker(engine)
    notes = []

    def note(text: str) -> None:
        print(text, flush=True)
        notes.append(text)

    first = await refresh(maker, clock=FrozenClock(EVENING))
    note(
        f"22:30 (Shanghai) pass: {first['schools']:.0f} schools judged today and {first['tomorrow']:.0f} judged "
        f"tomorrow (kept ahead) × {first['periods']:.0f} periods, {first['seconds']:.1f} s."
    )
    await change_schools(conn, county.school_ids[:1], LATE_CHANGE)
    done = await refresh(maker, clock=FrozenClock(LATE_PASS))
    note(
        f"A change in 1 school at 23:59, the pass at 23:59:30: {done['schools']:.0f} school(s) recomputed for "
        f"today and {done['tomorrow']:.0f} for tomorrow, {done['seconds']:.1f} s."
    )
    await change_schools(conn, county.school_ids[1 : 1 + late], LAST_CHANGE)
    note(f"A change in {late} more schools at 23:59:50, after the last pass: pending at midnight.")

    async def after_midnight() -> str:
        try:
            done = await refresh(maker, clock=FrozenClock(AFTER_MIDNIGHT))
            gone = await conn.fetchval("SELECT count(*) FROM stats_figures WHERE judged_on <= $1", TODAY)
        finally:
            await engine.dispose()
        text = (
            f"The first pass after midnight (00:01): {done['schools']:.0f} schools recomputed "
            f"× {done['periods']:.0f} periods in {done['seconds']:.1f} s (the rest were kept ahead); yesterday's rows "
            f"deleted ({gone} left); marks left: {await conn.fetchval('SELECT count(*) FROM stats_dirty')}."
        )
        print(text, flush=True)
        return text

    return after_midnight, notes


async def change_and_refresh(maker: Any, conn: asyncpg.Connection, schools: list[Any]) -> dict[str, float]:
    """A real change in each of ``schools`` (a file edited: the triggers mark them), then the refresher's pass."""
    await change_schools(conn, schools, NOW)
    return await refresh(maker, clock=FrozenClock(NOW))


async def one_request(client: httpx.AsyncClient, token: str, endpoint: Endpoint) -> float:
    t0 = time.perf_counter()
    r = await client.get(endpoint.path, headers={"Authorization": f"Bearer {token}"})
    elapsed = (time.perf_counter() - t0) * 1000
    return elapsed if r.status_code == 200 else float("nan")


async def after_a_change(
    url: str,
    conn: asyncpg.Connection,
    client: httpx.AsyncClient,
    tokens: dict[str, str],
    rows: list[Row],
    schools: list[Any],
) -> list[str]:
    """The first request of every endpoint after a change in ``schools`` (in every caller's area), counted by
    the refresher (new kept rows, new versions): (1) within the bound — the kept answer is served as it is;
    (2) past the bound (every kept answer's as_of moved back an hour: the API's clock is frozen) with no warm-up
    since — the versions moved, so the answer is built (in the endpoints' order: a later endpoint may reuse
    the suppression an earlier one computed in the API's memo); (3) after another change and the warm-up's
    pass (:func:`api.services.stats.warm.warm`, run here: another process than the API's) — kept again."""
    settings = Settings(environment=Environment.development, stats_warm_seconds=3600)
    engine = make_engine(url, settings)
    maker = make_sessionmaker(engine)
    notes = []
    try:
        done = await change_and_refresh(maker, conn, schools)
        notes.append(f"After a change in {len(schools)} school(s): refresher pass {done['seconds']:.1f} s.")
        for row in rows:
            row.within = await one_request(client, tokens[row.endpoint.caller.username], row.endpoint)
        await conn.execute("UPDATE stats_answer SET as_of = as_of - interval '1 hour'")
        for row in rows:
            row.unwarmed = await one_request(client, tokens[row.endpoint.caller.username], row.endpoint)
        done = await change_and_refresh(maker, conn, schools)
        warmed = await warm(maker, clock=FrozenClock(NOW), settings=settings)
        notes.append(
            f"Warm-up pass after another change in {len(schools)} school(s) (refresher {done['seconds']:.1f} s): "
            f"{warmed['answers']:.0f} answers — {warmed.get('built', 0):.0f} built, "
            f"{warmed.get('restamped', 0):.0f} re-stamped, {warmed.get('failed', 0):.0f} failed — in "
            f"{warmed['seconds']:.1f} s."
        )
        for row in rows:
            row.warmed = await one_request(client, tokens[row.endpoint.caller.username], row.endpoint)
        warmed = await warm(maker, clock=FrozenClock(NOW), settings=settings)
        notes.append(
            f"Warm-up pass with nothing changed: {warmed['answers']:.0f} answers, "
            f"{warmed.get('restamped', 0):.0f} re-stamped, {warmed.get('built', 0):.0f} built, in "
            f"{warmed['seconds']:.1f} s."
        )
        await conn.execute("DELETE FROM stats_answer")
        warmed = await warm(maker, clock=FrozenClock(NOW), settings=settings)
        notes.append(
            f"A fresh deploy's warm-up (nothing kept, nothing asked: each county's and township's standard table): "
            f"{warmed['answers']:.0f} answers built in {warmed['seconds']:.1f} s."
        )
    finally:
        await engine.dispose()
    for note in notes:
        print(note, flush=True)
    return notes


def change_lines(rows: list[Row]) -> list[str]:
    lines = [
        "| caller | endpoint | API first (cold) | API p95 | after a change: within the bound (kept) | "
        "past the bound, not warmed (built) | after the warm-up (kept) | target met |",
        "|---|---|---:|---:|---:|---:|---:|---|",
    ]
    for r in rows:
        worst = max(r.within, r.warmed)
        met = "—" if worst != worst else ("yes" if worst <= TARGET_MS else "no")
        lines.append(
            f"| {r.endpoint.caller.label} | {r.endpoint.name} | {fmt(r.cold)} | {fmt(r.p(r.api, 0.95))} | "
            f"{fmt(r.within)} | {fmt(r.unwarmed)} | {fmt(r.warmed)} | {met} |"
        )
    return lines


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--small", action="store_true")
    parser.add_argument("--seed", type=int, default=13)
    parser.add_argument("--keep", type=Path, help="data folder to keep (and reuse) instead of a temporary one")
    parser.add_argument("--runs", type=int, default=20)
    parser.add_argument("--floor-runs", type=int, default=3, help="runs of the floor over the records (slow)")
    parser.add_argument("--no-write", action="store_true")
    parser.add_argument("--floor-only", action="store_true")
    parser.add_argument("--only", help="time only the endpoints whose name contains this")
    parser.add_argument("--profile", action="store_true")
    parser.add_argument("--name", default="stats", help="results file name (bench/results/<name>.md)")
    parser.add_argument(
        "--midnight",
        type=int,
        metavar="LATE",
        help="the night instead: the evening passes, LATE schools changed after the last one, the reads at "
        "00:00:01 and the first pass after midnight (results: stats-midnight.md; no floor over the records)",
    )
    parser.add_argument("--no-change", action="store_true", help="skip the first requests after a change")
    args = parser.parse_args()
    if args.midnight is not None:
        args.floor_runs = 0
        if args.name == "stats":
            args.name = "stats-midnight"
    today = TODAY + timedelta(days=1) if args.midnight is not None else TODAY

    load_before = os.getloadavg()
    data_dir = args.keep or Path(tempfile.mkdtemp(prefix="liushou-county-"))
    uri, database, county = await prepare(data_dir, small=args.small, seed=args.seed)
    url = asyncpg_url(uri, database)
    conn = await asyncpg.connect(host=socket_dir(uri), user="postgres", database=database)
    version = await conn.fetchval("SHOW server_version")
    await sign_in_accounts(conn)
    who = callers(county)
    who[1].school_ids = [
        r[0] for r in await conn.fetch("SELECT id FROM school WHERE township_id = $1", county.township_ids[0])
    ]
    rows: list[Row] = []
    notes: list[str] = []
    after_midnight = None
    if args.midnight is not None:
        after_midnight, passes = await midnight_passes(url, conn, county, args.midnight)
        notes += passes
    elif not args.floor_only:
        notes += await refresh_passes(url, conn, county)
    procs: list[subprocess.Popen[bytes]] = []
    workdir = Path(tempfile.mkdtemp(prefix="liushou-bench-stats-"))
    try:
        if args.floor_only:
            for ep in floor_endpoints(who, TODAY):
                if args.only and args.only not in ep.name:
                    continue
                row = Row(ep, floor=await time_floor(conn, ep, args.floor_runs))
                print(f"{ep.caller.label:<22} {ep.name:<26} floor p50 {fmt(row.p(row.floor, 0.5))} ms, "
                      f"p95 {fmt(row.p(row.floor, 0.95))} ms", flush=True)  # fmt: skip
                rows.append(row)
        else:
            port = free_port()
            unused = {channel: free_port() for channel in ("sms", "voice", "wechat")}
            env = service_env(
                url,
                unused,
                port,
                # a fresh folder of kept exports: the first request of an export writes it
                {"LIUSHOU_ACCESS_TOKEN_MINUTES": "120", "LIUSHOU_STATS_EXPORT_DIR": str(workdir / "exports")},
            )
            clock = [MIDNIGHT.isoformat()] if args.midnight is not None else []
            procs.append(spawn([sys.executable, "-m", "bench.stats_app", str(port), *clock], env, workdir / "api.log"))
            await wait_http(f"http://127.0.0.1:{port}/healthz")
            async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}", timeout=600) as client:
                tokens = {}
                for caller in who:
                    login = await client.post("/auth/login", json={"username": caller.username, "password": PASSWORD})
                    login.raise_for_status()
                    tokens[caller.username] = login.json()["access_token"]
                routes = stats_routes((await client.get("/openapi.json")).json())
                notes.append("Statistics routes served: " + (", ".join(f"`{p}`" for p in routes) or "none yet"))
                eps = endpoints(routes, who, today) if routes else []
                eps += export_endpoints(routes, who, today)
                if not eps:
                    notes.append("The API serves no statistics table or trend yet: the floor alone is timed.")
                    eps = floor_endpoints(who, today)
                for ep in eps:
                    if args.only and args.only not in ep.name:
                        continue
                    row = Row(ep)
                    if ep.path:
                        row.api, row.status, row.as_of, row.cold = await time_api(
                            client, tokens[ep.caller.username], ep, args.runs
                        )
                    row.floor = await time_floor(conn, ep, args.floor_runs)
                    row.kept = await time_floor(conn, ep, args.runs, kept=True)
                    print(table_lines([row])[-1], flush=True)
                    rows.append(row)
                if not args.no_change and args.midnight is None and rows:
                    changed = sorted({county.school_ids[0], *who[1].school_ids[:1]}, key=str)
                    notes += await after_a_change(url, conn, client, tokens, rows, changed)
                if args.profile:
                    py_spy = shutil.which("py-spy") or str(Path(sys.executable).parent / "py-spy")
                    for ep in eps:
                        if ep.path and (not args.only or args.only in ep.name):
                            await profile_api(py_spy, procs[0].pid, client, tokens[ep.caller.username], ep,
                                              RESULTS / args.name)  # fmt: skip
        if after_midnight is not None:
            notes.append(await after_midnight())
    finally:
        stop_processes(procs)
        await conn.close()
    load_after = os.getloadavg()
    counts = county.counts
    head = [
        f"# The bureau's statistics at county scale{' at midnight' if args.midnight is not None else ''} "
        f"({'small' if args.small else 'full'} county, seed {args.seed})",
        "",
        f"`.venv/bin/python -m bench.stats{' --small' if args.small else ''}"
        f"{f' --midnight {args.midnight}' if args.midnight is not None else ''}` — {platform.node()}, "
        f"{os.cpu_count()} cores shared with other work: load average {load_before[0]:.1f} / {load_before[1]:.1f} "
        f"before, {load_after[0]:.1f} / {load_after[1]:.1f} after (1 / 5 min); Python {platform.python_version()}, "
        f"PostgreSQL {version} (embedded). Today is {today} (the clock of the data)"
        + (
            f"; the API's clock is frozen at {MIDNIGHT.astimezone(SHANGHAI):%Y-%m-%d %H:%M:%S} in Shanghai, one second "
            "into the day after the county's (its reads are the first of the new day)."
            if args.midnight is not None
            else "."
        ),
        "",
        "The county: " + ", ".join(f"{k} {v:,}" for k, v in counts.items()) + ".",
        "",
        "API: `liushou serve` as `bench/stats_app.py` runs it (one uvicorn process, the clock on the county's "
        f"day), {args.runs} sequential requests per endpoint after two "
        "warm-ups. Floors (`bench/stats_floor.py`, straight through asyncpg, no row security): over the records, "
        "the same figures (period and previous period) as four hand-written aggregates over the living rows "
        f"({args.floor_runs} runs); over the pre-aggregates, the same `stats_figures` rows the API reads summed "
        "per unit in SQL (the ratio the target is about). *API first*: the first request of an endpoint, before "
        "the API has a suppressed table to reuse (its p50/p95 are over requests after two warm-ups). "
        "Milliseconds. Targets: "
        f"p95 ≤ {TARGET_MS:.0f} ms and ≤ {TARGET_RATIO:.0f}× the floor over the pre-aggregates.",
        "",
        *[f"- {n}" for n in notes],
        "",
    ]
    as_ofs = sorted({r.as_of for r in rows if r.as_of})
    tail = ["", f"`as_of` of the answers: {', '.join(as_ofs[:3])}{' …' if len(as_ofs) > 3 else ''}"] if as_ofs else []
    changes = []
    if any(r.within == r.within for r in rows):
        changes = [
            "",
            "## The first request after a change",
            "",
            "Milliseconds, one request each; the target: ≤ 300 ms within the bound and after the warm-up.",
            "",
            *change_lines(rows),
        ]
    text = "\n".join(head + table_lines(rows) + tail + changes) + "\n"
    print("\n" + text)
    if not args.no_write:
        RESULTS.mkdir(parents=True, exist_ok=True)
        (RESULTS / f"{args.name}.md").write_text(text)
    shutil.rmtree(workdir, ignore_errors=True)


if __name__ == "__main__":
    asyncio.run(main())
