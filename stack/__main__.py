"""``make run``: start every process, print what runs where, stop them all on Ctrl-C."""
from __future__ import annotations

import signal
import sys
import time

from services.settings import ROOT, get_settings
from stack.processes import Stack, StartupError, prepare_tracker_store, specs
from voice.settings import get_voice_settings


def main() -> int:
    settings = get_settings()
    prepare_tracker_store(settings)
    stack = Stack(specs(settings), ROOT / "var" / "log")
    print("正在启动（首次约需 30 秒）/ starting ...", flush=True)
    stopping = False

    def _stop(*_: object) -> None:
        nonlocal stopping
        stopping = True

    signal.signal(signal.SIGINT, _stop)
    signal.signal(signal.SIGTERM, _stop)
    try:
        stack.start()
    except StartupError as exc:
        print(f"启动失败 / start-up failed: {exc}", file=sys.stderr)
        return 1
    print("\n菏泽市民政务助手已启动 / Heze Citizen Assistant is running:")
    for spec in stack.specs:
        print(f"  {spec.name:<14} {spec.url:<28} health: {spec.health_url}")
    print(f"  {'web chat':<14} {settings.public_base_url.rstrip('/')}/chat  (手机浏览器打开；长辈模式、按住说话、为家人办事)")
    print(f"  {'rest channel':<14} POST http://{settings.rasa_host}:{settings.rasa_port}/webhooks/rest/webhook")
    for channel, token in (("wechat", settings.wechat_token), ("miniprogram", settings.miniprogram_token)):
        state = f"{settings.wechat_mode if channel == 'wechat' else settings.miniprogram_mode} mode" if token \
            else "not configured (.env, deploy/wechat.md)"
        # WeChat posts to the front, which relays to Rasa and keeps the 5 s rule (channels/front.py).
        print(f"  {channel + ' channel':<14} POST http://{settings.wechat_front_host}:{settings.wechat_front_port}"
              f"/webhooks/{channel}/webhook"
              f"  [{state}]")
    voice = get_voice_settings()
    token = "VOICE_GATEWAY_TOKEN from .env" if voice.voice_gateway_token.get_secret_value() else \
        "a token made for this run only: set VOICE_GATEWAY_TOKEN in .env for a PBX"
    print(f"  {'phone line':<14} AudioSocket {voice.voice_audiosocket_host}:{voice.voice_audiosocket_port}, "
          f"WebSocket ws://{voice.voice_host}:{voice.voice_http_port}/media, {voice.voice_asr_engine} "
          f"[{token}]  (deploy/asterisk/)")
    print("  console: first admin with `.venv/bin/python -m console create-user --username <name>`")
    print("  logs: var/log/   按 Ctrl-C 停止 / Ctrl-C stops everything\n", flush=True)
    while not stopping:
        dead = stack.poll_dead()
        if dead:
            print(f"{dead} stopped unexpectedly:\n{stack.log_tail(dead)}", file=sys.stderr)
            stack.stop()
            return 1
        time.sleep(0.5)
    print("\n正在停止 / stopping ...", flush=True)
    stack.stop()
    print("已停止 / stopped.")
    return 0


if __name__ == "__main__":
    sys.exit(main())
