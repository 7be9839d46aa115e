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
from api.models.row_security import Policy, of_school, row_security, unscoped


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
