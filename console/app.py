"""The staff console (FastAPI + Jinja2, server-rendered, Chinese UI): the application, what it
opens at start (service database, tracker store, conversation index) and its background work (the
index kept in step, the daily retention purge). The routes are in ``console/routes/`` by area;
what they share (dependencies, the one error type and its handler) in ``console/web.py``."""
from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import logging
from collections.abc import AsyncIterator
from typing import Any

from fastapi import FastAPI, Request
from fastapi.responses import Response
from fastapi.staticfiles import StaticFiles
from sqlalchemy import create_engine

from console.auth import Accounts
from console.conversations import ConversationIndex, ref_key
from console.feed import EventFeed
from console.retention import purge
from console.routes import (admin, campaigns, conversations, dashboard, humans, payments, proxies, review, signin,
                            tickets)
from console.settings import ConsoleSettings
from console.web import (HERE, SECURITY_HEADERS, ConsoleError, answer_error, domain_actions, domain_entities,
                         domain_intents, sync)
from services import sealed
from services.db import make_engine, make_sessionmaker

logger = logging.getLogger(__name__)


def create_app(settings: ConsoleSettings) -> FastAPI:
    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        sealed.use(settings.keyring)  # tickets' and calls' personal fields (services/sealed.py)
        engine = make_engine(settings.heze_db_url)
        sessions = make_sessionmaker(engine)
        tracker = create_engine(settings.tracker_url, connect_args={"check_same_thread": False}
                                if settings.tracker_url.startswith("sqlite") else {}, hide_parameters=True)
        key = await asyncio.to_thread(ref_key, sessions, settings.console_pseudonym_key.get_secret_value())
        index = ConversationIndex(tracker, sessions, key, settings.keyring, settings.wechat_deadline_s)
        await asyncio.to_thread(index.fill_refs)
        app.state.settings, app.state.sessions, app.state.tracker, app.state.index = settings, sessions, tracker, index
        app.state.accounts = Accounts(sessions, settings.console_max_failed_logins,
                                      dt.timedelta(minutes=settings.console_lockout_minutes),
                                      dt.timedelta(hours=settings.console_session_hours))
        app.state.intents = domain_intents()
        app.state.entities = domain_entities()
        app.state.actions = domain_actions()
        app.state.sync_lock = asyncio.Lock()

        # With the event broker the index follows RabbitMQ in real time (console/feed.py) and the
        # tracker store is read once a minute to backfill; without it, every 3 seconds.
        feed = EventFeed(settings.broker_url, settings.rabbitmq_exchange, settings.rabbitmq_queue, index, app.state.sync_lock) \
            if settings.rabbitmq_host else None
        app.state.feed = feed

        async def keep_in_step() -> None:
            while True:
                await sync(app)
                await asyncio.sleep(60 if feed else 3)

        async def purge_daily() -> None:
            while True:
                try:
                    async with app.state.sync_lock:  # the index has one writer at a time
                        await asyncio.to_thread(purge, tracker, sessions, settings.console_retention_days,
                                                None, index.keyring)
                except Exception:  # noqa: BLE001 - logged, tried again tomorrow
                    logger.exception("retention purge failed")
                await asyncio.sleep(24 * 3600)

        tasks = [asyncio.create_task(keep_in_step()), asyncio.create_task(purge_daily())]
        if feed is not None:
            tasks.append(asyncio.create_task(feed.run()))
        try:
            yield
        finally:
            for task in tasks:
                task.cancel()
            tracker.dispose()
            engine.dispose()

    app = FastAPI(title="Heze console", lifespan=lifespan, docs_url=None, redoc_url=None, openapi_url=None)
    app.mount("/static", StaticFiles(directory=HERE / "static"), name="static")

    @app.middleware("http")
    async def security_headers(request: Request, call_next: Any) -> Response:
        response: Response = await call_next(request)
        for name, value in SECURITY_HEADERS.items():
            response.headers.setdefault(name, value)
        if not request.url.path.startswith("/static/"):  # conversations are never kept by a browser or proxy
            response.headers["Cache-Control"] = "no-store"
        return response

    app.add_exception_handler(ConsoleError, answer_error)
    app.add_exception_handler(OverflowError, answer_error)  # a number too large for the database: 422
    for area in (signin, dashboard, conversations, review, tickets, humans, proxies, payments, campaigns, admin):
        app.include_router(area.router)
    return app
