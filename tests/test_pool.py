"""The service's connection pool (api/db.py) on a real PostgreSQL: after a burst has opened every connection, a
lighter load keeps reusing the few it needs, the connection given back last first, instead of handing each
request a backend that has sat idle since the last round (its caches gone cold)."""

import asyncio

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection

from api.db import make_engine
from tests.conftest import make_test_settings


async def backend(conn: AsyncConnection) -> int:
    return (await conn.execute(sa.text("SELECT pg_backend_pid()"))).scalar_one()


async def test_after_a_burst_the_connection_given_back_last_is_handed_out_first(database_url):
    settings = make_test_settings(db_pool_size=3)
    engine = make_engine(database_url, settings)
    burst = 2 * settings.db_pool_size  # every connection the pool keeps
    try:
        all_out = asyncio.Event()
        opened: list[int] = []

        async def hold() -> None:
            async with engine.connect() as conn:
                opened.append(await backend(conn))
                if len(opened) == burst:
                    all_out.set()
                await all_out.wait()  # each connection is out at once: the pool opens all of them

        await asyncio.gather(*(hold() for _ in range(burst)))
        assert len(set(opened)) == burst
        assert engine.pool.checkedin() == burst  # type: ignore[attr-defined]

        async def one() -> int:
            async with engine.connect() as conn:
                pid = await backend(conn)
                await asyncio.sleep(0)
                return pid

        # One request at a time now: each one gets the backend the one before gave back.
        seen = [await one() for _ in range(burst)]
        assert len(set(seen)) == 1, f"one request at a time went round {len(set(seen))} backends: {seen}"

        # Two at a time: the same two, over and over.
        pairs: set[int] = set()
        for _ in range(burst):
            pairs.update(await asyncio.gather(one(), one()))
        assert len(pairs) == 2, f"two requests at a time went round {len(pairs)} backends"
    finally:
        await engine.dispose()
