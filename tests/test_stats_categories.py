"""The breakdowns' categories: the Python rule for one child and the SQL the tables count with agree, and
each breakdown puts every child in exactly one category."""

from datetime import date, timedelta

import pytest
import sqlalchemy as sa

from api.services.stats import categories

DAYS = [date(2026, 11, 30), date(2026, 2, 28), date(2028, 2, 29)]
BIRTHS = [
    date(2026, 11, 30),
    date(2021, 12, 1),
    date(2020, 11, 30),  # 6 on 30 Nov 2026
    date(2020, 12, 1),  # 5 on 30 Nov 2026
    date(2012, 11, 30),
    date(2010, 2, 28),
    date(2009, 11, 30),
    date(2009, 12, 1),
    date(2008, 2, 29),
    date(1990, 1, 1),
    date(2027, 1, 1),  # after the day: a typing error, counted with the youngest
]
RELATIONS = ["祖母", " 外公 ", "爷爷", "父亲", "母亲", "叔叔", "姐姐", "邻居", "老师", "", None]


@pytest.mark.parametrize(
    ("born", "on", "band"),
    [
        (date(2020, 12, 1), date(2026, 11, 30), "0_5"),
        (date(2020, 11, 30), date(2026, 11, 30), "6_13"),
        (date(2012, 12, 1), date(2026, 11, 30), "6_13"),
        (date(2012, 11, 30), date(2026, 11, 30), "14_16"),
        (date(2009, 12, 1), date(2026, 11, 30), "14_16"),
        (date(2009, 11, 30), date(2026, 11, 30), "17_up"),
        (date(2008, 2, 29), date(2026, 2, 28), "17_up"),  # 18 on 28 Feb in a common year
    ],
)
def test_age_bands_as_national_figures_count(born, on, band):
    assert categories.age_band(born, on) == band


@pytest.mark.parametrize(
    ("relation", "kind"),
    [("祖母", "grandparents"), ("外公", "grandparents"), (" 奶奶 ", "grandparents"), ("母亲", "parent"),
     ("叔叔", "relatives"), ("姐姐", "relatives"), ("邻居", "other"), ("", "other"), (None, "none")],
)  # fmt: skip
def test_the_guardian_type_of_a_relation(relation, kind):
    assert categories.guardian_type(relation) == kind


@pytest.mark.parametrize(("grade", "stage"), [(1, "primary"), (6, "primary"), (7, "junior"), (9, "junior"),
                                             (10, "unplaced"), (None, "unplaced")])  # fmt: skip
def test_stages(grade, stage):
    assert categories.stage(grade) == stage


async def test_the_sql_and_the_python_agree(system_session):
    for on in DAYS:
        for born in BIRTHS:
            conds = categories.age_band_sql(sa.literal(born, sa.Date), on)
            row = (await system_session.execute(sa.select(*[c.label(k) for k, c in conds.items()]))).one()
            hits = [k for k, v in row._mapping.items() if v]
            assert hits == [categories.age_band(born, on)], (born, on)
    for relation in RELATIONS:
        conds = categories.guardian_type_sql(sa.literal(relation, sa.String) if relation is not None else sa.null())
        row = (
            await system_session.execute(sa.select(*[sa.func.coalesce(c, False).label(k) for k, c in conds.items()]))
        ).one()
        hits = [k for k, v in row._mapping.items() if v]
        assert hits == [categories.guardian_type(relation)], relation


def test_every_day_of_a_childhood_falls_in_one_band():
    born = date(2008, 2, 29)
    day = born
    while day < date(2027, 3, 1):
        assert categories.age_band(born, day) in {b[0] for b in categories.AGE_BANDS}
        day += timedelta(days=17)
