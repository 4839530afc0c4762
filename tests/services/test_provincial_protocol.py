"""The provincial platform's signature and answer shapes (services/provincial_protocol.py).

The signature vectors were computed with OpenSSL, not with the code under test:
    printf '%s' "$BODY" | openssl dgst -sha256 -r
    printf 'HMAC-SHA256\\nPOST\\n<path>\\n<query>\\n<appId>\\n<ts>\\n<nonce>\\n<body sha256>' \\
        | openssl dgst -sha256 -hmac "$APP_KEY" -binary | base64
"""
from __future__ import annotations

import datetime as dt

import pytest

from services.provincial_protocol import (
    ProtocolError,
    Refused,
    application,
    applications,
    canonical_request,
    read_answer,
    request_body,
    signed_headers,
)
from tests.fakes.provincial import APP_ID, APP_KEY, APPLICATIONS

NONCE = "0123456789abcdef0123456789abcdef"
TS = 1800000000000
CHINA = dt.timezone(dt.timedelta(hours=8))


def test_signature_known_answer() -> None:
    body = request_body({"projid": "20261101000001"})
    assert body == b'{"projid":"20261101000001"}'
    headers = signed_headers(APP_ID, APP_KEY.encode(), "POST", "/gateway/api/v1/banjian/progress", body, TS, NONCE)
    assert headers == {
        "X-Gov-App-Id": APP_ID, "X-Gov-Timestamp": "1800000000000", "X-Gov-Nonce": NONCE,
        "X-Gov-Signature-Method": "HMAC-SHA256",
        "X-Gov-Signature": "gpZsRYAZDuVpvuvrXt1SqRVukpTOA0o7wCxg5B5J9Mc="}


def test_canonical_query_is_sorted_and_percent_encoded() -> None:
    text = canonical_request("post", "/p", {"z": "1", "a b": "x/y"}, APP_ID, TS, NONCE, b"")
    assert text.split("\n")[:4] == ["HMAC-SHA256", "POST", "/p", "a%20b=x%2Fy&z=1"]
    headers = signed_headers(APP_ID, APP_KEY.encode(), "POST", "/p", b"", TS, NONCE, {"z": "1", "a b": "x/y"})
    assert headers["X-Gov-Signature"] == "TFDvR/4FzGdNSgLd5OHDlz4FXtjZii6oDl4IHjOhDx4="


def test_answers_are_data_not_found_or_refusals() -> None:
    assert read_answer(200, b'{"code":"0","message":"ok","data":{"a":1}}') == {"a": 1}
    assert read_answer(404, b'{"code":"40401","message":"no"}') is None
    with pytest.raises(Refused) as refused:
        read_answer(404, b'{"code":"40400","message":"no such path"}')  # a wrong URL is not "not found"
    assert (refused.value.status, refused.value.code) == (404, "40400")
    with pytest.raises(Refused):
        read_answer(200, b'{"code":"40301","message":"not authorised"}')
    for garbage in (b"<html>502</html>", b"[]", b'{"message":"x"}'):
        with pytest.raises(ProtocolError):
            read_answer(200, garbage)


def test_an_application_maps_to_the_assistants_view() -> None:
    view = application(APPLICATIONS["20261101000001"])
    assert (view.number, view.service_name, view.status, view.current_step) == (
        "20261101000001", "个体工商户营业执照设立登记", "审核中", "材料审核")
    assert view.expected_date == dt.date(2026, 11, 20) and view.office.startswith("牡丹区")
    assert view.submitted_at == dt.datetime(2026, 11, 1, 9, 30, tzinfo=CHINA)
    # The step under way (no end time) is not history; the rest is in time order.
    assert [(s, r) for s, r, _ in view.steps] == [("网上申请", "已提交"), ("受理", "已受理")]


def test_a_finished_application_has_no_step_or_date_to_say() -> None:
    view = application(APPLICATIONS["20261101000002"])
    assert (view.status, view.current_step, view.expected_date) == ("已办结", "已办结", None)


@pytest.mark.parametrize("code, said", [("01", "待受理"), ("04", "待补正"), ("05", "审批中"), ("07", "不予受理"),
                                        ("09", "特别程序中"), ("99", "办理中")])
def test_status_codes_are_said_in_plain_words(code: str, said: str) -> None:
    item = {**APPLICATIONS["20261101000001"], "status": code, "currentNode": ""}
    view = application(item)
    assert view.status == said
    assert view.current_step == "受理"  # no current node given: the last step done


def test_misshapen_applications_are_protocol_errors() -> None:
    base = APPLICATIONS["20261101000001"]
    for bad in ({**base, "serviceName": None}, {**base, "applyTime": "01/11/2026"}, {**base, "promiseDate": "soon"},
                {**base, "nodes": {"a": 1}}, {**base, "status": 3}, "text"):
        with pytest.raises(ProtocolError):
            application(bad)
    with pytest.raises(ProtocolError):
        applications({"items": "x"})


def test_applications_by_applicant_come_newest_first() -> None:
    found = applications({"items": [APPLICATIONS["20261101000002"], APPLICATIONS["20261101000001"]], "total": 2})
    assert [a.number for a in found] == ["20261101000001", "20261101000002"]
    assert applications(None) == [] and applications({"items": []}) == []
