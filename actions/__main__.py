"""Run the action server: ``python -m actions``."""
from __future__ import annotations

import threading

import uvicorn

from actions.server import create_app
from knowledge.config import KnowledgeSettings
from knowledge.index import GuideWatcher, open_knowledge_base, published_fingerprint
from services.container import build_services
from services.settings import get_settings
from textnorm.masking import configure_logging


def main() -> None:
    configure_logging()  # masked: no personal number reaches a log line (textnorm/masking.py)
    settings = get_settings()
    kb_settings = KnowledgeSettings()
    published = published_fingerprint(kb_settings)  # before the guides load: one published meanwhile is new
    knowledge = open_knowledge_base(kb_settings)
    services = build_services(settings, knowledge=knowledge)
    if kb_settings.refresh_s > 0:  # guides departments publish are found without a restart
        watcher = GuideWatcher(kb_settings, knowledge, lambda kb: setattr(services, "knowledge", kb), published)
        threading.Thread(target=watcher.run, args=(kb_settings.refresh_s, threading.Event()),
                         name="guide-watcher", daemon=True).start()
    app = create_app(services)
    uvicorn.run(app, host=settings.action_host, port=settings.action_port, log_level="warning", log_config=None)


if __name__ == "__main__":
    main()
