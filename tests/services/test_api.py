"""The services API in-process: payment page and the notify endpoint's answers."""
import pytest
from fastapi.testclient import TestClient

from services.api import MAX_NOTIFY_BYTES, create_app
from services.container import Services
from services.payments import SandboxProvider
from tests.sandbox import make_settings


@pytest.fixture
def client(seeded: Services) -> TestClient:
    return TestClient(create_app(make_settings(), seeded))


def _order(services: Services) -> str:
    (bill,) = services.billing.outstanding("water", "1000000001")
    return services.billing.create_order(bill.id, channel="wechat", sender_id="u", provider="sandbox").order_no


def test_health(client: TestClient) -> None:
    assert client.get("/health").json() == {"status": "ok"}


def test_pay_page_shows_the_amount(client: TestClient, seeded: Services) -> None:
    page = client.get(f"/pay/{_order(seeded)}")
    assert page.status_code == 200 and "56.30 元" in page.text and "水费" in page.text
    assert client.get("/pay/123").status_code == 404
    assert client.get("/pay/<script>").status_code == 404


def test_notify_applies_once(client: TestClient, seeded: Services) -> None:
    order_no = _order(seeded)
    assert isinstance(seeded.payments, SandboxProvider)
    body, headers = seeded.payments.notification(order_no, 5630)
    first = client.post("/payments/notify/sandbox", content=body, headers=headers)
    again = client.post("/payments/notify/sandbox", content=body, headers=headers)
    assert first.text == "success" and again.text == "success"
    assert seeded.billing.order(order_no).status == "paid"  # type: ignore[union-attr]
    assert "已经缴清" in client.get(f"/pay/{order_no}").text


def test_notify_rejects_forgery_wrong_amount_and_junk(client: TestClient, seeded: Services) -> None:
    order_no = _order(seeded)
    body, headers = seeded.payments.notification(order_no, 5630)  # type: ignore[attr-defined]
    forged = dict(headers, **{"X-Sandbox-Signature": "f" * 64})
    assert client.post("/payments/notify/sandbox", content=body, headers=forged).status_code == 400
    wrong_body, wrong_headers = seeded.payments.notification(order_no, 1)  # type: ignore[attr-defined]
    assert client.post("/payments/notify/sandbox", content=wrong_body, headers=wrong_headers).status_code == 409
    assert client.post("/payments/notify/other", content=body, headers=headers).status_code == 404
    huge = b"x" * (MAX_NOTIFY_BYTES + 1)
    assert client.post("/payments/notify/sandbox", content=huge, headers=headers).status_code == 413
    assert client.post("/payments/notify/sandbox", content=b"{", headers={}).status_code == 400
    assert seeded.billing.order(order_no).status == "pending"  # type: ignore[union-attr]
    # An error answer never echoes what was sent.
    assert order_no not in client.post("/payments/notify/sandbox", content=body, headers=forged).text


def test_guide_page_shows_the_whole_guide(client: TestClient) -> None:
    page = client.get("/guide/id-card-apply")
    assert page.status_code == 200 and "<h1>居民身份证申领、换领、补领</h1>" in page.text
    assert page.text.count("<h2>") == 7 and "<li>" in page.text and "来源：" in page.text
    assert "以当地政务服务中心公布为准" in page.text
    assert client.get("/guide/no-such-guide").status_code == 404
    assert client.get("/guide/%3Cscript%3E").status_code == 404
