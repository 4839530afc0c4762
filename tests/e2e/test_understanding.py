"""How citizens really write: numbers with short verbs, corrections, two requests, gibberish, numbers
of the wrong kind, 叉 in an ID's last four, thanks and yes inside forms, ratings and numbered choices.
Real Rasa, action server and services, through the rest channel; each case as a citizen sees it."""
from __future__ import annotations

import pytest
from sqlalchemy import select

from services.models import FeedbackTicket, Rating
from tests.e2e.conftest import Running, joined

pytestmark = pytest.mark.e2e


def parse(running: Running, text: str) -> dict:  # type: ignore[type-arg]
    token = running.settings.rasa_api_token.get_secret_value()
    resp = running.http.post(f"{running.rasa_url}/model/parse", params={"token": token}, json={"text": text})
    resp.raise_for_status()
    return resp.json()


@pytest.mark.parametrize("said", ["查一下20261101000001", "帮我查查 二〇二六幺幺〇幺〇〇〇〇〇幺", "查下 20261101000001 这个"])
def test_a_number_with_a_short_verb_is_answered(running: Running, said: str) -> None:
    sender = "u-num-" + str(abs(hash(said)))
    answer = joined(running.say(sender, said))
    assert "审核中" in answer and "营业执照" in answer, answer


def test_a_ticket_number_and_a_phone_number_are_routed_by_what_they_are(running: Running) -> None:
    assert "承办部门" in joined(running.say("u-tk", "查一下10000001"))
    assert "后4位" in joined(running.say("u-ph", "俺手机号13800000001"))  # a check by phone, no number asked
    assert "查到您2件事" in joined(running.say("u-ph", "1230"))


def test_a_correction_after_an_answer_checks_the_new_number(running: Running) -> None:
    running.say("u-corr", "查进度")
    assert "营业执照" in joined(running.say("u-corr", "20261101000001"))
    answer = joined(running.say("u-corr", "不对，是20261102000003"))
    assert "社会保障卡" in answer and "待补正" in answer, answer


def test_a_correction_inside_the_bill_form_reads_the_new_amount(running: Running) -> None:
    # Water 1000000002 is paid by no test; 1000000001 may be paid already (test_flows pays it).
    running.say("u-bcorr", "交水费")
    assert "应缴28.10元" in joined(running.say("u-bcorr", "1000000002"))
    second = joined(running.say("u-bcorr", "不对，是1000000001"))
    assert "28.10" not in second and ("应缴56.30元" in second or "已经交清" in second), second
    running.say("u-bcorr", "先不交")


def test_two_requests_in_one_message(running: Running) -> None:
    answer = joined(running.say("u-two", "俺想查一下办件进度，还有交个水费"))
    assert "受理编号" in answer
    answer = joined(running.say("u-two", "20261101000001"))
    assert "营业执照" in answer and "还要交费吗" in answer and "打个分" not in answer, answer
    assert "交什么费" in joined(running.say("u-two", "好"))


@pytest.mark.parametrize("said", ["asdkjhqwe zxcmnb", "qwertyuiop", "￥%……&*（", "오늘 날씨 어때요", "ありがとうございます",
                                  "鍋碗瓢盆蝌蚪蟋蟀"])
def test_gibberish_and_other_languages_go_to_the_fallback(running: Running, said: str) -> None:
    assert parse(running, said)["intent"]["name"] == "nlu_fallback"


def test_an_id_number_where_a_water_account_was_asked(running: Running) -> None:
    running.say("u-idacc", "交水费")
    answer = joined(running.say("u-idacc", "371702198001011230"))
    assert "这是身份证号" in answer and "户号" in answer and "应缴" not in answer, answer
    assert "应缴28.10元" in joined(running.say("u-idacc", "1000000002"))  # the form goes on
    running.say("u-idacc", "不交")


def test_id_last_four_with_cha(running: Running) -> None:
    running.say("u-x", "查进度")
    running.say("u-x", "没有编号")
    running.say("u-x", "幺三八 零零零零 零零零二")
    answer = joined(running.say("u-x", "后四位零零二叉"))
    assert "社会保障卡" in answer, answer


