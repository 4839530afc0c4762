"""Shared pieces of the Rasa-environment tests: the bot's domain, a clean SQLite file per test."""
from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")


@pytest.fixture(scope="session")
def domain():  # type: ignore[no-untyped-def]
    from rasa.shared.core.domain import Domain

    return Domain.load(str(ROOT / "bot" / "domain"))
