"""Row scope: the principal of a session, and PostgreSQL row-level security doing the filtering.

Each session carries the caller's :class:`Principal` in ``session.info``. At the start of each transaction
one statement (:data:`APPLY_SCOPE`) takes the role ``liushou_app`` — a role that owns nothing and cannot
bypass row-level security — and writes the principal's scope into transaction-local settings; the policies
declared beside the models (``api/models/row_security.py``) read them. PostgreSQL then limits every statement —
ORM, Core or raw SQL — to the caller's rows: an object outside scope is simply not found (the API answers 404)
and a write outside it is refused. Python does no work per query. A request's sign-in look-up sets the scope
in the same round trip that checks the token (``api/services/auth.py``).

A session with no principal is anonymous: it takes the role with an empty scope and sees no scoped row.
Work done as the system — the worker and scheduler, sign-in look-ups, provider callbacks, seeding, the
CLI — runs as the owner, without ``liushou_app``: sessions bound to :data:`SYSTEM`, or blocks under
:func:`as_system` for the few reads inside a request that must cross scope. Every such place says why;
``grep -rnwE "SYSTEM|as_system" api`` lists them (docs/security.md keeps the list).
"""

import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any

import asyncpg
import sqlalchemy as sa
from sqlalchemy import event
from sqlalchemy.exc import DBAPIError
from sqlalchemy.orm import Session, SessionTransaction

from api.models.accounts import Role
from api.models.row_security import APP_ROLE, PLATFORM_ROLE

PRINCIPAL_KEY = "liushou_principal"
_SYSTEM_DEPTH_KEY = "liushou_as_system"  # > 0 inside as_system blocks
_SET_BY_STATEMENT_KEY = "liushou_scope_by_statement"  # the next transaction's first statement sets the scope


@dataclass(frozen=True)
class Principal:
    account_id: uuid.UUID | None
    role: Role | None
    county_id: uuid.UUID | None = None
    township_id: uuid.UUID | None = None
    school_id: uuid.UUID | None = None
    session_id: uuid.UUID | None = None
    display_name: str = ""
    # Teachers: the classes they head or teach (full detail of those children).
    class_ids: frozenset[uuid.UUID] = field(default_factory=frozenset)
    # Families: their guardian records (filled at sign-in).
    guardian_ids: frozenset[uuid.UUID] = field(default_factory=frozenset)
    is_system: bool = False

    @property
    def is_staff(self) -> bool:
        return self.role is not None and self.role != Role.family


ANONYMOUS = Principal(account_id=None, role=None)
SYSTEM = Principal(account_id=None, role=None, is_system=True)


def get_principal(session: Any) -> Principal:
    principal: Principal = session.info.get(PRINCIPAL_KEY, ANONYMOUS)
    return principal


def db_role(principal: Principal) -> str:
    return PLATFORM_ROLE if principal.role == Role.platform_admin else APP_ROLE


# ---- the scope, in SQL ------------------------------------------------------------------------------------

_STAFF = "('county_bureau', 'township_official', 'school_admin', 'teacher')"

