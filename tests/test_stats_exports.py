"""The statistics exports, written from hand-made tables and read back the way the bureau reads them:
openpyxl for the workbook, the csv module for the CSV, python-docx for the bulletin. Every figure is checked
against the table it was written from (computed here independently of the export code), and no suppressed
figure appears anywhere in any file."""

import csv
import io
import math
import re
import zipfile

import docx
import openpyxl
import pytest
from PIL import Image

from api.models.stats import Cell, IndicatorKind, StatsTable
from api.services.stats.exports import bulletin, charts, layout, table_csv, workbook
from tests import stats_export_tables as T

BY_KEY = {i.key: i for i in T.INDICATORS}
# A category is headed with its breakdown where the head stands alone, so that 男 or 未分班 reads (and stays
# unique) without the two-row header of the workbook.
BREAKDOWN_PREFIX = {"lb_sex_male": "性别：", "lb_sex_female": "性别：", "incidents_safety": "事件类别："}


def full_header(indicator) -> str:
    return f"{BREAKDOWN_PREFIX.get(indicator.key, '')}{indicator.name}（{indicator.unit}）"


def expected_value(cell: Cell | None, kind: IndicatorKind, digits: int, threshold: int = T.THRESHOLD):
    """What a spreadsheet cell must hold, from the rules of the issue (not from the export code)."""
    if cell is not None and cell.suppressed:
        return f"<{threshold}"
    if cell is None or cell.value is None:
        return "—"
    if kind == IndicatorKind.rate:
        return round(cell.value, digits + 2)
    return int(round(cell.value))


def expected_text(cell: Cell | None, kind: IndicatorKind, digits: int, threshold: int = T.THRESHOLD) -> str:
    shown = expected_value(cell, kind, digits, threshold)
    if isinstance(shown, str):
        return shown
    if kind == IndicatorKind.rate:
        return f"{cell.value * 100:.{digits}f}%"
    return str(shown)


def header_map(sheet, first_column: int) -> dict[int, tuple[str, bool]]:
    """Column → (indicator key, previous?) read from the two header rows."""
    by_header = {f"{i.name}（{i.unit}）": i.key for i in T.INDICATORS}
    out: dict[int, tuple[str, bool]] = {}
    current = None
    for column in range(first_column, sheet.max_column + 1):
        head = sheet.cell(row=4, column=column).value
        if head is not None:
            current = by_header[head]
        below = sheet.cell(row=5, column=column).value
        out[column] = (current, below == "上期")
    return out


@pytest.fixture(scope="module")
def tables() -> list[StatsTable]:
    return [T.township_table(), T.school_table()]


@pytest.fixture(scope="module")
def xlsx(tables) -> bytes:
    return workbook.workbook(tables, T.trend())


def test_the_workbook_has_a_sheet_per_level_then_the_trends(xlsx):
    book = openpyxl.load_workbook(io.BytesIO(xlsx))
    assert book.sheetnames == ["乡镇", "学校", "月度趋势", "图表数据"]


