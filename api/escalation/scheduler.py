"""The scheduler: finds steps and parties whose time has come and moves them along.

Each pass claims a batch of rows with ``FOR UPDATE SKIP LOCKED`` in one short transaction, so several
workers share the work without waiting on each other, and hands each row to the chain's own logic
(:func:`api.services.escalation.check_step` / ``check_party``). A row whose processing fails is rolled back
to its savepoint and looked at again a minute later, so one bad row never blocks the others.
"""

import logging
from datetime import timedelta

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


async def run_steps(
    sessionmaker: async_sessionmaker[AsyncSession], *, settings: Settings, clock: Clock, batch: int
) -> int:
    """Ends holds, alerts near deadlines and records breaches for due steps; returns how many it looked at."""
    async with scoped_session(sessionmaker) as session:
        now = clock.now()
        steps = (
            (
                await session.execute(
                    select(EscalationStep)
                    .where(col(EscalationStep.next_check_at) <= now)
                    .order_by(col(EscalationStep.next_check_at))
                    .limit(batch)
                    .with_for_update(skip_locked=True)
                )
            )
            .scalars()
            .all()
        )
        for step in steps:
            try:
                async with session.begin_nested():
                    await check_step(session, step, settings=settings, now=now)
            except Exception:
                log.exception("step %s could not be processed; retrying later", step.id)
                await session.execute(
                    sa.update(EscalationStep)
                    .where(col(EscalationStep.id) == step.id)
                    .values(next_check_at=now + _RETRY_BROKEN_ROW)
                    .execution_options(synchronize_session=False)
                )
        return len(steps)


async def run_parties(
    sessionmaker: async_sessionmaker[AsyncSession], *, settings: Settings, clock: Clock, batch: int
) -> int:
    """Moves due parties to their next channel or contact; returns how many it looked at."""
    async with scoped_session(sessionmaker) as session:
        now = clock.now()
        parties = (
            (
                await session.execute(
                    select(EscalationParty)
                    .where(col(EscalationParty.next_check_at) <= now)
                    .order_by(col(EscalationParty.next_check_at))
                    .limit(batch)
                    .with_for_update(skip_locked=True)
                )
            )
            .scalars()
            .all()
        )
        for party in parties:
            try:
                async with session.begin_nested():
                    await check_party(session, party, settings=settings, now=now)
            except Exception:
                log.exception("party %s could not be processed; retrying later", party.id)
                await session.execute(
                    sa.update(EscalationParty)
                    .where(col(EscalationParty.id) == party.id)
                    .values(next_check_at=now + _RETRY_BROKEN_ROW)
                    .execution_options(synchronize_session=False)
                )
        return len(parties)
