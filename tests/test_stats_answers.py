"""Answers kept in the database (``api/services/stats/answers.py``) and their warm-up
(``api/services/stats/warm.py``): a kept answer is served while its ``as_of`` is within the allowed staleness,
even if the figures moved, and is what a fresh build gives; past the bound it is rebuilt; a caller of another
scope never gets it; the warm-up builds what was asked and the standard tables; export bytes equal a fresh
build's."""

import json
import uuid
import zlib
from datetime import UTC, date, datetime, timedelta

import pytest
from sqlalchemy import text

from api.db import scoped_session
from api.models.accounts import Account, Role
from api.models.children import Child, Sex
from api.models.stats import Level, PeriodKind
from api.scoping import SYSTEM, Principal
from api.services.stats import build_table, periods
from api.services.stats.answers import pack_json
from api.services.stats.preaggregate import refresh
from api.services.stats.warm import warm
from tests.conftest import make_test_settings
from tests.factories import login_token
from tests.test_stats_exports_api import seed

TABLE = {"level": "school", "period": "month", "key": "2026-11"}


@pytest.fixture
def settings(fake_providers, tmp_path):
    return make_test_settings(stats_export_dir=str(tmp_path / "exports"))


async def kept_rows(app) -> list[dict]:
    async with scoped_session(app.state.sessionmaker, SYSTEM) as s:
        rows = await s.execute(
            text("SELECT key, kind, scope_role, scope_id, request, as_of, asked_at FROM stats_answer")
        )
        return [dict(r._mapping) for r in rows]


async def mark_bodies(app, marker: str) -> None:
    """Every kept table's body changed to tell, when it is served, that it was served as kept."""
    async with scoped_session(app.state.sessionmaker, SYSTEM) as s:
        for key, body in (await s.execute(text("SELECT key, body FROM stats_answer WHERE kind = 'table'"))).all():
            kept = bytes(body)
            table = json.loads(zlib.decompressobj(-zlib.MAX_WBITS).decompress(kept[12:]) + b"}")
            table["area_name"] = marker
            await s.execute(
                text("UPDATE stats_answer SET body = :body WHERE key = :key"),
                {"key": key, "body": pack_json(json.dumps(table).encode())},
            )


async def add_children(app, world, n: int = 2) -> None:
    async with scoped_session(app.state.sessionmaker, SYSTEM) as s:
        for i in range(n):
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
        await s.flush()
        await s.execute(text("UPDATE stats_dirty SET at = :now"), {"now": app.state.clock.now()})


def principal_of(world, who: str) -> Principal:
    """The scope of one of the world's accounts (as the API's principal has it)."""
    if who == "bureau":
        return Principal(account_id=None, role=Role.county_bureau, county_id=world["county"])
    township = {"official1": "township1", "official2": "township2"}[who]
    return Principal(
        account_id=None, role=Role.township_official, county_id=world["county"], township_id=world[township]
    )


async def fresh_table(app, world, who: str, **params) -> dict:
    """The table built now, without the kept answers (what a fresh build gives)."""
    principal = principal_of(world, who)
    async with scoped_session(app.state.sessionmaker, principal) as s:
        table = await build_table(
            s,
            principal,
            level=Level(params["level"]),
            period=periods.parse(PeriodKind(params["period"]), params["key"]),
            area_id=uuid.UUID(params["area_id"]) if "area_id" in params else None,
            indicators=None,
            now=app.state.clock.now(),
            threshold=app.state.settings.stats_suppression_threshold,
        )
    return json.loads(table.model_dump_json())


