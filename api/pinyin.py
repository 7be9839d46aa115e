"""Pinyin search keys for Chinese names, so that a teacher can find 张晓明 by typing "zhangxm" or "zxm".

pypinyin has no surname mode: it reads 曾 as "ceng" and 单 as "dan", while as surnames they are Zēng and Shàn.
The surname is therefore taken from a small table of surnames whose reading differs from pypinyin's default,
and the given name is converted on its own, so that phrase matching never joins the two.
"""

import re
import unicodedata

# Compound surnames whose reading differs from the characters' default readings. Rare compounds that read
# the same either way (欧阳, 司马, 诸葛…) need no entry. 单于 is left out on purpose: today "单于飞" is far
# more likely 单 Shàn + 于飞 than the ancient compound surname Chányú.
_COMPOUND_SURNAMES: dict[str, tuple[str, ...]] = {
    "尉迟": ("yu", "chi"),
    "万俟": ("mo", "qi"),
    "长孙": ("zhang", "sun"),
    "澹台": ("tan", "tai"),
    "令狐": ("ling", "hu"),
}

# Single-character surnames that pypinyin reads with a non-surname reading by default. Where a surname has
# two readings (乐 Yuè/Lè, 覃 Qín/Tán) the more common one is used.
_SURNAMES: dict[str, str] = {
    "单": "shan",
    "曾": "zeng",
    "解": "xie",
    "区": "ou",
    "仇": "qiu",
    "朴": "piao",
    "查": "zha",
    "盖": "ge",
    "覃": "qin",
    "翟": "zhai",
    "乐": "yue",
    "缪": "miao",
    "秘": "bi",
    "召": "shao",
    "繁": "po",
    "种": "chong",
    "重": "chong",
    "员": "yun",
    "句": "gou",
    "宓": "fu",
    "隗": "wei",
    "粘": "nian",
    "阚": "kan",
    "藏": "zang",
    "薄": "bo",
    "折": "she",
    "洗": "xian",
    "都": "du",
    "祭": "zhai",
    "佴": "nai",
    "蔚": "yu",
    "乜": "nie",
    "卜": "bu",
    "能": "nai",
    "黑": "he",
    "长": "chang",
}

# CJK unified ideographs, extension A, compatibility ideographs and the supplementary planes (rare name
# characters such as 𠇔 live there).
_HAN_CHARS = "\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff\U00020000-\U0003134f"
# What survives cleaning: Han characters and ASCII letters/digits; separators such as the middle dot of
# transliterated names (阿依古丽·买买提), spaces and apostrophes carry no meaning for search.
_NOT_KEPT = re.compile(f"[^a-z0-9{_HAN_CHARS}]")
_HAN_RUN = re.compile(f"([{_HAN_CHARS}]+)")


def _clean(text: str) -> str:
    folded = unicodedata.normalize("NFKC", text).lower()
    # Pinyin input methods type ü as v (lv = 吕); accept the other spellings people use.
    folded = folded.replace("ü", "v").replace("u:", "v")
    return _NOT_KEPT.sub("", folded)


def _split_surname(name: str) -> tuple[list[str], str]:
    if name[:2] in _COMPOUND_SURNAMES:
        return list(_COMPOUND_SURNAMES[name[:2]]), name[2:]
    if name[:1] in _SURNAMES:
        return [_SURNAMES[name[0]]], name[1:]
    return [], name


def name_search_keys(name: str) -> tuple[str, str]:
    """Return (full pinyin, initials) for a name, e.g. 张晓明 → ("zhangxiaoming", "zxm").

    Both are lower-case without tones or spaces; ü is written v (吕 → "lv"), as pinyin input methods do.
    Surnames read differently from everyday words are handled (曾 zeng, 单 shan, 解 xie, 区 ou…).
    Non-Chinese runs (latin letters, digits) pass through lower-cased, whole, into both keys.
    """
    # Imported on first use: pypinyin's dictionaries take some 55 MB, and a process that only reads files (most
    # API processes, most of the time) never needs them.
    from pypinyin import Style, lazy_pinyin

    cleaned = _clean(name)
    syllables, rest = _split_surname(cleaned)
    full = list(syllables)
    initials = [s[0] for s in syllables]
    # The split keeps separators: odd items are Han runs, even items the text between them.
    for i, run in enumerate(_HAN_RUN.split(rest)):
        if not run:
            continue
        if i % 2 == 0:
            full.append(run)
            initials.append(run)
            continue
        for syllable in lazy_pinyin(run, style=Style.NORMAL, errors="default"):
            full.append(syllable)
            initials.append(syllable[0])
    return "".join(full), "".join(initials)


def normalize_query(q: str) -> str:
    """Fold a search query to the shape of the keys: NFKC, lower-case, no spaces or separators, ü as v.

    Han characters are kept, so a caller can match a query with Han characters against the name itself
    and any other query against ``name_search_keys`` (prefix or substring).
    """
    return _clean(q)
