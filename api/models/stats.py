"""The county bureau's statistics (统计): what an indicator is, the tables the API answers with, and what the
exports (XLSX, CSV, bulletins) are written from. Read models only — every figure is computed from the living
records by :mod:`api.services.stats`; nothing here is stored.

An indicator is defined once (DHIS2's way: numerator / denominator fixed as metadata) in the registry of
:mod:`api.services.stats.indicators`; a table is one level (county → township → school → class) for one
period, with the previous period beside it; a cell below the small-count threshold is suppressed (its value
null, ``suppressed`` true) together with the complementary cells that would let it be recovered.
"""

import uuid
from datetime import date, datetime
from enum import StrEnum

from pydantic import BaseModel


class Level(StrEnum):
    """The unit of a table's rows."""

    county = "county"  # 县
    township = "township"  # 乡镇
    school = "school"  # 学校
    klass = "class"  # 班级 (within one school)


class PeriodKind(StrEnum):
    month = "month"  # 2026-11
    quarter = "quarter"  # 2026-Q4
    term = "term"  # 学期: 2026-2027-1 (autumn, from 1 Sep) / 2026-2027-2 (spring, from 1 Feb)
    school_year = "school_year"  # 学年: 2026-2027 (1 Sep – 31 Aug)
    year = "year"  # 自然年: 2026


class IndicatorKind(StrEnum):
    count = "count"  # type: ignore[assignment]  # a number of children, records, incidents… (人, 次, 起)
    rate = "rate"  # numerator / denominator, a share in [0, 1], shown as a percentage
    minutes = "minutes"  # a duration in minutes (median / worst time to "told")


class Measure(StrEnum):
    """How the period enters: a stock is counted as of the period's last day (or today, if earlier); a flow
    counts what happened within the period."""

    stock = "stock"
    flow = "flow"


class Period(BaseModel):
    kind: PeriodKind
    key: str  # "2026-11", "2026-Q4", "2026-2027-1", "2026-2027", "2026"
    label: str  # "2026年11月", "2026年第四季度", "2026—2027学年第一学期", "2026—2027学年", "2026年"
    starts_on: date
    ends_on: date


class IndicatorDef(BaseModel):
    """One indicator, as the registry defines it (and ``docs/statistics.md`` lists it)."""

    key: str  # stable machine name, e.g. "left_behind", "archive_complete_rate", "lb_sex_female"
    name: str  # Chinese name as the bureau's sheets head the column, e.g. "建档率"
    group: str  # the section it belongs to, e.g. "基本情况", "结构", "帮扶关爱", "突发事件"
    kind: IndicatorKind
    measure: Measure
    unit: str  # "人", "%", "次", "起", "分钟"
    numerator: str  # what exactly is counted (Chinese + English), e.g. "在册留守儿童中档案完整的人数"
    denominator: str | None = None  # for a rate: what it is a share of
    digits: int = 0  # rounding of the value as shown (a rate: digits of the percentage, e.g. 1 → 97.3%)
    suppressible: bool = True  # a count of children that could identify one (durations of few events too)


class Cell(BaseModel):
    """One indicator for one unit and period. ``value`` is the shown figure (a count, a share in [0, 1], or
    minutes); null when suppressed or when a rate has no denominator."""

    value: float | int | None
    numerator: int | None = None
    denominator: int | None = None
    suppressed: bool = False


class StatsRow(BaseModel):
    unit_id: uuid.UUID | None  # null for the totals row
    unit_name: str  # "石桥镇中心小学", "石桥镇", "合计"
    level: Level
    parent_id: uuid.UUID | None = None  # the township of a school, the school of a class
    cells: dict[str, Cell]  # indicator key → this period
    previous: dict[str, Cell]  # indicator key → the previous period of the same kind


class StatsTable(BaseModel):
    """A level × period table within the caller's area (a county, a township or a school)."""

    area_level: Level
    area_id: uuid.UUID
    area_name: str
    level: Level
    period: Period
    previous_period: Period
    indicators: list[IndicatorDef]
    rows: list[StatsRow]
    total: StatsRow
    threshold: int  # cells counting fewer children than this (but more than none) are suppressed
    as_of: datetime  # when the figures were computed (or the pre-aggregates last refreshed)


class TrendPoint(BaseModel):
    period: Period
    cells: dict[str, Cell]


class StatsTrend(BaseModel):
    """Monthly trend of some indicators for the caller's area (the charts of exports and bulletins)."""

    area_level: Level
    area_id: uuid.UUID
    area_name: str
    indicators: list[IndicatorDef]
    points: list[TrendPoint]
    threshold: int
    as_of: datetime