async def test_a_kept_answer_is_what_a_fresh_build_gives_and_is_served_within_the_bound(client, world, app, clock):
    await seed(app, world, client)
    await refresh(app.state.sessionmaker, clock=clock)
    bureau = world.headers("bureau")
    first = await client.get("/stats/table", params=TABLE, headers=bureau)
    assert first.status_code == 200, first.text
    [row] = await kept_rows(app)
    assert row["kind"] == "table" and row["scope_role"] == "county_bureau" and row["scope_id"] == world["county"]
    # The kept answer, served again, is the fresh build for the same versions (as_of included).
    again = await client.get("/stats/table", params=TABLE, headers=bureau)
    assert again.json() == first.json() == await fresh_table(app, world, "bureau", **TABLE)
    # A change: within the bound the kept answer is still served (its as_of says how old it is) …
    await add_children(app, world)
    await mark_bodies(app, "kept")
    within = await client.get("/stats/table", params=TABLE, headers=bureau)
    assert within.json()["area_name"] == "kept" and within.json()["as_of"] == first.json()["as_of"]
    # … past it, it is built anew, with the change (school 2's three children are now five).
    clock.advance(timedelta(seconds=301))
    after = await client.get("/stats/table", params=TABLE, headers=bureau)
    body = after.json()
    assert body["area_name"] != "kept" and body["as_of"] > first.json()["as_of"]
    assert body == await fresh_table(app, world, "bureau", **TABLE)
    school2 = next(r for r in body["rows"] if r["unit_id"] == str(world["school2"]))
    assert school2["cells"]["left_behind"]["value"] == 5


async def test_past_the_bound_unchanged_figures_are_restamped_not_rebuilt(client, world, app, clock):
    await seed(app, world, client)
    await refresh(app.state.sessionmaker, clock=clock)
    bureau = world.headers("bureau")
    first = (await client.get("/stats/table", params=TABLE, headers=bureau)).json()
    await mark_bodies(app, "kept")
    clock.advance(timedelta(seconds=301))
    again = (await client.get("/stats/table", params=TABLE, headers=bureau)).json()
    # The same kept rows' versions: the kept body, with the as_of a fresh build would say (now: nothing pending).
    assert again["area_name"] == "kept"
    assert again["as_of"] > first["as_of"]
    assert datetime.fromisoformat(again["as_of"]) == clock.now()


async def test_another_scopes_kept_answer_is_never_served(client, world, app, clock):
    """The bureau and 柳河乡's official ask for the same area (township 2, its schools): each its own answer;
    an official of another township is refused; row security keeps each to its own rows."""
    await seed(app, world, client)
    params = {**TABLE, "area_id": str(world["township2"])}
    r = await client.get("/stats/table", params=params, headers=world.headers("bureau"))
    assert r.status_code == 200, r.text
    await mark_bodies(app, "the bureau's")
    mine = await client.get("/stats/table", params=params, headers=world.headers("official2"))
    assert mine.status_code == 200, mine.text
    assert mine.json()["area_name"] != "the bureau's"
    assert mine.json() == await fresh_table(app, world, "official2", **params)
    assert {r["scope_role"] for r in await kept_rows(app)} == {"county_bureau", "township_official"}
    other = await client.get("/stats/table", params=params, headers=world.headers("official1"))
    assert other.status_code == 404, other.text
    # In the database: a township official's scope reads its own kept answer only.
    async with scoped_session(app.state.sessionmaker, principal_of(world, "official2")) as s:
        seen = (await s.execute(text("SELECT scope_role FROM stats_answer"))).scalars().all()
    assert seen == ["township_official"]
    async with scoped_session(app.state.sessionmaker, principal_of(world, "official1")) as s:
        assert (await s.execute(text("SELECT count(*) FROM stats_answer"))).scalar() == 0


