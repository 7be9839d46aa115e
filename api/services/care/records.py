"""Care records (谈心, 家访, 心理咨询…): entered, corrected by their author within the edit window, amended with
a reason after it, never deleted; read by those who see the child (counselling: counsellors and school admins
only), every read of content audited; and the verification of a school's hash chain.

Every new row — a record, the version a correction supersedes, an amendment — is a link of its school's chain
(:mod:`api.services.care.chain`). The chain head is locked while a link is added, so a school's links are
numbered one after another even when teachers save at the same moment.
"""

import asyncio
import uuid
from collections.abc import Sequence
from datetime import datetime, timedelta
from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.ext.asyncio import AsyncSession
from sqlmodel import col, select

from api import audit
from api.errors import Conflict, Forbidden, NotFound
from api.models.accounts import Account, Role
from api.models.base import Page
from api.models.care import (
    CARE_KIND_LABELS,
    AmendmentCreate,
    AmendmentPublic,
    CareChainHead,
    CareKind,
    CareRecord,
    CareRecordAmendment,
    CareRecordCorrection,
    CareRecordCreate,
    CareRecordDetail,
    CareRecordPublic,
    CareRecordVersion,
    CareRecordVersionPublic,
    ChainBreak,
    ChainReport,
)
from api.models.organisations import School
from api.scoping import Principal, as_system
from api.services.care import chain
from api.services.care.contents import canonical_content, check_occurred_on
from api.services.care.limits import care_setting
from api.services.care.scope import sees_counselling
from api.services.children.records import get_child
from api.services.children.rules import invalid, today_in_china

WRITERS = (Role.teacher, Role.school_admin)


# ---- the chain head -------------------------------------------------------------------------------------------


async def next_link(session: AsyncSession, school_id: uuid.UUID, now: datetime) -> tuple[int, str]:
    """Lock the school's chain head (made on first use) and return the next position and the hash it follows.
    The lock is held until the transaction ends: concurrent links of a school wait for each other."""
    # SYSTEM: the chain is the record's school's, which may no longer be the caller's (an amendment by the
    # school a child moved to); the head holds no personal data, only a position and a hash.
    async with as_system(session):
        await session.execute(
            insert(CareChainHead)
            .values(school_id=school_id, seq=0, head_hash=chain.GENESIS, updated_at=now)
            .on_conflict_do_nothing()
        )
        seq, head_hash = (
            await session.execute(
                sa.select(col(CareChainHead.seq), col(CareChainHead.head_hash))
                .where(col(CareChainHead.school_id) == school_id)
                .with_for_update()
            )
        ).one()
    return int(seq) + 1, str(head_hash)


async def advance_head(session: AsyncSession, school_id: uuid.UUID, seq: int, row_hash: str, now: datetime) -> None:
    # SYSTEM: as in next_link — the head of the record's school, locked there.
    async with as_system(session):
        await session.execute(
            sa.update(CareChainHead)
            .where(col(CareChainHead.school_id) == school_id)
            .values(seq=seq, head_hash=row_hash, updated_at=now)
        )


# ---- who may do what ----------------------------------------------------------------------------------------


def _require_writer(principal: Principal) -> uuid.UUID:
    if principal.role not in WRITERS or principal.account_id is None:
        raise Forbidden("只有本校教职工可以填写记录 (school staff only)", code="care_writer_only")
    return principal.account_id


async def _require_kind_allowed(session: AsyncSession, principal: Principal, kind: CareKind) -> None:
    if kind == CareKind.counselling and not await sees_counselling(session, principal):
        raise Forbidden(
            "心理咨询记录仅限心理辅导教师与学校管理员 (counsellors and school admins only)", code="counselling_only"
        )


async def _get_record(
    session: AsyncSession, principal: Principal, record_id: uuid.UUID, *, for_update: bool = False
) -> CareRecord:
    """A record the caller may see; a counselling record is "not found" for those who may not read it."""
    stmt = select(CareRecord).where(CareRecord.id == record_id)
    if for_update:
        stmt = stmt.with_for_update()
    record = (await session.execute(stmt)).scalar_one_or_none()
    if record is None or (record.kind == CareKind.counselling and not await sees_counselling(session, principal)):
        raise NotFound("记录不存在 (care record not found)", code="care_record_not_found")
    return record


