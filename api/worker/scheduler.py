"""The scheduler: finds steps and parties whose time has come and moves them along.

Two kinds of short transaction, never one holding a batch (procrastinate's fetch-job, goalert's
processinglock):

1. **claim** — ``UPDATE … FROM (SELECT … FOR UPDATE SKIP LOCKED)``: up to a batch of due rows get their
   ``next_check_at`` pushed ``CLAIM_HOLD`` ahead (so other workers pass them by) and the transaction commits
   at once. A worker that dies after claiming loses nothing: the rows come due again when the hold ends.
2. **decide** — each row alone: lock it in the engine's order (step → party → message, with a
   ``lock_timeout``), check it is still ours (nobody decided it meanwhile), hand it to the chain's own logic
   (:func:`api.services.emergency.chain.check_step` / ``check_party``), commit. A row whose decision fails is
   rolled back alone and looked at again a minute later (a row that was busy: a few seconds later); the rest
   of the batch goes on.
"""

import logging
import uuid
from collections.abc import Awaitable, Callable
from datetime import datetime, timedelta
from typing import Any

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from api.clock import Clock
from api.db import scoped_session
from api.errors import DatabaseBusy
from api.models.escalation import EscalationParty, EscalationStep
from api.scoping import SYSTEM
from api.services.emergency.chain import LOCK_TIMEOUT_MS, check_party, check_step, is_lock_timeout, lock_chain
from api.settings import Settings

log = logging.getLogger("liushou.escalation.scheduler")
CLAIM_HOLD = timedelta(seconds=30)
_RETRY_BROKEN_ROW = timedelta(minutes=1)
_RETRY_BUSY_ROW = timedelta(seconds=5)
Check = Callable[..., Awaitable[None]]


async def claim_due(
    session: AsyncSession, model: type[EscalationStep] | type[EscalationParty], *, now: datetime, limit: int
) -> list[tuple[uuid.UUID, uuid.UUID]]:
    """(row id, step id) of up to ``limit`` due rows, earliest first, now held by this worker until
    ``now + CLAIM_HOLD`` (the caller commits)."""
    table: Any = model.__table__  # type: ignore[union-attr]
    due = (
        sa.select(table.c.id, table.c.next_check_at)
        .where(table.c.next_check_at <= now)
        .order_by(table.c.next_check_at)
        .limit(limit)
        .with_for_update(skip_locked=True)
        .cte("due")
    )
    step_id = table.c.step_id if model is EscalationParty else table.c.id
    rows = (
        await session.execute(
            sa.update(table)
            .where(table.c.id == due.c.id)
            .values(next_check_at=now + CLAIM_HOLD)
            .returning(table.c.id, step_id, due.c.next_check_at)
        )
    ).all()
    return [(row[0], row[1]) for row in sorted(rows, key=lambda r: r[2])]


async def _decide(
    session: AsyncSession,
    model: type[EscalationStep] | type[EscalationParty],
    check: Check,
    row_id: uuid.UUID,
    step_id: uuid.UUID,
    *,
    held_until: datetime,
    settings: Settings,
    now: datetime,
) -> None:
    if model is EscalationParty:
        row: Any = (await lock_chain(session, step_ids=[step_id], party_ids=[row_id])).parties.get(row_id)
    else:
        row = (await lock_chain(session, step_ids=[row_id])).steps.get(row_id)
    # Somebody decided it since the claim (an acknowledgement, escalate-now): their decision stands. A
    # callback that nudged it to "now" leaves it due, and it is decided here.
    if row is None or row.next_check_at is None or (row.next_check_at != held_until and row.next_check_at > now):
        return
    await check(session, row, settings=settings, now=now)


async def _retry_later(
    sessionmaker: async_sessionmaker[AsyncSession],
    model: type[EscalationStep] | type[EscalationParty],
    row_id: uuid.UUID,
    *,
    held_until: datetime,
    at: datetime,
) -> None:
    """Bring a row back sooner than the claim's hold, unless somebody decided it meanwhile."""
    table: Any = model.__table__  # type: ignore[union-attr]
    try:
        async with scoped_session(sessionmaker, SYSTEM) as session:  # SYSTEM: the scheduler, for every school
            await session.execute(sa.text(f"SET LOCAL lock_timeout = {int(LOCK_TIMEOUT_MS)}"))
            mine = sa.and_(table.c.id == row_id, table.c.next_check_at == held_until)
            await session.execute(sa.update(table).where(mine).values(next_check_at=at))
    except Exception:  # the claim's hold brings it back anyway
        log.warning("%s %s: could not schedule the retry", model.__tablename__, row_id)


async def _run_due(
    sessionmaker: async_sessionmaker[AsyncSession],
    model: type[EscalationStep] | type[EscalationParty],
    check: Check,
    *,
    settings: Settings,
    clock: Clock,
    batch: int,
) -> int:
    """Claim a batch of ``model`` rows whose ``next_check_at`` has come, then decide each in a transaction
    of its own; returns how many it claimed."""
    claimed_at = clock.now()
    # SYSTEM: the scheduler moves the chains of every school's incidents.
    async with scoped_session(sessionmaker, SYSTEM) as session:
        claimed = await claim_due(session, model, now=claimed_at, limit=batch)
    held_until = claimed_at + CLAIM_HOLD
    for row_id, step_id in claimed:
        now = clock.now()
        try:
            async with scoped_session(sessionmaker, SYSTEM) as session:  # SYSTEM: the scheduler, as above
                await _decide(session, model, check, row_id, step_id, held_until=held_until, settings=settings, now=now)
        except Exception as exc:
            # Only the locals are used here: the row objects of a rolled-back transaction are expired.
            if isinstance(exc, DatabaseBusy) or is_lock_timeout(exc):
                log.warning("%s %s is locked by other work; looking again shortly", model.__tablename__, row_id)
                await _retry_later(sessionmaker, model, row_id, held_until=held_until, at=now + _RETRY_BUSY_ROW)
            else:
                log.exception("%s %s could not be processed; retrying later", model.__tablename__, row_id)
                await _retry_later(sessionmaker, model, row_id, held_until=held_until, at=now + _RETRY_BROKEN_ROW)
    return len(claimed)


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
