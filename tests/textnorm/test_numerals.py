import pytest

from textnorm.numerals import digits_only, normalize_numbers, spell_digits


@pytest.mark.parametrize(
    ("said", "expected"),
    [
        ("幺三八 幺二三四 五六七八", "13812345678"),
        ("我的编号是二〇二六幺幺〇幺〇〇〇〇〇幺", "我的编号是20261101000001"),
        ("编号二零二六一一零二零零零零零三", "编号20261102000003"),
        ("手机138-1234-5678", "手机13812345678"),
        ("身份证号三七幺七〇二幺九八〇〇幺〇幺幺二三叉", "身份证号37170219800101123X"),
        ("身份证37170219800101123x", "身份证37170219800101123X"),
        ("后四位是两零零幺", "后四位是2001"),
        ("户号１０００００００01", "户号1000000001"),
        ("幺3八", "138"),
    ],
)
def test_spoken_digit_runs_become_ascii(said: str, expected: str) -> None:
    assert normalize_numbers(said) == expected


@pytest.mark.parametrize("text", ["等一下", "两个人", "最后四位", "俺想查一下", "五分", "一一对", "三七"])
def test_ordinary_words_stay(text: str) -> None:
    assert normalize_numbers(text) == text


def test_x_ends_an_id_number_or_its_last_four_only() -> None:
    # The last four of an ID number read aloud with 叉 (X) as the check character.
    assert normalize_numbers("后四位幺二三叉") == "后四位123X"
    assert digits_only("零零二叉") == "002X"
    # Anything else keeps its 叉: it is not a check character.
    assert normalize_numbers("幺二三四叉") == "1234叉"
    assert normalize_numbers("幺二叉") == "幺二叉"


def test_digits_only_keeps_digits_and_id_check_letter() -> None:
    assert digits_only("电话：幺三八 零零零零 零零零幺") == "13800000001"
    assert digits_only("三七幺七二幺幺九六五〇三幺五〇〇二x") == "37172119650315002X"
    assert digits_only("没有") == ""


def test_spell_digits_groups_of_four_for_reading_aloud() -> None:
    assert spell_digits("10000001") == "幺零零零，零零零幺"
    assert spell_digits("002X") == "零零二叉"
