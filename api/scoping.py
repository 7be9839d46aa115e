"""Row-level scope, enforced in one place for every ORM query.

Each request's session carries the caller's :class:`Principal` in ``session.info``. A ``do_orm_execute``
listener adds a ``with_loader_criteria`` for every scoped table the statement touches (SELECT, UPDATE and
DELETE, including ``session.get``), so a service cannot forget to filter: an object outside the caller's
scope is simply not found, and the API answers 404. Rules are registered beside the tables with
:func:`scope_rule`. A session with no principal is anonymous and sees no scoped row at all; background
work and login look-ups opt out explicitly with :data:`SYSTEM`.
"""

import functools
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import sqlalchemy as sa
from sqlalchemy import event
from sqlalchemy.orm import ORMExecuteState, Session, with_loader_criteria
from sqlalchemy.sql.elements import ColumnElement
from sqlmodel import col

from api.models.accounts import Account, Invite, Role
from api.models.audit import AuditEntry
from api.models.children import Child, ChildEvent
from api.models.escalation import (
    Acknowledgement,
    DutyContact,
    EscalationParty,
    EscalationPolicy,
    EscalationStep,
    EscalationTarget,
    ReplyCode,
)
from api.models.family_calls import (
    CallLine,
    CallLineOverride,
    CallLineWindow,
    FamilyCall,
    FamilyCallEvent,
    FamilyCallSettings,
    FestivalDay,
)
from api.models.guardians import ChildGuardian, Guardian
from api.models.incidents import Incident, IncidentEvent
from api.models.notifications import OutboundMessage
from api.models.organisations import County, School, SchoolClass, TeachingAssignment, Township
from api.models.roster import ImportBatch

PRINCIPAL_KEY = "liushou_principal"


@dataclass(frozen=True)
class Principal:
    account_id: uuid.UUID | None
    role: Role | None
    county_id: uuid.UUID | None = None
    township_id: uuid.UUID | None = None
    school_id: uuid.UUID | None = None
    session_id: uuid.UUID | None = None
    display_name: str = ""
    # Teachers: the classes they head or teach (full detail of those children).
    class_ids: frozenset[uuid.UUID] = field(default_factory=frozenset)
    # Families: their guardian records (filled by the archive).
    guardian_ids: frozenset[uuid.UUID] = field(default_factory=frozenset)
    is_system: bool = False

    @property
    def is_staff(self) -> bool:
        return self.role is not None and self.role != Role.family


ANONYMOUS = Principal(account_id=None, role=None)
SYSTEM = Principal(account_id=None, role=None, is_system=True)

ScopeRule = Callable[[Principal], ColumnElement[bool] | None]
_rules: dict[type, ScopeRule] = {}


def scope_rule(model: type) -> Callable[[ScopeRule], ScopeRule]:
    """Register how rows of ``model`` are limited for a principal (``None`` means no limit)."""

    def register(rule: ScopeRule) -> ScopeRule:
        _rules[model] = rule
        return rule

    return register


def set_principal(session: Any, principal: Principal) -> None:
    """Bind a principal to a (sync or async) session."""
    session.info[PRINCIPAL_KEY] = principal


def get_principal(session: Any) -> Principal:
    principal: Principal = session.info.get(PRINCIPAL_KEY, ANONYMOUS)
    return principal


def school_ids_clause(column: Any, p: Principal) -> ColumnElement[bool] | None:
    """Limit a ``school_id`` column to the schools a staff principal may see; families see none."""
    match p.role:
        case Role.platform_admin:
            return None
        case Role.county_bureau:
            return column.in_(sa.select(col(School.id)).where(col(School.county_id) == p.county_id))
        case Role.township_official:
            return column.in_(sa.select(col(School.id)).where(col(School.township_id) == p.township_id))
        case Role.school_admin | Role.teacher:
            return column == p.school_id
        case _:
            return sa.false()


@scope_rule(County)
def _county(p: Principal) -> ColumnElement[bool] | None:
    if p.role == Role.platform_admin:
        return None
    if p.role in (Role.county_bureau, Role.township_official, Role.school_admin, Role.teacher):
        return County.id == p.county_id  # type: ignore[return-value]
    return sa.false()


@scope_rule(Township)
def _township(p: Principal) -> ColumnElement[bool] | None:
    match p.role:
        case Role.platform_admin:
            return None
        case Role.county_bureau:
            return Township.county_id == p.county_id  # type: ignore[return-value]
        case Role.township_official | Role.school_admin | Role.teacher:
            return Township.id == p.township_id  # type: ignore[return-value]
        case _:
            return sa.false()


@scope_rule(School)
def _school(p: Principal) -> ColumnElement[bool] | None:
    return school_ids_clause(School.id, p)


@scope_rule(SchoolClass)
def _class(p: Principal) -> ColumnElement[bool] | None:
    return school_ids_clause(SchoolClass.school_id, p)


