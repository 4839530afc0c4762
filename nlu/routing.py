"""Intent corrections after DIET and the FallbackClassifier: what a classifier cannot know.

- ``OutOfDomainGuard``: DIET gives every input some intent, often confidently ("asdfgh" was ``thank``
  at 1.00), because input with no known feature looks like nothing it has learnt to refuse. The guard
  measures how much of a message the training data knows (Chinese characters, Latin words; other
  scripts and symbols are never known) and sends what is mostly unknown to ``nlu_fallback``. Characters,
  not bigrams: a recogniser's homophones are common characters in new pairs, and judged by bigrams a
  third of the phone transcripts looked unknown (bench/RESULTS.md).
- ``NumberRouter``: a message that is only a number, with words like "查一下" or "不对，是" around it,
  is ``inform``: the rules then route it by the number's entity, in or out of a form.
- ``SecondRequest``: "查一下进度，还有交个水费" is handled first as its classified intent; a later clause
  that asks for another task (``nlu.signals.second_request``) becomes the ``next_request`` entity,
  which the flow's last action offers ("还要交费吗？").
"""
from __future__ import annotations

import logging
import re
from typing import Any, Dict, List, Optional, Text, Type

from rasa.engine.graph import ExecutionContext, GraphComponent
from rasa.engine.recipes.default_recipe import DefaultV1Recipe
from rasa.engine.storage.resource import Resource
from rasa.engine.storage.storage import ModelStorage
from rasa.nlu.classifiers.classifier import IntentClassifier
from rasa.shared.constants import DEFAULT_NLU_FALLBACK_INTENT_NAME
from rasa.shared.nlu.constants import ENTITIES, INTENT, INTENT_RANKING_KEY, TEXT
from rasa.shared.nlu.training_data.message import Message
from rasa.shared.nlu.training_data.training_data import TrainingData

from nlu import CodeFingerprint, read_stored, write_stored
from nlu.signals import TASKS_OF, known_share, second_request, vocabulary
from textnorm.numbers import only_number

logger = logging.getLogger(__name__)

VOCABULARY_FILE = "known_units.json"


def _set_intent(message: Message, name: str, confidence: float) -> None:
    """Make ``name`` the message's intent, keeping the classifier's ranking below it."""
    ranking = [r for r in (message.get(INTENT_RANKING_KEY) or []) if r.get("name") != name]
    top = {"name": name, "confidence": confidence}
    message.set(INTENT, top, add_to_output=True)
    message.set(INTENT_RANKING_KEY, [top, *ranking], add_to_output=True)


@DefaultV1Recipe.register(DefaultV1Recipe.ComponentType.INTENT_CLASSIFIER, is_trainable=True)
class OutOfDomainGuard(CodeFingerprint, GraphComponent, IntentClassifier):
    """Sends a message to ``nlu_fallback`` when less than ``min_known`` of its units are known."""

    @classmethod
    def required_components(cls) -> List[Type]:
        return []  # it trains on the raw examples; it must come after the classifiers in the config

    @staticmethod
    def get_default_config() -> Dict[Text, Any]:
        return {"min_known": 0.4}

    def __init__(self, config: Dict[Text, Any], model_storage: ModelStorage, resource: Resource,
                 known: Optional[Dict[str, List[str]]] = None) -> None:
        self.config = config
        self._model_storage = model_storage
        self._resource = resource
        known = known or {}
        self.chars = set(known.get("chars", []))
        self.latin = set(known.get("latin", []))

    @classmethod
    def create(cls, config: Dict[Text, Any], model_storage: ModelStorage, resource: Resource,
               execution_context: ExecutionContext) -> "OutOfDomainGuard":
        return cls(config, model_storage, resource)

    def train(self, training_data: TrainingData) -> Resource:
        for example in training_data.training_examples:
            text = example.get(TEXT) or ""
            chars, latin = vocabulary(text)
            self.chars |= chars
            self.latin |= latin
        write_stored(self._model_storage, self._resource, VOCABULARY_FILE,
                     {"chars": sorted(self.chars), "latin": sorted(self.latin)})
        return self._resource

    @classmethod
    def load(cls, config: Dict[Text, Any], model_storage: ModelStorage, resource: Resource,
             execution_context: ExecutionContext, **kwargs: Any) -> "OutOfDomainGuard":
        known = read_stored(model_storage, resource, VOCABULARY_FILE)
        if known is None:
            logger.warning("the out-of-domain guard has no vocabulary: it lets everything through")
        return cls(config, model_storage, resource, known)

    def known_share(self, text: str) -> Optional[float]:
        """The share of a message's units the training data knows; None for a message with none
        (only digits or punctuation)."""
        return known_share(text, self.chars, self.latin)

    def process(self, messages: List[Message]) -> List[Message]:
        if not self.chars:
            return messages
        for message in messages:
            text = message.get(TEXT) or ""
            intent = (message.get(INTENT) or {}).get("name")
            if intent == DEFAULT_NLU_FALLBACK_INTENT_NAME or text.startswith("/"):
                continue
            share = self.known_share(text)
            if share is None:
                if not re.search(r"[0-9]", text):  # punctuation, symbols or nothing at all
                    _set_intent(message, DEFAULT_NLU_FALLBACK_INTENT_NAME, 1.0)
                continue
            if share < self.config["min_known"]:
                _set_intent(message, DEFAULT_NLU_FALLBACK_INTENT_NAME, 1.0 - share)
        return messages


class _AfterClassifiers(CodeFingerprint, GraphComponent, IntentClassifier):
    """A component with no state that revises what the classifiers found."""

    @classmethod
    def required_components(cls) -> List[Type]:
        return [IntentClassifier]

    @classmethod
    def create(cls, config: Dict[Text, Any], model_storage: ModelStorage, resource: Resource,
               execution_context: ExecutionContext) -> "_AfterClassifiers":
        return cls()


@DefaultV1Recipe.register(DefaultV1Recipe.ComponentType.INTENT_CLASSIFIER, is_trainable=False)
class NumberRouter(_AfterClassifiers):
    """A message that only gives a number is ``inform`` (with the number's entity from the regexes),
    unless the classifier already chose the task that number serves ("查工单10000001" is
    ``check_ticket``): the rules route both the same way."""

    def process(self, messages: List[Message]) -> List[Message]:
        for message in messages:
            text = message.get(TEXT) or ""
            found = only_number(text)
            if found is None or found.kind is None or text.startswith("/"):
                continue
            intent = (message.get(INTENT) or {}).get("name")
            if intent != "inform" and intent not in TASKS_OF.get(found.kind, ()):
                _set_intent(message, "inform", 1.0)
        return messages


@DefaultV1Recipe.register(DefaultV1Recipe.ComponentType.INTENT_CLASSIFIER, is_trainable=False)
class SecondRequest(_AfterClassifiers):
    """Adds the ``next_request`` entity when one message makes a second request."""

    ENTITY = "next_request"

    def process(self, messages: List[Message]) -> List[Message]:
        for message in messages:
            text = message.get(TEXT) or ""
            intent = (message.get(INTENT) or {}).get("name")
            if text.startswith("/") or intent in (None, DEFAULT_NLU_FALLBACK_INTENT_NAME):
                continue
            other = second_request(text, intent)
            if other:
                entity = {"entity": self.ENTITY, "value": other, "start": 0, "end": len(text),
                          "extractor": self.__class__.__name__, "confidence_entity": 1.0}
                message.set(ENTITIES, [*(message.get(ENTITIES) or []), entity], add_to_output=True)
        return messages
