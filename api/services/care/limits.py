"""A school's own limits for care work — caps on children per proxy parent and per mentor, the edit window of
care records — with the defaults for a school that has set none."""

import uuid
from datetime import datetime

from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.ext.asyncio import AsyncSession

from api.errors import Forbidden, NotFound
from api.models.accounts import Role
from api.models.care import CareSetting, CareSettingPublic, CareSettingUpdate
from api.models.organisations import School
from api.scoping import Principal


async def care_setting(session: AsyncSession, school_id: uuid.UUID) -> CareSetting:
    """The school's row, or the defaults (not stored) when it has none."""
    found = await session.get(CareSetting, school_id)
    return found if found is not None else CareSetting(school_id=school_id)


def setting_public(setting: CareSetting) -> CareSettingPublic:
    return CareSettingPublic(
        school_id=setting.school_id,
        proxy_parent_cap=setting.proxy_parent_cap,
        mentor_cap=setting.mentor_cap,
        edit_window_minutes=setting.edit_window_minutes,
    )


async def read_setting(session: AsyncSession, *, school_id: uuid.UUID) -> CareSettingPublic:
    if await session.get(School, school_id) is None:
        raise NotFound("学校不存在 (school not found)", code="school_not_found")
    return setting_public(await care_setting(session, school_id))


async def update_setting(
    session: AsyncSession, principal: Principal, *, school_id: uuid.UUID, data: CareSettingUpdate, now: datetime
) -> CareSettingPublic:
    """Change the school's caps or edit window (its admins only). A lower cap does not end pairings already
    made: it only refuses new ones beyond it."""
    if await session.get(School, school_id) is None:
        raise NotFound("学校不存在 (school not found)", code="school_not_found")
    if principal.role not in (Role.school_admin, Role.platform_admin):
        raise Forbidden("只有学校管理员可以修改 (only school admins)", code="school_admin_only")
    # Two admins saving at once: the row is made once, then each change waits for the other.
    await session.execute(
        insert(CareSetting).values(school_id=school_id, updated_at=now).on_conflict_do_nothing(),
    )
    setting = await session.get_one(CareSetting, school_id, with_for_update=True, populate_existing=True)
    for name, value in data.model_dump(exclude_unset=True).items():
        if value is not None:
            setattr(setting, name, value)
    setting.updated_at = now
    setting.updated_by_id = principal.account_id
    await session.flush()
    return setting_public(setting)