# ---- writing -----------------------------------------------------------------------------------------------------


async def create_record(
    session: AsyncSession, principal: Principal, *, child_id: uuid.UUID, data: CareRecordCreate, now: datetime
) -> CareRecordDetail:
    """Record one event of care work for a child of the caller's school, dated today or before (Shanghai)."""
    author_id = _require_writer(principal)
    child = await get_child(session, child_id)
    await _require_kind_allowed(session, principal, data.kind)
    occurred_on = check_occurred_on(data.occurred_on, today=today_in_china(now), birth_date=child.birth_date)
    content = canonical_content(data.kind, data.content)
    window = timedelta(minutes=(await care_setting(session, child.school_id)).edit_window_minutes)
    record_id = uuid.uuid4()
    # The chain head is locked from here to the commit: everything that can be done before is done before.
    seq, prev_hash = await next_link(session, child.school_id, now)
    content_hash = chain.record_content_hash(
        record_id=record_id,
        school_id=child.school_id,
        child_id=child.id,
        kind=data.kind,
        author_id=author_id,
        created_at=now,
        first_state_hash=chain.state_hash(occurred_on, content),
    )
    row_hash = chain.link_hash(seq, prev_hash, content_hash)
    made = CareRecord(
        id=record_id,
        school_id=child.school_id,
        child_id=child.id,
        kind=data.kind,
        occurred_on=occurred_on,
        author_id=author_id,
        created_at=now,
        content=content,
        version=1,
        updated_at=now,
        chain_seq=seq,
        prev_hash=prev_hash,
        content_hash=content_hash,
        row_hash=row_hash,
    )
    session.add(made)
    await advance_head(session, child.school_id, seq, row_hash, now)
    await session.flush()
    # A new record has no versions or amendments yet: its answer needs no further query under the lock.
    public = _public(made, author_name=principal.display_name or None, window=window, amendments=0)
    return CareRecordDetail(**public.model_dump(), versions=[], amendments=[])


async def correct_record(
    session: AsyncSession, principal: Principal, *, record_id: uuid.UUID, data: CareRecordCorrection, now: datetime
) -> CareRecordDetail:
    """The author corrects a record within the school's edit window; the superseded version is kept (and
    chained). After the window only an amendment may be added."""
    author_id = _require_writer(principal)
    record = await _get_record(session, principal, record_id, for_update=True)
    if record.author_id != author_id:
        raise Forbidden("只有记录人可以更正 (only the author may correct a record)", code="not_author")
    setting = await care_setting(session, record.school_id)
    if now > record.created_at + timedelta(minutes=setting.edit_window_minutes):
        raise Conflict(
            "已超过更正时限, 请添加补正说明 (the edit window has passed: add an amendment)", code="edit_window_closed"
        )
    child = await get_child(session, record.child_id)
    occurred_on = record.occurred_on
    if data.occurred_on is not None:
        occurred_on = check_occurred_on(data.occurred_on, today=today_in_china(now), birth_date=child.birth_date)
    content = canonical_content(record.kind, data.content)
    new_state = chain.state_hash(occurred_on, content)
    if new_state == chain.state_hash(record.occurred_on, record.content):
        raise invalid("nothing_changed", "内容没有变化 (nothing changed)", "content")
    version_id = uuid.uuid4()
    seq, prev_hash = await next_link(session, record.school_id, now)
    content_hash = chain.version_content_hash(
        version_id=version_id,
        record_id=record.id,
        school_id=record.school_id,
        version=record.version,
        superseded_state_hash=chain.state_hash(record.occurred_on, record.content),
        replaced_by_hash=new_state,
        corrected_by_id=author_id,
        corrected_at=now,
    )
    row_hash = chain.link_hash(seq, prev_hash, content_hash)
    session.add(
        CareRecordVersion(
            id=version_id,
            record_id=record.id,
            school_id=record.school_id,
            version=record.version,
            occurred_on=record.occurred_on,
            content=record.content,
            replaced_by_hash=new_state,
            corrected_by_id=author_id,
            corrected_at=now,
            chain_seq=seq,
            prev_hash=prev_hash,
            content_hash=content_hash,
            row_hash=row_hash,
        )
    )
    record.occurred_on, record.content = occurred_on, content
    record.version += 1
    record.updated_at = now
    await advance_head(session, record.school_id, seq, row_hash, now)
    await session.flush()
    return await _detail(session, record)


