"""The statistics exports through the API: each file holds exactly the figures and suppression marks that
``GET /stats/table`` and ``GET /stats/trend`` answer for the same data, period and caller; the scope is the
caller's area; every export is audited, durably before the file leaves (checked through a real server)."""

import csv
import io
import re
from datetime import UTC, date, datetime
from urllib.parse import quote

import docx
import httpx
import openpyxl
import pytest
from sqlalchemy import select

from api.db import scoped_session
from api.models.audit import AuditEntry
from api.models.children import Child, Sex
from api.scoping import SYSTEM

XLSX = "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet"
DOCX = "application/vnd.openxmlformats-officedocument.wordprocessingml.document"


async def seed(app, world, client) -> None:
    """School 1: twelve left-behind children and three others, some talks this month; school 2: three
    left-behind children (fewer than five: suppressed, with what would give them away)."""
    async with scoped_session(app.state.sessionmaker, SYSTEM) as s:
        kids = []
        for school, klass, flags in (
            ("school1", "class11", [True] * 7 + [False] * 2),
            ("school1", "class12", [True] * 5 + [False]),
            ("school2", "class21", [True] * 3),
        ):
            for i, left_behind in enumerate(flags):
                kids.append(
                    Child(
                        school_id=world[school],
                        class_id=world[klass],
                        name=f"学生{school[-1]}{klass[-2:]}{i}",
                        sex=Sex.female if i % 2 else Sex.male,
                        birth_date=date(2015 + i % 4, 3, 1 + i),
                        is_left_behind=left_behind,
                        # on the roster since the start of term (the statistics count the roster as of a day)
                        created_at=datetime(2026, 9, 1, tzinfo=UTC),
                    )
                )
        s.add_all(kids)
        await s.flush()
        talked = [str(k.id) for k in kids if k.school_id == world["school1"] and k.is_left_behind][:8]
    for child in talked:
        body = {
            "kind": "talk",
            "occurred_on": "2026-11-20",
            "content": {"place": "教室", "topics": "学习", "mood": "good"},
        }
        r = await client.post(f"/children/{child}/care-records", json=body, headers=world.headers("admin1"))
        assert r.status_code == 201, r.text


def expected_value(cell: dict, indicator: dict, threshold: int):
    """The spreadsheet value of an API cell, by the issue's rules."""
    if cell["suppressed"]:
        return f"<{threshold}"
    if cell["value"] is None:
        return "—"
    if indicator["kind"] == "rate":
        return round(cell["value"], indicator["digits"] + 2)
    if indicator["kind"] == "minutes" and indicator["digits"]:
        return round(cell["value"], indicator["digits"])
    return int(round(cell["value"]))


def expected_text(cell: dict, indicator: dict, threshold: int) -> str:
    shown = expected_value(cell, indicator, threshold)
    if isinstance(shown, str):
        return shown
    if indicator["kind"] == "rate":
        return f"{cell['value'] * 100:.{indicator['digits']}f}%"
    if isinstance(shown, float):
        return f"{shown:.{indicator['digits']}f}"
    return str(shown)


def header(indicator: dict) -> str:
    return f"{indicator['name']}（{indicator['unit']}）"


def sheet_columns(sheet, table: dict) -> dict[int, tuple[dict, bool]]:
    """Column → (indicator, previous?): the table's indicators in their order, each head (row 4) with its
    unit, 本期 / 上期 (row 5) under those compared with the previous period."""
    first = next(c for c in range(1, sheet.max_column + 1) if sheet.cell(row=4, column=c).value is not None)
    columns: dict[int, tuple[dict, bool]] = {}
    pending = list(table["indicators"])
    current = None
    for column in range(first, sheet.max_column + 1):
        head = sheet.cell(row=4, column=column).value
        if head is not None:
            current = pending.pop(0)
            assert head == header(current)
        columns[column] = (current, sheet.cell(row=5, column=column).value == "上期")
    assert not pending
    return columns


def check_level_sheet(sheet, table: dict) -> int:
    """Every figure of a level sheet against the API's table; returns how many were compared."""
    columns = sheet_columns(sheet, table)
    rows = [*table["rows"], table["total"]]
    assert sheet.max_row == 5 + len(rows)
    compared = 0
    for offset, row in enumerate(rows):
        line = 6 + offset
        assert sheet.cell(row=line, column=2).value == ("合计" if row is table["total"] else row["unit_name"])
        for column, (indicator, previous) in columns.items():
            source = (row["previous"] if previous else row["cells"])[indicator["key"]]
            want = expected_value(source, indicator, table["threshold"])
            assert sheet.cell(row=line, column=column).value == want, (row["unit_name"], indicator["key"], previous)
            compared += 1
    return compared


