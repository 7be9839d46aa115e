"""Our endpoints against the bare stack: the API beside a thin FastAPI + asyncpg app doing the same SQL.

    .venv/bin/python -m bench.api_floor [--seconds 10] [--warmup 2] [--turns 3] [--connections 8 64]
        [--profile] [--endpoints list file incident todo] [--name api-floor]

One run, one machine, side by side: an embedded PostgreSQL (or ``DATABASE_URL``) with the demo county
(``serve --demo`` seeding), the API as ``liushou serve`` runs it (one uvicorn process, its logging; the
escalation worker in no process, so reports only queue their messages), and the floor,
``bench/floor_app.py`` (one uvicorn process, asyncpg, hand-written SQL). A head teacher signs in; then each
endpoint is loaded at each connection count on the API, the floor and, for reads, the floor with the
service's duties (session look-up and the audit entry in the read's transaction):

* ``list``: the class page, ``GET /children?class_id=…&limit=20``;
* ``file``: one child's file of that class, ``GET /children/{id}``;
* ``incident``: reporting an incident, ``POST /incidents``, for the class's children in turn (a county's
  reports are for many children: one child reported thousands of times piled thousands of open SMS reply codes
  on its guardians' two numbers, and each new code took more draws); the floor inserts the rows one real
  report wrote;
* ``todo``: the teacher's to-do list, ``GET /care/todo``; the floor replays the statements the service runs
  for it (captured from the service in the bench process) on bare asyncpg.

The load generator is one asyncio process speaking keep-alive HTTP/1.1 over raw sockets (cheap: the machine
is small and it competes). For each row: requests per second, p50 / p99 latency, errors (non-2xx or broken
connections), the server process's CPU time per request (``/proc/<pid>/stat`` over the measured window ÷
requests) and its peak RSS. Ratios to the floor are the point: the machine is shared and noisy.

``--turns``: each endpoint and connection count is measured in that many turns, the servers one after another
within a turn (API, floor, floor + duties, API, floor, …), so that a slow minute of the machine falls on all of
them rather than on one. A row pools its turns (requests, latencies, CPU); a target on a ratio also gives the
ratio of each turn, so its spread is in the results and not only its luckiest or unluckiest draw. Reports are
measured in one turn: each leaves its reply codes open on the school's own number (nothing acknowledges them
here), so a later turn would measure a school with three times as many open reports — and the to-do list after
them, which reads them, too.

``--profile``: after the measured rows, each endpoint is loaded again at 8 connections while py-spy samples
the API process: ``bench/results/<name>/<endpoint>.svg`` (flame graph) and ``<endpoint>.txt`` (collapsed
stacks, which speedscope opens), and a summary of where the samples fall in the results file
``bench/results/<name>.md``.
"""

import argparse
import asyncio
import json
import os
import pickle
import platform
import resource
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from collections import Counter
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import asyncpg
import httpx
import psutil

from api.db import make_engine, make_sessionmaker, scoped_session
from api.demo.seed import DEMO_PASSWORD, seed_demo
from api.migrations import upgrade_to_head
from api.scoping import SYSTEM
from api.security import Passwords
from api.settings import Environment, Settings
from bench.escalation import embedded_database, free_port, percentile, service_env, spawn, stop_processes, wait_http

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "bench" / "results"
TICKS = os.sysconf("SC_CLK_TCK")
PAGE = 20
TODO = "/care/todo"

# ---- the load generator ----------------------------------------------------------------------------------


@dataclass
class Request:
    method: str
    path: str
    headers: dict[str, str] = field(default_factory=dict)
    body: bytes | None = None
    # Bodies sent in turn instead of ``body`` (each connection starting at its own).
    bodies: list[bytes] | None = None

    def raw(self, body: bytes | None = None) -> bytes:
        body = self.body if body is None else body
        lines = [f"{self.method} {self.path} HTTP/1.1", "Host: 127.0.0.1"]
        lines += [f"{k}: {v}" for k, v in self.headers.items()]
        if body is not None:
            lines += ["Content-Type: application/json", f"Content-Length: {len(body)}"]
        return ("\r\n".join(lines) + "\r\n\r\n").encode() + (body or b"")

    def raws(self) -> list[bytes]:
        return [self.raw(body) for body in self.bodies] if self.bodies else [self.raw()]


@dataclass
class Outcome:
    requests: int = 0
    errors: int = 0
    statuses: Counter[int] = field(default_factory=Counter)
    latencies: list[float] = field(default_factory=list)
    seconds: float = 0.0
    cpu_seconds: float = 0.0
    client_cpu_seconds: float = 0.0
    rss_peak_mb: float = 0.0
    db_cpu_seconds: float = 0.0

    @property
    def rate(self) -> float:
        return self.requests / self.seconds if self.seconds else 0.0

    def p(self, q: float) -> float:
        return percentile(self.latencies, q) * 1000

    def add(self, other: "Outcome") -> None:
        """Pool another measured window of the same row into this one."""
        self.requests += other.requests
        self.errors += other.errors
        self.statuses.update(other.statuses)
        self.latencies.extend(other.latencies)
        self.seconds += other.seconds
        self.cpu_seconds += other.cpu_seconds
        self.client_cpu_seconds += other.client_cpu_seconds
        self.rss_peak_mb = max(self.rss_peak_mb, other.rss_peak_mb)
        self.db_cpu_seconds += other.db_cpu_seconds

    @property
    def db_cpu_ms(self) -> float:
        return self.db_cpu_seconds * 1000 / self.requests if self.requests else float("nan")

    @property
    def cpu_ms(self) -> float:
        return self.cpu_seconds * 1000 / self.requests if self.requests else float("nan")