async def amend_record(
    session: AsyncSession, principal: Principal, *, record_id: uuid.UUID, data: AmendmentCreate, now: datetime
) -> CareRecordDetail:
    """补正: add to or correct a record with a reason, linked to it — by its author or a school admin, at any
    time (the only way once the edit window has passed)."""
    author_id = _require_writer(principal)
    record = await _get_record(session, principal, record_id)
    if record.author_id != author_id and principal.role != Role.school_admin:
        raise Forbidden("只有记录人或学校管理员可以补正 (the author or a school admin)", code="not_author")
    amendment_id = uuid.uuid4()
    seq, prev_hash = await next_link(session, record.school_id, now)
    content_hash = chain.amendment_content_hash(
        amendment_id=amendment_id,
        record_id=record.id,
        school_id=record.school_id,
        reason=data.reason,
        text=data.text,
        author_id=author_id,
        created_at=now,
    )
    row_hash = chain.link_hash(seq, prev_hash, content_hash)
    session.add(
        CareRecordAmendment(
            id=amendment_id,
            record_id=record.id,
            school_id=record.school_id,
            reason=data.reason,
            text=data.text,
            author_id=author_id,
            created_at=now,
            chain_seq=seq,
            prev_hash=prev_hash,
            content_hash=content_hash,
            row_hash=row_hash,
        )
    )
    await advance_head(session, record.school_id, seq, row_hash, now)
    await session.flush()
    return await _detail(session, record)


# ---- reading ------------------------------------------------------------------------------------------------------


async def _account_names(session: AsyncSession, ids: set[uuid.UUID]) -> dict[uuid.UUID, str]:
    if not ids:
        return {}
    # SYSTEM: the names of the authors of records the caller already found in scope (a transferred child's
    # records were written by teachers of another school).
    async with as_system(session):
        rows = await session.execute(
            sa.select(col(Account.id), col(Account.display_name)).where(col(Account.id).in_(ids))
        )
    return {i: n for i, n in rows.all()}


async def _publish(session: AsyncSession, records: Sequence[CareRecord]) -> list[CareRecordPublic]:
    names = await _account_names(session, {r.author_id for r in records})
    windows: dict[uuid.UUID, timedelta] = {}
    for school_id in {r.school_id for r in records}:
        windows[school_id] = timedelta(minutes=(await care_setting(session, school_id)).edit_window_minutes)
    counts: dict[uuid.UUID, int] = {}
    if records:
        rows = await session.execute(
            sa.select(col(CareRecordAmendment.record_id), sa.func.count())
            .where(col(CareRecordAmendment.record_id).in_([r.id for r in records]))
            .group_by(col(CareRecordAmendment.record_id))
        )
        counts = {i: int(n) for i, n in rows.all()}
    return [
        _public(r, author_name=names.get(r.author_id), window=windows[r.school_id], amendments=counts.get(r.id, 0))
        for r in records
    ]


def _public(r: CareRecord, *, author_name: str | None, window: timedelta, amendments: int) -> CareRecordPublic:
    return CareRecordPublic(
        id=r.id,
        school_id=r.school_id,
        child_id=r.child_id,
        kind=r.kind,
        kind_label=CARE_KIND_LABELS[r.kind],
        occurred_on=r.occurred_on,
        author_id=r.author_id,
        author_name=author_name,
        created_at=r.created_at,
        content=r.content,
        version=r.version,
        editable_until=r.created_at + window,
        amendment_count=amendments,
    )


