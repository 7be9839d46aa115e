"""每学年末交接 planned as pure decisions: where each class goes, when a promotion must refuse, what it reports.

No database: :mod:`api.services.children.promotion` decides on classes and facts already loaded
(``tests/test_child_lifecycle.py`` runs whole promotions through the API)."""

import uuid
from types import SimpleNamespace
from typing import Any

import pytest

from api.errors import Conflict, Invalid
from api.models.children import PromotionRequest
from api.models.organisations import SchoolClass
from api.services.children.promotion import (
    ArchiveFacts,
    ClassPlan,
    check_conflicts,
    plan_classes,
    promotion_summary,
)

SCHOOL = uuid.uuid4()
HEAD_TEACHER = uuid.uuid4()
CLASSES = {
    "3-1": SchoolClass(school_id=SCHOOL, grade=3, name="1班"),
    "4-1": SchoolClass(school_id=SCHOOL, grade=4, name="1班"),
    "4-2 inactive": SchoolClass(school_id=SCHOOL, grade=4, name="2班", is_active=False),
    "5-1": SchoolClass(school_id=SCHOOL, grade=5, name="1班"),
    "6-1": SchoolClass(school_id=SCHOOL, grade=6, name="1班"),
    "7-1": SchoolClass(school_id=SCHOOL, grade=7, name="1班"),
    "9-1": SchoolClass(school_id=SCHOOL, grade=9, name="1班"),
}
BY_ID = {c.id: c for c in CLASSES.values()}
NAME_OF = {c.id: name for name, c in CLASSES.items()}
# What the service would find as the next grade's classes (active only), by (grade, name).
NEXT_GRADE = {(c.grade, c.name): c for c in CLASSES.values() if c.is_active}


def request(
    *,
    classes: dict[str, str | None] | None = None,
    create: list[str] | None = None,
    head_teachers: tuple[str, ...] = (),
    **more: Any,
) -> PromotionRequest:
    def cid(name: str | None) -> uuid.UUID | None:
        return CLASSES[name].id if name is not None else None

    return PromotionRequest(
        classes={cid(a): cid(b) for a, b in classes.items()} if classes is not None else None,
        create_next_grade=[CLASSES[name].id for name in create] if create is not None else None,
        head_teachers={CLASSES[name].id: HEAD_TEACHER for name in head_teachers},
        **more,
    )


def where_they_go(plan: ClassPlan) -> dict[str, str | None]:
    """The plan in names: an existing class by its name, a class to create as new:<grade>-<class name>."""
    new = {c.id for c in plan.new_classes}
    named: dict[str, str | None] = {}
    for from_id, target in plan.targets.items():
        if target is None:
            named[NAME_OF[from_id]] = None
        elif target.id in new:
            assert target.school_id == SCHOOL and target.is_active
            named[NAME_OF[from_id]] = f"new:{target.grade}-{target.name}"
        else:
            named[NAME_OF[from_id]] = NAME_OF[target.id]
    return named


PLANS: list[tuple[str, PromotionRequest, dict[str, dict[tuple[int, str], SchoolClass]] | None, dict[str, Any]]] = [
    ("a class moves to the class of the next grade it is given", request(classes={"3-1": "4-1"}), None,
     {"3-1": "4-1"}),
    ("the last grade graduates", request(classes={"6-1": None}), None, {"6-1": None}),
    ("a whole school at once", request(classes={"3-1": "4-1", "4-1": "5-1", "5-1": "6-1", "6-1": None}), None,
     {"3-1": "4-1", "4-1": "5-1", "5-1": "6-1", "6-1": None}),
    ("初中: grade 6 moves on when the last grade is 9", request(classes={"6-1": "7-1"}, last_grade=9), None,
     {"6-1": "7-1"}),
    ("the next grade's class of the same name is found", request(create=["3-1"]), None, {"3-1": "4-1"}),
    ("or created when there is none", request(create=["5-1"]), {}, {"5-1": "new:6-1班"}),
    ("an inactive class of that name is not reused", request(create=["3-1"]),
     {k: v for k, v in NEXT_GRADE.items() if k != (4, "1班")}, {"3-1": "new:4-1班"}),
    ("created classes and graduation together", request(create=["6-1", "3-1"]), {}, {"6-1": None, "3-1": "new:4-1班"}),
    ("a head teacher for the class moving up", request(classes={"3-1": "4-1"}, head_teachers=("3-1",)), None,
     {"3-1": "4-1"}),
]  # fmt: skip


