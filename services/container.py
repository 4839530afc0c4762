"""Builds the backends a process uses from its settings (the composition root)."""
from __future__ import annotations

import datetime as dt
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

from sqlalchemy import Engine
from sqlalchemy.orm import sessionmaker

from services import open_api_models  # noqa: F401 - the open API's tables, on Base.metadata wherever services are built
from services import sealed
from services.applications import ApplicationsBackend, SqlApplications
from services.billing import SqlBilling
from services.db import make_engine, make_sessionmaker
from services.payments import PaymentProvider, SandboxProvider, SqlNonces
from services.people import HandoffsBackend, RatingsBackend, SqlHandoffs, SqlRatings
from services.proxy import SqlProxies
from services.subscriptions import SqlSubscriptions
from services.settings import Settings
from services.sms import Limits, NumberIndex, OutboxGateway, SmsGateway, SmsSender
from services.tickets import SqlTickets, TicketsBackend
from textnorm.sealing import Keyring

if TYPE_CHECKING:
    from knowledge.index import KnowledgeBase


@dataclass
class Services:
    engine: Engine
    sessions: sessionmaker
    applications: ApplicationsBackend
    billing: SqlBilling
    tickets: TicketsBackend
    handoffs: HandoffsBackend
    ratings: RatingsBackend
    sms: SmsSender
    payments: PaymentProvider
    proxies: SqlProxies  # family proxy (子女代办)
    subscriptions: SqlSubscriptions  # reminders citizens asked for, with their consent
    public_base_url: str = "http://127.0.0.1:8030"
    # The service-guide search; None where a process does not answer guide questions.
    knowledge: "KnowledgeBase | None" = None


def _sandbox(settings: Settings, sessions: sessionmaker) -> PaymentProvider:
    secret = settings.payment_sandbox_secret
    assert secret is not None  # checked by Settings
    return SandboxProvider(secret.get_secret_value().encode(), settings.public_base_url)


def _wechatpay(settings: Settings, sessions: sessionmaker) -> PaymentProvider:
    from services import wechatpay

    return wechatpay.build(settings, SqlNonces(sessions, "wechatpay").claim)


# settings.payment_provider -> how that provider is built
PAYMENT_PROVIDERS: dict[str, Callable[[Settings, sessionmaker], PaymentProvider]] = {
    "sandbox": _sandbox,
    "wechatpay": _wechatpay,
}


def _provincial(settings: Settings, sessions: sessionmaker) -> ApplicationsBackend:
    from services import provincial

    return provincial.build(settings)


# settings.applications_backend -> how that backend is built
APPLICATIONS_BACKENDS: dict[str, Callable[[Settings, sessionmaker], ApplicationsBackend]] = {
    "sql": lambda settings, sessions: SqlApplications(sessions),
    "provincial": _provincial,
}


def _aliyun_sms(settings: Settings) -> SmsGateway:
    from services import aliyun_sms

    return aliyun_sms.build(settings)


# settings.sms_provider -> how that gateway is built
SMS_GATEWAYS: dict[str, Callable[[Settings], SmsGateway]] = {
    "outbox": lambda settings: OutboxGateway(),
    "aliyun": _aliyun_sms,
}


def _sms(settings: Settings, sessions: sessionmaker) -> SmsSender:
    index = NumberIndex.from_settings(settings.sms_number_key.get_secret_value(), settings.data_keys_text)
    limits = Limits(dt.timedelta(seconds=settings.sms_min_interval_s), settings.sms_per_day)
    return SmsSender(sessions, SMS_GATEWAYS[settings.sms_provider](settings), index,
                     sign_name=settings.sms_sign_name, base_url=settings.public_base_url, limits=limits,
                     hotline=settings.hotline_number)


def reminder_accounts(settings: Settings) -> frozenset[str]:
    """The WeChat accounts that can carry reminders: configured, with a subscribe-message template."""
    return frozenset(account for account, appid, template in (
        ("oa", settings.wechat_appid, settings.wechat_reminder_template_id),
        ("mp", settings.miniprogram_appid, settings.miniprogram_reminder_template_id)) if appid and template)


def build_services(settings: Settings, engine: Engine | None = None,
                   knowledge: "KnowledgeBase | None" = None) -> Services:
    sealed.use(Keyring.parse(settings.data_keys_text))  # the personal fields' keys (services/sealed.py)
    engine = engine or make_engine(settings.heze_db_url)
    sessions = make_sessionmaker(engine)
    sms = _sms(settings, sessions)
    return Services(
        engine=engine,
        sessions=sessions,
        applications=APPLICATIONS_BACKENDS[settings.applications_backend](settings, sessions),
        billing=SqlBilling(sessions, order_ttl=dt.timedelta(seconds=settings.payment_order_ttl_s)),
        tickets=SqlTickets(sessions),
        handoffs=SqlHandoffs(sessions),
        ratings=SqlRatings(sessions),
        sms=sms,
        payments=PAYMENT_PROVIDERS[settings.payment_provider](settings, sessions),
        proxies=SqlProxies(sessions, sms, sms.index, consent_days=settings.proxy_consent_days,
                           code_ttl=dt.timedelta(hours=settings.proxy_code_ttl_hours)),
        subscriptions=SqlSubscriptions(sessions, sms.index, wechat_accounts=reminder_accounts(settings),
                                       calls=bool(settings.reminder_call_spool),
                                       progress_notices=settings.applications_backend == "sql"),
        public_base_url=settings.public_base_url,
        knowledge=knowledge,
    )
