"""Family proxy (services/proxy.py): requests, consent by code, revocation, expiry and the trail."""
from __future__ import annotations

import datetime as dt
import json
from collections.abc import Iterator

import pytest
from sqlalchemy import select, text, update
from sqlalchemy.exc import DBAPIError

from services.container import Services
from services.models import ProxyAudit, ProxyGrant, SmsOutbox
from services.proxy import MAX_WRONG_CODES, REQUESTS_PER_DAY, SqlProxies, mobile
from services.sms import Limits, NumberIndex, OutboxGateway, SmsSender
from tests.fakes.clock import WallClock

ELDER = "13800000041"
OTHER_ELDER = "13900000042"
SON = "web:oa:openid-son"
DAUGHTER = "web:oa:openid-daughter"
T0 = dt.datetime(2026, 12, 7, 2, 0, tzinfo=dt.timezone.utc)  # 10:00 in Heze




class Codes:
    """The codes drawn, in order; the next ones may be scripted."""

    def __init__(self) -> None:
        self.drawn: list[str] = []
        self.script: list[str] = []

    def __call__(self) -> str:
        code = self.script.pop(0) if self.script else f"{100000 + len(self.drawn) * 7919:06d}"
        self.drawn.append(code)
        return code


@pytest.fixture
def clock() -> WallClock:
    return WallClock(T0)


@pytest.fixture
def codes() -> Codes:
    return Codes()


@pytest.fixture
def proxies(services: Services, clock: WallClock, codes: Codes) -> Iterator[SqlProxies]:
    index = NumberIndex(b"k" * 32)
    sms = SmsSender(services.sessions, OutboxGateway(), index, sign_name="菏泽政务", base_url="https://h",
                    limits=Limits(dt.timedelta(minutes=1), 10), now=clock)
    yield SqlProxies(services.sessions, sms, index, consent_days=90, code_ttl=dt.timedelta(hours=24), now=clock,
                     draw_code=codes)


def texts(services: Services) -> list[str]:
    with services.sessions() as s:
        return [row.text for row in s.scalars(select(SmsOutbox).order_by(SmsOutbox.id))]


def actions(proxies: SqlProxies, grant_id: int) -> list[tuple[str, str]]:
    return [(a.actor, a.action) for a in proxies.trail(grant_id)]


def test_mobile_numbers_are_read_as_citizens_and_exchanges_write_them() -> None:
    assert mobile("+86 138-0000-0041") == mobile("幺三八零零零零零零四幺") == ELDER
    assert mobile("0086" + ELDER) == ELDER
    assert mobile("05306666666") is None and mobile("1380000004") is None and mobile("") is None


def test_a_request_texts_a_code_and_the_elder_consents_with_it(services: Services, proxies: SqlProxies,
                                                                 codes: Codes, clock: WallClock) -> None:
    outcome, grant = proxies.request(SON, "138 0000 0041", "父亲")
    assert outcome == "sent" and grant is not None and grant.status == "pending" and grant.elder_phone == ELDER
    assert grant.expires_at == T0 + dt.timedelta(hours=24)
    [sms] = texts(services)
    assert sms == (f"【菏泽政务】您的子女申请代您办理政务服务，验证码{codes.drawn[0]}，1天内有效。同意请用本机拨打12345，"
                   "说“同意代办”，再按键输入验证码。验证码不要告诉别人，工作人员不会向您要。不同意请不要理会。")
    with services.sessions() as s:
        row = s.get(ProxyGrant, grant.id)
        assert row is not None and codes.drawn[0] not in (row.code_hash or "") and len(row.code_hash or "") == 64
        assert ELDER not in s.execute(text("SELECT elder_phone FROM proxy_grants")).scalar_one()  # sealed
    assert proxies.check(grant.id, SON) is None  # not before consent
    clock.advance(minutes=5)
    assert proxies.consent("+86" + ELDER, codes.drawn[0]) == "granted"
    active = proxies.check(grant.id, SON)
    assert active is not None and active.status == "active" and active.consented_at == clock.now
    assert active.expires_at == clock.now + dt.timedelta(days=90)
    assert proxies.check(grant.id, DAUGHTER) is None  # someone else's grant
    assert "现在可以代您办理政务服务，2027年3月7日前有效" in texts(services)[-1]
    assert [v.id for v in proxies.of_elder(ELDER)] == [grant.id]
    assert actions(proxies, grant.id) == [("family", "requested"), ("elder", "consented")]
    assert proxies.consent(ELDER, codes.drawn[0]) == "no_request"  # a code works once
    assert proxies.request(SON, ELDER, "父亲")[0] == "already_active"


