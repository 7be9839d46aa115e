"""How one statistics figure is shown in every export (pure): headers, columns, rounding, number formats and
the suppression mark. The XLSX, the CSV and the bulletin all go through these functions, so a figure reads
the same in each and a suppressed cell is never written as a number anywhere."""

import uuid
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import date

from api.models.stats import Cell, IndicatorDef, IndicatorKind, Level, Measure, StatsRow, StatsTable
from api.services.stats import indicators as registry

# The sheet of each level, and the header of its name column.
LEVEL_NAMES = {Level.county: "县", Level.township: "乡镇", Level.school: "学校", Level.klass: "班级"}
# The column naming the unit a row belongs to (a school's township, a class's school).
PARENT_HEADERS = {Level.township: "所属县", Level.school: "所属乡镇", Level.klass: "所属学校"}
# A figure that does not apply (a rate with no denominator): statistical tables print a dash, never 0.
NOT_APPLICABLE = "—"
TOTAL_NAME = "合计"


def mark(threshold: int) -> str:
    """What a suppressed cell shows: fewer than the threshold, never the number."""
    return f"<{threshold}"


def suppression_note(threshold: int) -> str:
    return f"“{mark(threshold)}”表示人数少于{threshold}人（或可据此推算出这样的人数），按规定不显示具体数字。"


# What each breakdown of the registry divides by: its categories are named alone (男, 女, 未分班), which
# only reads right — and only stays unique — under this label.
BREAKDOWN_LABELS = {
    "by_parents": "父母外出情况",
    "by_sex": "性别",
    "by_age": "年龄段",
    "by_stage": "学段",
    "by_grade": "年级",
    "by_boarding": "寄宿情况",
    "by_guardian": "监护人类型",
    "incidents_by_category": "事件类别",
    "incidents_by_severity": "事件程度",
}
STRUCTURE_GROUP = "结构"
SPECIAL_LABEL = "特殊情况"  # the flags a child may carry several of (特困, 单亲 …): counts of 结构 in no breakdown
_BREAKDOWN_OF = {key: BREAKDOWN_LABELS.get(name, name) for name, keys in registry.PARTITIONS.items() for key in keys}


def breakdown(indicator: IndicatorDef) -> str | None:
    """The breakdown an indicator is a category of (性别 for 男), if any."""
    found = _BREAKDOWN_OF.get(indicator.key)
    if found is None and indicator.group == STRUCTURE_GROUP and indicator.kind == IndicatorKind.count:
        return SPECIAL_LABEL
    return found


def header(indicator: IndicatorDef) -> str:
    """The column head as county sheets write it: 建档率（%）, 留守儿童数（人）."""
    return f"{indicator.name}（{indicator.unit}）" if indicator.unit else indicator.name


def full_header(indicator: IndicatorDef) -> str:
    """A head that stands alone (one header row: CSV, Word): 性别：男（人）, 学段：未分班（人）."""
    label = breakdown(indicator)
    return f"{label}：{header(indicator)}" if label else header(indicator)


def group_label(indicator: IndicatorDef) -> str:
    """The head above an indicator in a two-row header: its group, and its breakdown (结构·性别)."""
    label = breakdown(indicator)
    return f"{indicator.group}·{label}" if label else indicator.group


def shows_previous(indicator: IndicatorDef) -> bool:
    """Whether the previous period goes beside this indicator: rates, durations and what happened within
    the period (talks, incidents) are compared period on period; a stock broken down (children by sex, by
    age band) is not — its change is read from the headline count."""
    return indicator.kind != IndicatorKind.count or indicator.measure == Measure.flow


@dataclass(frozen=True)
class Column:
    indicator: IndicatorDef
    previous: bool = False  # the previous period's figure of the indicator

    @property
    def header(self) -> str:
        return f"上期{full_header(self.indicator)}" if self.previous else full_header(self.indicator)

    def cell(self, row: StatsRow) -> Cell | None:
        return (row.previous if self.previous else row.cells).get(self.indicator.key)


def columns(indicators: Iterable[IndicatorDef], *, previous: bool = True) -> list[Column]:
    """The figure columns of a table: each indicator, and its previous period beside it where useful."""
    out: list[Column] = []
    for indicator in indicators:
        out.append(Column(indicator))
        if previous and shows_previous(indicator):
            out.append(Column(indicator, previous=True))
    return out


def number(cell: Cell | None, indicator: IndicatorDef) -> int | float | None:
    """The figure as shown, rounded as the indicator says; None when suppressed or not applicable. A rate
    stays a share in [0, 1] (spreadsheets format it as a percentage)."""
    if cell is None or cell.suppressed or cell.value is None:
        return None
    value = cell.value
    if indicator.kind == IndicatorKind.count:
        return int(round(value))
    if indicator.kind == IndicatorKind.rate:
        return round(float(value), indicator.digits + 2)
    return round(float(value), indicator.digits) if indicator.digits > 0 else int(round(value))


def value(cell: Cell | None, indicator: IndicatorDef, threshold: int) -> int | float | str:
    """What a spreadsheet cell holds: the number, the suppression mark, or a dash."""
    if cell is not None and cell.suppressed:
        return mark(threshold)
    shown = number(cell, indicator)
    return NOT_APPLICABLE if shown is None else shown


def text(cell: Cell | None, indicator: IndicatorDef, threshold: int) -> str:
    """The figure as text (CSV, Word): 1234, 97.3%, 42 — or the suppression mark, or a dash."""
    shown = value(cell, indicator, threshold)
    if isinstance(shown, str):
        return shown
    return format_number(shown, indicator)


def format_number(shown: int | float, indicator: IndicatorDef) -> str:
    if indicator.kind == IndicatorKind.rate:
        return f"{shown * 100:.{indicator.digits}f}%"
    if indicator.kind == IndicatorKind.minutes and indicator.digits > 0:
        return f"{shown:.{indicator.digits}f}"
    return str(int(shown))


def number_format(indicator: IndicatorDef) -> str:
    """The Excel number format: integers for counts, percentages with the indicator's digits for rates."""
    decimals = "." + "0" * indicator.digits if indicator.digits > 0 else ""
    if indicator.kind == IndicatorKind.rate:
        return f"0{decimals}%"
    if indicator.kind == IndicatorKind.count:
        return "#,##0"
    return f"0{decimals}"


def parent_names(tables: Iterable[StatsTable]) -> dict[uuid.UUID, str]:
    """Unit id → name over every row of some tables (the township of a school row, the school of a class)."""
    return {row.unit_id: row.unit_name for table in tables for row in table.rows if row.unit_id is not None}


def parent_header(table: StatsTable, names: Mapping[uuid.UUID, str]) -> str | None:
    """The parent column's head, when the parents of the table's rows are known."""
    if not any(row.parent_id in names for row in table.rows):
        return None
    return PARENT_HEADERS.get(table.level)


def day(d: date) -> str:
    return f"{d.year}年{d.month}月{d.day}日"


def period_span(table: StatsTable) -> str:
    return f"{table.period.label}（{day(table.period.starts_on)}至{day(table.period.ends_on)}）"
