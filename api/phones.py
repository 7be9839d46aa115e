"""Chinese mainland phone numbers: mobile (手机) and landline (固定电话) numbers as people write them.

Normalised forms are the national ones a teacher dials: mobile ``13812345678``; landline ``0731-84567890``
with ``-123`` appended for an extension (分机). ``Phone.e164`` gives ``+86…`` for gateways that want it.
"""

import re
import unicodedata
from dataclasses import dataclass
from enum import StrEnum


class PhoneKind(StrEnum):
    mobile = "mobile"  # 手机
    landline = "landline"  # 固定电话


class PhoneError(ValueError):
    """A number we cannot dial; ``code`` is stable for API clients, ``message_zh`` is shown to users."""

    def __init__(self, code: str, message_zh: str) -> None:
        super().__init__(message_zh)
        self.code = code
        self.message_zh = message_zh


@dataclass(frozen=True, slots=True)
class Phone:
    normalized: str
    kind: PhoneKind
    area_code: str | None = None  # landlines only, with the leading 0, e.g. "0731"
    extension: str | None = None

    @property
    def e164(self) -> str:
        """The number in E.164 form (``+86…``, no extension) for SMS and voice gateways."""
        if self.kind is PhoneKind.mobile:
            return "+86" + self.normalized
        area, local = self.normalized.split("-")[:2]
        return "+86" + area[1:] + local


_MOBILE = re.compile(r"1[3-9]\d{9}")
# Local landline numbers never start with 0 (trunk prefix) or 1 (special services).
_LOCAL = re.compile(r"[2-9]\d{6,7}")
# An extension written with a word: 转123, 分机123, ext. 123, x123, #123.
_EXTENSION_WORD = re.compile(r"(?:转|分机|ext\.?|x|#)\s*(\d{1,6})\s*$", re.IGNORECASE)
_SEPARATORS = re.compile(r"[\s\-().]+")
_ALLOWED = re.compile(r"\+?[\d\s\-().]+")


def normalize_phone(raw: str, *, default_area_code: str | None = None) -> Phone:
    """Parse a phone number as typed and return its normalised form.

    Accepts +86 / 86 / 0086 prefixes, spaces, dashes, dots and brackets, and extensions written as
    ``转123``, ``分机123``, ``ext 123`` or a trailing ``-123``. A landline without an area code is completed
    with ``default_area_code`` (the school's own) if given. Raises ``PhoneError`` with code ``phone_format``
    or ``phone_area_code``.
    """
    # NFKC folds full-width digits, ＋ and （） from Chinese input methods.
    text = unicodedata.normalize("NFKC", raw).strip()
    if not text:
        raise PhoneError("phone_format", "请填写电话号码")

    extension: str | None = None
    word = _EXTENSION_WORD.search(text)
    if word:
        extension = word.group(1)
        text = text[: word.start()].strip()
    if not _ALLOWED.fullmatch(text):
        raise PhoneError("phone_format", "电话号码中有无法识别的字符")

    international = text.startswith("+")
    groups = [g for g in _SEPARATORS.split(text.removeprefix("+")) if g]
    digits = "".join(groups)

    if international:
        if not digits.startswith("86"):
            raise PhoneError("phone_format", "只支持中国大陆电话号码（+86）")
        digits = digits[2:]
    elif digits.startswith("0086"):
        international = True
        digits = digits[4:]
    elif len(digits) == 13 and digits.startswith("861"):
        digits = digits[2:]

    if not digits:
        raise PhoneError("phone_format", "请填写完整的电话号码")
    # After +86 a landline drops its trunk 0 (+86 731 …); put it back, tolerating "+86 0731 …".
    if international and not digits.startswith("0") and not re.match(r"1[3-9]", digits):
        digits = "0" + digits

    if digits.startswith("1") or (digits.startswith("01") and len(digits) == 12 and digits[:3] != "010"):
        if extension is not None:
            raise PhoneError("phone_format", "手机号码不能带分机号")
        # A 0 before a mobile number is an old habit for calling mobiles in another city.
        return _mobile(digits.removeprefix("0") if len(digits) == 12 else digits)

    whole = (digits, extension)
    candidates = [whole]
    tail = groups[-1] if len(groups) >= 2 else ""
    if extension is None and re.fullmatch(r"\d{1,6}", tail):
        split = (digits[: -len(tail)], tail)
        # "0739-5221234-6" is written area-local-extension: trust that layout when the rest is a valid number,
        # although 0739-52212346 would be valid too. Otherwise a trailing group is only a last resort.
        if len(groups) >= 3 and re.search(r"-\s*\d+$", text):
            candidates.insert(0, split)
        else:
            candidates.append(split)
    errors: dict[tuple[str, str | None], PhoneError] = {}
    for number, ext in candidates:
        try:
            return _landline(number, ext, default_area_code)
        except PhoneError as error:
            errors[(number, ext)] = error
    # Report what is wrong with the number as typed, not with a guessed reading of it.
    raise errors[whole]


def _mobile(digits: str) -> Phone:
    if len(digits) != 11:
        raise PhoneError("phone_format", f"手机号码应为11位，当前为{len(digits)}位")
    if not _MOBILE.fullmatch(digits):
        raise PhoneError("phone_format", "手机号码格式不正确")
    return Phone(normalized=digits, kind=PhoneKind.mobile)


def _landline(digits: str, extension: str | None, default_area_code: str | None) -> Phone:
    if not digits.startswith("0"):
        if default_area_code is None or not _LOCAL.fullmatch(digits):
            raise PhoneError("phone_area_code", "固定电话请加区号，例如 0739-5221234")
        digits = default_area_code + digits
    area, local = _split_area_code(digits)
    if not _LOCAL.fullmatch(local):
        raise PhoneError("phone_format", "固定电话号码（区号后）应为7到8位，且不以0或1开头")
    normalized = f"{area}-{local}" + (f"-{extension}" if extension else "")
    return Phone(normalized=normalized, kind=PhoneKind.landline, area_code=area, extension=extension)


def _split_area_code(digits: str) -> tuple[str, str]:
    # Beijing (010) and the big cities 020–029 have 3-digit area codes; every other code has 4 (e.g. 0731).
    second = digits[1:2]
    if second == "1":
        if not digits.startswith("010"):
            raise PhoneError("phone_area_code", "区号不正确：以01开头的区号只有010")
        return digits[:3], digits[3:]
    if second == "2":
        return digits[:3], digits[3:]
    if second in ("", "0"):
        raise PhoneError("phone_area_code", "区号不正确")
    return digits[:4], digits[4:]


def mask_phone(normalized: str) -> str:
    """Mask a normalised number for display: ``138****5678``, ``0731-****7890``."""
    if _MOBILE.fullmatch(normalized):
        return normalized[:3] + "****" + normalized[-4:]
    landline = re.fullmatch(r"(0\d{2,3})-(\d{7,8})((?:-\d+)?)", normalized)
    if landline:
        area, local, extension = landline.groups()
        return f"{area}-{'*' * (len(local) - 4)}{local[-4:]}{extension}"
    # Not a normalised number: still never show more than the last four characters.
    if len(normalized) <= 4:
        return "*" * len(normalized)
    return "*" * (len(normalized) - 4) + normalized[-4:]
