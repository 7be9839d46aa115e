"""季度/年度通报 — the quarterly and annual bulletin as an editable Word document (pure, CPU-bound).

The text is written from the numbers of the tables, never typed: the area's figures against the previous
period, then the units (schools, or townships / classes) that lag — below the area's own rate, and those
below a floor — on each compliance rate, naming units and never a child. A suppressed count is written as
its mark ("<5"), a suppressed rate or duration as not shown — never as a number — and a unit whose rate is
suppressed is not judged. Then the tables and
the monthly-trend charts as images. Everything stays plain Word text and tables so the bureau can edit it
before sending.
"""

import io
from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass, field

from api.clock import SHANGHAI
from api.models.stats import Cell, IndicatorDef, IndicatorKind, Level, Period, PeriodKind, StatsRow, StatsTable
from api.services.stats.exports import layout
from api.services.stats.exports.charts import Chart

MEDIA_TYPE = "application/vnd.openxmlformats-officedocument.wordprocessingml.document"
KIND_NAMES = {PeriodKind.quarter: "季度", PeriodKind.year: "年度"}
# Groups the text leaves to the tables: structural breakdowns (children by sex, age band …).
BREAKDOWN_GROUPS = frozenset({"结构"})
# Rates that describe rather than measure the work (the left-behind share of pupils): never "lagging".
DESCRIPTIVE_GROUPS = frozenset({"基本情况", "结构"})
AREA_WORDS = {Level.county: "全县", Level.township: "全乡镇", Level.school: "全校", Level.klass: "全班"}
UNIT_NOUNS = {Level.township: "个乡镇", Level.school: "所学校", Level.klass: "个班级"}
DEFAULT_FLOOR = 0.9  # a compliance rate below 90% is named whatever the area's own rate
MAX_NAMED = 10  # units named per indicator (the lowest first); the rest are counted
TABLE_COLUMNS = 7  # indicator columns per Word table, so that a landscape A4 page holds them
LANDSCAPE_TEXT_WIDTH = 24.0  # cm: A4 landscape less Word's default margins
NUMBER_WIDTH, NAME_WIDTH = 1.2, 4.5


@dataclass(frozen=True)
class Lag:
    """The units below the area's rate on one rate, and those below the floor, each lowest first."""

    indicator: IndicatorDef
    area_value: float
    below_area: list[tuple[str, float]]
    below_floor: list[tuple[str, float]]


@dataclass
class Text:
    title: str
    subtitle: str
    overview: list[str] = field(default_factory=list)
    lags: list[str] = field(default_factory=list)


def _cell(row: StatsRow, key: str, *, previous: bool = False) -> Cell | None:
    return (row.previous if previous else row.cells).get(key)


def title(area: StatsTable) -> str:
    return f"关于{area.period.label}{area.area_name}留守儿童关爱工作情况的通报"


def _change(indicator: IndicatorDef, now: int | float, before: int | float) -> str:
    if indicator.kind == IndicatorKind.rate:
        points = round((now - before) * 100, indicator.digits)
        if points == 0:
            return "与上期持平"
        word = "提高" if points > 0 else "下降"
        return f"比上期{word}{abs(points):.{indicator.digits}f}个百分点"
    if now == before:
        return "与上期持平"
    word = "增加" if now > before else "减少"
    difference = abs(now - before)
    shown = f"{difference:.{indicator.digits}f}" if isinstance(difference, float) else str(difference)
    return f"比上期{word}{shown}{indicator.unit}"


