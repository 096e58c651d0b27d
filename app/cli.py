"""The ``mailprov`` command: migrate, serve, export the OpenAPI document."""

import argparse
import sys

from app.config import Settings


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

    openapi = sub.add_parser("openapi", help="write the OpenAPI document")
    openapi.add_argument("--output", "-o", default="-", help="file, or - for stdout")
    openapi.set_defaults(func=cmd_openapi)
    return parser


def main(argv: list[str] | None = None) -> None:
    args = build_parser().parse_args(argv)
    args.func(args)


if __name__ == "__main__":
    main()