@pytest.mark.parametrize("index", [0, 1])
def test_every_figure_of_a_level_sheet_is_the_tables(xlsx, tables, index):
    table = tables[index]
    sheet = openpyxl.load_workbook(io.BytesIO(xlsx)).worksheets[index]
    assert sheet["A1"].value == f"青山县2026年第四季度留守儿童关爱工作统计表（{'乡镇' if index == 0 else '学校'}）"
    info = sheet["A2"].value
    assert "2026年第四季度" in info and "2026年第三季度" in info and "2027-01-05 10:00" in info and "“<5”" in info
    has_parent = index == 1  # a school's township is known from the township sheet
    first = 4 if has_parent else 3
    assert [sheet.cell(row=3, column=c).value for c in range(1, first)] == (
        ["序号", "学校", "所属乡镇"] if has_parent else ["序号", "乡镇"]
    )
    assert sheet.freeze_panes == f"{'D' if has_parent else 'C'}6"
    columns = header_map(sheet, first)
    # every indicator has its column; previous beside rates, durations and flows, not beside stock counts
    assert {key for key, _ in columns.values()} == set(T.KEYS)
    previous_keys = {key for key, previous in columns.values() if previous}
    assert previous_keys == {
        "left_behind_share",
        "archive_rate",
        "care_talk_rate",
        "incidents",
        "incidents_safety",
        "chain_s1_median_minutes",
    }
    assert sheet.cell(row=3, column=first).value == "基本情况"  # the group above its indicators
    groups = [sheet.cell(row=3, column=c).value for c in range(first, sheet.max_column + 1)]
    assert "结构·性别" in groups  # a breakdown's categories under its name

    rows = [*table.rows, table.total]
    for offset, row in enumerate(rows):
        line = 6 + offset
        is_total = row is table.total
        assert sheet.cell(row=line, column=1).value == (None if is_total else offset + 1)
        assert sheet.cell(row=line, column=2).value == ("合计" if is_total else row.unit_name)
        if has_parent and not is_total:
            township = next(t for n, (_, t) in T.SCHOOLS.items() if n == row.unit_name)
            assert sheet.cell(row=line, column=3).value == township
        for column, (key, previous) in columns.items():
            indicator = BY_KEY[key]
            source = (row.previous if previous else row.cells)[key]
            got = sheet.cell(row=line, column=column)
            want = expected_value(source, indicator.kind, indicator.digits)
            assert got.value == want, (row.unit_name, key, previous)
            if not isinstance(want, str):
                assert (
                    got.number_format
                    == {
                        IndicatorKind.count: "#,##0",
                        IndicatorKind.rate: "0." + "0" * indicator.digits + "%",
                        IndicatorKind.minutes: "0",
                    }[indicator.kind]
                )
        assert sheet.cell(row=line, column=2).font.b == is_total
    assert sheet.max_row == 5 + len(rows)


def test_a_unit_named_like_a_formula_stays_text(xlsx):
    sheet = openpyxl.load_workbook(io.BytesIO(xlsx))["乡镇"]
    cell = sheet["B7"]
    assert cell.value == "=HYPERLINK(1)乡" and cell.data_type == "s"


def test_the_trend_sheet_and_its_native_charts(xlsx):
    book = openpyxl.load_workbook(io.BytesIO(xlsx))
    sheet, data = book["月度趋势"], book["图表数据"]
    trend = T.trend()
    heads = [sheet.cell(row=3, column=c).value for c in range(1, 2 + len(trend.indicators))]
    assert heads == ["月份"] + [f"{i.name}（{i.unit}）" for i in trend.indicators]
    for offset, point in enumerate(trend.points):
        assert sheet.cell(row=4 + offset, column=1).value == point.period.label
        assert data.cell(row=4 + offset, column=1).value == point.period.key  # the charts' category axis
        for column, indicator in enumerate(trend.indicators, start=2):
            source = point.cells[indicator.key]
            want = expected_value(source, indicator.kind, indicator.digits)
            assert sheet.cell(row=4 + offset, column=column).value == want
            # the charts' data: the same number, or empty where suppressed (a gap, never a zero)
            assert data.cell(row=4 + offset, column=column).value == (None if isinstance(want, str) else want)
    assert sheet.cell(row=4 + 8, column=6).value == "<5"  # September's incidents
    assert sheet.cell(row=4 + 1, column=4).value == "—"  # February: no home visit was due

    chart_list = sheet._charts
    # 建档; the two rates of 帮扶关爱 together; then 留守儿童数, 突发事件数, 用时 each alone
    assert len(chart_list) == 5
    refs = [[s.val.numRef.f for s in c.series] for c in chart_list]
    assert {c.series[0].cat.numRef.f for c in chart_list} == {"'图表数据'!$A$4:$A$15"}
    assert refs == [
        ["'图表数据'!$B$4:$B$15"],
        ["'图表数据'!$C$4:$C$15", "'图表数据'!$D$4:$D$15"],
        ["'图表数据'!$E$4:$E$15"],
        ["'图表数据'!$F$4:$F$15"],
        ["'图表数据'!$G$4:$G$15"],
    ]
    with zipfile.ZipFile(io.BytesIO(xlsx)) as z:
        chart_xml = [z.read(n).decode() for n in z.namelist() if n.startswith("xl/charts/chart")]
    assert len(chart_xml) == 5
    for xml in chart_xml:
        assert "<lineChart>" in xml
        assert '<dispBlanksAs val="gap"/>' in xml
        assert '<delete val="1"/>' not in xml and xml.count('<delete val="0"/>') == 2  # both axes are drawn


