"""Service database and services API: ``python -m services migrate|seed|serve``."""
from __future__ import annotations

import argparse

from services.container import build_services
from services.migrate import upgrade
from services.seed import seed
from services.settings import get_settings
from textnorm.masking import configure_logging


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m services")
    sub = parser.add_subparsers(dest="cmd", required=True)
    sub.add_parser("migrate", help="apply database migrations")
    sub.add_parser("seed", help="migrate, then load the fictional sample data into an empty database")
    sub.add_parser("serve", help="run the services API (payment pages and notifications)")
    args = parser.parse_args()
    configure_logging()  # masked: no personal number reaches a log line (textnorm/masking.py)

    settings = get_settings()
    services = build_services(settings)
    if args.cmd in ("migrate", "seed"):
        upgrade(services.engine)
        print("数据库已迁移到最新版本 / database migrated")
    if args.cmd == "seed":
        print("已写入示例数据 / sample data loaded" if seed(services.sessions) else "已有数据，跳过 / data present, skipped")
    if args.cmd == "serve":
        import uvicorn

        from services.api import create_app

        uvicorn.run(create_app(settings, services), host=settings.services_api_host,
                    port=settings.services_api_port, log_level="info", log_config=None)


if __name__ == "__main__":
    main()
