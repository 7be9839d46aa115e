"""A child's history: every audited change to the file and every event of its life on the roster, newest first."""

import uuid
from typing import Any

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncSession
from sqlmodel import col, select

from api import audit
from api.errors import Forbidden
from api.models.accounts import Account, Role
from api.models.audit import AuditEntry
from api.models.children import (
    CHILD_FIELD_LABELS,
    ChildEvent,
    FieldChange,
    HistoryEntry,
)
from api.scoping import Principal, as_system
from api.services.children.records import event_public, get_child
from api.services.children.rules import sees_full_detail, shanghai

# Columns whose changes say nothing to a person (derived keys, bookkeeping) or are shown through another.
_HIDDEN_IN_HISTORY = {"id", "created_at", "updated_at", "name_pinyin", "name_initials", "id_number_index"}


def _field_changes(action: str, changes: dict[str, Any] | None) -> list[FieldChange]:
    out: list[FieldChange] = []
    for key, value in (changes or {}).items():
        if key in _HIDDEN_IN_HISTORY:
            continue
        name = "id_number" if key == "id_number_cipher" else key
        label = "身份证号" if name == "id_number" else CHILD_FIELD_LABELS.get(key, key)
        if action.endswith(".create"):
            redacted = value == audit.REDACTED
            out.append(FieldChange(field=name, label=label, new=None if redacted else value, redacted=redacted))
        elif isinstance(value, dict) and value.get("changed"):
            out.append(FieldChange(field=name, label=label, redacted=True))
        elif isinstance(value, dict):
            out.append(FieldChange(field=name, label=label, old=value.get("old"), new=value.get("new")))
    return out


async def child_history(session: AsyncSession, principal: Principal, *, child_id: uuid.UUID) -> list[HistoryEntry]:
    """Who changed which field when (from the audit log), merged with the child's life events; newest first."""
    child = await get_child(session, child_id)
    if principal.role == Role.family or not sees_full_detail(principal, child):
        raise Forbidden("无权查看该儿童的档案变更记录 (not your class)", code="detail_forbidden")
    # SYSTEM: the audit log is otherwise readable only by school admins and the bureau, and a change may have
    # been made by the bureau or by staff of the child's former school; the child was found in scope, the
    # caller has full detail rights, and only this child's own entries and their authors' names are read.
    async with as_system(session):
        entries = (
            (
                await session.execute(
                    select(AuditEntry).where(
                        AuditEntry.resource_type == "child",
                        AuditEntry.resource_id == str(child.id),
                        col(AuditEntry.action).in_(["child.create", "child.update"]),
                    )
                )
            )
            .scalars()
            .all()
        )
        events = (await session.execute(select(ChildEvent).where(ChildEvent.child_id == child.id))).scalars().all()
        actor_ids = {e.account_id for e in entries if e.account_id}
        actor_ids |= {e.recorded_by_id for e in events if e.recorded_by_id}
        names: dict[uuid.UUID, str] = {}
        if actor_ids:
            rows = await session.execute(
                sa.select(col(Account.id), col(Account.display_name)).where(col(Account.id).in_(actor_ids))
            )
            names = {account_id: name for account_id, name in rows.all()}
    history = [
        HistoryEntry(
            at=shanghai(e.at),
            source="change",
            action=e.action,
            actor_id=e.account_id,
            actor_name=names.get(e.account_id) if e.account_id else None,
            changes=_field_changes(e.action, e.changes),
        )
        for e in entries
    ]
    history += [
        HistoryEntry(
            at=shanghai(e.recorded_at),
            source="event",
            action=e.kind.value,
            actor_id=e.recorded_by_id,
            actor_name=names.get(e.recorded_by_id) if e.recorded_by_id else None,
            event=event_public(e),
        )
        for e in events
    ]
    history.sort(key=lambda h: (h.at, h.source == "event"), reverse=True)
    return history