# Set the role and the scope settings the policies read, for a principal row ``p`` (role, account_id,
# county_id, township_id, school_id). The arrays are derived here, from the organisation tables, so a
# principal is always as wide as its account's place today. Run as the owner (the first statement of a
# transaction, or right after becoming the owner), so the look-ups below are not themselves limited.
SCOPE_COLUMNS = f"""
    set_config('role', CASE WHEN p.role = 'platform_admin' THEN '{PLATFORM_ROLE}' ELSE '{APP_ROLE}' END, true)
        AS db_role,
    set_config('liushou.role', coalesce(p.role, ''), true) AS scope_role,
    set_config('liushou.account_id', coalesce(p.account_id::text, ''), true) AS scope_account_id,
    set_config('liushou.county_id', CASE WHEN p.role IN {_STAFF} THEN coalesce(p.county_id::text, '') ELSE '' END,
        true) AS scope_county_id,
    set_config('liushou.township_id',
        CASE WHEN p.role IN {_STAFF} THEN coalesce(p.township_id::text, '') ELSE '' END, true) AS scope_township_id,
    set_config('liushou.school_ids', CASE
        WHEN p.role = 'county_bureau' THEN ARRAY(SELECT s.id FROM school s WHERE s.county_id = p.county_id)
        WHEN p.role = 'township_official' THEN ARRAY(SELECT s.id FROM school s WHERE s.township_id = p.township_id)
        WHEN p.role IN ('school_admin', 'teacher') THEN ARRAY[p.school_id]
        ELSE '{{}}'::uuid[] END::text, true) AS scope_school_ids,
    set_config('liushou.township_ids', CASE
        WHEN p.role = 'county_bureau' THEN ARRAY(SELECT t.id FROM township t WHERE t.county_id = p.county_id)
        WHEN p.role IN ('township_official', 'school_admin', 'teacher') THEN ARRAY[p.township_id]
        ELSE '{{}}'::uuid[] END::text, true) AS scope_township_ids,
    set_config('liushou.guardian_ids', CASE
        WHEN p.role = 'family' THEN ARRAY(SELECT g.id FROM guardian g WHERE g.account_id = p.account_id)
        ELSE '{{}}'::uuid[] END::text, true) AS scope_guardian_ids,
    set_config('liushou.child_ids', CASE
        WHEN p.role = 'family' THEN ARRAY(
            SELECT DISTINCT cg.child_id FROM child_guardian cg JOIN guardian g ON g.id = cg.guardian_id
            WHERE g.account_id = p.account_id AND cg.is_active)
        ELSE '{{}}'::uuid[] END::text, true) AS scope_child_ids"""

APPLY_SCOPE = sa.text(
    f"SELECT {SCOPE_COLUMNS} FROM (SELECT CAST(:role AS text) AS role, CAST(:account_id AS uuid) AS account_id,"
    " CAST(:county_id AS uuid) AS county_id, CAST(:township_id AS uuid) AS township_id,"
    " CAST(:school_id AS uuid) AS school_id) p"
)
# What a statement of the caller's selects to take the owner's role as it ends (see as_system's ``switched``).
BECOME_OWNER_COLUMN = "set_config('role', 'none', true)"
_BECOME_OWNER_SQL = f"SELECT {BECOME_OWNER_COLUMN}"
_RESUME_ROLE_SQL = "SELECT set_config('role', $1, true)"
BECOME_OWNER = sa.text(_BECOME_OWNER_SQL)
RESUME_ROLE = sa.text("SELECT set_config('role', :role, true)")


def scope_params(principal: Principal) -> dict[str, Any]:
    return {
        "role": principal.role.value if principal.role else None,
        "account_id": principal.account_id,
        "county_id": principal.county_id,
        "township_id": principal.township_id,
        "school_id": principal.school_id,
    }


def parse_uuid_array(text: str) -> frozenset[uuid.UUID]:
    """A ``uuid[]`` in PostgreSQL's text form (``{a,b}``), as returned by ``set_config``."""
    inner = text.strip("{}")
    return frozenset(uuid.UUID(v) for v in inner.split(",") if v and v != "NULL")


def scope_at_begin(session: Any) -> dict[str, Any] | None:
    """What a transaction of ``session`` (a session, or a :class:`api.driver.Transaction`) applies first: the
    bound principal's scope (:data:`APPLY_SCOPE`'s parameters), or None — for the system, inside
    :func:`as_system`, or when its first statement sets the scope itself (:func:`scope_set_by_statement`)."""
    if session.info.get(_SYSTEM_DEPTH_KEY) or scope_set_by_this_statement(session):
        return None
    principal = get_principal(session)
    return None if principal.is_system else scope_params(principal)


@event.listens_for(Session, "after_begin")
def _scope_transaction(session: Session, _transaction: SessionTransaction, connection: Any) -> None:
    """The first statement of every transaction: the principal's role and scope (nothing for the system).
    A savepoint is inside a transaction whose scope is already set: it costs no second round trip."""
    if _transaction.nested:
        return
    params = scope_at_begin(session)
    if params is not None:
        connection.execute(APPLY_SCOPE, params)


# ---- binding and switching -------------------------------------------------------------------------------


async def set_principal(session: Any, principal: Principal) -> None:
    """Bind a principal to a (async) session: from now on its statements run in that principal's scope.

    Before the session's transaction has begun this costs nothing (the transaction's first statement applies
    it); inside one, pending writes are flushed in the old scope and the new one is applied at once."""
    session.info[PRINCIPAL_KEY] = principal
    if not session.in_transaction() or session.info.get(_SYSTEM_DEPTH_KEY):
        return
    await session.flush()
    await session.execute(BECOME_OWNER)
    if not principal.is_system:
        await session.execute(APPLY_SCOPE, scope_params(principal))


