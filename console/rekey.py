"""``python -m console rekey``: seal every tracker-store row, and the service database's personal
fields (services/sealed.py), under the current key of ``DATA_KEYS``.

It seals rows written in clear (before encryption was turned on) and moves rows sealed under an
older key to the current one, in batches of committed updates, so it can run while Rasa serves
(rows are never changed after Rasa writes them; a row Rasa writes meanwhile is sealed already).
Rotating a key (docs/DESIGN.md, "Encryption at rest"):

1. ``python -m textnorm.sealing new-key``; put it first in ``DATA_KEYS``, the old keys after it;
2. restart the processes (new rows are sealed under the new key);
3. ``python -m console rekey`` (prints how many rows moved; 0 left under old keys);
4. remove the old keys from ``DATA_KEYS`` and restart.

Every row is opened first, before anything is written: a row no listed key opens (the wrong
``DATA_KEYS`` in this shell, a key dropped too early) stops the run with its id and nothing is
changed. A row written during the run is sealed by Rasa under a listed key already."""
from __future__ import annotations

import sys
from dataclasses import dataclass

from sqlalchemy import Engine, bindparam, column, create_engine, select, table, update

from console.conversations import EVENTS
from console.settings import get_console_settings
from services.db import make_engine
from services.migrate import upgrade
from services.sealed import SEALED_COLUMNS
from textnorm.sealing import Keyring, SealedValueError

BATCH = 500


@dataclass
class Rekeyed:
    read: int = 0
    sealed: int = 0  # rows that were in clear
    moved: int = 0  # rows that were under an older key


def check_opens(engine: Engine, keyring: Keyring, batch: int = BATCH) -> int:
    """Open every sealed tracker row and sealed field without writing; raises on the first that
    does not open. Returns how many values were opened."""
    opened = after = 0
    with engine.connect() as conn:
        while True:
            rows = conn.execute(select(EVENTS.c.id, EVENTS.c.sender_id, EVENTS.c.data).where(EVENTS.c.id > after)
                                .order_by(EVENTS.c.id).limit(batch)).all()
            if not rows:
                return opened
            for row in rows:
                try:
                    keyring.open(row.data or "", row.sender_id)
                except SealedValueError as e:
                    raise SealedValueError(f"events row {row.id}: {e}; nothing was changed") from e
                opened += 1
            after = rows[-1].id


def rekey(engine: Engine, keyring: Keyring, batch: int = BATCH) -> Rekeyed:
    if not keyring:
        raise ValueError("DATA_KEYS is empty: nothing to seal with")
    check_opens(engine, keyring, batch)
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
                stored = row.data
                if stored is None or keyring.is_current(stored):
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


def rekey_service_data(engine: Engine, keyring: Keyring, batch: int = BATCH, write: bool = True) -> Rekeyed:
    """The service database's sealed columns (bound to ``table.column``), the same way; with
    ``write`` False every value is opened and nothing is changed (the check before a run)."""
    if not keyring:
        raise ValueError("DATA_KEYS is empty: nothing to seal with")
    done = Rekeyed()
    for name, columns in SEALED_COLUMNS.items():
        t = table(name, column("id"), *(column(c) for c in columns))
        after = 0
        while True:
            with engine.begin() as conn:
                rows = conn.execute(select(t).where(t.c.id > after).order_by(t.c.id).limit(batch)).all()
                if not rows:
                    break
                for row in rows:
                    done.read += 1
                    changes = {}
                    for c in columns:
                        stored = getattr(row, c)
                        if stored is None or keyring.is_current(stored):
                            continue
                        try:
                            clear = keyring.open(stored, f"{name}.{c}")
                        except SealedValueError as e:
                            raise SealedValueError(f"{name} row {row.id}, {c}: {e}") from e
                        done.sealed += keyring.key_of(stored) is None
                        done.moved += keyring.key_of(stored) is not None
                        changes[c] = keyring.seal(clear, f"{name}.{c}")
                    if changes and write:
                        conn.execute(update(t).where(t.c.id == row.id).values(**changes))
                after = rows[-1].id
    return done


def main() -> int:
    settings = get_console_settings()
    engine = create_engine(settings.tracker_url, hide_parameters=True)
    try:
        heze = make_engine(settings.heze_db_url)
        upgrade(heze)
        rekey_service_data(heze, settings.keyring, write=False)  # everything opens, before any write
        done = rekey(engine, settings.keyring)
        service = rekey_service_data(heze, settings.keyring)
    except (ValueError, SealedValueError) as e:
        print(f"rekey: {e}", file=sys.stderr)
        return 1
    print(f"tracker store: rows read {done.read}, sealed from clear {done.sealed}, moved to key "
          f"{settings.keyring.current} {done.moved}")
    print(f"service database: rows read {service.read}, fields sealed from clear {service.sealed}, moved to key "
          f"{settings.keyring.current} {service.moved}")
    return 0
