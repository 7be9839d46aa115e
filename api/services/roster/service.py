"""花名册: import a school's roster from XLSX or CSV, and export it as XLSX — the only roster module that talks
to the database.

An import is all-or-nothing. Reading and checking the file is pure work done off the event loop
(:func:`~api.services.roster.parse.parse_roster`); every row is checked and every error collected, with the row
number the clerk sees in Excel. Checks that need the database (classes, ID numbers on file in this or another
school) follow, then :mod:`.plan` works out the writes. Only a file without a single error is written, in one
transaction, with set-based SQL: the school's children, guardians and links are read in a few streamed queries,
new rows are inserted in bulk (with their audit entries), and existing rows change only where the roster says
something different, so re-importing the same roster changes nothing.

The columns are defined once, in :data:`~api.services.roster.columns.COLUMNS`; the template, the export, the
importer and ``docs/roster-template.md`` all follow them, so an exported roster imports again as a no-op.
"""

import enum
import re
import uuid
from datetime import date, datetime
from functools import partial
from typing import Any

import anyio
import sqlalchemy as sa
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession
from sqlmodel import col, select

from api import audit
from api.audit import REDACTED
from api.clock import SHANGHAI
from api.crypto import FieldCipher
from api.errors import Conflict, Forbidden, NotFound
from api.models.accounts import Role
from api.models.audit import AuditEntry
from api.models.base import Page
from api.models.children import Child, ChildEvent, ChildStatus
from api.models.guardians import ChildGuardian, Guardian
from api.models.organisations import School, SchoolClass
from api.models.roster import ImportBatch, ImportBatchPublic, RosterImportReport
from api.scoping import Principal, as_system
from api.services.identity import reveal_id_number
from api.services.roster.columns import slot_of
from api.services.roster.files import export_row, write_roster_xlsx
from api.services.roster.parse import parse_roster, roster_invalid
from api.services.roster.plan import (
    ChildRow,
    GuardianRow,
    LinkRow,
    Plan,
    SchoolState,
    import_report,
    match_rows,
    plan_import,
    unknown_indexes,
)

_CHUNK = 1000
# An import that adds this many rows refreshes the planner's statistics of the archive tables.
_ANALYZE_AFTER = 1000
# Namespace of the advisory lock that serialises imports into one school.
_LOCK_NAMESPACE = 0x526F7374


def _columns(model: Any) -> list[Any]:
    """Every mapped column of ``model`` as an ORM attribute (so the session's scope rules still apply)."""
    return [getattr(model, column.key) for column in sa.inspect(model).columns]


async def _stream_rows(session: AsyncSession, stmt: Any) -> list[Any]:
    """All rows of ``stmt``, fetched in batches so that other requests run in between."""
    result = await session.stream(stmt.execution_options(yield_per=_CHUNK))
    rows: list[Any] = []
    async for batch in result.partitions():
        rows.extend(batch)
    return rows


async def load_school_state(session: AsyncSession, school: School) -> SchoolState:
    """Everything of the school an import compares with: its classes, children, links and guardians."""
    classes = (await session.execute(select(SchoolClass).where(SchoolClass.school_id == school.id))).scalars()
    of_school = select(Child.id).where(Child.school_id == school.id)
    children = await _stream_rows(session, select(*_columns(Child)).where(Child.school_id == school.id))
    link_rows = await _stream_rows(
        session,
        select(*_columns(ChildGuardian))
        .where(col(ChildGuardian.child_id).in_(of_school))
        .order_by(col(ChildGuardian.contact_order), col(ChildGuardian.created_at)),
    )
    linked = select(ChildGuardian.guardian_id).where(col(ChildGuardian.child_id).in_(of_school))
    guardians = await _stream_rows(session, select(*_columns(Guardian)).where(col(Guardian.id).in_(linked)))
    links: dict[uuid.UUID, list[LinkRow]] = {}
    for link in link_rows:
        links.setdefault(link.child_id, []).append(link)
    return SchoolState(
        school=school,
        classes=list(classes),
        children=children,
        links=links,
        guardians={g.id: g for g in guardians},
    )


def _class_sort_key(klass: SchoolClass | None) -> tuple[int, int, str]:
    if klass is None:
        return 99, 0, ""
    number = re.match(r"(\d+)", klass.name)
    return klass.grade, int(number.group(1)) if number else 999, klass.name


