"""Pinyin search keys for names."""

import pytest

from api.pinyin import name_search_keys, normalize_query


@pytest.mark.parametrize(
    ("name", "full", "initials"),
    [
        ("张小明", "zhangxiaoming", "zxm"),
        ("王悦", "wangyue", "wy"),
        ("刘子轩", "liuzixuan", "lzx"),
        ("吕欣怡", "lvxinyi", "lxy"),  # ü typed as v, as in every pinyin input method
        ("欧阳兰英", "ouyanglanying", "oyly"),
    ],
)
def test_ordinary_names(name: str, full: str, initials: str) -> None:
    assert name_search_keys(name) == (full, initials)


@pytest.mark.parametrize(
    ("name", "full", "initials"),
    [
        # pypinyin alone reads these surnames as dan, ceng, jie, qu, chou, pu, cha, gai, tan, di, le.
        ("单雄信", "shanxiongxin", "sxx"),
        ("曾国藩", "zengguofan", "zgf"),
        ("解缙", "xiejin", "xj"),
        ("区家明", "oujiaming", "ojm"),
        ("仇英", "qiuying", "qy"),
        ("朴树", "piaoshu", "ps"),
        ("查良镛", "zhaliangyong", "zly"),
        ("盖聂", "genie", "gn"),
        ("覃小红", "qinxiaohong", "qxh"),
        ("翟天临", "zhaitianlin", "ztl"),
        ("乐毅", "yueyi", "yy"),
        ("缪可馨", "miaokexin", "mkx"),
        ("尉迟恭", "yuchigong", "ycg"),
        ("万俟卨", "moqixie", "mqx"),
        ("长孙无忌", "zhangsunwuji", "zswj"),
    ],
)
def test_polyphonic_surnames_take_their_surname_reading(name: str, full: str, initials: str) -> None:
    assert name_search_keys(name) == (full, initials)


def test_a_surname_character_later_in_the_name_keeps_its_ordinary_reading() -> None:
    # 曾 as a surname is zeng; later in the name pypinyin's reading stands.
    assert name_search_keys("曾曾") == ("zengceng", "zc")
    assert name_search_keys("张单") == ("zhangdan", "zd")


def test_surname_and_given_name_are_not_read_as_one_phrase() -> None:
    # As a phrase 曾经 is "cengjing"; as a name it is Zeng Jing.
    assert name_search_keys("曾经") == ("zengjing", "zj")


@pytest.mark.parametrize(
    ("name", "full", "initials"),
    [
        ("张 小明", "zhangxiaoming", "zxm"),
        (" 张小明\u3000", "zhangxiaoming", "zxm"),
        ("阿依古丽·买买提", "ayigulimaimaiti", "ayglmmt"),
        ("Alice王", "alicewang", "alicew"),
        ("王2", "wang2", "w2"),
        ("ＬＩ 明", "liming", "lim"),
        ("", "", ""),
    ],
)
def test_spaces_and_separators_vanish_and_non_chinese_passes_through_lowercased(
    name: str, full: str, initials: str
) -> None:
    assert name_search_keys(name) == (full, initials)


@pytest.mark.parametrize(
    ("query", "normalized"),
    [
        (" Zhang Xiao-Ming ", "zhangxiaoming"),
        ("ＺＸＭ", "zxm"),
        ("Lü Bu", "lvbu"),
        ("lu:bu", "lvbu"),
        ("张 小明", "张小明"),
        ("xiao'ming", "xiaoming"),
    ],
)
def test_normalize_query_folds_to_the_shape_of_the_keys(query: str, normalized: str) -> None:
    assert normalize_query(query) == normalized


def test_a_normalized_query_finds_the_name_by_prefix_of_either_key() -> None:
    full, initials = name_search_keys("曾梓涵")
    assert full.startswith(normalize_query("Zeng Zi"))
    assert initials.startswith(normalize_query("ZZ"))