async def _detail(session: AsyncSession, record: CareRecord) -> CareRecordDetail:
    (public,) = await _publish(session, [record])
    versions = (
        (
            await session.execute(
                select(CareRecordVersion)
                .where(CareRecordVersion.record_id == record.id)
                .order_by(col(CareRecordVersion.version))
            )
        )
        .scalars()
        .all()
    )
    amendments = (
        (
            await session.execute(
                select(CareRecordAmendment)
                .where(CareRecordAmendment.record_id == record.id)
                .order_by(col(CareRecordAmendment.chain_seq))
            )
        )
        .scalars()
        .all()
    )
    names = await _account_names(session, {a.author_id for a in amendments})
    return CareRecordDetail(
        **public.model_dump(),
        versions=[
            CareRecordVersionPublic(
                version=v.version,
                occurred_on=v.occurred_on,
                content=v.content,
                corrected_by_id=v.corrected_by_id,
                corrected_at=v.corrected_at,
            )
            for v in versions
        ],
        amendments=[
            AmendmentPublic(
                id=a.id,
                reason=a.reason,
                text=a.text,
                author_id=a.author_id,
                author_name=names.get(a.author_id),
                created_at=a.created_at,
            )
            for a in amendments
        ],
    )


async def read_record(session: AsyncSession, principal: Principal, *, record_id: uuid.UUID) -> CareRecordDetail:
    """A record with its earlier versions and amendments; the read is audited (``care_record.read``)."""
    record = await _get_record(session, principal, record_id)
    detail = await _detail(session, record)
    audit.record(
        session,
        action="care_record.read",
        resource_type="care_record",
        resource_id=record.id,
        school_id=record.school_id,
        detail={"child_id": str(record.child_id), "kind": record.kind.value},
    )
    return detail


async def list_records(
    session: AsyncSession,
    principal: Principal,
    *,
    child_id: uuid.UUID,
    kinds: Sequence[CareKind],
    offset: int,
    limit: int,
) -> Page[CareRecordPublic]:
    """A child's records, newest first, optionally of some kinds; counselling records only for those who may
    read them. Each page read is audited (``care_record.list``)."""
    child = await get_child(session, child_id)
    stmt = select(CareRecord).where(CareRecord.child_id == child.id)
    if kinds:
        stmt = stmt.where(col(CareRecord.kind).in_(kinds))
    if not await sees_counselling(session, principal):
        stmt = stmt.where(CareRecord.kind != CareKind.counselling)
    count = (await session.execute(sa.select(sa.func.count()).select_from(stmt.subquery()))).scalar_one()
    rows = await session.execute(
        stmt.order_by(col(CareRecord.occurred_on).desc(), col(CareRecord.created_at).desc(), col(CareRecord.id))
        .offset(offset)
        .limit(limit)
    )
    records = rows.scalars().all()
    audit.record(
        session,
        action="care_record.list",
        resource_type="child",
        resource_id=child.id,
        school_id=child.school_id,
        detail={"records": [str(r.id) for r in records]},
    )
    return Page(data=await _publish(session, records), count=count)


# ---- verification ----------------------------------------------------------------------------------------------


def _table(model: type) -> sa.Table:
    table: sa.Table = model.__table__  # type: ignore[attr-defined]
    return table


def _record_links(
    records: Sequence[Any], versions: dict[uuid.UUID, list[Any]]
) -> tuple[list[chain.Link], dict[uuid.UUID, list[str]]]:
    """Each record's link, and the hashes of every state of each record in order (first … current)."""
    links: list[chain.Link] = []
    states: dict[uuid.UUID, list[str]] = {}
    for r in records:
        kept = versions.get(r.id, [])
        problem = None
        if [v.version for v in kept] != list(range(1, r.version)):
            problem = "versions_inconsistent"
        states[r.id] = [chain.state_hash(v.occurred_on, v.content) for v in kept] + [
            chain.state_hash(r.occurred_on, r.content)
        ]
        recomputed = chain.record_content_hash(
            record_id=r.id,
            school_id=r.school_id,
            child_id=r.child_id,
            kind=r.kind,
            author_id=r.author_id,
            created_at=r.created_at,
            first_state_hash=states[r.id][0],
        )
        links.append(
            chain.Link(r.chain_seq, chain.RECORD, r.id, r.prev_hash, r.content_hash, r.row_hash, recomputed, problem)
        )
    return links, states