async def _indexes_in_other_schools(session: AsyncSession, school_id: uuid.UUID, indexes: list[str]) -> set[str]:
    """Which of these ID numbers are on file at another school. The check crosses scope on purpose (a
    child is filed once in the county and beyond) and answers only yes or no, never which school."""
    found: set[str] = set()
    async with as_system(session):  # SYSTEM: the check crosses scope on purpose (above)
        for start in range(0, len(indexes), 5000):
            chunk = indexes[start : start + 5000]
            result = await session.execute(
                select(Child.id_number_index).where(
                    col(Child.id_number_index).in_(chunk), col(Child.school_id) != school_id
                )
            )
            found.update(value for value in result.scalars() if value is not None)
    return found


def _jsonable(value: Any) -> Any:
    if isinstance(value, uuid.UUID):
        return str(value)
    if isinstance(value, datetime | date):
        return value.isoformat()
    if isinstance(value, enum.Enum):
        return value.value
    return value


async def _insert_audited(
    session: AsyncSession, model: Any, resource_type: str, rows: list[dict[str, Any]], *, school: School, now: datetime
) -> None:
    """Insert rows in bulk, each with the audit entry a single ORM insert would have had (``<type>.create``
    with the new values, sensitive columns redacted)."""
    if not rows:
        return
    template = audit.make_entry(session, action=f"{resource_type}.create", resource_type=resource_type)
    sensitive = {c.key for c in model.__table__.columns if c.info.get("sensitive")}
    for start in range(0, len(rows), _CHUNK):
        chunk = rows[start : start + _CHUNK]
        await session.execute(sa.insert(model), chunk)
        entries = [
            {
                "at": now,
                "account_id": template.account_id,
                "role": template.role,
                "action": template.action,
                "resource_type": resource_type,
                "resource_id": str(values["id"]),
                "school_id": school.id,
                "county_id": school.county_id,
                "request_id": template.request_id,
                "client_ip": template.client_ip,
                "changes": {
                    key: REDACTED if key in sensitive else _jsonable(value)
                    for key, value in values.items()
                    if value is not None
                },
            }
            for values in chunk
        ]
        await session.execute(sa.insert(AuditEntry), entries)


async def _lock_school(session: AsyncSession, school_id: uuid.UUID) -> None:
    """Imports into one school wait for each other (until commit), so two uploads cannot both create a child."""
    key = int.from_bytes(school_id.bytes[:4], "big", signed=True)
    await session.execute(sa.text("SELECT pg_advisory_xact_lock(:namespace, :key)"), {"namespace": _LOCK_NAMESPACE,
                                                                                      "key": key})  # fmt: skip


async def _get_school(session: AsyncSession, school_id: uuid.UUID) -> School:
    school = await session.get(School, school_id)
    if school is None:
        raise NotFound("学校不存在 (school not found)", code="school_not_found")
    return school


def _file_name(name: str | None) -> str:
    base = re.split(r"[\\/]", name or "")[-1].strip()
    return (base or "花名册")[:255]


