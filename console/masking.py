"""Personal numbers masked for display, export and the API: phone, ID-card and bank-card numbers,
also when they were said in Chinese numerals ("幺三八..." is masked as 138****5678).

A run of digits, ASCII or Chinese (textnorm's digit table: 幺, 两, 〇, 洞 ...), with the spaces and
hyphens people put inside numbers, is read as one number; when it has the length of a personal
number it is replaced by its masked form in ASCII digits. Everything else is left as it was: amounts,
dates, 8-digit ticket numbers, 14-digit application numbers, identifiers."""
from __future__ import annotations

import re
from typing import Any

from textnorm.numerals import DIGITS

_DIGIT_CHARS = "".join(DIGITS)
# A run of digits (ASCII or Chinese) with the separators people put inside numbers, maybe ending in X.
_RUN = re.compile(f"(?<![0-9A-Za-z])[{_DIGIT_CHARS}](?:[{_DIGIT_CHARS} \\-]*[{_DIGIT_CHARS}])?(?:[Xx])?(?![0-9A-Za-z])")


def _masked(digits: str) -> str | None:
    """The masked form of a personal number, or None for a number that is not personal."""
    n = len(digits)
    if n == 11 and digits[0] == "1" and digits.isdigit():  # mainland mobile
        return digits[:3] + "****" + digits[-4:]
    if n == 18 or (n == 15 and digits.isdigit()):  # resident ID card (18; old 15-digit)
        return digits[:4] + "*" * (n - 8) + digits[-4:]
    if 16 <= n <= 19 and digits.isdigit():  # bank card
        return digits[:4] + "*" * (n - 8) + digits[-4:]
    if 7 <= n <= 12 and digits.isdigit() and n != 8:  # landlines and other phone-like numbers
        return digits[:3] + "*" * (n - 5) + digits[-2:]
    return None


def _mask_run(match: re.Match[str]) -> str:
    run = match.group(0)
    digits = "".join(DIGITS.get(c, "X" if c in "Xx" else "") for c in run)
    masked = _masked(digits)
    return run if masked is None else masked


def mask(text: str | None) -> str:
    """``text`` with phone, ID-card and bank-card numbers masked; other text unchanged."""
    if not text:
        return text or ""
    return _RUN.sub(_mask_run, text)


def mask_data(value: Any) -> Any:
    """Mask every string inside a JSON-like value (entities, slots, metadata)."""
    if isinstance(value, str):
        return mask(value)
    if isinstance(value, list):
        return [mask_data(v) for v in value]
    if isinstance(value, dict):
        return {k: mask_data(v) for k, v in value.items()}
    return value