@asynccontextmanager
async def scope_set_by_statement(session: Any) -> AsyncIterator[None]:
    """Run the block's first statement as the owner; that statement sets the scope itself (``SCOPE_COLUMNS``).

    Used by the sign-in look-up so that checking the token and setting the scope are one round trip; the
    caller then records the principal with :func:`principal_was_set`."""
    if session.in_transaction():
        await session.execute(BECOME_OWNER)
        yield
        return
    session.info[_SET_BY_STATEMENT_KEY] = True
    try:
        yield
    finally:
        session.info.pop(_SET_BY_STATEMENT_KEY, None)


def scope_set_by_this_statement(session: Any) -> bool:
    """Whether the transaction about to begin takes its scope from its first statement (inside
    :func:`scope_set_by_statement`), rather than from the bound principal."""
    return bool(session.info.get(_SET_BY_STATEMENT_KEY))


def principal_was_set(session: Any, principal: Principal) -> None:
    """Record the principal whose scope a statement inside :func:`scope_set_by_statement` has just set."""
    session.info[PRINCIPAL_KEY] = principal


def _holds_writes(session: Any) -> bool:
    """Whether the session has objects to flush (new, changed or deleted); a driver transaction has none."""
    sync = getattr(session, "sync_session", None)
    return sync is not None and bool(sync.new or sync.deleted or sync.dirty)


async def _flush(session: Any) -> None:
    """Flush the session's pending writes; a session with none (a report's: its rows go to the driver) is not
    flushed, which would cost a greenlet and a look through the unit of work for nothing."""
    if _holds_writes(session):
        await session.flush()


@asynccontextmanager
async def as_system(session: Any, driver: Any = None, *, switched: bool = False) -> AsyncIterator[None]:
    """Run the block as the owner, across scope, still in the caller's name for the audit log.

    For the few reads (and the chain's own writes) a request must do outside the caller's scope; each use
    says why. Pending writes are flushed before (in the caller's scope) and at the end (as the system); then
    the caller's role is taken again. Nested blocks and system sessions pass straight through.

    ``driver``: the session's own driver connection, inside its transaction (a caller that sends its
    statements straight to it): the role is switched there, without SQLAlchemy's cost per statement.

    ``switched``: the caller's last statement, checked in its own scope, has already taken the owner's role
    as it ended (it selects :data:`BECOME_OWNER_COLUMN`: the report's insert of its incident) — one round trip
    fewer. The session must then hold no pending write, which would otherwise be flushed as the owner."""
    principal = get_principal(session)
    depth = session.info.get(_SYSTEM_DEPTH_KEY, 0)
    if depth or principal.is_system:
        session.info[_SYSTEM_DEPTH_KEY] = depth + 1
        try:
            yield
        finally:
            session.info[_SYSTEM_DEPTH_KEY] = depth
        return
    if switched:
        if _holds_writes(session):
            raise RuntimeError("pending writes would be flushed as the owner: flush them before switching")
    else:
        await _flush(session)
        if driver is None:
            await session.execute(BECOME_OWNER)  # begins the transaction (in the caller's scope) if need be
        else:
            await driver.execute(_BECOME_OWNER_SQL)
    transaction = session.sync_session.get_transaction()
    session.info[_SYSTEM_DEPTH_KEY] = 1
    failed = True
    try:
        yield
        await _flush(session)
        failed = False
    finally:
        session.info[_SYSTEM_DEPTH_KEY] = 0
        if session.in_transaction():
            try:
                if session.sync_session.get_transaction() is not transaction:
                    # The block committed: this transaction has no scope settings yet.
                    await session.execute(APPLY_SCOPE, scope_params(principal))
                elif driver is None:
                    await session.execute(RESUME_ROLE, {"role": db_role(principal)})
                else:
                    await driver.fetchval(_RESUME_ROLE_SQL, db_role(principal))
            except (DBAPIError, asyncpg.PostgresError, asyncpg.InterfaceError):
                # The block failed inside the database: the transaction is aborted and can only roll back
                # (which ends the owner's role too); the block's own error is the one to report.
                if not failed:
                    raise
