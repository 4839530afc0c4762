"""The departments' open API (/api/v1 on the services API), on SQLite and PostgreSQL: keys and scopes,
rate limits, idempotency, audit, each endpoint and its refusals, and schemathesis against the document."""
from __future__ import annotations

import datetime as dt
import json
import typing
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest
import schemathesis
from fastapi import FastAPI
from fastapi.testclient import TestClient
from hypothesis import HealthCheck, given, settings
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_headers_conformance,
    response_schema_conformance,
    status_code_conformance,
)
from schemathesis.checks import not_a_server_error
from schemathesis.generation import GenerationMode
from sqlalchemy import delete, select, text, update
from sqlalchemy.exc import DBAPIError

from knowledge.config import KnowledgeSettings
from knowledge.content import load_topics
from knowledge.index import fingerprint, is_current, open_knowledge_base
from services.api import create_app
from services.api_keys import SCOPES, ApiKeys
from services.container import Services
from services.models import Application, ApplicationStep, FeedbackTicket, Rating
from services.open_api import PREFIX, create_open_api
from services.open_api_models import ApiAudit, ApiClient, ApiIdempotency
from services.open_api_schema import TicketStatus
from services.settings import ROOT
from services.tickets import STATUS_NAMES, TRANSITIONS
from tests.sandbox import make_settings

DEPT = "城市管理局"  # its tickets are 城管's, as the seeded ticket 10000001
APP = "20261101000001"  # seeded, applicant 13800000001
APP_DEPT = "市场监督管理局"  # the department handling it: only its keys add steps
TICKET = "10000001"
DOCUMENT = ROOT / "docs" / "openapi" / "departments-v1.json"
SECTIONS = {"办理条件": "因工程建设需要挖掘城市道路的单位。", "所需材料": "- 申请表。\n- 施工方案。",
            "办理流程": "1. 提交申请。\n2. 审核。\n3. 发证。", "办理地点": "{{local.address}}",
            "办理时限": "五个工作日。", "收费标准": "不收费。", "咨询方式": "拨打12345热线。"}
GUIDE = {"title": "城市道路挖掘许可", "department": DEPT, "aliases": ["挖路审批", "道路开挖"],
         "source": "《城市道路管理条例》", "sections": SECTIONS}


class Clock:
    def __init__(self, at: dt.datetime) -> None:
        self.at = at

    def __call__(self) -> dt.datetime:
        return self.at


@dataclass
class Api:
    client: TestClient
    services: Services
    kb: KnowledgeSettings
    updates: list[tuple[str, str]] = field(default_factory=list)
    _keys: int = 0

    def key(self, scopes: typing.Iterable[str] = tuple(SCOPES), department: str = DEPT, rate: int = 1000) -> dict[str, str]:
        _, key = ApiKeys(self.services.sessions).create(department=department, name="业务系统", scopes=scopes,
                                                        rate_per_minute=rate)
        return {"Authorization": f"Bearer {key}"}

    def write(self, method: str, path: str, headers: dict[str, str], body: object, key: str | None = None) -> typing.Any:
        self._keys += 1
        extra = {"Idempotency-Key": key if key is not None else f"k-{self._keys}"}
        return self.client.request(method, PREFIX + path, headers={**headers, **extra}, json=body)


@pytest.fixture
def kb(tmp_path: Path) -> KnowledgeSettings:
    return KnowledgeSettings(_env_file=None, published_dir=tmp_path / "published",  # type: ignore[call-arg]
                             index_dir=tmp_path / "kb", embedding_model="")


@pytest.fixture
def api(seeded: Services, kb: KnowledgeSettings) -> Api:
    made = Api(TestClient(create_app(make_settings(), seeded, kb=kb)), seeded, kb)
    made.client = TestClient(create_app(make_settings(), seeded, kb=kb,
                                        on_update=lambda kind, ref: made.updates.append((kind, ref))))
    return made


def clocked(services: Services, kb: KnowledgeSettings, clock: Clock) -> TestClient:
    outer = FastAPI()
    outer.mount(PREFIX, create_open_api(make_settings(), services, kb=kb, clock=clock))
    return TestClient(outer)


def error(response: typing.Any) -> str:
    return str(response.json()["error"]["code"])


# -- the document ---------------------------------------------------------------------------------

