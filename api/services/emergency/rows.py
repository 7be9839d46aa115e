"""New rows of the chain written in two statements instead of through the unit of work.

Reporting an incident creates some thirty rows in six tables (steps, parties, targets, reply codes, messages,
timeline lines). Added to the session, each is a mapped object the unit of work sorts, inserts and then
updates again as the chain moves on before the request ends; and even as Core statements, each table's
INSERT cost a few hundred microseconds of SQLAlchemy's bookkeeping. While :func:`collecting` is open,
:func:`add` keeps new rows aside; :func:`write_chain` then inserts the steps, parties and targets with the
parties' first SMS reply codes, and :func:`write_messages` the messages and the timeline (waking the
workers), each one statement sent straight to the driver on the session's own connection, inside the
request's transaction: every table's rows as one JSON array (``jsonb_populate_recordset`` over the table's
own row type, so each value is converted exactly as an INSERT of it would be), one data-modifying CTE per
table. Foreign keys are checked at the end of the statement, so a party may name a step inserted by its
sibling CTE. The objects stay transient: nothing reads them back in this transaction, and none of these
tables is audited row by row.

Outside :func:`collecting` (the scheduler, acknowledgements, staff actions), :func:`add` is ``session.add``.
"""

import enum
import json
import uuid
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from datetime import date, datetime
from typing import Any

from sqlalchemy.ext.asyncio import AsyncSession
from sqlmodel import SQLModel

from api.models.escalation import EscalationParty, EscalationStep, EscalationTarget
from api.models.incidents import IncidentEvent
from api.models.notifications import OutboundMessage
from api.services.notifications.outbox import WAKE_CHANNEL, note_woken

KEY = "liushou_collected_rows"

# Insert order: each table's foreign keys point only to tables before it.
ORDER: tuple[type[SQLModel], ...] = (EscalationStep, EscalationParty, EscalationTarget, OutboundMessage, IncidentEvent)
CHAIN: tuple[type[SQLModel], ...] = (EscalationStep, EscalationParty, EscalationTarget)
MESSAGES: tuple[type[SQLModel], ...] = (OutboundMessage, IncidentEvent)


def _columns(model: type[SQLModel]) -> list[str]:
    table: Any = model.__table__  # type: ignore[attr-defined]
    # Integer keys (the timeline's) come from their sequence, in insert order, as the unit of work does.
    return [c.key for c in table.columns if c is not table.autoincrement_column]


_COLUMNS: dict[type[SQLModel], list[str]] = {model: _columns(model) for model in ORDER}


def _insert(model: type[SQLModel], param: int) -> str:
    """An INSERT of the rows in the JSON array ``$param``, in the array's order (a serial key follows it)."""
    table = model.__tablename__
    columns = ", ".join(f'"{c}"' for c in _COLUMNS[model])
    return (
        f"INSERT INTO {table} ({columns}) SELECT {columns}"
        f" FROM jsonb_populate_recordset(NULL::{table}, ${param}::jsonb) WITH ORDINALITY AS r ORDER BY r.ordinality"
    )


# Built once. The chain and each party's first reply code: a code already taken on its number (or drawn twice
# for one number in the batch) inserts nothing; the codes inserted come back.
_WRITE_CHAIN = (
    "WITH "
    + ", ".join(f"w{n} AS ({_insert(model, n)})" for n, model in enumerate(CHAIN, start=1))
    + ", codes AS (INSERT INTO reply_code (id, incident_id, party_id, address, code, created_at)"
    " SELECT id, $4::uuid, party_id, address, code, $5::timestamptz"
    " FROM unnest($6::uuid[], $7::uuid[], $8::text[], $9::text[]) AS c(id, party_id, address, code)"
    " ON CONFLICT (address, code) WHERE released_at IS NULL DO NOTHING"
    " RETURNING party_id, address, code)"
    " SELECT party_id, address, code FROM codes"
)
# The messages and the timeline; the workers are woken (PostgreSQL delivers the notification on commit).
_WRITE_MESSAGES = (
    "WITH "
    + ", ".join(f"w{n} AS ({_insert(model, n)})" for n, model in enumerate(MESSAGES, start=1))
    + f" SELECT pg_notify(${len(MESSAGES) + 1}, '')"
)


def _plain(value: Any) -> Any:
    if isinstance(value, uuid.UUID):
        return str(value)
    if isinstance(value, datetime | date):
        return value.isoformat()
    if isinstance(value, enum.Enum):
        return value.value
    raise TypeError(f"{type(value).__name__} is not a column value")


def _recordset(model: type[SQLModel], rows: Sequence[SQLModel]) -> str:
    columns = _COLUMNS[model]
    return json.dumps([{key: getattr(row, key) for key in columns} for row in rows], default=_plain)


def add(session: AsyncSession, *rows: SQLModel) -> None:
    """Add new rows: kept for the writes while :func:`collecting`, else to the session."""
    collected: list[SQLModel] | None = session.info.get(KEY)
    if collected is None:
        session.add_all(rows)
    else:
        collected.extend(rows)


@asynccontextmanager
async def collecting(session: AsyncSession) -> AsyncIterator[list[SQLModel]]:
    """Keep the rows :func:`add` is given aside until the writes insert them (before the block ends)."""
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


async def driver(session: AsyncSession) -> Any:
    """The driver's connection under the session, inside the session's transaction (asserted: a statement
    sent straight to the driver outside one would commit on its own, out of the request's transaction)."""
    connection = await (await session.connection()).get_raw_connection()
    raw: Any = connection.driver_connection
    if not raw.is_in_transaction():
        raise RuntimeError("the session's transaction has not begun on its connection")
    return raw


def _take(collected: list[SQLModel], models: Sequence[type[SQLModel]]) -> list[str]:
    """The collected rows of ``models`` as one JSON array each (dropped from ``collected``)."""
    arrays = [_recordset(model, [r for r in collected if type(r) is model]) for model in models]
    collected[:] = [r for r in collected if type(r) not in models]
    return arrays


async def write_chain(
    session: AsyncSession,
    collected: list[SQLModel],
    *,
    incident_id: uuid.UUID,
    codes: Sequence[tuple[uuid.UUID, str, str]],
    now: datetime,
) -> list[tuple[uuid.UUID, str, str]]:
    """Insert the collected steps, parties and targets, and the reply codes ``codes`` (party, number, code)
    of those parties, in one statement; returns the codes that were free (and are now held)."""
    raw = await driver(session)
    arrays = _take(collected, CHAIN)
    held = await raw.fetch(
        _WRITE_CHAIN,
        *arrays,
        incident_id,
        now,
        [uuid.uuid4() for _ in codes],
        [party_id for party_id, _, _ in codes],
        [address for _, address, _ in codes],
        [code for _, _, code in codes],
    )
    return [(row[0], row[1], row[2]) for row in held]


async def write_messages(session: AsyncSession, collected: list[SQLModel]) -> None:
    """Insert the collected messages and timeline lines in one statement that also wakes the workers."""
    raw = await driver(session)
    await raw.fetch(_WRITE_MESSAGES, *_take(collected, MESSAGES), WAKE_CHANNEL)
    note_woken(session)
    if collected:
        raise RuntimeError(f"{len(collected)} collected rows of other tables were never written")
