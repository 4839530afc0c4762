"""Service database and services API: ``python -m services migrate|seed|serve|reconcile``."""
from __future__ import annotations

import argparse
import datetime as dt
import sys

from services.container import Services, build_services
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
    rec = sub.add_parser("reconcile", help="compare a day's WeChat Pay trade bill with the payment orders")
    rec.add_argument("--date", type=dt.date.fromisoformat, default=None,
                     help="the bill's day, YYYY-MM-DD (China time); default yesterday")
    args = parser.parse_args()
    configure_logging()  # masked: no personal number reaches a log line (textnorm/masking.py)

    settings = get_settings()
    services = build_services(settings)
    if args.cmd in ("migrate", "seed"):
        upgrade(services.engine)
        print("数据库已迁移到最新版本 / database migrated")
    if args.cmd == "seed":
        print("已写入示例数据 / sample data loaded" if seed(services.sessions) else "已有数据，跳过 / data present, skipped")
    if args.cmd == "reconcile":
        sys.exit(reconcile(services, args.date))
    if args.cmd == "serve":
        import uvicorn

        from services.api import create_app

        uvicorn.run(create_app(settings, services), host=settings.services_api_host,
                    port=settings.services_api_port, log_level="info", log_config=None)


def reconcile(services: Services, day: dt.date | None) -> int:
    """One reconciliation run; exit status 0 when it agrees, 1 with mismatches, 2 when it failed."""
    from services.reconcile import CHINA, STATUSES, BillSource, reconcile_day

    if not isinstance(services.payments, BillSource):
        print("对账需要 PAYMENT_PROVIDER=wechatpay / reconciliation needs a provider with trade bills")
        return 2
    day = day or dt.datetime.now(CHINA).date() - dt.timedelta(days=1)
    run = reconcile_day(services.sessions, services.billing, services.payments, day)
    print(f"{day} {STATUSES[run.status]} / {run.status}: {run.bill_rows} rows, {run.matched} matched, "
          f"{run.mismatch_count} mismatches" + (f" ({run.error})" if run.error else ""))
    return {"ok": 0, "mismatches": 1}.get(run.status, 2)


if __name__ == "__main__":
    main()
