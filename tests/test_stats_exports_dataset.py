"""The exports of the hand-counted county (``tests/stats_dataset.py``: incidents with their chain's times,
aid, proxy parents, classes) with a threshold of 2, so that single children are hidden and the rest shown:
every figure of every file against ``GET /stats/table`` for the same caller and period."""

import csv
import io

import docx
import openpyxl
import pytest

from tests.conftest import make_test_settings
from tests.stats_dataset import build_dataset
from tests.test_stats_exports_api import check_level_sheet, csv_columns, expected_text, get_table, header


@pytest.fixture
def settings(fake_providers):
    return make_test_settings(stats_suppression_threshold=2)


async def test_the_hand_counted_county_reads_the_same_in_every_file(client, world, app):
    await build_dataset(app, client, world)
    bureau = world.headers("bureau")

    r = await client.get("/stats/export.xlsx", params={"key": "2026-11"}, headers=bureau)
    assert r.status_code == 200, r.text
    book = openpyxl.load_workbook(io.BytesIO(r.content))
    shown = suppressed = 0
    for sheet_name, level in (("县", "county"), ("乡镇", "township"), ("学校", "school")):
        table = await get_table(client, world, "bureau", level=level, period="month", key="2026-11")
        assert table["threshold"] == 2
        check_level_sheet(book[sheet_name], table)
        for row in table["rows"]:
            for c in row["cells"].values():
                suppressed += c["suppressed"]
                shown += c["value"] is not None
    assert suppressed > 0 and shown > 50
    assert "“<2”" in book["学校"]["A2"].value
    # the chain's times are the dataset's: in November, step 1 told after 12, 20 (school 1) and 5 minutes (school
    # 2: one step, hidden, and school 1's two with it). The county's worst, 20, is school 1's, which no table
    # shows: shown, it would be a hidden school's; so it is hidden too. The median is no one school's.
    county = await get_table(client, world, "bureau", level="county", period="month", key="2026-11")
    worst = county["total"]["cells"]["chain_s1_worst_minutes"]
    assert worst == {"value": None, "numerator": None, "denominator": None, "suppressed": True}
    median = county["total"]["cells"]["chain_s1_median_minutes"]
    assert median == {"value": 12, "numerator": None, "denominator": 3, "suppressed": False}

    r = await client.get(
        "/stats/export.csv", params={"level": "class", "key": "2026-11"}, headers=world.headers("admin1")
    )
    assert r.status_code == 200, r.text
    table = await get_table(client, world, "admin1", level="class", period="month", key="2026-11")
    rows = list(csv.reader(io.StringIO(r.content.decode("utf-8-sig"))))
    assert rows[0][:3] == ["序号", "班级", "所属学校"]
    columns = csv_columns(rows[0], table)
    for line, row in zip(rows[1:], [*table["rows"], table["total"]], strict=True):
        for n, (indicator, previous) in columns.items():
            source = (row["previous"] if previous else row["cells"])[indicator["key"]]
            assert line[n] == expected_text(source, indicator, table["threshold"]), (row["unit_name"], indicator)

    r = await client.get("/stats/bulletin.docx", params={"period": "quarter", "key": "2026-Q4"}, headers=bureau)
    assert r.status_code == 200, r.text
    document = docx.Document(io.BytesIO(r.content))
    townships = await get_table(client, world, "bureau", level="township", period="quarter", key="2026-Q4")
    schools = await get_table(client, world, "bureau", level="school", period="quarter", key="2026-Q4")
    text = "\n".join(p.text for p in document.paragraphs)
    incidents = townships["total"]["cells"]["incidents"]["value"]
    assert f"突发事件数{incidents}起" in text
    for word in document.tables:
        cells = [[c.text for c in row.cells] for row in word.rows]
        table = townships if cells[0][1] == "乡镇" else schools
        indicators = [i for i in table["indicators"] if i["group"] != "结构"]
        start = next(n for n, i in enumerate(indicators) if cells[0][2].endswith(header(i)))
        chunk = indicators[start : start + len(cells[0]) - 2]
        for line, row in zip(cells[1:], [*table["rows"], table["total"]], strict=True):
            assert line[2:] == [expected_text(row["cells"][i["key"]], i, table["threshold"]) for i in chunk]
