"""A child's timeline: everything that happened to the child in one chronological view — care records,
pairings begun and ended, archive changes, status events on the roster, incidents, family calls that took place
or were missed, the activities (关爱活动) the child took part in — newest first, in pages.

One ``UNION ALL`` ordered by (day, instant, source, id) and cut with a keyset cursor, so a page costs the
same on the first screen and the fiftieth and an entry added meanwhile never shifts a page. Entries carry
what happened and who did it, not the content: a care record's content is opened from its own endpoint,
which audits that read; the timeline read itself is audited as a read of the child's file.

Who may read it: those who see the child's full file (its class's teachers, the school's admins, the bureau)
and the child's active proxy parent. Counselling records only for counsellors and school admins (the flag of
:func:`api.services.care.scope.sees_counselling`); archive changes only for those with full detail.
"""

import base64
import json
import uuid
from datetime import date, datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncSession
from sqlmodel import col

from api import audit
from api.errors import Forbidden, Invalid, field_error
from api.models.accounts import Account, Role
from api.models.audit import AuditEntry
from api.models.care import CARE_KIND_LABELS, PAIRING_KIND_LABELS, CareKind, CarePairing, CareRecord, PairingKind
from api.models.care_rhythm import TimelineEntry, TimelineKind, TimelinePage
from api.models.children import CHILD_EVENT_LABELS, ChildEvent, ChildEventKind
from api.models.family_calls import CallStatus, FamilyCall
from api.models.incidents import CATEGORY_LABELS, Incident, IncidentCategory
from api.models.plan import ACTIVITY_KIND_LABELS, Activity, ActivityKind, ActivityParticipant
from api.scoping import Principal, as_system
from api.services.care.due import shanghai_day
from api.services.care.scope import sees_counselling
from api.services.children.records import get_child
from api.services.children.rules import sees_full_detail, shanghai

_record: Any = CareRecord.__table__  # type: ignore[attr-defined]
_pairing: Any = CarePairing.__table__  # type: ignore[attr-defined]
_event: Any = ChildEvent.__table__  # type: ignore[attr-defined]
_audit: Any = AuditEntry.__table__  # type: ignore[attr-defined]
_incident: Any = Incident.__table__  # type: ignore[attr-defined]
_family_call: Any = FamilyCall.__table__  # type: ignore[attr-defined]
_activity: Any = Activity.__table__  # type: ignore[attr-defined]
_participant: Any = ActivityParticipant.__table__  # type: ignore[attr-defined]

MAX_LIMIT = 200


def _shanghai_midnight(day_column: Any) -> Any:
    """Midnight of a date in Asia/Shanghai, as an instant (an ended pairing has a date, not a time)."""
    return sa.func.timezone("Asia/Shanghai", sa.cast(day_column, sa.DateTime))


def _select(day: Any, at: Any, source: TimelineKind, sub: Any, ref: Any, actor: Any, *where: Any) -> Any:
    return sa.select(
        sa.cast(day, sa.Date).label("day"),
        at.label("at"),
        sa.literal(source.value, sa.String).label("source"),
        sa.cast(sub, sa.String).label("sub_kind"),
        sa.cast(ref, sa.String).label("ref_id"),
        actor.label("actor_id"),
    ).where(*where)


