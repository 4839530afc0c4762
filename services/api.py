"""Services API: health, the payment page citizens open, payment provider notifications, and the
full service guides that answers link to (``/guide/<slug>``), the citizens' web chat (``/chat``,
services/webchat.py), the SMS gateway's pushed receipts
and replies (``/sms/aliyun/<token>/report|up``), and the departments' open API (``/api/v1``,
services/open_api.py). Background tasks sweep payment orders (query
silent ones, close expired ones) every ``PAYMENT_SWEEP_S`` and SMS (retry, read receipts) every
``SMS_SWEEP_S``, and (WeChat Pay only) reconcile yesterday's trade bill once a day
(``RECONCILE_CHECK_S``, services/reconcile.py)."""
from __future__ import annotations

import asyncio
import datetime as dt
import hmac
import json
import logging
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from html import escape
from pathlib import Path

import httpx
import qrcode
import qrcode.image.svg
from fastapi import APIRouter, FastAPI, Request
from fastapi.middleware.gzip import GZipMiddleware
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import HTMLResponse, JSONResponse, PlainTextResponse, Response

from knowledge.config import KnowledgeSettings
from knowledge.content import LocalDetails, Topic, load_published, load_topics, section_html
from services.billing import OrderView, PaymentMismatch, format_yuan
from services.container import Services
from services.open_api import PREFIX as OPEN_API_PREFIX, OnUpdate, create_open_api
from services.payments import (
    Checkout,
    InvalidNotification,
    ProviderError,
    SandboxProvider,
    handle_notification,
    sweep,
)
from services.reconcile import BillSource, due_day, reconcile_day
from services.settings import Settings
from services.sms import SmsSender
from services.reminders import reminders_of, run_forever
from services.webchat import Relay, webchat_router

log = logging.getLogger(__name__)
MAX_NOTIFY_BYTES = 16 * 1024
# A refused notification: status and the fixed message WeChat Pay's answer format carries
# ({"code": "FAIL", "message": ...}); the specific reason goes to the log only.
NOTIFY_ERRORS: dict[type[Exception], tuple[int, str]] = {
    InvalidNotification: (400, "invalid notification"),
    PaymentMismatch: (409, "order mismatch"),
}

_PAGE = """<!doctype html><html lang="zh-CN"><head><meta charset="utf-8">
<meta name="viewport" content="width=device-width,initial-scale=1"><title>{title}</title>
<style>body{{font-family:sans-serif;max-width:28em;margin:2em auto;padding:0 1em;font-size:18px}}
button{{font-size:20px;padding:.5em 1.5em}}</style></head><body>{body}</body></html>"""


def _page(title: str, body: str, status: int = 200) -> HTMLResponse:
    return HTMLResponse(_PAGE.format(title=escape(title), body=body), status_code=status)


def _sandbox_form(checkout: Checkout) -> str:
    return (f'<form method="post" action="{escape(checkout.params["action"])}">'
            "<p>（测试环境：不会真实扣款）</p><button type=submit>确认支付</button></form>")


def _jsapi_button(checkout: Checkout) -> str:
    """WeChat's in-app payment (JSAPI 调起支付) inside the official account's web view."""
    params = json.dumps(checkout.params).replace("<", "\\u003c")
    return ("<button id=pay type=button>微信支付</button><p id=msg></p><script>"
            f"var p={params};document.getElementById('pay').onclick=function(){{"
            "if(typeof WeixinJSBridge==='undefined'){document.getElementById('msg').textContent='请在微信里打开这个页面。';return;}"
            "WeixinJSBridge.invoke('getBrandWCPayRequest',p,function(r){"
            "if(r.err_msg==='get_brand_wcpay_request:ok'){location.reload();}});};</script>")


def _native_qr(checkout: Checkout) -> str:
    """A Native order's code_url as a QR code (long-press it in WeChat, or scan it)."""
    svg = qrcode.make(checkout.params["code_url"], image_factory=qrcode.image.svg.SvgPathImage)
    return ("<p>请用微信扫一扫，或在微信里长按识别二维码付款。</p>"
            f'<div style="width:16em">{svg.to_string(encoding="unicode")}</div>')


# Checkout.kind -> the part of the payment page that takes the payment
CHECKOUT_PAGES: dict[str, Callable[[Checkout], str]] = {
    "sandbox": _sandbox_form,
    "jsapi": _jsapi_button,
    "native": _native_qr,
}


