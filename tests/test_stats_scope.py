"""Who reads which statistics: the bureau its county, a township official its township, a school admin its
school; teachers and families not at all. Aggregates only; small counts suppressed in every answer. And the
enrolment a school admin records per term."""

import json

import sqlalchemy as sa

from api.models.audit import AuditEntry
from tests.stats_dataset import build_dataset

TABLE = {"level": "school", "period": "month", "key": "2026-11"}


async def get(client, world, who, path="/stats/table", **params):
    return await client.get(path, params=params, headers=world.headers(who))


async def test_teachers_and_families_are_refused_with_a_code(client, world, app, clock):
    from tests.objects import add_families

    await add_families(app, world, clock.now())
    for who in ("teacher1", "family1"):
        for path, params in (
            ("/stats/table", TABLE),
            ("/stats/trend", {"from": "2026-01", "to": "2026-11"}),
            ("/stats/indicators", {}),
        ):
            r = await get(client, world, who, path, **params)
            assert (r.status_code, r.json()["error"]["code"]) == (403, "role_forbidden"), (who, path)


async def test_each_role_sees_its_own_area_by_default(client, world):
    expected = {
        "bureau": ("county", world["county"], {world["school1"], world["school2"]}),
        "official1": ("township", world["township1"], {world["school1"]}),
        "admin2": ("school", world["school2"], {world["school2"]}),
        "other_bureau": ("county", world["other_county"], {world["school3"]}),
    }
    for who, (level, area, schools) in expected.items():
        r = await get(client, world, who, **TABLE)
        assert r.status_code == 200, r.text
        body = r.json()
        assert (body["area_level"], body["area_id"]) == (level, str(area)), who
        assert {row["unit_id"] for row in body["rows"]} == {str(s) for s in schools}, who


async def test_an_area_outside_ones_own_is_not_found(client, world):
    for who, area in (
        ("official1", "county"),  # the official's own county is wider than the township
        ("official1", "school2"),
        ("official1", "township2"),
        ("admin1", "township1"),
        ("admin1", "school2"),
        ("other_bureau", "county"),
        ("bureau", "school3"),
    ):
        r = await get(client, world, who, **TABLE, area_id=str(world[area]))
        assert (r.status_code, r.json()["error"]["code"]) == (404, "area_not_found"), (who, area)
    r = await get(client, world, "bureau", **TABLE, area_id="00000000-0000-4000-8000-000000000000")
    assert r.status_code == 404


async def test_a_narrower_area_within_ones_own(client, world):
    r = await get(client, world, "bureau", **TABLE, area_id=str(world["township2"]))
    assert r.status_code == 200
    assert [row["unit_id"] for row in r.json()["rows"]] == [str(world["school2"])]
    r = await get(client, world, "bureau", level="class", period="month", key="2026-11", area_id=str(world["school1"]))
    assert r.status_code == 200
    assert {row["unit_name"] for row in r.json()["rows"]} == {"三年级1班", "三年级2班"}


async def test_the_platform_names_an_area(client, world):
    r = await get(client, world, "platform", **TABLE)
    assert (r.status_code, r.json()["error"]["code"]) == (422, "stats_area_required")
    r = await get(client, world, "platform", **TABLE, area_id=str(world["other_county"]))
    assert r.status_code == 200 and r.json()["area_name"] == "白水县"


async def test_bad_requests_answer_422_with_stable_codes(client, world):
    cases = [
        ("bureau", {**TABLE, "key": "2026-13"}, "period_invalid"),
        ("bureau", {**TABLE, "period": "term", "key": "2026-11"}, "period_invalid"),
        ("bureau", {**TABLE, "key": "2027-01"}, "period_in_future"),
        ("bureau", {**TABLE, "indicators": "left_behind,nope"}, "indicator_unknown"),
        ("bureau", {**TABLE, "indicators": ","}, "indicator_unknown"),
        ("bureau", {**TABLE, "level": "class"}, "class_needs_school"),
        ("admin1", {**TABLE, "level": "township"}, "level_above_area"),
        ("bureau", {**TABLE, "level": "galaxy"}, "validation_error"),
    ]
    for who, params, code in cases:
        r = await get(client, world, who, **params)
        assert (r.status_code, r.json()["error"]["code"]) == (422, code), (params, r.text)
    for params, code in (
        ({"from": "2026-11", "to": "2026-01"}, "trend_reversed"),
        ({"from": "2023-01", "to": "2026-11"}, "trend_too_long"),
        ({"from": "2026-1", "to": "2026-11"}, "period_invalid"),
        ({"from": "2026-11", "to": "2026-12"}, "period_in_future"),
    ):
        r = await get(client, world, "bureau", "/stats/trend", **params)
        assert (r.status_code, r.json()["error"]["code"]) == (422, code), (params, r.text)


async def test_the_current_period_when_no_key_is_given(client, world):
    r = await get(client, world, "bureau", level="county", period="term")
    assert r.status_code == 200
    assert (r.json()["period"]["key"], r.json()["previous_period"]["key"]) == ("2026-2027-1", "2025-2026-2")


