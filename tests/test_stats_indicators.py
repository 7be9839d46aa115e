"""Every indicator of the registry, cross-checked against a count by hand on the small county of
``tests/stats_dataset.py`` (its docstring is the dataset; the counts below are read off it, not computed)."""

import json

import pytest

from api.services.stats import indicators as registry
from tests.conftest import make_test_settings
from tests.stats_dataset import build_dataset


@pytest.fixture
def settings(fake_providers):
    # Threshold 0: nothing suppressed, so that every figure can be compared (suppression: test_stats_scope).
    return make_test_settings(stats_suppression_threshold=0)


Z = dict.fromkeys  # zeros

# November 2026 (the stock on 24 November, today; ages on 30 November), per school, counted by hand.
SCHOOL1 = {
    "left_behind": 6,  # A B C D G H (E left on 10 Nov, F is not left-behind)
    "enrolled_pupils": 700,
    "left_behind_share": (0.009, 6, 700),
    "lb_parents_both": 3,  # A D G
    "lb_parents_father": 2,  # B H
    "lb_parents_mother": 1,  # C
    "lb_parents_other": 0,
    "lb_sex_male": 3,
    "lb_sex_female": 3,
    "lb_age_0_5": 1,  # B (5)
    "lb_age_6_13": 2,  # A (10), G (11)
    "lb_age_14_16": 2,  # C (16), H (14 on 30 Nov)
    "lb_age_17_up": 1,  # D (17)
    "lb_stage_primary": 4,
    "lb_stage_junior": 1,
    "lb_stage_unplaced": 1,
    **Z([f"lb_grade_{g}" for g in (1, 2, 4, 5, 6, 8, 9)], 0),
    "lb_grade_3": 4,
    "lb_grade_7": 1,
    "lb_grade_unplaced": 1,
    "lb_boarding": 2,
    "lb_day": 4,
    "lb_guardian_grandparents": 3,  # 祖母 外公 爷爷
    "lb_guardian_parent": 1,  # 母亲
    "lb_guardian_relatives": 1,  # 叔叔
    "lb_guardian_other": 1,  # 邻居
    "lb_guardian_none": 0,
    "lb_special_hardship": 1,
    "lb_single_parent": 1,
    "lb_struggling_learner": 1,
    "lb_disability": 1,
    "lb_needs_individual_plan": 0,
    "archive_complete": 1,
    "archive_rate": (0.167, 1, 6),
    "paired": 2,  # A, C (D's pairing ended on 5 Nov)
    "pairing_rate": (0.333, 2, 6),
    "aid_children": 1,
    "aid_records": 2,
    "aid_amount_yuan": 800.0,
    "incidents": 2,
    "incidents_injury": 1,
    "incidents_missing": 1,
    **Z([f"incidents_{c}" for c in ("illness", "safety", "violence_bullying", "psychological_crisis", "other")], 0),
    "incidents_sev_minor": 1,
    "incidents_sev_severe": 1,
    "incidents_sev_moderate": 0,
    "incidents_sev_critical": 0,
    "chain_s1_on_time_rate": (1.0, 2, 2),
    "chain_s1_median_minutes": (16, None, 2),
    "chain_s1_worst_minutes": (20, None, 2),
    "chain_s2_on_time_rate": (0.5, 1, 2),
    "chain_s2_median_minutes": (58, None, 2),  # 57.5, shown to the minute
    "chain_s2_worst_minutes": (75, None, 2),
    "chain_s3_on_time_rate": (0.0, 0, 1),  # X1's breached; X2's still open is not judged
    "chain_s3_median_minutes": (None, None, 0),
    "chain_s3_worst_minutes": (None, None, 0),
}  # fmt: skip
SCHOOL2 = {
    **{k: (v if isinstance(v, int | float) else v) for k, v in Z(SCHOOL1, 0).items()},
    "left_behind": 2,
    "enrolled_pupils": 420,  # nothing recorded: the school's own count
    "left_behind_share": (0.005, 2, 420),
    "lb_parents_both": 1,
    "lb_parents_mother": 1,
    "lb_sex_male": 1,
    "lb_sex_female": 1,
    "lb_age_0_5": 1,  # J is 5 on 30 Nov (6 on 1 Dec)
    "lb_age_6_13": 1,
    "lb_stage_primary": 2,
    "lb_grade_4": 2,
    "lb_boarding": 1,
    "lb_day": 1,
    "lb_guardian_grandparents": 2,
    "archive_complete": 1,
    "archive_rate": (0.5, 1, 2),
    "pairing_rate": (0.0, 0, 2),
    "aid_amount_yuan": 0.0,
    "incidents": 1,
    "incidents_illness": 1,
    "incidents_sev_moderate": 1,
    "chain_s1_on_time_rate": (1.0, 1, 1),
    "chain_s1_median_minutes": (5, None, 1),
    "chain_s1_worst_minutes": (5, None, 1),
    "chain_s2_on_time_rate": (1.0, 1, 1),
    "chain_s2_median_minutes": (30, None, 1),
    "chain_s2_worst_minutes": (30, None, 1),
    "chain_s3_on_time_rate": (1.0, 1, 1),
    "chain_s3_median_minutes": (100, None, 1),
    "chain_s3_worst_minutes": (100, None, 1),
}
TOTAL_EXTRA = {
    "left_behind_share": (0.007, 8, 1120),
    "archive_rate": (0.25, 2, 8),
    "pairing_rate": (0.25, 2, 8),
    "chain_s1_on_time_rate": (1.0, 3, 3),
    "chain_s1_median_minutes": (12, None, 3),  # 5, 12, 20
    "chain_s1_worst_minutes": (20, None, 3),
    "chain_s2_on_time_rate": (0.667, 2, 3),
    "chain_s2_median_minutes": (40, None, 3),  # 30, 40, 75
    "chain_s2_worst_minutes": (75, None, 3),
    "chain_s3_on_time_rate": (0.5, 1, 2),
    "chain_s3_median_minutes": (100, None, 1),
    "chain_s3_worst_minutes": (100, None, 1),
}
CARE_RATES = [k for k in registry.REGISTRY if k.startswith("care_")]