def test_the_served_document_is_the_committed_one(api: Api) -> None:
    served = api.client.get(f"{PREFIX}/openapi.json")
    assert served.status_code == 200
    assert served.json() == json.loads(DOCUMENT.read_text(encoding="utf-8")), \
        "the open API changed: run .venv/bin/python -m services openapi and commit the document"
    paths = served.json()["paths"]
    assert set(paths) == {"/applications/{number}/steps", "/tickets/{number}", "/guides/{slug}", "/kpis"}
    assert served.json()["servers"] == [{"url": PREFIX}]
    for operations in paths.values():
        for operation in operations.values():
            for status, answer in operation["responses"].items():
                if status.startswith("4"):
                    assert answer["content"]["application/json"]["schema"] == {"$ref": "#/components/schemas/ErrorBody"}


def test_ticket_statuses_agree_with_the_ticket_model() -> None:
    assert set(typing.get_args(TicketStatus)) == set(STATUS_NAMES) == set(TRANSITIONS)


# -- keys, scopes, rate limits --------------------------------------------------------------------

def test_keys_are_shown_once_and_kept_only_as_hashes(api: Api) -> None:
    keys = ApiKeys(api.services.sessions)
    client, key = keys.create(department="民政局", name="低保系统", scopes={"tickets:write", "kpis:read"}, rate_per_minute=60)
    with api.services.sessions() as s:
        row = s.get(ApiClient, client.id)
        assert row is not None and key.split(".")[1] not in json.dumps([row.key_id, row.secret_hash, row.scopes])
    assert keys.authenticate(key) == client and client.scopes == {"tickets:write", "kpis:read"}
    assert keys.authenticate(key[:-1] + ("A" if key[-1] != "A" else "B")) is None
    assert [c.name for c in keys.list()] == ["低保系统"]
    with pytest.raises(ValueError):
        keys.create(department="民政局", name="x", scopes={"tickets:delete"}, rate_per_minute=60)
    assert keys.revoke(client.id) and not keys.revoke(client.id)
    assert keys.authenticate(key) is None
    answer = api.client.get(f"{PREFIX}/kpis?from=2026-01-01&to=2026-01-31", headers={"Authorization": f"Bearer {key}"})
    assert answer.status_code == 401 and error(answer) == "unauthorized"


@pytest.mark.parametrize("authorization", [None, "Bearer", "Bearer nope", "Basic dXNlcjpwYXNz",
                                           "Bearer hzk_0123456789abcdef." + "A" * 43])
def test_a_missing_or_unknown_key_is_401(api: Api, authorization: str | None) -> None:
    headers = {"Authorization": authorization} if authorization else {}
    answer = api.client.get(f"{PREFIX}/kpis?from=2026-01-01&to=2026-01-31", headers=headers)
    assert answer.status_code == 401 and error(answer) == "unauthorized"
    assert api.write("PATCH", f"/tickets/{TICKET}", headers, {"status": "resolved"}).status_code == 401


def test_a_missing_scope_is_403_and_named(api: Api) -> None:
    headers = api.key(scopes={"kpis:read"})
    answer = api.write("PATCH", f"/tickets/{TICKET}", headers, {"status": "resolved"})
    assert answer.status_code == 403 and error(answer) == "missing_scope"
    assert "tickets:write" in answer.json()["error"]["message"]
    assert api.client.get(f"{PREFIX}/kpis?from=2026-01-01&to=2026-01-31", headers=headers).status_code == 200


def test_the_rate_limit_answers_429_with_retry_after(seeded: Services, kb: KnowledgeSettings) -> None:
    clock = Clock(dt.datetime(2026, 12, 9, 2, 0, 30, tzinfo=dt.timezone.utc))
    client = clocked(seeded, kb, clock)
    _, key = ApiKeys(seeded.sessions).create(department=DEPT, name="x", scopes={"kpis:read"}, rate_per_minute=2)
    headers, url = {"Authorization": f"Bearer {key}"}, f"{PREFIX}/kpis?from=2026-01-01&to=2026-01-31"
    assert [client.get(url, headers=headers).status_code for _ in range(2)] == [200, 200]
    limited = client.get(url, headers=headers)
    assert limited.status_code == 429 and error(limited) == "rate_limited" and limited.headers["Retry-After"] == "30"
    clock.at += dt.timedelta(seconds=30)
    assert client.get(url, headers=headers).status_code == 200


# -- idempotency and bodies -----------------------------------------------------------------------