def csv_columns(head: list[str], table: dict) -> dict[int, tuple[dict, bool]]:
    """The same for a CSV's single header row: each head ends with the indicator's name and unit (a
    category is prefixed with its breakdown, 性别：男（人）), 上期 before the previous period's."""
    columns: dict[int, tuple[dict, bool]] = {}
    pending = list(table["indicators"])
    current = None
    for n, h in enumerate(head[3:], start=3):
        previous = h.startswith("上期")
        if not previous:
            current = pending.pop(0)
        assert current is not None and h.endswith(header(current)), (h, current)
        columns[n] = (current, previous)
    assert not pending
    return columns


async def get_table(client, world, who, **params) -> dict:
    r = await client.get("/stats/table", params=params, headers=world.headers(who))
    assert r.status_code == 200, r.text
    return r.json()


def disposition_name(response: httpx.Response) -> str:
    found = re.search(r"filename\*=UTF-8''([^;]+)", response.headers["content-disposition"])
    assert found, response.headers["content-disposition"]
    return found.group(1)


async def test_the_workbook_holds_the_apis_tables_and_trend(client, world, app, system_session):
    await seed(app, world, client)
    r = await client.get(
        "/stats/export.xlsx", params={"period": "month", "key": "2026-11"}, headers=world.headers("bureau")
    )
    assert r.status_code == 200, r.text
    assert r.headers["content-type"] == XLSX
    assert disposition_name(r) == quote("青山县留守儿童关爱工作统计表（2026年11月）.xlsx")
    assert 'filename="statistics-2026-11.xlsx"' in r.headers["content-disposition"]
    book = openpyxl.load_workbook(io.BytesIO(r.content))
    assert book.sheetnames == ["县", "乡镇", "学校", "月度趋势", "图表数据"]
    compared = 0
    suppressed = 0
    for sheet_name, level in (("县", "county"), ("乡镇", "township"), ("学校", "school")):
        table = await get_table(client, world, "bureau", level=level, period="month", key="2026-11")
        compared += check_level_sheet(book[sheet_name], table)
        suppressed += sum(c["suppressed"] for row in table["rows"] for c in row["cells"].values())
    assert compared > 500
    assert suppressed > 0, "school 2's three children are suppressed, so the check covers the marks"
    assert any(v == "<5" for row in book["学校"].iter_rows(values_only=True) for v in row)
    # the numbers are the records' own: twelve left-behind children in school 1
    school_sheet = book["学校"]
    keys = [school_sheet.cell(row=4, column=c).value for c in range(1, school_sheet.max_column + 1)]
    lb_col = keys.index("留守儿童数（人）") + 1
    by_name = {school_sheet.cell(row=n, column=2).value: n for n in range(6, school_sheet.max_row + 1)}
    # school 2's three are hidden, and so are school 1's twelve, or the total would give the three away
    assert school_sheet.cell(row=by_name["柳河乡中心小学"], column=lb_col).value == "<5"
    assert school_sheet.cell(row=by_name["石桥镇中心小学"], column=lb_col).value == "<5"
    assert school_sheet.cell(row=by_name["合计"], column=lb_col).value == 15
    assert book["县"].cell(row=6, column=lb_col - 1).value == 15  # no parent column on the county sheet

    # the trend sheet: the API's trend for the twelve months to the period's end
    trend_sheet = book["月度趋势"]
    heads = [trend_sheet.cell(row=3, column=c).value for c in range(2, trend_sheet.max_column + 1)]
    assert heads[0] == "留守儿童数（人）"
    r = await client.get(
        "/stats/trend",
        params={"from": "2025-12", "to": "2026-11", "indicators": "left_behind,archive_rate,incidents"},
        headers=world.headers("bureau"),
    )
    assert r.status_code == 200, r.text
    trend = r.json()
    for indicator in trend["indicators"]:
        column = 2 + heads.index(header(indicator))
        for offset, point in enumerate(trend["points"]):
            assert trend_sheet.cell(row=4 + offset, column=1).value == point["period"]["label"]
            cell = point["cells"][indicator["key"]]
            want = expected_value(cell, indicator, trend["threshold"])
            assert trend_sheet.cell(row=4 + offset, column=column).value == want
    assert len(trend_sheet._charts) >= 3

    entry = (await system_session.execute(select(AuditEntry).where(AuditEntry.action == "stats.export"))).scalar_one()
    assert entry.account_id == world["bureau"] and entry.resource_id == str(world["county"])
    assert entry.changes["format"] == "xlsx" and entry.changes["period"] == "2026-11"
    assert entry.changes["levels"] == ["county", "township", "school"]


