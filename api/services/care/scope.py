"""Who reads counselling records. Everything else about who sees pairings and care records is row-level
security (the declarations in api/models/care.py): pairings are the school's; care records follow the child.
Counselling records are narrowed further here, because that depends on a flag of the caller's account."""

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncSession
from sqlmodel import col

from api.models.accounts import Account, Role
from api.scoping import Principal


async def sees_counselling(session: AsyncSession, principal: Principal) -> bool:
    """心理咨询 records are for the school's admins and its counsellors (the account's flag) only."""
    if principal.role == Role.school_admin:
        return True
    if principal.role != Role.teacher or principal.account_id is None:
        return False
    flag = (
        await session.execute(sa.select(col(Account.is_counsellor)).where(col(Account.id) == principal.account_id))
    ).scalar_one_or_none()
    return bool(flag)