def create_app(settings: Settings, services: Services, *, on_update: OnUpdate | None = None,
               kb: KnowledgeSettings | None = None) -> FastAPI:
    """``on_update`` and ``kb`` go to the departments' open API (services/open_api.py); ``kb`` also
    says where the guides of ``/guide/<slug>`` are (default: ``KB_*`` from the environment)."""
    ks = kb or KnowledgeSettings()

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        reconciling = settings.reconcile_check_s if isinstance(services.payments, BillSource) else 0
        tasks = [asyncio.create_task(run()) for run, every in ((_sweep_forever, settings.payment_sweep_s),
                                                               (_sms_forever, settings.sms_sweep_s),
                                                               (_reconcile_forever, reconciling)) if every > 0]
        if settings.reminder_check_s > 0:
            tasks.append(asyncio.create_task(run_forever(reminders_of(settings, services), settings.reminder_check_s)))
        yield
        for task in tasks:
            task.cancel()
        await relay.aclose()

    async def _sms_forever() -> None:
        while True:
            await asyncio.sleep(settings.sms_sweep_s)
            try:
                counts = await run_in_threadpool(services.sms.sweep)
            except Exception:  # noqa: BLE001 - a database hiccup must not end the loop
                log.exception("SMS sweep failed")
                continue
            if any(counts.values()):
                log.info("SMS sweep: %s", counts)

    async def _sweep_forever() -> None:
        while True:
            await asyncio.sleep(settings.payment_sweep_s)
            now = dt.datetime.now(dt.timezone.utc)
            counts = await run_in_threadpool(sweep, services.payments, billing, now,
                                             dt.timedelta(seconds=settings.payment_query_after_s))
            if any(counts.values()):
                log.info("payment sweep: %s", counts)

    async def _reconcile_forever() -> None:
        assert isinstance(services.payments, BillSource)
        source = services.payments
        while True:
            await asyncio.sleep(settings.reconcile_check_s)
            try:
                day = await run_in_threadpool(due_day, services.sessions, source.name, dt.datetime.now(dt.timezone.utc),
                                              settings.reconcile_after_hour)
                if day is not None:
                    await run_in_threadpool(reconcile_day, services.sessions, billing, source, day)
            except Exception:  # noqa: BLE001 - a database hiccup must not end the loop
                log.exception("daily reconciliation failed")

    app = FastAPI(title="Heze services API", docs_url=None, redoc_url=None, openapi_url=None, lifespan=lifespan)
    # Pages citizens open on mobile networks (the web chat, payment and guide pages) travel compressed.
    app.add_middleware(GZipMiddleware, minimum_size=1024)
    billing = services.billing

    @app.get("/health")
    def health() -> dict[str, str]:
        return {"status": "ok"}

    guides: dict[str, Topic] = {}
    published = ks.resolve(ks.published_dir)
    seen = [published_stamp(published)]

    def guide_topics() -> dict[str, Topic]:
        """The guides, read again when a department published one (the directory changed)."""
        stamp = published_stamp(published)
        if not guides or stamp != seen[0]:
            guides.clear()
            seen[0] = stamp
            if services.knowledge is not None:
                local = LocalDetails.load(ks.resolve(ks.local_file))
                guides.update(services.knowledge.topics)
                guides.update({t.slug: t for t in load_published(published, local)})
            else:
                guides.update({t.slug: t for t in load_topics(ks.resolve(ks.content_dir), ks.resolve(ks.local_file),
                                                              published)})
        return guides

    @app.get("/guide/{slug}", response_class=HTMLResponse)
    def guide_page(slug: str) -> HTMLResponse:
        topic = guide_topics().get(slug)
        if topic is None:
            return _page("没有这个指南", "<p>没有找到这份办事指南。</p>", 404)
        body = f"<h1>{escape(topic.title)}</h1>" + "".join(
            f"<h2>{escape(name)}</h2>{section_html(text)}" for name, text in topic.sections.items())
        body += (f"<p><small>来源：{escape(topic.source)}<br>{escape(topic.department)}，"
                 f"{escape(topic.updated)}更新</small></p>")
        return _page(topic.title, body)

    @app.get("/pay/{order_no}", response_class=HTMLResponse)
    def pay_page(order_no: str) -> HTMLResponse:
        found = billing.order_bill(order_no) if order_no.isdigit() else None
        if found is None:
            return _page("订单不存在", "<p>没有找到这个缴费订单。</p>", 404)
        order, bill = found
        head = f"<h1>{escape(bill.type_name)}缴费</h1><p>账期：{escape(bill.period)}</p>" \
               f"<p>金额：<b>{format_yuan(order.amount_fen)} 元</b></p><p>订单号：{escape(order.order_no)}</p>"
        if order.status == "paid":
            return _page("已缴费", head + "<p>这笔费用已经缴清，谢谢。</p>")
        if order.status != "pending":
            return _page("订单已失效", head + "<p>订单已失效，请重新发起缴费。</p>", 410)
        checkout = checkout_of(order)
        if checkout is None:
            return _page("暂时不能支付", head + "<p>支付暂时不可用，请稍后再试。</p>", 502)
        return _page("缴费", head + CHECKOUT_PAGES[checkout.kind](checkout))

    def checkout_of(order: OrderView) -> Checkout | None:
        try:
            return services.payments.checkout(order)
        except ProviderError as exc:
            log.warning("checkout of order %s failed: %s", order.order_no, exc)
            return None

    @app.get("/pay/{order_no}/checkout")
    def checkout_params(order_no: str) -> JSONResponse:
        """The payment parameters, for the mini-program's ``wx.requestPayment``."""
        order = billing.order(order_no) if order_no.isdigit() else None
        if order is None or order.status != "pending":
            return JSONResponse({"error": "no payable order"}, status_code=404)
        checkout = checkout_of(order)
        if checkout is None:
            return JSONResponse({"error": "payment unavailable"}, status_code=502)
        return JSONResponse({"kind": checkout.kind, "params": checkout.params})

    @app.post("/pay/{order_no}/sandbox", response_class=HTMLResponse)
    async def sandbox_pay(order_no: str) -> HTMLResponse:
        """The sandbox provider's side: it posts a signed notification to our notify URL."""
        provider = services.payments
        if not isinstance(provider, SandboxProvider):
            return _page("不可用", "<p>测试支付未开启。</p>", 404)
        order = await run_in_threadpool(billing.order, order_no) if order_no.isdigit() else None
        if order is None:
            return _page("订单不存在", "<p>没有找到这个缴费订单。</p>", 404)
        body, headers = provider.notification(order.order_no, order.amount_fen)
        async with httpx.AsyncClient(timeout=10) as client:
            resp = await client.post(settings.payment_notify_url, content=body, headers=headers)
        if resp.status_code != 200:
            return _page("支付失败", "<p>支付没有成功，请稍后再试。</p>", 502)
        return _page("支付成功", f"<p>支付成功，金额 {format_yuan(order.amount_fen)} 元。谢谢！</p>"
                                 f'<p><a href="/chat">回到在线咨询</a></p>')

    @app.post("/payments/notify/{provider_name}")
    async def notify(provider_name: str, request: Request) -> Response:
        if provider_name != services.payments.name:
            return JSONResponse({"error": "unknown provider"}, status_code=404)
        body = await request.body()
        if len(body) > MAX_NOTIFY_BYTES:
            return JSONResponse({"code": "FAIL", "message": "body too large"}, status_code=413)
        try:
            outcome = await run_in_threadpool(handle_notification, services.payments, billing, body, request.headers)
        except tuple(NOTIFY_ERRORS) as exc:
            status, message = next(v for k, v in NOTIFY_ERRORS.items() if isinstance(exc, k))
            log.warning("%s payment notification refused (%s): %s", provider_name, status, exc)
            return JSONResponse({"code": "FAIL", "message": message}, status_code=status)
        log.info("order %s %s", outcome.order_no, outcome.status if outcome.changed else "unchanged (repeat)")
        return PlainTextResponse("success")

    app.include_router(sms_push_router(settings, services.sms))
    relay = Relay(settings)
    app.include_router(webchat_router(settings, services, relay))
    app.mount(OPEN_API_PREFIX, create_open_api(settings, services, on_update, kb=ks))
    return app


