"""居民身份证号 (resident identity card numbers) as defined by GB 11643-1999.

An 18-character number reads: 6-digit region code (address at first registration), 8-digit birth date
(YYYYMMDD), 3-digit sequence whose last digit is odd for men and even for women, and an ISO 7064 MOD 11-2
check character (0-9 or X).
"""

import re
import unicodedata
from dataclasses import dataclass
from datetime import date, datetime
from enum import StrEnum

from api.clock import SHANGHAI

# ISO 7064 MOD 11-2 weights for positions 1..17 are 2^(18-i) mod 11.
_WEIGHTS = (7, 9, 10, 5, 8, 4, 2, 1, 6, 3, 7, 9, 10, 5, 8, 4, 2)
# Index = weighted sum mod 11; the value is the check character that makes the whole number ≡ 1 (mod 11).
_CHECK_CHARS = "10X98765432"
_SHAPE = re.compile(r"\d{17}[\dX]")
# Catches typos such as 0992 for 1992; not 1900, because the standard's own example was born in 1880.
_EARLIEST_BIRTH = date(1850, 1, 1)


class Sex(StrEnum):
    male = "male"  # 男
    female = "female"  # 女


class IdNumberError(ValueError):
    """Not a valid 居民身份证号; ``code`` is stable for API clients, ``message_zh`` is shown to users."""

    def __init__(self, code: str, message_zh: str) -> None:
        super().__init__(message_zh)
        self.code = code
        self.message_zh = message_zh


@dataclass(frozen=True, slots=True)
class IdNumber:
    number: str  # 18 characters, check character upper-case X
    region_code: str
    birth_date: date
    sex: Sex

    def __repr__(self) -> str:
        # Keep full numbers out of logs and tracebacks.
        return f"IdNumber(number={mask_id_number(self.number)!r}, sex={self.sex.value!r})"


def compute_check_digit(first17: str) -> str:
    """Return the ISO 7064 MOD 11-2 check character ("0"-"9" or "X") for the first 17 digits."""
    if len(first17) != 17 or not first17.isascii() or not first17.isdigit():
        raise ValueError("compute_check_digit needs exactly 17 ASCII digits")
    total = sum(int(digit) * weight for digit, weight in zip(first17, _WEIGHTS, strict=True))
    return _CHECK_CHARS[total % 11]


def _today_in_china() -> date:
    return datetime.now(SHANGHAI).date()


def validate_id_number(raw: str, *, today: date | None = None) -> IdNumber:
    """Parse and validate a 居民身份证号, returning its normalised form and what it encodes.

    Spaces (also full-width) are ignored, full-width digits and a lower-case x are accepted. ``today`` is the
    date in China used to reject future birth dates; pass it from the clock in services and tests.
    Raises ``IdNumberError`` with code ``id_number_format``, ``id_number_birth_date`` or
    ``id_number_check_digit``.
    """
    # NFKC folds the full-width digits and Ｘ that Chinese input methods produce.
    number = "".join(unicodedata.normalize("NFKC", raw).split()).upper()
    if len(number) == 15 and number.isascii() and number.isdigit():
        raise IdNumberError("id_number_format", "15位旧身份证号已停用，请填写18位居民身份证号（可在户口簿上查到）")
    if len(number) != 18:
        raise IdNumberError("id_number_format", f"身份证号应为18位，当前为{len(number)}位")
    if not _SHAPE.fullmatch(number):
        raise IdNumberError("id_number_format", "身份证号只能由数字组成，最后一位可以是X")
    if number[0] == "0":
        # No province code starts with 0; this is usually a shifted or mistyped number.
        raise IdNumberError("id_number_format", "身份证号前6位地区码不正确")

    try:
        birth = date(int(number[6:10]), int(number[10:12]), int(number[12:14]))
    except ValueError:
        raise IdNumberError("id_number_birth_date", "身份证号中的出生日期不存在") from None
    if birth < _EARLIEST_BIRTH:
        raise IdNumberError("id_number_birth_date", "身份证号中的出生日期不合理")
    if birth > (today or _today_in_china()):
        raise IdNumberError("id_number_birth_date", "身份证号中的出生日期晚于今天")

    if compute_check_digit(number[:17]) != number[17]:
        raise IdNumberError("id_number_check_digit", "身份证号校验位错误，请核对每一位数字")

    sex = Sex.male if int(number[16]) % 2 == 1 else Sex.female
    return IdNumber(number=number, region_code=number[:6], birth_date=birth, sex=sex)


def mask_id_number(number: str) -> str:
    """Mask all but the first 4 and last 4 characters, e.g. ``4306**********123X``."""
    compact = "".join(number.split()).upper()
    if len(compact) <= 8:
        return "*" * len(compact)
    return compact[:4] + "*" * (len(compact) - 8) + compact[-4:]
