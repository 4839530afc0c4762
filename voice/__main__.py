"""``python -m voice``: run the voice gateway (HTTP/WebSocket on 8010, AudioSocket on 9092)."""
from __future__ import annotations

import logging

import uvicorn

from voice.app import create_app
from voice.settings import get_voice_settings


def main() -> None:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    settings = get_voice_settings()
    uvicorn.run(create_app(settings), host=settings.voice_host, port=settings.voice_http_port,
                log_level="warning", ws="websockets-sansio")


if __name__ == "__main__":
    main()