def test_the_csv_holds_the_same_cells_and_marks(tables):
    table = tables[1]
    content = table_csv.table_csv(table, layout.parent_names(tables))
    assert content.startswith(b"\xef\xbb\xbf")  # the BOM Excel needs to read UTF-8 Chinese
    rows = list(csv.reader(io.StringIO(content.decode("utf-8-sig"))))
    head = rows[0]
    assert head[:3] == ["序号", "学校", "所属乡镇"]
    by_header = {full_header(i): i.key for i in T.INDICATORS}
    columns = {}
    for n, h in enumerate(head[3:], start=3):
        previous = h.startswith("上期")
        columns[n] = (by_header[h.removeprefix("上期")], previous)
    assert {k for k, _ in columns.values()} == set(T.KEYS)
    assert len(rows) == 1 + len(table.rows) + 1
    for line, row in zip(rows[1:], [*table.rows, table.total], strict=True):
        is_total = row is table.total
        assert line[1] == ("合计" if is_total else row.unit_name)
        for n, (key, previous) in columns.items():
            indicator = BY_KEY[key]
            source = (row.previous if previous else row.cells)[key]
            assert line[n] == expected_text(source, indicator.kind, indicator.digits), (row.unit_name, key)
    # a hostile parent name is neutralised for Excel
    assert rows[3][2] == "'=HYPERLINK(1)乡"


def test_a_csv_of_a_level_whose_parents_are_unknown_has_no_parent_column(tables):
    rows = list(csv.reader(io.StringIO(table_csv.table_csv(tables[1]).decode("utf-8-sig"))))
    assert rows[0][:3] == ["序号", "学校", "留守儿童数（人）"]


def _docx_text(content: bytes) -> tuple[list[str], list[list[list[str]]]]:
    document = docx.Document(io.BytesIO(content))
    paragraphs = [p.text for p in document.paragraphs]
    word_tables = [[[c.text for c in r.cells] for r in t.rows] for t in document.tables]
    return paragraphs, word_tables


@pytest.fixture(scope="module")
def bulletin_docx(tables) -> bytes:
    return bulletin.render(tables, charts.trend_charts(T.trend(), font=charts.cjk_font()), parts=T.PARTS)


def test_the_bulletin_tells_the_countys_figures_against_the_previous_period(bulletin_docx, tables):
    paragraphs, _ = _docx_text(bulletin_docx)
    assert paragraphs[0] == "关于2026年第四季度青山县留守儿童关爱工作情况的通报"
    assert "季度通报" in paragraphs[1] and "2026年第三季度" in paragraphs[1]
    text = "\n".join(paragraphs)
    total = tables[0].total
    lb_now, lb_before = total.cells["left_behind"].value, total.previous["left_behind"].value
    assert f"留守儿童数{lb_now}人（上期{lb_before}人，比上期减少{lb_before - lb_now}人）" in text
    archive_now = total.cells["archive_rate"].value * 100
    archive_before = total.previous["archive_rate"].value * 100
    change = round(archive_now, 1) - round(archive_before, 1)
    assert f"建档率{archive_now:.1f}%（上期{archive_before:.1f}%，比上期提高{change:.1f}个百分点）" in text
    assert "突发事件数8起（上期9起，比上期减少1起），其中安全事故8起" in text
    # the structural breakdown (children by sex) is left to the tables
    assert "男" not in "".join(p for p in paragraphs if p.startswith(("基本情况", "建档", "帮扶")))


