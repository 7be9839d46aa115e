"""The demo's family account: a grandmother's WeChat already bound, so the family view can be tried at once."""

import uuid
from dataclasses import dataclass

import sqlalchemy as sa
from sqlalchemy import func
from sqlalchemy.ext.asyncio import AsyncSession
from sqlmodel import col, select

from api.demo.context import DemoContext, demo_id
from api.models.accounts import Account, Role
from api.models.children import Child
from api.models.guardians import ChildGuardian, Guardian, GuardianRole
from api.models.organisations import School

DEMO_FAMILY_OPENID = "o-demo-grandma"
DEMO_FAMILY_CODE = "demo-grandma"  # the fake WeChat maps js_code demo-<x> to openid o-demo-<x>
GRANDMOTHERS = ("祖母", "外祖母")


async def seed_family_account(session: AsyncSession, ctx: DemoContext) -> None:
    """A grandmother's WeChat already bound, so the family view can be tried at once (js_code demo-grandma):
    the entrusted grandmother with the most grandchildren at school, bound as an invite would bind her."""
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