async def import_roster(
    session: AsyncSession,
    principal: Principal,
    *,
    cipher: FieldCipher,
    school_id: uuid.UUID,
    content: bytes,
    file_name: str | None,
    now: datetime,
    dry_run: bool = False,
    create_classes: bool = False,
) -> RosterImportReport:
    """Import a roster into a school, all or nothing (see the module docstring).

    Raises ``Invalid`` (``roster_invalid``) with every row error, ``roster_columns`` for a wrong header,
    ``RosterTooLarge``/``UnsupportedFile`` for files that cannot be read, and ``Conflict`` if the archive
    changed under the import.
    """
    if principal.role not in (Role.school_admin, Role.platform_admin) and not principal.is_system:
        raise Forbidden("只有学校管理员可以导入花名册 (only school admins import the roster)", code="role_forbidden")
    school = await _get_school(session, school_id)
    today = now.astimezone(SHANGHAI).date()
    parsed = await anyio.to_thread.run_sync(partial(parse_roster, content, cipher=cipher, today=today))
    if not dry_run:
        await _lock_school(session, school.id)
    state = await load_school_state(session, school)
    unknown = unknown_indexes(parsed, state)
    elsewhere = await _indexes_in_other_schools(session, school.id, unknown) if unknown else set()
    matched = match_rows(parsed, state, elsewhere=elsewhere, cipher=cipher, today=today, create_classes=create_classes)
    errors = parsed.errors + matched.errors
    if errors:
        raise roster_invalid(errors)
    # Pure work on rows already loaded, off the event loop; the session is not touched while it runs.
    plan = await anyio.to_thread.run_sync(
        partial(plan_import, parsed, state, matched, cipher=cipher, principal=principal, now=now, today=today)
    )
    report = import_report(parsed, plan, dry_run=dry_run)
    if dry_run:
        return report
    try:
        report.batch_id = await _write(session, plan, principal=principal, school=school, now=now)
    except IntegrityError:
        raise Conflict(
            "导入时档案被同时修改（例如同一学生刚被建档），没有导入任何数据；请重新导入"
            " (the archive changed during import)",
            code="roster_conflict",
        ) from None
    batch = ImportBatch(
        id=report.batch_id,
        school_id=school.id,
        account_id=principal.account_id,
        file_name=_file_name(file_name),
        file_format=parsed.file_format,
        file_sha256=parsed.sha256,
        row_count=report.rows,
        children_created=report.children_created,
        children_updated=report.children_updated,
        children_unchanged=report.children_unchanged,
        children_re_enrolled=report.children_re_enrolled,
        guardians_created=report.guardians_created,
        guardians_reused=report.guardians_reused,
        guardians_updated=report.guardians_updated,
        classes_created=len(report.classes_created),
        created_at=now,
    )
    session.add(batch)
    audit.record(
        session,
        action="roster.import",
        resource_type="import_batch",
        resource_id=batch.id,
        school_id=school.id,
        county_id=school.county_id,
        detail=report.model_dump(mode="json", exclude={"dry_run", "batch_id"}),
    )
    await session.flush()
    return report


async def _write(
    session: AsyncSession, plan: Plan, *, principal: Principal, school: School, now: datetime
) -> uuid.UUID:
    for klass in plan.new_classes:
        session.add(klass)
    if plan.new_classes:
        await session.flush()
    await _insert_audited(session, Child, "child", plan.new_children, school=school, now=now)
    new_people = [p.values for p in plan.people.values() if p.is_new]
    await _insert_audited(session, Guardian, "guardian", new_people, school=school, now=now)
    # Changes to rows on file go through the ORM, so the audit log records each changed field.
    guardian_changes = {
        p.id: {**p.changes, "updated_at": now} for p in plan.people.values() if p.record is not None and p.changes
    }
    pending: list[tuple[Any, dict[uuid.UUID, dict[str, Any]]]] = [
        (Child, {child.id: values for child, values in plan.child_changes}),
        (Guardian, guardian_changes),
        (ChildGuardian, {link_id: values for link_id, (_, values) in plan.link_changes.items()}),
    ]
    for model, changes in pending:
        ids = list(changes)
        for start in range(0, len(ids), _CHUNK):
            records = await session.execute(select(model).where(col(model.id).in_(ids[start : start + _CHUNK])))
            for record in records.scalars():
                for key, value in changes[record.id].items():
                    setattr(record, key, value)
            await session.flush()
    await _insert_audited(session, ChildGuardian, "child_guardian", plan.new_links, school=school, now=now)
    for start in range(0, len(plan.events), _CHUNK):
        await session.execute(sa.insert(ChildEvent), plan.events[start : start + _CHUNK])
    if len(plan.new_children) + len(plan.new_links) >= _ANALYZE_AFTER:
        # Fresh statistics, or the planner takes the new rows for a handful and the next queries of the
        # school (their scope subqueries especially) run as nested loops over tens of thousands of rows.
        await session.execute(sa.text("ANALYZE child, guardian, child_guardian"))
    return uuid.uuid4()


async def list_imports(
    session: AsyncSession, *, school_id: uuid.UUID, offset: int, limit: int
) -> Page[ImportBatchPublic]:
    await _get_school(session, school_id)
    stmt = select(ImportBatch).where(ImportBatch.school_id == school_id)
    count = (await session.execute(select(sa.func.count()).select_from(stmt.subquery()))).scalar_one()
    rows = await session.execute(
        stmt.order_by(col(ImportBatch.created_at).desc(), col(ImportBatch.id)).offset(offset).limit(limit)
    )
    return Page(data=[ImportBatchPublic.model_validate(b, from_attributes=True) for b in rows.scalars()], count=count)