def test_a_consent_keyed_in_at_once_still_texts_the_notice(services: Services, proxies: SqlProxies,
                                                            codes: Codes) -> None:
    """Someone holding the elder's phone keys the code in within the minute: the notice that tells the
    elder must not be held back by the one-a-minute rule."""
    proxies.request(SON, ELDER, "母亲")
    assert proxies.consent(ELDER, codes.drawn[0]) == "granted"
    with services.sessions() as s:
        assert [k for k in s.scalars(select(SmsOutbox.kind).order_by(SmsOutbox.id))] == ["proxy_code", "proxy_granted"]
    assert "不是您同意的" in texts(services)[-1] and "拨打12345说“解除代办”" in texts(services)[-1]


def test_the_trail_never_holds_a_whole_number(proxies: SqlProxies) -> None:
    _, grant = proxies.request(SON, ELDER, "母亲")
    assert grant is not None
    proxies.audit(grant.id, "family", "bill_paid", f"户号1000000001，给{ELDER}发了短信")
    details = " ".join(a.detail for a in proxies.trail(grant.id))
    assert ELDER not in details and "138****0041" in details and "1000000001" not in details


def test_a_new_request_replaces_the_code_and_three_a_day_is_the_limit(services: Services, proxies: SqlProxies,
                                                                        codes: Codes, clock: WallClock) -> None:
    _, first = proxies.request(SON, ELDER, "父亲")
    clock.advance(minutes=2)  # the SMS limit: one a minute per number
    _, second = proxies.request(SON, ELDER, "父亲")
    assert first is not None and second is not None and first.id == second.id
    assert proxies.consent(ELDER, codes.drawn[0]) == "wrong_code"  # the old code is gone
    clock.advance(minutes=2)
    assert proxies.request(SON, OTHER_ELDER, "母亲")[0] == "sent"
    clock.advance(minutes=2)
    assert proxies.request(SON, "13700000043", "家人") == ("too_many", None)
    assert proxies.request(DAUGHTER, "13700000043", "家人")[0] == "sent"  # per family member
    clock.advance(hours=24)  # the next day in Heze
    assert proxies.request(SON, "13700000043", "家人")[0] == "sent"
    assert len(texts(services)) == 5


def test_a_second_request_that_cannot_be_texted_keeps_the_first_code(proxies: SqlProxies, codes: Codes) -> None:
    _, grant = proxies.request(SON, ELDER, "父亲")
    assert proxies.request(SON, ELDER, "父亲") == ("rate_limited", None)  # a double click: the SMS limit
    assert grant is not None and [g.status for g in proxies.of_family(SON)] == ["pending"]
    assert actions(proxies, grant.id) == [("family", "requested"), ("family", "code_resent"),
                                          ("system", "sms_not_sent")]
    assert proxies.consent(ELDER, codes.drawn[0]) == "granted"


def test_refusals_and_a_code_that_could_not_be_sent(services: Services, proxies: SqlProxies) -> None:
    assert proxies.request(SON, "1380000004", "父亲") == ("invalid_phone", None)
    assert proxies.request(SON, "010-66666666", "父亲") == ("invalid_phone", None)
    proxies.sms.opt_out(ELDER)
    assert proxies.request(SON, ELDER, "父亲") == ("opted_out", None)
    [ended] = proxies.listing()
    assert ended.status == "ended" and ended.ended_by == "system"
    assert actions(proxies, ended.id) == [("family", "requested"), ("system", "sms_not_sent")]
    assert proxies.of_family(SON) == [] and texts(services) == []


def test_an_unknown_relation_is_family(proxies: SqlProxies) -> None:
    _, grant = proxies.request(SON, ELDER, "<script>")
    assert grant is not None and grant.relation == "家人" and grant.asker == "家人"


def test_wrong_codes_lock_the_request_and_a_new_request_unlocks_it(proxies: SqlProxies, codes: Codes,
                                                                    clock: WallClock) -> None:
    _, grant = proxies.request(SON, ELDER, "父亲")
    assert grant is not None
    wrong = "000000" if codes.drawn[0] != "000000" else "111111"
    answers = [proxies.consent(ELDER, wrong) for _ in range(MAX_WRONG_CODES + 1)]
    assert answers == ["wrong_code"] * (MAX_WRONG_CODES - 1) + ["locked", "locked"]
    assert proxies.consent(ELDER, codes.drawn[0]) == "locked"  # even the right code, now
    trail = actions(proxies, grant.id)
    assert trail.count(("elder", "wrong_code")) == MAX_WRONG_CODES and ("system", "locked") in trail
    clock.advance(minutes=2)
    assert proxies.request(SON, ELDER, "父亲")[0] == "sent"
    assert proxies.consent(ELDER, codes.drawn[1]) == "granted"


