"""Service-guide questions through the rest channel, answered by the real action server."""
from __future__ import annotations

import re

import pytest
from sqlalchemy import select

from services.models import SmsOutbox
from tests.e2e.conftest import Running, joined

pytestmark = pytest.mark.e2e
PHONE = {"channel": "phone", "caller": "13800000002"}


def test_a_guide_question_gets_the_section_its_source_and_a_working_link(running: Running) -> None:
    answer = joined(running.say("g1", "办身份证要带什么"))
    assert "【居民身份证申领、换领、补领 · 所需材料】" in answer and "居民户口簿" in answer and "来源：" in answer
    url = re.search(r"完整指南：(http://\S+)", answer)
    assert url and url.group(1).endswith("/guide/id-card-apply")
    page = running.http.get(url.group(1))
    assert page.status_code == 200 and "办理流程" in page.text and "收费标准" in page.text
    # The follow-up names no topic: it is answered from the same guide.
    assert "【居民身份证申领、换领、补领 · 办理地点】" in joined(running.say("g1", "在哪办"))
    assert "【居民身份证申领、换领、补领 · 收费标准】" in joined(running.say("g1", "要多少钱"))


def test_the_phone_gets_a_short_answer_and_the_guide_by_sms(running: Running) -> None:
    answer = joined(running.say("g2", "办护照需要什么材料", PHONE))
    assert answer.startswith("普通护照申请的所需材料：") and "短信发给您" in answer and "http" not in answer
    assert "尾号0002" in joined(running.say("g2", "好的", PHONE))
    with running.services.sessions() as s:
        texts = [m.text for m in s.scalars(select(SmsOutbox)) if m.phone == "13800000002"]  # sealed: not searchable
    assert any("/guide/passport" in t for t in texts)


def test_an_unclear_question_offers_three_choices_and_a_number_picks(running: Running) -> None:
    offered = running.say("g3", "我想问问补贴的事")
    assert "请回复或说出 1、2、3" in joined(offered)
    titles = [b["title"] for r in offered for b in r.get("buttons") or []]
    assert len(titles) == 3
    picked = joined(running.say("g3", "第二个"))
    assert titles[1].split(". ", 1)[1] in picked


def test_a_guide_question_inside_a_form_is_answered_and_the_form_goes_on(running: Running) -> None:
    assert "受理编号" in joined(running.say("g4", "查进度"))
    answer = joined(running.say("g4", "办护照要多少钱"))
    assert "普通护照申请" in answer and "受理编号" in answer
