"""Audit trail plumbing: every ORM write to an audited table is logged automatically at flush time.

Tables opt in with :func:`api.models.base.audited`. Columns whose ``info`` has ``sensitive=True``
(encrypted ID numbers and the like) are logged as changed without their values. Reads of personal
details are logged explicitly by the services with :func:`record`.
"""

import enum
import uuid
from datetime import date, datetime
from typing import Any, TypedDict, Unpack

import sqlalchemy as sa
from sqlalchemy import event
from sqlalchemy.orm import Session, UOWTransaction

from api.context import current_request
from api.driver import DriverStatement, execute, write_new_on_commit
from api.models.audit import AuditEntry
from api.models.base import AUDITED as _audited
from api.models.base import new_row, utcnow
from api.scoping import get_principal

REDACTED = "***"
# The app's clock travels with the session, so audit times agree with every other time in tests too.
CLOCK_KEY = "liushou_clock"


def _plain(value: Any) -> Any:
    if isinstance(value, uuid.UUID):
        return str(value)
    if isinstance(value, datetime | date):
        return value.isoformat()
    if isinstance(value, enum.Enum):
        return value.value
    if isinstance(value, list | tuple):
        return [_plain(v) for v in value]
    return value


_COLUMNS_OF: dict[type, tuple[tuple[str, bool], ...]] = {}


def _columns_of(cls: type) -> tuple[tuple[str, bool], ...]:
    """A mapped class's column attributes, each with whether its value is sensitive (never logged); the
    mapping does not change once configured, and a snapshot of a row reads this for every column."""
    known = _COLUMNS_OF.get(cls)
    if known is None:
        mapper: Any = sa.inspect(cls)
        known = _COLUMNS_OF[cls] = tuple(
            (attr.key, bool((column := mapper.columns.get(attr.key)) is not None and column.info.get("sensitive")))
            for attr in mapper.column_attrs
        )
    return known


def _is_sensitive(cls: type, key: str) -> bool:
    return any(sensitive for name, sensitive in _columns_of(cls) if name == key)


def _school_and_county(obj: Any, schools_of_children: dict[Any, Any]) -> tuple[uuid.UUID | None, uuid.UUID | None]:
    school_id = getattr(obj, "school_id", None)
    if school_id is None and type(obj).__tablename__ == "school":
        school_id = obj.id
    if school_id is None:
        child_id = getattr(obj, "child_id", None)
        if child_id is None and type(obj).__tablename__ == "guardian":
            child_id = schools_of_children.get(("guardian", obj.id))
        school_id = schools_of_children.get(child_id)
    return school_id, getattr(obj, "county_id", None)


def _schools_of_children(session: Session, objects: list[Any]) -> dict[Any, Any]:
    """The school of each child that written rows without a school of their own hang from (guardian links,
    guardians), so that school admins see those writes in their school's log. One query per flush."""
    child_ids = {getattr(o, "child_id", None) for o in objects} - {None}
    guardian_ids = {o.id for o in objects if type(o).__tablename__ == "guardian"}
    found: dict[Any, Any] = {}
    for obj in session.new:
        if type(obj).__tablename__ == "child":
            found[obj.id] = obj.school_id
        if type(obj).__tablename__ == "child_guardian" and obj.guardian_id in guardian_ids:
            found[("guardian", obj.guardian_id)] = obj.child_id
            child_ids.add(obj.child_id)
    if guardian_ids:
        rows = session.execute(
            sa.text(
                "SELECT DISTINCT ON (guardian_id) guardian_id, child_id FROM child_guardian"
                " WHERE guardian_id = ANY(:ids) ORDER BY guardian_id, created_at"
            ),
            {"ids": list(guardian_ids)},
        )
        for guardian_id, child_id in rows:
            found.setdefault(("guardian", guardian_id), child_id)
            child_ids.add(child_id)
    missing = [c for c in child_ids if c not in found]
    if missing:
        rows = session.execute(sa.text("SELECT id, school_id FROM child WHERE id = ANY(:ids)"), {"ids": missing})
        found.update({child_id: school_id for child_id, school_id in rows})
    return found


