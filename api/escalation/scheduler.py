"""The scheduler: finds steps and parties whose time has come and moves them along.

Each pass claims a batch of rows with ``FOR UPDATE SKIP LOCKED`` in one short transaction, so several
workers share the work without waiting on each other, and hands each row to the chain's own logic
(:func:`api.services.escalation.check_step` / ``check_party``). A row whose processing fails is rolled back
to its savepoint and looked at again a minute later, so one bad row never blocks the others.
"""

import logging
from collections.abc import Awaitable, Callable
from datetime import timedelta
from typing import TypeVar

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker
from sqlmodel import col, select

from api.clock import Clock
from api.db import scoped_session
from api.models.escalation import EscalationParty, EscalationStep
from api.services.escalation import check_party, check_step
from api.settings import Settings

log = logging.getLogger("liushou.escalation.scheduler")
_RETRY_BROKEN_ROW = timedelta(minutes=1)
_Due = TypeVar("_Due", EscalationStep, EscalationParty)


async def _run_due(
    sessionmaker: async_sessionmaker[AsyncSession],
    model: type[_Due],
    check: Callable[..., Awaitable[None]],
    *,
    settings: Settings,
    clock: Clock,
    batch: int,
) -> int:
    """Claim a batch of ``model`` rows whose ``next_check_at`` has come, hand each to ``check`` in a
    savepoint of its own; returns how many it looked at."""
    async with scoped_session(sessionmaker) as session:
        now = clock.now()
        rows = (
            (
                await session.execute(
                    select(model)
                    .where(col(model.next_check_at) <= now)
                    .order_by(col(model.next_check_at))
                    .limit(batch)
                    .with_for_update(skip_locked=True)
                )
            )
            .scalars()
            .all()
        )
        for row in rows:
            try:
                async with session.begin_nested():
                    await check(session, row, settings=settings, now=now)
            except Exception:
                log.exception("%s %s could not be processed; retrying later", model.__tablename__, row.id)
                await session.execute(
                    sa.update(model)
                    .where(col(model.id) == row.id)
                    .values(next_check_at=now + _RETRY_BROKEN_ROW)
                    .execution_options(synchronize_session=False)
                )
        return len(rows)


async def run_steps(
    sessionmaker: async_sessionmaker[AsyncSession], *, settings: Settings, clock: Clock, batch: int
) -> int:
    """Ends holds, alerts near deadlines and records breaches for due steps; returns how many it looked at."""
    return await _run_due(sessionmaker, EscalationStep, check_step, settings=settings, clock=clock, batch=batch)


async def run_parties(
    sessionmaker: async_sessionmaker[AsyncSession], *, settings: Settings, clock: Clock, batch: int
) -> int:
    """Moves due parties to their next channel or contact; returns how many it looked at."""
    return await _run_due(sessionmaker, EscalationParty, check_party, settings=settings, clock=clock, batch=batch)
