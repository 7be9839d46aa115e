"""Reminders of family calls: the family and the child's head teacher before the call, the family at once
when the school cancels.

What is due is a row (``family_call_reminder``), written in the booking's own transaction, one per call,
purpose and lead time (a unique constraint), so a reminder can neither be lost with a crashed process nor
planned twice. A cancelled call's reminders still waiting are closed, not deleted.
"""

import uuid
from datetime import datetime, timedelta

import sqlalchemy as sa
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.ext.asyncio import AsyncSession
from sqlmodel import col

from api.models.family_calls import FamilyCallReminder, FamilyCallSettings

REMINDER = "reminder"
CANCELLED = "cancelled"


async def plan(
    session: AsyncSession, *, call_id: uuid.UUID, starts_at: datetime, settings: FamilyCallSettings, now: datetime
) -> None:
    """One reminder per lead time that is still ahead (a call booked 90 minutes ahead gets no 24-hour one)."""
    rows = [
        {"id": uuid.uuid4(), "call_id": call_id, "purpose": REMINDER, "lead_minutes": lead, "due_at": due}
        for lead in settings.reminder_lead_minutes
        if (due := starts_at - timedelta(minutes=lead)) > now
    ]
    if rows:
        await session.execute(pg_insert(FamilyCallReminder).values(rows).on_conflict_do_nothing())


async def tell_cancelled(session: AsyncSession, *, call_id: uuid.UUID, now: datetime) -> None:
    """The school cancelled: the family is told now."""
    await session.execute(
        pg_insert(FamilyCallReminder)
        .values(id=uuid.uuid4(), call_id=call_id, purpose=CANCELLED, lead_minutes=0, due_at=now)
        .on_conflict_do_nothing()
    )


async def drop_pending(session: AsyncSession, *, call_id: uuid.UUID, now: datetime) -> None:
    """A call that will not happen needs no reminder: those still waiting are closed as such."""
    await session.execute(
        sa.update(FamilyCallReminder)
        .where(
            col(FamilyCallReminder.call_id) == call_id,
            col(FamilyCallReminder.purpose) == REMINDER,
            col(FamilyCallReminder.handled_at).is_(None),
        )
        .values(handled_at=now, outcome="call_cancelled")
    )