def test_writes_need_an_idempotency_key_of_1_to_64_characters(api: Api) -> None:
    headers = api.key()
    missing = api.client.patch(f"{PREFIX}/tickets/{TICKET}", headers=headers, json={"status": "resolved"})
    assert missing.status_code == 400 and error(missing) == "idempotency_key_missing"
    for bad in ("x" * 65, "has space", ""):
        answer = api.write("PATCH", f"/tickets/{TICKET}", headers, {"status": "resolved"}, key=bad)
        assert answer.status_code == 400, bad
    assert api.write("PATCH", f"/tickets/{TICKET}", headers, {"status": "resolved"}, key="x" * 64).status_code == 200


def test_a_replay_answers_the_same_and_does_nothing_again(api: Api) -> None:
    headers, body = api.key(department=APP_DEPT), {"step": "现场核查", "result": "通过"}
    first = api.write("POST", f"/applications/{APP}/steps", headers, body, key="step-1")
    again = api.write("POST", f"/applications/{APP}/steps", headers, body, key="step-1")
    assert first.status_code == again.status_code == 201 and first.json() == again.json()
    assert again.headers["Idempotent-Replayed"] == "true" and "Idempotent-Replayed" not in first.headers
    with api.services.sessions() as s:
        assert len(s.scalars(select(ApplicationStep).where(ApplicationStep.step == "现场核查")).all()) == 1
    assert api.updates == [("application", APP)]
    other = api.write("POST", f"/applications/{APP}/steps", headers, {"step": "现场核查", "result": "不通过"}, key="step-1")
    assert other.status_code == 422 and error(other) == "idempotency_conflict"
    # keys are per client: another department's system may use the same key
    assert api.write("POST", "/applications/20261028000115/steps", api.key(department="民政局"), body,
                     key="step-1").status_code == 201


def test_idempotency_records_are_kept_a_day(seeded: Services, kb: KnowledgeSettings) -> None:
    clock = Clock(dt.datetime.now(dt.timezone.utc))
    client = clocked(seeded, kb, clock)
    _, key = ApiKeys(seeded.sessions).create(department=APP_DEPT, name="x", scopes={"applications:write"}, rate_per_minute=99)
    headers = {"Authorization": f"Bearer {key}", "Idempotency-Key": "same"}
    url = f"{PREFIX}/applications/{APP}/steps"
    assert client.post(url, headers=headers, json={"step": "受理", "result": "通过"}).status_code == 201
    clock.at += dt.timedelta(hours=25)
    assert client.post(url, headers=headers, json={"step": "审核", "result": "通过"}).status_code == 201
    with seeded.sessions() as s:
        assert [r.created_at.replace(tzinfo=None) for r in s.scalars(select(ApiIdempotency))] == \
            [clock.at.replace(tzinfo=None)]


@pytest.mark.parametrize("body,raw", [
    (None, b"{"), (None, b"[]"), (None, "\xff".encode("latin-1")),
    ({"step": "审", "result": "过", "extra": 1}, None),
    ({"step": "审" * 51, "result": "过"}, None),
    ({"step": "审核\x00", "result": "过"}, None),
    ({"step": "  ", "result": "过"}, None),
    ({"step": "审核", "result": "过", "at": "2026-12-01T09:00:00"}, None),  # no offset
    ({"step": "审核", "result": "过", "at": "2099-12-01T09:00:00+08:00"}, None),  # ahead
    ({"step": "审核", "result": "过", "at": "1999-12-01T09:00:00+08:00"}, None),
    ({"step": "审核", "result": "过", "expected_date": "2026-02-30"}, None),
    ({"step": "审核", "result": "过", "status": "很长的状态" * 5}, None),
])
def test_bad_bodies_are_400_and_change_nothing(api: Api, body: object, raw: bytes | None) -> None:
    headers = {**api.key(department=APP_DEPT), "Idempotency-Key": "bad", "Content-Type": "application/json"}
    url = f"{PREFIX}/applications/{APP}/steps"
    answer = api.client.post(url, headers=headers, content=raw) if raw is not None else \
        api.client.post(url, headers=headers, json=body)
    assert answer.status_code == 400 and error(answer) == "invalid_request"
    with api.services.sessions() as s:
        assert s.scalar(select(Application).where(Application.number == APP)).current_step == "材料审核"  # type: ignore[union-attr]
    assert api.updates == []