def test_the_bulletin_names_the_schools_below_the_countys_rate_lowest_first(bulletin_docx, tables):
    paragraphs, _ = _docx_text(bulletin_docx)
    schools, county = tables[1], tables[0].total
    for key in ("archive_rate", "care_talk_rate"):
        indicator = BY_KEY[key]
        county_rate = round(county.cells[key].value, indicator.digits + 2)
        judged = [
            (r.unit_name, round(r.cells[key].value, indicator.digits + 2))
            for r in schools.rows
            if not r.cells[key].suppressed
        ]
        lagging = sorted((v, n) for n, v in judged if v < county_rate)
        line = next(p for p in paragraphs if p.startswith(indicator.name + "："))
        listed = re.findall(r"([^：、（）]+)（(\d+\.\d+)%）", line.split("低于全县水平的有", 1)[1])
        assert [(n, float(v)) for n, v in listed] == [(n, round(v * 100, indicator.digits)) for v, n in lagging]
        assert f"有{len(lagging)}所学校" in line
    # the school whose talk rate is suppressed is not judged on it
    talk = next(p for p in paragraphs if p.startswith("谈心完成率："))
    assert "柳树村小学" not in talk
    # the left-behind share describes, it does not lag
    assert not any(p.startswith("留守儿童占比：") for p in paragraphs)


def test_the_bulletins_tables_hold_the_tables_figures(bulletin_docx, tables):
    _, word_tables = _docx_text(bulletin_docx)
    shown = [i for i in T.INDICATORS if i.group != "结构"]
    assert len(word_tables) == 4  # two levels × (8 indicators in tables of at most 7)
    for n, table in enumerate(tables):
        for part, chunk in enumerate((shown[:7], shown[7:])):
            word = word_tables[2 * n + part]
            assert word[0] == ["序号", "乡镇" if n == 0 else "学校"] + [full_header(i) for i in chunk]
            for line, row in zip(word[1:], [*table.rows, table.total], strict=True):
                assert line[1] == ("合计" if row is table.total else row.unit_name)
                assert line[2:] == [expected_text(row.cells[i.key], i.kind, i.digits) for i in chunk]


def test_the_bulletin_carries_the_trend_charts_as_images(bulletin_docx):
    document = docx.Document(io.BytesIO(bulletin_docx))
    assert len(document.inline_shapes) == 5
    captions = [p.text for p in document.paragraphs if p.text.startswith("图")]
    assert captions[0] == "图1　建档（比率）月度趋势"
    # (without a CJK font on the machine the caption goes on to name the numbered series)
    assert captions[1].startswith("图2　帮扶关爱（比率）月度趋势")
    images = [r for r in document.part.rels.values() if "image" in r.reltype]
    assert len(images) == 5
    for rel in images:
        with Image.open(io.BytesIO(rel.target_part.blob)) as image:
            assert image.format == "PNG" and image.width > 800


def test_the_annual_bulletin_says_so(tables):
    from api.models.stats import Period, PeriodKind

    year = Period(
        kind=PeriodKind.year,
        key="2026",
        label="2026年",
        starts_on=tables[0].period.starts_on.replace(month=1),
        ends_on=tables[0].period.ends_on,
    )
    annual = [t.model_copy(update={"period": year}) for t in tables]
    text = bulletin.write_text(annual)
    assert text.title == "关于2026年青山县留守儿童关爱工作情况的通报"
    assert "年度通报" in text.subtitle
    assert bulletin.file_name(annual[0]) == "青山县2026年留守儿童关爱工作年度通报.docx"