def process_cpu(pid: int) -> float:
    """User + system CPU seconds of a process so far (all its threads)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / TICKS


def process_rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


async def _exchange(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, raw: bytes) -> int:
    writer.write(raw)
    head = await reader.readuntil(b"\r\n\r\n")
    status = int(head[9:12])
    length = None
    for line in head.split(b"\r\n")[1:]:
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"content-length":
            length = int(value)
            break
    if length is None:
        raise RuntimeError("response without Content-Length")
    if length:
        await reader.readexactly(length)
    return status


def database_cpu(postmaster: int | None) -> float:
    """User + system CPU seconds so far of PostgreSQL: the postmaster and every process it started — the living
    ones, and those that have ended (a backend whose connection closed), which the postmaster has reaped and whose
    time the kernel adds to its children's: without them, a backend ending inside a window took its CPU out of
    the window's sum, and a row could show a negative DB CPU."""
    if postmaster is None:
        return 0.0
    total = 0.0
    try:
        root = psutil.Process(postmaster)
        ended = root.cpu_times()
        total += ended.children_user + ended.children_system
        for proc in [root, *root.children(recursive=True)]:
            try:
                times = proc.cpu_times()
                total += times.user + times.system
            except psutil.NoSuchProcess:
                continue
    except psutil.NoSuchProcess:
        return 0.0
    return total


async def load(
    port: int, request: Request, *, connections: int, seconds: float, warmup: float, pid: int,
    postmaster: int | None = None,
) -> Outcome:  # fmt: skip
    """``connections`` keep-alive connections sending ``request`` back to back for ``warmup`` + ``seconds``;
    what happened in the last ``seconds``, with the CPU and peak RSS of process ``pid`` over them (and the
    CPU of the PostgreSQL under ``postmaster``, when given and on this machine)."""
    raws = request.raws()
    out = Outcome()
    state = {"recording": False, "running": True}

    async def connection(turn: int) -> None:
        reader = writer = None
        while state["running"]:
            raw = raws[turn % len(raws)]
            turn += 1
            try:
                if writer is None:
                    reader, writer = await asyncio.open_connection("127.0.0.1", port)
                assert reader is not None
                began = time.perf_counter()
                status = await _exchange(reader, writer, raw)
                if state["recording"]:
                    out.requests += 1
                    out.statuses[status] += 1
                    out.latencies.append(time.perf_counter() - began)
                    if status >= 400:
                        out.errors += 1
            except (OSError, asyncio.IncompleteReadError, RuntimeError, ValueError):
                if state["recording"]:
                    out.errors += 1
                if writer is not None:
                    writer.close()
                reader = writer = None
                await asyncio.sleep(0.05)
        if writer is not None:
            writer.close()

    async def sample_rss() -> None:
        while state["recording"]:
            out.rss_peak_mb = max(out.rss_peak_mb, process_rss_mb(pid))
            await asyncio.sleep(0.25)

    tasks = [asyncio.create_task(connection(i * 7)) for i in range(connections)]
    await asyncio.sleep(warmup)
    state["recording"] = True
    db0 = database_cpu(postmaster)
    cpu0, client0, t0 = process_cpu(pid), resource.getrusage(resource.RUSAGE_SELF), time.perf_counter()
    sampler = asyncio.create_task(sample_rss())
    await asyncio.sleep(seconds)
    state["recording"] = False
    cpu1, client1, t1 = process_cpu(pid), resource.getrusage(resource.RUSAGE_SELF), time.perf_counter()
    db1 = database_cpu(postmaster)
    state["running"] = False
    await sampler
    await asyncio.wait(tasks, timeout=30)
    for task in tasks:
        task.cancel()
    out.seconds = t1 - t0
    out.cpu_seconds = cpu1 - cpu0
    out.db_cpu_seconds = db1 - db0
    out.client_cpu_seconds = (client1.ru_utime + client1.ru_stime) - (client0.ru_utime + client0.ru_stime)
    return out


# ---- the world --------------------------------------------------------------------------------------------


async def seed(url: str) -> None:
    settings = Settings(environment=Environment.development)
    engine = make_engine(url, settings)
    try:
        async with scoped_session(make_sessionmaker(engine), SYSTEM) as session:
            await seed_demo(session, Passwords(settings))
    finally:
        await engine.dispose()


