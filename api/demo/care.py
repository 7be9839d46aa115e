"""Demo data for 结对帮扶 and care records: most left-behind children of the demo schools get a proxy parent
(代理家长) among their school's staff, and about three months of care work lies behind the demo's "today" — talks,
home visits, calls with guardians and with the parents away. Most children's files are kept up; one in four
was let slip a month or more ago, so the teachers' to-do lists and the coverage report show both.

Records are links of their school's hash chain: each is hashed with :mod:`api.services.care.chain` exactly as
the record service hashes it and appended after the school's chain head, so ``/care-records/verify`` holds.
Everything has a fixed id (``demo_id``); re-seeding inserts only what is missing (on another day nothing: the
ids, not the dates, say what exists).
"""

import functools
import uuid
from collections import Counter
from datetime import UTC, date, datetime, time, timedelta
from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.ext.asyncio import AsyncSession
from sqlmodel import col

from api.clock import SHANGHAI
from api.demo.context import HISTORY_DAYS, DemoContext, demo_id
from api.models.care import CareKind, CarePairing, CareRecord, CareSetting, PairingKind
from api.models.children import Child, ChildStatus
from api.models.organisations import SchoolClass
from api.services.care import chain, records
from api.services.care.contents import canonical_content

# Staff who may be proxy parents at each demo school (the head teachers first, then the school's admin).
STAFF = {
    "shiqiao-central": ["teacher-li", "teacher-wang", "shiqiao-admin"],
    "shiqiao-second": ["teacher-chen", "shiqiao2-admin"],
    "liuhe-central": ["teacher-zhao", "liuhe-admin"],
}
SCHOOL_KEYS = list(STAFF)
# A demo school lets a proxy parent take more children than the default (5): three teachers for a village
# school's 150 left-behind children is what the demo county has.
PROXY_PARENT_CAP = 50
UNPAIRED_EVERY = 6  # every sixth child waits for a proxy parent (the "unpaired" list has something to show)
SLIPPED_EVERY = 4  # every fourth paired child's care stopped five weeks or more ago

PLACES = ("留守儿童之家", "班主任办公室", "操场边", "心理辅导室", "教室")
TOPICS = (
    "聊了最近的学习和在家里的情况，孩子说想妈妈了",
    "谈了和同学相处的事，鼓励他多参加集体活动",
    "了解周末在家的作息，提醒少玩手机",
    "孩子这次测验进步了，表扬并约定下次的目标",
    "说起爸爸过年回不回来，情绪有些低落，安慰并约好下周再聊",
)
MOODS = ("good", "very_good", "fair", "good", "low")
HOMES = ("砖混结构平房，房间干净，有独立书桌", "两层自建房，孩子与奶奶同住一间", "老屋，光线较暗，已建议添台灯")
GUARDIANS = ("奶奶身体尚可，能照顾孩子饮食起居", "爷爷务农较忙，辅导作业有困难", "外婆识字不多，但很关心孩子")
GUARDIAN_TALKS = ("电话沟通孩子近期在校表现", "反映孩子作业完成情况，请监护人督促", "提醒天冷添衣、注意用电安全")
PARENT_TALKS = ("与在外务工的妈妈视频，说了孩子的进步", "与爸爸通电话，约定每周和孩子视频", "请家长多关心孩子情绪")


@functools.cache
def _content(kind: CareKind, n: int) -> dict[str, Any]:
    """The canonical content of a record of ``kind``, the ``n``-th of a few variants (shared: never mutated)."""
    if kind == CareKind.talk:
        mood = MOODS[n % len(MOODS)]
        raw: dict[str, Any] = {"place": PLACES[n % len(PLACES)], "topics": TOPICS[n % len(TOPICS)], "mood": mood}
        if mood == "low":
            raw |= {"follow_up_needed": True, "follow_up": "一周内再次谈心，并与家长沟通"}
    elif kind == CareKind.home_visit:
        raw = {"met": "祖母", "living_conditions": HOMES[n % len(HOMES)], "guardian_situation": GUARDIANS[n % 3]}
    elif kind == CareKind.guardian_contact:
        raw = {"channel": "phone", "with_whom": "监护人", "summary": GUARDIAN_TALKS[n % len(GUARDIAN_TALKS)]}
    else:
        raw = {"channel": ("video", "phone")[n % 2], "with_whom": "家长", "summary": PARENT_TALKS[n % 3]}
    return canonical_content(kind, raw)


def care_history(today: date, *, slipped: bool, n: int) -> list[tuple[CareKind, date]]:
    """The care work done for one child over the last three months, oldest first: a talk and a call with
    the guardian every month, a home visit at the start of it, a call or video with the parents every week.
    A child whose care ``slipped`` has nothing in the last five weeks."""
    start = today - timedelta(days=HISTORY_DAYS - 7)
    stop = today - timedelta(days=35) if slipped else today
    done: list[tuple[CareKind, date]] = [(CareKind.home_visit, start + timedelta(days=3 + n % 5))]
    for month in range(3):
        done.append((CareKind.talk, start + timedelta(days=30 * month + 8 + n % 9)))
        done.append((CareKind.guardian_contact, start + timedelta(days=30 * month + 12 + n % 11)))
    week = start + timedelta(days=n % 3)
    while week <= today:
        done.append((CareKind.parent_contact, week))
        week += timedelta(days=7)
    # This week's talk is fresh for children whose care is kept up.
    done.append((CareKind.talk, today - timedelta(days=n % 3)))
    return sorted((kind, day) for kind, day in done if day <= stop and day <= today)


