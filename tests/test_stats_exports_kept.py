"""Finished exports kept by what they were written from (``api/services/stats/exports/kept.py``): the same
download again is served from the kept file and still audited; a change in the rows makes a new file; a
caller of another scope never gets this one's.

In front of these files are the answers kept in the database (``api/services/stats/answers.py``), served as
they are while their ``as_of`` is within the allowed staleness: these tests let them lapse (the clock moved on,
or the row gone — another process) to reach the files."""

import csv
import io
from datetime import UTC, date, datetime, timedelta

import pytest
from sqlalchemy import select, text

from api.db import scoped_session
from api.models.audit import AuditEntry
from api.models.children import Child, Sex
from api.scoping import SYSTEM
from tests.conftest import make_test_settings
from tests.test_stats_exports_api import csv_columns, expected_text, get_table, seed


@pytest.fixture
def export_dir(tmp_path):
    return tmp_path / "exports"


@pytest.fixture
def settings(fake_providers, export_dir):
    return make_test_settings(stats_export_dir=str(export_dir))


def kept_files(export_dir) -> list[str]:
    return sorted(p.name for p in export_dir.iterdir() if not p.name.startswith(".")) if export_dir.exists() else []


async def exports_audited(app) -> int:
    async with scoped_session(app.state.sessionmaker, SYSTEM) as s:
        return len((await s.execute(select(AuditEntry).where(AuditEntry.action == "stats.export"))).scalars().all())


async def forget_answers(app) -> None:
    """The answers kept in the database gone (as for a process that never built them): the files are next."""
    async with scoped_session(app.state.sessionmaker, SYSTEM) as s:
        await s.execute(text("DELETE FROM stats_answer"))


def past_the_bound(clock) -> None:
    clock.advance(timedelta(seconds=301))


def check_csv(content: bytes, table: dict) -> None:
    rows = list(csv.reader(io.StringIO(content.decode("utf-8-sig"))))
    columns = csv_columns(rows[0], table)
    for line, row in zip(rows[1:], [*table["rows"], table["total"]], strict=True):
        for n, (indicator, previous) in columns.items():
            source = (row["previous"] if previous else row["cells"])[indicator["key"]]
            assert line[n] == expected_text(source, indicator, table["threshold"]), (row["unit_name"], indicator)


async def test_the_same_download_again_is_served_from_the_kept_file_and_audited(client, world, app, export_dir):
    await seed(app, world, client)
    bureau = world.headers("bureau")
    first = await client.get("/stats/export.xlsx", params={"key": "2026-11"}, headers=bureau)
    assert first.status_code == 200, first.text
    [name] = kept_files(export_dir)
    assert (export_dir / name).read_bytes() == first.content
    # Served from it: the kept file is what leaves (it is overwritten here with a marker to tell).
    (export_dir / name).write_bytes(first.content + b"kept")
    await forget_answers(app)
    again = await client.get("/stats/export.xlsx", params={"key": "2026-11"}, headers=bureau)
    assert again.status_code == 200 and again.content == first.content + b"kept"
    assert kept_files(export_dir) == [name]
    assert await exports_audited(app) == 2  # every download audited, the kept one too


async def test_a_change_in_the_rows_makes_a_new_file(client, world, app, export_dir, clock):
    await seed(app, world, client)
    params = {"level": "school", "period": "month", "key": "2026-11"}
    bureau = world.headers("bureau")
    before = await client.get("/stats/export.csv", params=params, headers=bureau)
    assert before.status_code == 200, before.text
    # Two more left-behind children at school 2 (3 → 5: no longer a small count).
    async with scoped_session(app.state.sessionmaker, SYSTEM) as s:
        for i in range(2):
            s.add(
                Child(
                    school_id=world["school2"],
                    class_id=world["class21"],
                    name=f"新生{i}",
                    sex=Sex.male,
                    birth_date=date(2016, 4, 1),
                    created_at=datetime(2026, 9, 1, tzinfo=UTC),
                )
            )
    # Within the allowed staleness the kept answer is served as it is; past it, the new rows make a new file.
    within = await client.get("/stats/export.csv", params=params, headers=bureau)
    assert within.status_code == 200 and within.content == before.content
    past_the_bound(clock)
    after = await client.get("/stats/export.csv", params=params, headers=bureau)
    assert after.status_code == 200, after.text
    assert after.content != before.content
    check_csv(after.content, await get_table(client, world, "bureau", **params))
    assert len(kept_files(export_dir)) == 2


async def test_a_caller_of_another_scope_never_gets_this_ones_file(client, world, app, export_dir):
    """The bureau and 柳河乡's official ask for the same area's school table: each gets a file of their own,
    holding their own table's cells."""
    await seed(app, world, client)
    params = {"level": "school", "period": "month", "key": "2026-11", "area_id": str(world["township2"])}
    for who in ("bureau", "official2"):
        r = await client.get("/stats/export.csv", params=params, headers=world.headers(who))
        assert r.status_code == 200, r.text
        check_csv(r.content, await get_table(client, world, who, **params))
    assert len(kept_files(export_dir)) == 2
    # A school admin of another school asking for it: refused, nothing served from the kept files.
    r = await client.get("/stats/export.csv", params=params, headers=world.headers("admin1"))
    assert r.status_code == 404, r.text


async def test_kept_figures_key_the_file_by_their_versions_and_a_refresh_makes_a_new_one(
    client, world, app, export_dir, clock
):
    """With every school's figures kept (the refresher has run), a download is keyed by the kept rows'
    versions — no table is built to find the file kept; a change counted by the refresher (new row versions)
    makes a new file, holding the new table."""
    from api.services.stats.preaggregate import refresh

    await seed(app, world, client)
    await refresh(app.state.sessionmaker, clock=clock)
    params = {"level": "school", "period": "quarter", "key": "2026-Q4"}
    bureau = world.headers("bureau")
    first = await client.get("/stats/export.csv", params=params, headers=bureau)
    assert first.status_code == 200, first.text
    [name] = kept_files(export_dir)
    assert name.startswith("csv-v-")  # keyed by the versions
    check_csv(first.content, await get_table(client, world, "bureau", **params))
    again = await client.get("/stats/export.csv", params=params, headers=bureau)
    assert again.content == first.content and kept_files(export_dir) == [name]
    # A school admin's workbook (the school and its classes, the trend): keyed by the versions too.
    for _ in range(2):
        r = await client.get("/stats/export.xlsx", params={"key": "2026-11"}, headers=world.headers("admin1"))
        assert r.status_code == 200, r.text
    workbooks = [n for n in kept_files(export_dir) if n.startswith("xlsx-")]
    assert len(workbooks) == 1 and workbooks[0].startswith("xlsx-v-")
    async with scoped_session(app.state.sessionmaker, SYSTEM) as s:
        for i in range(2):
            s.add(
                Child(
                    school_id=world["school2"],
                    class_id=world["class21"],
                    name=f"新生{i}",
                    sex=Sex.male,
                    birth_date=date(2016, 4, 1),
                    created_at=datetime(2026, 9, 1, tzinfo=UTC),
                )
            )
    past_the_bound(clock)
    await refresh(app.state.sessionmaker, clock=clock)
    after = await client.get("/stats/export.csv", params=params, headers=bureau)
    assert after.status_code == 200, after.text
    assert after.content != first.content
    check_csv(after.content, await get_table(client, world, "bureau", **params))
    assert len([n for n in kept_files(export_dir) if n.startswith("csv-")]) == 2
    assert await exports_audited(app) == 5
