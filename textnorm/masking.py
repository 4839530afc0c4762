"""The one masking policy for personal numbers: phone, ID-card and bank-card numbers (and household
account and landline numbers), however a citizen or a recogniser wrote them. The console's pages,
exports and API, and the log filter every process installs, all use this module. Pure Python: both
environments (3.10 for Rasa, 3.11 for the rest) import it.

A number is a run of digits (ASCII, full-width or Chinese: textnorm's digit table, 幺 两 〇 洞 …)
with up to three separators between digits: every separator the number normaliser accepts (spaces,
full-width spaces, hyphens, full-width hyphens, dashes, 、，,) and the ones people type (. ．/ ／ · _
parentheses), ending maybe in an ID card's X. Letters glued to it ("tel13800000001",
"13800000002ok") do not hide it. When the run, has
the shape of a personal number, it is replaced by its masked form in ASCII digits; a mainland mobile
behind a ``+86``/``86``/``0086`` prefix is a mobile. A run that is not one personal number as a whole
is searched for mobiles, ID and bank-card numbers made of some of its digit groups ("20261101000001
13800000001", "电话13800000001 12点以后"). Everything else is left as it was: amounts (``128.50``,
``1,234,567.89``), dates and date ranges, 8-digit ticket numbers, 14-digit application numbers.
"""
from __future__ import annotations

import hashlib
import logging
import re
from typing import Any, Optional

from textnorm.numerals import DIGITS

DIGIT_CHARS = "".join(DIGITS)
SEPARATORS = " \t\u3000\u00a0-－—–‐‑、，,.．/／·・_()（）"
CHECK_X = "XxＸｘ×叉"
_D = re.escape(DIGIT_CHARS)
_S = re.escape(SEPARATORS)
_RUN = re.compile(f"[{_D}](?:[{_S}]{{0,3}}[{_D}])*(?:[{_S}]{{0,2}}[{re.escape(CHECK_X)}])?")
_DATE = r"[0-9]{4}[-/.．][0-9]{1,2}[-/.．][0-9]{1,2}(?:[ T][0-9]{1,2})?"
_DATES = re.compile(f"{_DATE}(?:[{_S}]{{1,3}}{_DATE})*")  # a date, or several ("2020.01.01-2040.01.01")
# An amount: digits with a decimal part, or thousands separated by commas ("1,234,567.89").
_AMOUNT = re.compile(r"(?P<int>[0-9０-９]{1,3}(?:,[0-9０-９]{3})+|[0-9０-９]+)(?:[.．][0-9０-９]{1,2})?")
_MOBILE = re.compile(r"1[3-9][0-9]{9}")


def _digits(run: str) -> str:
    body = "".join(DIGITS.get(c, "") for c in run)
    return body + ("X" if run and run[-1] in CHECK_X else "")


def masked_number(digits: str) -> Optional[str]:
    """The masked form of a personal number given as ASCII digits (and a final X), or None for a
    number that is not personal."""
    n = len(digits)
    for prefix in ("0086", "86"):  # a mobile with the country code
        rest = digits[len(prefix):]
        if digits.startswith(prefix) and _MOBILE.fullmatch(rest):
            return prefix + rest[:3] + "****" + rest[-4:]
    if n == 11 and digits[0] == "1" and digits.isdigit():  # mainland mobile
        return digits[:3] + "****" + digits[-4:]
    if (n == 18 and digits[:17].isdigit()) or (n == 15 and digits.isdigit()):  # resident ID card
        return digits[:4] + "*" * (n - 8) + digits[-4:]
    if not digits.isdigit():
        return None
    if 16 <= n <= 19:  # bank card
        return digits[:4] + "*" * (n - 8) + digits[-4:]
    if 7 <= n <= 12 and n != 8:  # landlines, household accounts and other phone-like numbers
        return digits[:3] + "*" * (n - 5) + digits[-2:]
    if n >= 20 and not digits.startswith("20"):  # numbers run together: hide them all
        return digits[:3] + "*" * (n - 5) + digits[-2:]
    return None


def _strong(digits: str) -> bool:
    """A part of a run that is surely a personal number: a mobile (with or without the country code),
    an 18-character ID number, a bank card."""
    if _MOBILE.fullmatch(digits) or any(digits.startswith(p) and _MOBILE.fullmatch(digits[len(p):]) for p in ("86", "0086")):
        return True
    return (len(digits) == 18 and digits[:17].isdigit()) or (16 <= len(digits) <= 19 and digits.isdigit())


