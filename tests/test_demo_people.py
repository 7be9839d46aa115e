"""The deterministic demo-people generator."""

import random
import re
from datetime import date

import pytest

from api.demo import people as demo_people
from api.demo.people import DemoFamily, DemoPerson, families
from api.idcard import Sex, validate_id_number
from api.phones import PhoneKind, normalize_phone
from api.pinyin import name_search_keys

TODAY = date(2025, 3, 1)


@pytest.fixture(scope="module")
def sample() -> list[DemoFamily]:
    return families(random.Random(20240601), 300)


def _people(family: DemoFamily) -> list[DemoPerson]:
    return [c.person for c in family.children] + [
        family.father.person,
        family.mother.person,
        family.guardian.person,
    ]


def test_the_same_seed_gives_the_same_families() -> None:
    assert families(random.Random(42), 25) == families(random.Random(42), 25)


def test_another_seed_gives_other_families() -> None:
    assert families(random.Random(42), 25) != families(random.Random(43), 25)


def test_small_functions_are_deterministic_too() -> None:
    def draw(rng: random.Random) -> tuple[str, ...]:
        born = demo_people.birth_date(rng, 2010, 2020)
        return (
            demo_people.child_name(rng, "刘"),
            demo_people.id_number(rng, born, Sex.female),
            demo_people.mobile(rng),
            demo_people.landline(rng),
            demo_people.address(rng),
        )

    assert draw(random.Random(7)) == draw(random.Random(7))


def test_every_generated_id_number_validates_and_matches_the_person(sample: list[DemoFamily]) -> None:
    for family in sample:
        for person in _people(family):
            parsed = validate_id_number(person.id_number, today=TODAY)
            assert parsed.number == person.id_number
            assert parsed.birth_date == person.birth_date
            assert parsed.sex is person.sex
            assert parsed.region_code == demo_people.REGION_CODE


def test_id_number_follows_the_requested_sex_and_date() -> None:
    rng = random.Random(3)
    for _ in range(500):
        sex = rng.choice((Sex.male, Sex.female))
        born = demo_people.birth_date(rng, 1945, 2020)
        parsed = validate_id_number(demo_people.id_number(rng, born, sex), today=TODAY)
        assert (parsed.sex, parsed.birth_date) == (sex, born)


def test_no_id_number_or_phone_is_used_twice(sample: list[DemoFamily]) -> None:
    ids = [p.id_number for f in sample for p in _people(f)]
    phones = [x.phone for f in sample for x in (f.father, f.mother, f.guardian)]
    assert len(ids) == len(set(ids))
    assert len(phones) == len(set(phones))


def test_generations_are_born_in_their_ranges(sample: list[DemoFamily]) -> None:
    for family in sample:
        for child in family.children:
            assert 2010 <= child.person.birth_date.year <= 2020
        for parent in (family.father, family.mother):
            assert 1980 <= parent.person.birth_date.year <= 1995
            eldest = family.children[0].person.birth_date
            assert eldest.year - parent.person.birth_date.year >= 20
        if family.guardian.relation in ("祖父", "祖母", "外祖父", "外祖母"):
            assert 1945 <= family.guardian.person.birth_date.year <= 1965


def test_names_start_with_the_surname_and_children_carry_the_fathers(sample: list[DemoFamily]) -> None:
    for family in sample:
        for person in _people(family):
            assert person.name.startswith(person.surname)
            assert 2 <= len(person.name) <= 4
        for child in family.children:
            assert child.person.surname == family.father.person.surname
        assert family.mother.person.surname != family.father.person.surname


def test_the_guardians_surname_and_sex_fit_the_relation(sample: list[DemoFamily]) -> None:
    fathers_side = {"祖父": Sex.male, "叔叔": Sex.male, "姑姑": Sex.female}
    mothers_side = {"外祖父": Sex.male, "舅舅": Sex.male}
    married_in = {"祖母": Sex.female, "外祖母": Sex.female}
    relations = set()
    for family in sample:
        guardian = family.guardian
        relations.add(guardian.relation)
        if guardian.relation in fathers_side:
            assert guardian.person.surname == family.father.person.surname
            assert guardian.person.sex is fathers_side[guardian.relation]
        elif guardian.relation in mothers_side:
            assert guardian.person.surname == family.mother.person.surname
            assert guardian.person.sex is mothers_side[guardian.relation]
        elif guardian.relation in married_in:
            assert guardian.person.sex is married_in[guardian.relation]
            assert guardian.person.surname not in (family.father.person.surname, family.mother.person.surname)
        else:
            assert guardian.relation == "邻居"
        assert guardian.health in demo_people.HEALTH
    assert relations >= {"祖父", "祖母", "外祖父", "外祖母", "叔叔", "姑姑", "舅舅"}


def test_phones_are_valid_and_the_landlines_are_local(sample: list[DemoFamily]) -> None:
    kinds = set()
    for family in sample:
        for parent in (family.father, family.mother):
            assert normalize_phone(parent.phone).kind is PhoneKind.mobile
        phone = normalize_phone(family.guardian.phone)
        assert phone.normalized == family.guardian.phone
        kinds.add(phone.kind)
        if phone.kind is PhoneKind.landline:
            assert phone.area_code == demo_people.AREA_CODE
    assert kinds == {PhoneKind.mobile, PhoneKind.landline}


def test_mobiles_mix_carriers_and_never_look_made_up() -> None:
    rng = random.Random(5)
    numbers = [demo_people.mobile(rng) for _ in range(2000)]
    assert len({n[:3] for n in numbers}) > 20
    for number in numbers:
        assert normalize_phone(number).normalized == number
        subscriber = number[3:]
        assert not re.search(r"(\d)\1\1\1", subscriber)
        assert not any(s in subscriber for s in ("0123", "1234", "2345", "3456", "4567", "5678", "6789", "9876"))


def test_parents_away_have_a_city_employer_and_trade_and_those_at_home_do_not(
    sample: list[DemoFamily],
) -> None:
    for family in sample:
        assert family.parents_away, "a left-behind child has at least one parent away"
        for parent in (family.father, family.mother):
            if parent.away:
                assert parent.work_city in demo_people.WORK_CITIES
                assert parent.employer is not None and parent.employer.startswith(parent.work_city)
                assert parent.trade
            else:
                assert (parent.work_city, parent.employer, parent.trade) == (None, None, None)


def test_addresses_are_village_groups_in_the_county(sample: list[DemoFamily]) -> None:
    for family in sample:
        assert re.fullmatch(r"隆回县\w+镇\w+村([1-9]|1[0-2])组", family.address), family.address


def test_most_people_are_han_but_minorities_appear(sample: list[DemoFamily]) -> None:
    ethnicities = [c.person.ethnicity for f in sample for c in f.children]
    han_share = ethnicities.count("汉族") / len(ethnicities)
    assert 0.6 < han_share < 0.95
    assert {"苗族", "瑶族", "土家族"} <= set(ethnicities)


def test_every_generated_name_has_search_keys(sample: list[DemoFamily]) -> None:
    for family in sample:
        for person in _people(family):
            full, initials = name_search_keys(person.name)
            assert full.isascii() and full.isalpha()
            assert len(initials) == len(person.name)
