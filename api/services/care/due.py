"""The care rhythm's rule in SQL, and the reads built on it: done, due and overdue per child, teacher, class
and school; the to-do items; the records that count.

The rule is :mod:`api.services.care.rules` (its Python form); here it is the same rule as one query, so that a
school's 2,000 children are judged in the database in one statement: the periods of each school's rules
(computed from its calendar by :mod:`api.services.care.calendar`) go in as arrays unnested into rows, each child is
joined with the periods of its own strictness, and a period is done when a matching record lies inside it.
``tests/test_care_rhythm_agree.py`` checks over generated cases that both forms judge alike.

Who is "a teacher's" child: the children whose active proxy parent (代理家长) they are, and the children of the
class they head (班主任). The teacher answering for a child's item is the proxy parent, or else the head teacher.
"""

import uuid
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import date, timedelta
from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects.postgresql import ARRAY, aggregate_order_by
from sqlalchemy.dialects.postgresql import UUID as PG_UUID
from sqlalchemy.ext.asyncio import AsyncSession
from sqlmodel import col

from api.models.care import CareKind, CarePairing, CareRecord, ContactChannel, PairingKind
from api.models.care_rhythm import (
    DEFAULT_RULES,
    CareRule,
    RhythmKind,
    RuleSpec,
    SchoolHoliday,
    SchoolTerm,
    call_records_where,
)
from api.models.children import Child, ChildStatus
from api.models.family_calls import CallStatus, FamilyCall
from api.models.incidents import Incident
from api.models.organisations import SchoolClass
from api.services.care.calendar import Calendar, Period, Span, periods
from api.services.care.rules import TODO_HORIZON_DAYS, Status

# What counts as done for each rule: records of this kind (a family call: a call or video with the parents).
RECORD_KIND: dict[RhythmKind, CareKind] = {
    RhythmKind.talk: CareKind.talk,
    RhythmKind.home_visit: CareKind.home_visit,
    RhythmKind.guardian_contact: CareKind.guardian_contact,
    RhythmKind.family_call: CareKind.parent_contact,
}
CALL_CHANNELS = (ContactChannel.phone.value, ContactChannel.video.value)
CALLS_ONLY = frozenset({RhythmKind.family_call})
# The family-call rule is kept by a completed booked call (亲情电话, api/models/family_calls.py) or by a call
# or video with the parents that staff recorded (a parent_contact record): both forms read both.

# The flags that make a child's rules strict (特困, 单亲, 需个别教育管理方案).
STRICT_FLAGS = ("special_hardship", "single_parent", "needs_individual_plan")

_record: Any = CareRecord.__table__  # type: ignore[attr-defined]
_pairing: Any = CarePairing.__table__  # type: ignore[attr-defined]
_incident: Any = Incident.__table__  # type: ignore[attr-defined]
_family_call: Any = FamilyCall.__table__  # type: ignore[attr-defined]
_class: Any = SchoolClass.__table__  # type: ignore[attr-defined]


def counts_for(kind: RhythmKind, record_kind: CareKind | str, channel: str | None) -> bool:
    """Whether a care record of ``record_kind`` (with ``channel`` in its content) counts for rule ``kind``."""
    if record_kind != RECORD_KIND[kind]:
        return False
    return kind not in CALLS_ONLY or channel in CALL_CHANNELS


# ---- rules and calendars of schools ------------------------------------------------------------------------


@dataclass(frozen=True)
class SchoolRhythm:
    """A school's effective rules and its calendar."""

    school_id: uuid.UUID
    rules: dict[RhythmKind, RuleSpec]
    calendar: Calendar
    term_names: tuple[str, ...]

    def periods(self, kind: RhythmKind, *, strict: bool, lo: date, hi: date) -> list[Period]:
        spec = self.rules[kind]
        cadence = spec.strict_cadence if strict else spec.cadence
        return periods(cadence, self.calendar, lo, hi, term_names=self.term_names)

    @property
    def active(self) -> list[RhythmKind]:
        return [kind for kind, spec in self.rules.items() if spec.is_active]