async def _export_rows(
    session: AsyncSession, filters: list[Any]
) -> tuple[list[ChildRow], dict[uuid.UUID, dict[str, tuple[LinkRow, GuardianRow]]]]:
    """The children an export holds, and for each the link and guardian filling each of its slots (father,
    mother, entrusted guardian: the first active link in contact order)."""
    children = await _stream_rows(session, select(*_columns(Child)).where(*filters))
    links = await _stream_rows(
        session,
        select(*_columns(ChildGuardian))
        .where(col(ChildGuardian.child_id).in_(select(Child.id).where(*filters)), col(ChildGuardian.is_active))
        .order_by(col(ChildGuardian.contact_order), col(ChildGuardian.created_at)),
    )
    guardian_ids = select(ChildGuardian.guardian_id).where(
        col(ChildGuardian.child_id).in_(select(Child.id).where(*filters)), col(ChildGuardian.is_active)
    )
    guardians = {
        g.id: g
        for g in await _stream_rows(session, select(*_columns(Guardian)).where(col(Guardian.id).in_(guardian_ids)))
    }
    slots: dict[uuid.UUID, dict[str, tuple[LinkRow, GuardianRow]]] = {}
    for link in links:
        slot = slot_of(link)
        if slot is not None and link.guardian_id in guardians:
            slots.setdefault(link.child_id, {}).setdefault(slot, (link, guardians[link.guardian_id]))
    return children, slots


async def export_roster(
    session: AsyncSession,
    principal: Principal,
    *,
    cipher: FieldCipher,
    school_id: uuid.UUID,
    class_id: uuid.UUID | None,
    status: ChildStatus,
    reveal_id_numbers: bool,
    now: datetime,
) -> tuple[str, bytes]:
    """The roster of a school as XLSX (file name, bytes): the template's columns, so it imports back as a no-op.

    ID numbers are masked unless a school admin asks for them; every export is audited with that choice.
    """
    if principal.role not in (Role.school_admin, Role.county_bureau, Role.platform_admin):
        raise Forbidden("只有学校管理员和县教育局可以导出花名册 (cannot export the roster)", code="role_forbidden")
    if reveal_id_numbers and principal.role != Role.school_admin:
        raise Forbidden(
            "只有本校管理员可以导出完整身份证号 (only the school's admin may export full ID numbers)",
            code="reveal_forbidden",
        )
    school = await _get_school(session, school_id)
    if class_id is not None:
        klass = await session.get(SchoolClass, class_id)
        if klass is None or klass.school_id != school.id:
            raise NotFound("班级不存在 (class not found)", code="class_not_found")
    today = now.astimezone(SHANGHAI).date()
    filters = [col(Child.school_id) == school.id, col(Child.status) == status]
    if class_id is not None:
        filters.append(col(Child.class_id) == class_id)
    classes = {
        c.id: c
        for c in (await session.execute(select(SchoolClass).where(SchoolClass.school_id == school.id))).scalars()
    }
    children, slots = await _export_rows(session, filters)

    def sort_key(child: ChildRow) -> tuple[Any, ...]:
        return (
            *_class_sort_key(classes.get(child.class_id) if child.class_id else None),
            child.name_pinyin,
            child.name,
        )

    children.sort(key=sort_key)

    def build() -> bytes:
        rows = []
        for child in children:
            if reveal_id_numbers and child.id_number_cipher:
                number: str | None = reveal_id_number(cipher, child.id_number_cipher)
            else:
                number = child.id_number_masked
            klass = classes.get(child.class_id) if child.class_id else None
            rows.append(export_row(child, klass, slots.get(child.id, {}), id_number=number, today=today))
        return write_roster_xlsx(rows)

    content = await anyio.to_thread.run_sync(build)
    audit.record(
        session,
        action="roster.export",
        resource_type="school",
        resource_id=school.id,
        school_id=school.id,
        county_id=school.county_id,
        detail={
            "reveal_id_numbers": reveal_id_numbers,
            "class_id": str(class_id) if class_id else None,
            "status": status.value,
            "rows": len(children),
        },
    )
    return f"{school.name}-花名册-{today:%Y%m%d}.xlsx", content
