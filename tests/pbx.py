"""A real Asterisk for the tests: the build in shared/pbx (or, on a CPU it cannot run on, the portable
build scripts/pbx.sh makes from Debian's source), the project's own dialplan
(deploy/asterisk/extensions.conf, included unchanged) and test callers on Local channels.

A test call is a call file: ``Local/s@test-caller`` is the telephone user, who follows a script
of steps ("wait:3^dtmf:1^play:/abs/fixture^wait:10"), and its other half runs the project's
``[heze-assistant]`` into the gateway. Over Local channels Asterisk sends no audio frames while the
caller is quiet, and a caller's hang-up reaches the gateway as a bare TCP close, as on real lines.
The human branch goes to ``[test-human]``, which logs ``HEZE-HUMAN <uuid>`` in the full log."""
from __future__ import annotations

import functools
import os
import shutil
import subprocess
import tarfile
import tempfile
import time
import uuid
from dataclasses import dataclass
from pathlib import Path

from services.settings import ROOT

PBX_DIR = Path(os.environ.get("HEZE_PBX_DIR", ROOT.parent / "shared" / "pbx"))
TARBALL = "asterisk-20-debian12-x86_64.tar.xz"
RUNTIME_PACKAGES = ("libedit2", "libjansson4", "libxml2", "libxslt1.1", "libuuid1", "libsqlite3-0", "libssl3",
                    "libcurl4", "zlib1g", "libcrypt1")

TEST_DIALPLAN = """
[general]
static = yes
writeprotect = yes
clearglobalvars = no

#include {project}

; The telephone user: follows CALLER_SCRIPT, steps joined by ^: wait:SECONDS, dtmf:KEYS, play:/abs/path (no .wav).
[test-caller]
exten => s,1,Answer()
 same => n,GotoIf($["${{CALLER_RECORD_DIR}}" = ""]?go)
 same => n,MixMonitor(${{CALLER_RECORD_DIR}}/${{CALLER_TAG}}.wav,r(${{CALLER_RECORD_DIR}}/${{CALLER_TAG}}-rx.wav))
 same => n(go),Set(I=1)
 same => n(next),Set(STEP=${{CUT(CALLER_SCRIPT,^,${{I}})}})
 same => n,GotoIf($["${{STEP}}" = ""]?done)
 same => n,Set(KIND=${{CUT(STEP,:,1)}})
 same => n,Set(ARG=${{CUT(STEP,:,2)}})
 same => n,ExecIf($["${{KIND}}" = "wait"]?Wait(${{ARG}}))
 same => n,ExecIf($["${{KIND}}" = "dtmf"]?SendDTMF(${{ARG}}))
 same => n,ExecIf($["${{KIND}}" = "play"]?Playback(${{ARG}}))
 same => n,Set(I=$[${{I}} + 1])
 same => n,Goto(next)
 same => n(done),Hangup()

; A citizen the assistant calls (reminder calls: REMINDER_CALL_CHANNEL=Local/{{number}}@test-callee):
; picks up and follows the global CALLEE_SCRIPT, recorded as callee-<number>.
[test-callee]
exten => _X.,1,Set(CALLER_SCRIPT=${{GLOBAL(CALLEE_SCRIPT)}})
 same => n,Set(CALLER_TAG=callee-${{EXTEN}})
 same => n,Set(CALLER_RECORD_DIR=${{GLOBAL(CALLEE_RECORD_DIR)}})
 same => n,Verbose(1,HEZE-CALLEE ${{EXTEN}})
 same => n,Goto(test-caller,s,1)

; Stands in for the agents' queue.
[test-human]
exten => s,1,Verbose(1,HEZE-HUMAN ${{HEZE_UUID}})
 same => n,Wait(1)
 same => n,Hangup()
"""


@functools.cache
def build() -> tuple[Path | None, str]:
    """The Asterisk build to run and why not: ../shared/pbx's, or where it cannot run on this CPU, the
    portable one ``scripts/pbx.sh ensure`` (run by ``make bootstrap``) built from Debian's source."""
    if not (PBX_DIR / TARBALL).is_file():
        return None, f"no Asterisk build at {PBX_DIR / TARBALL}"
    found = subprocess.run(["bash", str(ROOT / "scripts" / "pbx.sh"), "path"], capture_output=True, text=True,
                           env={**os.environ, "HEZE_PBX_DIR": str(PBX_DIR)})
    if found.returncode != 0:
        return None, found.stderr.strip()
    return Path(found.stdout.strip()), ""


def available() -> str | None:
    """Why the PBX cannot run here, or None."""
    tarball, why = build()
    return None if tarball is not None else why