def effective_rules(rows: Iterable[CareRule]) -> dict[RhythmKind, RuleSpec]:
    rules = dict(DEFAULT_RULES)
    for row in rows:
        rules[row.kind] = RuleSpec(
            kind=row.kind,
            cadence=row.cadence,
            strict_cadence=row.strict_cadence,
            incident_days=row.incident_days,
            is_active=row.is_active,
        )
    return {kind: rules[kind] for kind in RhythmKind}


# Built once; the schools are one array parameter.
_SCHOOL_IDS = sa.bindparam("school_ids", type_=ARRAY(PG_UUID(as_uuid=True)))
_RULES = sa.select(CareRule).where(col(CareRule.school_id) == sa.any_(_SCHOOL_IDS))
_TERMS = (
    sa.select(SchoolTerm).where(col(SchoolTerm.school_id) == sa.any_(_SCHOOL_IDS)).order_by(col(SchoolTerm.starts_on))
)
_HOLIDAYS = sa.select(SchoolHoliday).where(col(SchoolHoliday.school_id) == sa.any_(_SCHOOL_IDS))


async def school_rhythms(session: AsyncSession, school_ids: Sequence[uuid.UUID]) -> dict[uuid.UUID, SchoolRhythm]:
    """The rules and calendars of these schools (three small queries, whatever their number)."""
    ids = list(dict.fromkeys(school_ids))
    rule_rows: dict[uuid.UUID, list[CareRule]] = {s: [] for s in ids}
    terms: dict[uuid.UUID, list[SchoolTerm]] = {s: [] for s in ids}
    holidays: dict[uuid.UUID, list[SchoolHoliday]] = {s: [] for s in ids}
    if ids:
        params = {"school_ids": ids}
        for rule in (await session.execute(_RULES, params)).scalars():
            rule_rows[rule.school_id].append(rule)
        for term in (await session.execute(_TERMS, params)).scalars():
            terms[term.school_id].append(term)
        for holiday in (await session.execute(_HOLIDAYS, params)).scalars():
            holidays[holiday.school_id].append(holiday)
    return {
        s: SchoolRhythm(
            school_id=s,
            rules=effective_rules(rule_rows[s]),
            calendar=Calendar(
                terms=tuple(Span(t.starts_on, t.ends_on) for t in terms[s]),
                holidays=tuple(Span(h.starts_on, h.ends_on) for h in holidays[s]),
            ),
            term_names=tuple(t.name for t in terms[s]),
        )
        for s in ids
    }


# ---- the rule in SQL ---------------------------------------------------------------------------------------

# The periods go in as one array per column, unnested into rows: ten parameters whatever their number, so the
# statement's text (and its compiled form, and PostgreSQL's prepared statement) is the same every time.
_PERIOD_COLUMNS: tuple[tuple[str, Any], ...] = (
    ("school_id", PG_UUID(as_uuid=True)),
    ("kind", sa.String),
    ("strict", sa.Boolean),
    ("incident_days", sa.Integer),
    ("record_kind", sa.String),
    ("calls_only", sa.Boolean),
    ("starts_on", sa.Date),
    ("ends_on", sa.Date),
    ("due_on", sa.Date),
    ("label", sa.String),
)


def periods_table(rows: list[tuple[Any, ...]]) -> Any:
    """The periods as a table ``p`` (``unnest`` of one array per column)."""
    columns = list(zip(*rows, strict=True)) if rows else [() for _ in _PERIOD_COLUMNS]
    arrays = [
        sa.bindparam(f"p_{name}", value=list(values), type_=ARRAY(kind))
        for (name, kind), values in zip(_PERIOD_COLUMNS, columns, strict=True)
    ]
    return (
        sa.func.unnest(*arrays)
        .table_valued(*[sa.column(name, kind) for name, kind in _PERIOD_COLUMNS], name="p")
        .render_derived()
    )


