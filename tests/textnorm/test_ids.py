import datetime as dt

import pytest

from textnorm.ids import id_check_char, is_valid_id_number, is_valid_mobile


def test_check_character_known_answers() -> None:
    # GB 11643-1999 worked example: 11010519491231002X.
    assert id_check_char("11010519491231002") == "X"
    assert is_valid_id_number("11010519491231002X")
    assert is_valid_id_number("11010519491231002x")


@pytest.mark.parametrize(
    "number",
    [
        "110105194912310021",  # wrong check digit
        "99010519491231002X",  # no such province
        "110105194913310028",  # month 13
        "11010519491231002",  # too short
        "1101051949123100200",  # too long
        "11010519491231X02X",  # letter inside
    ],
)
def test_invalid_id_numbers(number: str) -> None:
    assert not is_valid_id_number(number)


def test_birth_date_in_the_future_is_invalid() -> None:
    year = dt.date.today().year + 1
    body = f"371702{year}0101123"
    assert not is_valid_id_number(body + id_check_char(body))


@pytest.mark.parametrize(("number", "ok"), [("13800000001", True), ("19912345678", True),
                                            ("12800000001", False), ("1380000000", False), ("138000000012", False)])
def test_mobile_numbers(number: str, ok: bool) -> None:
    assert is_valid_mobile(number) is ok
