"""The statistics workbook (pure): laid out the way county offices exchange them.

One sheet per level (县 / 乡镇 / 学校 …): a title row (area, period and level), a line with the period, the period it
is compared with, the as-of time and what "<5" means; a two-row header (the indicator group, the indicator
with its unit, 本期 / 上期 under the indicators compared period on period); one row per unit; a bold 合计 row;
the header and the name columns frozen; integer, percentage and minute number formats. Then a sheet of
monthly trends with native Excel line charts, drawn from a plain data sheet in which a suppressed month is
an empty cell (Excel would plot the text "<5" as zero), so a hidden figure leaves a gap in the line.
"""

import functools
import io
from collections.abc import Sequence
from copy import copy
from types import SimpleNamespace
from typing import Any

from api.clock import SHANGHAI
from api.models.stats import IndicatorDef, IndicatorKind, StatsRow, StatsTable, StatsTrend
from api.services.stats.exports import layout

MEDIA_TYPE = "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet"
TREND_SHEET = "月度趋势"
CHART_DATA_SHEET = "图表数据"
HEADER_ROWS = (3, 4, 5)  # group, indicator, 本期/上期
FIRST_DATA_ROW = 6


# openpyxl (and the numpy it pulls in) is loaded when a workbook is first written, not at the API's start-up:
# its names and the styles made of them, once, in one namespace.
@functools.cache
def _style() -> SimpleNamespace:
    import openpyxl
    from openpyxl.chart import LineChart, Reference
    from openpyxl.styles import Alignment, Border, Font, PatternFill, Side
    from openpyxl.utils import get_column_letter

    thin = Side(style="thin", color="808080")
    return SimpleNamespace(
        openpyxl=openpyxl,
        LineChart=LineChart,
        Reference=Reference,
        get_column_letter=get_column_letter,
        Alignment=Alignment,
        border=Border(left=thin, right=thin, top=thin, bottom=thin),
        title_font=Font(name="宋体", size=14, bold=True),
        bold=Font(name="宋体", bold=True),
        plain=Font(name="宋体"),
        note_font=Font(name="宋体", size=9, color="595959"),
        header_fill=PatternFill("solid", fgColor="DDEBF7"),
        total_fill=PatternFill("solid", fgColor="F2F2F2"),
        center=Alignment(horizontal="center", vertical="center", wrap_text=True),
        right=Alignment(horizontal="right", vertical="center"),
        left=Alignment(horizontal="left", vertical="center"),
    )


def _text(sheet: Any, row: int, column: int, value: str) -> Any:
    """A text cell that stays text: a unit named "=…" must not become a formula in the bureau's Excel."""
    cell = sheet.cell(row=row, column=column, value=value)
    cell.data_type = "s"
    return cell


def sheet_title(table: StatsTable) -> str:
    return f"{table.area_name}{table.period.label}留守儿童关爱工作统计表（{layout.LEVEL_NAMES[table.level]}）"


def info_line(table: StatsTable) -> str:
    as_of = table.as_of.astimezone(SHANGHAI)
    return (
        f"统计期：{layout.period_span(table)}　对比期（上期）：{table.previous_period.label}　"
        f"数据截至：{as_of:%Y-%m-%d %H:%M}　{layout.suppression_note(table.threshold)}"
    )


def _group_spans(cols: list[layout.Column], first: int) -> list[tuple[str, int, int]]:
    """Consecutive columns of one indicator group: (group, first column, last column)."""
    spans: list[tuple[str, int, int]] = []
    for index, col in enumerate(cols, start=first):
        group = layout.group_label(col.indicator)
        if spans and spans[-1][0] == group and spans[-1][2] == index - 1:
            spans[-1] = (group, spans[-1][1], index)
        else:
            spans.append((group, index, index))
    return spans


