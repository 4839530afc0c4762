"""Custom Rasa NLU components (run inside the Rasa server: Python 3.10, rasa 3.6).

- ``phonetic``: pinyin of Chinese text, with the sound confusions of a phone recogniser merged.
- ``pinyin_featurizer.PinyinFeaturizer``: sparse pinyin features, so homophones ("半件" for 办件) look alike.
- ``routing.OutOfDomainGuard``: gibberish, other languages and noise go to ``nlu_fallback``.
- ``routing.NumberRouter``: a message that is only a number is routed by what the number is.
- ``routing.SecondRequest``: a second request in one message becomes the ``next_request`` entity.
"""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any

_ROOT = Path(__file__).resolve().parent.parent
# The code a trained model depends on beyond its config: a change retrains (GraphComponent.fingerprint_addon).
SOURCES = ("nlu/phonetic.py", "nlu/pinyin_featurizer.py", "nlu/routing.py", "nlu/signals.py", "textnorm/numerals.py",
           "textnorm/numbers.py", "textnorm/ids.py", "textnorm/rasa_component.py")


def source_fingerprint() -> str:
    digest = hashlib.sha256()
    for name in SOURCES:
        digest.update(name.encode() + b"\0" + (_ROOT / name).read_bytes())
    return digest.hexdigest()


class CodeFingerprint:
    """Mixin for a Rasa graph component: the model is stale when the project's NLU code changes,
    not only when the component's config does (``GraphComponent.fingerprint_addon``)."""

    @classmethod
    def fingerprint_addon(cls, config: dict) -> str:
        return source_fingerprint()


def read_stored(model_storage: Any, resource: Any, filename: str) -> Any:
    """A JSON file a trained component wrote into its resource; None when it has none."""
    import rasa.shared.utils.io

    try:
        with model_storage.read_from(resource) as path:
            return rasa.shared.utils.io.read_json_file(path / filename)
    except ValueError:
        return None


def write_stored(model_storage: Any, resource: Any, filename: str, data: Any) -> None:
    import rasa.shared.utils.io

    with model_storage.write_to(resource) as path:
        rasa.shared.utils.io.dump_obj_as_json_to_file(path / filename, data)
