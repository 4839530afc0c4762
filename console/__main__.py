"""``python -m console serve`` runs the staff console (port 8020);
``python -m console create-user --username NAME [--role admin]`` adds a user (the first admin).
The password is asked for at the prompt, or read from standard input with ``--password-stdin``.
``python -m console purge`` deletes what is older than ``CONSOLE_RETENTION_DAYS`` now (the running
console does it daily)."""
from __future__ import annotations

import argparse
import getpass
import sys

from console.auth import ROLES, Accounts
from console.settings import get_console_settings
from services.db import make_engine, make_sessionmaker
from services.migrate import upgrade
from textnorm.masking import configure_logging


def create_user(args: argparse.Namespace) -> int:
    settings = get_console_settings()
    engine = make_engine(settings.heze_db_url)
    upgrade(engine)
    if args.password_stdin:
        password = sys.stdin.readline().rstrip("\n")
    else:
        password = getpass.getpass("密码 / password: ")
        if password != getpass.getpass("再输一次 / again: "):
            print("两次输入的密码不一样 / the passwords differ", file=sys.stderr)
            return 1
    try:
        Accounts(make_sessionmaker(engine)).create_user(args.username, password, args.role)
    except ValueError as exc:
        print(f"没有创建 / not created: {exc}", file=sys.stderr)
        return 1
    print(f"已创建 {args.role} 用户 {args.username} / created")
    return 0


def purge_now() -> int:
    from console.retention import purge

    configure_logging()
    settings = get_console_settings()
    engine = make_engine(settings.heze_db_url)
    upgrade(engine)
    tracker = make_engine(settings.tracker_url)
    done = purge(tracker, make_sessionmaker(engine), settings.console_retention_days, keyring=settings.keyring)
    print(f"删除了 {done.conversations} 个对话（{done.events} 条事件）、{done.calls} 个通话记录、{done.recordings} 个录音 "
          f"（保留 {settings.console_retention_days} 天）")
    return 0


def rebuild_now() -> int:
    """Every conversation's summary computed again from its events (after an upgrade that added a
    summary column); what reviewers wrote stays."""
    from sqlalchemy import select

    from console.conversations import ConversationIndex, ref_key
    from services.models import ConversationSummary

    configure_logging()
    settings = get_console_settings()
    engine = make_engine(settings.heze_db_url)
    upgrade(engine)
    sessions = make_sessionmaker(engine)
    key = ref_key(sessions, settings.console_pseudonym_key.get_secret_value())
    index = ConversationIndex(make_engine(settings.tracker_url), sessions, key, settings.keyring,
                              settings.wechat_deadline_s)
    with sessions() as s:
        senders = list(s.scalars(select(ConversationSummary.sender_id)))
    for start in range(0, len(senders), 500):
        index.rebuild(senders[start:start + 500])
    print(f"重新统计了 {len(senders)} 个对话 / rebuilt")
    return 0


def serve() -> int:
    import uvicorn

    from console.app import create_app

    configure_logging()  # masked: no personal number reaches a log line (textnorm/masking.py)
    settings = get_console_settings()
    upgrade(make_engine(settings.heze_db_url))
    uvicorn.run(create_app(settings), host=settings.console_host, port=settings.console_port, log_level="warning",
                log_config=None)
    return 0


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="python -m console")
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("serve", help="run the console")
    sub.add_parser("purge", help="delete conversations, calls and recordings past the retention period")
    sub.add_parser("rebuild", help="compute every conversation's summary again from its events")
    sub.add_parser("rekey", help="seal every tracker-store row under the first key of DATA_KEYS")
    user = sub.add_parser("create-user", help="add a console user")
    user.add_argument("--username", required=True)
    user.add_argument("--role", choices=ROLES, default="admin")
    user.add_argument("--password-stdin", action="store_true", help="read the password from standard input")
    args = parser.parse_args(argv)
    if args.command == "purge":
        return purge_now()
    if args.command == "rebuild":
        return rebuild_now()
    if args.command == "rekey":
        from console.rekey import main as rekey_main

        configure_logging()
        return rekey_main()
    return serve() if args.command == "serve" else create_user(args)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