def figure(row: StatsRow, indicator: IndicatorDef, threshold: int) -> str:
    """One figure in a sentence: "建档率97.3%（上期96.8%，比上期提高0.5个百分点）"."""
    cell, before_cell = _cell(row, indicator.key), _cell(row, indicator.key, previous=True)
    unit = "" if indicator.kind == IndicatorKind.rate else indicator.unit
    now_text = layout.text(cell, indicator, threshold)
    if now_text == layout.NOT_APPLICABLE:
        return f"{indicator.name}无可统计数据"
    suppressed = cell is not None and cell.suppressed
    notes = ["按规定不显示具体数字"] if suppressed else []
    if suppressed and indicator.kind != IndicatorKind.count:
        # "<5" beside a rate or a duration would read as 5% or 5 minutes: say what is small instead.
        now_text, unit, notes = "按规定不显示", "", [f"涉及人数或次数少于{threshold}"]
    now, before = layout.number(cell, indicator), layout.number(before_cell, indicator)
    before_text = layout.text(before_cell, indicator, threshold)
    if before_text != layout.NOT_APPLICABLE:
        notes.append(f"上期{before_text}{unit}")
        if now is not None and before is not None:
            notes.append(_change(indicator, now, before))
    return f"{indicator.name}{now_text}{unit}" + (f"（{'，'.join(notes)}）" if notes else "")


def overview(
    area: StatsTable, parts: Mapping[str, Sequence[str]] | None = None, quiet: Collection[str] = ()
) -> list[str]:
    """A paragraph per indicator group: the area's figures against the previous period. ``parts`` maps a
    count to the keys of its breakdown (incidents → by category), told as "其中…" after it; ``quiet``
    indicators are left to the tables (another breakdown of the same count)."""
    parts = parts or {}
    inside = {key for keys in parts.values() for key in keys} | set(quiet)
    by_key = {i.key: i for i in area.indicators}
    groups: dict[str, list[IndicatorDef]] = {}
    for indicator in area.indicators:
        if indicator.group in BREAKDOWN_GROUPS or indicator.key in inside:
            continue
        groups.setdefault(indicator.group, []).append(indicator)
    word = AREA_WORDS.get(area.area_level, "")
    paragraphs = []
    for group, indicators in groups.items():
        clauses = []
        for indicator in indicators:
            if layout.value(_cell(area.total, indicator.key), indicator, area.threshold) == layout.NOT_APPLICABLE:
                continue  # nothing to measure (no incident to time): the tables show the dash
            clause = figure(area.total, indicator, area.threshold)
            shown_parts = []
            for key in parts.get(indicator.key, ()):
                part = by_key.get(key)
                if part is None:
                    continue
                part_cell = _cell(area.total, key)
                if part_cell is not None and not part_cell.suppressed and not part_cell.value:
                    continue  # a category with none is not worth a word
                shown_parts.append(f"{part.name}{layout.text(part_cell, part, area.threshold)}{part.unit}")
            if shown_parts:
                clause += "，其中" + "、".join(shown_parts)
            clauses.append(clause)
        if clauses:
            paragraphs.append(f"{group}：{word}{'；'.join(clauses)}。")
        else:
            paragraphs.append(f"{group}：本期无可统计的数据。")
    return paragraphs


def compliance_rates(indicators: Sequence[IndicatorDef]) -> list[IndicatorDef]:
    """The rates that measure work done (建档率, coverage, care and chain compliance): where units lag."""
    return [i for i in indicators if i.kind == IndicatorKind.rate and i.group not in DESCRIPTIVE_GROUPS]


def lags(units: StatsTable, area_row: StatsRow, *, floor: float = DEFAULT_FLOOR) -> list[Lag]:
    """Per compliance rate, the units below the area's rate and those below ``floor``, lowest first. A unit
    whose rate is suppressed or has no denominator is not judged; neither is a rate the area has no value
    for (or has suppressed)."""
    out = []
    for indicator in compliance_rates(units.indicators):
        area_value = layout.number(_cell(area_row, indicator.key), indicator)
        if area_value is None:
            continue
        shown = [(row.unit_name, layout.number(_cell(row, indicator.key), indicator)) for row in units.rows]
        judged = sorted(((name, v) for name, v in shown if v is not None), key=lambda nv: (nv[1], nv[0]))
        below = [(name, v) for name, v in judged if v < area_value]
        under = [(name, v) for name, v in judged if v < floor]
        if below or under:
            out.append(Lag(indicator, area_value, below, under))
    return out


def _named(indicator: IndicatorDef, units: list[tuple[str, float]]) -> str:
    shown = "、".join(f"{name}（{layout.format_number(v, indicator)}）" for name, v in units[:MAX_NAMED])
    return shown + ("等" if len(units) > MAX_NAMED else "")


