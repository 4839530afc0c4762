"""Progress from the provincial platform (the local fake, over HTTP): answers as from the service
database; when the platform is down, a short apology and a human offered, never "not found"."""
from __future__ import annotations

import dataclasses
from collections.abc import Iterator
from typing import Any

import pytest
from pydantic import SecretStr

from actions.conversation import ActionAcceptOffer, ActionHandoff
from actions.progress import NO_NUMBER, ActionAnswerProgress, ValidateProgressForm
from services import provincial
from services.container import Services
from tests.actions.helpers import DOMAIN, bot_said, run, slot_events, texts, tracker
from tests.sandbox import make_settings
from tests.fakes.provincial import APP_ID, APP_KEY, FakeProvincialPlatform, down_url, serve

APOLOGY = DOMAIN["responses"]["utter_progress_unavailable"][0]["text"]


def on_platform(services: Services, url: str) -> Services:
    settings = make_settings(applications_backend="provincial", provincial_base_url=url, provincial_app_id=APP_ID,
                             provincial_app_key=SecretStr(APP_KEY), provincial_retries=1, provincial_backoff_s=0.01)
    return dataclasses.replace(services, applications=provincial.build(settings))


@pytest.fixture
def up(services: Services) -> Iterator[Services]:
    with serve(FakeProvincialPlatform()) as url:
        yield on_platform(services, url)


@pytest.fixture
def down(services: Services) -> Services:
    return on_platform(services, down_url())


def offered_human(msgs: list[dict[str, Any]]) -> bool:
    return [m.get("response") for m in msgs] == ["utter_progress_unavailable"]


def test_the_platform_answers_progress_as_the_database_does(up: Services) -> None:
    _, events = run(ValidateProgressForm(up), tracker(active_loop="progress_form", text="20261101000001",
                                                      filled={"application_number": "20261101000001"}))
    assert slot_events(events)["application_number"] == "20261101000001"
    msgs, events = run(ActionAnswerProgress(up), tracker(slots={"application_number": "20261101000001"}))
    text = texts(msgs)
    assert "审核中" in text and "材料审核" in text and "预计11月20日办完" in text
    assert slot_events(events)["awaiting_rating"] == "progress"


def test_platform_down_at_the_answer_apologises_and_offers_a_human(down: Services) -> None:
    msgs, events = run(ActionAnswerProgress(down), tracker(slots={"application_number": "20261101000001"}))
    assert offered_human(msgs)  # no "没有查到", no rating question
    slots = slot_events(events)
    assert slots["application_number"] is None and "awaiting_rating" not in slots


def test_platform_down_while_checking_the_number_ends_the_form_with_the_offer(down: Services) -> None:
    msgs, events = run(ValidateProgressForm(down), tracker(active_loop="progress_form", text="20261101000001",
                                                           filled={"application_number": "20261101000001"}))
    assert offered_human(msgs)
    slots = slot_events(events)
    assert slots["flow_stopped"] is True and slots["requested_slot"] is None
    assert slots["failed_attempts"] == 0  # the citizen did nothing wrong: no hand-off counted against them


def test_platform_down_while_checking_by_phone_ends_the_form_with_the_offer(down: Services) -> None:
    msgs, events = run(ValidateProgressForm(down), tracker(
        active_loop="progress_form", text="1230", filled={"id_last4": "1230"},
        slots={"application_number": NO_NUMBER, "lookup_phone": "13800000001"}))
    assert offered_human(msgs)
    assert slot_events(events)["flow_stopped"] is True


def test_yes_to_the_offer_hands_off_and_the_handoff_is_recorded(down: Services) -> None:
    _, events = run(ActionAcceptOffer(down), tracker(text="好", intent="affirm", extra_events=bot_said(APOLOGY)))
    assert {"event": "followup", "name": "action_handoff"} in [
        {"event": e["event"], "name": e.get("name")} for e in events]
    msgs, events = run(ActionHandoff(down), tracker(text="好", intent="affirm", channel="rest",
                                                   metadata={"channel": "phone"}, extra_events=bot_said(APOLOGY)))
    assert "转人工" in texts(msgs) and any(m.get("custom", {}).get("handoff") for m in msgs)
    assert slot_events(events)["handoff_id"]


def test_yes_to_anything_else_still_shows_the_menu(down: Services) -> None:
    msgs, _ = run(ActionAcceptOffer(down), tracker(text="好", intent="affirm", extra_events=bot_said("没有查到您的办件。")))
    assert [m.get("response") for m in msgs] == ["utter_menu"]