def period_rows(
    rhythms: Iterable[SchoolRhythm], lo: date, hi: date, *, kinds: Iterable[RhythmKind] | None = None
) -> list[tuple[Any, ...]]:
    """Every (school, rule, strictness) period due in ``[lo, hi]``: the rows of the SQL form's period table."""
    wanted = set(kinds) if kinds is not None else set(RhythmKind)
    rows: list[tuple[Any, ...]] = []
    for rhythm in rhythms:
        for kind in rhythm.active:
            if kind not in wanted:
                continue
            spec = rhythm.rules[kind]
            for strict in (False, True):
                for p in rhythm.periods(kind, strict=strict, lo=lo, hi=hi):
                    rows.append(
                        (
                            rhythm.school_id,
                            kind.value,
                            strict,
                            spec.incident_days,
                            RECORD_KIND[kind].value,
                            kind in CALLS_ONLY,
                            p.starts_on,
                            p.ends_on,
                            p.due_on,
                            p.label,
                        )
                    )
    return rows


def shanghai_day(column: Any) -> Any:
    """The Asia/Shanghai calendar date of a timestamptz column (the twin of ``rules.shanghai_date``)."""
    return sa.cast(sa.func.timezone("Asia/Shanghai", column), sa.Date)


def flagged_expr() -> Any:
    return sa.or_(*[getattr(Child, name) for name in STRICT_FLAGS])


def responsible_teacher_expr() -> Any:
    """The active proxy parent, or else the head teacher of the child's class."""
    proxy = (
        sa.select(_pairing.c.staff_id)
        .where(
            _pairing.c.child_id == Child.id,
            _pairing.c.kind == PairingKind.proxy_parent.value,
            _pairing.c.ended_on.is_(None),
        )
        .limit(1)
        .scalar_subquery()
    )
    head = sa.select(_class.c.head_teacher_id).where(_class.c.id == Child.class_id).scalar_subquery()
    return sa.func.coalesce(proxy, head)


def has_proxy_parent(child_id: Any) -> Any:
    """Whether the child has an active proxy parent (代理家长)."""
    return sa.exists().where(
        _pairing.c.child_id == child_id,
        _pairing.c.kind == PairingKind.proxy_parent.value,
        _pairing.c.ended_on.is_(None),
    )


def teacher_children(teacher_id: uuid.UUID | sa.BindParameter[uuid.UUID]) -> Any:
    """A condition on ``child``: the teacher is its active proxy parent or heads its class (``teacher_id``: the
    id, or a parameter given at execution)."""
    proxied = sa.select(_pairing.c.child_id).where(
        _pairing.c.staff_id == teacher_id,
        _pairing.c.kind == PairingKind.proxy_parent.value,
        _pairing.c.ended_on.is_(None),
    )
    headed = sa.select(_class.c.id).where(_class.c.head_teacher_id == teacher_id)
    return sa.or_(col(Child.id).in_(proxied), col(Child.class_id).in_(headed))


def cared_children(*where: Any, judged_on: date, with_teacher: bool = True) -> Any:
    """The enrolled left-behind children with what the rule reads (a CTE); ``with_teacher``: also the teacher
    who answers for each (the statistics do without those two look-ups per child)."""
    # Each child's latest incident up to the day judged: one aggregate joined by hash (incidents are few), not a
    # look-up per child.
    incidents = (
        sa.select(_incident.c.child_id, sa.func.max(shanghai_day(_incident.c.occurred_at)).label("last_on"))
        .where(shanghai_day(_incident.c.occurred_at) <= judged_on)
        .group_by(_incident.c.child_id)
        .subquery("inc")
    )
    return (
        sa.select(
            col(Child.id).label("child_id"),
            col(Child.school_id).label("school_id"),
            col(Child.class_id).label("class_id"),
            flagged_expr().label("flagged"),
            shanghai_day(col(Child.created_at)).label("created_on"),
            incidents.c.last_on.label("last_incident_on"),
            (responsible_teacher_expr() if with_teacher else sa.null().cast(PG_UUID(as_uuid=True))).label("teacher_id"),
        )
        .select_from(Child)
        .outerjoin(incidents, incidents.c.child_id == Child.id)
        .where(col(Child.status) == ChildStatus.enrolled, col(Child.is_left_behind), *where)
        # Computed once (each child's incident and teacher look-ups), not once per period it is joined with.
        .cte("kid")
        .prefix_with("MATERIALIZED", dialect="postgresql")
    )