def published_stamp(directory: Path) -> tuple[tuple[str, int, int, int], ...]:
    """Changes when a guide is published or updated there (each is a new file renamed into place)."""
    try:
        return tuple(sorted((p.name, (st := p.stat()).st_ino, st.st_mtime_ns, st.st_size)
                            for p in directory.glob("*.md")))
    except OSError:  # none yet, or one renamed away between the listing and its stat
        return ()


def sms_push_router(settings: Settings, sms: SmsSender) -> APIRouter:
    """Alibaba Cloud SMS's HTTP pushes (SmsReport receipts, SmsUp replies). They carry no
    signature: the path's token is the check, compared in constant time; a receipt applies only
    to the message with its BizId sent to its number. Answers in the push's own format."""
    from services.aliyun_sms import pushed_replies, pushed_reports

    router = APIRouter()
    token = settings.aliyun_sms_push_token.get_secret_value()

    @router.post("/sms/aliyun/{given}/{kind}")
    async def sms_push(given: str, kind: str, request: Request) -> JSONResponse:
        if not token or not hmac.compare_digest(given.encode(), token.encode()) or kind not in ("report", "up"):
            return JSONResponse({"code": 1, "msg": "not found"}, status_code=404)
        body = await request.body()
        if len(body) > MAX_NOTIFY_BYTES * 4:
            return JSONResponse({"code": 1, "msg": "body too large"}, status_code=413)
        try:
            items = json.loads(body)
        except ValueError:
            return JSONResponse({"code": 1, "msg": "bad json"}, status_code=400)
        if kind == "report":
            applied = [await run_in_threadpool(sms.report, biz, phone, receipt)
                       for biz, phone, receipt in pushed_reports(items)]
        else:
            applied = [await run_in_threadpool(sms.reply, phone, content) for phone, content in pushed_replies(items)]
        log.info("SMS %s push: %d entries, %d applied", kind, len(applied), sum(applied))
        return JSONResponse({"code": 0, "msg": "成功"})

    return router
