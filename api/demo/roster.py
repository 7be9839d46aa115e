"""A demo roster: rows of made-up families as a clerk would type them, for demos, tests and benchmarks.

Imported only by the CLI, the tests and the benchmarks; the roster service knows nothing of it.
"""

import random
from collections.abc import Sequence
from datetime import date
from typing import Any

from api.demo import people
from api.models.children import ParentsAway, Sex
from api.models.organisations import GRADE_LABELS
from api.services.roster.columns import PARENTS_AWAY_LABELS, SEX_LABELS, yes_no


def demo_roster(
    rng: random.Random, count: int, *, classes: Sequence[tuple[int, str]], today: date
) -> list[dict[str, Any]]:
    """``count`` roster rows of made-up families from :mod:`api.demo.people`, spread over ``classes``
    ((grade, class name) pairs), as a clerk would type them. For demos, tests and benchmarks."""
    rows: list[dict[str, Any]] = []
    for family in people.families(rng, count):
        away = (family.father.away, family.mother.away)
        parents_away = {
            (True, True): ParentsAway.both,
            (True, False): ParentsAway.father,
            (False, True): ParentsAway.mother,
        }.get(away, ParentsAway.none)
        guardian = family.guardian
        for kid in family.children:
            grade, class_name = classes[len(rows) % len(classes)]
            person = kid.person
            since = max(person.birth_date, date(today.year - rng.randint(1, 6), 9, 1))
            rows.append(
                {
                    "姓名": person.name,
                    "性别": SEX_LABELS[Sex(person.sex.value)],
                    "出生日期": person.birth_date.isoformat(),
                    "民族": person.ethnicity,
                    "身份证号": person.id_number,
                    "年级": f"{GRADE_LABELS.get(grade, str(grade))}年级",
                    "班级": class_name,
                    "户籍": f"湖南省{people.COUNTY}",
                    "家庭住址": family.address,
                    "是否寄宿": yes_no(kid.boarding),
                    "健康状况": kid.health,
                    "留守类型": PARENTS_AWAY_LABELS[parents_away],
                    "留守开始时间": since.isoformat() if since < today else None,
                    "监护状况": guardian.care_rating,
                    "特困": yes_no(rng.random() < 0.05),
                    "单亲": "否",
                    "学困": yes_no(rng.random() < 0.1),
                    "残疾": yes_no(rng.random() < 0.01),
                    "需个别教育方案": "否",
                    "父亲姓名": family.father.person.name,
                    "父亲电话": family.father.phone,
                    "父亲务工城市": family.father.work_city,
                    "父亲工作单位": family.father.employer,
                    "父亲工种": family.father.trade,
                    "母亲姓名": family.mother.person.name,
                    "母亲电话": family.mother.phone,
                    "母亲务工城市": family.mother.work_city,
                    "母亲工作单位": family.mother.employer,
                    "母亲工种": family.mother.trade,
                    "委托监护人姓名": guardian.person.name,
                    "委托监护人关系": guardian.relation,
                    "委托监护人电话": guardian.phone,
                    "委托监护人年龄": today.year - guardian.person.birth_date.year,
                    "委托监护人身体状况": guardian.health,
                    "委托监护人住址": None,
                    "备注": None,
                }
            )
            if len(rows) == count:
                return rows
    return rows
