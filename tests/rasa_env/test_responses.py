"""The domain's responses through Rasa's own response generator, as a turn renders them: button
payloads that carry entities (the rating and bill-type buttons) come out as valid ``/intent{json}``
and Rasa's interpolator logs nothing. With single braces it logged an ERROR with a stack and a slot
dump on every rating question, and the payload was sent unformatted."""
from __future__ import annotations

import asyncio
import json
import re
from typing import Any


def test_every_button_payload_renders_without_an_interpolator_error(domain: Any) -> None:
    from rasa.core.nlg.response import TemplatedNaturalLanguageGenerator
    from rasa.shared.core.trackers import DialogueStateTracker
    from structlog.testing import capture_logs  # Rasa 3.6 logs the interpolator's errors through structlog

    nlg = TemplatedNaturalLanguageGenerator(domain.responses)
    tracker = DialogueStateTracker.from_events("responses", [], slots=domain.slots)
    with_entities = 0
    with capture_logs() as logged:
        rendered_all = {(name, channel): asyncio.run(nlg.generate(name, tracker, channel))
                        for name, variants in domain.responses.items() if any(v.get("buttons") for v in variants)
                        for channel in ("wechat", "phone", "")}
    for name, variants in domain.responses.items():
        if not any(v.get("buttons") for v in variants):
            continue
        for channel in ("wechat", "phone", None):
            rendered = rendered_all[(name, channel or "")]
            assert rendered is not None, name
            for button in rendered.get("buttons") or []:
                payload = button["payload"]
                match = re.fullmatch(r"/(\w+)(\{.*\})?", payload)
                assert match, (name, payload)
                if match.group(2):
                    with_entities += 1
                    assert isinstance(json.loads(match.group(2)), dict), (name, payload)
    assert with_entities >= 10  # the rating and bill-type buttons were looked at
    assert [e for e in logged if e.get("log_level") in ("warning", "error")] == []
