"""The action server's HTTP protocol and its error mapping."""
import json
import zlib

import pytest
from fastapi.testclient import TestClient

from actions.server import create_app
from services.container import Services
from tests.actions.helpers import DOMAIN, tracker


@pytest.fixture
def client(seeded: Services) -> TestClient:
    return TestClient(create_app(seeded))


def call(action: str, **kw) -> dict:  # type: ignore[no-untyped-def, type-arg]
    t = tracker(**kw)
    return {"next_action": action, "sender_id": t.sender_id, "version": "3.6.21", "domain": DOMAIN,
            "tracker": t.current_state()}


def test_health_and_action_list(client: TestClient) -> None:
    assert client.get("/health").json() == {"status": "ok"}
    names = {a["name"] for a in client.get("/actions").json()}
    assert {"action_pay_bill", "validate_progress_form", "action_handoff", "action_store_rating"} <= names


def test_runs_an_action(client: TestClient) -> None:
    resp = client.post("/webhook", json=call("action_answer_progress", slots={"application_number": "20261101000001"}))
    assert resp.status_code == 200
    body = resp.json()
    assert "审核中" in body["responses"][0]["text"]
    assert any(e["event"] == "slot" and e["name"] == "awaiting_rating" for e in body["events"])


def test_accepts_deflate(client: TestClient) -> None:
    raw = zlib.compress(json.dumps(call("action_repeat")).encode())
    resp = client.post("/webhook", content=raw, headers={"Content-Encoding": "deflate", "Content-Type": "application/json"})
    assert resp.status_code == 200


@pytest.mark.parametrize(("body", "status"), [
    (b"{not json", 400), (b"[1, 2]", 400), (b'{"next_action": "x"}', 400), (zlib.compress(b"{") + b"junk", 400)])
def test_malformed_calls_get_400(client: TestClient, body: bytes, status: int) -> None:
    headers = {"Content-Encoding": "deflate"} if body.startswith(b"x") else {}
    assert client.post("/webhook", content=body, headers=headers).status_code == status


def test_unknown_action_gets_404(client: TestClient) -> None:
    resp = client.post("/webhook", json=call("action_does_not_exist"))
    assert resp.status_code == 404 and resp.json()["action_name"] == "action_does_not_exist"


def test_a_failing_action_gets_500_without_the_request(client: TestClient, seeded: Services) -> None:
    seeded.engine.dispose()
    with seeded.engine.begin() as conn:  # break the database under the action
        conn.exec_driver_sql("DROP TABLE application_steps")
    secret = "幺三八零零零零零零零幺"
    resp = client.post("/webhook", json=call("action_answer_progress", text=secret,
                                             slots={"application_number": "20261101000001"}))
    assert resp.status_code == 500
    assert resp.json() == {"error": "action failed", "action_name": "action_answer_progress"}
    assert secret not in resp.text
