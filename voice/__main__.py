"""``python -m voice``: run the voice gateway (HTTP/WebSocket on 8010, AudioSocket on 9092)."""
from __future__ import annotations


import uvicorn

from voice.app import create_app
from voice.settings import get_voice_settings
from textnorm.masking import configure_logging


def main() -> None:
    configure_logging()  # masked: no personal number reaches a log line (textnorm/masking.py)
    settings = get_voice_settings()
    uvicorn.run(create_app(settings), host=settings.voice_host, port=settings.voice_http_port,
                log_level="warning", ws="websockets-sansio", log_config=None)


if __name__ == "__main__":
    main()
