"""Reading the audit log (scoped like everything else: school admins see their school's entries)."""

import uuid
from datetime import datetime

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncSession
from sqlmodel import select

from api.models.audit import AuditEntry, AuditEntryPublic
from api.models.base import Page


async def list_entries(
    session: AsyncSession,
    *,
    school_id: uuid.UUID | None,
    account_id: uuid.UUID | None,
    resource_type: str | None,
    resource_id: str | None,
    action: str | None,
    since: datetime | None,
    until: datetime | None,
    offset: int,
    limit: int,
) -> Page[AuditEntryPublic]:
    stmt = select(AuditEntry)
    for column, value in (
        (AuditEntry.school_id, school_id),
        (AuditEntry.account_id, account_id),
        (AuditEntry.resource_type, resource_type),
        (AuditEntry.resource_id, resource_id),
        (AuditEntry.action, action),
    ):
        if value is not None:
            stmt = stmt.where(column == value)
    if since is not None:
        stmt = stmt.where(AuditEntry.at >= since)
    if until is not None:
        stmt = stmt.where(AuditEntry.at < until)
    count = (await session.execute(select(sa.func.count()).select_from(stmt.subquery()))).scalar_one()
    rows = await session.execute(stmt.order_by(AuditEntry.id.desc()).offset(offset).limit(limit))  # type: ignore[union-attr]
    return Page(data=[AuditEntryPublic.model_validate(e, from_attributes=True) for e in rows.scalars()], count=count)
