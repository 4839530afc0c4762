"""``python -m console serve`` runs the staff console (port 8020);
``python -m console create-user --username NAME [--role admin]`` adds a user (the first admin).
The password is asked for at the prompt, or read from standard input with ``--password-stdin``."""
from __future__ import annotations

import argparse
import getpass
import logging
import sys

from console.auth import ROLES, Accounts
from console.settings import get_console_settings
from services.db import make_engine, make_sessionmaker
from services.migrate import upgrade


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


def serve() -> int:
    import uvicorn

    from console.app import create_app

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    settings = get_console_settings()
    upgrade(make_engine(settings.heze_db_url))
    uvicorn.run(create_app(settings), host=settings.console_host, port=settings.console_port, log_level="warning")
    return 0


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="python -m console")
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("serve", help="run the console")
    user = sub.add_parser("create-user", help="add a console user")
    user.add_argument("--username", required=True)
    user.add_argument("--role", choices=ROLES, default="admin")
    user.add_argument("--password-stdin", action="store_true", help="read the password from standard input")
    args = parser.parse_args(argv)
    return serve() if args.command == "serve" else create_user(args)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
