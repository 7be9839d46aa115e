"""The statistics' pre-aggregates: each school's figures for a period, as :mod:`api.services.stats.queries`
computed them, kept so that a county's table is a read of 300 small rows rather than two years of records.

* ``stats_figures`` — one row per school, period and the day it was judged on (today's, and before midnight
  tomorrow's too): the school's quantities per class (``counts``, for class tables) and summed (``totals``, for
  every other level), its chain steps (``steps``), its enrolment, when they were computed and under which
  snapshot (``snapshot``: the changes they include).
* ``stats_dirty`` — the schools whose records changed: triggers on every table the figures read mark the school
  (statement-level, one insert per statement and school), with the writing transaction (``xact``); a row
  includes a mark iff that transaction is visible in the row's snapshot. The refresher
  (:func:`api.services.stats.preaggregate.refresh`) deletes exactly the marks every kept row of the school
  includes.

A read uses a school's row when it was judged today and the school has no mark the row does not include older
than the allowed staleness (``stats_max_stale_seconds``); otherwise it computes that school directly. Its
``as_of`` is the earliest such mark among the schools it used (every record written before it is counted),
else now.
"""

import uuid
from datetime import date, datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects.postgresql import JSONB
from sqlmodel import Field, SQLModel

from api.models.base import timestamp_field
from api.models.row_security import COUNTY, ROLE, SCHOOLS, TOWNSHIP, Policy, of_school, row_security, unscoped


class StatsFigures(SQLModel, table=True):
    __tablename__ = "stats_figures"

    school_id: uuid.UUID = Field(foreign_key="school.id", primary_key=True, ondelete="CASCADE")
    period_kind: str = Field(max_length=16, primary_key=True)
    period_key: str = Field(max_length=16, primary_key=True)
    judged_on: date = Field(primary_key=True, description="the day (Asia/Shanghai) the figures were judged on")
    counts: Any = Field(sa_type=JSONB, description="[[class_id | null, {quantity: value}], …]")
    totals: Any = Field(sa_type=JSONB, description="{quantity: value}: the classes summed (for every level above)")
    steps: Any = Field(sa_type=JSONB, description="[[class_id | null, step_no, minutes | null, met | null], …]")
    enrolment: int | None = Field(default=None, description="the school's pupils for the period")
    computed_at: datetime = timestamp_field()
    snapshot: str = Field(
        sa_type=sa.Text,
        description="txid_current_snapshot() of the computing transaction: the changes the figures include",
    )


class StatsDirty(SQLModel, table=True):
    """An append-only mark per writing statement: writers never update or lock a shared row (an incident's
    report never waits on a teacher's care record for it); the refresher deletes exactly the marks every kept row
    of the school includes."""

    __tablename__ = "stats_dirty"

    id: int | None = Field(default=None, sa_type=sa.BigInteger, primary_key=True)
    school_id: uuid.UUID = Field(index=True)
    at: datetime = Field(sa_type=sa.DateTime(timezone=True), sa_column_kwargs={"server_default": sa.func.now()})
    xact: int | None = Field(
        default=None,
        sa_type=sa.BigInteger,
        nullable=False,
        sa_column_kwargs={"server_default": sa.text("txid_current()")},
        description="the writing transaction: a kept row includes the mark iff it is visible in the row's snapshot",
    )


# A school's figures are aggregates of its own children: its staff, township and bureau read them (the rows a
# scope reaches are its schools'); only the refresher (as the system) writes them.
row_security("stats_figures", Policy("staff", using=of_school(), command="SELECT"))
unscoped(
    "stats_dirty",
    "which schools changed since their statistics were computed (school ids and times, no personal data); "
    "written only by SECURITY DEFINER triggers and read by the refresher",
)


class StatsAnswer(SQLModel, table=True):
    """A built answer of the statistics — a table's or a trend's JSON, an export's file — kept by what
    determines it (:mod:`api.services.stats.answers`), so that any API process serves it while its ``as_of`` is
    within the allowed staleness, and the refresher's warm-up rebuilds it when its figures move. One row per day it
    is judged on: before midnight the warm-up keeps tomorrow's beside today's."""

    __tablename__ = "stats_answer"

    key: str = Field(max_length=64, primary_key=True, description="sha256 of what determines the answer")
    kind: str = Field(max_length=16, description="table / trend / xlsx / csv / docx")
    scope_role: str = Field(max_length=32, description="the role of the scope it was built for")
    scope_id: uuid.UUID = Field(description="that scope's root: the county, township or school (platform: the area)")
    request: Any = Field(sa_type=JSONB, description="the area and parameters, to build it again")
    body: bytes = Field(sa_type=sa.LargeBinary, description="the JSON without its as_of, or the file")
    version: str | None = Field(default=None, sa_type=sa.Text, description="the kept rows' versions it was built from")
    judged_on: date = Field(primary_key=True, description="the day (Asia/Shanghai) it was built for")
    as_of: datetime = timestamp_field()
    built_at: datetime = timestamp_field()
    asked_at: datetime = timestamp_field(index=True)


# A kept answer holds the aggregates of one scope (the bureau's county, a township official's township, a school
# admin's school), built with that scope's suppression: only callers of that very scope read or write it.
_ANSWER_SCOPE = (
    f"scope_role = {ROLE} AND ("
    f"(scope_role = 'county_bureau' AND scope_id = {COUNTY})"
    f" OR (scope_role = 'township_official' AND scope_id = {TOWNSHIP})"
    f" OR (scope_role = 'school_admin' AND scope_id = ANY ({SCHOOLS})))"
)
row_security("stats_answer", Policy("scope", using=_ANSWER_SCOPE))