def judged_periods(kid: Any, rows: list[tuple[Any, ...]], *, today: date, judged_on: date) -> Any:
    """Each child joined with the periods of its strictness, each period done, due or overdue (a subquery).

    Columns: the child's (``child_id``, ``school_id``, ``class_id``, ``teacher_id``), the period's (``kind``,
    ``starts_on``, ``ends_on``, ``due_on``, ``label``), ``strict``, ``done``, ``status`` and ``days``."""
    p = periods_table(rows)
    r = _record.alias("r")
    in_period = (
        r.c.school_id == kid.c.school_id,
        r.c.child_id == kid.c.child_id,
        r.c.occurred_on.between(p.c.starts_on, p.c.ends_on),
    )
    # Two probes, each answered from an index alone: a call's by the index of call records (its condition
    # written out as constants, so the planner matches the partial index), any other by the general one. A
    # completed booked call keeps the family-call rule too (its Shanghai date inside the period).
    fc = _family_call.alias("fc")
    booked_call = sa.exists().where(
        fc.c.child_id == kid.c.child_id,
        fc.c.status == CallStatus.completed.value,
        fc.c.starts_at >= sa.func.timezone("Asia/Shanghai", sa.cast(p.c.starts_on, sa.DateTime)),
        fc.c.starts_at < sa.func.timezone("Asia/Shanghai", sa.cast(p.c.ends_on + 1, sa.DateTime)),
    )
    done = sa.case(
        (
            p.c.calls_only,
            sa.or_(sa.exists().where(*in_period, sa.text(call_records_where(r.name))), booked_call),
        ),
        else_=sa.exists().where(*in_period, r.c.kind == p.c.record_kind),
    )
    strict = sa.or_(
        kid.c.flagged,
        sa.and_(
            kid.c.last_incident_on.is_not(None),
            kid.c.last_incident_on >= sa.literal(judged_on, sa.Date) - p.c.incident_days,
        ),
    )
    today_ = sa.literal(today, sa.Date)
    judged = (
        sa.select(
            kid.c.child_id,
            kid.c.school_id,
            kid.c.class_id,
            kid.c.teacher_id,
            p.c.kind,
            p.c.strict,
            p.c.starts_on,
            p.c.ends_on,
            p.c.due_on,
            p.c.label,
            done.label("done"),
        )
        .select_from(
            kid.join(p, sa.and_(p.c.school_id == kid.c.school_id, p.c.strict == strict, p.c.due_on >= kid.c.created_on))
        )
        # Materialized: ``done`` is probed once per child and period, however often the outer queries read it.
        .cte("judged_raw")
        .prefix_with("MATERIALIZED", dialect="postgresql")
    )
    return sa.select(
        *judged.c,
        sa.case(
            (judged.c.done, Status.done.value), (judged.c.due_on < today_, Status.overdue.value), else_=Status.due.value
        ).label("status"),
        sa.case(
            (judged.c.done, 0),
            (judged.c.due_on < today_, today_ - judged.c.due_on),
            else_=judged.c.due_on - today_,
        ).label("days"),
    ).subquery("judged")


# ---- the to-do items -----------------------------------------------------------------------------------------


@dataclass(frozen=True)
class TodoRow:
    child_id: uuid.UUID
    school_id: uuid.UUID
    class_id: uuid.UUID | None
    teacher_id: uuid.UUID | None
    kind: RhythmKind
    status: Status
    days: int
    due_on: date
    label: str
    missed: int


