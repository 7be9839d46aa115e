"""The categories the breakdowns count children in (pure), and the same categories as SQL.

Each breakdown is a full partition of the children it breaks down — a child is in exactly one category, a
remainder category included — so that its categories add up to the parent count (and the suppression knows
that equation). The Python form decides one child; the SQL form, built from the same data, counts many;
``tests/test_stats_categories.py`` holds the two together.
"""

from datetime import date
from typing import Any

import sqlalchemy as sa

# 年龄段 as national figures count left-behind children: 0–5, 6–13, 14–16 (and older, the remainder).
AGE_BANDS: tuple[tuple[str, int, int | None, str], ...] = (
    ("0_5", 0, 5, "0—5岁"),
    ("6_13", 6, 13, "6—13岁"),
    ("14_16", 14, 16, "14—16岁"),
    ("17_up", 17, None, "17岁及以上"),
)

# 学段 by grade: 小学 1–6, 初中 7–9; a child without a class (or in another grade) is 未分班.
STAGES: tuple[tuple[str, int, int, str], ...] = (("primary", 1, 6, "小学"), ("junior", 7, 9, "初中"))
GRADES = tuple(range(1, 10))

# 监护类型, from the relation of the child's first entrusted guardian (委托监护人, lowest contact order).
GRANDPARENTS = ("祖父", "祖母", "外祖父", "外祖母", "爷爷", "奶奶", "外公", "外婆", "姥爷", "姥姥")
PARENTS = ("父亲", "母亲", "父", "母", "爸爸", "妈妈")
RELATIVES = (
    "叔叔", "叔", "婶婶", "伯父", "伯伯", "伯", "伯母", "姑姑", "姑", "姑父", "舅舅", "舅", "舅妈", "姨",
    "姨妈", "姨父", "哥哥", "姐姐", "兄", "姐", "堂兄", "堂姐", "表哥", "表姐", "亲戚", "其他亲属",
)  # fmt: skip
GUARDIAN_TYPES: tuple[tuple[str, str], ...] = (
    ("grandparents", "祖辈监护"),
    ("parent", "父母一方监护"),
    ("relatives", "其他亲属监护"),
    ("other", "其他人监护"),
    ("none", "无委托监护人"),
)


def age_on(birth_date: date, on: date) -> int:
    """Whole years of age on a day."""
    return on.year - birth_date.year - ((on.month, on.day) < (birth_date.month, birth_date.day))


def age_band(birth_date: date, on: date) -> str:
    age = age_on(birth_date, on)
    for key, low, high, _ in AGE_BANDS:
        if age >= low and (high is None or age <= high):
            return key
    return AGE_BANDS[0][0]  # born after the day (a typing error): counted with the youngest


def stage(grade: int | None) -> str:
    for key, low, high, _ in STAGES:
        if grade is not None and low <= grade <= high:
            return key
    return "unplaced"


def grade_key(grade: int | None) -> str:
    return str(grade) if grade in GRADES else "unplaced"


def guardian_type(relation: str | None) -> str:
    """``relation`` of the first active entrusted guardian; None when the child has none."""
    if relation is None:
        return "none"
    relation = relation.strip()
    if relation in GRANDPARENTS:
        return "grandparents"
    if relation in PARENTS:
        return "parent"
    if relation in RELATIVES:
        return "relatives"
    return "other"


# ---- the same in SQL --------------------------------------------------------------------------------------


def age_sql(birth_date: Any, on: date) -> Any:
    return sa.cast(sa.func.date_part("year", sa.func.age(sa.literal(on, sa.Date), birth_date)), sa.Integer)


def age_band_sql(birth_date: Any, on: date) -> dict[str, Any]:
    """Per band, a condition on the child's birth date."""
    age = age_sql(birth_date, on)
    out: dict[str, Any] = {}
    for i, (key, low, high, _) in enumerate(AGE_BANDS):
        conds = [age <= high] if high is not None else []
        if i > 0:
            conds.append(age >= low)
        out[key] = sa.and_(sa.true(), *conds)
    return out


def guardian_type_sql(relation: Any) -> dict[str, Any]:
    """Per type, a condition on the (trimmed) relation of the first entrusted guardian (NULL: none)."""
    trimmed = sa.func.btrim(relation)
    return {
        "grandparents": trimmed.in_(GRANDPARENTS),
        "parent": trimmed.in_(PARENTS),
        "relatives": trimmed.in_(RELATIVES),
        "other": sa.and_(relation.is_not(None), trimmed.not_in(GRANDPARENTS + PARENTS + RELATIVES)),
        "none": relation.is_(None),
    }
