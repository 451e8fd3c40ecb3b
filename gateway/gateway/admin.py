"""Administration from the command line, on the gateway's own database:

    python -m gateway.admin create-user alice --admin     # prints a new password and an API key
    python -m gateway.admin create-key alice --name laptop
    python -m gateway.admin set-password alice            # prints a new password
    python -m gateway.admin list-users
    python -m gateway.admin migrate                       # the gateway also migrates at start
    docker compose exec gateway python -m gateway.admin create-user alice --admin

Passwords are generated unless --password-stdin is given (so they never sit in
shell history). Settings (DATABASE_URL, GATEWAY_DATA_DIR) come from the environment.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
from pathlib import Path

from .accounts import store
from .accounts.secrets import new_password
from .config import load_settings
from .db.engine import Database


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m gateway.admin", description=__doc__.split("\n\n")[0])
    commands = parser.add_subparsers(dest="command", required=True)
    commands.add_parser("migrate", help="bring the database to the newest schema")
    commands.add_parser("list-users", help="usernames, admin flag, number of API keys")
    create = commands.add_parser("create-user", help="a user with a password and a first API key")
    create.add_argument("username")
    create.add_argument("--admin", action="store_true", help="may administer (today: the same rights otherwise)")
    create.add_argument("--password-stdin", action="store_true", help="read the password from standard input")
    create.add_argument("--key-name", default="first key")
    key = commands.add_parser("create-key", help="another API key for a user")
    key.add_argument("username")
    key.add_argument("--name", default="key")
    password = commands.add_parser("set-password", help="a new password (ends the user's browser sessions)")
    password.add_argument("username")
    password.add_argument("--password-stdin", action="store_true")
    bootstrap = commands.add_parser("bootstrap", help="create user 'admin' when the database has no users, "
                                                      "writing its password to FILE (mode 0600)")
    bootstrap.add_argument("file", type=Path)
    return parser


def _password(from_stdin: bool) -> str:
    return sys.stdin.readline().rstrip("\n") if from_stdin else new_password()


async def _run(args: argparse.Namespace, database: Database) -> int:
    await database.migrate()
    async with database.session() as db:
        if args.command == "migrate":
            print("the database is at the newest schema")
        elif args.command == "list-users":
            for user in await store.list_users(db):
                keys = len(await store.list_api_keys(db, user.id))
                print(f"{user.username}\tadmin={user.is_admin}\tapi_keys={keys}")
        elif args.command == "create-user":
            password = _password(args.password_stdin)
            user = await store.create_user(db, args.username, password, is_admin=args.admin)
            key = await store.create_api_key(db, user, args.key_name)
            print(f"created user {user.username}\npassword: {password}\napi key:  {key.key}\n"
                  "(shown once: only their hashes are stored)")
        elif args.command == "create-key":
            user = await _existing(db, args.username)
            print((await store.create_api_key(db, user, args.name)).key)
        elif args.command == "set-password":
            user = await _existing(db, args.username)
            password = _password(args.password_stdin)
            await store.set_password(db, user, password)
            print(f"password: {password}")
        elif args.command == "bootstrap":
            return await _bootstrap(db, args.file)
    return 0


async def _existing(db, username: str):
    user = await store.user_by_name(db, username)
    if user is None:
        raise store.AccountError(f"no user {username}")
    return user


async def _bootstrap(db, file: Path) -> int:
    if await store.count_users(db, with_password=True):
        return 0
    password = new_password()
    await store.create_user(db, "admin", password, is_admin=True)
    file.parent.mkdir(parents=True, exist_ok=True)
    file.touch(mode=0o600)
    file.chmod(0o600)  # also when an old file was there: only its owner may read the password
    file.write_text(f"username: admin\npassword: {password}\n")
    print(f"first start: created the user 'admin'; its password is in {file}")
    return 0


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    database = Database(load_settings().database)

    async def run() -> int:
        try:
            return await _run(args, database)
        finally:
            await database.close()

    try:
        return asyncio.run(run())
    except store.AccountError as error:
        print(f"error: {error}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
