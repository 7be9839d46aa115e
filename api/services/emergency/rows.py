"""New rows of the chain written in one statement (two, rarely) instead of through the unit of work.

Reporting an incident creates some thirty rows in seven tables (steps, parties, targets, reply codes,
messages, timeline lines, the report's audit entries). Added to the session, each is a mapped object the unit
of work sorts, inserts and then updates again as the chain moves on before the request ends; and even as Core
statements, each table's INSERT cost a few hundred microseconds of SQLAlchemy's bookkeeping and a round trip.
While :func:`collecting` is open, :func:`add` keeps new rows aside; :func:`write_report` then inserts them all
— the steps, parties and targets, the parties' first SMS reply codes, the messages (an SMS asking for the code
its party took among its candidates), the timeline and the audit entries (waking the workers) — in one
statement sent straight to the driver on the session's own connection, inside the request's transaction; when
a party got no code (each candidate was taken), the messages wait for :func:`write_messages`, once codes are
drawn again. Each table is one data-modifying CTE over the table's rows sent as one JSON array and turned
into its own row type (``jsonb_populate_recordset``: each value converted as an INSERT of it would be; a JSON
column's ``None`` written as JSON ``null``, as the ORM writes it). One parameter per table: the driver's
per-element work on arrays of values cost more than the JSON. Foreign keys are checked at the end of the
statement, so a party may name a step inserted by its sibling CTE. The objects stay transient: nothing reads
them back in this transaction, and none of these tables is audited row by row.

Outside :func:`collecting` (the scheduler, acknowledgements, staff actions), :func:`add` is ``session.add``.
"""

import uuid
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import orjson
import sqlalchemy as sa
from pydantic_core import to_jsonable_python
from sqlalchemy.ext.asyncio import AsyncSession
from sqlmodel import SQLModel

from api.driver import driver_connection
from api.models.audit import AuditEntry
from api.models.escalation import EscalationParty, EscalationStep, EscalationTarget
from api.models.incidents import IncidentEvent
from api.models.notifications import OutboundMessage
from api.services.notifications.outbox import WAKE_CHANNEL, note_woken

KEY = "liushou_collected_rows"

# Insert order: each table's foreign keys point only to tables before it.
ORDER: tuple[type[SQLModel], ...] = (
    EscalationStep,
    EscalationParty,
    EscalationTarget,
    OutboundMessage,
    IncidentEvent,
    AuditEntry,
)
CHAIN: tuple[type[SQLModel], ...] = (EscalationStep, EscalationParty, EscalationTarget)
MESSAGES: tuple[type[SQLModel], ...] = (OutboundMessage, IncidentEvent, AuditEntry)


def _columns(model: type[SQLModel]) -> list[sa.Column[Any]]:
    table: Any = model.__table__  # type: ignore[attr-defined]
    # Integer keys (the timeline's) come from their sequence, in insert order, as the unit of work does.
    return [c for c in table.columns if c is not table.autoincrement_column]


def _check(column: sa.Column[Any]) -> str:
    """A column whose values the JSON carries as they are, or as text (ids, times): its key."""
    kind = column.type
    if isinstance(kind, sa.TypeDecorator):  # a StrEnum as varchar(n): a str already
        kind = kind.impl_instance
    if isinstance(kind, sa.DateTime) and not kind.timezone:
        raise TypeError(f"{column}: only timestamptz columns are written this way")
    if not isinstance(kind, sa.Uuid | sa.DateTime | sa.JSON | sa.Integer | sa.Boolean | sa.String):
        raise TypeError(f"no JSON form for {column}")
    return column.key


@dataclass(frozen=True)
class _Table:
    """How one table's new rows are sent: as one JSON array of objects, column name → value."""

    keys: list[str]

    def recordset(self, rows: Sequence[SQLModel]) -> str:
        keys = self.keys
        # New rows (new_row): every column's value is in the object's own dict. orjson writes ids and times as
        # text the row type reads back exactly (ISO 8601 with the offset, every microsecond), enums as their
        # values, in a quarter of pydantic-core's time (a third of json.dumps's); anything else it does not know
        # (in a JSON column's detail) as pydantic would.
        rows_as_dicts = [{key: values[key] for key in keys} for values in (r.__dict__ for r in rows)]
        return orjson.dumps(rows_as_dicts, default=to_jsonable_python, option=orjson.OPT_NON_STR_KEYS).decode()


