"""Trackers for action tests, built from the JSON fixtures next to this file."""
from __future__ import annotations

import asyncio
import copy
import json
from pathlib import Path
from typing import Any

from rasa_sdk import Action, Tracker
from rasa_sdk.executor import CollectingDispatcher

import yaml

FIXTURES = Path(__file__).with_name("fixtures")
DOMAIN_DIR = Path(__file__).resolve().parents[2] / "bot" / "domain"


def load_domain() -> dict[str, Any]:
    """The bot's domain (slots and forms merged from bot/domain/*.yml), as the action server gets it."""
    merged: dict[str, Any] = {"slots": {}, "forms": {}, "responses": {}}
    for path in sorted(DOMAIN_DIR.glob("*.yml")):
        part = yaml.safe_load(path.read_text())
        for key in merged:
            merged[key].update(part.get(key) or {})
    return merged


DOMAIN = load_domain()


def tracker(
    fixture: str = "in_form",
    *,
    text: str = "",
    intent: str = "inform",
    channel: str = "rest",
    metadata: dict[str, Any] | None = None,
    slots: dict[str, Any] | None = None,
    active_loop: str | None = None,
    entities: list[dict[str, Any]] | None = None,
    extra_events: list[dict[str, Any]] | None = None,
    filled: dict[str, Any] | None = None,
    sender: str | None = None,
) -> Tracker:
    """A tracker from a fixture, with the latest user message and slots set as given."""
    state = json.loads((FIXTURES / f"{fixture}.json").read_text())
    state = copy.deepcopy(state)
    if sender:
        state["sender_id"] = sender
    parse = {"intent": {"name": intent, "confidence": 0.99}, "entities": entities or [], "text": text,
             "metadata": metadata or {}}
    state["events"].extend(extra_events or [])
    state["events"].append({"event": "user", "text": text, "input_channel": channel, "timestamp": 1800000100.0,
                            "parse_data": parse, "metadata": metadata or {}})
    for name, value in (filled or {}).items():  # slots the user's message filled (to be validated)
        state["events"].append({"event": "slot", "name": name, "value": value, "timestamp": 1800000100.1})
    state["latest_message"] = parse
    state["slots"].update(slots or {})
    state["slots"].update(filled or {})
    if active_loop:
        state["active_loop"] = {"name": active_loop}
    return Tracker.from_dict(state)


def run(action: Action, t: Tracker) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """Run an action; returns (messages, events)."""
    dispatcher = CollectingDispatcher()
    events = asyncio.run(action.run(dispatcher, t, DOMAIN))
    return dispatcher.messages, events


def texts(messages: list[dict[str, Any]]) -> str:
    return " ".join(m.get("text") or "" for m in messages)


def slot_events(events: list[dict[str, Any]]) -> dict[str, Any]:
    return {e["name"]: e["value"] for e in events if e.get("event") == "slot"}


def bot_said(*texts_: str) -> list[dict[str, Any]]:
    """Bot events for ``extra_events``: what the bot said right before the latest user message."""
    return [{"event": "bot", "text": t, "timestamp": 1800000099.0 + i / 10} for i, t in enumerate(texts_)]


RATING_QUESTION = DOMAIN["responses"]["utter_ask_rating"][0]["text"]
