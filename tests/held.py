"""Make two writers check an exclusion constraint at the same instant, every time.

Two inserts that an exclusion constraint checks against each other deadlock only when each has put its row in
the index before either looks: a window of microseconds, which a test's concurrent requests hit now and then
(a CI run did). :func:`rows_held_open` widens it to as long as the test likes. It writes a conflicting row in a
transaction of its own and keeps it open; the writers under test put their rows in the index, find the held
row and wait for it. :func:`waiting_on_locks` says when they all are. When the held transaction rolls back, they
look again, at the same moment, and each finds the other's uncommitted row: without a queue in front of the
insert, PostgreSQL fails one of them as a deadlock.
"""

import asyncio
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from typing import Any

import sqlalchemy as sa
from fastapi import FastAPI

from api.scoping import SYSTEM, set_principal

# The locks asked for and not yet granted. pg_locks, unlike pg_stat_activity, shows every role's to every role.
# It cannot say which database a wait on a transaction belongs to, so it counts the whole server's: the tests'
# server serves one test at a time.
_WAITING = sa.text("SELECT count(*) FROM pg_locks WHERE NOT granted")


@asynccontextmanager
async def rows_held_open(app: FastAPI, rows: Sequence[Any]) -> AsyncIterator[None]:
    """``rows`` written (as the worker would, across scope) in a transaction left open for the block, then
    rolled back."""
    async with app.state.sessionmaker() as session:
        await set_principal(session, SYSTEM)
        session.add_all(rows)
        await session.flush()
        try:
            yield
        finally:
            await session.rollback()


async def waiting_on_locks(app: FastAPI, count: int) -> None:
    """Return once ``count`` transactions wait on a lock; fail after 20 s."""
    async with app.state.sessionmaker() as session:
        for _ in range(1000):
            if (await session.execute(_WAITING)).scalar_one() >= count:
                return
            await asyncio.sleep(0.02)
    raise AssertionError(f"{count} transactions did not come to wait on a lock")