async def test_the_warm_up_builds_what_was_asked_and_the_standard_tables(client, world, app, clock, settings):
    await seed(app, world, client)
    await refresh(app.state.sessionmaker, clock=clock)
    # A fresh deploy: nothing asked yet; the warm-up builds each county's and township's standard table.
    done = await warm(app.state.sessionmaker, clock=clock, settings=settings)
    assert done.get("failed", 0) == 0
    rows = await kept_rows(app)
    standard = {(r["scope_role"], r["scope_id"]) for r in rows}
    assert ("county_bureau", world["county"]) in standard
    assert ("township_official", world["township2"]) in standard
    await mark_bodies(app, "warm")
    month = periods.current(PeriodKind.month, clock.now()).key
    served = await client.get(
        "/stats/table", params={"level": "school", "period": "month", "key": month}, headers=world.headers("bureau")
    )
    assert served.status_code == 200 and served.json()["area_name"] == "warm"  # the bureau's first ask: kept
    # Asked: a trend; then a change and the refresher: the warm-up builds it again (versions moved).
    trend = {"from": "2026-06", "to": "2026-11", "indicators": "left_behind"}
    before = await client.get("/stats/trend", params=trend, headers=world.headers("official2"))
    assert before.status_code == 200, before.text
    asked = {r["key"]: r["asked_at"] for r in await kept_rows(app)}
    await add_children(app, world)
    clock.advance(timedelta(seconds=301))
    await refresh(app.state.sessionmaker, clock=clock)
    done = await warm(app.state.sessionmaker, clock=clock, settings=settings)
    assert done.get("failed", 0) == 0 and done.get("built", 0) >= 1
    # Built by the warm-up, not asked: an answer nobody asks for again ages out of the window.
    assert {r["key"]: r["asked_at"] for r in await kept_rows(app)} == asked
    after = await client.get("/stats/trend", params=trend, headers=world.headers("official2"))
    points = after.json()["points"]
    assert points[-1]["cells"]["left_behind"]["value"] == 5  # the warm-up's build, with the change
    assert after.json()["as_of"] == clock.now().isoformat().replace("+00:00", "Z")


async def test_a_failing_answer_does_not_stop_the_warm_up(client, world, app, clock, settings):
    await seed(app, world, client)
    request = {
        "role": "county_bureau",
        "county_id": str(world["county"]),
        "township_id": None,
        "school_id": None,
        "area_id": str(world["county"]),
        "params": {
            "level": "school",
            "period_kind": "month",
            "period_key": "1999-01",
            "indicators": None,
            "threshold": 5,
        },
    }
    async with scoped_session(app.state.sessionmaker, SYSTEM) as s:
        await s.execute(
            text(
                "INSERT INTO stats_answer (key, kind, scope_role, scope_id, request, body, judged_on, as_of, built_at,"
                " asked_at) VALUES ('broken', 'table', 'county_bureau', :county, CAST(:request AS jsonb), '', :today,"
                " :now, :now, :now)"
            ),
            {
                "county": world["county"],
                "request": json.dumps(request),
                "today": periods.shanghai_date(clock.now()),
                "now": clock.now(),
            },
        )
    done = await warm(app.state.sessionmaker, clock=clock, settings=settings)
    assert done["failed"] == 1 and done["built"] >= 3  # the standard tables still built


async def test_export_bytes_equal_a_fresh_build(client, world, app, clock, tmp_path):
    await seed(app, world, client)
    await refresh(app.state.sessionmaker, clock=clock)
    params = {"level": "school", "period": "quarter", "key": "2026-Q4"}
    bureau = world.headers("bureau")
    kept = await client.get("/stats/export.csv", params=params, headers=bureau)
    again = await client.get("/stats/export.csv", params=params, headers=bureau)
    assert again.content == kept.content
    # Nothing kept, anywhere: a fresh build gives the very bytes.
    async with scoped_session(app.state.sessionmaker, SYSTEM) as s:
        await s.execute(text("DELETE FROM stats_answer"))
    for path in (tmp_path / "exports").iterdir():
        path.unlink()
    fresh = await client.get("/stats/export.csv", params=params, headers=bureau)
    assert fresh.content == kept.content
    # And the audit of every download stays.
    async with scoped_session(app.state.sessionmaker, SYSTEM) as s:
        audited = await s.execute(text("SELECT count(*) FROM audit_log WHERE action = 'stats.export'"))
        assert audited.scalar() == 3


