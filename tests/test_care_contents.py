"""What each kind of care record holds: checked per kind, stored in one canonical form; dates in the past."""

from datetime import date

import pytest

from api.errors import Invalid
from api.models.care import CareKind
from api.services.care.contents import canonical_content, check_occurred_on

TALK = {"place": "教室", "topics": "想妈妈", "mood": "low"}

ACCEPTED = [
    (
        CareKind.talk,
        {**TALK, "mood_note": " 话少 ", "follow_up_needed": True},
        {**TALK, "mood_note": "话少", "follow_up_needed": True, "follow_up": None},
    ),
    (
        CareKind.home_visit,
        {"met": "祖母", "living_conditions": "砖房, 整洁", "guardian_situation": "祖母腿脚不便"},
        {"met": "祖母", "living_conditions": "砖房, 整洁", "guardian_situation": "祖母腿脚不便", "notes": None},
    ),
    (
        CareKind.guardian_contact,
        {"channel": "phone", "summary": "告知期中成绩"},
        {"channel": "phone", "summary": "告知期中成绩", "with_whom": None},
    ),
    (
        CareKind.parent_contact,
        {"channel": "letter", "summary": "给在深圳的父亲写信", "with_whom": "父亲"},
        {"channel": "letter", "summary": "给在深圳的父亲写信", "with_whom": "父亲"},
    ),
    (
        CareKind.counselling,
        {"summary": "考试焦虑"},
        {"summary": "考试焦虑", "assessment": None, "follow_up_needed": False, "referral": None},
    ),
    (
        CareKind.aid,
        {"amount_fen": 30000, "source": "donation", "donor": "县关工委"},
        {"amount_fen": 30000, "source": "donation", "donor": "县关工委", "note": None},
    ),
    (
        CareKind.award,
        {"title": "六一优秀少先队员"},
        {"title": "六一优秀少先队员", "awarded_by": None, "note": None},
    ),
]


@pytest.mark.parametrize(("kind", "raw", "stored"), ACCEPTED, ids=[k.value for k, _, _ in ACCEPTED])
def test_each_kind_is_stored_in_its_canonical_form(kind, raw, stored):
    assert canonical_content(kind, raw) == stored


REFUSED = [
    ("talk without a mood", CareKind.talk, {"place": "教室", "topics": "x"}, ["mood"]),
    ("a mood off the scale", CareKind.talk, {**TALK, "mood": "ecstatic"}, ["mood"]),
    ("a blank place", CareKind.talk, {**TALK, "place": "   "}, ["place"]),
    ("a field of another kind", CareKind.talk, {**TALK, "amount_fen": 5}, ["amount_fen"]),
    (
        "a home visit missing who was met",
        CareKind.home_visit,
        {"living_conditions": "a", "guardian_situation": "b"},
        ["met"],
    ),
    ("a contact by carrier pigeon", CareKind.guardian_contact, {"channel": "pigeon", "summary": "x"}, ["channel"]),
    ("aid of nothing", CareKind.aid, {"amount_fen": 0, "source": "donation"}, ["amount_fen"]),
    ("aid below nothing", CareKind.aid, {"amount_fen": -100, "source": "donation"}, ["amount_fen"]),
    ("aid in yuan with decimals", CareKind.aid, {"amount_fen": 300.5, "source": "donation"}, ["amount_fen"]),
    ("aid of unknown source", CareKind.aid, {"amount_fen": 100, "source": "lottery"}, ["source"]),
    ("an award without a title", CareKind.award, {}, ["title"]),
    ("a title far too long", CareKind.award, {"title": "奖" * 129}, ["title"]),
]


@pytest.mark.parametrize(("case", "kind", "raw", "wrong"), REFUSED, ids=[c[0] for c in REFUSED])
def test_content_that_does_not_fit_its_kind_is_refused_naming_the_field(case, kind, raw, wrong):
    with pytest.raises(Invalid) as caught:
        canonical_content(kind, raw)
    assert caught.value.code == "invalid_content"
    assert [f.loc[2:] for f in caught.value.fields] == [[w] for w in wrong]
    assert all(f.loc[:2] == ["body", "content"] for f in caught.value.fields)


def test_content_that_is_not_an_object_is_refused():
    with pytest.raises(Invalid) as caught:
        canonical_content(CareKind.talk, ["教室"])
    assert caught.value.code == "invalid_content"


DATES = [
    ("today", date(2026, 11, 24), None),
    ("yesterday", date(2026, 11, 23), None),
    ("the day of birth", date(2016, 3, 1), None),
    ("tomorrow", date(2026, 11, 25), "occurred_in_future"),
    ("before the child was born", date(2016, 2, 29), "occurred_too_early"),
    ("last century", date(1999, 12, 31), "occurred_too_early"),
]


@pytest.mark.parametrize(("case", "day", "code"), DATES, ids=[d[0] for d in DATES])
def test_a_record_is_dated_today_or_before_and_not_before_the_child_was_born(case, day, code):
    if code is None:
        assert check_occurred_on(day, today=date(2026, 11, 24), birth_date=date(2016, 3, 1)) == day
    else:
        with pytest.raises(Invalid) as caught:
            check_occurred_on(day, today=date(2026, 11, 24), birth_date=date(2016, 3, 1))
        assert caught.value.code == code