def test_an_error_never_echoes_the_request(api: Api) -> None:
    headers = api.key()
    secret = "13800000001 371702198001011230"
    answer = api.write("POST", f"/applications/{APP}/steps", headers, {"step": secret * 3, "result": "x", secret: 1})
    assert answer.status_code == 400 and "138000" not in answer.text and "3717021980" not in answer.text


def test_a_body_over_64_kib_is_413(api: Api) -> None:
    headers = {**api.key(), "Idempotency-Key": "big", "Content-Type": "application/json"}
    answer = api.client.put(f"{PREFIX}/guides/big-guide", headers=headers, content=b'{"title": "' + b"x" * 70_000 + b'"}')
    assert answer.status_code == 413 and error(answer) == "body_too_large"


def test_unknown_paths_and_methods_answer_in_the_error_format(api: Api) -> None:
    headers = api.key()
    assert error(api.client.get(f"{PREFIX}/nothing", headers=headers)) == "not_found"
    wrong = api.client.delete(f"{PREFIX}/tickets/{TICKET}", headers=headers)
    assert wrong.status_code == 405 and error(wrong) == "method_not_allowed" and "PATCH" in wrong.headers["Allow"]


# -- applications ---------------------------------------------------------------------------------

def test_a_step_is_added_and_the_public_view_answered(api: Api) -> None:
    answer = api.write("POST", f"/applications/{APP}/steps", api.key(scopes={"applications:write"}, department=APP_DEPT),
                       {"step": "审核", "result": "通过", "status": "审批中", "expected_date": "2026-12-31",
                        "at": "2026-12-05T10:00:00+08:00"})
    assert answer.status_code == 201
    view = answer.json()
    assert set(view) == {"number", "service_name", "status", "current_step", "expected_date", "office", "steps"}
    assert (view["status"], view["current_step"], view["expected_date"]) == ("审批中", "审核", "2026-12-31")
    assert view["steps"][-1] == {"step": "审核", "result": "通过", "at": "2026-12-05T02:00:00Z"}
    assert "13800000001" not in answer.text and "1230" not in json.dumps(view["steps"])
    found = api.services.applications.by_number(APP)
    assert found is not None and found.current_step == "审核" and found.steps[-1][:2] == ("审核", "通过")
    assert api.updates == [("application", APP)]
    cleared = api.write("POST", f"/applications/{APP}/steps", api.key(department=APP_DEPT), {
        "step": "发证", "result": "已领取", "current_step": "已办结", "expected_date": None})
    assert cleared.json()["expected_date"] is None and cleared.json()["current_step"] == "已办结"


def test_an_unknown_or_malformed_application_number(api: Api) -> None:
    headers = api.key()
    unknown = api.write("POST", "/applications/99999999999999/steps", headers, {"step": "审核", "result": "通过"})
    assert unknown.status_code == 404 and error(unknown) == "not_found"
    assert api.write("POST", "/applications/12ab/steps", headers, {"step": "审核", "result": "通过"}).status_code == 400
    assert api.updates == []


def test_only_the_department_handling_an_application_adds_its_steps(api: Api) -> None:
    """A key writes only its own department's applications: the one recorded, or for a row without one
    (from before 0016, or a source naming only the office), the department its office names."""
    step = {"step": "审核", "result": "通过"}
    for department in ("城市管理局", "民政局", "市场监督"):  # another department; a part of the name is not it
        refused = api.write("POST", f"/applications/{APP}/steps", api.key(department=department), step)
        assert refused.status_code == 403 and error(refused) == "other_department", department
    assert api.services.applications.by_number(APP).current_step == "材料审核"  # type: ignore[union-attr]
    assert api.updates == []
    with api.services.sessions() as s:
        s.add(Application(number="20261130000777", service_name="临时救助申请", applicant_phone="13800000009",
                          applicant_id_last4="0000", status="审批中", current_step="受理", office="曹县民政局社会救助股",
                          submitted_at=dt.datetime(2026, 11, 30, tzinfo=dt.timezone.utc)))
        s.commit()
    assert api.write("POST", "/applications/20261130000777/steps", api.key(department="民政局"), step).status_code == 201
    assert api.write("POST", "/applications/20261130000777/steps", api.key(department="人力资源和社会保障局"),
                     step).status_code == 403
    with api.services.sessions() as s:  # an office naming a department only by a short name names none for a write
        s.add(Application(number="20261130000778", service_name="失业保险金申领", applicant_phone="13800000009",
                          applicant_id_last4="0000", status="审批中", current_step="受理", office="曹县人社服务大厅",
                          submitted_at=dt.datetime(2026, 11, 30, tzinfo=dt.timezone.utc)))
        s.add(Application(number="20261130000779", service_name="驾驶证换证", applicant_phone="13800000009",
                          applicant_id_last4="0000", status="审批中", current_step="受理",
                          office="菏泽市公安局交通警察支队车辆管理所", submitted_at=dt.datetime(2026, 11, 30, tzinfo=dt.timezone.utc)))
        s.commit()
    assert api.write("POST", "/applications/20261130000778/steps", api.key(department="人力资源和社会保障局"),
                     step).status_code == 403
    assert api.write("POST", "/applications/20261130000779/steps", api.key(department="交通运输局"),
                     step).status_code == 403  # "交通" is in its office; it is 公安's
    # A key named by the short name (as tickets name departments) is the same department.
    assert api.write("POST", "/applications/20261028000115/steps", api.key(department="民政"), step).status_code == 201
    assert api.write("POST", f"/applications/{APP}/steps", api.key(department=APP_DEPT), step).status_code == 201