def _sources(child_id: uuid.UUID, *, kinds: set[TimelineKind], counselling: bool, archive: bool) -> list[Any]:
    parts: list[Any] = []
    if TimelineKind.care_record in kinds:
        where = [_record.c.child_id == child_id]
        if not counselling:
            where.append(_record.c.kind != CareKind.counselling.value)
        r = _record
        parts.append(
            _select(r.c.occurred_on, r.c.created_at, TimelineKind.care_record, r.c.kind, r.c.id, r.c.author_id, *where)
        )
    if TimelineKind.pairing in kinds:
        p = _pairing
        parts.append(
            _select(
                p.c.started_on,
                p.c.created_at,
                TimelineKind.pairing,
                p.c.kind,
                p.c.id,
                p.c.created_by_id,
                p.c.child_id == child_id,
            )
        )
        parts.append(
            _select(
                p.c.ended_on,
                _shanghai_midnight(p.c.ended_on),
                TimelineKind.pairing_ended,
                p.c.end_reason,
                p.c.id,
                p.c.ended_by_id,
                p.c.child_id == child_id,
                p.c.ended_on.is_not(None),
            )
        )
    if TimelineKind.status in kinds:
        e = _event
        parts.append(
            _select(
                e.c.effective_on,
                e.c.recorded_at,
                TimelineKind.status,
                e.c.kind,
                e.c.id,
                e.c.recorded_by_id,
                e.c.child_id == child_id,
            )
        )
    if TimelineKind.archive in kinds and archive:
        a = _audit
        parts.append(
            _select(
                shanghai_day(a.c.at),
                a.c.at,
                TimelineKind.archive,
                a.c.action,
                a.c.id,
                a.c.account_id,
                a.c.resource_type == "child",
                a.c.resource_id == str(child_id),
                a.c.action.in_(["child.create", "child.update"]),
            )
        )
    if TimelineKind.incident in kinds:
        i = _incident
        parts.append(
            _select(
                shanghai_day(i.c.occurred_at),
                i.c.occurred_at,
                TimelineKind.incident,
                i.c.category,
                i.c.id,
                i.c.reported_by_id,
                i.c.child_id == child_id,
            )
        )
    if TimelineKind.family_call in kinds:
        c = _family_call
        parts.append(
            _select(
                shanghai_day(c.c.starts_at),
                c.c.starts_at,
                TimelineKind.family_call,
                c.c.status,
                c.c.id,
                c.c.booked_by,
                c.c.child_id == child_id,
                c.c.status.in_([CallStatus.completed.value, CallStatus.missed.value]),
            )
        )
    if TimelineKind.activity in kinds:
        a, p = _activity, _participant
        parts.append(
            _select(
                p.c.held_on,
                a.c.created_at,
                TimelineKind.activity,
                a.c.kind,
                a.c.id,
                a.c.recorded_by_id,
                p.c.child_id == child_id,
                a.c.id == p.c.activity_id,
            )
        )
    return parts


def encode_cursor(entry: TimelineEntry) -> str:
    raw = json.dumps([entry.day.isoformat(), entry.at.isoformat(), entry.kind.value, entry.ref_id])
    return base64.urlsafe_b64encode(raw.encode()).decode().rstrip("=")


def decode_cursor(cursor: str) -> tuple[date, datetime, str, str]:
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4))
        day, at, source, ref = json.loads(raw)
        parsed = (date.fromisoformat(day), datetime.fromisoformat(at), TimelineKind(source).value, str(ref)[:64])
        if parsed[1].tzinfo is None:
            raise ValueError("naive")
        return parsed
    except (ValueError, TypeError, json.JSONDecodeError, UnicodeDecodeError):
        message = "分页游标无效 (invalid cursor)"
        raise Invalid(
            message, code="invalid_cursor", fields=[field_error(["query", "cursor"], message, "invalid_cursor")]
        ) from None


def _label(source: TimelineKind, sub: str | None) -> str:
    if sub is None:
        return "结对结束" if source == TimelineKind.pairing_ended else source.value
    try:
        match source:
            case TimelineKind.care_record:
                return CARE_KIND_LABELS[CareKind(sub)]
            case TimelineKind.pairing:
                return f"结对: {PAIRING_KIND_LABELS[PairingKind(sub)]}"
            case TimelineKind.pairing_ended:
                return "结对结束"
            case TimelineKind.status:
                return CHILD_EVENT_LABELS[ChildEventKind(sub)]
            case TimelineKind.archive:
                return "建档" if sub == "child.create" else "档案修改"
            case TimelineKind.family_call:
                return "亲情电话: 已通话" if sub == CallStatus.completed.value else "亲情电话: 未接通"
            case TimelineKind.incident:
                return f"突发事件: {CATEGORY_LABELS[IncidentCategory(sub)]}"
            case TimelineKind.activity:
                return f"关爱活动: {ACTIVITY_KIND_LABELS[ActivityKind(sub)]}"
    except (KeyError, ValueError):
        pass
    return sub