def test_a_phone_number_given_for_the_place_is_the_contact(running: Running) -> None:
    running.say("u-loc", "俺要投诉")
    running.say("u-loc", "投诉")
    assert "哪里" in joined(running.say("u-loc", "村口的路灯坏了半个月了"))
    answer = joined(running.say("u-loc", "13800000005"))
    assert "手机号我记下了" in answer and "哪里" in answer, answer
    answer = joined(running.say("u-loc", "东明县城关镇"))
    assert "工单号" in answer, answer  # the phone number was kept: no question for it
    with running.services.sessions() as s:
        ticket = s.scalars(select(FeedbackTicket).where(FeedbackTicket.sender_id == "u-loc")).one()
    assert ticket.location == "东明县城关镇" and ticket.contact_phone == "13800000005"


def test_thanks_and_yes_inside_a_form(running: Running) -> None:
    running.say("u-ty", "查工单")
    answer = joined(running.say("u-ty", "谢谢"))
    assert "不客气" in answer and "工单号" in answer, answer
    answer = joined(running.say("u-ty", "对"))
    assert "工单号" in answer and "请问您要办什么事" not in answer, answer
    assert "承办部门" in joined(running.say("u-ty", "10000001"))


def test_ratings_count_only_for_the_rating_question(running: Running) -> None:
    assert "打个分" in joined(running.say("u-rate", "查一下10000001"))
    assert "谢谢您的评价" in joined(running.say("u-rate", "5"))
    # The rating question asked, then another question in between: a bare "2" is not a rating.
    assert "打个分" in joined(running.say("u-rate2", "查一下10000001"))
    assert "换个说法" in joined(running.say("u-rate2", "阿巴阿巴"))
    answer = joined(running.say("u-rate2", "2"))
    assert "谢谢您的评价" not in answer and "换个说法" in answer, answer
    with running.services.sessions() as s:
        assert [r.score for r in s.scalars(select(Rating).where(Rating.sender_id == "u-rate"))] == [5]
        assert s.scalars(select(Rating).where(Rating.sender_id == "u-rate2")).all() == []


def test_a_correction_at_the_confirmation_changes_the_bill(running: Running) -> None:
    running.say("u-bt", "交水费")
    assert "应缴28.10元" in joined(running.say("u-bt", "1000000002"))
    answer = joined(running.say("u-bt", "不对，是电费"))
    assert "先不交" not in answer and "户号" in answer, answer  # the electricity account is asked for
    reply = joined(running.say("u-bt", "2000000001"))
    assert "电费" in reply and ("应缴" in reply or "交清" in reply), reply
    running.say("u-bt", "不交")


def test_the_place_and_the_phone_number_in_one_reply(running: Running) -> None:
    running.say("u-lp", "俺要投诉")
    running.say("u-lp", "投诉")
    running.say("u-lp", "村口的路灯坏了半个月了")
    assert "工单号" in joined(running.say("u-lp", "东明县城关镇，电话13800000006"))
    with running.services.sessions() as s:
        ticket = s.scalars(select(FeedbackTicket).where(FeedbackTicket.sender_id == "u-lp")).one()
    assert ticket.location == "东明县城关镇" and ticket.contact_phone == "13800000006"


def test_ok_is_yes(running: Running) -> None:
    assert parse(running, "OK")["intent"]["name"] == "affirm"


def test_a_mention_is_not_a_second_request(running: Running) -> None:
    answer = joined(running.say("u-men", "我要投诉物业，然后他们还乱收水费"))
    assert "投诉" in answer or "哪里" in answer or "什么事" in answer
    assert not [e for e in parse(running, "我要投诉物业，然后他们还乱收水费")["entities"] if e["entity"] == "next_request"]


def test_misheard_words_from_a_phone_recogniser(running: Running) -> None:
    assert parse(running, "俺想查一下半件进度")["intent"]["name"] == "check_progress"
    assert parse(running, "查一下功单")["intent"]["name"] == "check_ticket"
    assert parse(running, "转员工")["intent"]["name"] == "request_human"
