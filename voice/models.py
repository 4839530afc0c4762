"""Fetch a Chinese Vosk model into var/models: ``python -m voice.models var/models [NAME]``.

Needs the internet (alphacephei.com); run by ``make models`` at deployment, never at run time.
NAME is ``vosk-model-small-cn-0.22`` (42 MB, the default) or ``vosk-model-cn-0.22`` (1.3 GB, more
accurate, needs ~4 GB of memory per process)."""
from __future__ import annotations

import shutil
import sys
import tempfile
import urllib.request
import zipfile
from pathlib import Path

MODELS = ("vosk-model-small-cn-0.22", "vosk-model-cn-0.22")
BASE_URL = "https://alphacephei.com/vosk/models"


def fetch(root: Path, name: str = MODELS[0]) -> Path:
    if name not in MODELS:
        raise ValueError(f"unknown model {name!r}; one of {', '.join(MODELS)}")
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
              "VOICE_VOSK_MODEL to it.", file=sys.stderr)
        return 1
    print(f"{name} -> {path}; set VOICE_VOSK_MODEL={path}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
