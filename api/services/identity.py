"""How a child's identity is stored, in one place for every writer (archive forms, roster import, demo).

The ID number is validated (GB 11643), encrypted at rest, indexed with a keyed blind index for uniqueness
and look-up, and kept in a masked form for display. The name gets pinyin search keys.
"""

from dataclasses import dataclass
from datetime import date

from api.crypto import FieldCipher
from api.errors import Invalid, field_error
from api.idcard import IdNumber, IdNumberError, mask_id_number, validate_id_number
from api.pinyin import name_search_keys

ID_NUMBER_CONTEXT = "child.id_number"


@dataclass(frozen=True)
class StoredIdNumber:
    parsed: IdNumber
    cipher: str
    index: str
    masked: str


def parse_id_number(raw: str, *, today: date | None = None, loc: list[str | int] | None = None) -> IdNumber:
    """Validate or raise ``Invalid`` with the validator's stable code and Chinese message."""
    try:
        return validate_id_number(raw, today=today)
    except IdNumberError as exc:
        raise Invalid(
            exc.message_zh, code=exc.code, fields=[field_error(loc or ["id_number"], exc.message_zh, exc.code)]
        ) from None


def store_id_number(cipher: FieldCipher, raw: str, *, today: date | None = None) -> StoredIdNumber:
    parsed = parse_id_number(raw, today=today)
    return StoredIdNumber(
        parsed=parsed,
        cipher=cipher.encrypt(parsed.number, context=ID_NUMBER_CONTEXT),
        index=id_number_index(cipher, parsed.number),
        masked=mask_id_number(parsed.number),
    )


def id_number_index(cipher: FieldCipher, number: str) -> str:
    """The blind index of an already validated, normalised number (for look-ups and de-duplication)."""
    return cipher.blind_index(number, context=ID_NUMBER_CONTEXT)


def reveal_id_number(cipher: FieldCipher, stored: str) -> str:
    return cipher.decrypt(stored, context=ID_NUMBER_CONTEXT)


def name_keys(name: str) -> tuple[str, str]:
    """(full pinyin, initials) of a Chinese name, for search."""
    return name_search_keys(name)
