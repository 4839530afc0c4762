"""The trained policies predict the same next action from the windowed tracker as from the full one.

Run by tests/e2e/test_turn_cost.py (inside .venv-rasa) on a long conversation the running stack
had: ``python tests/rasa_env/window_predictions.py MODEL TRACKER_JSON``. For every action of the
conversation, the tracker up to it is predicted on twice: as read in full and as
``rasa_runtime.tracker_store`` hands it to Rasa. Prints a JSON summary; exit 1 on any difference.
"""
from __future__ import annotations

import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))


def main(model: str, tracker_json: str) -> int:
    from rasa.core.agent import Agent
    from rasa.shared.core.events import ActionExecuted, deserialise_events
    from rasa.shared.core.trackers import DialogueStateTracker

    from rasa_runtime.tracker_store import DEFAULT_WINDOW, from_session_start, windowed

    agent = Agent.load(model)
    processor, domain = agent.processor, agent.domain
    events = deserialise_events(json.loads(Path(tracker_json).read_text())["events"])
    compared = cut = 0
    differences = []
    for p, event in enumerate(events):
        if not isinstance(event, ActionExecuted) or p == 0:
            continue
        def read() -> DialogueStateTracker:  # predicting changes a tracker (its follow-up action): one each
            return from_session_start(DialogueStateTracker.from_events("w", events[:p], domain.slots))

        full, window = read(), windowed(read(), DEFAULT_WINDOW)
        cut += len(window.events) < len(full.events)
        names = []
        for tracker in (full, window):
            prediction = processor._predict_next_with_tracker(tracker)
            names.append((domain.action_names_or_texts[prediction.max_confidence_index], prediction.policy_name))
        compared += 1
        if names[0] != names[1]:
            differences.append({"at": p, "full": names[0], "windowed": names[1]})
    print(json.dumps({"compared": compared, "windowed": cut, "differences": differences}, ensure_ascii=False))
    return 1 if differences else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1], sys.argv[2]))
