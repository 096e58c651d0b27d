"""The ``mailprov`` command: migrate, serve, export the OpenAPI document."""

import argparse
import json
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime
from typing import TYPE_CHECKING

from app.config import Settings

if TYPE_CHECKING:
    from sqlmodel import Session


def _migrate(settings: Settings) -> None:
    from app.db import create_db_engine
    from app.migrate import MigrationRefused, migrate

    engine = create_db_engine(settings.DATABASE_URL)
    try:
        print(f"mailprov: {migrate(engine)}", file=sys.stderr)
    except MigrationRefused as exc:
        sys.exit(f"mailprov: cannot migrate: {exc}")
    finally:
        engine.dispose()


def cmd_migrate(_: argparse.Namespace) -> None:
    _migrate(Settings())


def cmd_serve(args: argparse.Namespace) -> None:
    import uvicorn

    if not args.no_migrate:
        _migrate(Settings())
    uvicorn.run(
        "app.main:create_app",
        factory=True,
        host=args.host,
        port=args.port,
        workers=args.workers,
        proxy_headers=args.proxy_headers,
        log_level=args.log_level,
    )


@contextmanager
def _cli_session(write: bool = False) -> Iterator["Session"]:
    from app.db import create_db_engine, open_session

    engine = create_db_engine(Settings().DATABASE_URL)
    try:
        with open_session(engine, write=write) as session:
            yield session
    finally:
        engine.dispose()


def _cli_audit(session: "Session", action: str, target: str, status: int = 200) -> None:
    from app.audit import AuditEntry
    from app.keys import utcnow

    session.add(
        AuditEntry(
            at=utcnow(),
            key_name="cli",
            action=action,
            target=target,
            outcome="success",
            status=status,
            client="cli",
        )
    )


def cmd_keys_create(args: argparse.Namespace) -> None:
    from pydantic import ValidationError

    from app.keys import KeyCreate, create_key

    try:
        expires_at = datetime.fromisoformat(args.expires_at) if args.expires_at else None
    except ValueError:
        sys.exit("mailprov: cannot create key: --expires-at is not an ISO 8601 time")
    try:
        spec = KeyCreate(
            name=args.name,
            admin=args.admin,
            domains=args.domain,
            read_only=args.read_only,
            send_as=args.send_as,
            expires_at=expires_at,
        )
    except ValidationError as exc:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in e['loc']) or 'key'}: "
            + e["msg"].removeprefix("Value error, ")
            for e in exc.errors()
        )
        sys.exit(f"mailprov: cannot create key: {problems}")
    if not (spec.admin or spec.domains or spec.send_as):
        sys.exit("mailprov: cannot create key: give --admin, --domain or --send-as")
    with _cli_session(write=True) as session:
        created = create_key(session, spec)
        _cli_audit(session, "create_key", f"key:{created.id}", 201)
        session.commit()
    print(created.key)
    print(
        f"mailprov: created key {created.id} ({created.name}); it is shown only once",
        file=sys.stderr,
    )


def cmd_keys_list(_: argparse.Namespace) -> None:
    from sqlmodel import select

    from app.keys import ApiKey, describe

    with _cli_session() as session:
        for row in session.exec(select(ApiKey).order_by(ApiKey.key_id)).all():
            print(json.dumps(describe(row)))


def cmd_keys_revoke(args: argparse.Namespace) -> None:
    from app.keys import find_key, revoke_key

    with _cli_session(write=True) as session:
        row = find_key(session, args.key_id)
        if row is None:
            sys.exit(f"mailprov: no key {args.key_id}")
        _cli_audit(session, "revoke_key", f"key:{args.key_id}")
        revoke_key(session, row)
    print(f"mailprov: revoked key {args.key_id}", file=sys.stderr)


def cmd_audit_purge(_: argparse.Namespace) -> None:
    from app.audit import purge

    settings = Settings()
    with _cli_session(write=True) as session:
        removed = purge(session, settings.AUDIT_RETENTION_DAYS)
    print(
        f"mailprov: purged {removed} audit entries older than {settings.AUDIT_RETENTION_DAYS} days",
        file=sys.stderr,
    )


def cmd_openapi(args: argparse.Namespace) -> None:
    from app.openapi import openapi_json

    text = openapi_json()
    if args.output == "-":
        sys.stdout.write(text)
    else:
        with open(args.output, "w", encoding="utf-8") as handle:
            handle.write(text)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="mailprov", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)

    migrate = sub.add_parser("migrate", help="create or upgrade the schema (adopts ISPmail tables)")
    migrate.set_defaults(func=cmd_migrate)

    serve = sub.add_parser("serve", help="migrate, then serve the API with uvicorn")
    serve.add_argument("--host", default="127.0.0.1")
    serve.add_argument("--port", type=int, default=8000)
    serve.add_argument("--workers", type=int, default=1)
    serve.add_argument("--no-migrate", action="store_true", help="do not migrate first")
    serve.add_argument("--proxy-headers", action="store_true", help="trust X-Forwarded-*")
    serve.add_argument("--log-level", default="info")
    serve.set_defaults(func=cmd_serve)

    keys = sub.add_parser("keys", help="manage API keys").add_subparsers(dest="keys", required=True)
    create = keys.add_parser("create", help="create a key and print it (shown once)")
    create.add_argument("--name", required=True)
    create.add_argument("--admin", action="store_true", help="everything, incl. key management")
    create.add_argument(
        "--domain", action="append", default=[], help="a domain the key manages (repeatable)"
    )
    create.add_argument("--read-only", action="store_true", help="only GET requests")
    create.add_argument(
        "--send-as", action="append", default=[], help="From address or @domain (repeatable)"
    )
    create.add_argument("--expires-at", help="ISO 8601 time, e.g. 2027-01-01T00:00:00Z")
    create.set_defaults(func=cmd_keys_create)
    keys.add_parser("list", help="list keys as JSON lines").set_defaults(func=cmd_keys_list)
    revoke = keys.add_parser("revoke", help="revoke a key by its id")
    revoke.add_argument("key_id")
    revoke.set_defaults(func=cmd_keys_revoke)

    audit = sub.add_parser("audit-purge", help="delete audit entries past the retention")
    audit.set_defaults(func=cmd_audit_purge)

    openapi = sub.add_parser("openapi", help="write the OpenAPI document")
    openapi.add_argument("--output", "-o", default="-", help="file, or - for stdout")
    openapi.set_defaults(func=cmd_openapi)
    return parser


def main(argv: list[str] | None = None) -> None:
    from pydantic import ValidationError

    args = build_parser().parse_args(argv)
    try:
        args.func(args)
    except ValidationError as exc:
        if exc.title != "Settings":
            raise
        # A bad MAILPROV_* variable: say which, without a traceback (never the value).
        problems = "; ".join(
            f"MAILPROV_{'.'.join(str(p) for p in e['loc'])}: {e['msg']}" for e in exc.errors()
        )
        sys.exit(f"mailprov: invalid settings: {problems}")


if __name__ == "__main__":
    main()
