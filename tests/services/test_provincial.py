"""The provincial platform adapter (services/provincial.py) against the local fake platform over
real HTTP: signatures, retries and backoff (an injected clock and sleep: nothing waits), never
retrying a 4xx, timeouts, the circuit breaker, the answer cache, and personal numbers kept out of logs."""
from __future__ import annotations

import logging
import re
from collections.abc import Iterator

import httpx
import pytest
from pydantic import SecretStr, ValidationError

from services.container import build_services
from services.provincial import Platform, PlatformDown, PlatformRefused, ProvincialApplications, Seams
from services.resilience import CLOSED, HALF_OPEN, OPEN, Backoff, CircuitBreaker, TtlCache
from tests.sandbox import make_settings
from tests.fakes.clock import Clock
from tests.fakes.provincial import APP_ID, APP_KEY, FakeProvincialPlatform, down_url, serve


@pytest.fixture(scope="module")
def platform() -> Iterator[tuple[FakeProvincialPlatform, str]]:
    fake = FakeProvincialPlatform()
    with serve(fake) as url:
        yield fake, url


@pytest.fixture
def fake(platform: tuple[FakeProvincialPlatform, str]) -> FakeProvincialPlatform:
    platform[0].reset()
    return platform[0]


@pytest.fixture
def url(platform: tuple[FakeProvincialPlatform, str]) -> str:
    return platform[1]


@pytest.fixture
def clock() -> Clock:
    return Clock()


def adapter(url: str, clock: Clock, *, retries: int = 2, timeout_s: float = 2.0, deadline_s: float = 6.0,
            failures: int = 3, key: str = APP_KEY) -> ProvincialApplications:
    return ProvincialApplications(
        Platform(url, APP_ID, key.encode(), timeout_s=timeout_s, retries=retries, deadline_s=deadline_s),
        httpx.Client(), CircuitBreaker(failures, 30.0, clock), TtlCache(60.0, clock), Backoff(0.2, 2.0),
        Seams(monotonic=clock, sleep=clock.sleep, rand=lambda: 0.5))


def test_a_signed_lookup_is_accepted_and_mapped(fake: FakeProvincialPlatform, url: str, clock: Clock) -> None:
    view = adapter(url, clock).by_number("20261101000001")
    assert view is not None and (view.status, view.current_step) == ("审核中", "材料审核")
    (call,) = fake.calls
    assert fake.rejected == [] and call["body"] == {"projid": "20261101000001"}
    assert call["headers"]["x-gov-app-id"] == APP_ID and len(call["headers"]["x-request-id"]) == 32
    assert call["headers"]["content-type"].startswith("application/json")


def test_not_found_is_none_and_by_applicant_lists(fake: FakeProvincialPlatform, url: str, clock: Clock) -> None:
    a = adapter(url, clock)
    assert a.by_number("20990101000001") is None
    assert [v.number for v in a.by_applicant("13800000001", "1230")] == ["20261101000001", "20261101000002"]
    assert a.by_applicant("13800000001", "9999") == []
    assert fake.calls[1]["body"] == {"mobile": "13800000001", "idCardLast4": "1230"}
    assert a.breaker.state == CLOSED


def test_a_wrong_app_key_is_refused_once_and_not_retried(fake: FakeProvincialPlatform, url: str, clock: Clock) -> None:
    a = adapter(url, clock, key="not-the-key-the-platform-issued")
    with pytest.raises(PlatformRefused):
        a.by_number("20261101000001")
    assert fake.rejected == ["bad signature"] and clock.slept == []


def test_5xx_is_retried_with_backoff_and_each_attempt_signed_anew(fake: FakeProvincialPlatform, url: str,
                                                                  clock: Clock) -> None:
    fake.failures[:] = [502, 503]
    view = adapter(url, clock).by_number("20261101000001")
    assert view is not None
    assert clock.slept == pytest.approx([0.15, 0.3])  # 0.2 then 0.4 ceilings, half of each jittered (rand 0.5)
    assert len(fake.calls) == 3 and fake.rejected == []
    assert len({c["headers"]["x-gov-nonce"] for c in fake.calls}) == 3
    assert len({c["headers"]["x-request-id"] for c in fake.calls}) == 3


def test_5xx_after_every_retry_is_platform_down(fake: FakeProvincialPlatform, url: str, clock: Clock) -> None:
    fake.failures[:] = [500, 500, 500, 500]
    with pytest.raises(PlatformDown):
        adapter(url, clock, retries=2).by_number("20261101000001")
    assert len(fake.calls) == 3 and len(clock.slept) == 2


@pytest.mark.parametrize("status", [400, 403, 404, 429])
def test_4xx_is_never_retried(fake: FakeProvincialPlatform, url: str, clock: Clock, status: int) -> None:
    fake.failures[:] = [status]
    a = adapter(url, clock)
    with pytest.raises(PlatformRefused):
        a.by_number("20261101000001")
    assert len(fake.calls) == 1 and clock.slept == []
    assert a.breaker.state == CLOSED  # it answered: not a failure of availability