def _write_level(sheet: Any, table: StatsTable, names: dict[Any, str]) -> None:
    st = _style()
    parent = layout.parent_header(table, names)
    fixed = ["序号", layout.LEVEL_NAMES[table.level]] + ([parent] if parent else [])
    cols = layout.columns(table.indicators)
    first = len(fixed) + 1
    last = len(fixed) + len(cols)

    sheet.merge_cells(start_row=1, start_column=1, end_row=1, end_column=max(last, 2))
    title = _text(sheet, 1, 1, sheet_title(table))
    # Left, not centred: on a sheet a hundred columns wide the centre is far off screen.
    title.font, title.alignment = st.title_font, st.Alignment(horizontal="left", vertical="center")
    sheet.row_dimensions[1].height = 26
    sheet.merge_cells(start_row=2, start_column=1, end_row=2, end_column=max(last, 2))
    info = _text(sheet, 2, 1, info_line(table))
    info.font, info.alignment = st.note_font, st.Alignment(horizontal="left", vertical="center", wrap_text=True)
    sheet.row_dimensions[2].height = 30

    for index, head in enumerate(fixed, start=1):
        sheet.merge_cells(start_row=3, start_column=index, end_row=5, end_column=index)
        _text(sheet, 3, index, head)
    for group, start, end in _group_spans(cols, first):
        if end > start:
            sheet.merge_cells(start_row=3, start_column=start, end_row=3, end_column=end)
        _text(sheet, 3, start, group)
    index = first
    while index <= last:
        col = cols[index - first]
        paired = index < last and cols[index - first + 1].previous
        if paired:
            sheet.merge_cells(start_row=4, start_column=index, end_row=4, end_column=index + 1)
            _text(sheet, 4, index, layout.header(col.indicator))
            _text(sheet, 5, index, "本期")
            _text(sheet, 5, index + 1, "上期")
            index += 2
        else:
            sheet.merge_cells(start_row=4, start_column=index, end_row=5, end_column=index)
            _text(sheet, 4, index, layout.header(col.indicator))
            index += 1
    for row in HEADER_ROWS:
        for column in range(1, last + 1):
            cell = sheet.cell(row=row, column=column)
            cell.font, cell.alignment, cell.border, cell.fill = st.bold, st.center, st.border, st.header_fill
    sheet.row_dimensions[4].height = 45

    # A cell's style is an index into the workbook's fonts, borders, fills…; setting each part looks it up by
    # value (hashing the font, the border…). A few hundred schools by a hundred columns: each combination is
    # looked up once, then copied.
    styles: dict[tuple[bool, str], Any] = {}

    def styled(cell: Any, total: bool, kind: str) -> None:
        known = styles.get((total, kind))
        if known is not None:
            cell._style = copy(known)
            return
        cell.border = st.border
        cell.font = st.bold if total else st.plain
        if total:
            cell.fill = st.total_fill
        if kind == "name":
            cell.alignment = st.left
        elif kind == "mark":
            cell.alignment = st.right
        elif kind.startswith("#"):
            cell.number_format = kind[1:]
        styles[(total, kind)] = copy(cell._style)

    def write_row(row_no: int, number: int | None, row: StatsRow, *, total: bool) -> None:
        styled(sheet.cell(row=row_no, column=1, value=number), total, "plain")
        styled(_text(sheet, row_no, 2, layout.TOTAL_NAME if total else row.unit_name), total, "name")
        if parent:
            parent_name = names.get(row.parent_id, "") if row.parent_id is not None and not total else ""
            styled(_text(sheet, row_no, 3, parent_name), total, "plain")
        for index, col in enumerate(cols, start=first):
            shown = layout.value(col.cell(row), col.indicator, table.threshold)
            if isinstance(shown, str):
                styled(_text(sheet, row_no, index, shown), total, "mark")
            else:
                cell = sheet.cell(row=row_no, column=index, value=shown)
                styled(cell, total, "#" + layout.number_format(col.indicator))

    row_no = FIRST_DATA_ROW
    for ordinal, unit_row in enumerate(table.rows, start=1):
        write_row(row_no, ordinal, unit_row, total=False)
        row_no += 1
    write_row(row_no, None, table.total, total=True)

    sheet.freeze_panes = sheet.cell(row=FIRST_DATA_ROW, column=first).coordinate
    sheet.column_dimensions["A"].width = 6
    sheet.column_dimensions["B"].width = 24
    if parent:
        sheet.column_dimensions["C"].width = 16
    for column in range(first, last + 1):
        sheet.column_dimensions[st.get_column_letter(column)].width = 11
    # Printed on A4 landscape pages across: a hundred columns do not fit one page legibly, so each page
    # repeats the header rows and the name columns instead.
    sheet.print_title_rows = "3:5"
    sheet.print_title_cols = f"A:{st.get_column_letter(first - 1)}"
    sheet.page_setup.orientation = "landscape"
    sheet.page_setup.paperSize = sheet.PAPERSIZE_A4


def trend_title(trend: StatsTrend) -> str:
    return f"{trend.area_name}主要指标月度趋势"


def chart_groups(indicators: Sequence[IndicatorDef]) -> list[tuple[str, list[IndicatorDef]]]:
    """The charts of a trend: the rates of one indicator group on one percentage chart (建档, 帮扶关爱 …),
    every other indicator on its own (counts of children and minutes do not share a scale)."""
    rates: dict[str, list[IndicatorDef]] = {}
    for indicator in indicators:
        if indicator.kind == IndicatorKind.rate:
            rates.setdefault(indicator.group, []).append(indicator)
    groups = [(f"{group}（比率）月度趋势", members) for group, members in rates.items()]
    groups += [(f"{layout.full_header(i)}月度趋势", [i]) for i in indicators if i.kind != IndicatorKind.rate]
    return groups


