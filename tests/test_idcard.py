"""居民身份证号 validation (GB 11643-1999)."""

import random
from datetime import date

import pytest

from api.idcard import IdNumberError, Sex, compute_check_digit, mask_id_number, validate_id_number

TODAY = date(2025, 3, 1)


def _mod_11_2_holds(number: str) -> bool:
    """ISO 7064 MOD 11-2 written the other way round: sum of a_i * 2^(18-i) over all 18 places ≡ 1 (mod 11)."""
    values = [10 if c == "X" else int(c) for c in number]
    return sum(v * pow(2, 17 - i, 11) for i, v in enumerate(values)) % 11 == 1


def test_the_standards_own_examples_have_the_check_digits_it_prints() -> None:
    # 1·7 + 1·9 + 0·10 + 1·5 + 0·8 + 5·4 + 1·2 + 9·1 + 4·6 + 9·3 + 1·7 + 2·9 + 3·10 + 1·5 + 0·8 + 0·4 + 2·2
    # = 167; 167 mod 11 = 2 → "X"
    assert compute_check_digit("11010519491231002") == "X"
    # 4·7 + 4·9 + 0 + 5·5 + 2·8 + 4·4 + 1·2 + 8·1 + 8·6 + 0 + 0 + 1·9 + 0 + 1·5 + 0 + 0 + 1·2
    # = 195; 195 mod 11 = 8 → "4"
    assert compute_check_digit("44052418800101001") == "4"


def test_a_hunan_number_computed_by_hand() -> None:
    # 4·7 + 3·9 + 0·10 + 5·5 + 2·8 + 4·4 + 2·2 + 0·1 + 1·6 + 5·3 + 0·7 + 9·9 + 1·10 + 4·5 + 6·8 + 6·4 + 3·2
    # = 326; 326 mod 11 = 7 → "5"
    assert compute_check_digit("43052420150914663") == "5"


def test_check_digit_satisfies_iso_7064_for_many_numbers() -> None:
    rng = random.Random(11643)
    for _ in range(2000):
        first17 = "".join(rng.choice("0123456789") for _ in range(17))
        assert _mod_11_2_holds(first17 + compute_check_digit(first17))


def test_every_check_character_occurs() -> None:
    rng = random.Random(0)
    seen = {compute_check_digit("".join(rng.choice("0123456789") for _ in range(17))) for _ in range(3000)}
    assert seen == set("0123456789X")


@pytest.mark.parametrize("bad", ["1101051949123100", "110105194912310021", "1101051949123100a", ""])
def test_compute_check_digit_needs_17_digits(bad: str) -> None:
    with pytest.raises(ValueError):
        compute_check_digit(bad)


def test_a_valid_number_is_parsed_into_region_birth_date_and_sex() -> None:
    parsed = validate_id_number("11010519491231002X", today=TODAY)
    assert parsed.number == "11010519491231002X"
    assert parsed.region_code == "110105"
    assert parsed.birth_date == date(1949, 12, 31)
    assert parsed.sex is Sex.female  # 17th digit 2 is even


def test_an_odd_17th_digit_means_male() -> None:
    parsed = validate_id_number("440524188001010014", today=TODAY)
    assert parsed.sex is Sex.male
    assert parsed.birth_date == date(1880, 1, 1)
    assert validate_id_number("430524201509146635", today=TODAY).sex is Sex.male


@pytest.mark.parametrize(
    "raw",
    [
        "11010519491231002x",
        " 110105 19491231 002X ",
        "１１０１０５１９４９１２３１００２Ｘ",  # full-width, as Chinese input methods type it
        "110105\u300019491231002x",  # ideographic space
    ],
)
def test_spaces_lower_case_x_and_full_width_characters_are_accepted(raw: str) -> None:
    assert validate_id_number(raw, today=TODAY).number == "11010519491231002X"


@pytest.mark.parametrize(
    "raw",
    [
        "11010519491231002",  # 17
        "11010519491231002X1",  # 19
        "1101051949123100X2",  # X not last
        "11010519491231-02X",
        "A1010519491231002X",
        "",
        "01010519491231002X",  # no region code starts with 0
    ],
)
def test_malformed_numbers_are_id_number_format(raw: str) -> None:
    with pytest.raises(IdNumberError) as caught:
        validate_id_number(raw, today=TODAY)
    assert caught.value.code == "id_number_format"
    assert caught.value.message_zh


def test_a_15_digit_legacy_number_is_refused_with_its_own_message() -> None:
    with pytest.raises(IdNumberError) as caught:
        validate_id_number("110105491231002", today=TODAY)
    assert caught.value.code == "id_number_format"
    assert "15位" in caught.value.message_zh


def _with_check(first17: str) -> str:
    return first17 + compute_check_digit(first17)


@pytest.mark.parametrize(
    "birth",
    ["20190229", "20151301", "20150230", "20150431", "20150000", "18491231", "09920101"],
)
def test_impossible_birth_dates_are_id_number_birth_date(birth: str) -> None:
    with pytest.raises(IdNumberError) as caught:
        validate_id_number(_with_check(f"430524{birth}123"), today=TODAY)
    assert caught.value.code == "id_number_birth_date"


def test_a_leap_day_birth_is_fine() -> None:
    assert validate_id_number(_with_check("43052420160229123"), today=TODAY).birth_date == date(2016, 2, 29)


def test_a_birth_date_after_today_is_refused_but_today_itself_is_fine() -> None:
    assert validate_id_number(_with_check("43052420250301123"), today=TODAY).birth_date == TODAY
    with pytest.raises(IdNumberError) as caught:
        validate_id_number(_with_check("43052420250302123"), today=TODAY)
    assert caught.value.code == "id_number_birth_date"


def test_without_today_the_current_date_in_china_is_used() -> None:
    with pytest.raises(IdNumberError) as caught:
        validate_id_number(_with_check("43052430000101123"))
    assert caught.value.code == "id_number_birth_date"


@pytest.mark.parametrize("wrong", [c for c in "0123456789X" if c != "X"])
def test_any_other_check_character_is_id_number_check_digit(wrong: str) -> None:
    with pytest.raises(IdNumberError) as caught:
        validate_id_number("11010519491231002" + wrong, today=TODAY)
    assert caught.value.code == "id_number_check_digit"
    assert "校验位" in caught.value.message_zh


def test_a_single_mistyped_digit_is_caught_by_the_check_digit() -> None:
    # MOD 11-2 detects every single-digit substitution; typing 3 for 2 in the sequence number is one.
    with pytest.raises(IdNumberError) as caught:
        validate_id_number("11010519491231003X", today=TODAY)
    assert caught.value.code == "id_number_check_digit"


def test_mask_keeps_the_first_four_and_last_four() -> None:
    assert mask_id_number("43062120150914123X") == "4306**********123X"
    assert mask_id_number("43062120150914123x") == "4306**********123X"
    assert mask_id_number("12345678") == "********"


def test_the_repr_of_a_parsed_number_does_not_show_it() -> None:
    parsed = validate_id_number("11010519491231002X", today=TODAY)
    assert "19491231" not in repr(parsed)
    assert "1101**********002X" in repr(parsed)
