"""Demo data for 亲情电话: the family phone and the video room of 石桥镇中心小学 with their hours, and a few calls
booked for tomorrow (Asia/Shanghai). Re-seeding finds what is there by its fixed id and adds only what is missing.
"""

import uuid
from datetime import UTC, datetime, time, timedelta

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncSession
from sqlmodel import col

from api.clock import SHANGHAI
from api.demo.context import DemoContext, demo_id
from api.models.children import Child
from api.models.family_calls import (
    CallEventKind,
    CallLine,
    CallLineKind,
    CallLineWindow,
    CallStatus,
    FamilyCall,
    FamilyCallEvent,
)
from api.models.guardians import ChildGuardian

DEMO_SCHOOL = "shiqiao-central"
# The hours the plans describe: early morning and noon every day, Tuesday and Thursday afternoons, Sunday morning.
HOURS = [(d, "07:00", "08:00") for d in range(7)] + [(d, "12:00", "13:30") for d in range(7)]
HOURS += [(1, "15:30", "17:30"), (3, "15:30", "17:30"), (6, "09:00", "11:30")]


async def seed_family_calls(session: AsyncSession, ctx: DemoContext, now: datetime | None = None) -> None:
    """Two lines for the demo school and three calls tomorrow at noon for children with a guardian on file.
    Every row has a fixed id (``demo_id``), so re-seeding adds only what is missing."""
    now = now or ctx.now
    school_id = demo_id(f"school-{DEMO_SCHOOL}")
    admin_id = ctx.accounts["shiqiao-admin"]
    lines = []
    for key, name, kind, capacity, number in (
        ("family-phone", "亲情电话", CallLineKind.phone, 1, "0739-5552101"),
        ("video-room", "亲情视频室", CallLineKind.video, 3, None),
    ):
        line = await session.get(CallLine, demo_id(f"call-line-{key}"))
        if line is None:
            line = CallLine(id=demo_id(f"call-line-{key}"), school_id=school_id, name=name, kind=kind,
                            room="留守儿童之家", number=number, capacity=capacity, created_at=now)  # fmt: skip
            session.add(line)
            await session.flush()
            for weekday, starts, ends in HOURS:
                session.add(CallLineWindow(line_id=line.id, weekday=weekday, starts=time.fromisoformat(starts),
                                           ends=time.fromisoformat(ends)))  # fmt: skip
        lines.append(line)
    await session.flush()
    children = (
        await session.execute(
            sa.select(col(Child.id), col(ChildGuardian.guardian_id))
            .join(ChildGuardian, col(ChildGuardian.child_id) == Child.id)
            .where(col(Child.school_id) == school_id, col(ChildGuardian.is_active))
            .order_by(col(Child.name_pinyin), col(ChildGuardian.contact_order))
            .limit(30)
        )
    ).all()
    seen: list[tuple[uuid.UUID, uuid.UUID]] = []
    for child_id, guardian_id in children:
        if child_id not in {c for c, _ in seen}:
            seen.append((child_id, guardian_id))
    tomorrow = now.astimezone(SHANGHAI).date() + timedelta(days=1)
    plan = [(lines[0], "12:00", 1), (lines[1], "12:00", 1), (lines[1], "12:20", 2)]
    for n, ((line, hhmm, booth), (child_id, guardian_id)) in enumerate(zip(plan, seen, strict=False)):
        call_id = demo_id(f"family-call-{n}")
        if await session.get(FamilyCall, call_id) is not None:
            continue
        starts_at = datetime.combine(tomorrow, time.fromisoformat(hhmm), SHANGHAI).astimezone(UTC)
        ends_at = starts_at + timedelta(minutes=line.slot_minutes)
        session.add(FamilyCall(id=call_id, line_id=line.id, school_id=school_id, child_id=child_id,
                               guardian_id=guardian_id, booked_by=admin_id, booth=booth, starts_at=starts_at,
                               ends_at=ends_at, blocked_until=ends_at + timedelta(minutes=line.buffer_minutes),
                               status=CallStatus.booked, created_at=now, updated_at=now))  # fmt: skip
        await session.flush()
        session.add(FamilyCallEvent(call_id=call_id, kind=CallEventKind.booked, at=now, account_id=admin_id,
                                    detail={"booth": booth, "demo": True}))  # fmt: skip
    await session.flush()
