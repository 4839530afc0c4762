"""``python -m console rekey``: seal every tracker-store row under the current key of ``DATA_KEYS``.

It seals rows written in clear (before encryption was turned on) and moves rows sealed under an
older key to the current one, in batches of committed updates, so it can run while Rasa serves
(rows are never changed after Rasa writes them; a row Rasa writes meanwhile is sealed already).
Rotating a key (docs/DESIGN.md, "Encryption at rest"):

1. ``python -m textnorm.sealing new-key``; put it first in ``DATA_KEYS``, the old keys after it;
2. restart the processes (new rows are sealed under the new key);
3. ``python -m console rekey`` (prints how many rows moved; 0 left under old keys);
4. remove the old keys from ``DATA_KEYS`` and restart.

A row that does not open under any listed key stops the run with its id: nothing is skipped."""
from __future__ import annotations

import sys
from dataclasses import dataclass

from sqlalchemy import Engine, bindparam, create_engine, select, update

from console.conversations import EVENTS
from console.settings import get_console_settings
from textnorm.sealing import Keyring, SealedValueError

BATCH = 500


@dataclass
class Rekeyed:
    read: int = 0
    sealed: int = 0  # rows that were in clear
    moved: int = 0  # rows that were under an older key


def rekey(engine: Engine, keyring: Keyring, batch: int = BATCH) -> Rekeyed:
    if not keyring:
        raise ValueError("DATA_KEYS is empty: nothing to seal with")
    done = Rekeyed()
    after = 0
    change = update(EVENTS).where(EVENTS.c.id == bindparam("row_id")).values(data=bindparam("new_data"))
    while True:
        with engine.begin() as conn:
            rows = conn.execute(select(EVENTS.c.id, EVENTS.c.sender_id, EVENTS.c.data)
                                .where(EVENTS.c.id > after).order_by(EVENTS.c.id).limit(batch)).all()
            if not rows:
                return done
            changes = []
            for row in rows:
                done.read += 1
                stored = row.data or ""
                if keyring.is_current(stored):
                    continue
                try:
                    clear = keyring.open(stored, row.sender_id)
                except SealedValueError as e:
                    raise SealedValueError(f"events row {row.id}: {e}") from e
                if keyring.key_of(stored) is None:
                    done.sealed += 1
                else:
                    done.moved += 1
                changes.append({"row_id": row.id, "new_data": keyring.seal(clear, row.sender_id)})
            if changes:
                conn.execute(change, changes)
            after = rows[-1].id


def main() -> int:
    settings = get_console_settings()
    engine = create_engine(settings.tracker_url, hide_parameters=True)
    try:
        done = rekey(engine, settings.keyring)
    except (ValueError, SealedValueError) as e:
        print(f"rekey: {e}", file=sys.stderr)
        return 1
    print(f"rows read {done.read}, sealed from clear {done.sealed}, moved to key "
          f"{settings.keyring.current} {done.moved}")
    return 0
