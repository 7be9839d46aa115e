"""Statistics read from a replica when ``LIUSHOU_STATS_DATABASE_URL`` is set: pointed at a second database
holding other children, the statistics answer its figures (in the caller's scope there too), while the rest
of the API — and the statistics without the setting — read the main database."""

import uuid
from collections.abc import AsyncIterator
from datetime import UTC, date, datetime

import httpx
import pytest
import sqlalchemy as sa
from fastapi import FastAPI

from api.db import make_engine, make_sessionmaker, scoped_session
from api.main import create_app
from api.models.children import Child, Sex
from api.models.organisations import County, School, SchoolClass, Township
from api.scoping import SYSTEM
from tests.conftest import TEMPLATE, make_test_settings
from tests.factories import World, build_world

TABLE = {"level": "school", "period": "month", "key": "2026-11"}


@pytest.fixture
async def replica_url(pg) -> AsyncIterator[str]:
    name = f"liushou_r_{uuid.uuid4().hex[:12]}"
    await pg.create(name, template=TEMPLATE)
    try:
        yield pg.url(name)
    finally:
        await pg.drop(name)


async def add_children(sessionmaker, school_id: uuid.UUID, n: int) -> None:
    async with scoped_session(sessionmaker, SYSTEM) as s:
        for i in range(n):
            s.add(
                Child(
                    school_id=school_id,
                    name=f"儿童{i}",
                    sex=Sex.female if i % 2 else Sex.male,
                    birth_date=date(2016, 1, 1),
                    created_at=datetime(2026, 9, 1, tzinfo=UTC),
                )
            )


async def copy_places(source: FastAPI, replica_url: str, settings) -> None:
    """The replica holds the same county, townships, schools and classes (same ids), as a copy would."""
    engine = make_engine(replica_url, settings)
    try:
        async with scoped_session(source.state.sessionmaker, SYSTEM) as src:
            rows = []
            for model in (County, Township, School, SchoolClass):
                rows += [(model, r.model_dump()) for r in (await src.execute(sa.select(model))).scalars()]
        async with scoped_session(make_sessionmaker(engine), SYSTEM) as dst:
            for model, values in rows:
                if model is SchoolClass:
                    values["head_teacher_id"] = None  # accounts stay on the primary in this test
                dst.add(model(**values))
                await dst.flush()
    finally:
        await engine.dispose()


async def left_behind(client: httpx.AsyncClient, world: World, who: str) -> dict[str, int]:
    r = await client.get("/stats/table", params={**TABLE, "indicators": "left_behind"}, headers=world.headers(who))
    assert r.status_code == 200, r.text
    body = r.json()
    out = {row["unit_name"]: row["cells"]["left_behind"]["value"] for row in body["rows"]}
    out["合计"] = body["total"]["cells"]["left_behind"]["value"]
    return out


async def test_statistics_read_the_replica_in_the_callers_scope(database_url, replica_url, clock):
    settings = make_test_settings(stats_database_url=replica_url, stats_suppression_threshold=0)
    app = create_app(settings, clock=clock, database_url=database_url, migrate=False)
    async with app.router.lifespan_context(app):
        world = await build_world(app, clock.now())
        await copy_places(app, replica_url, settings)
        await add_children(app.state.sessionmaker, world["school1"], 3)  # the primary
        replica = make_engine(replica_url, settings)
        try:
            await add_children(make_sessionmaker(replica), world["school1"], 7)  # the replica
            await add_children(make_sessionmaker(replica), world["school3"], 4)  # another county, on the replica
        finally:
            await replica.dispose()
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as client:
            assert await left_behind(client, world, "bureau") == {"石桥镇中心小学": 7, "柳河乡中心小学": 0, "合计": 7}
            # Row security holds on the replica: a township sees only its own schools there too.
            assert await left_behind(client, world, "official2") == {"柳河乡中心小学": 0, "合计": 0}
            assert await left_behind(client, world, "other_bureau") == {"白沙镇完小": 4, "合计": 4}
            # The rest of the API reads the primary.
            r = await client.get("/children", headers=world.headers("admin1"))
            assert r.status_code == 200, r.text
            assert r.json()["count"] == 3


async def test_without_the_setting_statistics_read_the_main_database(app, client, world):
    await add_children(app.state.sessionmaker, world["school1"], 6)
    assert app.state.stats_sessionmaker is None
    r = await client.get("/stats/table", params={**TABLE, "indicators": "left_behind"}, headers=world.headers("bureau"))
    assert r.json()["total"]["cells"]["left_behind"]["value"] == 6
