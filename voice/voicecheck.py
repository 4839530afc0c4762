"""Every sentence the phone line can say, and espeak-ng's verdict on each: does it stay Mandarin?

espeak-ng marks a switch of language in its phoneme output (``espeak-ng -x``) as ``(en)`` ...
``(cmn)``; a sentence with such a switch is read to the caller as English letters or pinyin.
Used by the tests (tests/voice/test_wording.py, tests/e2e/test_asterisk.py) and by
``python -m voice.voicecheck`` for an operator who edited the domain or the guides."""
from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path
from typing import Any, Iterable

import yaml

from voice.wording import PROMPTS, readback, sentences, speakable, spoken_choices

SWITCH = re.compile(r"\([a-z]{2,3}(?:-[a-z]+)*\)")
ROOT = Path(__file__).resolve().parents[1]


def foreign(voice: str, texts: Iterable[str]) -> list[str]:
    """The texts whose phonemes switch language in ``voice``. One espeak-ng run for all of them
    when all are fine; the guilty ones are then found by halving."""
    items = [t for t in dict.fromkeys(texts) if t.strip()]

    def switches(batch: list[str]) -> bool:
        out = subprocess.run(["espeak-ng", "-q", "-x", "-v", voice, "--stdin"], input="\n".join(batch),
                             capture_output=True, text=True, timeout=300, check=True).stdout
        return bool(SWITCH.search(out))

    def search(batch: list[str]) -> list[str]:
        if not batch or not switches(batch):
            return []
        if len(batch) == 1:
            return batch
        mid = len(batch) // 2
        return search(batch[:mid]) + search(batch[mid:])

    return search(items)


def domain_sentences(domain_dir: Path = ROOT / "bot" / "domain") -> list[str]:
    """Every response variant in the domain, as the phone line would say it (text and buttons)."""
    out: list[str] = []
    for path in sorted(domain_dir.glob("*.yml")):
        responses: dict[str, Any] = (yaml.safe_load(path.read_text(encoding="utf-8")) or {}).get("responses") or {}
        for variants in responses.values():
            for v in variants or []:
                if not isinstance(v, dict):
                    continue
                if v.get("text"):
                    out.extend(sentences(speakable(str(v["text"]))))
                if v.get("buttons"):
                    out.extend(spoken_choices(v["buttons"])[0])
    return out


def gateway_sentences() -> list[str]:
    """The gateway's own prompts and read-backs of every kind of number a caller keys."""
    out = [line for text in PROMPTS.values() for line in sentences(text)]
    out += [readback(n) for n in ("1230", "123X", "10000001", "1000000001", "13800000001", "20261101000001",
                                  "371722195007084563")]
    return out


def main(argv: list[str]) -> int:
    from voice.tts import choose_voice

    voice = choose_voice(argv[0] if argv else "")
    bad = foreign(voice, domain_sentences() + gateway_sentences())
    for line in bad:
        print(f"switches language: {line}")
    print(f"voice {voice}: {len(bad)} sentences switch language")
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
