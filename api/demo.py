"""A deterministic demo county: 青山县, two townships, three schools, classes and an account of every role.

Idempotent: seeding twice changes nothing. Each later domain (archive, emergencies…) has a seeder that
:func:`seed_demo` calls after the organisation is in place, in dependency order.
"""

import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncSession
from sqlmodel import col, select

from api.models.accounts import Account, Role
from api.models.organisations import County, School, SchoolClass, Township
from api.security import Passwords

DEMO_PASSWORD = "liushou-demo-2026"
# Fixed ids so that demo links and docs stay valid across re-seeds.
NS = uuid.UUID("6f1c1e1a-5d39-4c55-9a53-6c6975736f75")


def demo_id(name: str) -> uuid.UUID:
    return uuid.uuid5(NS, name)


@dataclass
class DemoContext:
    """What the organisation seeder made, for the seeders of later domains."""

    county_id: uuid.UUID
    township_ids: list[uuid.UUID]
    school_ids: list[uuid.UUID]
    class_ids: dict[uuid.UUID, list[uuid.UUID]] = field(default_factory=dict)
    accounts: dict[str, uuid.UUID] = field(default_factory=dict)


DemoSeeder = Callable[[AsyncSession, DemoContext], Awaitable[None]]


async def _seed_archive(session: AsyncSession, ctx: DemoContext) -> None:
    # Imported here: the archive seeder imports this module for demo_id and DemoContext.
    from api.demo_archive import seed_archive

    await seed_archive(session, ctx)


async def _seed_emergencies(session: AsyncSession, ctx: DemoContext) -> None:
    # Imported here for the same reason: duty contacts and one closed incident replayed by the engine.
    from api.escalation.demo import seed_emergencies

    await seed_emergencies(session, ctx)


async def _seed_family_calls(session: AsyncSession, ctx: DemoContext) -> None:
    # 亲情电话: the demo school's family phone and video room, and a few calls booked for tomorrow.
    from api.services.family_calls.demo import DEMO_SCHOOL, seed_family_calls

    await seed_family_calls(
        session, school_id=demo_id(f"school-{DEMO_SCHOOL}"), admin_id=ctx.accounts["shiqiao-admin"], demo_id=demo_id
    )


DEMO_FAMILY_OPENID = "o-demo-grandma"
DEMO_FAMILY_CODE = "demo-grandma"  # the fake WeChat maps js_code demo-<x> to openid o-demo-<x>
GRANDMOTHERS = ("祖母", "外祖母")


async def _seed_family_account(session: AsyncSession, ctx: DemoContext) -> None:
    """A grandmother's WeChat already bound, so the family view can be tried at once (js_code demo-grandma):
    the entrusted grandmother with the most grandchildren at school, bound as an invite would bind her."""
    from sqlalchemy import func

    from api.models.children import Child
    from api.models.guardians import ChildGuardian, Guardian, GuardianRole

    account_id = demo_id("account-family-grandma")
    if await session.get(Account, account_id) is not None:
        return
    grandchildren = func.count(col(ChildGuardian.id))
    row = (
        await session.execute(
            select(Guardian, func.min(sa.cast(col(Child.school_id), sa.String)))
            .join(ChildGuardian, col(ChildGuardian.guardian_id) == Guardian.id)
            .join(Child, col(Child.id) == ChildGuardian.child_id)
            .where(
                col(ChildGuardian.role) == GuardianRole.entrusted_guardian,
                col(ChildGuardian.relation).in_(GRANDMOTHERS),
                col(ChildGuardian.is_active),
                col(Guardian.account_id).is_(None),
            )
            .group_by(col(Guardian.id))
            .order_by(grandchildren.desc(), col(Guardian.id))
            .limit(1)
        )
    ).first()
    if row is None:
        return
    guardian, school_id = row
    school = await session.get(School, uuid.UUID(school_id))
    assert school is not None
    session.add(
        Account(
            id=account_id,
            role=Role.family,
            display_name=guardian.name,
            wechat_openid=DEMO_FAMILY_OPENID,
            county_id=school.county_id,
            township_id=school.township_id,
            school_id=school.id,
        )
    )
    await session.flush()
    guardian.account_id = account_id
    ctx.accounts["family-grandma"] = account_id


@dataclass(frozen=True)
class DemoFamilyAccount:
    """The demo's bound family account as the database holds it (for the serve banner)."""

    display_name: str
    relation: str
    children: list[str]
    school_name: str
    wechat_code: str = DEMO_FAMILY_CODE


async def demo_family(session: AsyncSession) -> DemoFamilyAccount | None:
    """Who the demo family account really is: the guardian bound to it and the children it sees."""
    from api.models.children import Child
    from api.models.guardians import ChildGuardian, Guardian

    rows = (
        await session.execute(
            select(Guardian.name, ChildGuardian.relation, Child.name, School.name)
            .join(ChildGuardian, col(ChildGuardian.guardian_id) == Guardian.id)
            .join(Child, col(Child.id) == ChildGuardian.child_id)
            .join(School, col(School.id) == Child.school_id)
            .where(col(Guardian.account_id) == demo_id("account-family-grandma"), col(ChildGuardian.is_active))
            .order_by(col(Child.birth_date), col(Child.name))
        )
    ).all()
    if not rows:
        return None
    return DemoFamilyAccount(
        display_name=rows[0][0],
        relation=rows[0][1],
        children=[row[2] for row in rows],
        school_name=rows[0][3],
    )


# Seeders of later domains, in dependency order.
DOMAIN_SEEDERS: list[DemoSeeder] = [_seed_archive, _seed_family_account, _seed_emergencies, _seed_family_calls]


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


async def seed_demo(session: AsyncSession, passwords: Passwords) -> DemoContext:
    """Create (or find) the demo county and run every registered demo seeder. ``session`` must be SYSTEM."""
    county = await _get_or_add(session, County, "county", name="青山县", code="430599")
    townships = [
        await _get_or_add(session, Township, "township-shiqiao", county_id=demo_id("county"), name="石桥镇"),
        await _get_or_add(session, Township, "township-liuhe", county_id=demo_id("county"), name="柳河乡"),
    ]
    await session.flush()
    ctx = DemoContext(county_id=county.id, township_ids=[t.id for t in townships], school_ids=[])
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
