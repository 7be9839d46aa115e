"""Which pairings and care records a principal may see, registered with the session's scope rules.

Pairings are the school's work: its staff and those above the school see them. Care records follow the child:
staff who see the child see them (a child who transfers takes the records' visibility along, as the file
goes); families see none. Counselling records are narrowed further by :func:`sees_counselling`, in the
services, because that depends on a flag of the caller's account.
"""

from typing import Any

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.sql.elements import ColumnElement
from sqlmodel import col

from api.models.accounts import Account, Role
from api.models.care import (
    CareHelpPlan,
    CarePairing,
    CareProgressNote,
    CareRecord,
    CareRecordAmendment,
    CareRecordVersion,
    CareSetting,
)
from api.scoping import Principal, school_ids_clause, scope_rule, visible_child_ids

# A read that must not be narrowed by the caller's scope (the caller's right to it was checked first).
UNSCOPED = {"skip_scope": True}


@scope_rule(CareSetting)
def _setting(p: Principal) -> ColumnElement[bool] | None:
    return school_ids_clause(CareSetting.school_id, p)


@scope_rule(CarePairing)
def _pairing(p: Principal) -> ColumnElement[bool] | None:
    return school_ids_clause(CarePairing.school_id, p)


for _plan_model in (CareHelpPlan, CareProgressNote):

    def _rule(p: Principal, model: type = _plan_model) -> ColumnElement[bool] | None:
        clause = school_ids_clause(CarePairing.school_id, p)
        if clause is None:
            return None
        return col(model.pairing_id).in_(sa.select(col(CarePairing.id)).where(clause))  # type: ignore[attr-defined]

    scope_rule(_plan_model)(_rule)


def visible_record_ids(p: Principal) -> Any:
    return sa.select(col(CareRecord.id)).where(col(CareRecord.child_id).in_(visible_child_ids(p)))


@scope_rule(CareRecord)
def _record(p: Principal) -> ColumnElement[bool] | None:
    if p.role == Role.platform_admin:
        return None
    if p.role in (None, Role.family):
        return sa.false()
    return col(CareRecord.child_id).in_(visible_child_ids(p))


for _model in (CareRecordVersion, CareRecordAmendment):

    def _record_rule(p: Principal, model: type = _model) -> ColumnElement[bool] | None:
        if p.role == Role.platform_admin:
            return None
        if p.role in (None, Role.family):
            return sa.false()
        return col(model.record_id).in_(visible_record_ids(p))  # type: ignore[attr-defined]

    scope_rule(_model)(_record_rule)


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