def _write_trend(sheet: Any, data: Any, trend: StatsTrend) -> None:
    st = _style()
    inds = trend.indicators
    last = len(inds) + 1
    sheet.merge_cells(start_row=1, start_column=1, end_row=1, end_column=max(last, 2))
    title = _text(sheet, 1, 1, trend_title(trend))
    title.font, title.alignment = st.title_font, st.Alignment(horizontal="center", vertical="center")
    sheet.merge_cells(start_row=2, start_column=1, end_row=2, end_column=max(last, 2))
    as_of = trend.as_of.astimezone(SHANGHAI)
    note = _text(sheet, 2, 1, f"数据截至：{as_of:%Y-%m-%d %H:%M}　{layout.suppression_note(trend.threshold)}")
    note.font, note.alignment = st.note_font, st.Alignment(horizontal="left", vertical="center", wrap_text=True)
    sheet.row_dimensions[2].height = 30

    heads = ["月份"] + [layout.full_header(i) for i in inds]
    for column, head in enumerate(heads, start=1):
        for target in (sheet, data):
            cell = _text(target, 3, column, head)
            cell.font, cell.alignment, cell.border, cell.fill = st.bold, st.center, st.border, st.header_fill
    sheet.row_dimensions[3].height = 45
    for offset, point in enumerate(trend.points):
        row_no = 4 + offset
        # The charts' axis reads the data sheet's short months (2026-11): "2026年11月" wraps under a tick.
        for target, label in ((sheet, point.period.label), (data, point.period.key)):
            month = _text(target, row_no, 1, label)
            month.border, month.font = st.border, st.plain
        for column, indicator in enumerate(inds, start=2):
            cell_data = point.cells.get(indicator.key)
            shown = layout.value(cell_data, indicator, trend.threshold)
            cell = sheet.cell(row=row_no, column=column)
            if isinstance(shown, str):
                _text(sheet, row_no, column, shown)
                cell.alignment = st.right
            else:
                cell.value = shown
                cell.number_format = layout.number_format(indicator)
            cell.border, cell.font = st.border, st.plain
            plotted = data.cell(row=row_no, column=column, value=layout.number(cell_data, indicator))
            plotted.number_format = layout.number_format(indicator)
            plotted.border = st.border
    last_row = 3 + len(trend.points)
    sheet.freeze_panes = "B4"
    data.freeze_panes = "B4"
    _text(data, 1, 1, f"{trend_title(trend)}：图表所用数据（按规定不显示的数字留空）")
    data.cell(row=1, column=1).font = st.bold
    for target in (sheet, data):
        target.column_dimensions["A"].width = 14
        for column in range(2, last + 1):
            target.column_dimensions[st.get_column_letter(column)].width = 12
    if not trend.points:
        return

    categories = st.Reference(data, min_col=1, min_row=4, max_row=last_row)
    anchor_row = last_row + 3
    for title_text, group in chart_groups(inds):
        chart = st.LineChart()
        chart.title = title_text
        chart.height, chart.width = 8, 18
        chart.display_blanks = "gap"
        chart.legend.position = "b"
        chart.x_axis.title = "月份"
        chart.y_axis.title = group[0].unit
        chart.y_axis.number_format = layout.number_format(group[0])
        # openpyxl ≥ 3.1 marks axes deleted unless told otherwise; Excel then draws a chart with no scale.
        chart.x_axis.delete = False
        chart.y_axis.delete = False
        if group[0].kind == IndicatorKind.rate:
            chart.y_axis.scaling.min = 0
            chart.y_axis.scaling.max = 1
        for indicator in group:
            column = 2 + inds.index(indicator)
            chart.add_data(st.Reference(data, min_col=column, min_row=3, max_row=last_row), titles_from_data=True)
        chart.set_categories(categories)
        for series in chart.series:
            series.smooth = False
        sheet.add_chart(chart, f"A{anchor_row}")
        anchor_row += 17


def workbook(tables: Sequence[StatsTable], trend: StatsTrend | None) -> bytes:
    """The workbook: a sheet per table (one per level, in the order given), then the monthly trends with
    their charts and the charts' data sheet."""
    st = _style()
    book = st.openpyxl.Workbook()
    default = book.active
    names = layout.parent_names(tables)
    used: set[str] = set()
    for table in tables:
        name = layout.LEVEL_NAMES[table.level]
        while name in used:
            name += "'"
        used.add(name)
        _write_level(book.create_sheet(name), table, names)
    if trend is not None:
        _write_trend(book.create_sheet(TREND_SHEET), book.create_sheet(CHART_DATA_SHEET), trend)
    if default is not None and len(book.worksheets) > 1:
        book.remove(default)
    buffer = io.BytesIO()
    book.save(buffer)
    return buffer.getvalue()
