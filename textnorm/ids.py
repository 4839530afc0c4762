"""Checks for the personal numbers citizens give: ID-card (GB 11643-1999) and mobile numbers."""
from __future__ import annotations

import datetime as _dt
import re

# GB 11643-1999, clause 7: weights of the 17 body digits and the check characters by remainder.
_WEIGHTS = (7, 9, 10, 5, 8, 4, 2, 1, 6, 3, 7, 9, 10, 5, 8, 4, 2)
_CHECK = "10X98765432"
# GB/T 2260 province-level codes (first two digits).
_PROVINCES = {
    "11", "12", "13", "14", "15", "21", "22", "23", "31", "32", "33", "34", "35", "36", "37",
    "41", "42", "43", "44", "45", "46", "50", "51", "52", "53", "54", "61", "62", "63", "64",
    "65", "71", "81", "82",
}
_MOBILE = re.compile(r"^1[3-9]\d{9}$")


def id_check_char(body17: str) -> str:
    """The check character for the first 17 digits of an ID-card number."""
    total = sum(int(d) * w for d, w in zip(body17, _WEIGHTS))
    return _CHECK[total % 11]


def is_valid_id_number(number: str) -> bool:
    """True for an 18-character resident ID number with a valid region, birth date and check."""
    n = number.strip().upper()
    if not re.fullmatch(r"\d{17}[\dX]", n) or n[:2] not in _PROVINCES:
        return False
    try:
        birth = _dt.date(int(n[6:10]), int(n[10:12]), int(n[12:14]))
    except ValueError:
        return False
    if not (_dt.date(1900, 1, 1) <= birth <= _dt.date.today()):
        return False
    return id_check_char(n[:17]) == n[17]


def is_valid_mobile(number: str) -> bool:
    """True for an 11-digit mainland mobile number."""
    return bool(_MOBILE.match(number))

