"""The people of the end-to-end tests, as the running stack meets them: a citizen on the official
account (WeChat's servers delivering their messages), a caller on the phone line, a member of staff
with a console account. Shared by the e2e modules; no test lives here."""
from __future__ import annotations

import asyncio
import re
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Awaitable, Callable

import httpx
from sqlalchemy import select

from services.models import PhoneCall, PhoneTurn
from services.settings import ROOT
from tests.e2e.conftest import Running
from tests.voice.phone_client import PhoneClient


# -- a citizen on the official account ------------------------------------------------------------

def wechat_url(running: Running) -> str:
    return f"{running.front_url}/webhooks/wechat/webhook"


def deliver(running: Running, inner_xml: str, **kw: object) -> httpx.Response:
    """One message delivered as WeChat's servers do in safe mode (signed, encrypted)."""
    params, body = running.account.sealed(inner_xml, **kw)  # type: ignore[arg-type]
    return running.http.post(wechat_url(running), params=params, content=body)


class Citizen:
    def __init__(self, running: Running) -> None:
        self.running = running
        self.openid = "o" + uuid.uuid4().hex[:20]
        self.msg_id = int(time.time() * 1000) * 1000 + int(uuid.uuid4().int % 1000)

    def say(self, text: str) -> str:
        """The passive reply to ``text`` ("" when the answer comes as a customer-service message)."""
        self.msg_id += 1
        resp = deliver(self.running, self.running.account.text_xml(self.openid, text, self.msg_id))
        assert resp.status_code == 200, resp.text
        return self.running.account.open_reply(resp.text)["Content"] if resp.text != "success" else ""


# -- a caller on the phone line -------------------------------------------------------------------

def call_record(running: Running, call_id: str) -> tuple[PhoneCall | None, list[PhoneTurn]]:
    with running.services.sessions() as s:
        call = s.scalar(select(PhoneCall).where(PhoneCall.call_id == call_id))
        turns = list(s.scalars(select(PhoneTurn).where(PhoneTurn.call_pk == call.id).order_by(PhoneTurn.seq))) \
            if call else []
        return call, turns


async def wait_turns(running: Running, call_id: str, n: int, timeout: float = 30) -> list[PhoneTurn]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        _, turns = await asyncio.to_thread(call_record, running, call_id)
        if len(turns) >= n:
            return turns
        await asyncio.sleep(0.1)
    raise AssertionError(f"call {call_id} has {len(turns)} turns, {n} expected")


async def replies(running: Running, call_id: str, n: int) -> list[str]:
    turns = await wait_turns(running, call_id, n, timeout=60)
    return [t.reply or "" for t in turns]


def call(running: Running, caller: str, steps: Callable[[PhoneClient], Awaitable[None]]) -> str:
    """A call from ``caller``'s number through the phone line (the dialplan registers the caller
    first), in a thread of its own; returns the call id."""
    call_id = str(uuid.uuid4())
    registered = httpx.post(f"{running.voice_url}/calls/{call_id}/start", data={"caller": caller},
                            headers=running.pbx_headers)
    assert registered.text == "ok"

    async def run() -> None:
        phone = PhoneClient(running.voice.voice_audiosocket_host, running.voice.voice_audiosocket_port, call_id)
        await phone.connect()
        await phone.wait_audio_after(time.monotonic() - 1)
        await phone.wait_quiet(0.6)
        try:
            await steps(phone)
        finally:
            await phone.hang_up()

    failed: list[BaseException] = []
    thread = threading.Thread(target=lambda: failed.extend(_caught(lambda: asyncio.run(run()))))
    thread.start()
    thread.join(180)
    assert not thread.is_alive() and not failed, failed
    return call_id


def _caught(f: Callable[[], object]) -> list[BaseException]:
    try:
        f()
    except BaseException as exc:  # noqa: BLE001 - handed back to the test's thread
        return [exc]
    return []


# -- staff with a console account -----------------------------------------------------------------

def create_console_user(running: Running, name: str, password: str, role: str | None = None) -> None:
    """A console account made as the README says (``python -m console create-user``); without a role
    the command's own default."""
    made = subprocess.run([sys.executable, "-m", "console", "create-user", "--username", name,
                           *(["--role", role] if role else []), "--password-stdin"], input=password + "\n",
                          text=True, capture_output=True, cwd=ROOT,
                          env={"HEZE_DB_URL": running.settings.heze_db_url, "PATH": "/usr/bin:/bin"})
    assert made.returncode == 0, made.stderr


def console_sign_in(running: Running, http: httpx.Client) -> str:
    """A new console user signed in on ``http`` (based at the console); returns a CSRF token."""
    username, password = "kf" + uuid.uuid4().hex[:6], "handback-" + uuid.uuid4().hex
    create_console_user(running, username, password)
    csrf = re.search(r'name="csrf_token" value="([^"]+)"', http.get("/login").text).group(1)  # type: ignore[union-attr]
    assert http.post("/login", data={"username": username, "password": password, "csrf_token": csrf,
                                     "next": "/"}).status_code == 303
    return re.search(r'name="csrf_token" value="([^"]+)"', http.get("/humans").text).group(1)  # type: ignore[union-attr]