@dataclass
class World:
    teacher: str
    account_id: uuid.UUID
    school_id: uuid.UUID
    class_id: uuid.UUID
    child_id: uuid.UUID
    children: int


async def pick(conn: asyncpg.Connection) -> World:
    """The head teacher of the largest class, that class, and its first left-behind child."""
    row = await conn.fetchrow(
        """SELECT a.username, a.id AS account_id, k.school_id, k.id AS class_id, count(*) AS children
           FROM school_class k JOIN account a ON a.id = k.head_teacher_id
           JOIN child c ON c.class_id = k.id AND c.status = 'enrolled'
           WHERE a.username IS NOT NULL GROUP BY 1, 2, 3, 4 ORDER BY count(*) DESC, a.username LIMIT 1"""
    )
    child = await conn.fetchval(
        "SELECT id FROM child WHERE class_id = $1 AND status = 'enrolled' ORDER BY is_left_behind DESC, name_pinyin"
        " LIMIT 1",
        row["class_id"],
    )
    return World(row["username"], row["account_id"], row["school_id"], row["class_id"], child, row["children"])


async def todo_statements(url: str, world: World, conn: asyncpg.Connection) -> list[tuple[str, list[Any]]]:
    """The statements the API runs for the teacher's to-do list, as the driver receives them (SQL and
    parameters), captured from the service itself in this process: the floor replays them on bare asyncpg.
    The scope settings and the audit entry are left out (the floor runs as the owner; ``floor + duties``
    writes its own entry)."""
    from sqlalchemy import event

    from api.models.accounts import Role
    from api.scoping import Principal, set_principal
    from api.services.care.todo import todo_list
    from api.services.children.rules import today_in_china

    account = await conn.fetchrow(
        "SELECT role, county_id, township_id, school_id FROM account WHERE id = $1", world.account_id
    )
    engine = make_engine(url, Settings(environment=Environment.development))
    captured: list[tuple[str, list[Any]]] = []

    @event.listens_for(engine.sync_engine, "before_cursor_execute")
    def grab(_conn: Any, _cursor: Any, statement: str, parameters: Any, _context: Any, _many: bool) -> None:
        if "set_config(" not in statement and "INSERT INTO audit_log" not in statement:
            captured.append((statement, list(parameters or ())))

    try:
        async with make_sessionmaker(engine)() as session:
            principal = Principal(
                account_id=world.account_id,
                role=Role(account["role"]),
                county_id=account["county_id"],
                township_id=account["township_id"],
                school_id=account["school_id"],
            )
            captured.clear()
            await set_principal(session, principal)
            await todo_list(session, principal, today=today_in_china(datetime.now(UTC)))
            await session.rollback()
    finally:
        await engine.dispose()
    return captured


TABLES = """
SELECT c.relname AS table, a.attname AS pk, format_type(a.atttypid, a.atttypmod) AS pk_type
FROM pg_index i JOIN pg_class c ON c.oid = i.indrelid JOIN pg_namespace n ON n.oid = c.relnamespace
JOIN pg_attribute a ON a.attrelid = c.oid AND a.attnum = i.indkey[0]
WHERE i.indisprimary AND i.indnatts = 1 AND n.nspname = 'public'
"""
UNIQUE_INDEXES = """
SELECT c.relname AS table, i.indexrelid AS index, a.attname AS column, format_type(a.atttypid, a.atttypmod) AS type,
       a.atttypmod - 4 AS max_length
FROM pg_index i JOIN pg_class c ON c.oid = i.indrelid JOIN pg_namespace n ON n.oid = c.relnamespace
CROSS JOIN LATERAL unnest(i.indkey::int2[]) WITH ORDINALITY AS k(attnum, ord)
JOIN pg_attribute a ON a.attrelid = c.oid AND a.attnum = k.attnum
WHERE i.indisunique AND NOT i.indisprimary AND n.nspname = 'public'
ORDER BY 1, 2, k.ord
"""
FOREIGN_KEYS = """
SELECT conrelid::regclass::text AS child, confrelid::regclass::text AS parent FROM pg_constraint WHERE contype = 'f'
"""


async def snapshot(conn: asyncpg.Connection) -> dict[str, tuple[str, str, set[Any]]]:
    out = {}
    for r in await conn.fetch(TABLES):
        keys = {k for (k,) in await conn.fetch(f'SELECT "{r["pk"]}" FROM "{r["table"]}"')}
        out[r["table"]] = (r["pk"], r["pk_type"], keys)
    return out


