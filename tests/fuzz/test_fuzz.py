"""A short run of the WeChat protocol fuzzer (tests/fuzz/wechat_protocol.py) in every test run;
``make fuzz`` runs a million inputs. A crash (any exception but ProtocolError) fails the run."""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from services.settings import ROOT


def test_the_protocol_layer_survives_a_short_fuzzing_run(tmp_path: Path) -> None:
    runs = 30_000
    out = subprocess.run([sys.executable, "-m", "tests.fuzz.wechat_protocol", f"-runs={runs}", "-seed=1",
                          f"-artifact_prefix={tmp_path}/", str(tmp_path / "corpus")],
                         cwd=ROOT, capture_output=True, text=True, timeout=300)
    tail = out.stderr[-3000:]
    assert out.returncode == 0, tail
    assert f"Done {runs} runs" in out.stderr, tail
    assert not list(tmp_path.glob("crash-*")), tail