def lag_paragraphs(units: StatsTable, area_row: StatsRow, *, floor: float = DEFAULT_FLOOR) -> list[str]:
    noun = UNIT_NOUNS.get(units.level, "个单位")
    word = AREA_WORDS.get(units.area_level, "")
    out = []
    for lag in lags(units, area_row, floor=floor):
        i = lag.indicator
        sentence = f"{i.name}：{word}为{layout.format_number(lag.area_value, i)}"
        if lag.below_area:
            sentence += f"，低于{word}水平的有{len(lag.below_area)}{noun}：{_named(i, lag.below_area)}"
        if lag.below_floor:
            sentence += (
                f"；低于{floor * 100:g}%的有{len(lag.below_floor)}{noun}："
                + "、".join(name for name, _ in lag.below_floor[:MAX_NAMED])
                + ("等" if len(lag.below_floor) > MAX_NAMED else "")
            )
        out.append(sentence + "。")
    return out


def write_text(
    tables: Sequence[StatsTable],
    *,
    parts: Mapping[str, Sequence[str]] | None = None,
    quiet: Collection[str] = (),
    floor: float = DEFAULT_FLOOR,
) -> Text:
    """The bulletin's words from its tables (coarsest level first; the area's figures are their totals
    row, the finest level is where lagging units are named)."""
    area = tables[0]
    kind = KIND_NAMES.get(area.period.kind, "")
    as_of = area.as_of.astimezone(SHANGHAI)
    subtitle = (
        f"（{area.area_name}{kind}通报　统计期：{layout.period_span(area)}　对比期：{area.previous_period.label}　"
        f"数据截至{as_of:%Y年%m月%d日 %H:%M}）"
    )
    text = Text(title(area), subtitle, overview(area, parts, quiet))
    finest = tables[-1]
    if finest.rows:
        text.lags = lag_paragraphs(finest, area.total, floor=floor)
    return text


def _set_fonts(document: object) -> None:
    from docx.oxml.ns import qn
    from docx.shared import Pt

    styles = document.styles  # type: ignore[attr-defined]
    for name in ("Normal", "Title", "Heading 1", "Caption"):
        try:
            style = styles[name]
        except KeyError:
            continue
        style.font.name = "Times New Roman"
        rpr = style.element.get_or_add_rPr()
        rfonts = rpr.find(qn("w:rFonts"))
        if rfonts is None:
            rfonts = rpr.makeelement(qn("w:rFonts"), {})
            rpr.append(rfonts)
        rfonts.set(qn("w:eastAsia"), "仿宋" if name in ("Normal", "Caption") else "黑体")
    styles["Normal"].font.size = Pt(12)


def table_headers(table: StatsTable) -> list[tuple[str, list[IndicatorDef]]]:
    """The Word tables of one level: its headline indicators (no structural breakdowns), a few per table."""
    shown = [i for i in table.indicators if i.group not in BREAKDOWN_GROUPS]
    chunks = [shown[n : n + TABLE_COLUMNS] for n in range(0, len(shown), TABLE_COLUMNS)]
    name = layout.LEVEL_NAMES[table.level]
    if len(chunks) == 1:
        return [(f"各{name}主要指标（{table.period.label}）", chunks[0])]
    return [(f"各{name}主要指标（{table.period.label}，{n}/{len(chunks)}）", c) for n, c in enumerate(chunks, 1)]


