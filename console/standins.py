"""Fictional, valid numbers in place of masked ones, for the test stories the console exports.

A page shows "138****0001"; a test story needs a number that the NLU reads as the same kind of
entity (``nlu_data/regexes.yml``) and a form accepts (``textnorm.numbers.kind_of``). Each masked
number of a conversation gets a stand-in of the same kind and length from a fixed fictional series,
numbered in order of first appearance, so an export is the same every time:

- mobile: the sample data's test range ``1380000xxxx`` (``services/seed.py``), from 13800009001;
- ID-card: Mudan district (371702), born 1900-01-01, serial 001 on, with its GB 11643 check
  character (15-digit cards: the same, in the old format);
- household account (10 digits): its first digit (shown in the mask; the bill type in the sample
  data) and a serial ("1000000001");
- bank card: ``6200…`` with a Luhn check digit; landline: Heze's area code ``0530…``; anything else:
  its first digit and a serial.

A stand-in is never the real number: one whose own mask equals the masked number (and so could be
the real one) is skipped.
"""
from __future__ import annotations

import re

from textnorm.ids import id_check_char
from textnorm.masking import masked_number

# What textnorm.masking writes for a personal number: digits, asterisks, digits (an ID may end in X).
MASKED = re.compile(r"(?<![0-9*])([0-9]+)(\*+)([0-9]*[0-9Xx])(?![0-9*])")


def _luhn(body: str) -> str:
    total = 0
    for i, d in enumerate(reversed(body)):
        n = int(d) * (2 if i % 2 == 0 else 1)
        total += n - 9 if n > 9 else n
    return str((10 - total % 10) % 10)


def _kind(head: str, length: int) -> tuple[str, str]:
    """(kind, prefix) of a masked number from what the mask shows: its length and first digits."""
    for code in ("0086", "86"):
        if head.startswith(code) and len(head) == len(code) + 3 and length == len(code) + 11 and head[len(code)] == "1":
            return "mobile", code
    if length == 11 and head[0] == "1":
        return "mobile", ""
    if length in (15, 18):
        return f"id{length}", ""
    if 16 <= length <= 19:
        return "card", ""
    if head[0] == "0" and length >= 8:
        return "landline", ""
    if length == 10:
        return "account", head[0]
    return "digits", head[0]


def _candidate(kind: str, prefix: str, length: int, n: int) -> str:
    if kind == "mobile":
        return f"{prefix}1380000{9000 + n:04d}"
    if kind == "id18":
        body = f"37170219000101{n:03d}"
        return body + id_check_char(body)
    if kind == "id15":
        return f"371702000101{n:03d}"
    if kind == "card":
        body = "6200" + str(n).zfill(length - 5)
        return body + _luhn(body)
    if kind == "landline":
        return "0530" + str(n).zfill(length - 4)
    return prefix + str(n).zfill(length - len(prefix))


SERIES = 999  # stand-ins of one kind in one conversation (an ID card's sequence code has three digits)


class TooManyNumbers(ValueError):
    """A conversation with more different numbers of one kind than there are stand-ins for them."""


class StandIns:
    """The stand-ins of one conversation: the same masked number gets the same stand-in each time."""

    def __init__(self) -> None:
        self._given: dict[str, str] = {}
        self._count: dict[str, int] = {}

    def number(self, masked: str) -> str:
        m = MASKED.fullmatch(masked)
        if m is None:
            return masked
        if masked not in self._given:
            kind, prefix = _kind(m.group(1), len(masked))
            for n in range(self._count.get(kind + prefix, 0) + 1, SERIES + 1):
                value = _candidate(kind, prefix, len(masked), n)
                if masked_number(value.upper()) != masked.upper() and value not in self._given.values():
                    break
            else:
                raise TooManyNumbers(f"more than {SERIES} different numbers of one kind in one conversation")
            self._count[kind + prefix] = n
            self._given[masked] = value
        return self._given[masked]

    def text(self, text: str) -> str:
        """``text`` with every masked number replaced by its stand-in."""
        return MASKED.sub(lambda m: self.number(m.group(0)), text)
