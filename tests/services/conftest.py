"""Fixtures of the service tests beside the shared ones (tests/conftest.py)."""
from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.services.paying import Pay, paying


@pytest.fixture
def pay(db_url: str, tmp_path: Path) -> Iterator[Pay]:
    """A services API on a real port paying through the local WeChat Pay v3 server, sample data seeded."""
    with paying(db_url, tmp_path) as started:
        yield started