def _add_table(document: object, table: StatsTable, indicators: list[IndicatorDef]) -> None:
    from docx.enum.table import WD_TABLE_ALIGNMENT
    from docx.shared import Cm

    rows = [*table.rows, table.total]
    heads = ["序号", layout.LEVEL_NAMES[table.level]] + [layout.full_header(i) for i in indicators]
    word_table = document.add_table(rows=len(rows) + 1, cols=len(heads))  # type: ignore[attr-defined]
    word_table.style = "Table Grid"
    word_table.alignment = WD_TABLE_ALIGNMENT.CENTER
    word_table.autofit = False
    figure_width = (LANDSCAPE_TEXT_WIDTH - NUMBER_WIDTH - NAME_WIDTH) / max(len(indicators), 1)
    widths = [NUMBER_WIDTH, NAME_WIDTH] + [figure_width] * len(indicators)
    for cell, head, width in zip(word_table.rows[0].cells, heads, widths, strict=True):
        cell.text = head
        cell.width = Cm(width)
        for run in cell.paragraphs[0].runs:
            run.bold = True
    for n, (row, word_row) in enumerate(zip(rows, word_table.rows[1:], strict=True), start=1):
        total = row is table.total
        values = ["" if total else str(n), layout.TOTAL_NAME if total else row.unit_name]
        values += [layout.text(row.cells.get(i.key), i, table.threshold) for i in indicators]
        for cell, value, width in zip(word_row.cells, values, widths, strict=True):
            cell.text = value
            cell.width = Cm(width)
            if total:
                for run in cell.paragraphs[0].runs:
                    run.bold = True


def render(
    tables: Sequence[StatsTable],
    charts: Sequence[Chart],
    *,
    parts: Mapping[str, Sequence[str]] | None = None,
    quiet: Collection[str] = (),
    floor: float = DEFAULT_FLOOR,
) -> bytes:
    """The bulletin as a .docx: title, period, the text, the tables (landscape), the trend charts."""
    # python-docx where a document is written, not when the service starts.
    from docx import Document
    from docx.enum.section import WD_ORIENT, WD_SECTION
    from docx.enum.text import WD_ALIGN_PARAGRAPH
    from docx.shared import Cm

    text = write_text(tables, parts=parts, quiet=quiet, floor=floor)
    area = tables[0]
    document = Document()
    _set_fonts(document)
    heading = document.add_heading(text.title, level=0)
    heading.alignment = WD_ALIGN_PARAGRAPH.CENTER
    sub = document.add_paragraph(text.subtitle)
    sub.alignment = WD_ALIGN_PARAGRAPH.CENTER

    document.add_heading("一、总体情况", level=1)
    for paragraph in text.overview:
        document.add_paragraph(paragraph)
    finest = tables[-1]
    noun = UNIT_NOUNS.get(finest.level, "个单位")[1:]
    document.add_heading(f"二、需要关注的{noun}", level=1)
    if text.lags:
        for paragraph in text.lags:
            document.add_paragraph(paragraph)
    else:
        document.add_paragraph(f"各{noun}的各项落实率均不低于{AREA_WORDS.get(area.area_level, '')}水平。")
    document.add_paragraph(f"请各{noun}对照本通报查找差距，抓好整改落实。" + layout.suppression_note(area.threshold))

    section = document.add_section(WD_SECTION.NEW_PAGE)
    section.orientation = WD_ORIENT.LANDSCAPE
    section.page_width, section.page_height = section.page_height, section.page_width
    document.add_heading("三、统计表", level=1)
    number = 0
    for table in tables:
        for caption, indicators in table_headers(table):
            number += 1
            document.add_paragraph(f"表{number}　{caption}", style="Caption")
            _add_table(document, table, indicators)
            document.add_paragraph()

    section = document.add_section(WD_SECTION.NEW_PAGE)
    section.orientation = WD_ORIENT.PORTRAIT
    section.page_width, section.page_height = section.page_height, section.page_width
    document.add_heading("四、月度趋势", level=1)
    if not charts:
        document.add_paragraph("本期无月度趋势数据。")
    for n, chart in enumerate(charts, start=1):
        document.add_picture(io.BytesIO(chart.png), width=Cm(16))
        document.paragraphs[-1].alignment = WD_ALIGN_PARAGRAPH.CENTER
        figure_caption = document.add_paragraph(f"图{n}　{chart.title}", style="Caption")
        figure_caption.alignment = WD_ALIGN_PARAGRAPH.CENTER

    out = io.BytesIO()
    document.save(out)
    return out.getvalue()


def file_name(area: StatsTable) -> str:
    return file_name_of(area.area_name, area.period)


def file_name_of(area_name: str, period: Period) -> str:
    return f"{area_name}{period.label}留守儿童关爱工作{KIND_NAMES.get(period.kind, '')}通报.docx"