@pytest.mark.parametrize(("case", "data", "next_grade", "expected"), PLANS, ids=[p[0] for p in PLANS])
def test_where_each_class_goes(case, data, next_grade, expected):
    plan = plan_classes(
        data, school_id=SCHOOL, classes=BY_ID, next_grade=NEXT_GRADE if next_grade is None else next_grade
    )
    assert where_they_go(plan) == expected
    assert len(plan.new_classes) == sum(1 for v in expected.values() if v and v.startswith("new:"))


REFUSED: list[tuple[str, PromotionRequest, str, str]] = [
    ("the last grade cannot move up", request(classes={"6-1": "5-1"}), "promotion_last_grade", "classes"),
    ("a class below the last grade needs a target", request(classes={"3-1": None}), "promotion_target_required",
     "classes"),
    ("the target must be the next grade", request(classes={"3-1": "5-1"}), "promotion_grade_mismatch", "classes"),
    ("not the same grade either", request(classes={"4-1": "4-1"}), "promotion_grade_mismatch", "classes"),
    ("the target must be active", request(classes={"3-1": "4-2 inactive"}), "promotion_grade_mismatch", "classes"),
    ("a graduating class takes no head teacher", request(classes={"6-1": None}, head_teachers=("6-1",)),
     "head_teacher_invalid", "head_teachers"),
    ("初中 ends at grade 9", request(create=["9-1", "3-1"], last_grade=9, head_teachers=("9-1",)),
     "head_teacher_invalid", "head_teachers"),
]  # fmt: skip


@pytest.mark.parametrize(("case", "data", "code", "field"), REFUSED, ids=[r[0] for r in REFUSED])
def test_a_promotion_that_cannot_be_is_refused_before_anything_is_loaded(case, data, code, field):
    with pytest.raises(Invalid) as refused:
        plan_classes(data, school_id=SCHOOL, classes=BY_ID, next_grade=NEXT_GRADE)
    assert refused.value.code == code
    assert [f.loc for f in refused.value.fields] == [[field]]


def facts(**given: Any) -> ArchiveFacts:
    values: dict[str, Any] = {"moving": frozenset(), "promoted_classes": frozenset(), "already_promoted": 0,
                              "staying": 0}  # fmt: skip
    values.update(given)
    return ArchiveFacts(**values)


CONFLICTS: list[tuple[str, ArchiveFacts, str | None, str]] = [
    ("nothing in the way", facts(moving=frozenset({uuid.uuid4()})), None, ""),
    ("a class promoted already this school year", facts(promoted_classes=frozenset({CLASSES["3-1"].id})),
     "already_promoted", "三年级1班本学年已升级"),
    ("children promoted already this school year", facts(already_promoted=3), "already_promoted", "本学年已有3名学生"),
    ("a target class still holds children staying behind", facts(staying=2), "target_class_not_empty",
     "升入的班级里还有2名"),
    ("a class promoted twice is named before its children are counted",
     facts(promoted_classes=frozenset({CLASSES["4-1"].id, CLASSES["3-1"].id}), already_promoted=5, staying=1),
     "already_promoted", "三年级1班、四年级1班本学年已升级"),
]  # fmt: skip


@pytest.mark.parametrize(("case", "given", "code", "message"), CONFLICTS, ids=[c[0] for c in CONFLICTS])
def test_a_promotion_never_moves_anyone_twice_a_year_nor_into_a_full_class(case, given, code, message):
    if code is None:
        check_conflicts(given, classes=BY_ID)
        return
    with pytest.raises(Conflict) as refused:
        check_conflicts(given, classes=BY_ID)
    assert refused.value.code == code and refused.value.message.startswith(message)


def test_the_summary_counts_each_class_as_it_was_before_anyone_moved():
    new_class = SchoolClass(school_id=SCHOOL, grade=6, name="1班")
    plan = ClassPlan(
        targets={CLASSES["6-1"].id: None, CLASSES["5-1"].id: new_class, CLASSES["3-1"].id: CLASSES["4-1"]},
        new_classes=[new_class],
    )
    children: Any = [SimpleNamespace(class_id=CLASSES[name].id) for name in ("3-1", "3-1", "6-1", "5-1", "3-1")]
    summary = promotion_summary(plan, children, classes=BY_ID)
    assert [(c.from_label, c.to_label, c.created, c.promoted, c.graduated) for c in summary] == [
        ("三年级1班", "四年级1班", False, 3, 0),
        ("五年级1班", "六年级1班", True, 1, 0),
        ("六年级1班", None, False, 0, 1),
    ]
    assert summary[2].to_class_id is None and summary[1].to_class_id == new_class.id
