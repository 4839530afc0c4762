"""`python -m stack` (the last step of `make run`): prints what runs where, stops all on Ctrl-C."""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from services.db import make_engine
from services.migrate import upgrade
from services.settings import ROOT
from stack.processes import prefixed_env, settings_env, specs
from tests.sandbox import console_settings, free_port, make_settings, voice_settings

pytestmark = pytest.mark.e2e


def test_run_starts_everything_and_ctrl_c_stops_everything(rasa_model: Path, tmp_path: Path) -> None:
    api_port = free_port()
    settings = make_settings(
        rasa_port=free_port(), action_port=free_port(), services_api_port=api_port,
        public_base_url=f"http://127.0.0.1:{api_port}", heze_db_url=f"sqlite:///{tmp_path / 'heze.db'}",
        tracker_db=str(tmp_path / "tracker.db"), rasa_model_dir=str(rasa_model.parent),
    )
    voice, console = voice_settings(tmp_path), console_settings()
    upgrade(make_engine(settings.heze_db_url))
    env = {**os.environ, **settings_env(settings), **prefixed_env(voice, "voice_"), **prefixed_env(console, "console_")}
    proc = subprocess.Popen([sys.executable, "-m", "stack"], cwd=ROOT, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    assert proc.stdout is not None
    lines: list[str] = []
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline:
        line = proc.stdout.readline()
        if not line:
            break
        lines.append(line)
        if "Ctrl-C" in line:
            break
    output = "".join(lines)
    try:
        assert "is running" in output, output
        for spec in specs(settings, voice, console):
            assert spec.url in output
            assert httpx.get(spec.health_url, timeout=5).status_code == 200
        # A new user opens the web chat from the banner and is greeted (the greeting comes from Rasa).
        chat = next(line.split()[2] for line in lines if line.strip().startswith("web chat"))
        assert chat == f"{settings.public_base_url}/chat"
        opened = httpx.get(chat, timeout=30)
        assert opened.status_code == 200 and "请问办什么事" in opened.text
    finally:
        proc.send_signal(signal.SIGINT)
        rest, _ = proc.communicate(timeout=60)
    assert proc.returncode == 0, output + rest
    assert "已停止" in rest
    for spec in specs(settings, voice, console):
        with pytest.raises(httpx.HTTPError):
            httpx.get(spec.health_url, timeout=2)