def _check_chain(
    records: Sequence[Any], version_rows: Sequence[Any], amendments: Sequence[Any], head: chain.Head | None
) -> tuple[ChainBreak | None, int]:
    """Recompute every link of a chain from its stored rows and find the first that does not hold. Pure."""
    versions: dict[uuid.UUID, list[Any]] = {}
    for v in version_rows:
        versions.setdefault(v.record_id, []).append(v)
    links, states = _record_links(records, versions)
    for record_id, kept in versions.items():
        record_states = states.get(record_id)
        for v in kept:
            # The state that replaced version k is version k+1's, or the record's current one.
            replaced_by = record_states[v.version] if record_states and v.version < len(record_states) else None
            recomputed: str | None = chain.version_content_hash(
                version_id=v.id,
                record_id=v.record_id,
                school_id=v.school_id,
                version=v.version,
                superseded_state_hash=chain.state_hash(v.occurred_on, v.content),
                replaced_by_hash=replaced_by or "",
                corrected_by_id=v.corrected_by_id,
                corrected_at=v.corrected_at,
            )
            problem = None if replaced_by is not None else "versions_inconsistent"
            if problem is None and v.replaced_by_hash != replaced_by:
                problem = "replacement_changed"
            links.append(
                chain.Link(
                    v.chain_seq, chain.VERSION, v.id, v.prev_hash, v.content_hash, v.row_hash, recomputed, problem
                )
            )
    for a in amendments:
        recomputed = chain.amendment_content_hash(
            amendment_id=a.id,
            record_id=a.record_id,
            school_id=a.school_id,
            reason=a.reason,
            text=a.text,
            author_id=a.author_id,
            created_at=a.created_at,
        )
        links.append(
            chain.Link(a.chain_seq, chain.AMENDMENT, a.id, a.prev_hash, a.content_hash, a.row_hash, recomputed)
        )
    links.sort(key=lambda link: link.seq)
    return chain.first_break(links, head), len(links)


async def verify_chain(session: AsyncSession, *, school_id: uuid.UUID, now: datetime) -> ChainReport:
    """Check every link of the school's chain — content, order, and the head kept apart — and name the first
    that does not hold. Reads the whole chain, whatever the caller may read of it; returns only hashes'
    verdicts. Audited (``care_chain.verify``)."""
    if await session.get(School, school_id) is None:
        raise NotFound("学校不存在 (school not found)", code="school_not_found")
    # SYSTEM: the chain holds records of children who have since moved to other schools, and counselling
    # records; nothing of their content leaves this function, only the verdict. Plain rows, not ORM objects: a
    # school's chain may be a hundred thousand links.
    async with as_system(session):
        records = (
            await session.execute(sa.select(_table(CareRecord)).where(col(CareRecord.school_id) == school_id))
        ).all()
        version_rows = (
            await session.execute(
                sa.select(_table(CareRecordVersion))
                .where(col(CareRecordVersion.school_id) == school_id)
                .order_by(col(CareRecordVersion.record_id), col(CareRecordVersion.version))
            )
        ).all()
        amendments = (
            await session.execute(
                sa.select(_table(CareRecordAmendment)).where(col(CareRecordAmendment.school_id) == school_id)
            )
        ).all()
        head_row = (
            await session.execute(
                sa.select(col(CareChainHead.seq), col(CareChainHead.head_hash)).where(
                    col(CareChainHead.school_id) == school_id
                )
            )
        ).one_or_none()
    head = chain.Head(int(head_row[0]), str(head_row[1])) if head_row else None
    # Hashing a large chain takes seconds of CPU: off the event loop, which keeps serving meanwhile.
    broken, links = await asyncio.to_thread(_check_chain, records, version_rows, amendments, head)
    audit.record(
        session,
        action="care_chain.verify",
        resource_type="school",
        resource_id=school_id,
        school_id=school_id,
        detail={"links": links, "intact": broken is None},
    )
    return ChainReport(
        school_id=school_id,
        links=links,
        head_seq=head.seq if head else 0,
        intact=broken is None,
        first_break=broken,
        verified_at=now,
    )