def test_progress_kept_by_the_provincial_platform_is_not_written_here(seeded: Services, kb: KnowledgeSettings) -> None:
    settings = make_settings(applications_backend="provincial", provincial_base_url="http://127.0.0.1:9",
                             provincial_app_id="id", provincial_app_key="k" * 16)
    outer = FastAPI()
    outer.mount(PREFIX, create_open_api(settings, seeded, kb=kb))
    _, key = ApiKeys(seeded.sessions).create(department=DEPT, name="x", scopes={"applications:write"}, rate_per_minute=9)
    answer = TestClient(outer).post(f"{PREFIX}/applications/{APP}/steps", json={"step": "审核", "result": "通过"},
                                    headers={"Authorization": f"Bearer {key}", "Idempotency-Key": "p"})
    assert answer.status_code == 409 and error(answer) == "progress_elsewhere"


# -- tickets --------------------------------------------------------------------------------------

def test_a_department_answers_its_ticket(api: Api) -> None:
    reply = "路灯已于今天修复，感谢您的反映。"
    answer = api.write("PATCH", f"/tickets/{TICKET}", api.key(scopes={"tickets:write"}), {"status": "resolved", "reply": reply})
    assert answer.status_code == 200
    assert set(answer.json()) == {"number", "status", "department", "due_date", "updated_at"}
    assert answer.json()["status"] == "resolved" and answer.json()["department"] == "城管"
    ticket = api.services.tickets.by_number(TICKET)
    assert ticket is not None and ticket.status == "resolved" and ticket.reply == reply
    with api.services.engine.connect() as conn:  # the reply is sealed at rest, as the citizen's own words
        assert reply not in str(conn.execute(text("SELECT reply FROM feedback_tickets")).all())
    assert api.updates == [("ticket", TICKET)]


def test_another_departments_ticket_is_403(api: Api) -> None:
    answer = api.write("PATCH", f"/tickets/{TICKET}", api.key(department="民政局"), {"status": "resolved"})
    assert answer.status_code == 403 and error(answer) == "other_department"
    assert api.services.tickets.by_number(TICKET).status == "in_progress"  # type: ignore[union-attr]
    short = api.write("PATCH", f"/tickets/{TICKET}", api.key(department="城管"), {"reply": "已转办。"})
    assert short.status_code == 200  # a key may name the department as tickets do


def test_a_transition_the_ticket_model_refuses_is_409(api: Api) -> None:
    headers = api.key()
    assert api.write("PATCH", f"/tickets/{TICKET}", headers, {"status": "closed"}).status_code == 200
    for patch in ({"status": "in_progress"}, {"reply": "补充答复"}):
        answer = api.write("PATCH", f"/tickets/{TICKET}", headers, patch)
        assert answer.status_code == 409 and error(answer) == "invalid_transition"
    assert api.write("PATCH", f"/tickets/{TICKET}", headers, {"status": "closed"}).status_code == 200  # no change
    assert api.updates == [("ticket", TICKET)]


@pytest.mark.parametrize("number,patch,status", [
    ("10000002", {"status": "resolved"}, 404), ("1234", {"status": "resolved"}, 400),
    (TICKET, {}, 400), (TICKET, {"status": None}, 400), (TICKET, {"status": "done"}, 400),
    (TICKET, {"reply": "答" * 1001}, 400), (TICKET, {"reply": "答复\x07"}, 400),
])
def test_bad_ticket_updates(api: Api, number: str, patch: dict[str, object], status: int) -> None:
    assert api.write("PATCH", f"/tickets/{number}", api.key(), patch).status_code == status
    assert api.services.tickets.by_number(TICKET).status == "in_progress"  # type: ignore[union-attr]