_TABLES: dict[type[SQLModel], _Table] = {model: _Table([_check(c) for c in _columns(model)]) for model in ORDER}


def _insert(
    model: type[SQLModel], param: int, *, when: str | None = None, join: str = "", instead: dict[str, str] | None = None
) -> str:
    """An INSERT of the rows in the JSON array ``$param`` (``r``), in the array's order (a serial key follows
    it); each value converted to its column's type as an INSERT of it would be. A JSON column's None is JSON
    null, as the ORM writes it (the record gives SQL NULL for it). ``when``: only the rows for which it holds;
    ``join``: what it and ``instead`` (column → the value written instead of the row's) also read."""
    table = model.__tablename__
    columns = _columns(model)
    names = ", ".join(f'"{c.name}"' for c in columns)
    instead = instead or {}
    values = ", ".join(
        instead.get(c.name)
        or (f"coalesce(r.\"{c.name}\", 'null'::jsonb)" if isinstance(c.type, sa.JSON) else f'r."{c.name}"')
        for c in columns
    )
    return (
        f"INSERT INTO {table} ({names}) SELECT {values}"
        f" FROM jsonb_populate_recordset(NULL::{table}, ${param}::jsonb) WITH ORDINALITY AS r{join}"
        f"{f' WHERE {when}' if when else ''} ORDER BY r.ordinality"
    )


def _ctes(models: Sequence[type[SQLModel]]) -> tuple[str, int]:
    """The CTEs inserting the rows of ``models`` (one parameter each), and how many parameters they take."""
    return ", ".join(f"w{n} AS ({_insert(model, n)})" for n, model in enumerate(models, start=1)), len(models)


# Built once. The chain and each party's first reply code, from several candidates per party (in the order
# drawn): the first one no open code on its number holds is taken. The partial unique index still decides — a
# candidate a concurrent report took meanwhile, or two parties of one number picking the same one, inserts
# nothing — and the codes inserted come back; a party without one draws again (notify.reserve_new_reply_codes).
# OFFSET 0 keeps the look-up a probe of the open codes' index per candidate: the driver prepares the statement,
# and the generic plan PostgreSQL then keeps, planned while the table was small, was an anti-join over a scan
# of every open code — database CPU per report grew 5 → 15 ms as reports piled up (bench/api_floor.py).
#
# In the same statement, the messages, the timeline and the audit entries, once every party texted holds a
# code. An SMS comes asking for its party's first candidate, with its text asking for each other candidate
# beside it (message, code, text): the one asking for the code taken is written. When a party got none (each
# candidate was taken), nothing of them: the caller draws again and writes them after (write_messages). The
# workers are woken either way (PostgreSQL delivers the notification on commit).
_CHAIN_CTES, _N = _ctes(CHAIN)
_CODES = (
    f"codes AS (INSERT INTO reply_code (id, incident_id, party_id, address, code, created_at)"
    f" SELECT DISTINCT ON (c.party_id, c.address) c.id, ${_N + 1}::uuid, c.party_id, c.address, c.code,"
    f" ${_N + 2}::timestamptz"
    f" FROM unnest(${_N + 3}::uuid[], ${_N + 4}::uuid[], ${_N + 5}::text[], ${_N + 6}::text[])"
    " WITH ORDINALITY AS c(id, party_id, address, code, drawn)"
    " WHERE NOT EXISTS (SELECT FROM reply_code r"
    " WHERE r.address = c.address AND r.code = c.code AND r.released_at IS NULL OFFSET 0)"
    " ORDER BY c.party_id, c.address, c.drawn"
    " ON CONFLICT (address, code) WHERE released_at IS NULL DO NOTHING"
    " RETURNING party_id, address, code)"
)
_CODES_HELD = (
    f"codes_held AS (SELECT NOT EXISTS (SELECT FROM unnest(${_N + 7}::uuid[], ${_N + 8}::text[])"
    " AS w(party_id, address) WHERE NOT EXISTS (SELECT FROM codes c"
    " WHERE c.party_id = w.party_id AND c.address = w.address)) AS held)"
)
_IF_HELD = "(SELECT held FROM codes_held)"
_SMS = _insert(
    OutboundMessage,
    _N + 12,
    when=f"{_IF_HELD} AND (r.reply_code IS NULL OR c.code IS NOT NULL)",
    join=(
        " LEFT JOIN codes c ON r.reply_code IS NOT NULL AND c.party_id = r.party_id AND c.address = r.address"
        f" LEFT JOIN unnest(${_N + 9}::uuid[], ${_N + 10}::text[], ${_N + 11}::text[]) AS a(id, code, body)"
        " ON a.id = r.id AND a.code = c.code"
    ),
    instead={"body": "coalesce(a.body, r.body)", "reply_code": "coalesce(c.code, r.reply_code)"},
)
assert MESSAGES[0] is OutboundMessage
_WITH_CODES_CTES = ", ".join(
    [f"w{_N + 12} AS ({_SMS})"]
    + [f"w{n} AS ({_insert(model, n, when=_IF_HELD)})" for n, model in enumerate(MESSAGES[1:], start=_N + 13)]
)
_WRITE_REPORT = (
    f"WITH {_CHAIN_CTES}, {_CODES}, {_CODES_HELD}, {_WITH_CODES_CTES}"
    " SELECT (SELECT held FROM codes_held), ARRAY(SELECT ROW(party_id, address, code) FROM codes),"
    f" pg_notify(${_N + 12 + len(MESSAGES)}, '')"
)
# The messages, the timeline and the audit entries on their own; the workers are woken.
_MESSAGES_CTES, _M = _ctes(MESSAGES)
_WRITE_MESSAGES = f"WITH {_MESSAGES_CTES} SELECT pg_notify(${_M + 1}, '')"


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