def shown(cell: dict):
    """A cell as the hand counts write it: a count, or (value, numerator, denominator)."""
    if cell["numerator"] is None and cell["denominator"] is None:
        return cell["value"]
    return (cell["value"], cell["numerator"], cell["denominator"])


def expected_total() -> dict:
    out = {}
    for key, one in SCHOOL1.items():
        two = SCHOOL2[key]
        out[key] = TOTAL_EXTRA.get(key, one + two if isinstance(one, int | float) else None)
    return out


async def table(client, world, who="bureau", **params):
    r = await client.get("/stats/table", params=params, headers=world.headers(who))
    assert r.status_code == 200, r.text
    return r.json()


def test_every_indicator_is_counted_by_hand_here():
    assert set(SCHOOL1) | set(CARE_RATES) == set(registry.REGISTRY)
    assert set(SCHOOL2) == set(SCHOOL1)


async def test_every_indicator_per_school_and_in_total_matches_the_count_by_hand(app, client, world):
    ds = await build_dataset(app, client, world)
    t = await table(client, world, level="school", period="month", key="2026-11")
    rows = {r["unit_id"]: r for r in t["rows"]}
    assert set(rows) == {str(world["school1"]), str(world["school2"])}  # school 3 is another county's
    for unit, expected in ((rows[str(world["school1"])], SCHOOL1), (rows[str(world["school2"])], SCHOOL2)):
        got = {k: shown(unit["cells"][k]) for k in expected}
        assert got == expected, unit["unit_name"]
    assert {k: shown(t["total"]["cells"][k]) for k in SCHOOL1} == expected_total()
    assert t["as_of"].startswith("2026-11-24T02:00")
    # Aggregates only: no child's name or id anywhere in the answer.
    text = json.dumps(t, ensure_ascii=False)
    assert not [n for n in ds.names if n in text]
    assert not [k for k, i in ds.children.items() if str(i) in text]


async def test_the_previous_period_is_counted_as_of_its_own_last_day(app, client, world):
    await build_dataset(app, client, world)
    t = await table(client, world, level="school", period="month", key="2026-11")
    before = {r["unit_id"]: r["previous"] for r in t["rows"]}[str(world["school1"])]
    assert t["previous_period"]["key"] == "2026-10"
    # On 31 October: A B C D E H (G filed on 15 Nov; E still on the roster); ages on 31 Oct (H is 13).
    assert shown(before["left_behind"]) == 6
    assert shown(before["lb_age_6_13"]) == 3  # A, E (11), H (13)
    assert shown(before["lb_age_14_16"]) == 1  # C
    assert shown(before["lb_guardian_none"]) == 1  # E
    assert shown(before["paired"]) == 2  # A, D (C's pairing began on 1 Nov)
    assert (shown(before["aid_children"]), shown(before["aid_records"]), shown(before["aid_amount_yuan"])) == (
        1,
        1,
        200.0,
    )
    assert shown(before["incidents"]) == 0  # X3 is on 1 Nov in Shanghai, though 31 Oct in UTC


