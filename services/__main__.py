"""Service database and services API: ``python -m services migrate|seed|serve|reconcile|api-key|openapi``."""
from __future__ import annotations

import argparse
import datetime as dt
import sys

from services.container import Services, build_services
from services.migrate import upgrade
from services.seed import seed
from services.settings import ROOT, get_settings
from textnorm.masking import configure_logging


OPENAPI_DOCUMENT = ROOT / "docs" / "openapi" / "departments-v1.json"


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m services")
    sub = parser.add_subparsers(dest="cmd", required=True)
    sub.add_parser("migrate", help="apply database migrations")
    sub.add_parser("seed", help="migrate, then load the fictional sample data into an empty database")
    sub.add_parser("serve", help="run the services API (payment pages and notifications)")
    rec = sub.add_parser("reconcile", help="compare a day's WeChat Pay trade bill with the payment orders")
    rec.add_argument("--date", type=dt.date.fromisoformat, default=None,
                     help="the bill's day, YYYY-MM-DD (China time); default yesterday")
    keys = sub.add_parser("api-key", help="departments' keys for the open API (/api/v1)").add_subparsers(
        dest="key_cmd", required=True)
    made = keys.add_parser("create", help="make a key; it is printed once and never kept")
    made.add_argument("--department", required=True, help="e.g. 民政局 (tickets: services/tickets.py DEPARTMENT_NAMES)")
    made.add_argument("--name", required=True, help="the department's system, e.g. 低保系统")
    made.add_argument("--scopes", required=True, help="comma-separated: applications:write,tickets:write,"
                                                      "guides:write,kpis:read")
    made.add_argument("--rate", type=int, default=None, help="requests a minute; default OPEN_API_RATE_PER_MINUTE")
    keys.add_parser("list", help="the keys (never the secrets)")
    keys.add_parser("revoke", help="switch a key off for good").add_argument("id", type=int)
    sub.add_parser("openapi", help="write the open API's document to docs/openapi/departments-v1.json")
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
    if args.cmd == "api-key":
        sys.exit(api_key(services, args, settings.open_api_rate_per_minute))
    if args.cmd == "openapi":
        from services.open_api import document_text

        OPENAPI_DOCUMENT.parent.mkdir(parents=True, exist_ok=True)
        OPENAPI_DOCUMENT.write_text(document_text(settings, services), encoding="utf-8")
        print(f"{OPENAPI_DOCUMENT.relative_to(ROOT)} written")
    if args.cmd == "serve":
        import uvicorn

        from services.api import create_app
        from services.updates import tell_citizen

        # A department's update through the open API is told to the citizen (services/updates.py).
        def told(kind: str, ref: str) -> None:
            tell_citizen(services, kind, ref)  # it logs what was done

        app = create_app(settings, services, on_update=told)
        uvicorn.run(app, host=settings.services_api_host,
                    port=settings.services_api_port, log_level="info", log_config=None)


def api_key(services: Services, args: argparse.Namespace, default_rate: int) -> int:
    """``api-key create|list|revoke``; exit status 2 for a refused request."""
    from services.api_keys import ApiKeys, parse_scopes
    from services.tickets import DEPARTMENT_NAMES, ticket_department

    keys = ApiKeys(services.sessions)
    if args.key_cmd == "create":
        try:
            client, key = keys.create(department=args.department, name=args.name, scopes=parse_scopes(args.scopes),
                                      rate_per_minute=args.rate or default_rate)
        except ValueError as exc:
            print(f"错误 / error: {exc}", file=sys.stderr)
            return 2
        tickets = ticket_department(client.department)
        print(f"密钥（只显示这一次，请交给对方系统保管）/ key, shown once:\n{key}\n"
              f"id {client.id}, {client.department} · {client.name}, {' '.join(sorted(client.scopes))}, "
              f"{client.rate_per_minute}/min; tickets of: "
              + (tickets if tickets in DEPARTMENT_NAMES else f"{tickets} (no ticket is routed there now)"))
        return 0
    if args.key_cmd == "list":
        for c in keys.list():
            print(f"{c.id}\t{'active' if c.active else 'revoked'}\t{c.department}\t{c.name}\t"
                  f"{','.join(sorted(c.scopes))}\t{c.rate_per_minute}/min\t{c.created_at:%Y-%m-%d}")
        return 0
    if keys.revoke(args.id):
        print(f"已停用 / revoked: {args.id}")
        return 0
    print(f"没有这个有效的密钥 / no active key {args.id}", file=sys.stderr)
    return 2


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