@scope_rule(TeachingAssignment)
def _teaching(p: Principal) -> ColumnElement[bool] | None:
    clause = school_ids_clause(SchoolClass.school_id, p)
    if clause is None:
        return None
    return col(TeachingAssignment.class_id).in_(sa.select(col(SchoolClass.id)).where(clause))


@scope_rule(Account)
def _account(p: Principal) -> ColumnElement[bool] | None:
    match p.role:
        case Role.platform_admin:
            return None
        case Role.county_bureau:
            return Account.county_id == p.county_id  # type: ignore[return-value]
        case Role.township_official:
            return Account.township_id == p.township_id  # type: ignore[return-value]
        case Role.school_admin | Role.teacher:
            return Account.school_id == p.school_id  # type: ignore[return-value]
        case Role.family:
            return Account.id == p.account_id  # type: ignore[return-value]
        case _:
            return sa.false()


def visible_child_ids(p: Principal) -> Any:
    """A subquery of the ids of children the principal may see at all (detail is limited further by role)."""
    if p.role == Role.family:
        return sa.select(col(ChildGuardian.child_id)).where(
            col(ChildGuardian.guardian_id).in_(p.guardian_ids), col(ChildGuardian.is_active)
        )
    clause = school_ids_clause(Child.school_id, p)
    stmt = sa.select(col(Child.id))
    return stmt if clause is None else stmt.where(clause)


@scope_rule(Child)
def _child(p: Principal) -> ColumnElement[bool] | None:
    if p.role == Role.family:
        return col(Child.id).in_(visible_child_ids(p))
    return school_ids_clause(Child.school_id, p)


@scope_rule(ChildGuardian)
def _child_guardian(p: Principal) -> ColumnElement[bool] | None:
    if p.role == Role.platform_admin:
        return None
    return col(ChildGuardian.child_id).in_(visible_child_ids(p))


@scope_rule(ChildEvent)
def _child_event(p: Principal) -> ColumnElement[bool] | None:
    if p.role == Role.platform_admin:
        return None
    if p.role == Role.family:
        return sa.false()
    return col(ChildEvent.child_id).in_(visible_child_ids(p))


@scope_rule(Guardian)
def _guardian(p: Principal) -> ColumnElement[bool] | None:
    """Staff see the guardians of the children they see; a family sees its own guardian records."""
    match p.role:
        case Role.platform_admin:
            return None
        case Role.family:
            return col(Guardian.id).in_(p.guardian_ids)
        case None:
            return sa.false()
        case _:
            linked = sa.select(col(ChildGuardian.guardian_id)).where(
                col(ChildGuardian.child_id).in_(visible_child_ids(p))
            )
            return col(Guardian.id).in_(linked)


@scope_rule(Invite)
def _invite(p: Principal) -> ColumnElement[bool] | None:
    if p.role == Role.teacher:
        return sa.false()
    return school_ids_clause(Invite.school_id, p)


@scope_rule(ImportBatch)
def _import_batch(p: Principal) -> ColumnElement[bool] | None:
    """花名册 import records: for the school's admins and the bureau, not for teachers."""
    if p.role == Role.teacher:
        return sa.false()
    return school_ids_clause(ImportBatch.school_id, p)


@scope_rule(AuditEntry)
def _audit(p: Principal) -> ColumnElement[bool] | None:
    """The log is read by those who answer for it: school admins, the bureau, platform admins."""
    match p.role:
        case Role.platform_admin:
            return None
        case Role.county_bureau:
            in_schools = school_ids_clause(AuditEntry.school_id, p)
            assert in_schools is not None
            return sa.or_(col(AuditEntry.county_id) == p.county_id, in_schools)
        case Role.school_admin:
            return col(AuditEntry.school_id) == p.school_id
        case _:
            return sa.false()


# ---- 应急机制: incidents are school data; the county bureau and the township see those of their area ----


def visible_incident_ids(p: Principal) -> Any:
    """A subquery of the incidents the principal may see (families: those of their own children)."""
    if p.role == Role.family:
        return sa.select(col(Incident.id)).where(col(Incident.child_id).in_(visible_child_ids(p)))
    clause = school_ids_clause(Incident.school_id, p)
    stmt = sa.select(col(Incident.id))
    return stmt if clause is None else stmt.where(clause)


@scope_rule(Incident)
def _incident(p: Principal) -> ColumnElement[bool] | None:
    if p.role == Role.family:
        return col(Incident.child_id).in_(visible_child_ids(p))
    return school_ids_clause(Incident.school_id, p)


def _incident_staff_rule(column: Any) -> ScopeRule:
    """The chain's rows (steps, contacts, messages, the timeline) follow their incident; families see none."""

    def rule(p: Principal) -> ColumnElement[bool] | None:
        if p.role == Role.platform_admin:
            return None
        if p.role in (None, Role.family):
            return sa.false()
        return column.in_(visible_incident_ids(p))

    return rule


