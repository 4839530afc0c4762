"""Faults for the scale-out tests, made with real parts: a Redis server of the test's own (restarted
as an operator would, losing what it held in memory), and a TCP relay in front of PostgreSQL whose
connections can be cut and refused for a while (what the processes see when the database host goes
away). RabbitMQ is this machine's own, restarted with ``rabbitmqctl stop_app`` / ``start_app``."""
from __future__ import annotations

import socket
import subprocess
import threading
import time
from pathlib import Path

import redis


class RedisServer:
    """``redis-server`` on its own port, nothing saved to disk."""

    def __init__(self, port: int, log: Path) -> None:
        self.port, self.log = port, log
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        with open(self.log, "ab") as out:
            self.proc = subprocess.Popen(["redis-server", "--port", str(self.port), "--bind", "127.0.0.1",
                                          "--save", "", "--appendonly", "no"], stdout=out, stderr=subprocess.STDOUT)
        client = redis.Redis(port=self.port)
        deadline = time.monotonic() + 10
        while True:
            try:
                client.ping()
                return
            except redis.ConnectionError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.05)

    def stop(self) -> None:
        if self.proc is not None:
            self.proc.terminate()
            self.proc.wait(timeout=10)
            self.proc = None

    def restart(self) -> None:
        self.stop()
        self.start()


class TcpRelay:
    """Relays 127.0.0.1:<port> to ``target``; ``cut()`` closes every connection and refuses new ones
    until ``restore()``."""

    def __init__(self, target: tuple[str, int]) -> None:
        self.target = target
        self.server = socket.create_server(("127.0.0.1", 0))
        self.port = int(self.server.getsockname()[1])
        self.down = False
        self._conns: set[socket.socket] = set()
        self._lock = threading.Lock()
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self.server.accept()
            except OSError:
                return
            if self.down:
                client.close()
                continue
            try:
                upstream = socket.create_connection(self.target, timeout=5)
            except OSError:
                client.close()
                continue
            upstream.settimeout(None)
            with self._lock:
                self._conns |= {client, upstream}
            for a, b in ((client, upstream), (upstream, client)):
                threading.Thread(target=self._pipe, args=(a, b), daemon=True).start()

    def _pipe(self, src: socket.socket, dst: socket.socket) -> None:
        try:
            while data := src.recv(65536):
                dst.sendall(data)
        except OSError:
            pass
        finally:
            for s in (src, dst):
                self._close(s)

    def _close(self, s: socket.socket) -> None:
        with self._lock:
            self._conns.discard(s)
        try:
            s.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass
        s.close()

    def cut(self) -> None:
        self.down = True
        with self._lock:
            conns = list(self._conns)
        for s in conns:
            self._close(s)

    def restore(self) -> None:
        self.down = False

    def close(self) -> None:
        self.cut()
        self.server.close()


def rabbitmq_app(action: str) -> None:
    """``rabbitmqctl stop_app`` or ``start_app`` on this machine's RabbitMQ (durable queues and
    persistent messages survive; every connection is dropped)."""
    result = subprocess.run(["rabbitmqctl", f"{action}_app"], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, f"rabbitmqctl {action}_app: {result.stdout}{result.stderr}"