async def test_small_counts_are_suppressed_with_their_complements(app, client, world):
    ds = await build_dataset(app, client, world)
    r = await get(client, world, "bureau", **TABLE)
    body = r.json()
    assert body["threshold"] == 5
    rows = {row["unit_id"]: row["cells"] for row in body["rows"]}
    one, two = rows[str(world["school1"])], rows[str(world["school2"])]
    # School 2 has 2 left-behind children: hidden; school 1's 6 would then follow from the total 8, so it goes too.
    assert two["left_behind"] == {"value": None, "numerator": None, "denominator": None, "suppressed": True}
    assert one["left_behind"]["suppressed"] is True
    assert body["total"]["cells"]["left_behind"] == {
        "value": 8,
        "numerator": None,
        "denominator": None,
        "suppressed": False,
    }
    # A rate over a hidden count is hidden; the pupils (not a count of left-behind children) stay.
    assert two["archive_rate"]["suppressed"] and two["left_behind_share"]["suppressed"]
    assert two["enrolled_pupils"]["value"] == 420
    # A zero is shown.
    assert two["lb_disability"] == {"value": 0, "numerator": None, "denominator": None, "suppressed": False}
    # Every suppressed cell carries nothing.
    for cells in (*rows.values(), body["total"]["cells"]):
        for cell in cells.values():
            if cell["suppressed"]:
                assert cell["value"] is None and cell["numerator"] is None and cell["denominator"] is None
    # The same cells whichever indicators are asked for.
    r = await get(client, world, "bureau", **TABLE, indicators="left_behind,lb_sex_female")
    again = {row["unit_id"]: row["cells"] for row in r.json()["rows"]}
    for unit, cells in again.items():
        for key, cell in cells.items():
            assert cell == rows[unit][key]
    text = json.dumps(body, ensure_ascii=False)
    assert not [n for n in ds.names if n in text] and not [i for i in ds.children.values() if str(i) in text]


async def test_enrolment_is_recorded_by_the_school_admin_and_audited(client, world, system_session):
    path = f"/schools/{world['school1']}/enrolment/2026-2027-2"
    r = await client.get(path, headers=world.headers("bureau"))
    assert r.status_code == 200
    assert (r.json()["recorded"], r.json()["pupils"], r.json()["term_label"]) == (False, 743, "2026—2027学年第二学期")
    r = await client.put(path, json={"pupils": 750, "boarders": 80}, headers=world.headers("admin1"))
    assert r.status_code == 200, r.text
    r = await client.put(path, json={"pupils": 751, "boarders": 80}, headers=world.headers("admin1"))
    assert (r.json()["recorded"], r.json()["pupils"]) == (True, 751)
    r = await client.get(path, headers=world.headers("official1"))
    assert (r.json()["recorded"], r.json()["pupils"], r.json()["boarders"]) == (True, 751, 80)
    actions = (
        (
            await system_session.execute(
                sa.select(AuditEntry.action)
                .where(AuditEntry.resource_type == "school_enrolment")
                .order_by(AuditEntry.at)
            )
        )
        .scalars()
        .all()
    )
    assert actions == ["school_enrolment.create", "school_enrolment.update"]
    for who, status, code in (
        ("teacher1", 403, "role_forbidden"),
        ("bureau", 403, "role_forbidden"),
        ("admin2", 404, "school_not_found"),
    ):
        r = await client.put(path, json={"pupils": 1}, headers=world.headers(who))
        assert (r.status_code, r.json()["error"]["code"]) == (status, code), who
    for body in ({"pupils": 10, "boarders": 11}, {"pupils": -1}, {"pupils": 100_001}):
        r = await client.put(path, json=body, headers=world.headers("admin1"))
        assert r.status_code == 422, body
    r = await client.put(
        f"/schools/{world['school1']}/enrolment/2026-2028-1", json={"pupils": 1}, headers=world.headers("admin1")
    )
    assert (r.status_code, r.json()["error"]["code"]) == (422, "period_invalid")
    assert r.json()["error"]["fields"][0]["loc"] == ["path", "term_key"]


async def test_enrolment_through_a_real_server_concurrent_puts_and_the_next_read(live_url, world):
    """Five admins' PUTs of the same new term at once all succeed (one inserts, the others correct it), and a
    table asked right after the last answer already divides by it (the write was committed before the reply)."""
    import asyncio

    import httpx

    path = f"{live_url}/schools/{world['school1']}/enrolment/2026-2027-1"
    async with httpx.AsyncClient(timeout=30) as http:
        answers = await asyncio.gather(
            *[http.put(path, json={"pupils": 700 + i}, headers=world.headers("admin1")) for i in range(5)]
        )
        assert sorted(a.status_code for a in answers) == [200] * 5, [a.text for a in answers]
        last = await http.put(path, json={"pupils": 812}, headers=world.headers("admin1"))
        assert last.status_code == 200
        r = await http.get(
            f"{live_url}/stats/table",
            params={"level": "school", "period": "month", "key": "2026-11", "indicators": "enrolled_pupils"},
            headers=world.headers("admin1"),
        )
        assert r.json()["rows"][0]["cells"]["enrolled_pupils"]["value"] == 812