def _scan(run: str) -> str:
    """A run that is not one personal number as a whole: the personal numbers inside it, each made of
    one or more of its digit groups ("20261101000001 13800000001", "13800000001 12点")."""
    tokens = re.split(f"([{_S}]+)", run)  # digit groups at even places, separators between them
    groups = len(tokens) // 2 + 1
    out: list = []
    i = 0
    while i < groups:
        for j in range(groups, i, -1):
            digits = _digits("".join(tokens[2 * i:2 * j - 1]))
            if _strong(digits):
                out.append(masked_number(digits))
                i = j
                break
        else:
            out.append(tokens[2 * i])
            i += 1
        if i < groups:
            out.append(tokens[2 * i - 1])
    return "".join(out)


def _mask_run(match: "re.Match[str]") -> str:
    run = match.group(0)
    if _DATES.fullmatch(run):
        return run
    amount = _AMOUNT.fullmatch(run)
    if amount and ("," in amount.group("int") or masked_number(_digits(amount.group("int"))) is None):
        return run  # money, not a number of a person ("128.50", "1,234,567.89")
    if amount and amount.group("int") != run:  # "13800000001.3": a personal number, then a fraction
        return str(masked_number(_digits(amount.group("int")))) + run[len(amount.group("int")):]
    masked = masked_number(_digits(run))
    if masked is not None:  # the run is one personal number, however it was split up (a pause, a comma)
        return masked
    return _scan(run)


def mask(text: Optional[str]) -> str:
    """``text`` with every personal number masked; other text unchanged."""
    if not text:
        return text or ""
    return _RUN.sub(_mask_run, text)


def mask_data(value: Any) -> Any:
    """Mask every string inside a JSON-like value (entities, slots, metadata)."""
    if isinstance(value, str):
        return mask(value)
    if isinstance(value, list):
        return [mask_data(v) for v in value]
    if isinstance(value, tuple):
        return tuple(mask_data(v) for v in value)
    if isinstance(value, dict):
        return {k: mask_data(v) for k, v in value.items()}
    return value


def pseudonym(value: str, key: str = "") -> str:
    """A stable stand-in for an identifier (an openid, a caller's number): ``u`` and 12 hex digits of
    a (keyed, when ``key`` is set) SHA-256. The same input gives the same stand-in."""
    digest = hashlib.sha256((key + "\0" + value).encode("utf-8", "replace") if key else
                            value.encode("utf-8", "replace")).hexdigest()
    return "u" + digest[:12]


class MaskingFilter(logging.Filter):
    """A log filter that masks personal numbers in a record's message, arguments and traceback
    text before any handler formats it. Installed on every handler by ``install_log_masking``."""

    def filter(self, record: logging.LogRecord) -> bool:
        try:
            message = record.getMessage()
        except Exception:  # noqa: BLE001 - a malformed record is logged as it is, masked
            message = str(record.msg)
        record.msg, record.args = mask(message), None
        if record.exc_info and record.exc_info[1] is not None and not record.exc_text:
            record.exc_text = mask(logging.Formatter().formatException(record.exc_info))
        elif record.exc_text:
            record.exc_text = mask(record.exc_text)
        if record.stack_info:
            record.stack_info = mask(record.stack_info)
        return True


LOG_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"


def configure_logging(level: int = logging.INFO) -> None:
    """A process's logging as every Heze process has it: one line per record on stderr, masked.
    Servers started after this (uvicorn with ``log_config=None``) log through the same handler."""
    logging.basicConfig(level=level, format=LOG_FORMAT)
    install_log_masking()


def install_log_masking() -> None:
    """Mask every log line this process writes: the filter goes on every handler there is (the
    root logger's and every named logger's; a filter on a handler sees records from every logger
    that reaches it). Call it once logging is configured (after uvicorn's or Rasa's set-up)."""
    masking = MaskingFilter()
    loggers = [logging.getLogger()] + [logger for logger in logging.Logger.manager.loggerDict.values()
                                       if isinstance(logger, logging.Logger)]
    for logger in loggers:
        for handler in logger.handlers:
            if not any(isinstance(f, MaskingFilter) for f in handler.filters):
                handler.addFilter(masking)