async def incident_template(conn: asyncpg.Connection, before: dict[str, tuple[str, str, set[Any]]]) -> dict[str, Any]:
    """The rows one report wrote (every table's rows whose key was not there ``before``), in an order they
    can be inserted in, for the floor to copy."""
    written: dict[str, tuple[list[str], list[tuple[Any, ...]]]] = {}
    ids: set[uuid.UUID] = set()
    for table, (pk, pk_type, keys) in before.items():
        rows = [r for r in await conn.fetch(f'SELECT * FROM "{table}"') if r[pk] not in keys]
        if not rows:
            continue
        columns = [c for c in rows[0].keys() if not (c == pk and pk_type != "uuid")]  # serial keys: the default
        if pk_type == "uuid":
            ids |= {r[pk] for r in rows}
        written[table] = (columns, [tuple(r[c] for c in columns) for r in rows])
    edges = [(r["child"], r["parent"]) for r in await conn.fetch(FOREIGN_KEYS)]
    order: list[str] = []
    pending = set(written)
    while pending:
        ready = sorted(t for t in pending if not any(c == t and p in pending and p != t for c, p in edges))
        if not ready:
            raise RuntimeError(f"no insert order for {pending}")
        order += ready
        pending -= set(ready)
    # A unique index over a copied row's fresh id holds by itself; in the others (a case code, an SMS reply
    # code per number) the last text column is redrawn.
    indexes: dict[Any, list[Any]] = {}
    for r in await conn.fetch(UNIQUE_INDEXES):
        indexes.setdefault(r["index"], []).append(r)
    unique: dict[str, dict[str, int]] = {}
    for columns in indexes.values():
        text = [c for c in columns if c["type"].startswith("character varying")]
        if text and not any(c["type"] == "uuid" for c in columns):
            unique.setdefault(columns[0]["table"], {})[text[-1]["column"]] = text[-1]["max_length"]
    return {
        "tables": [(t, written[t][0], written[t][1]) for t in order],
        "ids": ids,
        "unique_text": {t: unique.get(t, {}) for t in order},
    }


def spawn_in(folder: Path, args: list[str], env: dict[str, str], log: Path) -> subprocess.Popen[bytes]:
    """A process of another checkout (``python -m`` imports from the working directory first)."""
    return subprocess.Popen(args, env=env, stdout=log.open("wb"), stderr=subprocess.STDOUT, cwd=folder)


# ---- profiles ---------------------------------------------------------------------------------------------

# Frames every request passes through (the server, the ASGI chain): on the stack in every sample, they say
# nothing about where the time goes, so the summary leaves them out of its list of frames.
_PLUMBING = ("typer/", "click/", "<frozen runpy>", "uvicorn/", "starlette/", "asyncio/runners.py", "api/cli.py",
             "Middleware.__call__", "fastapi/routing.py", "fastapi/applications.py")  # fmt: skip


def _frame(raw: str) -> tuple[str, str]:
    """``function (path/file.py:12)`` → (``function``, ``path/file.py``)."""
    name, _, where = raw.rpartition(" (")
    return name, where.rstrip(")").rsplit(":", 1)[0]


def _package(path: str) -> str:
    """The package a file belongs to (``api.services`` for our own modules, ``stdlib`` for the rest)."""
    if path.startswith("<sqlalchemy"):
        return "sqlalchemy"
    path = path.split("/site-packages/", 1)[-1]
    parts = path.split("/")
    if parts[0] == "api":
        return "api." + parts[1].removesuffix(".py") if len(parts) > 1 else "api"
    known = ("sqlalchemy", "sqlmodel", "pydantic", "pydantic_core", "fastapi", "starlette", "asyncpg", "uvicorn",
             "jwt", "anyio", "greenlet", "httptools", "uvloop")  # fmt: skip
    return parts[0] if parts[0] in known else "stdlib and other"


def summarize_profile(path: Path, top: int = 22) -> list[str]:
    """Where the on-CPU samples of a collapsed-stack file fall: self time by package and by function, and the
    functions on the stack in the most samples (inclusive, server and ASGI plumbing left out). SQLAlchemy's
    async layer runs statements in greenlets, which py-spy shows as stacks of their own."""
    by_package: Counter[str] = Counter()
    self_time: Counter[tuple[str, str]] = Counter()
    inclusive: Counter[tuple[str, str]] = Counter()
    total = 0
    for line in path.read_text().splitlines():
        stack, _, count_text = line.rpartition(" ")
        if not stack:
            continue
        count = int(count_text)
        frames = [_frame(f) for f in stack.split(";")]
        total += count
        by_package[_package(frames[-1][1])] += count
        self_time[frames[-1]] += count
        for frame in set(frames):
            inclusive[frame] += count
    if not total:
        return ["(no samples)"]

    def pct(n: int) -> str:
        return f"{n * 100 / total:.1f} %"

    lines = [
        f"{total} samples. Self time by package: "
        + ", ".join(f"{name} {pct(n)}" for name, n in by_package.most_common(10))
        + ".",
        "",
        "| inclusive | function | | self | function |",
        "|---:|---|---|---:|---|",
    ]
    shown = [
        (n, name, where)
        for (name, where), n in inclusive.most_common()
        if not any(p in where or p in name for p in _PLUMBING) and name != "<module>"
    ][:top]
    selfs = [(n, name, where) for (name, where), n in self_time.most_common(top)]
    for i in range(max(len(shown), len(selfs))):
        left = f"{pct(shown[i][0])} | `{shown[i][1]}` ({shown[i][2]})" if i < len(shown) else " | "
        right = f"{pct(selfs[i][0])} | `{selfs[i][1]}` ({selfs[i][2]})" if i < len(selfs) else " | "
        lines.append(f"| {left} | | {right} |")
    return lines


