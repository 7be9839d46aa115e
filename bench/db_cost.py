"""PostgreSQL's CPU per request of the class page and the file, without HTTP: the API's statements beside the floor's.

    .venv/bin/python -m bench.db_cost [--requests 1000] [--repeat 3] [--compare DIR] [--name db-cost]

One connection sends a request's statements one request after another, as the service sends them (``BEGIN``, the
sign-in look-up that sets the scope, the page or the file, the audit entry, ``COMMIT``: the statements of
``api/services/auth.py``, ``api/services/children/*`` and ``api/audit.py``, prepared as asyncpg prepares them), then
the same duties as ``bench/floor_app.py`` does them (``floor + duties``: as the owner, no row security). The figure
is the backend process's CPU time (``/proc/<pid>/stat``) ÷ requests: no HTTP, no Python server, no background
processes, so it is steady on a loaded machine where ``bench.api_floor``'s PostgreSQL column is not (there, the
server's background work is divided among fewer requests for a slower server).

``--compare DIR``: the same measure for another checkout (``git worktree add DIR <commit>``), on a database of its
own migrated by its own migrations, in the same run (its statements and its policies).
"""

import argparse
import asyncio
import datetime as dt
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
TICKS = os.sysconf("SC_CLK_TCK")


def backend_cpu(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / TICKS


async def measure(url: str, requests: int, repeat: int) -> dict[str, list[float]]:
    """In the checkout on ``sys.path``: migrate and seed ``url``, then the CPU per request of each sequence."""
    import asyncpg

    from api.audit import _AUDIT_COLUMNS, _WRITE
    from api.migrations import upgrade_to_head
    from api.services.auth import _PRINCIPAL_LOOKUP
    from api.services.children.records import _FILE
    from api.services.children.search import ChildFilters, _search_shape, _search_statements
    from bench import floor_app
    from bench.api_floor import pick, seed

    await upgrade_to_head(url)
    await seed(url)
    conn = await asyncpg.connect(url.replace("postgresql+asyncpg://", "postgresql://"))
    world = await pick(conn)
    school_id, class_id, child_id, account_id = world.school_id, world.class_id, world.child_id, world.account_id
    session_id = uuid.uuid4()
    await conn.execute(
        "INSERT INTO login_session (id, account_id, method, created_at) VALUES ($1, $2, 'password', now())",
        session_id,
        account_id,
    )
    shape, params = _search_shape(ChildFilters(class_id=class_id))
    page, _ = _search_statements(shape)
    page_args = page.args(params | {"offset": 0, "limit": 20})
    lookup_args = _PRINCIPAL_LOOKUP.args({"account_id": account_id, "session_id": session_id})
    file_args = _FILE.args({"child_id": child_id})
    child_ids = [str(uuid.uuid4()) for _ in range(world.children)]
    entry: dict[str, Any] = dict.fromkeys(_AUDIT_COLUMNS)
    entry |= {
        "at": dt.datetime.now(dt.UTC), "account_id": account_id, "role": "teacher", "action": "child.list",
        "resource_type": "child", "school_id": school_id, "request_id": uuid.uuid4().hex, "client_ip": "127.0.0.1",
        "changes": {"class_id": str(class_id), "count": world.children, "child_ids": child_ids},
    }  # fmt: skip
    audit_args = _WRITE.args(entry)
    detail = json.dumps({"class_id": str(class_id), "count": world.children, "child_ids": child_ids})

    async def api(read: str, args: list[Any], fetch: Any) -> None:
        await conn.execute("BEGIN")
        await conn.fetchrow(_PRINCIPAL_LOOKUP.sql, *lookup_args)
        await fetch(read, *args)
        await conn.execute(_WRITE.sql, *audit_args)
        await conn.execute("COMMIT")

    async def floor(read: str, args: list[Any], fetch: Any, action: str) -> None:
        async with conn.transaction():
            await conn.fetchrow(floor_app.PRINCIPAL, account_id, session_id)
            await fetch(read, *args)
            await conn.execute(
                floor_app.AUDIT, account_id, "teacher", action, None, school_id, None, uuid.uuid4().hex,
                "127.0.0.1", detail,
            )  # fmt: skip

    sequences = {
        "list API": lambda: api(page.sql, page_args, conn.fetch),
        "list floor + duties": lambda: floor(
            floor_app.LIST, [school_id, class_id, 20, floor_app.PHONE], conn.fetch, "child.list"
        ),
        "file API": lambda: api(_FILE.sql, file_args, conn.fetchrow),
        "file floor + duties": lambda: floor(
            floor_app.FILE, [child_id, school_id, floor_app.PHONE], conn.fetchrow, "child.read"
        ),
    }
    pid = await conn.fetchval("SELECT pg_backend_pid()")
    out: dict[str, list[float]] = {}
    for name, run in sequences.items():
        for _ in range(50):  # past the first executions' custom plans
            await run()
        out[name] = []
        for _ in range(repeat):
            before = backend_cpu(pid)
            for _ in range(requests):
                await run()
            out[name].append((backend_cpu(pid) - before) * 1000 / requests)
    await conn.close()
    return out


def run_in(tree: Path, url: str, requests: int, repeat: int) -> dict[str, list[float]]:
    """:func:`measure` in a process importing ``tree``'s code (this file's ``--measure``)."""
    env = os.environ | {"PYTHONPATH": str(tree)}
    done = subprocess.run(
        [sys.executable, str(Path(__file__).resolve()), "--measure", url, str(requests), str(repeat)],
        env=env, cwd=tree, capture_output=True, text=True, check=False,
    )  # fmt: skip
    if done.returncode != 0:
        raise SystemExit(f"measuring {tree} failed:\n{done.stderr[-3000:]}")
    result: dict[str, list[float]] = json.loads(done.stdout.strip().splitlines()[-1])
    return result


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--requests", type=int, default=1000)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--compare", type=Path, help="another checkout, measured on a database of its own")
    parser.add_argument("--name", default="db-cost", help="bench/results/<name>.md")
    parser.add_argument("--no-write", action="store_true")
    args = parser.parse_args()

    from api.embedded_pg import release
    from bench.escalation import embedded_database

    workdir = Path(tempfile.mkdtemp(prefix="liushou-bench-db-"))
    load = os.getloadavg()
    trees = {"this checkout": ROOT} | (
        {f"before ({args.compare.name})": args.compare.resolve()} if args.compare else {}
    )
    results: dict[str, dict[str, list[float]]] = {}
    started = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())
    try:
        for i, (label, tree) in enumerate(trees.items()):
            url = await embedded_database(workdir / "pg", f"liushou_db_cost_{i}")
            print(f"{label}: migrating, seeding and measuring …", flush=True)
            results[label] = run_in(tree, url, args.requests, args.repeat)
    finally:
        release(workdir / "pg")
        shutil.rmtree(workdir, ignore_errors=True)
    lines = [
        "# PostgreSQL's CPU per request: the class page and the file, the API's statements beside the floor's",
        "",
        f"Run {started}, 2 CPUs shared (load average {load[0]:.1f} at the start, {os.getloadavg()[0]:.1f} at the end);"
        f" embedded PostgreSQL, the demo county; one connection, {args.requests} requests in a row, {args.repeat}"
        " times. `.venv/bin/python -m bench.db_cost"
        + (f" --compare {args.compare.name}" if args.compare else "")
        + "`. The backend's CPU time ÷ requests (ms): `API` is the service's statements under the head teacher's"
        " row-level security (`BEGIN`, the sign-in look-up setting the scope, the read, the audit entry, `COMMIT`);"
        " `floor + duties` is bench/floor_app.py's, as the owner.",
        "",
        "| request | " + " | ".join(trees) + " |",
        "|---|" + "---:|" * len(trees),
    ]
    for sequence in next(iter(results.values())):
        cells = [" / ".join(f"{v:.2f}" for v in results[label][sequence]) for label in trees]
        lines.append(f"| {sequence} | " + " | ".join(cells) + " |")
    text = "\n".join(lines) + "\n"
    print(text)
    if not args.no_write:
        out = ROOT / "bench" / "results" / f"{args.name}.md"
        out.write_text(text)
        print(f"written to {out.relative_to(ROOT)}")


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == "--measure":
        # Run from another checkout's folder: its code first on the path, not this file's folder.
        sys.path[0] = os.getcwd()
        figures = asyncio.run(measure(sys.argv[2], int(sys.argv[3]), int(sys.argv[4])))
        print(json.dumps(figures))
    else:
        asyncio.run(main())
