"""Run the action server: ``python -m actions``."""
from __future__ import annotations


import uvicorn

from actions.server import create_app
from knowledge.config import KnowledgeSettings
from knowledge.index import open_knowledge_base
from services.container import build_services
from services.settings import get_settings
from textnorm.masking import configure_logging


def main() -> None:
    configure_logging()  # masked: no personal number reaches a log line (textnorm/masking.py)
    settings = get_settings()
    knowledge = open_knowledge_base(KnowledgeSettings())
    app = create_app(build_services(settings, knowledge=knowledge))
    uvicorn.run(app, host=settings.action_host, port=settings.action_port, log_level="warning", log_config=None)


if __name__ == "__main__":
    main()
