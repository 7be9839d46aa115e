"""The async engine and sessions (asyncpg)."""

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker, create_async_engine

from api.audit import CLOCK_KEY
from api.clock import Clock
from api.embedded_pg import asyncpg_url, ensure_database, start_embedded
from api.scoping import Principal, set_principal
from api.settings import Settings

EMBEDDED_DATABASE = "liushou"


async def resolve_database_url(settings: Settings) -> str:
    """``DATABASE_URL`` if set, else a database on the embedded server (started if needed)."""
    if settings.database_url:
        url = settings.database_url
        for prefix in ("postgresql://", "postgres://"):
            if url.startswith(prefix):
                url = "postgresql+asyncpg://" + url[len(prefix) :]
        return url
    uri = await asyncio.to_thread(start_embedded, settings.embedded_pg_dir)
    await ensure_database(uri, EMBEDDED_DATABASE)
    return asyncpg_url(uri, EMBEDDED_DATABASE)


def make_engine(url: str, settings: Settings) -> AsyncEngine:
    return create_async_engine(
        url,
        pool_size=settings.db_pool_size,
        max_overflow=settings.db_pool_size,
        pool_pre_ping=True,
        echo=settings.db_echo,
        # Error messages (and the echo) never carry statement parameters: they are children's names and numbers.
        hide_parameters=True,
        connect_args={"server_settings": {"timezone": "UTC", "application_name": "liushou"}},
    )


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