async def profile(
    py_spy: str,
    pid: int,
    port: int,
    request: Request,
    out: Path,
    seconds: float,
    *,
    native: bool = False,
    connections: int = 8,
) -> None:
    """Load ``request`` at ``connections`` while py-spy samples ``pid``: collapsed stacks, then a flame graph.
    ``native``: with the C frames (the driver's protocol, system calls), pausing the process for each sample."""
    for fmt, suffix in (("raw", ".txt"), ("flamegraph", ".svg")):
        spy = await asyncio.create_subprocess_exec(
            py_spy, "record", "--pid", str(pid), "--duration", str(int(seconds)), "--rate", "200",
            "--native" if native else "--nonblocking", "--function",
            "--format", fmt, "--output", str(out.with_suffix(suffix)),
            stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.PIPE,
        )  # fmt: skip
        await load(port, request, connections=connections, seconds=seconds + 1, warmup=0.5, pid=pid)
        _, err = await spy.communicate()
        if spy.returncode != 0:
            raise RuntimeError(f"py-spy failed: {err.decode()[-500:]}")


# ---- the run ----------------------------------------------------------------------------------------------


@dataclass
class Row:
    endpoint: str
    connections: int
    server: str
    outcome: Outcome  # its turns pooled
    turns: list[Outcome] = field(default_factory=list)


