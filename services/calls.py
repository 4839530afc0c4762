"""Reminder calls: the assistant rings a citizen who asked to be called (services/reminders.py).

The call is an Asterisk call file (pbx_spool) written into the PBX's outgoing spool directory
(``REMINDER_CALL_SPOOL``, shared with Asterisk). Asterisk dials the citizen through
``REMINDER_CALL_CHANNEL`` (the operator's trunk, ``Local/{number}@heze-outbound`` by default: see
deploy/asterisk/extensions.conf) and, once they pick up, runs ``[heze-reminder]``, which hands the call
to the voice gateway like any other, naming the reminder. The assistant then says the reminder and
offers "办理请按1，转人工请按0" (actions/subscriptions.py ``action_reminder_call``), and marks it
delivered. A call nobody answers leaves the reminder ``calling``; the scheduler tries again later.

A call file is written elsewhere and renamed into the spool: Asterisk must never read half of one."""
from __future__ import annotations

import os
import re
from pathlib import Path

CALL_CONTEXT = "heze-reminder"
_NUMBER = re.compile(r"\d{3,20}")


class CallOriginator:
    def __init__(self, spool: Path, channel: str = "Local/{number}@heze-outbound", caller_id: str = "12345",
                 ring_s: int = 45) -> None:
        if "{number}" not in channel:
            raise ValueError("REMINDER_CALL_CHANNEL names the number to dial as {number}")
        self.spool, self.channel, self.caller_id, self.ring_s = spool, channel, caller_id, ring_s

    def place(self, number: str, reminder_id: int) -> str:
        """Queue the call with Asterisk; returns the call file's name. OSError when the spool cannot be written."""
        if not _NUMBER.fullmatch(number):
            raise ValueError("a reminder call goes to a number of digits only")
        name = f"heze-reminder-{reminder_id}-{os.getpid()}.call"
        body = (f"Channel: {self.channel.format(number=number)}\n"
                f"CallerID: \"菏泽政务\" <{self.caller_id}>\n"
                "MaxRetries: 0\n"  # the scheduler retries, with its own quiet hours and limits
                f"WaitTime: {self.ring_s}\n"
                f"Context: {CALL_CONTEXT}\nExtension: s\nPriority: 1\n"
                f"Setvar: HEZE_CALLED={number}\n"
                f"Setvar: HEZE_REMINDER={reminder_id}\n")
        staging = self.spool.parent / "heze-staging"  # same filesystem as the spool: the rename is atomic
        staging.mkdir(parents=True, exist_ok=True)
        tmp = staging / name
        tmp.write_text(body, encoding="utf-8")
        os.replace(tmp, self.spool / name)
        return name
