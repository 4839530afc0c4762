"""The action server: Rasa's action-server HTTP protocol (``POST /webhook``) over FastAPI.

rasa-sdk's ``ActionExecutor`` runs the actions; this module only maps the protocol and its
errors (in one place, never echoing the request body, which holds citizens' messages)."""
from __future__ import annotations

import asyncio
import json
import logging
import zlib
from collections.abc import AsyncIterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import asynccontextmanager
from typing import Any

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse
from rasa_sdk.interfaces import ActionExecutionRejection, ActionMissingDomainException, ActionNotFoundException
from rasa_sdk.executor import ActionExecutor

from actions.registry import build_actions
from services.container import Services

log = logging.getLogger(__name__)
MAX_BODY_BYTES = 8 * 1024 * 1024
WORKERS = 8


def create_app(services: Services) -> FastAPI:
    """Actions call the service backends synchronously (SQL); each action call runs in a bounded
    thread pool, with its own event loop there, so no database call blocks this server's loop."""
    pool = ThreadPoolExecutor(max_workers=WORKERS, thread_name_prefix="action")
    executor = ActionExecutor()
    for action in build_actions(services):
        executor.register_action(action)

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        yield
        pool.shutdown(wait=True)

    app = FastAPI(title="Heze action server", docs_url=None, redoc_url=None, openapi_url=None, lifespan=lifespan)

    @app.get("/health")
    def health() -> dict[str, str]:
        return {"status": "ok"}

    @app.get("/actions")
    def actions() -> list[dict[str, str]]:
        return [{"name": a.name} for a in executor.list_actions()]

    @app.post("/webhook")
    async def webhook(request: Request) -> JSONResponse:
        raw = await request.body()
        if len(raw) > MAX_BODY_BYTES:
            return JSONResponse({"error": "request too large"}, status_code=413)
        try:
            if request.headers.get("Content-Encoding") == "deflate":
                raw = zlib.decompress(raw)
            call: Any = json.loads(raw)
        except (ValueError, zlib.error):
            return JSONResponse({"error": "invalid JSON body"}, status_code=400)
        if not isinstance(call, dict) or not isinstance(call.get("tracker"), dict):
            return JSONResponse({"error": "not an action call"}, status_code=400)
        name = call.get("next_action")
        try:
            result = await asyncio.get_running_loop().run_in_executor(pool, asyncio.run, executor.run(call))
        except ActionExecutionRejection as exc:
            return JSONResponse({"error": exc.message, "action_name": exc.action_name}, status_code=400)
        except ActionNotFoundException as exc:
            log.error("unknown action %s", exc.action_name)
            return JSONResponse({"error": exc.message, "action_name": exc.action_name}, status_code=404)
        except ActionMissingDomainException as exc:
            return JSONResponse({"error": exc.message, "action_name": exc.action_name}, status_code=449)
        except Exception:  # noqa: BLE001 - one place maps every failure to 500
            log.exception("action %s failed", name)
            return JSONResponse({"error": "action failed", "action_name": name}, status_code=500)
        return JSONResponse(result.model_dump() if result else None)

    return app