@dataclass
class CallResult:
    tag: str
    heard: Path | None  # what the caller heard (MixMonitor rx), when recorded


class Pbx:
    def __init__(self, gateway_host: str, http_port: int, audiosocket_port: int, token: str,
                 outgoing: Path | None = None) -> None:
        """``outgoing``: a directory to serve as Asterisk's call-file spool (the stack's
        REMINDER_CALL_SPOOL, as a volume both share in production)."""
        self.work = Path(tempfile.mkdtemp(prefix="heze-pbx-", dir="/tmp"))  # short: socket paths < 100 chars
        tarball, why = build()
        if tarball is None:
            raise RuntimeError(why)
        with tarfile.open(tarball) as tar:
            top = {name.split("/", 1)[0] for name in tar.getnames()}
            tar.extractall(self.work, filter="fully_trusted")
        (folder,) = top
        self.ast = self.work / folder
        self.conf = self.work / "conf"
        shutil.copytree(PBX_DIR / "conf", self.conf)
        (self.conf / "extensions.conf").write_text(
            TEST_DIALPLAN.format(project=ROOT / "deploy" / "asterisk" / "extensions.conf"))
        self.run_dir = self.work / "run"
        if outgoing is not None:
            (self.run_dir / "spool").mkdir(parents=True)
            (self.run_dir / "spool" / "outgoing").symlink_to(outgoing, target_is_directory=True)
        self.records = self.work / "calls"
        self.records.mkdir()
        env = {**os.environ, "HEZE_GATEWAY": gateway_host, "HEZE_HTTP_PORT": str(http_port),
               "HEZE_AUDIOSOCKET_PORT": str(audiosocket_port), "HEZE_TOKEN": token,
               "HEZE_HUMAN_CONTEXT": "test-human"}
        self.proc = subprocess.Popen(["bash", str(PBX_DIR / "run-asterisk.sh"), "fg", str(self.ast), str(self.conf),
                                      str(self.run_dir)], env=env, stdout=subprocess.DEVNULL,
                                     stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + 30
        while not self.cli("core waitfullybooted"):
            if time.monotonic() > deadline or self.proc.poll() is not None:
                self.stop()
                raise RuntimeError(f"Asterisk did not start (see {self.run_dir}/log)")
            time.sleep(0.3)

    def cli(self, command: str) -> str:
        out = subprocess.run(["bash", str(PBX_DIR / "run-asterisk.sh"), "cli", str(self.run_dir), command],
                             capture_output=True, text=True, timeout=20)
        return out.stdout if out.returncode == 0 else ""

    def call(self, script: str, caller: str = "13800000008") -> CallResult:
        """Place a call from a test caller who follows ``script``; returns at once."""
        tag = uuid.uuid4().hex[:12]
        spool = self.run_dir / "spool"
        (spool / "tmp").mkdir(parents=True, exist_ok=True)
        (spool / "outgoing").mkdir(parents=True, exist_ok=True)
        body = (f"Channel: Local/s@test-caller\nCallerID: \"Test\" <{caller}>\nContext: heze-assistant\n"
                f"Extension: s\nPriority: 1\nSetvar: CALLER_SCRIPT={script}\nSetvar: CALLER_TAG={tag}\n"
                f"Setvar: CALLER_RECORD_DIR={self.records}\n")
        tmp = spool / "tmp" / f"{tag}.call"
        tmp.write_text(body)
        tmp.replace(spool / "outgoing" / f"{tag}.call")
        return CallResult(tag, self.records / f"{tag}-rx.wav")

    def callee(self, script: str) -> None:
        """How a citizen the assistant calls behaves (steps as in ``call``); recorded as callee-<number>."""
        self.cli(f"dialplan set global CALLEE_SCRIPT {script}")
        self.cli(f"dialplan set global CALLEE_RECORD_DIR {self.records}")

    @property
    def spool(self) -> Path:
        """Asterisk's outgoing call-file spool (REMINDER_CALL_SPOOL)."""
        path = self.run_dir / "spool" / "outgoing"
        path.mkdir(parents=True, exist_ok=True)
        return path

    def log(self) -> str:
        path = self.run_dir / "log" / "full"
        return path.read_text(errors="replace") if path.exists() else ""

    def channels(self) -> int:
        out = self.cli("core show channels count")
        for line in out.splitlines():
            if "active channel" in line:
                return int(line.split()[0])
        return -1

    def stop(self) -> None:
        subprocess.run(["bash", str(PBX_DIR / "run-asterisk.sh"), "stop", str(self.run_dir)], capture_output=True,
                       timeout=30)
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
        shutil.rmtree(self.work, ignore_errors=True)
