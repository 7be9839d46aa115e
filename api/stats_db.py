"""Where the bureau's statistics read from: a PostgreSQL replica when ``LIUSHOU_STATS_DATABASE_URL`` is set
(so that a county's heavy reads never slow a school's emergency on the primary), else the main database.

A replica is a copy of the same database — same tables, same roles, same row-level security — so a
statistics session on it takes the caller's scope exactly as a request's session does
(:func:`api.scoping.set_principal`). Statistics only read: the session is rolled back at the end.
"""

from collections.abc import AsyncIterator
from typing import Any

from fastapi import FastAPI, Request
from sqlalchemy.ext.asyncio import AsyncSession

from api.audit import CLOCK_KEY
from api.db import driver_url, make_engine, make_sessionmaker
from api.scoping import Principal, set_principal


def install(app: FastAPI) -> None:
    """Open the replica's engine with the app (if one is configured) and close it with the app."""
    app.state.stats_sessionmaker = None

    async def start(app: Any) -> None:
        url = app.state.settings.stats_database_url
        if url:
            app.state.stats_engine = make_engine(driver_url(url), app.state.settings)
            app.state.stats_sessionmaker = make_sessionmaker(app.state.stats_engine)

    async def stop(app: Any) -> None:
        engine = getattr(app.state, "stats_engine", None)
        if engine is not None:
            await engine.dispose()
            app.state.stats_engine = None
            app.state.stats_sessionmaker = None

    app.state.startup_hooks.append(start)
    app.state.shutdown_hooks.append(stop)


async def stats_session(request: Request, session: AsyncSession, principal: Principal) -> AsyncIterator[AsyncSession]:
    """A session for the statistics in ``principal``'s scope: on the replica if there is one, else the
    request's own ``session`` (already in that scope)."""
    maker = request.app.state.stats_sessionmaker
    if maker is None:
        yield session
        return
    async with maker() as replica:
        replica.info[CLOCK_KEY] = request.app.state.clock
        await set_principal(replica, principal)
        try:
            yield replica
        finally:
            await replica.rollback()
