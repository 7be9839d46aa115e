"""The rules of a child's file that need no database: who sees the full file, the checks on dates and the ID
number, the school year, and the event every change of a child's place on the roster leaves."""

import uuid
from datetime import date, datetime
from typing import Any

from api.clock import SHANGHAI
from api.errors import Conflict, Forbidden, Invalid, field_error
from api.idcard import IdNumber
from api.models.accounts import Role
from api.models.children import (
    Child,
    ChildEvent,
    ChildEventKind,
    ChildFlag,
    ChildStatus,
    Sex,
)
from api.scoping import Principal

# Roles that see a child's full file whenever they can see the child at all. Never families: the file holds
# the school's rating of the family's own care and teachers' notes; they get the family view
# (api.services.guardians.family.family_child).
FULL_DETAIL_ROLES = frozenset({Role.platform_admin, Role.county_bureau, Role.township_official, Role.school_admin})
SCHOOL_ADMINS = frozenset({Role.platform_admin, Role.school_admin})
# A child of the archive is at most this old when entered (初中 ends around 15–16; repeaters, late starters).
MAX_AGE_ON_ENTRY = 25


FLAG_COLUMNS: dict[ChildFlag, Any] = {
    ChildFlag.special_hardship: Child.special_hardship,
    ChildFlag.single_parent: Child.single_parent,
    ChildFlag.struggling_learner: Child.struggling_learner,
    ChildFlag.disability: Child.disability,
    ChildFlag.needs_individual_plan: Child.needs_individual_plan,
}
_FLAG_KEYS = [(flag, column.key) for flag, column in FLAG_COLUMNS.items()]  # read per child of every page


# ---- small helpers ----------------------------------------------------------------------------------------


def today_in_china(now: datetime) -> date:
    return now.astimezone(SHANGHAI).date()


def age_on(birth: date, today: date) -> int:
    return today.year - birth.year - ((today.month, today.day) < (birth.month, birth.day))


def school_year_start(day: date) -> date:
    """The school year runs from 1 September (Asia/Shanghai dates)."""
    return date(day.year if day.month >= 9 else day.year - 1, 9, 1)


def full_detail_of(principal: Principal) -> tuple[bool, frozenset[uuid.UUID]]:
    """Whose full files the principal sees: every child's it sees (``True``), or those of the classes given.
    School admins, the bureau, the township and the platform see every full file; teachers those of the classes
    they teach; nobody else any (families: the family view, elsewhere). :func:`sees_full_detail` in Python, and
    the file's statement in SQL (its audit entry, ``records.read_child``), both judge by this."""
    if principal.is_system or principal.role in FULL_DETAIL_ROLES:
        return True, frozenset()
    return False, principal.class_ids if principal.role == Role.teacher else frozenset()


def sees_full_detail(principal: Principal, child: Child) -> bool:
    """Whether the principal sees the child's full file, or the basic view (:func:`full_detail_of`)."""
    everyone, classes = full_detail_of(principal)
    return everyone or (child.class_id is not None and child.class_id in classes)


def flags_of(child: Child) -> list[ChildFlag]:
    return [flag for flag, key in _FLAG_KEYS if getattr(child, key)]


def invalid(code: str, message: str, loc: str) -> Invalid:
    return Invalid(message, code=code, fields=[field_error([loc], message, code)])


def shanghai(moment: datetime) -> datetime:
    return moment.astimezone(SHANGHAI)


def require_school_admin(principal: Principal) -> None:
    if not (principal.is_system or principal.role in SCHOOL_ADMINS):
        raise Forbidden("只有学校管理员可以办理 (only school admins can do this)", code="school_admin_only")


def check_birth_date(birth: date, today: date) -> None:
    if birth > today:
        raise invalid("birth_date_in_future", "出生日期晚于今天 (birth date is in the future)", "birth_date")
    if age_on(birth, today) >= MAX_AGE_ON_ENTRY:
        raise invalid("birth_date_implausible", "出生日期不合理，请核对 (birth date is implausible)", "birth_date")


def check_left_behind_since(since: date | None, birth: date, today: date) -> None:
    if since is None:
        return
    if since > today:
        raise invalid(
            "left_behind_since_in_future",
            "留守起始时间晚于今天 (left_behind_since is in the future)",
            "left_behind_since",
        )
    if since < birth:
        raise invalid(
            "left_behind_since_before_birth",
            "留守起始时间早于出生日期 (left_behind_since is before the birth date)",
            "left_behind_since",
        )


def agree_with_id(parsed: IdNumber, *, sex: Sex | None, birth_date: date | None) -> None:
    if birth_date is not None and birth_date != parsed.birth_date:
        raise invalid(
            "id_number_birth_date_mismatch",
            "出生日期与身份证号不一致，请核对 (birth date does not match the ID number)",
            "birth_date",
        )
    if sex is not None and sex.value != parsed.sex.value:
        raise invalid(
            "id_number_sex_mismatch", "性别与身份证号不一致，请核对 (sex does not match the ID number)", "sex"
        )


def duplicate() -> Conflict:
    message = "该身份证号已有档案；如为转学，请由原学校办理转学 (a child with this ID number already has a file)"
    return Conflict(message, code="child_duplicate_id_number", fields=[field_error(["id_number"], message, "conflict")])


def new_event(
    child: Child,
    kind: ChildEventKind,
    *,
    principal: Principal,
    now: datetime,
    effective_on: date,
    reason: str | None,
    from_school_id: uuid.UUID | None = None,
    to_school_id: uuid.UUID | None = None,
    from_class_id: uuid.UUID | None = None,
    to_class_id: uuid.UUID | None = None,
) -> ChildEvent:
    return ChildEvent(
        child_id=child.id,
        kind=kind,
        effective_on=effective_on,
        reason=reason,
        from_school_id=from_school_id,
        to_school_id=to_school_id,
        from_class_id=from_class_id,
        to_class_id=to_class_id,
        recorded_at=now,
        recorded_by_id=principal.account_id,
    )


def check_effective_on(value: date | None, *, today: date, child: Child, loc: str = "effective_on") -> date:
    day = value or today
    if day > today:
        raise invalid("effective_on_in_future", "生效日期不能晚于今天 (the date is in the future)", loc)
    if day < child.birth_date:
        raise invalid("effective_on_before_birth", "生效日期早于出生日期 (the date is before the birth date)", loc)
    return day


def require_status(child: Child, *allowed: ChildStatus) -> None:
    if child.status not in allowed:
        if ChildStatus.enrolled in allowed:
            raise Conflict("该儿童已不在册 (the child is not enrolled)", code="child_not_enrolled")
        raise Conflict("该儿童仍在册 (the child is still enrolled)", code="child_already_enrolled")