def entry_values(
    session: Any,
    *,
    action: str,
    resource_type: str,
    resource_id: Any = None,
    school_id: uuid.UUID | None = None,
    county_id: uuid.UUID | None = None,
    changes: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """The columns of an entry (all but its id): what was done, to what, by whom, when, in which request."""
    principal = get_principal(session)
    ctx = current_request()
    clock = session.info.get(CLOCK_KEY)
    return {
        "at": clock.now() if clock is not None else utcnow(),
        "account_id": principal.account_id,
        "role": principal.role.value if principal.role else ("system" if principal.is_system else None),
        "action": action,
        "resource_type": resource_type,
        "resource_id": str(resource_id) if resource_id is not None else None,
        # A write that names no school is filed under the acting staff member's school.
        "school_id": school_id or principal.school_id,
        "county_id": county_id or principal.county_id,
        "request_id": ctx.request_id if ctx else None,
        "client_request_id": ctx.client_request_id if ctx else None,
        "client_ip": ctx.client_ip if ctx else None,
        "changes": changes,
    }


def make_entry(session: Any, **what: Any) -> AuditEntry:
    """The entry (:func:`entry_values`) as an object, for the session to flush."""
    return new_row(AuditEntry, **entry_values(session, **what))


class Where(TypedDict, total=False):
    """What an entry is about, and whose log it is filed in (:func:`make_entry`)."""

    resource_id: Any
    school_id: uuid.UUID | None
    county_id: uuid.UUID | None


def record(
    session: Any, *, action: str, resource_type: str, detail: dict[str, Any] | None = None, **where: Unpack[Where]
) -> None:
    """Add an audit entry for something that is not an ORM write (a read, a login, an export)."""
    session.add(make_entry(session, action=action, resource_type=resource_type, changes=detail, **where))


async def write(
    session: Any, *, action: str, resource_type: str, detail: dict[str, Any] | None = None, **where: Unpack[Where]
) -> None:
    """Write the entry of a read now, in the read's transaction: the entry :func:`record` would leave for the
    flush at commit, without the unit of work (the hot reads change no object, so their commit flushes
    nothing)."""
    await execute(
        session, _WRITE, entry_values(session, action=action, resource_type=resource_type, changes=detail, **where)
    )


# The columns of a read's entry bound per request (:func:`entry_params`); the others come from the read's rows.
_PER_REQUEST = ("at", "account_id", "role", "request_id", "client_request_id", "client_ip")


def entry_in_statement(
    read: Any, *, action: str, resource_type: str, resource_id: Any, school_id: Any, county_id: Any, when: Any
) -> Any:
    """A read's entry written by the read's own statement: an ``INSERT … SELECT`` over the read (a CTE of
    it), to add to the statement that returns the read's rows (``select(...).add_cte(...)``). One entry per row of
    ``read`` for which ``when`` holds; what it is about — ``resource_id``, ``school_id``, ``county_id``, columns of
    ``read`` — from the row (the acting staff member's school and county where the row has none, as
    :func:`entry_values`); who, when and in which request bound per request: :func:`entry_params`.

    The same transaction as the read, as :func:`write`, without a round trip of its own."""
    columns = AuditEntry.__table__.c  # type: ignore[attr-defined]
    rows = (
        sa.select(
            *[sa.bindparam(f"audit_{key}", type_=columns[key].type) for key in _PER_REQUEST],
            sa.literal(action, columns.action.type),
            sa.literal(resource_type, columns.resource_type.type),
            sa.cast(resource_id, columns.resource_id.type),
            sa.func.coalesce(school_id, sa.bindparam("audit_school_id", type_=columns.school_id.type)),
            sa.func.coalesce(county_id, sa.bindparam("audit_county_id", type_=columns.county_id.type)),
        )
        .select_from(read)
        .where(when)
    )
    names = [*_PER_REQUEST, "action", "resource_type", "resource_id", "school_id", "county_id"]
    return _INSERT.from_select(names, rows).cte(f"{resource_type}_audit_entry")


def entry_params(session: Any, *, action: str, resource_type: str) -> dict[str, Any]:
    """The parameters of :func:`entry_in_statement` for this request (the same values :func:`entry_values`
    gives an entry written on its own)."""
    values = entry_values(session, action=action, resource_type=resource_type)
    return {f"audit_{key}": values[key] for key in (*_PER_REQUEST, "school_id", "county_id")}


def created_entry(session: Any, obj: Any) -> AuditEntry:
    """The entry a flush would write for ``obj`` of an audited table, for a row inserted with Core instead
    (the same action, scope and snapshot of its values); the caller writes it."""
    return _row_entry(session, obj, "create", _snapshot(obj), {})


def _row_entry(
    session: Any, obj: Any, action: str, changes: dict[str, Any] | None, schools: dict[Any, Any]
) -> AuditEntry:
    """The entry of ``action`` (create, update, delete) on ``obj`` of an audited table, filed with its school
    and county (``schools``: see :func:`_school_and_county`)."""
    resource_type = _audited[type(obj)]
    school_id, county_id = _school_and_county(obj, schools)
    return make_entry(
        session,
        action=f"{resource_type}.{action}",
        resource_type=resource_type,
        resource_id=getattr(obj, "id", None),
        school_id=school_id,
        county_id=county_id,
        changes=changes,
    )


def _changes(obj: Any) -> dict[str, Any]:
    cls = type(obj)
    state = sa.inspect(obj)
    out: dict[str, Any] = {}
    for attr in state.mapper.column_attrs:
        hist = state.attrs[attr.key].history
        if not hist.has_changes():
            continue
        old = hist.deleted[0] if hist.deleted else None
        new = hist.added[0] if hist.added else None
        if old == new:
            continue
        if _is_sensitive(cls, attr.key):
            out[attr.key] = {"changed": True}
        else:
            out[attr.key] = {"old": _plain(old), "new": _plain(new)}
    return out


def _snapshot(obj: Any) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, sensitive in _columns_of(type(obj)):
        value = getattr(obj, key, None)
        if value is None:
            continue
        out[key] = REDACTED if sensitive else _plain(value)
    return out


@event.listens_for(Session, "before_flush")
def _audit_writes(session: Session, _ctx: UOWTransaction, _instances: Any) -> None:
    # The entries added since the last flush (reads, logins, exports), then those of this flush's writes.
    entries = [obj for obj in session.new if type(obj) is AuditEntry]
    entries += _entries_of_writes(session)
    if entries:
        _insert(session, entries)


_AUDIT_COLUMNS = [column.key for column in AuditEntry.__table__.columns if column.key != "id"]  # type: ignore[attr-defined]
_INSERT = AuditEntry.__table__.insert().inline()  # type: ignore[attr-defined]  # the id: the column default
# A read's entry, written at once on the session's connection (api.driver): no unit of work at commit for it.
_WRITE = DriverStatement(_INSERT.values({key: sa.bindparam(key) for key in _AUDIT_COLUMNS}))


def _values(entry: AuditEntry) -> dict[str, Any]:
    """An entry's columns for its INSERT (the id left to the column default)."""
    return {key: getattr(entry, key) for key in _AUDIT_COLUMNS}


async def _write_on_driver(connection: Any, entries: list[AuditEntry]) -> None:
    """The entries left for the flush at a commit on the driver (:func:`api.driver.commit`): the same plain
    INSERT, one batch."""
    rows = [_WRITE.args(_values(entry)) for entry in entries]
    if len(rows) == 1:
        await connection.execute(_WRITE.sql, *rows[0])
    else:
        await connection.executemany(_WRITE.sql, rows)


write_new_on_commit(AuditEntry, _write_on_driver)


def _insert(session: Session, entries: list[AuditEntry]) -> None:
    """Write the entries in the flush's transaction with one plain INSERT (several rows: one batch), their ids
    left to the sequence's column default. Through the unit of work, each entry cost a ``nextval`` round trip
    first: the ORM needs the new key, and may not ask for it with RETURNING (the read policy would apply).
    Nothing reads an entry's id back; the objects leave the session unwritten by the ORM."""
    rows = [_values(entry) for entry in entries]
    for entry in entries:
        if entry in session:
            session.expunge(entry)
    with session.no_autoflush:
        session.execute(_INSERT, rows[0] if len(rows) == 1 else rows)


def _entries_of_writes(session: Session) -> list[AuditEntry]:
    """One entry per audited row this flush creates, changes or deletes."""
    entries: list[AuditEntry] = []
    written = [
        (action, obj)
        for action, objects in (("create", session.new), ("update", session.dirty), ("delete", session.deleted))
        for obj in list(objects)
        if type(obj) in _audited
    ]
    if not written:
        return entries
    needs_school = [
        o for _, o in written if getattr(o, "school_id", None) is None and type(o).__tablename__ != "school"
    ]
    with session.no_autoflush:
        schools = _schools_of_children(session, needs_school) if needs_school else {}
    for action, obj in written:
        if action == "update":
            if not session.is_modified(obj, include_collections=False):
                continue
            changes = _changes(obj)
            if not changes:
                continue
        elif action == "create":
            changes = _snapshot(obj)
        else:
            changes = None
        entries.append(_row_entry(session, obj, action, changes, schools))
    return entries
