"""New rows of the chain written in a few multi-row INSERTs instead of through the unit of work.

Reporting an incident creates some thirty rows in five tables (steps, parties, targets, messages, timeline
lines). Added to the session, each is a mapped object the unit of work sorts, inserts and then updates again
as the chain moves on before the request ends; that bookkeeping cost more CPU than the rest of the report.
While :func:`collecting` is open, :func:`add` keeps new rows aside; :func:`write` then inserts those of the
given tables with one statement per table (built once), in foreign-key order. The objects stay transient:
nothing reads them back in this transaction, and none of these tables is audited row by row.

Outside :func:`collecting` (the scheduler, acknowledgements, staff actions), :func:`add` is ``session.add``.
"""

from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from typing import Any

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncSession
from sqlmodel import SQLModel

from api.models.escalation import EscalationParty, EscalationStep, EscalationTarget
from api.models.incidents import IncidentEvent
from api.models.notifications import OutboundMessage

KEY = "liushou_collected_rows"

# Insert order: each table's foreign keys point only to tables before it.
ORDER: tuple[type[SQLModel], ...] = (EscalationStep, EscalationParty, EscalationTarget, OutboundMessage, IncidentEvent)


def _columns(model: type[SQLModel]) -> list[str]:
    table: Any = model.__table__  # type: ignore[attr-defined]
    # Integer keys (the timeline's) come from their sequence, in insert order, as the unit of work does.
    return [c.key for c in table.columns if c is not table.autoincrement_column]


_INSERTS: dict[type[SQLModel], tuple[sa.Insert, list[str]]] = {
    model: (model.__table__.insert(), _columns(model))  # type: ignore[attr-defined]
    for model in ORDER
}


def add(session: AsyncSession, *rows: SQLModel) -> None:
    """Add new rows: kept for :func:`write` while :func:`collecting`, else to the session."""
    collected: list[SQLModel] | None = session.info.get(KEY)
    if collected is None:
        session.add_all(rows)
    else:
        collected.extend(rows)


@asynccontextmanager
async def collecting(session: AsyncSession) -> AsyncIterator[list[SQLModel]]:
    """Keep the rows :func:`add` is given aside until :func:`write` inserts them (before the block ends)."""
    if KEY in session.info:
        raise RuntimeError("rows are already being collected in this session")
    collected: list[SQLModel] = []
    session.info[KEY] = collected
    try:
        yield collected
    finally:
        session.info.pop(KEY, None)
    if collected:
        raise RuntimeError(f"{len(collected)} collected rows were never written")


async def write(session: AsyncSession, collected: list[SQLModel], models: Sequence[type[SQLModel]] = ORDER) -> None:
    """Insert the collected rows of ``models`` (one statement per table, in foreign-key order) and drop them
    from ``collected``; the rest stay for a later call."""
    connection = await session.connection()
    for model in [m for m in ORDER if m in models]:
        rows = [r for r in collected if type(r) is model]
        if not rows:
            continue
        insert, columns = _INSERTS[model]
        values = [{key: getattr(row, key) for key in columns} for row in rows]
        await connection.execute(insert, values[0] if len(values) == 1 else values)
    collected[:] = [r for r in collected if type(r) not in models]
