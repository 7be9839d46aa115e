"""Chinese phone numbers as people type them."""

import pytest

from api.phones import PhoneError, PhoneKind, mask_phone, normalize_phone


@pytest.mark.parametrize(
    ("raw", "normalized"),
    [
        ("13812345678", "13812345678"),
        ("138 1234 5678", "13812345678"),
        ("138-1234-5678", "13812345678"),
        ("+86 138 1234 5678", "13812345678"),
        ("+86-13812345678", "13812345678"),
        ("8613812345678", "13812345678"),
        ("0086 13812345678", "13812345678"),
        ("１３８１２３４５６７８", "13812345678"),  # full-width digits
        ("013812345678", "13812345678"),  # the old 0 for a mobile in another city
        ("19912345678", "19912345678"),
    ],
)
def test_mobile_numbers_are_accepted(raw: str, normalized: str) -> None:
    phone = normalize_phone(raw)
    assert phone.kind is PhoneKind.mobile
    assert phone.normalized == normalized
    assert phone.area_code is None
    assert phone.e164 == "+86" + normalized


@pytest.mark.parametrize(
    ("raw", "normalized", "area_code", "extension"),
    [
        ("0731-84567890", "0731-84567890", "0731", None),
        ("073184567890", "0731-84567890", "0731", None),
        ("(0731) 8456 7890", "0731-84567890", "0731", None),
        ("（0731）84567890", "0731-84567890", "0731", None),
        ("0739-5221234", "0739-5221234", "0739", None),
        ("010-62345678", "010-62345678", "010", None),
        ("01062345678", "010-62345678", "010", None),
        ("020 8765 4321", "020-87654321", "020", None),
        ("029-88881234", "029-88881234", "029", None),
        ("+86 731 84567890", "0731-84567890", "0731", None),
        ("+86 10 6234 5678", "010-62345678", "010", None),
        ("0086 731 84567890", "0731-84567890", "0731", None),
        ("0731-84567890转123", "0731-84567890-123", "0731", "123"),
        ("0731-84567890 分机 8", "0731-84567890-8", "0731", "8"),
        ("0731 84567890 ext. 12", "0731-84567890-12", "0731", "12"),
        ("0731-84567890 EXT 12", "0731-84567890-12", "0731", "12"),
        ("0731-84567890-123", "0731-84567890-123", "0731", "123"),
        ("0739-5221234-6", "0739-5221234-6", "0739", "6"),
    ],
)
def test_landline_numbers_are_accepted(raw: str, normalized: str, area_code: str, extension: str | None) -> None:
    phone = normalize_phone(raw)
    assert phone.kind is PhoneKind.landline
    assert phone.normalized == normalized
    assert phone.area_code == area_code
    assert phone.extension == extension


def test_e164_of_a_landline_drops_the_trunk_zero_and_the_extension() -> None:
    assert normalize_phone("0731-84567890转123").e164 == "+8673184567890"
    assert normalize_phone("010-62345678").e164 == "+861062345678"


def test_a_local_number_takes_the_schools_area_code_when_given() -> None:
    assert normalize_phone("5221234", default_area_code="0739").normalized == "0739-5221234"


@pytest.mark.parametrize(
    "raw",
    [
        "",
        "   ",
        "12812345678",  # no mobile prefix 12
        "10012345678",
        "1381234567",  # 10 digits
        "138123456789",  # 12 digits
        "+1 202 555 0123",  # not mainland China
        "138abc45678",
        "13812345678转12",  # mobiles have no extensions
        "0731-1234567",  # local numbers do not start with 1
        "0731-0234567",
        "0731-123456",  # too short
        "0731-845678901",  # too long
        "+86",
    ],
)
def test_malformed_numbers_are_phone_format(raw: str) -> None:
    with pytest.raises(PhoneError) as caught:
        normalize_phone(raw)
    assert caught.value.code == "phone_format"
    assert caught.value.message_zh


@pytest.mark.parametrize(
    "raw",
    [
        "84567890",  # no area code and no default
        "5221234",
        "0131-2345678",  # the only 01x area code is 010
        "0012345678",
    ],
)
def test_a_missing_or_impossible_area_code_is_phone_area_code(raw: str) -> None:
    with pytest.raises(PhoneError) as caught:
        normalize_phone(raw)
    assert caught.value.code == "phone_area_code"


def test_masking_shows_only_the_last_four_digits_of_the_subscriber() -> None:
    assert mask_phone("13812345678") == "138****5678"
    assert mask_phone("0731-84567890") == "0731-****7890"
    assert mask_phone("0739-5221234") == "0739-***1234"
    assert mask_phone("010-62345678-12") == "010-****5678-12"


def test_masking_something_unexpected_still_hides_all_but_four_characters() -> None:
    assert mask_phone("+8613812345678") == "**********5678"
    assert mask_phone("123") == "***"