# -- guides ---------------------------------------------------------------------------------------

def test_a_published_guide_is_shown_found_and_makes_the_index_stale(api: Api) -> None:
    index = open_knowledge_base(api.kb)  # built for the built-in guides
    assert index.built_now and "road-excavation-permit" not in index.topics
    headers = api.key(scopes={"guides:write"})
    first = api.write("PUT", "/guides/road-excavation-permit", headers, GUIDE)
    assert first.status_code == 201
    assert first.json()["url"].endswith("/guide/road-excavation-permit") and not first.json()["replaces_builtin"]
    page = api.client.get("/guide/road-excavation-permit")
    assert page.status_code == 200 and "<h1>城市道路挖掘许可</h1>" in page.text and "以当地政务服务中心公布为准" in page.text
    assert not is_current(api.kb.resolve(api.kb.index_dir), fingerprint(api.kb, None))  # `build --if-stale` rebuilds
    topics = {t.slug: t for t in load_topics(api.kb.content_dir, api.kb.local_file, api.kb.published_dir)}
    assert topics["road-excavation-permit"].aliases == ("挖路审批", "道路开挖") and "passport" in topics
    rebuilt = open_knowledge_base(api.kb)
    assert rebuilt.built_now and rebuilt.search("挖路审批要带什么材料")[0].slug == "road-excavation-permit"
    again = api.write("PUT", "/guides/road-excavation-permit", headers, {**GUIDE, "title": "城市道路挖掘审批"})
    assert again.status_code == 200 and "<h1>城市道路挖掘审批</h1>" in api.client.get("/guide/road-excavation-permit").text
    assert [p.name for p in api.kb.published_dir.iterdir()] == ["road-excavation-permit.md"]  # no temporary left
    assert api.updates == []


def test_a_built_in_guide_is_replaced_only_by_its_own_department(api: Api) -> None:
    taken = api.write("PUT", "/guides/passport", api.key(), GUIDE)
    assert taken.status_code == 409 and error(taken) == "slug_taken"
    own = api.write("PUT", "/guides/passport", api.key(department="公安局出入境管理"),
                    {**GUIDE, "title": "普通护照申请（新）", "department": "公安局出入境管理"})
    assert own.status_code == 201 and own.json()["replaces_builtin"]
    assert "<h1>普通护照申请（新）</h1>" in api.client.get("/guide/passport").text
    mine = api.write("PUT", "/guides/road-excavation-permit", api.key(), GUIDE)
    theirs = api.write("PUT", "/guides/road-excavation-permit", api.key(department="民政局"), {**GUIDE, "department": "民政局"})
    assert mine.status_code == 201 and theirs.status_code == 409


@pytest.mark.parametrize("change,code", [
    ({"department": "民政局"}, "other_department"),
    ({"sections": {**SECTIONS, "办理条件": "条件。\n## 办理条件\n别的。"}}, "invalid_request"),
    ({"sections": {**SECTIONS, "办理地点": "{{local.secret}}"}}, "invalid_request"),
    ({"sections": {k: v for k, v in SECTIONS.items() if k != "收费标准"}}, "invalid_request"),
    ({"title": "题" * 51}, "invalid_request"),
    ({"aliases": ["有 空格"]}, "invalid_request"),
])
def test_bad_guides_are_refused_and_nothing_written(api: Api, change: dict[str, object], code: str) -> None:
    answer = api.write("PUT", "/guides/road-excavation-permit", api.key(), {**GUIDE, **change})
    assert error(answer) == code
    assert not api.kb.published_dir.exists() or not list(api.kb.published_dir.iterdir())
    assert api.write("PUT", "/guides/Bad_Slug", api.key(), GUIDE).status_code == 400


# -- KPIs -----------------------------------------------------------------------------------------

def _march(day: int) -> dt.datetime:
    return dt.datetime(2025, 3, day, 10, tzinfo=dt.timezone.utc)