def fmt_row(row: Row, floor: Row | None) -> str:
    o = row.outcome
    ratio = f"{o.rate / floor.outcome.rate * 100:.0f} %" if floor and floor.outcome.rate else ""
    p99x = f"{o.p(0.99) / floor.outcome.p(0.99):.1f}×" if floor and floor.outcome.latencies else ""
    statuses = ", ".join(f"{k}: {v}" for k, v in sorted(o.statuses.items()) if k >= 400)
    return (
        f"| {row.endpoint} | {row.connections} | {row.server} | {o.rate:.0f} | {ratio} | {o.p(0.5):.1f} |"
        f" {o.p(0.99):.1f} | {p99x} | {o.errors}{f' ({statuses})' if statuses else ''} | {o.cpu_ms:.2f} |"
        f" {o.db_cpu_ms:.2f} | {o.rss_peak_mb:.0f} |"
    )


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--seconds", type=float, default=10.0, help="measured seconds of each row")
    parser.add_argument("--warmup", type=float, default=2.0, help="unmeasured seconds before each row")
    parser.add_argument("--turns", type=int, default=3, help="interleaved turns of each endpoint and connections")
    parser.add_argument("--connections", type=int, nargs="+", default=[8, 64])
    parser.add_argument("--endpoints", nargs="+", default=["list", "file", "incident", "todo"])
    parser.add_argument("--profile", action="store_true", help="py-spy the API under load for each endpoint")
    parser.add_argument("--native", action="store_true", help="profile with C frames (py-spy --native)")
    parser.add_argument("--profile-connections", type=int, default=8, help="the load while profiling")
    parser.add_argument("--profile-seconds", type=float, default=10.0)
    parser.add_argument("--name", default="api-floor", help="bench/results/<name>.md and bench/results/<name>/")
    parser.add_argument("--note", default="", help="a line about this run for the results file")
    parser.add_argument("--no-write", action="store_true")
    parser.add_argument(
        "--compare",
        type=Path,
        help="another checkout of the service (e.g. `git worktree add /tmp/before <commit>`): its API runs beside"
        " this one on the same database, in rows of its own ('API (before)')",
    )
    args = parser.parse_args()

    workdir = Path(tempfile.mkdtemp(prefix="liushou-bench-floor-"))
    load_at_start = os.getloadavg()
    if os.environ.get("DATABASE_URL"):
        base = os.environ["DATABASE_URL"].replace("postgresql+asyncpg://", "postgresql://")
        admin = await asyncpg.connect(base)
        name = f"liushou_floor_{os.getpid()}"
        await admin.execute(f'CREATE DATABASE "{name}"')
        await admin.close()
        url = base.rsplit("/", 1)[0].replace("postgresql://", "postgresql+asyncpg://") + f"/{name}"
    else:
        url = await embedded_database(workdir / "pg", "liushou_bench")
    dsn = url.replace("postgresql+asyncpg://", "postgresql://")
    await upgrade_to_head(url)
    print("seeding the demo county …", flush=True)
    await seed(url)
    conn = await asyncpg.connect(dsn)
    world = await pick(conn)
    # The PostgreSQL of this run, when it runs on this machine: its CPU per request is measured too.
    postmaster = None
    if not os.environ.get("DATABASE_URL"):
        postmaster = psutil.Process(await conn.fetchval("SELECT pg_backend_pid()")).ppid()

    api_port, floor_port = free_port(), free_port()
    unused = {channel: free_port() for channel in ("sms", "voice", "wechat")}  # nothing is sent: no worker runs
    env = service_env(url, unused, api_port, {"LIUSHOU_ACCESS_TOKEN_MINUTES": "120"})
    env.pop("LIUSHOU_DB_POOL_SIZE")  # the service's own default
    procs = [spawn([sys.executable, "-m", "api.cli", "serve", "--port", str(api_port)], env, workdir / "api.log")]
    rows: list[Row] = []
    notes: list[str] = []
    profiles: dict[str, list[str]] = {}
    try:
        await wait_http(f"http://127.0.0.1:{api_port}/healthz")
        api_pid = procs[0].pid
        before_port = before_pid = 0
        if args.compare:
            before_port = free_port()
            before_env = env | {"PYTHONPATH": str(args.compare.resolve())}
            before_env["LIUSHOU_PUBLIC_BASE_URL"] = f"http://127.0.0.1:{before_port}"
            before = spawn_in(args.compare, [sys.executable, "-m", "api.cli", "serve", "--port", str(before_port)],
                              before_env, workdir / "api-before.log")  # fmt: skip
            procs.append(before)
            await wait_http(f"http://127.0.0.1:{before_port}/healthz")
            before_pid = before.pid
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{api_port}") as client:
            login = await client.post("/auth/login", json={"username": world.teacher, "password": DEMO_PASSWORD})
            login.raise_for_status()
            token = login.json()["access_token"]
            # Whether the to-do list exists, asked of the route itself: fetching /openapi.json would build the
            # schema in the API process and add its megabytes to the RSS measured.
            has_todo = (await client.get(TODO, headers={"Authorization": f"Bearer {token}"})).status_code != 404
        session_id = await conn.fetchval(
            "SELECT id FROM login_session WHERE account_id = $1 ORDER BY created_at DESC LIMIT 1", world.account_id
        )
        auth = {"Authorization": f"Bearer {token}"}
        duty = {"X-Account-Id": str(world.account_id), "X-Session-Id": str(session_id)}
        classmates = [world.child_id] + [
            row["id"]
            for row in await conn.fetch(
                "SELECT id FROM child WHERE class_id = $1 AND status = 'enrolled' AND id <> $2 ORDER BY name_pinyin",
                world.class_id,
                world.child_id,
            )
        ]
        reports = [
            json.dumps(
                {
                    "child_id": str(child_id),
                    "category": "injury",
                    "severity": "moderate",
                    "summary": "体育课跳远落地时扭伤右脚踝，肿胀明显",
                    "location": "学校操场沙坑",
                    "occurred_at": datetime.now(UTC).isoformat(),
                    "first_actions": "冰敷固定，校医检查，班主任陪同",
                },
                ensure_ascii=False,
            ).encode()
            for child_id in classmates
        ]
        report = reports[0]

        # One report through the API, with nothing else running: the rows it wrote are the floor's template.
        before = await snapshot(conn)
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{api_port}") as client:
            first = await client.post("/incidents", content=report, headers=auth | {"Content-Type": "application/json"})
        if first.status_code != 201:
            raise RuntimeError(f"reporting an incident answered {first.status_code}: {first.text[:300]}")
        template = await incident_template(conn, before)
        template_path = workdir / "incident-template.pickle"
        template_path.write_bytes(pickle.dumps(template))
        written = ", ".join(f"{t} {len(rs)}" for t, _, rs in template["tables"])
        notes.append(
            f"One report writes (the floor inserts the same rows): {written}. The API's reports go to the class's"
            f" {len(reports)} children in turn."
        )

        todo = [TODO] if has_todo else []
        if todo:
            todo_path = workdir / "todo-statements.pickle"
            todo_path.write_bytes(pickle.dumps(await todo_statements(url, world, conn)))
        floor_env = env | {"FLOOR_DSN": dsn, "FLOOR_TEMPLATE": str(template_path)}
        if todo:
            floor_env["FLOOR_TODO"] = str(todo_path)
        procs.append(
            spawn([sys.executable, "-m", "uvicorn", "bench.floor_app:app", "--port", str(floor_port),
                   "--log-level", "warning", "--no-access-log"], floor_env, workdir / "floor.log")
        )  # fmt: skip
        await wait_http(f"http://127.0.0.1:{floor_port}/docs")
        floor_pid = procs[-1].pid

        page = f"class_id={world.class_id}&limit={PAGE}"
        school = f"school_id={world.school_id}"
        targets: dict[str, list[tuple[str, int, int, Request]]] = {
            "list": [
                ("API", api_port, api_pid, Request("GET", f"/children?{page}", auth)),
                ("floor", floor_port, floor_pid, Request("GET", f"/children?{school}&{page}")),
                ("floor + duties", floor_port, floor_pid, Request("GET", f"/duty/children?{school}&{page}", duty)),
            ],
            "file": [
                ("API", api_port, api_pid, Request("GET", f"/children/{world.child_id}", auth)),
                ("floor", floor_port, floor_pid, Request("GET", f"/children/{world.child_id}?{school}")),
                ("floor + duties", floor_port, floor_pid, Request("GET", f"/duty/children/{world.child_id}", duty)),
            ],
            "incident": [
                ("API", api_port, api_pid, Request("POST", "/incidents", auth, bodies=reports)),
                ("floor (bare insert)", floor_port, floor_pid, Request("POST", "/incidents", {}, report)),
            ],
        }  # fmt: skip
        if todo:
            targets["todo"] = [
                ("API", api_port, api_pid, Request("GET", todo[0], auth)),
                ("floor", floor_port, floor_pid, Request("GET", "/care/todo")),
                ("floor + duties", floor_port, floor_pid, Request("GET", "/duty/care/todo", duty)),
            ]
            notes.append(
                f"The to-do list: `GET {todo[0]}`; its floor replays on bare asyncpg the statements the service"
                " ran for this teacher (captured in the bench process), one after another on one connection."
            )
        else:
            notes.append("The to-do list: the API has no such route yet; not measured.")

        if args.compare:
            for servers in targets.values():
                servers.insert(1, ("API (before)", before_port, before_pid, servers[0][3]))

        for endpoint in [e for e in args.endpoints if e in targets]:
            for connections in args.connections:
                group = [Row(endpoint, connections, server, Outcome()) for server, *_ in targets[endpoint]]
                rows.extend(group)
                for turn in range(1, (1 if endpoint == "incident" else args.turns) + 1):
                    for row, (server, port, pid, request) in zip(group, targets[endpoint], strict=True):
                        print(f"{endpoint} · {connections} connections · {server} · turn {turn} …", flush=True)
                        outcome = await load(
                            port,
                            request,
                            connections=connections,
                            seconds=args.seconds,
                            warmup=args.warmup,
                            pid=pid,
                            postmaster=postmaster,
                        )
                        row.turns.append(outcome)
                        row.outcome.add(outcome)
                        print(f"  {fmt_row(Row(endpoint, connections, server, outcome), None)}", flush=True)

        if args.profile:
            py_spy = shutil.which("py-spy", path=str(Path(sys.executable).parent)) or shutil.which("py-spy")
            if py_spy is None:
                raise RuntimeError("py-spy is not installed (pip install py-spy)")
            folder = RESULTS / args.name
            folder.mkdir(parents=True, exist_ok=True)
            for endpoint in [e for e in args.endpoints if e in targets]:
                print(f"profiling {endpoint} …", flush=True)
                _, port, pid, request = targets[endpoint][0]
                await profile(
                    py_spy,
                    pid,
                    port,
                    request,
                    folder / endpoint,
                    args.profile_seconds,
                    native=args.native,
                    connections=args.profile_connections,
                )
                profiles[endpoint] = summarize_profile((folder / endpoint).with_suffix(".txt"))
    finally:
        await conn.close()
        stop_processes(procs)

    lines = [
        "# Our API against the bare stack (FastAPI + asyncpg), side by side",
        "",
        f"Run {datetime.now(UTC):%Y-%m-%d %H:%M} UTC on {platform.platform()}, {os.cpu_count()} CPUs shared"
        f" (load average {load_at_start[0]:.1f} at the start), Python {platform.python_version()}; embedded"
        " PostgreSQL with the demo county. API: `liushou serve` (one uvicorn process, its logging, no escalation"
        " worker in it). Floor: `bench/floor_app.py` (one uvicorn process; same rows, hand-written SQL, one query"
        " per read). Load: one asyncio process, keep-alive HTTP/1.1,"
        f" {args.warmup:.0f} s warm-up then {args.seconds:.0f} s measured, in {args.turns} turn(s) per row of a read"
        " (a report's row in one): the servers of an endpoint and connection count one after another within a"
        " turn, a row pooling its turns; a head teacher"
        f" ({world.teacher}) and their class of {world.children} children (`limit={PAGE}`).",
        "",
        *([args.note, ""] if args.note else []),
        "`floor + duties` also looks up the login session and account, and writes the audit entry in the read's"
        " transaction, as the service must. `% of floor` is against the bare `floor` row of the same endpoint and"
        " connections; `p99 ×` likewise. CPU: the server process's CPU time over the measured window ÷ requests;"
        " DB CPU: PostgreSQL's (all its processes), likewise.",
        "",
        "| endpoint | connections | server | req/s | % of floor | p50 ms | p99 ms | p99 × floor | errors |"
        " CPU ms/req | DB CPU ms/req | RSS MB |",
        "|---|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    floors = {(r.endpoint, r.connections): r for r in rows if r.server.startswith("floor") and "duties" not in r.server}
    for r in rows:
        floor = floors.get((r.endpoint, r.connections))
        lines.append(fmt_row(r, floor if floor is not None and floor is not r else None))
    client_cpu = sum(r.outcome.client_cpu_seconds for r in rows) / max(1.0, sum(r.outcome.seconds for r in rows))
    lines += ["", f"The load generator used {client_cpu:.2f} of a core on average while measuring.", ""]

    def find_row(endpoint: str, connections: int, server: str) -> Row | None:
        found = (r for r in rows if (r.endpoint, r.connections, r.server) == (endpoint, connections, server))
        return next(found, None)

    def find(endpoint: str, connections: int, server: str) -> Outcome | None:
        row = find_row(endpoint, connections, server)
        return row.outcome if row is not None else None

    def by_turn(endpoint: str, connections: int, measure: Any) -> str:
        """The ratio of the API to the floor in each turn (``measure`` of two outcomes), when there are turns."""
        api, floor = find_row(endpoint, connections, "API"), find_row(endpoint, connections, "floor")
        if api is None or floor is None or len(api.turns) < 2:
            return ""
        each = [measure(a, f) for a, f in zip(api.turns, floor.turns, strict=True)]
        return f" (the turns: {', '.join(each)})"

    targets_lines = []
    for endpoint, label in (("list", "the class list"), ("file", "one child's file"), ("todo", "the to-do list")):
        api64, floor64 = find(endpoint, 64, "API"), find(endpoint, 64, "floor")
        api8, floor8 = find(endpoint, 8, "API"), find(endpoint, 8, "floor")
        if api64 and floor64 and floor64.rate:
            share = api64.rate / floor64.rate * 100
            each = by_turn(endpoint, 64, lambda a, f: f"{a.rate / f.rate * 100:.0f} %")
            targets_lines.append(f"- {label}: {share:.0f} % of the floor's req/s at 64 connections{each}"
                                 f" (target ≥ 35 %) {'— met' if share >= 35 else '— not met'}")  # fmt: skip
        if api8 and floor8 and floor8.latencies:
            times = api8.p(0.99) / floor8.p(0.99)
            each = by_turn(endpoint, 8, lambda a, f: f"{a.p(0.99) / f.p(0.99):.1f}×")
            targets_lines.append(f"- {label}: p99 at 8 connections {times:.1f}× the floor's{each} (target ≤ 3×)"
                                 f" {'— met' if times <= 3 else '— not met'}")  # fmt: skip
    incident = [o for r in rows if r.endpoint == "incident" and r.server == "API" for o in r.turns or [r.outcome]]
    if incident:
        worst = max(o.cpu_ms for o in incident)
        targets_lines.append(f"- reporting an incident: {worst:.1f} ms of API CPU per report in the worst turn"
                             " (target ≤ 4 ms)"
                             f" {'— met' if worst <= 4 else '— not met'}")  # fmt: skip
    api_rss = max((r.outcome.rss_peak_mb for r in rows if r.server == "API"), default=0.0)
    if api_rss:
        targets_lines.append(f"- the API's peak RSS under load: {api_rss:.0f} MB (target ≤ 150 MB)"
                             f" {'— met' if api_rss <= 150 else '— not met'}")  # fmt: skip
    if args.compare:
        lines += [
            f"Before and after, side by side: `API (before)` is the checkout `{args.compare.name}` on the same"
            " database, loaded in the same run.",
            "",
            "| endpoint | connections | req/s before → after | % of floor before → after | CPU ms/req before → after |"
            " p99 ms before → after |",
            "|---|---:|---:|---:|---:|---:|",
        ]
        for r in rows:
            if r.server != "API":
                continue
            old = find(r.endpoint, r.connections, "API (before)")
            floor = floors.get((r.endpoint, r.connections))
            if old is None:
                continue
            o = r.outcome
            share = (
                f"{old.rate / floor.outcome.rate * 100:.0f} % → {o.rate / floor.outcome.rate * 100:.0f} %"
                if floor and floor.outcome.rate
                else ""
            )
            lines.append(
                f"| {r.endpoint} | {r.connections} | {old.rate:.0f} → {o.rate:.0f} | {share} |"
                f" {old.cpu_ms:.2f} → {o.cpu_ms:.2f} | {old.p(0.99):.0f} → {o.p(0.99):.0f} |"
            )
        lines.append("")
    lines += ["Against the targets of issue #10:", "", *targets_lines, "", *(f"{n}" for n in notes), ""]
    if profiles:
        lines += [
            f"## Profiles (py-spy, the API at {args.profile_connections} connections)",
            "",
            f"Flame graphs and collapsed stacks (speedscope opens them) in `bench/results/{args.name}/`.",
            "",
        ]
        for endpoint, summary in profiles.items():
            lines += [f"### {endpoint}", "", f"`{endpoint}.svg`, `{endpoint}.txt`. " + summary[0], *summary[1:], ""]
    text = "\n".join(lines) + "\n"
    print()
    print(text)
    if not args.no_write:
        out = RESULTS / f"{args.name}.md"
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(text)
        print(f"written to {out.relative_to(ROOT)}")


if __name__ == "__main__":
    # SIGTERM unwinds like Ctrl-C, so the API and the floor are stopped too.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    asyncio.run(main())
