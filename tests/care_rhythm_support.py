"""Rows the care-rhythm tests and the benchmark build directly: care records (as links of a school's chain,
numbered after the chain's last), incidents, pairings, terms and holidays."""

import hashlib
import uuid
from datetime import date, datetime, timedelta
from typing import Any

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncSession

from api.models.care import CareKind, CarePairing, CareRecord, PairingKind
from api.models.care_rhythm import SchoolHoliday, SchoolTerm
from api.models.family_calls import CallLine, CallLineKind, CallStatus, FamilyCall
from api.models.incidents import IncidentCategory, Severity


def record_row(
    *,
    school_id: uuid.UUID,
    child_id: uuid.UUID,
    author_id: uuid.UUID,
    kind: CareKind,
    on: date,
    seq: int,
    at: datetime,
    channel: str | None = None,
) -> dict[str, Any]:
    content: dict[str, Any] = {"summary": "谈心"}
    if channel is not None:
        content["channel"] = channel
    digest = hashlib.sha256(f"{school_id}:{seq}".encode()).hexdigest()
    return {
        "id": uuid.uuid4(),
        "school_id": school_id,
        "child_id": child_id,
        "kind": kind.value,
        "occurred_on": on,
        "author_id": author_id,
        "created_at": at,
        "content": content,
        "version": 1,
        "updated_at": at,
        "chain_seq": seq,
        "prev_hash": digest,
        "content_hash": digest,
        "row_hash": digest,
    }


async def add_records(session: AsyncSession, rows: list[dict[str, Any]]) -> None:
    """Insert record rows (``record_row`` without ``seq``: numbered here after the school's last link)."""
    if not rows:
        return
    table: Any = CareRecord.__table__  # type: ignore[attr-defined]
    school_id = rows[0]["school_id"]
    last = (
        await session.execute(
            sa.select(sa.func.coalesce(sa.func.max(table.c.chain_seq), 0)).where(table.c.school_id == school_id)
        )
    ).scalar_one()
    for i, row in enumerate(rows, start=1):
        row["chain_seq"] = last + i
    await session.execute(sa.insert(table), rows)


async def add_record(
    session: AsyncSession,
    *,
    school_id: uuid.UUID,
    child_id: uuid.UUID,
    author_id: uuid.UUID,
    kind: CareKind,
    on: date,
    at: datetime,
    channel: str | None = None,
) -> None:
    row = record_row(
        school_id=school_id, child_id=child_id, author_id=author_id, kind=kind, on=on, seq=0, at=at, channel=channel
    )
    await add_records(session, [row])


async def add_incident(
    session: AsyncSession, *, world: Any, school: str, child_id: uuid.UUID, at: datetime, reporter: str
) -> None:
    township = "township1" if school == "school1" else "township2"
    await session.execute(
        sa.text(
            "INSERT INTO incident (id, case_code, county_id, township_id, school_id, child_id, category, severity,"
            " summary, location, occurred_at, time_basis, first_actions, reported_at, reported_by_id, status,"
            " policy, updated_at) VALUES (:id, :code, :county, :township, :school, :child, :category, :severity,"
            " '走失', '学校', :at, 'occurred', '寻找', :at, :reporter, 'closed', '{}', :at)"
        ),
        {
            "id": uuid.uuid4(),
            "code": uuid.uuid4().hex[:12],
            "county": world["county"],
            "township": world[township],
            "school": world[school],
            "child": child_id,
            "category": IncidentCategory.missing.value,
            "severity": Severity.severe.value,
            "at": at,
            "reporter": world[reporter],
        },
    )


async def add_proxy_parent(
    session: AsyncSession, *, school_id: uuid.UUID, child_id: uuid.UUID, staff_id: uuid.UUID, started_on: date
) -> uuid.UUID:
    pairing = CarePairing(
        school_id=school_id, child_id=child_id, kind=PairingKind.proxy_parent, staff_id=staff_id, started_on=started_on
    )
    session.add(pairing)
    await session.flush()
    return pairing.id


async def set_calendar(
    session: AsyncSession,
    school_id: uuid.UUID,
    *,
    terms: list[tuple[str, date, date]],
    holidays: list[tuple[str, date, date]] = (),  # type: ignore[assignment]
) -> None:
    for name, start, end in terms:
        session.add(SchoolTerm(school_id=school_id, name=name, starts_on=start, ends_on=end))
    for name, start, end in holidays:
        session.add(SchoolHoliday(school_id=school_id, name=name, starts_on=start, ends_on=end))
    await session.flush()


async def add_call_line(session: AsyncSession, school_id: uuid.UUID) -> uuid.UUID:
    line = CallLine(school_id=school_id, name="亲情电话", kind=CallLineKind.phone, room="留守儿童之家")
    session.add(line)
    await session.flush()
    return line.id


async def add_family_call(
    session: AsyncSession,
    *,
    line_id: uuid.UUID,
    school_id: uuid.UUID,
    child_id: uuid.UUID,
    booked_by: uuid.UUID,
    at: datetime,
    status: CallStatus,
) -> None:
    """A booked call that already happened (completed) or did not (missed, cancelled)."""
    session.add(
        FamilyCall(
            line_id=line_id,
            school_id=school_id,
            child_id=child_id,
            booked_by=booked_by,
            starts_at=at,
            ends_at=at + timedelta(minutes=15),
            blocked_until=at + timedelta(minutes=20),
            status=status,
            created_at=at - timedelta(days=1),
            updated_at=at,
        )
    )
    await session.flush()