async def child_timeline(
    session: AsyncSession,
    principal: Principal,
    *,
    child_id: uuid.UUID,
    kinds: set[TimelineKind] | None = None,
    cursor: str | None = None,
    limit: int = 50,
) -> TimelinePage:
    """One page of the child's timeline, newest first; ``next_cursor`` fetches the page after it."""
    child = await get_child(session, child_id)
    full = sees_full_detail(principal, child)
    if principal.role == Role.family:
        raise Forbidden("无权查看该儿童的成长记录 (not yours to read)", code="detail_forbidden")
    if not full:
        proxy = (
            await session.execute(
                sa.select(_pairing.c.id).where(
                    _pairing.c.child_id == child.id,
                    _pairing.c.staff_id == principal.account_id,
                    _pairing.c.kind == PairingKind.proxy_parent.value,
                    _pairing.c.ended_on.is_(None),
                )
            )
        ).first()
        if proxy is None:
            raise Forbidden("无权查看该儿童的成长记录 (not your class or your child)", code="detail_forbidden")
    wanted = kinds or set(TimelineKind)
    if TimelineKind.pairing in wanted:
        wanted.add(TimelineKind.pairing_ended)
    parts = _sources(child.id, kinds=wanted, counselling=await sees_counselling(session, principal), archive=full)
    union = sa.union_all(*parts).subquery("t")
    key = sa.tuple_(union.c.day, union.c.at, union.c.source, union.c.ref_id)
    stmt = (
        sa.select(union)
        .order_by(union.c.day.desc(), union.c.at.desc(), union.c.source.desc(), union.c.ref_id.desc())
        .limit(limit + 1)
    )
    if cursor is not None:
        day, at, source, ref = decode_cursor(cursor)
        after = sa.tuple_(
            sa.literal(day, sa.Date),
            sa.literal(at, sa.DateTime(timezone=True)),
            sa.literal(source, sa.String),
            sa.literal(ref, sa.String),
        )
        stmt = stmt.where(key < after)
    # SYSTEM: the child was found in scope and the caller's right to its timeline checked above; the audit log
    # (archive changes, for full-detail readers only) is otherwise the admins' and the bureau's, and the
    # pairings and records of a transferred child were the former school's. Only this child's rows are read.
    async with as_system(session):
        rows = (await session.execute(stmt)).all()
    more = len(rows) > limit
    rows = rows[:limit]
    actor_ids = {r.actor_id for r in rows if r.actor_id}
    names: dict[uuid.UUID, str] = {}
    if actor_ids:
        # SYSTEM: an entry may be by the bureau or by staff of the child's former school; names only.
        async with as_system(session):
            names = dict(
                (
                    await session.execute(
                        sa.select(col(Account.id), col(Account.display_name)).where(col(Account.id).in_(actor_ids))
                    )
                ).all()
            )
    entries = [
        TimelineEntry(
            day=r.day,
            at=shanghai(r.at),
            kind=TimelineKind(r.source),
            sub_kind=r.sub_kind,
            label=_label(TimelineKind(r.source), r.sub_kind),
            ref_id=r.ref_id,
            actor_name=names.get(r.actor_id) if r.actor_id else None,
        )
        for r in rows
    ]
    audit.record(
        session,
        action="child.timeline.read",
        resource_type="child",
        resource_id=child.id,
        school_id=child.school_id,
        detail={"entries": len(entries), "kinds": sorted(k.value for k in wanted)},
    )
    return TimelinePage(data=entries, next_cursor=encode_cursor(entries[-1]) if more and entries else None)
