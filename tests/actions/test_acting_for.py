"""子女代办 on the web chat: a message that carries a grant acts in the elder's name only when the grant is
active and the sender's own; what is done is in the grant's trail for staff."""
from __future__ import annotations

import json
from typing import Any

from sqlalchemy import select

from actions.bills import ActionPayBill
from actions.feedback import ActionSubmitFeedback
from actions.progress import NO_NUMBER, ActionAnswerProgress, ValidateProgressForm
from services.container import Services
from services.models import SmsOutbox
from tests.actions.helpers import run, slot_events, texts, tracker

SON = "web:oa:wx0123456789abcdef:oSon00000000000000000000001"
ELDER = "13800000001"  # the sample applicant (services/seed.py): ID last four 1230


def granted(services: Services, family: str = SON, elder: str = ELDER) -> int:
    outcome, grant = services.proxies.request(family, elder, "父亲")
    assert outcome == "sent" and grant is not None
    with services.sessions() as s:
        code = json.loads(s.scalars(select(SmsOutbox.params).where(SmsOutbox.kind == "proxy_code")
                                    .order_by(SmsOutbox.id.desc())).first() or "{}")["code"]
    assert services.proxies.consent(elder, code) == "granted"
    return grant.id


def acting(grant_id: int, **kw: Any) -> Any:
    return tracker(channel="webchat", metadata={"acting_for": grant_id, "channel": "webchat"}, sender=SON, **kw)


def test_no_number_looks_up_the_elders_own_and_the_answer_says_for_whom(seeded: Services) -> None:
    grant_id = granted(seeded)
    t = acting(grant_id, text="没有编号", intent="deny", active_loop="progress_form",
               filled={"application_number": "没有编号"}, slots={"requested_slot": "application_number"})
    msgs, events = run(ValidateProgressForm(seeded), t)
    assert "用您父亲的手机号查" in texts(msgs)
    assert slot_events(events)["lookup_phone"] == ELDER  # the ID's last four are still asked
    said, _ = run(ActionAnswerProgress(seeded), acting(grant_id, slots={
        "application_number": NO_NUMBER, "lookup_phone": ELDER, "id_last4": "1230"}))
    assert texts(said).startswith("（为您父亲代查）")
    assert [e.action for e in seeded.proxies.trail(grant_id)][-1] == "progress_checked"


def test_a_grant_that_is_not_the_senders_or_has_ended_is_not_used(seeded: Services) -> None:
    others = granted(seeded, family="web:oa:wx0123456789abcdef:oOther000000000000000000001", elder="13800000042")
    t = acting(others, text="没有", intent="deny", active_loop="progress_form", filled={"application_number": "没有"},
               slots={"requested_slot": "application_number"})
    msgs, events = run(ValidateProgressForm(seeded), t)
    assert "手机号查" not in texts(msgs) and "lookup_phone" not in slot_events(events)
    mine = granted(seeded)
    # A valid grant of this sender, claimed through another channel (a rest client saying it is the web
    # chat, or the phone line), means nothing: only the web chat channel passes acting_for on.
    for channel, claimed in (("rest", {"channel": "webchat"}), ("phone", {"channel": "phone"})):
        other = tracker(channel=channel, metadata={**claimed, "acting_for": mine}, sender=SON, text="没有",
                        intent="deny", active_loop="progress_form", filled={"application_number": "没有"})
        msgs, events = run(ValidateProgressForm(seeded), other)
        assert "父亲" not in texts(msgs) and slot_events(events).get("lookup_phone") != ELDER, channel
    assert seeded.proxies.revoke_by_elder(ELDER) >= 1
    msgs, events = run(ValidateProgressForm(seeded), acting(mine, text="没有", intent="deny", active_loop="progress_form",
                                                            filled={"application_number": "没有"}))
    assert "lookup_phone" not in slot_events(events)


def test_a_bill_and_a_complaint_in_the_elders_name_are_in_the_trail(seeded: Services) -> None:
    grant_id = granted(seeded)
    (bill,) = seeded.billing.outstanding("water", "1000000002")
    said, _ = run(ActionPayBill(seeded), acting(grant_id, slots={"bill_id": str(bill.id), "bill_confirm": True}))
    assert texts(said).startswith("（为您父亲代缴）已生成缴费订单。") and "/pay/" in texts(said)
    said, _ = run(ActionSubmitFeedback(seeded), acting(grant_id, slots={
        "feedback_category": "complaint", "feedback_content": "村口路灯不亮", "feedback_location": "牡丹区",
        "feedback_contact": "anonymous"}))
    assert texts(said).startswith("（为您父亲代办）已受理。工单号：")
    assert [e.action for e in seeded.proxies.trail(grant_id)][-2:] == ["order_created", "feedback_filed"]


def test_a_flow_begun_under_a_grant_stops_when_the_grant_ends_or_changes(seeded: Services) -> None:
    from actions.common import PROXY_ENDED

    grant_id = granted(seeded)
    _, events = run(ValidateProgressForm(seeded), acting(grant_id, text="没有", intent="deny", active_loop="progress_form",
                                                         filled={"application_number": "没有"}))
    taken = slot_events(events)
    assert taken["proxy_grant"] == str(grant_id)
    under = {"application_number": NO_NUMBER, "lookup_phone": ELDER, "proxy_grant": str(grant_id),
             "requested_slot": "id_last4"}
    # Not acting any more (the page dropped the grant): the elder's number is not used for the answer.
    mine = tracker(channel="webchat", sender=SON, text="1230", active_loop="progress_form", slots=under,
                   filled={"id_last4": "1230"})
    msgs, events = run(ValidateProgressForm(seeded), mine)
    assert texts(msgs) == PROXY_ENDED and slot_events(events)["flow_stopped"] is True
    # The elder ended it before the answer.
    seeded.proxies.revoke_by_elder(ELDER)
    said, _ = run(ActionAnswerProgress(seeded), acting(grant_id, slots={**under, "id_last4": "1230"}))
    assert texts(said) == PROXY_ENDED and "高龄" not in texts(said)
