"""channels/wechat_api.py in its own environment (the Rasa venv) against the local WeChat API."""
from __future__ import annotations

import json
import subprocess

from services.settings import ROOT
from tests.e2e.conftest import free_port
from tests.fakes.wechat_api import FakeWeChat, serve

SCENARIO = """
import asyncio, json, sys
from channels.wechat_api import WeChatApi
base, appid, secret, step = sys.argv[1:5]
now = [1000.0]
api = WeChatApi(appid, secret, base, clock=lambda: now[0], backoff_s=0.01)
async def main():
    results = []
    for n in range(int(step)):
        results.append(await api.send_text("o1", f"message {n}"))
    now[0] += 7200  # past the token's lifetime: the next call fetches a new one
    results.append(await api.send_text("o1", "after expiry"))
    print(json.dumps(results))
asyncio.run(main())
"""


def run_scenario(fake: FakeWeChat, sends: int) -> list[bool]:
    with serve(fake, free_port()) as base:
        out = subprocess.run([str(ROOT / ".venv-rasa" / "bin" / "python"), "-c", SCENARIO, base, fake.appid,
                              fake.secret, str(sends)], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    return json.loads(out.stdout.strip().splitlines()[-1])


def test_token_is_cached_refreshed_on_expiry_and_when_wechat_says_so() -> None:
    fake = FakeWeChat("wxappid", "s3cret")
    assert run_scenario(fake, 2) == [True, True, True]
    assert fake.tokens_issued == 2  # once, then after the lifetime ran out
    fake = FakeWeChat("wxappid", "s3cret", send_errors=[40001])
    assert run_scenario(fake, 1) == [True, True]
    assert fake.tokens_issued == 3 and [m["text"]["content"] for m in fake.sent] == ["message 0", "after expiry"]


def test_out_of_window_and_quota_give_up_busy_retries() -> None:
    fake = FakeWeChat("wxappid", "s3cret", send_errors=[45015, 45009, -1, -1])
    assert run_scenario(fake, 3) == [False, False, True, True]
    assert [m["text"]["content"] for m in fake.sent] == ["message 2", "after expiry"]
    fake = FakeWeChat("wxappid", "s3cret", send_errors=[-1, -1, -1])
    assert run_scenario(fake, 1) == [False, True]  # three failures: bounded, then the next message goes
    wrong = FakeWeChat("wxappid", "other-secret")
    with serve(wrong, free_port()) as base:
        out = subprocess.run([str(ROOT / ".venv-rasa" / "bin" / "python"), "-c", SCENARIO, base, "wxappid", "s3cret",
                              "1"], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert json.loads(out.stdout.strip().splitlines()[-1]) == [False, False] and wrong.sent == []
