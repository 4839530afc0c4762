"""Rasa NLU component that normalises spoken Chinese numbers before tokenisation.

Imported only inside the Rasa server (Python 3.10, rasa 3.6). It rewrites the message text,
so regexes, lookups and features all see "13812345678" whether the citizen typed digits or a
recogniser wrote "幺三八幺二三四五六七八". The original text stays in the tracker's event.
"""
from __future__ import annotations

from typing import Any, Dict, List

from rasa.engine.graph import ExecutionContext, GraphComponent
from rasa.engine.recipes.default_recipe import DefaultV1Recipe
from rasa.engine.storage.resource import Resource
from rasa.engine.storage.storage import ModelStorage
from rasa.shared.nlu.constants import TEXT
from rasa.shared.nlu.training_data.message import Message
from rasa.shared.nlu.training_data.training_data import TrainingData

from nlu import CodeFingerprint
from textnorm.numerals import normalize_numbers


@DefaultV1Recipe.register(
    [DefaultV1Recipe.ComponentType.MESSAGE_TOKENIZER], is_trainable=False
)
class ChineseNumeralNormalizer(CodeFingerprint, GraphComponent):
    """Rewrites digit runs said in Chinese ("幺三八", "二〇二六") as ASCII digits."""

    @classmethod
    def create(
        cls,
        config: Dict[str, Any],
        model_storage: ModelStorage,
        resource: Resource,
        execution_context: ExecutionContext,
    ) -> "ChineseNumeralNormalizer":
        return cls()

    def _normalise(self, message: Message) -> None:
        text = message.get(TEXT)
        if text:
            message.set(TEXT, normalize_numbers(text))

    def process_training_data(self, training_data: TrainingData) -> TrainingData:
        for example in training_data.training_examples:
            self._normalise(example)
        return training_data

    def process(self, messages: List[Message]) -> List[Message]:
        for message in messages:
            self._normalise(message)
        return messages