async def test_an_annual_bulletin_reads_the_kept_versions_in_one_query(client, world, app, clock):
    """The year, its months, the year before and its months, the trend's twelve months: every kept version the
    bulletin is computed from, read in one statement (it was one per period: 23 and more)."""
    from sqlalchemy import event

    await seed(app, world, client)
    await refresh(app.state.sessionmaker, clock=clock)
    statements: list[str] = []

    def seen(_conn, _cursor, statement, *_args) -> None:
        statements.append(statement)

    event.listen(app.state.engine.sync_engine, "before_cursor_execute", seen)
    try:
        r = await client.get(
            "/stats/bulletin.docx", params={"period": "year", "key": "2026"}, headers=world.headers("bureau")
        )
    finally:
        event.remove(app.state.engine.sync_engine, "before_cursor_execute", seen)
    assert r.status_code == 200, r.text
    versions = [s for s in statements if "AS row_version" in s and "f.steps" not in s]
    assert len(versions) == 1 and "= ANY(" in versions[0], versions


async def test_a_kept_table_is_sent_as_kept_gzip_or_plain(client, world, app, clock):
    """The kept JSON is compressed once, when built: a client taking gzip gets it as kept (its as_of closing
    the stream), one that does not gets the same JSON plain."""
    await seed(app, world, client)
    bureau = world.headers("bureau")
    zipped = await client.get("/stats/table", params=TABLE, headers={**bureau, "Accept-Encoding": "gzip"})
    assert zipped.status_code == 200 and zipped.headers["content-encoding"] == "gzip"
    plain = await client.get("/stats/table", params=TABLE, headers={**bureau, "Accept-Encoding": "identity"})
    assert plain.status_code == 200 and "content-encoding" not in plain.headers
    assert zipped.json() == plain.json() == json.loads(plain.content)
    assert len(zipped.content) == len(plain.content)  # httpx decoded it
    assert int(zipped.headers["content-length"]) < len(plain.content) / 3


def at_night(hour: int, minute: int = 0, second: int = 0) -> datetime:
    """30 November in Shanghai, ``hour`` (24: midnight into 1 December)."""
    return datetime(2026, 11, 30, tzinfo=periods.SHANGHAI) + timedelta(hours=hour, minutes=minute, seconds=second)


async def set_clock(app, world, clock, moment: datetime) -> None:
    """The clock at ``moment``, and the world's accounts logged in again then (a token lasts minutes)."""
    clock.set(moment)
    async with scoped_session(app.state.sessionmaker, SYSTEM) as s:
        for who in world.tokens:
            account = await s.get_one(Account, world[who])
            world.tokens[who] = await login_token(s, app, account, clock.now())


async def kept_on(app, day: date) -> dict[str, dict]:
    async with scoped_session(app.state.sessionmaker, SYSTEM) as s:
        rows = await s.execute(
            text("SELECT key, kind, request, as_of, built_at FROM stats_answer WHERE judged_on = :day"), {"day": day}
        )
        return {r.key: dict(r._mapping) for r in rows}


async def records_table(app, world, **params) -> dict:
    """The bureau's table built now from the records alone (no kept rows, no kept answer)."""
    principal = principal_of(world, "bureau")
    async with scoped_session(app.state.sessionmaker, principal) as s:
        table = await build_table(
            s,
            principal,
            level=Level(params["level"]),
            period=periods.parse(PeriodKind(params["period"]), params["key"]),
            area_id=None,
            indicators=None,
            now=app.state.clock.now(),
            threshold=app.state.settings.stats_suppression_threshold,
            max_stale=None,
        )
    return json.loads(table.model_dump_json(exclude={"as_of"}))