def _take(collected: list[SQLModel], models: Sequence[type[SQLModel]]) -> list[str]:
    """The collected rows of ``models``, one JSON array per table (dropped from ``collected``)."""
    arrays = [_TABLES[model].recordset([r for r in collected if type(r) is model]) for model in models]
    collected[:] = [r for r in collected if type(r) not in models]
    return arrays


async def write_report(
    session: AsyncSession,
    collected: list[SQLModel],
    *,
    incident_id: uuid.UUID,
    codes: Sequence[tuple[uuid.UUID, str, str]],
    texts: Sequence[tuple[uuid.UUID, str, str]],
    now: datetime,
) -> tuple[list[tuple[uuid.UUID, str, str]], bool]:
    """Insert the collected steps, parties and targets, and a reply code for each of those parties from its
    candidates ``codes`` (party, number, code; in the order drawn), in one statement with the collected
    messages, timeline lines and audit entries — written if every party got a code, and then dropped from
    ``collected``; else left there, for :func:`write_messages` once each SMS asks for the code its party
    holds. An SMS asks for its party's first candidate; ``texts`` (message, code, text) are its texts asking
    for the others, one of which is written instead when that code is the one taken. Returns the codes
    inserted (now held, at most one per party and number) and whether the messages went with them."""
    raw = await driver_connection(session)
    chain = _take(collected, CHAIN)
    messages = [_TABLES[model].recordset([r for r in collected if type(r) is model]) for model in MESSAGES]
    wanted = dict.fromkeys((party_id, address) for party_id, address, _ in codes)
    held, inserted, _ = await raw.fetchrow(
        _WRITE_REPORT,
        *chain,
        incident_id,
        now,
        [uuid.uuid4() for _ in codes],
        [party_id for party_id, _, _ in codes],
        [address for _, address, _ in codes],
        [code for _, _, code in codes],
        [party_id for party_id, _ in wanted],
        [address for _, address in wanted],
        [message_id for message_id, _, _ in texts],
        [code for _, code, _ in texts],
        [text for _, _, text in texts],
        *messages,
        WAKE_CHANNEL,
    )
    note_woken(session)
    if held:
        collected[:] = [r for r in collected if type(r) not in MESSAGES]
        if collected:
            raise RuntimeError(f"{len(collected)} collected rows of other tables were never written")
    return [(row[0], row[1], row[2]) for row in inserted], bool(held)


async def write_messages(session: AsyncSession, collected: list[SQLModel]) -> None:
    """Insert the collected messages, timeline lines and audit entries in one statement that also wakes the
    workers."""
    raw = await driver_connection(session)
    await raw.fetch(_WRITE_MESSAGES, *_take(collected, MESSAGES), WAKE_CHANNEL)
    note_woken(session)
    if collected:
        raise RuntimeError(f"{len(collected)} collected rows of other tables were never written")