async def test_the_csv_holds_the_apis_table(client, world, app):
    await seed(app, world, client)
    params = {"level": "school", "period": "quarter", "key": "2026-Q4"}
    r = await client.get("/stats/export.csv", params=params, headers=world.headers("bureau"))
    assert r.status_code == 200, r.text
    assert r.headers["content-type"].startswith("text/csv")
    assert disposition_name(r) == quote("青山县各学校统计表（2026年第四季度）.csv")
    assert r.content.startswith(b"\xef\xbb\xbf")
    table = await get_table(client, world, "bureau", **params)
    rows = list(csv.reader(io.StringIO(r.content.decode("utf-8-sig"))))
    head = rows[0]
    assert head[:3] == ["序号", "学校", "所属乡镇"]
    columns = csv_columns(head, table)
    assert "性别：男（人）" in head and "学段：未分班（人）" in head and "年级：未分班（人）" in head
    assert len(rows) == 1 + len(table["rows"]) + 1
    suppressed = 0
    for line, row in zip(rows[1:], [*table["rows"], table["total"]], strict=True):
        assert line[1] == ("合计" if row is table["total"] else row["unit_name"])
        for n, (indicator, previous) in columns.items():
            source = (row["previous"] if previous else row["cells"])[indicator["key"]]
            assert line[n] == expected_text(source, indicator, table["threshold"]), (row["unit_name"], indicator)
            suppressed += source["suppressed"]
    assert suppressed > 0
    assert {line[1]: line[2] for line in rows[1:-1]} == {"石桥镇中心小学": "石桥镇", "柳河乡中心小学": "柳河乡"}


async def test_the_bulletin_holds_the_apis_tables(client, world, app, system_session):
    await seed(app, world, client)
    r = await client.get(
        "/stats/bulletin.docx", params={"period": "quarter", "key": "2026-Q4"}, headers=world.headers("bureau")
    )
    assert r.status_code == 200, r.text
    assert r.headers["content-type"] == DOCX
    assert disposition_name(r) == quote("青山县2026年第四季度留守儿童关爱工作季度通报.docx")
    document = docx.Document(io.BytesIO(r.content))
    paragraphs = [p.text for p in document.paragraphs]
    assert paragraphs[0] == "关于2026年第四季度青山县留守儿童关爱工作情况的通报"
    townships = await get_table(client, world, "bureau", level="township", period="quarter", key="2026-Q4")
    schools = await get_table(client, world, "bureau", level="school", period="quarter", key="2026-Q4")
    total = townships["total"]
    lb = total["cells"]["left_behind"]["value"]
    assert f"全县留守儿童数{lb}人" in "\n".join(paragraphs)
    # every Word table against the API's table of its level, column by column
    word_tables = [[[c.text for c in row.cells] for row in t.rows] for t in document.tables]
    checked = 0
    for word in word_tables:
        table = townships if word[0][1] == "乡镇" else schools
        by_header = {i["key"]: i for i in table["indicators"]}
        shown = [i for i in table["indicators"] if i["group"] != "结构"]
        start = next(n for n, i in enumerate(shown) if word[0][2].endswith(header(i)))
        indicators = shown[start : start + len(word[0]) - 2]
        assert all(h.endswith(header(i)) for h, i in zip(word[0][2:], indicators, strict=True))
        assert all(i["key"] in by_header for i in indicators)
        for line, row in zip(word[1:], [*table["rows"], table["total"]], strict=True):
            assert line[1] == ("合计" if row is table["total"] else row["unit_name"])
            assert line[2:] == [expected_text(row["cells"][i["key"]], i, table["threshold"]) for i in indicators]
            checked += len(indicators)
    shown = [i for i in townships["indicators"] if i["group"] != "结构"]
    assert checked == len(shown) * (len(townships["rows"]) + 1 + len(schools["rows"]) + 1)
    assert len(document.inline_shapes) >= 3  # the monthly-trend charts
    entry = (await system_session.execute(select(AuditEntry).where(AuditEntry.action == "stats.export"))).scalar_one()
    assert entry.changes["format"] == "docx" and entry.changes["levels"] == ["township", "school"]