def test_no_suppressed_figure_appears_anywhere_in_any_export(xlsx, bulletin_docx, tables):
    """Suppressed cells in the fixtures still carry figures found nowhere else; none may be written."""
    texts: list[str] = []
    book = openpyxl.load_workbook(io.BytesIO(xlsx))
    for sheet in book.worksheets:
        for row in sheet.iter_rows(values_only=True):
            texts += [str(v) for v in row if v is not None]
    with zipfile.ZipFile(io.BytesIO(xlsx)) as z:
        texts += [z.read(n).decode() for n in z.namelist() if n.startswith(("xl/charts/", "xl/sharedStrings"))]
    for table in tables:
        texts.append(table_csv.table_csv(table, layout.parent_names(tables)).decode("utf-8-sig"))
    paragraphs, word_tables = _docx_text(bulletin_docx)
    texts += paragraphs + [c for t in word_tables for r in t for c in r]
    numbers = {n for text in texts for n in re.findall(r"\d+(?:\.\d+)?", text)}
    assert numbers, "the exports hold figures"
    assert numbers.isdisjoint(T.LEAKED), numbers & T.LEAKED
    # and the bulletin's charts plot no suppressed month
    trend = T.trend()
    for indicator in trend.indicators:
        for point, value in zip(trend.points, charts.series(trend, indicator), strict=True):
            assert (
                math.isnan(value) == point.cells[indicator.key].suppressed or point.cells[indicator.key].value is None
            )


def test_a_rate_without_a_denominator_is_a_dash_not_zero(tables):
    table = tables[1]
    minutes = BY_KEY["chain_s1_median_minutes"]
    row = table.rows[2]  # 柳树村小学: no incident, no time to tell
    assert layout.value(row.cells[minutes.key], minutes, table.threshold) == "—"
    rate = BY_KEY["archive_rate"]
    assert layout.text(Cell(value=None, numerator=0, denominator=0), rate, 5) == "—"


def test_charts_without_a_chinese_font_number_their_series_and_the_caption_names_them():
    made = charts.trend_charts(T.trend(), font=None)
    assert made[0].title == "建档（比率）月度趋势"
    assert made[1].title == "帮扶关爱（比率）月度趋势：1 谈心完成率；2 家访完成率"
    assert made[2].title == "留守儿童数（人）月度趋势"
    with Image.open(io.BytesIO(made[0].png)) as image:
        assert image.format == "PNG"


@pytest.mark.parametrize(
    ("values", "area", "floor", "below", "under"),
    [
        # (unit rates, area rate, floor) → units below the area, units below the floor
        ({"甲": 0.80, "乙": 0.95, "丙": 0.99}, 0.93, 0.9, ["甲"], ["甲"]),
        ({"甲": 0.85, "乙": 0.88}, 0.80, 0.9, [], ["甲", "乙"]),  # all above the area, all under the floor
        ({"甲": None, "乙": 0.70}, 0.93, 0.9, ["乙"], ["乙"]),  # suppressed: not judged
        ({"甲": 0.95}, None, 0.9, None, None),  # the area's own rate suppressed: nothing said
        ({"甲": 0.95, "乙": 0.97}, 0.93, 0.9, None, None),  # nobody lags: no sentence
    ],
)
def test_who_lags(values, area, floor, below, under):
    from api.models.stats import Level, StatsRow

    indicator = BY_KEY["archive_rate"]
    rows = [
        StatsRow(
            unit_id=None,
            unit_name=name,
            level=Level.school,
            cells={"archive_rate": Cell(value=None, suppressed=True) if v is None else Cell(value=v)},
            previous={},
        )
        for name, v in values.items()
    ]
    area_cell = Cell(value=None, suppressed=True) if area is None else Cell(value=area)
    area_row = StatsRow(
        unit_id=None, unit_name="合计", level=Level.county, cells={"archive_rate": area_cell}, previous={}
    )
    units = T.school_table().model_copy(update={"rows": rows, "indicators": [indicator]})
    found = bulletin.lags(units, area_row, floor=floor)
    if below is None:
        assert found == []
        return
    assert [n for n, _ in found[0].below_area] == below
    assert [n for n, _ in found[0].below_floor] == under


