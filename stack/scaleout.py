"""Rasa's distributed set-up as processes on one machine: replicas behind HAProxy, shared stores.

The topology of ``deploy/compose.yml`` and ``deploy/k8s/`` (docs/DESIGN.md, "Scale-out"), started by
the supervisor of ``stack/processes.py``: ``rasa`` Rasa replicas and ``actions`` action servers and
``voice`` voice gateways, each behind HAProxy (Debian's), with one services API and one console.
The replicas are stateless: PostgreSQL tracker store, Redis lock store and WeChat claims, RabbitMQ
event broker (``deploy/endpoints.yml``; the caller supplies those variables).

The load balancer takes the ports the settings name (``RASA_PORT``, ``ACTION_PORT``,
``VOICE_HTTP_PORT``, ``VOICE_AUDIOSOCKET_PORT``), so every process that reaches another one through
those settings reaches the balancer; each replica listens on a port of its own. HAProxy checks each
replica's health endpoint every second and stops sending to one after two failed checks; a request
that cannot connect to a replica is sent to another (``option redispatch``). Requests already inside
a replica that dies fail: the WeChat channel's retries and held messages answer those.
"""
from __future__ import annotations

import dataclasses
import shutil
import socket
from dataclasses import dataclass
from pathlib import Path

from console.settings import ConsoleSettings
from services.settings import Settings
from stack.processes import ProcessSpec, specs
from voice.settings import VoiceSettings


@dataclass(frozen=True)
class Topology:
    rasa: int = 2
    actions: int = 2
    voice: int = 2


@dataclass(frozen=True)
class Backend:
    """One balanced service: where clients connect, the replicas' ports, how each one is checked."""
    name: str
    mode: str  # http | tcp
    bind: tuple[str, int]
    servers: list[tuple[str, int, int]]  # (name, port, health-check port)
    check_path: str
    balance: str = "leastconn"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def haproxy_config(backends: list[Backend], health_port: int) -> str:
    """HAProxy's configuration: a frontend and a checked backend per service, and a monitor page
    (``/health``; per-replica counters at ``/stats;csv``)."""
    lines = [
        "global",
        "    maxconn 4096",
        "defaults",
        "    timeout connect 2s",
        "    timeout client 120s",
        "    timeout server 120s",  # a turn under load; the WeChat channel answers within its own 4 s
        "    timeout check 2s",
        "    retries 3",
        "    option redispatch",  # a replica that refuses the connection: the request goes to another
        "listen monitor",
        "    mode http",
        f"    bind 127.0.0.1:{health_port}",
        "    monitor-uri /health",
        "    stats enable",
        "    stats uri /stats",
    ]
    for b in backends:
        lines += [f"frontend {b.name}", f"    mode {b.mode}", f"    bind {b.bind[0]}:{b.bind[1]}",
                  f"    default_backend {b.name}-replicas",
                  f"backend {b.name}-replicas", f"    mode {b.mode}", f"    balance {b.balance}",
                  f"    option httpchk GET {b.check_path}", "    default-server inter 1s fall 2 rise 1"]
        lines += [f"    server {name} 127.0.0.1:{port} check port {check}" for name, port, check in b.servers]
    return "\n".join(lines) + "\n"


def scaleout_specs(settings: Settings, voice: VoiceSettings, console: ConsoleSettings, topology: Topology,
                   run_dir: Path) -> list[ProcessSpec]:
    """The processes of the topology; HAProxy's configuration is written under ``run_dir``."""
    base = {s.name: s for s in specs(settings, voice, console)}
    haproxy = shutil.which("haproxy") or "/usr/sbin/haproxy"
    host = "127.0.0.1"
    out: list[ProcessSpec] = [base["services-api"], base["console"]]

    rasa_servers = []
    for i in range(1, topology.rasa + 1):
        port = _free_port()
        argv = list(base["rasa"].argv)
        argv[argv.index("--port") + 1] = str(port)
        argv[argv.index("--interface") + 1] = host
        url = f"http://{host}:{port}"
        out.append(dataclasses.replace(base["rasa"], name=f"rasa-{i}", argv=argv, health_url=f"{url}/", url=url))
        rasa_servers.append((f"rasa-{i}", port, port))

    action_servers = []
    for i in range(1, topology.actions + 1):
        port = _free_port()
        url = f"http://{host}:{port}"
        env = {**base["action-server"].env, "ACTION_HOST": host, "ACTION_PORT": str(port)}
        out.append(dataclasses.replace(base["action-server"], name=f"action-server-{i}", env=env,
                                       health_url=f"{url}/health", url=url))
        action_servers.append((f"action-server-{i}", port, port))

    voice_http, voice_audio = [], []
    for i in range(1, topology.voice + 1):
        http_port, audio_port = _free_port(), _free_port()
        url = f"http://{host}:{http_port}"
        env = {**base["voice-gateway"].env, "VOICE_HOST": host, "VOICE_HTTP_PORT": str(http_port),
               "VOICE_AUDIOSOCKET_HOST": host, "VOICE_AUDIOSOCKET_PORT": str(audio_port)}
        out.append(dataclasses.replace(base["voice-gateway"], name=f"voice-gateway-{i}", env=env,
                                       health_url=f"{url}/health", url=url))
        voice_http.append((f"voice-gateway-{i}", http_port, http_port))
        voice_audio.append((f"voice-gateway-{i}", audio_port, http_port))

    # A call's HTTP registration (POST /calls/<id>/start, the caller's number) and its AudioSocket
    # connection must reach the same gateway, which keeps the call in memory: both are balanced by the
    # PBX's address, so one PBX uses one gateway and the others take over when it fails.
    backends = [
        Backend("rasa", "http", (settings.rasa_host, settings.rasa_port), rasa_servers, "/"),
        Backend("actions", "http", (settings.action_host, settings.action_port), action_servers, "/health"),
        Backend("voice-http", "http", (voice.voice_host, voice.voice_http_port), voice_http, "/health", "source"),
        Backend("voice-audiosocket", "tcp", (voice.voice_audiosocket_host, voice.voice_audiosocket_port),
                voice_audio, "/health", "source"),
    ]
    health_port = _free_port()
    run_dir.mkdir(parents=True, exist_ok=True)
    config = run_dir / "haproxy.cfg"
    config.write_text(haproxy_config(backends, health_port))
    monitor = f"http://127.0.0.1:{health_port}"
    out.append(ProcessSpec("load-balancer", [haproxy, "-db", "-f", str(config)], f"{monitor}/health", monitor, {}))
    out.append(base["wechat-front"])  # relays to the balancer's Rasa address
    return out