async def test_the_bulletin_defaults_to_the_last_complete_period_and_takes_quarters_and_years_only(client, world):
    r = await client.get("/stats/bulletin.docx", params={"period": "year"}, headers=world.headers("bureau"))
    assert r.status_code == 200, r.text
    assert disposition_name(r) == quote("青山县2025年留守儿童关爱工作年度通报.docx")
    r = await client.get("/stats/bulletin.docx", params={"period": "month"}, headers=world.headers("bureau"))
    assert r.status_code == 422
    r = await client.get(
        "/stats/bulletin.docx", params={"period": "quarter", "key": "2026-13"}, headers=world.headers("bureau")
    )
    assert r.status_code == 422 and r.json()["error"]["code"] == "period_invalid"
    r = await client.get(
        "/stats/bulletin.docx", params={"period": "quarter", "key": "2027-Q2"}, headers=world.headers("bureau")
    )
    assert r.status_code == 422 and r.json()["error"]["code"] == "period_in_future"


@pytest.mark.parametrize(
    ("who", "sheets", "schools"),
    [
        ("official1", ["乡镇", "学校"], ["石桥镇中心小学"]),
        ("admin2", ["学校", "班级"], ["柳河乡中心小学"]),
    ],
)
async def test_each_caller_exports_their_own_area(client, world, app, who, sheets, schools):
    await seed(app, world, client)
    r = await client.get("/stats/export.xlsx", params={"key": "2026-11"}, headers=world.headers(who))
    assert r.status_code == 200, r.text
    book = openpyxl.load_workbook(io.BytesIO(r.content))
    assert book.sheetnames == [*sheets, "月度趋势", "图表数据"]
    school_sheet = book["学校"]
    names = [school_sheet.cell(row=n, column=2).value for n in range(6, school_sheet.max_row)]
    assert names == schools
    level = "school" if who == "official1" else "class"
    table = await get_table(client, world, who, level=level, period="month", key="2026-11")
    check_level_sheet(book[sheets[-1] if level == "class" else "学校"], table)


async def test_scope_refusals_have_codes(client, world):
    r = await client.get("/stats/export.xlsx", headers=world.headers("teacher1"))
    assert r.status_code == 403 and r.json()["error"]["code"] == "role_forbidden"
    r = await client.get(
        "/stats/export.csv",
        params={"level": "school", "area_id": str(world["county"])},
        headers=world.headers("other_bureau"),
    )
    assert r.status_code == 404 and r.json()["error"]["code"] == "area_not_found"
    r = await client.get(
        "/stats/export.csv",
        params={"level": "school", "area_id": str(world["county"])},
        headers=world.headers("official1"),
    )
    assert r.status_code == 404 and r.json()["error"]["code"] == "area_not_found"
    r = await client.get("/stats/bulletin.docx", params={"period": "year"}, headers=world.headers("platform"))
    assert r.status_code == 422 and r.json()["error"]["code"] == "stats_area_required"
    r = await client.get("/stats/export.csv", params={"level": "class"}, headers=world.headers("bureau"))
    assert r.status_code == 422 and r.json()["error"]["code"] == "class_needs_school"
    r = await client.get("/stats/export.xlsx")
    assert r.status_code == 401


async def test_the_export_is_audited_before_the_file_leaves(live_url, world, app):
    """Through a real server: the audit entry is durable by the time the client holds the file."""
    async with httpx.AsyncClient(base_url=live_url, timeout=60) as http:
        r = await http.get(
            "/stats/export.csv",
            params={"level": "township", "key": "2026-11"},
            headers=world.headers("official2"),
        )
        assert r.status_code == 200, r.text
    async with scoped_session(app.state.sessionmaker, SYSTEM) as s:
        entries = (await s.execute(select(AuditEntry).where(AuditEntry.action == "stats.export"))).scalars().all()
    assert [(e.account_id, e.resource_type, e.resource_id) for e in entries] == [
        (world["official2"], "township", str(world["township2"]))
    ]
