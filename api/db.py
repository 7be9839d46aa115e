"""The async engine and sessions (asyncpg)."""

import asyncio
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import sqlalchemy as sa
from sqlalchemy import Engine, event, exc
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker, create_async_engine

from api.audit import CLOCK_KEY
from api.clock import Clock
from api.embedded_pg import asyncpg_url, ensure_database, start_embedded
from api.scoping import Principal, set_principal
from api.settings import Settings

EMBEDDED_DATABASE = "liushou"
# A pooled connection used this recently is taken as alive; one idle longer is pinged before it is handed out.
PING_AFTER_IDLE_SECONDS = 5.0
_LAST_USED = "liushou_last_used"


async def resolve_database_url(settings: Settings) -> str:
    """``DATABASE_URL`` if set, else a database on the embedded server (started if needed)."""
    if settings.database_url:
        return driver_url(settings.database_url)
    uri = await asyncio.to_thread(start_embedded, settings.embedded_pg_dir)
    await ensure_database(uri, EMBEDDED_DATABASE)
    return asyncpg_url(uri, EMBEDDED_DATABASE)


def driver_url(url: str) -> str:
    """A ``postgresql://`` URL as SQLAlchemy's asyncpg dialect wants it."""
    for prefix in ("postgresql://", "postgres://"):
        if url.startswith(prefix):
            return "postgresql+asyncpg://" + url[len(prefix) :]
    return url


def make_engine(url: str, settings: Settings) -> AsyncEngine:
    engine = create_async_engine(
        url,
        # Up to twice the setting, every connection kept once opened: with overflow connections, each one
        # returned while the pool was full was closed and another opened at the next burst — a connect, its
        # type codecs and its prepared statements again, many times a second under load.
        pool_size=2 * settings.db_pool_size,
        max_overflow=0,
        # Last returned, first reused: at 8 requests in flight after a burst of 64 had opened every connection,
        # handing them out in turn sent each request to a backend idle since the last round, its caches gone
        # cold: a third more database CPU per read (bench/api_floor.py). Stacked, the same few stay warm and the
        # rest idle, as asyncpg's own pool and PgBouncer (``server_round_robin = 0``) do by default.
        pool_use_lifo=True,
        echo=settings.db_echo,
        # Error messages (and the echo) never carry statement parameters: they are children's names and numbers.
        hide_parameters=True,
        connect_args={"server_settings": {"timezone": "UTC", "application_name": "liushou"}},
    )
    _ping_when_idle(engine.sync_engine)
    return engine


def _ping_when_idle(engine: Engine) -> None:
    """Check a pooled connection before use only when it has sat idle: ``pool_pre_ping`` pinged on every
    checkout, a round trip on every request. A connection that died in between (PostgreSQL restarted) is
    replaced before it is used, as with ``pool_pre_ping``; one that dies while in use fails that request
    (503, ``api.errors``) and the pool is refreshed."""

    @event.listens_for(engine, "connect")
    def connected(_dbapi_connection: Any, record: Any) -> None:
        record.info[_LAST_USED] = time.monotonic()

    @event.listens_for(engine, "checkin")
    def checked_in(_dbapi_connection: Any, record: Any) -> None:
        if record is not None:
            record.info[_LAST_USED] = time.monotonic()

    @event.listens_for(engine, "checkout")
    def checked_out(dbapi_connection: Any, record: Any, _proxy: Any) -> None:
        if time.monotonic() - record.info.get(_LAST_USED, 0.0) < PING_AFTER_IDLE_SECONDS:
            return
        dialect = engine.dialect
        try:
            dialect.do_ping(dbapi_connection)
        except dialect.loaded_dbapi.Error as error:
            if dialect.is_disconnect(error, dbapi_connection, None):
                raise exc.DisconnectionError() from error  # the pool replaces it and checks out again
            raise


def make_sessionmaker(engine: AsyncEngine) -> async_sessionmaker[AsyncSession]:
    return async_sessionmaker(engine, expire_on_commit=False)


@asynccontextmanager
async def scoped_session(
    sessionmaker: async_sessionmaker[AsyncSession], principal: Principal, *, clock: Clock | None = None
) -> AsyncIterator[AsyncSession]:
    """A session outside a request (worker, CLI, seeding) that commits on success; its statements run in
    ``principal``'s scope (:data:`api.scoping.SYSTEM`: as the owner, across scope — say why at the call)."""
    async with sessionmaker() as session:
        await set_principal(session, principal)
        if clock is not None:
            session.info[CLOCK_KEY] = clock
        try:
            yield session
            await session.commit()
        except BaseException:
            await session.rollback()
            raise


async def lock_until_commit(session: AsyncSession, key: str) -> None:
    """Queue behind every other transaction holding ``key`` (a transaction-level advisory lock, released at
    commit or rollback).

    Take it before writing a row that an exclusion constraint checks against its neighbours (a school's terms,
    its plans, a booth's calls): two such inserts at the same instant each find the other's uncommitted row in
    the index and wait for each other, and PostgreSQL breaks that deadlock by failing one of them, a 503 for a
    user who deserved a 409. In the queue the second writer finds the first's committed row and is refused
    cleanly. Name the key ``"<what>:<scope>"``; it is hashed to the lock's 64-bit number by PostgreSQL."""
    await session.execute(sa.select(sa.func.pg_advisory_xact_lock(sa.func.hashtextextended(key, 0))))
