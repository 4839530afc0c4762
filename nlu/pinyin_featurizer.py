"""Sparse pinyin features for DIET: what a message sounds like, beside what it is written as.

Each token gets its syllables and their bigrams (merged as ``nlu.phonetic`` merges them); the sentence
gets the syllable 1-3-grams of the whole text across token boundaries, since a misheard word is
often cut differently by jieba ("半件进度" vs "办件/进度"). Features are binary; the vocabulary is
what the training data holds (a syllable n-gram no example has carries no weight anyway).
"""
from __future__ import annotations

import logging
from typing import Any, Dict, List, Optional, Text, Type

import numpy as np
import scipy.sparse
from rasa.engine.graph import ExecutionContext, GraphComponent
from rasa.engine.recipes.default_recipe import DefaultV1Recipe
from rasa.engine.storage.resource import Resource
from rasa.engine.storage.storage import ModelStorage
from rasa.nlu.constants import TOKENS_NAMES
from rasa.nlu.featurizers.sparse_featurizer.sparse_featurizer import SparseFeaturizer
from rasa.nlu.tokenizers.tokenizer import Tokenizer
from rasa.shared.nlu.constants import TEXT
from rasa.shared.nlu.training_data.message import Message
from rasa.shared.nlu.training_data.training_data import TrainingData

from nlu import CodeFingerprint, read_stored, write_stored
from nlu.phonetic import sentence_features, token_features

logger = logging.getLogger(__name__)
VOCABULARY_FILE = "pinyin_vocabulary.json"


@DefaultV1Recipe.register(DefaultV1Recipe.ComponentType.MESSAGE_FEATURIZER, is_trainable=True)
class PinyinFeaturizer(CodeFingerprint, SparseFeaturizer, GraphComponent):
    """Binary pinyin n-gram features (sequence: per token; sentence: whole text)."""

    @classmethod
    def required_components(cls) -> List[Type]:
        return [Tokenizer]

    @staticmethod
    def get_default_config() -> Dict[Text, Any]:
        return {**SparseFeaturizer.get_default_config(), "max_ngram": 3}

    def __init__(self, config: Dict[Text, Any], model_storage: ModelStorage, resource: Resource,
                 execution_context: ExecutionContext, vocabulary: Optional[Dict[str, int]] = None) -> None:
        super().__init__(execution_context.node_name, config)
        self._model_storage = model_storage
        self._resource = resource
        self.vocabulary: Dict[str, int] = vocabulary or {}

    @classmethod
    def validate_config(cls, config: Dict[Text, Any]) -> None:
        if int(config.get("max_ngram", 3)) < 1:
            raise ValueError("max_ngram must be at least 1")

    @classmethod
    def create(cls, config: Dict[Text, Any], model_storage: ModelStorage, resource: Resource,
               execution_context: ExecutionContext) -> "PinyinFeaturizer":
        return cls(config, model_storage, resource, execution_context)

    def train(self, training_data: TrainingData) -> Resource:
        seen: set = set()
        for example in training_data.training_examples:
            text = example.get(TEXT)
            if not text:
                continue
            seen.update(sentence_features(text, self._config["max_ngram"]))
            for token in example.get(TOKENS_NAMES[TEXT]) or []:
                seen.update(token_features(token.text))
        self.vocabulary = {name: i for i, name in enumerate(sorted(seen))}
        self.persist()
        return self._resource

    def persist(self) -> None:
        write_stored(self._model_storage, self._resource, VOCABULARY_FILE, self.vocabulary)

    @classmethod
    def load(cls, config: Dict[Text, Any], model_storage: ModelStorage, resource: Resource,
             execution_context: ExecutionContext, **kwargs: Any) -> "PinyinFeaturizer":
        vocabulary = read_stored(model_storage, resource, VOCABULARY_FILE)
        if vocabulary is None:
            logger.warning("the pinyin featurizer has no vocabulary: no pinyin features")
        return cls(config, model_storage, resource, execution_context, vocabulary)

    def _row(self, names: List[str]) -> List[int]:
        return sorted({self.vocabulary[n] for n in names if n in self.vocabulary})

    def _featurize(self, message: Message) -> None:
        tokens = message.get(TOKENS_NAMES[TEXT])
        text = message.get(TEXT)
        if not tokens or not text or not self.vocabulary:
            return
        width = len(self.vocabulary)
        rows: List[int] = []
        cols: List[int] = []
        for i, token in enumerate(tokens):
            for col in self._row(token_features(token.text)):
                rows.append(i)
                cols.append(col)
        sequence = scipy.sparse.coo_matrix((np.ones(len(rows)), (rows, cols)), shape=(len(tokens), width))
        sent_cols = self._row(sentence_features(text, self._config["max_ngram"]))
        sentence = scipy.sparse.coo_matrix(
            (np.ones(len(sent_cols)), ([0] * len(sent_cols), sent_cols)), shape=(1, width))
        self.add_features_to_message(sequence, sentence, TEXT, message)

    def process(self, messages: List[Message]) -> List[Message]:
        for message in messages:
            self._featurize(message)
        return messages

    def process_training_data(self, training_data: TrainingData) -> TrainingData:
        self.process(training_data.training_examples)
        return training_data