def test_a_suppressed_figure_is_told_as_its_mark_with_the_previous_period():
    table = T.school_table()
    row = table.rows[1]  # 石桥镇第二完小: incidents suppressed this quarter, none the last
    incidents = BY_KEY["incidents"]
    assert bulletin.figure(row, incidents, table.threshold) == "突发事件数<5起（按规定不显示具体数字，上期0起）"
    minutes = BY_KEY["chain_s1_median_minutes"]
    # a mark beside a rate or a duration would read as 5% or 5 minutes: the sentence says what is small
    assert bulletin.figure(row, minutes, table.threshold) == "第1步告知用时(中位)按规定不显示（涉及人数或次数少于5）"
    talk = BY_KEY["care_talk_rate"]
    assert (
        bulletin.figure(table.rows[2], talk, table.threshold)
        == "谈心完成率按规定不显示（涉及人数或次数少于5，上期85.00%）"
    )


def test_the_overview_leaves_out_what_has_nothing_to_measure():
    table = T.township_table()
    cells = dict(table.total.cells, chain_s1_median_minutes=Cell(value=None, denominator=0))
    quiet = table.model_copy(update={"total": table.total.model_copy(update={"cells": cells})})
    paragraphs = bulletin.overview(quiet, T.PARTS)
    assert "应急处置：本期无可统计的数据。" in paragraphs
    assert not any("告知用时" in p for p in paragraphs)
    assert paragraphs[0].startswith("基本情况：全县留守儿童数211人（上期213人，比上期减少2人）")


def test_every_charted_trend_is_an_indicator_of_the_registry():
    from api.services.stats.exports import service

    assert service.trend_keys() == list(service.TREND_KEYS)


@pytest.mark.parametrize(
    ("kind", "key", "today", "span"),
    [
        ("quarter", "2026-Q4", "2026-11-24", ("2025-12", "2026-11")),  # running: up to this month
        ("quarter", "2026-Q3", "2026-11-24", ("2025-10", "2026-09")),
        ("year", "2025", "2026-11-24", ("2025-01", "2025-12")),
        ("month", "2026-01", "2026-11-24", ("2025-02", "2026-01")),
        ("quarter", "2000-Q2", "2026-11-24", ("2000-01", "2000-06")),  # nothing before the calendar's first
    ],
)
def test_the_trend_of_an_export_is_the_twelve_months_to_the_periods_end(kind, key, today, span):
    from datetime import date

    from api.models.stats import PeriodKind
    from api.services.stats import periods
    from api.services.stats.exports import service

    period = periods.parse(PeriodKind(kind), key)
    assert service.trend_span(period, date.fromisoformat(today)) == span


def test_the_bulletin_tells_one_breakdown_of_a_count_and_leaves_the_others_to_the_tables():
    from api.services.stats import indicators as registry
    from api.services.stats.exports import service

    parts, quiet = service.bulletin_parts()
    assert parts["incidents"] == list(registry.PARTITIONS["incidents_by_category"])
    assert parts["left_behind"] == list(registry.PARTITIONS["by_parents"])
    assert set(registry.PARTITIONS["incidents_by_severity"]) <= quiet
    assert set(registry.PARTITIONS["by_sex"]) <= quiet


def test_a_long_list_of_lagging_units_names_the_ten_lowest_and_counts_all():
    from api.models.stats import Level, StatsRow

    indicator = BY_KEY["archive_rate"]
    rows = [
        StatsRow(
            unit_id=None,
            unit_name=f"第{n:02d}小学",
            level=Level.school,
            cells={"archive_rate": Cell(value=0.5 + n / 100)},
            previous={},
        )
        for n in range(12, 0, -1)
    ]
    area = StatsRow(
        unit_id=None, unit_name="合计", level=Level.county, cells={"archive_rate": Cell(value=0.95)}, previous={}
    )
    units = T.school_table().model_copy(update={"rows": rows, "indicators": [indicator]})
    (sentence,) = bulletin.lag_paragraphs(units, area)
    named = [f"第{n:02d}小学（{50 + n:.1f}%）" for n in range(1, 11)]
    assert sentence.startswith(f"建档率：全县为95.0%，低于全县水平的有12所学校：{'、'.join(named)}等；")
    assert "第11小学" not in sentence.split("；")[0]
    assert sentence.endswith("低于90%的有12所学校：" + "、".join(f"第{n:02d}小学" for n in range(1, 11)) + "等。")