async def test_tomorrows_answers_are_kept_before_midnight_and_served_at_once_after_it(
    client, world, app, clock, settings
):
    tomorrow = date(2026, 12, 1)
    december = {"level": "school", "period": "month", "key": "2026-12"}
    await set_clock(app, world, clock, at_night(23, 0))
    await seed(app, world, client)
    await refresh(app.state.sessionmaker, clock=clock)
    # 23:00: the bureau asks for November's table.
    asked = await client.get("/stats/table", params=TABLE, headers=world.headers("bureau"))
    assert asked.status_code == 200, asked.text
    # 23:59: the refresher's pass, then the warm-up: tomorrow's answers too (December's standard table, the one
    # asked), judged on tomorrow, beside today's.
    await set_clock(app, world, clock, at_night(23, 59))
    await refresh(app.state.sessionmaker, clock=clock)
    done = await warm(app.state.sessionmaker, clock=clock, settings=settings)
    assert done.get("failed", 0) == 0 and done["tomorrow"] >= 4  # the county's, two townships', the one asked
    last_pass = clock.now()
    ahead = await kept_on(app, tomorrow)
    periods_ahead = {(r["request"]["params"]["period_key"], r["request"]["role"]) for r in ahead.values()}
    assert {("2026-11", "county_bureau"), ("2026-12", "county_bureau"), ("2026-12", "township_official")} <= (
        periods_ahead
    )
    assert all(r["as_of"] <= last_pass and r["built_at"] == last_pass for r in ahead.values())
    assert await kept_on(app, date(2026, 11, 30))  # today's still there, untouched by tomorrow's
    await mark_bodies(app, "kept")
    # 00:00:01: the first asks of the day are served as kept, not built: the marked bodies, the rows unchanged.
    await set_clock(app, world, clock, at_night(24, 0, 1))
    for params in (TABLE, december):
        served = await client.get("/stats/table", params=params, headers=world.headers("bureau"))
        assert served.status_code == 200, served.text
        body = served.json()
        assert body["area_name"] == "kept"
        assert datetime.fromisoformat(body["as_of"]) <= last_pass
        # … and, its area's name aside, what a fresh build from the records gives on the new day.
        fresh = await records_table(app, world, **params)
        assert {**body, "area_name": fresh["area_name"], "as_of": None} == {**fresh, "as_of": None}
    assert {k: r["built_at"] for k, r in (await kept_on(app, tomorrow)).items()} == {
        k: r["built_at"] for k, r in ahead.items()
    }
    # The next warm-up deletes yesterday's answers.
    await warm(app.state.sessionmaker, clock=clock, settings=settings)
    assert await kept_on(app, date(2026, 11, 30)) == {}


async def test_a_change_after_the_last_pass_before_midnight_shows_in_the_as_of(client, world, app, clock, settings):
    await set_clock(app, world, clock, at_night(23, 0))
    await seed(app, world, client)
    await refresh(app.state.sessionmaker, clock=clock)
    assert (await client.get("/stats/table", params=TABLE, headers=world.headers("bureau"))).status_code == 200
    await set_clock(app, world, clock, at_night(23, 59))
    await refresh(app.state.sessionmaker, clock=clock)
    await warm(app.state.sessionmaker, clock=clock, settings=settings)
    last_pass = clock.now()
    # 23:59:50: two children join school 2 (its three left-behind children become five), after the last pass.
    await set_clock(app, world, clock, at_night(23, 59, 50))
    await add_children(app, world)
    # 00:00:01: tomorrow's kept answer, without the change, says so: its as_of is before the change.
    await set_clock(app, world, clock, at_night(24, 0, 1))
    body = (await client.get("/stats/table", params=TABLE, headers=world.headers("bureau"))).json()
    assert datetime.fromisoformat(body["as_of"]) <= last_pass < at_night(23, 59, 50)
    school2 = next(r for r in body["rows"] if r["unit_id"] == str(world["school2"]))
    assert school2["cells"]["left_behind"]["value"] != 5
    # Past the bound from that as_of, it is built anew from the rows judged today: the change still pending in
    # them, the as_of says since when …
    await set_clock(app, world, clock, last_pass + timedelta(seconds=301))
    body = (await client.get("/stats/table", params=TABLE, headers=world.headers("bureau"))).json()
    assert datetime.fromisoformat(body["as_of"]) == at_night(23, 59, 50)
    # … and past the bound from the change, the school is counted afresh, with it.
    await set_clock(app, world, clock, at_night(24, 5))
    body = (await client.get("/stats/table", params=TABLE, headers=world.headers("bureau"))).json()
    school2 = next(r for r in body["rows"] if r["unit_id"] == str(world["school2"]))
    assert school2["cells"]["left_behind"]["value"] == 5
    assert datetime.fromisoformat(body["as_of"]) > at_night(23, 59, 50)