async def seed_care(session: AsyncSession, ctx: DemoContext) -> None:
    """Proxy parents for most left-behind children of the demo schools and their care records, chained."""
    now = ctx.now
    today = now.astimezone(SHANGHAI).date()
    for key in SCHOOL_KEYS:
        school_id = demo_id(f"school-{key}")
        await session.execute(
            insert(CareSetting)
            .values(school_id=school_id, proxy_parent_cap=PROXY_PARENT_CAP, updated_at=now)
            .on_conflict_do_nothing()
        )
        pairs = await _seed_pairings(session, ctx, key, today=today, now=now)
        await _seed_records(session, school_id, pairs, today=today, now=now)
    await session.flush()


async def _seed_pairings(
    session: AsyncSession, ctx: DemoContext, key: str, *, today: date, now: datetime
) -> list[tuple[uuid.UUID, uuid.UUID, bool]]:
    """Pair the school's left-behind children (the head teacher first while below the cap, else the staff
    member with the fewest); returns (child, proxy parent, care slipped) for each paired child."""
    school_id = demo_id(f"school-{key}")
    children = (
        await session.execute(
            sa.select(col(Child.id), col(SchoolClass.head_teacher_id))
            .outerjoin(SchoolClass, col(SchoolClass.id) == Child.class_id)
            .where(
                col(Child.school_id) == school_id, col(Child.is_left_behind), col(Child.status) == ChildStatus.enrolled
            )
            .order_by(col(Child.name_pinyin), col(Child.id))
        )
    ).all()
    staff = [ctx.accounts[username] for username in STAFF[key]]
    load: Counter[uuid.UUID] = Counter({s: 0 for s in staff})
    planned: list[tuple[uuid.UUID, uuid.UUID, bool]] = []
    for n, (child_id, head_id) in enumerate(children):
        if n % UNPAIRED_EVERY == UNPAIRED_EVERY - 1:
            continue
        head: uuid.UUID | None = head_id
        proxy = (
            head
            if head is not None and head in load and load[head] < PROXY_PARENT_CAP
            else min(staff, key=load.__getitem__)
        )
        if load[proxy] >= PROXY_PARENT_CAP:
            continue
        load[proxy] += 1
        planned.append((child_id, proxy, len(planned) % SLIPPED_EVERY == SLIPPED_EVERY - 1))
    ids = {child_id: demo_id(f"pairing-{child_id}") for child_id, _, _ in planned}
    present = set(
        (await session.execute(sa.select(col(CarePairing.id)).where(col(CarePairing.id).in_(ids.values())))).scalars()
    )
    rows = [
        {
            "id": ids[child_id],
            "school_id": school_id,
            "child_id": child_id,
            "kind": PairingKind.proxy_parent,
            "staff_id": proxy,
            "started_on": today - timedelta(days=HISTORY_DAYS),
            "created_at": now,
            "created_by_id": ctx.accounts[STAFF[key][-1]],
        }
        for child_id, proxy, _ in planned
        if ids[child_id] not in present
    ]
    if rows:
        # A child paired by someone else since the last seed keeps that pairing (one proxy parent each).
        await session.execute(insert(CarePairing).values(rows).on_conflict_do_nothing())
    return planned


async def _seed_records(
    session: AsyncSession,
    school_id: uuid.UUID,
    pairs: list[tuple[uuid.UUID, uuid.UUID, bool]],
    *,
    today: date,
    now: datetime,
) -> None:
    planned: list[dict[str, Any]] = []
    for n, (child_id, proxy, slipped) in enumerate(pairs):
        for i, (kind, day) in enumerate(care_history(today, slipped=slipped, n=n)):
            written = datetime.combine(day, time(16, 30 + n % 29), SHANGHAI).astimezone(UTC)
            planned.append({"id": demo_id(f"care-record-{child_id}-{i}"), "child_id": child_id, "kind": kind,
                            "occurred_on": day, "author_id": proxy, "created_at": min(written, now),
                            "content": _content(kind, (n + i) % 30)})  # fmt: skip
    if not planned:
        return
    present = set(
        (
            await session.execute(
                sa.select(col(CareRecord.id)).where(
                    col(CareRecord.school_id) == school_id, col(CareRecord.id).in_([r["id"] for r in planned])
                )
            )
        ).scalars()
    )
    missing = sorted((r for r in planned if r["id"] not in present), key=lambda r: (r["created_at"], r["id"]))
    if not missing:
        return
    # Append after the school's chain head, locked as the record service locks it.
    seq, prev_hash = await records.next_link(session, school_id, now)
    seq -= 1
    rows = []
    for record in missing:
        seq += 1
        content_hash = chain.record_content_hash(
            record_id=record["id"],
            school_id=school_id,
            child_id=record["child_id"],
            kind=record["kind"],
            author_id=record["author_id"],
            created_at=record["created_at"],
            first_state_hash=chain.state_hash(record["occurred_on"], record["content"]),
        )
        row_hash = chain.link_hash(seq, prev_hash, content_hash)
        rows.append(record | {"school_id": school_id, "version": 1, "updated_at": record["created_at"],
                              "chain_seq": seq, "prev_hash": prev_hash, "content_hash": content_hash,
                              "row_hash": row_hash})  # fmt: skip
        prev_hash = row_hash
    await session.execute(insert(CareRecord), rows)
    await records.advance_head(session, school_id, seq, prev_hash, now)