def test_a_wrong_code_counts_against_each_pending_request_and_the_right_one_picks_its_own(
        proxies: SqlProxies, codes: Codes, clock: WallClock) -> None:
    codes.script = ["111111", "222222"]
    _, son = proxies.request(SON, ELDER, "父亲")
    clock.advance(minutes=2)
    _, daughter = proxies.request(DAUGHTER, ELDER, "父亲")
    assert son is not None and daughter is not None
    assert proxies.consent(ELDER, "333333") == "wrong_code"
    assert proxies.consent(ELDER, "12345") == "wrong_code"  # the wrong length never matches
    assert proxies.consent(ELDER, "二二二二二二") == "granted"  # spoken digits, as the recogniser may write them
    assert proxies.check(daughter.id, DAUGHTER) is not None and proxies.check(son.id, SON) is None
    assert [g.status for g in proxies.of_family(SON)] == ["pending"]


def test_codes_and_consents_expire(proxies: SqlProxies, codes: Codes, clock: WallClock) -> None:
    _, grant = proxies.request(SON, ELDER, "父亲")
    assert grant is not None
    clock.advance(hours=24, seconds=1)
    assert proxies.consent(ELDER, codes.drawn[0]) == "no_request"
    assert proxies.listing("expired")[0].id == grant.id and proxies.of_family(SON) == []
    _, grant = proxies.request(SON, ELDER, "父亲")
    assert grant is not None and proxies.consent(ELDER, codes.drawn[1]) == "granted"
    clock.advance(days=90)
    assert proxies.check(grant.id, SON) is None
    assert [g.status for g in proxies.listing()] == ["expired", "expired"]
    assert actions(proxies, grant.id)[-1] == ("system", "expired")


def test_the_elder_ends_every_grant_and_the_family_or_staff_end_one(proxies: SqlProxies, codes: Codes,
                                                                    clock: WallClock) -> None:
    assert proxies.revoke_by_elder(ELDER) == 0
    _, son = proxies.request(SON, ELDER, "父亲")
    clock.advance(minutes=2)
    _, daughter = proxies.request(DAUGHTER, ELDER, "母亲")
    clock.advance(minutes=2)
    _, other = proxies.request(DAUGHTER, OTHER_ELDER, "母亲")
    assert son is not None and daughter is not None and other is not None
    assert proxies.consent(ELDER, codes.drawn[0]) == "granted"
    assert proxies.revoke_by_elder("+86 " + ELDER) == 2  # the active and the pending one
    assert proxies.revoke_by_elder(ELDER) == 0
    assert {g.id: (g.status, g.ended_by) for g in proxies.listing("ended")} == {
        son.id: ("ended", "elder"), daughter.id: ("ended", "elder")}
    assert actions(proxies, son.id)[-1] == ("elder", "revoked")
    assert not proxies.end_by_family(SON, other.id)  # not his
    assert proxies.end_by_staff(other.id, "lead") and not proxies.end_by_staff(other.id, "lead")
    assert actions(proxies, other.id)[-1] == ("staff:lead", "ended")
    clock.advance(minutes=2)
    _, again = proxies.request(DAUGHTER, OTHER_ELDER, "母亲")
    assert again is not None and proxies.end_by_family(DAUGHTER, again.id)
    assert proxies.listing("ended")[0].ended_by == "family"


def test_the_trail_is_append_only_in_the_database(services: Services, proxies: SqlProxies) -> None:
    _, grant = proxies.request(SON, ELDER, "父亲")
    assert grant is not None
    for change in (update(ProxyAudit).values(actor="someone"), text("DELETE FROM proxy_audit")):
        with services.sessions() as s, pytest.raises(DBAPIError, match="append-only"):
            s.execute(change)
            s.commit()
    assert actions(proxies, grant.id) == [("family", "requested")]


def test_the_code_template_fits_the_carriers_limits(proxies: SqlProxies, services: Services) -> None:
    proxies.request(SON, ELDER, "外婆")
    with services.sessions() as s:
        params = json.loads(s.scalars(select(SmsOutbox.params)).one() or "{}")
    assert params.keys() == {"relation", "code", "days"} and params["relation"] == "孙子孙女"
    assert all(len(v) <= 35 for v in params.values())
    assert REQUESTS_PER_DAY == 3
