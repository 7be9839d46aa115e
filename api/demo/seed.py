"""A deterministic demo county: 青山县, two townships, three schools, classes and an account of every role.

Idempotent: seeding twice changes nothing. Each later domain (archive, emergencies…) has a seeder that
:func:`seed_demo` calls after the organisation is in place, in dependency order. What the CLI needs is here
(`seed_demo`, `demo_family`, `demo_accounts_text`, `DEMO_PASSWORD`).
"""

from datetime import datetime
from typing import Any

from sqlalchemy.ext.asyncio import AsyncSession
from sqlmodel import select

from api.demo.archive import seed_archive
from api.demo.care import seed_care
from api.demo.context import DemoContext, DemoSeeder, demo_id
from api.demo.escalation import seed_emergencies
from api.demo.family import GRANDMOTHERS, DemoFamilyAccount, demo_family, seed_family_account
from api.demo.family_calls import seed_family_calls
from api.demo.plan import seed_plan
from api.models.accounts import Account, Role
from api.models.organisations import County, School, SchoolClass, Township
from api.security import Passwords

DEMO_PASSWORD = "liushou-demo-2026"

__all__ = ["DEMO_PASSWORD", "DemoFamilyAccount", "demo_accounts_text", "demo_family", "seed_demo"]

# Seeders of later domains, in dependency order.
DOMAIN_SEEDERS: list[DemoSeeder] = [
    seed_archive,
    seed_family_account,
    seed_emergencies,
    seed_family_calls,
    seed_care,
    seed_plan,
]


SCHOOLS = [
    # key, township index, name, kind, pupils
    ("shiqiao-central", 0, "石桥镇中心小学", "中心小学", 743),
    ("shiqiao-second", 0, "石桥镇第二完小", "完小", 386),
    ("liuhe-central", 1, "柳河乡中心小学", "中心小学", 512),
]

ACCOUNTS = [
    # username, role, display name, school key or township index
    ("admin", Role.platform_admin, "平台管理员", None),
    ("bureau", Role.county_bureau, "青山县教育局值班室", None),
    ("shiqiao-gov", Role.township_official, "石桥镇党委政府值班室", 0),
    ("liuhe-gov", Role.township_official, "柳河乡党委政府值班室", 1),
    ("shiqiao-admin", Role.school_admin, "周校长", "shiqiao-central"),
    ("shiqiao2-admin", Role.school_admin, "吴校长", "shiqiao-second"),
    ("liuhe-admin", Role.school_admin, "郑校长", "liuhe-central"),
    ("teacher-li", Role.teacher, "李秀英老师", "shiqiao-central"),
    ("teacher-wang", Role.teacher, "王建军老师", "shiqiao-central"),
    ("teacher-chen", Role.teacher, "陈丽老师", "shiqiao-second"),
    ("teacher-zhao", Role.teacher, "赵敏老师", "liuhe-central"),
]


async def _get_or_add(session: AsyncSession, model: type, key: str, **values: object) -> Any:
    obj: Any = await session.get(model, demo_id(key))
    if obj is None:
        obj = model(id=demo_id(key), **values)
        session.add(obj)
    return obj


async def seed_demo(session: AsyncSession, passwords: Passwords, *, now: datetime | None = None) -> DemoContext:
    """Create (or find) the demo county and run every registered demo seeder. ``session`` must be SYSTEM;
    ``now`` is the demo's "today" (default: the system clock's)."""
    county = await _get_or_add(session, County, "county", name="青山县", code="430599")
    townships = [
        await _get_or_add(session, Township, "township-shiqiao", county_id=demo_id("county"), name="石桥镇"),
        await _get_or_add(session, Township, "township-liuhe", county_id=demo_id("county"), name="柳河乡"),
    ]
    await session.flush()
    ctx = DemoContext(county_id=county.id, township_ids=[t.id for t in townships], school_ids=[])
    if now is not None:
        ctx.now = now
    for key, t_index, name, kind, pupils in SCHOOLS:
        school = await _get_or_add(
            session,
            School,
            f"school-{key}",
            county_id=ctx.county_id,
            township_id=ctx.township_ids[t_index],
            name=name,
            kind=kind,
            pupil_count=pupils,
        )
        ctx.school_ids.append(school.id)
    await session.flush()

    existing = set((await session.execute(select(Account.username))).scalars())
    password_hash = None
    for username, role, display, where in ACCOUNTS:
        if username not in existing:
            password_hash = password_hash or await passwords.hash(DEMO_PASSWORD)
            school_id = demo_id(f"school-{where}") if isinstance(where, str) else None
            township_id = ctx.township_ids[where] if isinstance(where, int) else None
            if school_id is not None:
                township_id = ctx.township_ids[next(t for k, t, *_ in SCHOOLS if k == where)]
            session.add(
                Account(
                    id=demo_id(f"account-{username}"),
                    role=role,
                    display_name=display,
                    username=username,
                    password_hash=password_hash,
                    phone=None,
                    county_id=ctx.county_id if role != Role.platform_admin else None,
                    township_id=township_id,
                    school_id=school_id,
                )
            )
        ctx.accounts[username] = demo_id(f"account-{username}")
    await session.flush()

    teachers = {
        "shiqiao-central": ["teacher-li", "teacher-wang"],
        "shiqiao-second": ["teacher-chen"],
        "liuhe-central": ["teacher-zhao"],
    }
    for key, *_ in SCHOOLS:
        school_id = demo_id(f"school-{key}")
        ctx.class_ids[school_id] = []
        for grade in range(1, 7):
            for number in (1, 2) if key == "shiqiao-central" else (1,):
                heads = teachers[key]
                head = heads[(grade + number) % len(heads)] if grade >= 3 else None
                klass = await _get_or_add(
                    session,
                    SchoolClass,
                    f"class-{key}-{grade}-{number}",
                    school_id=school_id,
                    grade=grade,
                    name=f"{number}班",
                    head_teacher_id=ctx.accounts[head] if head else None,
                )
                ctx.class_ids[school_id].append(klass.id)
    await session.flush()
    for seeder in DOMAIN_SEEDERS:
        await seeder(session, ctx)
    return ctx


def demo_accounts_text(base_url: str, *, family: DemoFamilyAccount | None = None) -> str:
    lines = [f"  {username:<16} {display:<14} ({role.value})" for username, role, display, _ in ACCOUNTS]
    if family is not None:
        relation = "grandmother" if family.relation in GRANDMOTHERS else family.relation
        lines.append(
            f"A family account, bound to WeChat: {family.display_name}, {family.relation} ({relation}) of "
            f"{'、'.join(family.children)} at {family.school_name} — POST /auth/wechat/login with code "
            f"'{family.wechat_code}'."
        )
    return "\n".join(
        [
            f"liushou demo is running: API docs at {base_url}/docs",
            f"Demo accounts (password for all: {DEMO_PASSWORD}):",
            *lines,
        ]
    )