async def test_care_compliance_is_what_the_schools_own_coverage_report_says(app, client, world):
    await build_dataset(app, client, world)
    t = await table(client, world, level="school", period="month", key="2026-11", indicators=",".join(CARE_RATES))
    r = await client.get(
        "/care/coverage", params={"starts_on": "2026-11-01", "ends_on": "2026-11-30"}, headers=world.headers("bureau")
    )
    assert r.status_code == 200, r.text
    report = {(row["school_id"]): row for row in r.json()["rows"] if row["class_id"] is None}
    done_any = 0
    for row in t["rows"]:
        kinds = {k["kind"]: k for k in report[row["unit_id"]]["kinds"]}
        for kind in ("talk", "home_visit", "guardian_contact", "family_call"):
            cell = row["cells"][f"care_{kind}_rate"]
            assert (cell["numerator"], cell["denominator"]) == (kinds[kind]["done"], kinds[kind]["expected"])
            done_any += cell["numerator"]
    assert done_any >= 1  # the records of the dataset count somewhere
    talks = t["total"]["cells"]["care_talk_rate"]
    # Judged until yesterday (23 Nov): monthly talks are not yet due, fortnightly ones for the strict children
    # (特困 A, 单亲 B) are: A's talk on 2 Nov and B's on 10 Nov each keep one.
    assert talks["numerator"] >= 2


async def test_township_and_county_levels_add_the_schools_up(app, client, world):
    await build_dataset(app, client, world)
    by_school = await table(client, world, level="school", period="month", key="2026-11")
    by_township = await table(client, world, level="township", period="month", key="2026-11")
    county = await table(client, world, level="county", period="month", key="2026-11")
    names = {r["unit_name"]: r for r in by_township["rows"]}
    assert set(names) == {"石桥镇", "柳河乡"}
    assert shown(names["石桥镇"]["cells"]["left_behind"]) == 6
    assert names["石桥镇"]["parent_id"] == str(world["county"])
    assert shown(names["柳河乡"]["cells"]["incidents_illness"]) == 1
    assert [r["unit_name"] for r in county["rows"]] == ["青山县"]
    for t in (by_township, county):
        assert t["total"]["cells"] == by_school["total"]["cells"]
    assert county["rows"][0]["cells"] == county["total"]["cells"]


async def test_classes_of_one_school_with_the_unplaced_children_apart(app, client, world):
    ds = await build_dataset(app, client, world)
    t = await table(
        client, world, who="admin1", level="class", period="month", key="2026-11",
        indicators="left_behind,enrolled_pupils,left_behind_share,lb_grade_7,incidents",
    )  # fmt: skip
    assert t["area_level"] == "school" and t["area_id"] == str(world["school1"])
    rows = {r["unit_name"]: r["cells"] for r in t["rows"]}
    assert list(rows) == ["三年级1班", "三年级2班", "七年级1班", "未分班"]
    assert [rows[n]["left_behind"]["value"] for n in rows] == [3, 1, 1, 1]  # A B G | H | C | D
    assert rows["七年级1班"]["lb_grade_7"]["value"] == 1
    assert rows["七年级1班"]["incidents"]["value"] == 1  # X2
    assert rows["三年级1班"]["enrolled_pupils"]["value"] is None  # a class records no enrolment
    assert rows["三年级1班"]["left_behind_share"]["value"] is None
    assert t["total"]["cells"]["left_behind_share"]["denominator"] == 700
    assert {r["parent_id"] for r in t["rows"]} == {str(world["school1"])}
    assert ds.class17 is not None


async def test_a_quarter_a_term_a_school_year_and_a_year(app, client, world):
    await build_dataset(app, client, world)
    for period, key, previous, filed_before in (
        ("quarter", "2026-Q4", "2026-Q3", 8),  # on 30 Sep: all but G (filed 15 Nov; E still on the roster)
        ("term", "2026-2027-1", "2025-2026-2", 0),  # nobody was filed before 1 Sep 2026
        ("school_year", "2026-2027", "2025-2026", 0),
        ("year", "2026", "2025", 0),
    ):
        t = await table(
            client, world, level="county", period=period, key=key, indicators="left_behind,aid_records,incidents"
        )
        assert (t["period"]["key"], t["previous_period"]["key"]) == (key, previous)
        # Stock on 24 Nov; flows over the whole period: every aid record and incident of the dataset.
        assert shown(t["total"]["cells"]["left_behind"]) == 8
        assert shown(t["total"]["cells"]["aid_records"]) == 3
        assert shown(t["total"]["cells"]["incidents"]) == 3
        assert shown(t["total"]["previous"]["left_behind"]) == filed_before


async def test_the_monthly_trend(app, client, world):
    await build_dataset(app, client, world)
    r = await client.get(
        "/stats/trend",
        params={"from": "2026-08", "to": "2026-11", "indicators": "left_behind,aid_records,paired"},
        headers=world.headers("bureau"),
    )
    assert r.status_code == 200, r.text
    points = [(p["period"]["key"], {k: shown(c) for k, c in p["cells"].items()}) for p in r.json()["points"]]
    assert points == [
        ("2026-08", {"left_behind": 0, "aid_records": 0, "paired": 0}),
        ("2026-09", {"left_behind": 8, "aid_records": 0, "paired": 2}),  # all but G; A and D paired
        ("2026-10", {"left_behind": 8, "aid_records": 1, "paired": 2}),
        ("2026-11", {"left_behind": 8, "aid_records": 2, "paired": 2}),
    ]