@pytest.fixture
def figures(api: Api) -> Api:
    """March 2025: 6 applications of 民政局 (4 done; one recorded as its own at the city centre's window,
    the others by their office), 3 at 人社's office and one at a 民政局 office recorded as 人社's; 7 ratings;
    5 民政 tickets (3 on time)."""
    with api.services.sessions() as s:
        for n in range(10):
            office = "单县民政局社会救助股" if n < 5 or n == 9 else "曹县人社服务大厅"
            department = {5: "民政局", 9: "人力资源和社会保障局"}.get(n)
            s.add(Application(number=f"2025030100{n:04d}", service_name="测试事项", applicant_phone="13800000009",
                              applicant_id_last4="0000", status="已办结" if n in (0, 1, 2, 3, 7) else "审批中",
                              current_step="x", office="菏泽市政务服务中心 综合窗口" if n == 5 else office,
                              department=department, submitted_at=_march(n + 1)))
        for n, score in enumerate((5, 4, 4, 3, 5, 5, 2)):
            s.add(Rating(sender_id=f"r{n}", channel="rest", flow="ticket", score=score, created_at=_march(n + 1)))
        for n, (status, answered) in enumerate((("resolved", 1), ("closed", 2), ("resolved", 3), ("resolved", 20),
                                                ("in_progress", 4))):
            s.add(FeedbackTicket(number=f"2000000{n}", category="help", content="测试", location="测试", contact_phone=None,
                                 department="民政", status=status, due_date=dt.date(2025, 3, 10), channel="rest",
                                 sender_id="t", updated_at=_march(answered)))
        s.commit()
    return api


def test_kpis_are_aggregates_with_small_groups_withheld(figures: Api) -> None:
    headers = figures.key(scopes={"kpis:read"})
    url = f"{PREFIX}/kpis?from=2025-03-01&to=2025-03-31"
    everything = figures.client.get(url, headers=headers).json()
    assert everything["from"] == "2025-03-01" and everything["min_group_size"] == 5
    assert everything["completion_rate"] == {"value": round(5 / 10, 4), "count": 10, "reason": None}
    assert everything["satisfaction"] == {"value": round(28 / 7, 4), "count": 7, "reason": None}
    assert everything["tickets_on_time_rate"] == {"value": 0.6, "count": 5, "reason": None}
    civil = figures.client.get(url + "&department=民政局", headers=headers).json()
    assert civil["completion_rate"] == {"value": round(4 / 6, 4), "count": 6, "reason": None}
    assert civil["satisfaction"] == {"value": None, "count": None, "reason": "not_recorded_by_department"}
    assert civil["tickets_on_time_rate"]["value"] == 0.6
    labour = figures.client.get(url + "&department=人力资源和社会保障局", headers=headers).json()
    assert labour["completion_rate"] == {"value": None, "count": None, "reason": "fewer_than_5_records"}  # 4
    assert labour["tickets_on_time_rate"] == {"value": None, "count": None, "reason": "fewer_than_5_records"}
    week = figures.client.get(f"{PREFIX}/kpis?from=2025-03-01&to=2025-03-04", headers=headers).json()
    assert week["completion_rate"]["reason"] == week["satisfaction"]["reason"] == "fewer_than_5_records"
    assert "13800000009" not in json.dumps([everything, civil, labour, week])


@pytest.mark.parametrize("query", ["from=2025-03-31&to=2025-03-01", "from=2025-02-30&to=2025-03-01",
                                   "from=2024-01-01&to=2025-03-01", "from=1999-12-31&to=2000-01-01",
                                   "from=2025-03-01", "from=20250301&to=20250302", "from=2025-03-01&to=2025-03-02&department="])
def test_bad_kpi_dates_are_400(api: Api, query: str) -> None:
    answer = api.client.get(f"{PREFIX}/kpis?{query}", headers=api.key(scopes={"kpis:read"}))
    assert answer.status_code == 400 and error(answer) == "invalid_request"


# -- audit ----------------------------------------------------------------------------------------

