"""What a number is, by length, prefix and check character; and whether a message is only a number."""
from __future__ import annotations

import pytest

from textnorm.numbers import ACCOUNT, APPLICATION, ID_LAST4, ID_NUMBER, PHONE, TICKET, kind_of, only_number


@pytest.mark.parametrize(("number", "kind"), [
    ("20261101000001", APPLICATION),
    ("10000001", TICKET),
    ("13800000001", PHONE),
    ("371702198001011230", ID_NUMBER),
    ("37172119650315002X", ID_NUMBER),
    ("1000000001", ACCOUNT),
    ("1230", ID_LAST4),
    ("002X", ID_LAST4),
    ("371702198001011231", None),  # wrong check character: not an ID number
    ("12800000001", None),          # no mobile starts 12
    ("01234567", None),
    ("12345", None),
])
def test_kind_of(number: str, kind: str | None) -> None:
    assert kind_of(number) == kind


@pytest.mark.parametrize(("text", "value", "kind"), [
    ("查一下20261101000001", "20261101000001", APPLICATION),
    ("查一下 二〇二六幺幺〇幺〇〇〇〇〇幺", "20261101000001", APPLICATION),
    ("不对，是20261101000002", "20261101000002", APPLICATION),
    ("我说错了，应该是1000000002", "1000000002", ACCOUNT),
    ("手机号幺三八 零零零零 零零零幺", "13800000001", PHONE),
    ("工单号10000001", "10000001", TICKET),
    ("后四位是幺二三叉", "123X", ID_LAST4),
    ("371702198001011230", "371702198001011230", ID_NUMBER),
    ("我的手机号码是13800000001", "13800000001", PHONE),
    ("联系电话 13800000001", "13800000001", PHONE),
    ("缴费户号1000000001", "1000000001", ACCOUNT),
    ("１３８　００００　０００１", "13800000001", PHONE),   # full-width digits and spaces
    ("１２３Ｘ", "123X", ID_LAST4),
])
def test_only_number(text: str, value: str, kind: str) -> None:
    found = only_number(text)
    assert found is not None and (found.value, found.kind) == (value, kind)


@pytest.mark.parametrize("text", [
    "村东头的路灯坏了，电话13800000001",  # a matter with a number in it
    "13800000001和13800000002",            # two numbers
    "你好", "", "查一下",
    "2026年的医保什么时候交",
])
def test_not_only_a_number(text: str) -> None:
    assert only_number(text) is None