def todo_query(judged: Any, *, today: date, horizon_days: int = TODO_HORIZON_DAYS, overdue_only: bool = False) -> Any:
    """One row per child and rule that needs doing: the missed periods since the latest done one (overdue since
    the earliest), else the next open period due within the horizon — :func:`rules.todo_item` in SQL."""
    keys = (judged.c.child_id, judged.c.kind)
    w = sa.select(
        *judged.c,
        sa.func.max(judged.c.due_on).filter(judged.c.done).over(partition_by=keys).label("last_done_due"),
    ).subquery("w")
    today_ = sa.literal(today, sa.Date)
    is_open = sa.and_(sa.not_(w.c.done), sa.or_(w.c.last_done_due.is_(None), w.c.due_on > w.c.last_done_due))
    overdue = sa.and_(is_open, w.c.due_on < today_)
    upcoming = sa.and_(is_open, w.c.due_on >= today_)
    overdue_since = sa.func.min(w.c.due_on).filter(overdue)
    next_due = sa.func.min(w.c.due_on).filter(upcoming)
    first_label = sa.func.array_agg(aggregate_order_by(w.c.label, w.c.due_on))
    stmt = sa.select(
        w.c.child_id,
        w.c.school_id,
        w.c.class_id,
        w.c.teacher_id,
        w.c.kind,
        overdue_since.label("overdue_since"),
        sa.func.count().filter(overdue).label("missed"),
        next_due.label("next_due"),
        first_label.filter(overdue).label("overdue_labels"),
        first_label.filter(upcoming).label("due_labels"),
    ).group_by(w.c.child_id, w.c.school_id, w.c.class_id, w.c.teacher_id, w.c.kind)
    if overdue_only:
        return stmt.having(overdue_since.is_not(None))
    return stmt.having(
        sa.or_(overdue_since.is_not(None), next_due <= sa.literal(today + timedelta(days=horizon_days), sa.Date))
    )


def todo_rows(rows: Iterable[Any], *, today: date) -> list[TodoRow]:
    """The to-do rows, most urgent first: overdue longest, then due soonest."""
    out: list[TodoRow] = []
    for row in rows:
        if row.overdue_since is not None:
            status, due_on, label = Status.overdue, row.overdue_since, row.overdue_labels[0]
            days = (today - due_on).days
        else:
            status, due_on, label = Status.due, row.next_due, row.due_labels[0]
            days = (due_on - today).days
        out.append(
            TodoRow(
                child_id=row.child_id,
                school_id=row.school_id,
                class_id=row.class_id,
                teacher_id=row.teacher_id,
                kind=RhythmKind(row.kind),
                status=status,
                days=days,
                due_on=due_on,
                label=label,
                missed=row.missed,
            )
        )
    out.sort(key=lambda t: (t.status != Status.overdue, -t.days if t.status == Status.overdue else t.days, t.kind))
    return out


def _last_done_statements() -> tuple[Any, Any]:
    # Built once; the children are one array parameter.
    r = _record
    ids = sa.bindparam("child_ids", type_=ARRAY(PG_UUID(as_uuid=True)))
    today = sa.bindparam("today", type_=sa.Date)
    call = r.c.content["channel"].astext.in_(CALL_CHANNELS)
    columns = [
        sa.func.max(r.c.occurred_on)
        .filter(r.c.kind == RECORD_KIND[kind].value, *([call] if kind in CALLS_ONLY else []))
        .label(kind.value)
        for kind in RhythmKind
    ]
    records = (
        sa.select(r.c.child_id, *columns)
        .where(r.c.child_id == sa.any_(ids), r.c.occurred_on <= today)
        .group_by(r.c.child_id)
    )
    calls = (
        sa.select(_family_call.c.child_id, sa.func.max(shanghai_day(_family_call.c.starts_at)))
        .where(
            _family_call.c.child_id == sa.any_(ids),
            _family_call.c.status == CallStatus.completed.value,
            shanghai_day(_family_call.c.starts_at) <= today,
        )
        .group_by(_family_call.c.child_id)
    )
    return records, calls


_LAST_DONE, _LAST_CALL = _last_done_statements()


async def last_done(
    session: AsyncSession, child_ids: Sequence[uuid.UUID], *, today: date
) -> dict[tuple[uuid.UUID, RhythmKind], date]:
    """When each rule was last done for each of these children (records and completed booked calls dated up to
    ``today``)."""
    if not child_ids:
        return {}
    params = {"child_ids": list(child_ids), "today": today}
    out: dict[tuple[uuid.UUID, RhythmKind], date] = {}
    for row in (await session.execute(_LAST_DONE, params)).mappings():
        for kind in RhythmKind:
            if row[kind.value] is not None:
                out[(row["child_id"], kind)] = row[kind.value]
    for child_id, on in (await session.execute(_LAST_CALL, params)).all():
        key = (child_id, RhythmKind.family_call)
        out[key] = max(on, out.get(key, on))
    return out