def test_no_retry_starts_past_the_deadline(fake: FakeProvincialPlatform, url: str, clock: Clock) -> None:
    fake.failures[:] = [503] * 5
    with pytest.raises(PlatformDown):
        adapter(url, clock, retries=4, deadline_s=0.4).by_number("20261101000001")
    assert clock.slept == pytest.approx([0.15])  # 0.15 + 0.3 would pass 0.4
    assert len(fake.calls) == 2


def test_a_slow_platform_times_out_and_is_retried(fake: FakeProvincialPlatform, url: str, clock: Clock) -> None:
    fake.delay_s = 1.0
    with pytest.raises(PlatformDown, match="timeout"):
        adapter(url, clock, retries=1, timeout_s=0.1).by_number("20261101000001")
    assert len(fake.calls) == 2 and clock.slept == pytest.approx([0.15])


def test_a_platform_that_is_down_is_platform_down(clock: Clock) -> None:
    a = adapter(down_url(), clock, retries=1)
    with pytest.raises(PlatformDown, match="ConnectError"):
        a.by_applicant("13800000001", "1230")
    assert len(clock.slept) == 1


def test_an_html_error_page_with_200_counts_against_the_platform(fake: FakeProvincialPlatform, url: str,
                                                                 clock: Clock) -> None:
    fake.garbage = True
    a = adapter(url, clock, failures=1)
    with pytest.raises(PlatformRefused):
        a.by_number("20261101000001")
    assert len(fake.calls) == 1 and a.breaker.state == OPEN


def test_the_breaker_opens_refuses_without_calling_then_half_opens(fake: FakeProvincialPlatform, url: str,
                                                                   clock: Clock) -> None:
    a = adapter(url, clock, retries=0, failures=2)
    fake.failures[:] = [503, 503]
    for _ in range(2):
        with pytest.raises(PlatformDown):
            a.by_number("20261101000001")
    assert a.breaker.state == OPEN
    with pytest.raises(PlatformDown, match="breaker open"):
        a.by_number("20261101000001")
    assert len(fake.calls) == 2  # refused at once, the platform not asked
    clock.now += 30
    assert a.breaker.state == HALF_OPEN
    assert a.by_number("20261101000001") is not None  # the trial succeeds: closed again
    assert a.breaker.state == CLOSED and len(fake.calls) == 3


def test_a_half_open_trial_is_one_attempt_and_its_failure_reopens(fake: FakeProvincialPlatform, url: str,
                                                                   clock: Clock) -> None:
    a = adapter(url, clock, retries=2, failures=1)
    fake.failures[:] = [503, 503, 503]
    with pytest.raises(PlatformDown):
        a.by_number("20261101000001")
    assert len(fake.calls) == 3
    clock.now += 31
    fake.failures[:] = [503, 503, 503]
    with pytest.raises(PlatformDown):
        a.by_number("20261101000001")
    assert len(fake.calls) == 4  # the trial: one attempt, no retries
    assert a.breaker.allow() is None


def test_answers_are_cached_for_the_ttl_and_failures_never(fake: FakeProvincialPlatform, url: str,
                                                           clock: Clock) -> None:
    a = adapter(url, clock, retries=0)
    fake.failures[:] = [503]
    with pytest.raises(PlatformDown):
        a.by_number("20261101000001")
    first = a.by_number("20261101000001")  # the failure was not kept: asked again
    assert first is not None and len(fake.calls) == 2
    assert a.by_number("20261101000001") == first and a.by_number("20990101000001") is None
    assert a.by_number("20990101000001") is None
    a.by_applicant("13800000001", "1230")
    a.by_applicant("13800000001", "1230")
    assert len(fake.calls) == 4  # one more each for the unknown number and the applicant
    clock.now += 60
    a.by_number("20261101000001")
    assert len(fake.calls) == 5


def test_phone_numbers_never_reach_the_log(fake: FakeProvincialPlatform, url: str, clock: Clock,
                                           caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    a = adapter(url, clock, retries=1)
    fake.failures[:] = [503, 503]
    with pytest.raises(PlatformDown):
        a.by_applicant("13800000001", "1230")
    fake.failures[:] = [403]
    with pytest.raises(PlatformRefused):
        a.by_applicant("13800000001", "1230")
    assert "by_applicant u" in caplog.text  # a pseudonym, to follow one citizen's lookups
    logged = re.sub(r"request [0-9a-f]{32}|\bu[0-9a-f]{12}\b", "", caplog.text)  # ids that are hex by chance
    assert "13800000001" not in logged and "1230" not in logged


def test_settings_choose_and_check_the_backend(url: str) -> None:
    assert make_settings().applications_backend == "sql"
    with pytest.raises(ValidationError, match="PROVINCIAL_APP_KEY"):
        make_settings(applications_backend="provincial", provincial_base_url=url, provincial_app_id=APP_ID)
    with pytest.raises(ValidationError, match="https"):
        make_settings(heze_env="production", data_keys=SecretStr("k1:" + "A" * 44), applications_backend="provincial",
                      provincial_base_url=url, provincial_app_id=APP_ID, provincial_app_key=SecretStr(APP_KEY))
    settings = make_settings(applications_backend="provincial", provincial_base_url=url, provincial_app_id=APP_ID,
                             provincial_app_key=SecretStr(APP_KEY))
    services = build_services(settings)
    assert isinstance(services.applications, ProvincialApplications)
    assert services.applications.by_number("20261101000001") is not None