def test_every_authenticated_request_is_audited_append_only(api: Api) -> None:
    headers = api.key()
    reply = "请于三日内到窗口领取答复。"
    api.write("PATCH", f"/tickets/{TICKET}", headers, {"reply": reply}, key="a1")
    api.write("PATCH", f"/tickets/{TICKET}", headers, {"reply": reply}, key="a1")  # replay
    api.write("PATCH", f"/tickets/{TICKET}", api.key(department="民政局"), {"reply": reply}, key="a2")
    api.client.get(f"{PREFIX}/kpis?from=2025-03-01&to=2025-03-31&department=民政局", headers=headers)
    api.client.get(f"{PREFIX}/kpis", headers={"Authorization": "Bearer nobody"})  # no client: not audited
    with api.services.sessions() as s:
        rows = [(r.method, r.path, r.status, r.idempotency_key, r.replayed)
                for r in s.scalars(select(ApiAudit).order_by(ApiAudit.id))]
    assert rows == [("PATCH", f"{PREFIX}/tickets/{TICKET}", 200, "a1", False),
                    ("PATCH", f"{PREFIX}/tickets/{TICKET}", 200, "a1", True),
                    ("PATCH", f"{PREFIX}/tickets/{TICKET}", 403, "a2", False),
                    ("GET", f"{PREFIX}/kpis", 200, None, False)]
    assert reply not in str(rows) and "民政局" not in str(rows)
    changes: list[typing.Any] = [update(ApiAudit).values(status=200), delete(ApiAudit)]
    if api.services.engine.dialect.name == "postgresql":
        changes.append(text("TRUNCATE api_audit"))
    for change in changes:
        with api.services.sessions() as s, pytest.raises(DBAPIError, match="append-only"):
            s.execute(change)
            s.commit()


# -- the command line -----------------------------------------------------------------------------

def test_api_key_commands(seeded: Services, capsys: pytest.CaptureFixture[str]) -> None:
    import argparse

    from services.__main__ import api_key

    made = argparse.Namespace(key_cmd="create", department="民政局", name="低保系统", scopes="tickets:write,kpis:read",
                              rate=None)
    assert api_key(seeded, made, 120) == 0
    out = capsys.readouterr().out
    key = next(line for line in out.splitlines() if line.startswith("hzk_"))
    assert ApiKeys(seeded.sessions).authenticate(key) is not None and "tickets of: 民政" in out
    assert api_key(seeded, argparse.Namespace(key_cmd="list"), 120) == 0
    listed = capsys.readouterr().out
    assert "低保系统" in listed and key not in listed and "120/min" in listed
    assert api_key(seeded, argparse.Namespace(key_cmd="revoke", id=1), 120) == 0
    assert api_key(seeded, argparse.Namespace(key_cmd="revoke", id=1), 120) == 2
    bad = argparse.Namespace(key_cmd="create", department="民政局", name="x", scopes="tickets:delete", rate=None)
    assert api_key(seeded, bad, 120) == 2


# -- schemathesis ---------------------------------------------------------------------------------

CHECKS: list[Callable[..., typing.Any]] = [not_a_server_error, status_code_conformance, content_type_conformance,
                                           response_headers_conformance, response_schema_conformance]


@pytest.mark.parametrize("mode", list(GenerationMode))
def test_schemathesis_finds_no_5xx_and_no_answer_off_the_document(seeded: Services, kb: KnowledgeSettings,
                                                                  mode: GenerationMode) -> None:
    """Requests generated from the served document (valid ones, and ones that break it), with a key
    of every scope: no 5xx, and every answer's status, content type, headers and body as documented."""
    _, key = ApiKeys(seeded.sessions).create(department=DEPT, name="schemathesis", scopes=tuple(SCOPES),
                                             rate_per_minute=10_000)
    schema = schemathesis.openapi.from_asgi(f"{PREFIX}/openapi.json", create_app(make_settings(), seeded, kb=kb))
    seen: set[int] = set()

    @given(case=schema.as_strategy(mode))
    @settings(max_examples=150, deadline=None, derandomize=True, database=None,
              suppress_health_check=list(HealthCheck))
    def check(case: typing.Any) -> None:
        seen.add(case.call_and_validate(headers={"Authorization": f"Bearer {key}"}, checks=CHECKS).status_code)

    check()
    assert seen and max(seen) < 500


def test_the_documents_examples_are_accepted(api: Api) -> None:
    """The examples schemathesis starts from get past validation to the handlers."""
    schemas = json.loads(DOCUMENT.read_text(encoding="utf-8"))["components"]["schemas"]
    headers = api.key()
    for method, path, model in (("POST", f"/applications/{APP}/steps", "StepIn"), ("PATCH", f"/tickets/{TICKET}", "TicketPatch"),
                                ("PUT", "/guides/road-excavation-permit", "GuideIn")):
        (example,) = schemas[model]["examples"]
        answer = api.write(method, path, api.key(department=APP_DEPT) if "applications" in path else headers, example)
        assert answer.status_code in (200, 201), (path, answer.text)
