"""Personal numbers never show in the clear, however they were written."""
from __future__ import annotations

import pytest

from console.masking import mask, mask_data


@pytest.mark.parametrize("text, shown", [
    ("我的手机号13812345678", "我的手机号138****5678"),
    ("手机 138 1234 5678 谢谢", "手机 138****5678 谢谢"),
    ("幺三八幺二三四五六七八", "138****5678"),
    ("身份证371702198001011230", "身份证3717**********1230"),
    ("身份证号37172119650315002X", "身份证号3717**********002X"),
    ("三七幺七零二幺九八零零幺零幺幺二三零", "3717**********1230"),
    ("卡号6222021234567890123", "卡号6222***********0123"),
    ("座机0530-1234567", "座机053******67"),
])
def test_personal_numbers_are_masked(text: str, shown: str) -> None:
    assert mask(text) == shown


@pytest.mark.parametrize("text", ["工单号10000001", "受理编号20261101000001", "缴费128.50元", "最后四位1230",
                                  "两个", "2026年11月25日", "56b4ba04-18d5-4654-9d3d-991ea267e361"])
def test_other_numbers_stay_readable(text: str) -> None:
    assert mask(text) == text


def test_nested_values_are_masked() -> None:
    assert mask_data({"caller": "13800000001", "list": ["371702198001011230"], "n": 3}) == \
        {"caller": "138****0001", "list": ["3717**********1230"], "n": 3}