for _model in (
    EscalationStep,
    EscalationParty,
    EscalationTarget,
    Acknowledgement,
    IncidentEvent,
    ReplyCode,
):
    scope_rule(_model)(_incident_staff_rule(col(_model.incident_id)))


@scope_rule(OutboundMessage)
def _outbound_message(p: Principal) -> ColumnElement[bool] | None:
    """An incident's messages follow their incident; any other message (a reminder, a digest) is seen by the
    platform admin and the admin of the school it is about only."""
    incident = _incident_staff_rule(col(OutboundMessage.incident_id))(p)
    if incident is None:
        return None
    if p.role != Role.school_admin or p.school_id is None:
        return sa.and_(col(OutboundMessage.incident_id).is_not(None), incident)
    other = sa.and_(col(OutboundMessage.incident_id).is_(None), col(OutboundMessage.school_id) == p.school_id)
    return sa.or_(sa.and_(col(OutboundMessage.incident_id).is_not(None), incident), other)


@scope_rule(EscalationPolicy)
def _escalation_policy(p: Principal) -> ColumnElement[bool] | None:
    if p.role == Role.platform_admin:
        return None
    if p.role in (None, Role.family):
        return sa.false()
    return col(EscalationPolicy.county_id) == p.county_id


@scope_rule(DutyContact)
def _duty_contact(p: Principal) -> ColumnElement[bool] | None:
    """The bureau sees its county's duty contacts, a township its own, a school those it would call."""
    match p.role:
        case Role.platform_admin:
            return None
        case Role.county_bureau:
            return col(DutyContact.county_id) == p.county_id
        case Role.township_official:
            return col(DutyContact.township_id) == p.township_id
        case Role.school_admin | Role.teacher:
            return sa.and_(
                col(DutyContact.county_id) == p.county_id,
                sa.or_(col(DutyContact.township_id).is_(None), col(DutyContact.township_id) == p.township_id),
            )
        case _:
            return sa.false()


# ---- 亲情电话: lines are school data (families reach them only through their child); calls follow the child ----


@scope_rule(CallLine)
def _call_line(p: Principal) -> ColumnElement[bool] | None:
    return school_ids_clause(CallLine.school_id, p)


def _line_rule(column: Any) -> ScopeRule:
    def rule(p: Principal) -> ColumnElement[bool] | None:
        clause = school_ids_clause(CallLine.school_id, p)
        if clause is None:
            return None
        return column.in_(sa.select(col(CallLine.id)).where(clause))

    return rule


scope_rule(CallLineWindow)(_line_rule(col(CallLineWindow.line_id)))
scope_rule(CallLineOverride)(_line_rule(col(CallLineOverride.line_id)))


@scope_rule(FamilyCallSettings)
def _call_settings(p: Principal) -> ColumnElement[bool] | None:
    return school_ids_clause(FamilyCallSettings.school_id, p)


@scope_rule(FestivalDay)
def _festival_day(p: Principal) -> ColumnElement[bool] | None:
    if p.role == Role.platform_admin:
        return None
    if p.role in (None, Role.family):
        return sa.false()
    return col(FestivalDay.county_id) == p.county_id


@scope_rule(FamilyCall)
def _family_call(p: Principal) -> ColumnElement[bool] | None:
    if p.role == Role.family:
        return col(FamilyCall.child_id).in_(visible_child_ids(p))
    return school_ids_clause(FamilyCall.school_id, p)


@scope_rule(FamilyCallEvent)
def _family_call_event(p: Principal) -> ColumnElement[bool] | None:
    if p.role == Role.platform_admin:
        return None
    clause = _family_call(p)
    assert clause is not None
    return col(FamilyCallEvent.call_id).in_(sa.select(col(FamilyCall.id)).where(clause))


@event.listens_for(Session, "do_orm_execute")
def _apply_scope(state: ORMExecuteState) -> None:
    if not (state.is_select or state.is_update or state.is_delete):
        return
    if state.is_column_load or state.is_relationship_load:
        # Loads of attributes of an object that was already found through a scoped query.
        return
    principal = get_principal(state.session)
    if principal.is_system or state.execution_options.get("skip_scope", False):
        return
    if options := _scope_options(principal):
        state.statement = state.statement.options(*options)


@functools.lru_cache(maxsize=1024)
def _scope_options(principal: Principal) -> tuple[Any, ...]:
    """The criteria of every rule for one principal. A rule depends on the principal alone and SQL
    expressions are immutable, so they are built once per principal (a login), not for every query."""
    return tuple(
        with_loader_criteria(model, clause, include_aliases=True)
        for model, rule in _rules.items()
        if (clause := rule(principal)) is not None
    )
