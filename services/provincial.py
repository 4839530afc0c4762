"""Progress (办件进度) from the provincial integrated government-service platform over HTTP, behind
the ``ApplicationsBackend`` interface. Chosen by ``APPLICATIONS_BACKEND=provincial``; the shapes and
settings are in deploy/provincial-platform.md, the signature in services/provincial_protocol.py.

One lookup: the cache (answers only, ``PROVINCIAL_CACHE_S``; the form's check and the answer that
follows it ask once) -> the circuit breaker (refuses at once while open) -> up to ``1 + RETRIES``
signed POSTs, each with a fresh timestamp and nonce. A timeout, a network error or a 5xx is retried
after an equal-jitter backoff while the whole lookup stays inside ``PROVINCIAL_DEADLINE_S``; a 4xx
never is (it will not change). A lookup that ends without an answer counts one failure toward
opening the breaker; any HTTP answer below 500 shows the platform is up. The half-open trial is a
single attempt. Every way of not answering raises ``ApplicationsUnavailable``.

Logs name the lookup, the attempt and our ``X-Request-Id`` (which the platform's operators can trace),
never an application number, a phone number or a body.
"""
from __future__ import annotations

import logging
import random
import secrets
import time
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

import httpx

from services.applications import ApplicationsUnavailable, ApplicationView
from services.provincial_protocol import (
    BY_APPLICANT_PATH,
    PROGRESS_PATH,
    REQUEST_ID_HEADER,
    ProtocolError,
    Refused,
    application,
    applications,
    new_nonce,
    read_answer,
    request_body,
    signed_headers,
)
from services.resilience import HALF_OPEN, Backoff, CircuitBreaker, TtlCache
from textnorm.masking import pseudonym

log = logging.getLogger(__name__)


class PlatformDown(ApplicationsUnavailable):
    """No answer: the breaker is open, or every attempt timed out, failed to connect or got a 5xx."""


class PlatformRefused(ApplicationsUnavailable):
    """The platform answered with an error code (a 4xx: signature, authorisation, rate limit) or
    with a body we cannot read. Usually our settings or a changed interface: logged as an error."""


@dataclass(frozen=True)
class Platform:
    """Where the platform is and how we call it (from settings)."""

    base_url: str
    app_id: str
    app_key: bytes
    timeout_s: float = 3.0
    retries: int = 2
    deadline_s: float = 6.0


@dataclass(frozen=True)
class Seams:
    """The clocks, sleep and randomness the adapter uses; tests pass their own."""

    monotonic: Callable[[], float] = time.monotonic
    wall: Callable[[], float] = time.time  # signatures' timestamps
    sleep: Callable[[float], None] = time.sleep
    rand: Callable[[], float] = random.random


class ProvincialApplications:
    def __init__(self, platform: Platform, http: httpx.Client, breaker: CircuitBreaker,
                 cache: TtlCache[Any], backoff: Backoff = Backoff(), seams: Seams = Seams()) -> None:
        self.platform = platform
        self._http = http
        self.breaker = breaker
        self._cache = cache
        self._backoff = backoff
        self._seams = seams
        self._cache_salt = secrets.token_hex(16)  # applicant keys in the cache are keyed hashes

    def by_number(self, number: str) -> ApplicationView | None:
        key = "n:" + number
        hit, cached = self._cache.get(key)
        if hit:
            return cached
        view = self._post(PROGRESS_PATH, {"projid": number}, "by_number", _one)
        self._cache.put(key, view)
        return view

    def by_applicant(self, phone: str, id_last4: str) -> list[ApplicationView]:
        key = "a:" + pseudonym(f"{phone}/{id_last4.upper()}", self._cache_salt)
        hit, cached = self._cache.get(key)
        if hit:
            return list(cached or [])
        views = self._post(BY_APPLICANT_PATH, {"mobile": phone, "idCardLast4": id_last4.upper()},
                           "by_applicant " + pseudonym(phone, self.platform.app_key.hex()), applications)
        self._cache.put(key, tuple(views))
        return list(views)

    def _post(self, path: str, fields: Mapping[str, str], what: str, parse: Callable[[Any], Any]) -> Any:
        """The platform's answer read by ``parse`` (given None for 办件不存在), or
        ``ApplicationsUnavailable``."""
        state = self.breaker.allow()
        if state is None:
            log.warning("provincial platform: breaker open, %s not asked", what)
            raise PlatformDown("breaker open")
        p, seams = self.platform, self._seams
        url = p.base_url.rstrip("/") + path
        body = request_body(fields)
        attempts = 1 if state == HALF_OPEN else 1 + p.retries
        started = seams.monotonic()
        why = ""
        for attempt in range(attempts):
            request_id = uuid.uuid4().hex
            timeout = max(0.001, min(p.timeout_s, p.deadline_s - (seams.monotonic() - started)))
            headers = {**signed_headers(p.app_id, p.app_key, "POST", urlsplit(url).path, body,
                                        int(seams.wall() * 1000), new_nonce()),
                       REQUEST_ID_HEADER: request_id, "Content-Type": "application/json; charset=utf-8",
                       "Accept": "application/json"}
            try:
                resp = self._http.post(url, content=body, headers=headers, timeout=timeout)
            except httpx.TimeoutException:
                why = "timeout"
            except httpx.TransportError as exc:
                why = type(exc).__name__
            else:
                if resp.status_code < 500:
                    return self._answer(resp, what, request_id, parse)
                why = f"HTTP {resp.status_code}"
            log.warning("provincial platform: %s attempt %d/%d failed (%s), request %s",
                        what, attempt + 1, attempts, why, request_id)
            if attempt + 1 < attempts:
                delay = self._backoff.delay(attempt, seams.rand)
                if seams.monotonic() - started + delay >= p.deadline_s:
                    break  # no time left for another attempt
                seams.sleep(delay)
        self.breaker.failed()
        raise PlatformDown(why)

    def _answer(self, resp: httpx.Response, what: str, request_id: str, parse: Callable[[Any], Any]) -> Any:
        try:
            answer = parse(read_answer(resp.status_code, resp.content))
        except ProtocolError as exc:
            self.breaker.failed()  # a gateway's error page with 200: the platform is not well
            log.error("provincial platform: %s unreadable answer (%s), request %s", what, exc, request_id)
            raise PlatformRefused(str(exc)) from exc
        except Refused as exc:
            self.breaker.succeeded()  # it answered: up, but refusing (our settings?)
            log.error("provincial platform: %s refused (%s), request %s", what, exc, request_id)
            raise PlatformRefused(str(exc)) from exc
        self.breaker.succeeded()
        return answer


def _one(data: Any) -> ApplicationView | None:
    return None if data is None else application(data)


def build(settings: Any, http: httpx.Client | None = None, seams: Seams = Seams()) -> ProvincialApplications:
    """The adapter from ``services.settings.Settings`` (validated there)."""
    platform = Platform(base_url=settings.provincial_base_url, app_id=settings.provincial_app_id,
                        app_key=settings.provincial_app_key.get_secret_value().encode(),
                        timeout_s=settings.provincial_timeout_s, retries=settings.provincial_retries,
                        deadline_s=settings.provincial_deadline_s)
    return ProvincialApplications(
        platform, http or httpx.Client(timeout=httpx.Timeout(platform.timeout_s)),
        CircuitBreaker(settings.provincial_breaker_failures, settings.provincial_breaker_cooldown_s,
                       seams.monotonic),
        TtlCache(settings.provincial_cache_s, seams.monotonic),
        Backoff(settings.provincial_backoff_s, settings.provincial_backoff_cap_s), seams)
