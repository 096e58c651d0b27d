"""The ``mailprov`` command: migrate, serve, export the OpenAPI document."""

import argparse
import ctypes
import json
import logging
import logging.config
import os
import shutil
import signal
import socket
import sys
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING

import uvicorn

from app.config import Settings

if TYPE_CHECKING:
    from pydantic import SecretStr
    from sqlmodel import Session

_uvicorn_bind_socket = uvicorn.Config.bind_socket


def _migrate(settings: Settings, log: "logging.Logger | None" = None) -> None:
    from app.db import create_db_engine
    from app.migrate import MigrationRefused, migrate

    engine = create_db_engine(settings.DATABASE_URL)
    try:
        done = migrate(engine)
    except MigrationRefused as exc:
        if log is not None:
            log.error("cannot migrate: %s", exc)
            sys.exit(1)
        sys.exit(f"mailprov: cannot migrate: {exc}")
    finally:
        engine.dispose()
    if log is not None:
        log.info("%s", done)
    else:
        print(f"mailprov: {done}", file=sys.stderr)


def cmd_migrate(_: argparse.Namespace) -> None:
    _migrate(Settings())


def cmd_serve(args: argparse.Namespace) -> None:
    from app.checks import UnsafeConfiguration, refuse_unsafe
    from app.logs import log_config

    settings = Settings()
    logs = log_config(settings.LOG_FORMAT, args.log_level)
    logging.config.dictConfig(logs)  # the lines before uvicorn's, in the same format
    log = logging.getLogger("mailprov")
    try:
        refuse_unsafe(settings)  # each worker logs the warnings as it starts
    except UnsafeConfiguration as exc:
        log.error("%s", exc)
        sys.exit(1)
    if not args.no_migrate:
        _migrate(settings, log)
    metrics_dir = _metrics_dir(args.workers)
    _limit_malloc_arenas()
    uvicorn.Config.bind_socket = _bind_tcp_socket  # type: ignore[method-assign, assignment]
    # After a graceful shutdown uvicorn re-raises the SIGTERM it got; with the default
    # action a single worker would then die "killed by SIGTERM" (143) where --workers N
    # and SIGINT end with 0. A stop that drained cleanly exits 0 whatever the count.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    try:
        uvicorn.run(
            "app.main:create_app",
            factory=True,
            host=args.host,
            port=args.port,
            workers=args.workers,
            proxy_headers=args.proxy_headers,
            log_level=args.log_level,
            log_config=logs,
            access_log=False,  # app.middleware.Instrument writes a better one
            timeout_graceful_shutdown=args.shutdown_timeout,
        )
    finally:
        if metrics_dir is not None:
            shutil.rmtree(metrics_dir, ignore_errors=True)


def _bind_tcp_socket(config: "uvicorn.Config") -> socket.socket:
    """uvicorn's listening socket for --workers N, labelled IPPROTO_TCP.

    With several workers uvicorn binds the socket itself with proto 0; accepted
    connections inherit it, and asyncio sets TCP_NODELAY only on sockets that say
    IPPROTO_TCP (Kludex/uvicorn#3149). Without it, Nagle's algorithm holds each
    answer's body, written after its headers, until the client's delayed ACK:
    about 40 ms on every keep-alive request (bench/, docs/benchmarks.md).
    """
    sock = _uvicorn_bind_socket(config)
    if sock.family not in (socket.AF_INET, socket.AF_INET6):
        return sock
    return socket.socket(sock.family, sock.type, socket.IPPROTO_TCP, fileno=sock.detach())


def _limit_malloc_arenas() -> None:
    """At most MALLOC_ARENA_MAX (default 2) glibc malloc arenas per process.

    Each threadpool thread (up to 40) may otherwise get an arena of its own, up to
    8 per core, and a MariaDB worker under load grew to 124-128 MB; with 2 it
    peaks at 108-110 MB at the same throughput (docs/benchmarks.md, section 4).
    The variable reaches the workers uvicorn spawns; mallopt sets it for this
    process, whose threadpool does not exist yet. A value already set is kept."""
    arenas = os.environ.setdefault("MALLOC_ARENA_MAX", "2")
    try:
        libc = ctypes.CDLL("libc.so.6")
        count = int(arenas)
    except (OSError, ValueError):  # not glibc (musl, macOS), or not a number: leave it
        return
    m_arena_max = -8  # glibc's malloc.h
    libc.mallopt(m_arena_max, count)


def _metrics_dir(workers: int) -> str | None:
    """With several workers, a directory where each writes its metrics (prometheus
    multiprocess mode), so a scrape of any worker sums all. Returns one to remove."""
    from app.metrics import MULTIPROC_ENV

    given = os.environ.get(MULTIPROC_ENV)
    if given:
        for stale in Path(given).glob("*.db"):  # counts of an earlier run
            stale.unlink()
        return None
    if workers < 2:
        return None
    made = tempfile.mkdtemp(prefix="mailprov-metrics-")
    os.environ[MULTIPROC_ENV] = made  # inherited by the workers uvicorn spawns
    return made


def cmd_check_config(_: argparse.Namespace) -> None:
    from app.checks import check

    settings = Settings()
    findings = check(settings)
    for finding in findings:
        print(finding)
    errors = sum(finding.level == "error" for finding in findings)
    warnings = len(findings) - errors
    mode = settings.ENVIRONMENT
    if errors and mode == "production":
        verdict = "the service will refuse to start"
    elif errors:
        verdict = "in production the service would refuse to start"
    else:
        verdict = "the service will start"
    print(f"mailprov: {errors} errors, {warnings} warnings ({mode}): {verdict}", file=sys.stderr)
    sys.exit(1 if errors else 0)


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
    from app.clock import utcnow
    from app.tables import AuditEntry

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

    from app.keys import KeyCreate, create_key, new_key_id

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
        key_id = new_key_id()
        _cli_audit(session, "create_key", f"key:{key_id}", 201)  # commits with the key
        created = create_key(session, spec, key_id)
    print(created.key)
    print(
        f"mailprov: created key {created.id} ({created.name}); it is shown only once",
        file=sys.stderr,
    )


def cmd_keys_list(_: argparse.Namespace) -> None:
    from sqlmodel import select

    from app.keys import describe
    from app.tables import ApiKey

    with _cli_session() as session:
        for row in session.exec(select(ApiKey).order_by(ApiKey.key_id)).all():
            print(json.dumps(describe(row)))


def cmd_keys_revoke(args: argparse.Namespace) -> None:
    from app.keys import find_key, revoke_key

    with _cli_session(write=True) as session:
        row = find_key(session, args.key_id)
        if row is None:
            sys.exit(f"mailprov: no key {args.key_id}")
        _cli_audit(session, "revoke_key", f"key:{args.key_id}")  # commits with the change
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


def _dkim_secrets(settings: Settings) -> list["SecretStr"]:
    return [s for s in (settings.DKIM_KEY_SECRET, settings.DKIM_KEY_SECRET_PREVIOUS) if s]


def cmd_dkim_sync(args: argparse.Namespace) -> None:
    import shlex
    import subprocess

    from app.dkimsync import SyncError, default_group, sync

    settings = Settings()
    group = args.group if args.group is not None else default_group()
    try:
        with _cli_session() as session:
            result = sync(
                session, Path(args.dir), Path(args.selector_map), _dkim_secrets(settings), group
            )
    except (SyncError, OSError) as exc:
        sys.exit(f"mailprov: dkim sync: {exc}")
    for error in result.errors:
        print(f"mailprov: dkim sync: {error}", file=sys.stderr)
    print(
        f"mailprov: dkim sync: {len(result.written)} key file(s) written, "
        f"{len(result.removed)} removed, {result.unchanged} unchanged; selector map "
        f"{'changed' if result.map_changed else 'unchanged'} ({result.signing} domain(s) signed)",
        file=sys.stderr,
    )
    if result.needs_reload and args.reload_command:
        # Run as given (no shell), e.g. "systemctl reload rspamd": rspamd rereads the map now.
        done = subprocess.run(shlex.split(args.reload_command), check=False)
        if done.returncode != 0:
            sys.exit(f"mailprov: dkim sync: {args.reload_command!r} exited {done.returncode}")
    if result.errors:
        sys.exit(1)


def cmd_dkim_reencrypt(_: argparse.Namespace) -> None:
    from app.crud.dkim import sealed_keys
    from app.dkim import KeyUnavailable, is_sealed_with, seal, unseal

    settings = Settings()
    secret = settings.DKIM_KEY_SECRET
    if secret is None:
        sys.exit("mailprov: dkim reencrypt: set MAILPROV_DKIM_KEY_SECRET first")
    moved = failed = 0
    with _cli_session(write=True) as session:
        for domain, key in sealed_keys(session):
            if is_sealed_with(key.private_key, secret):
                continue
            try:
                private = unseal(key.private_key, domain, key.selector, _dkim_secrets(settings))
            except KeyUnavailable as exc:
                print(f"mailprov: dkim reencrypt: {exc}", file=sys.stderr)
                failed += 1
                continue
            key.private_key = seal(private, domain, key.selector, secret)
            session.add(key)
            moved += 1
        if moved:
            _cli_audit(session, "reencrypt_dkim_keys", f"{moved} key(s)")
        session.commit()
    print(
        f"mailprov: dkim reencrypt: {moved} key(s) sealed with the current secret", file=sys.stderr
    )
    if failed:
        sys.exit(1)


def cmd_dkim_list(_: argparse.Namespace) -> None:
    from app.crud.dkim import sealed_keys

    with _cli_session() as session:
        for domain, key in sealed_keys(session):
            scheme, _sep, rest = key.private_key.partition(":")
            stored = f"{scheme}:{rest.partition(':')[0]}" if scheme == "aesgcm" else scheme
            print(
                json.dumps(
                    {"domain": domain, "selector": key.selector, "algorithm": key.algorithm,
                     "bits": key.bits, "state": key.state, "stored": stored}
                )
            )  # fmt: skip


def cmd_openapi(args: argparse.Namespace) -> None:
    from app.main import create_app

    # The document does not depend on settings; an in-memory URL opens no file.
    document = create_app(Settings(DATABASE_URL="sqlite://")).openapi()
    text = json.dumps(document, indent=2, ensure_ascii=False) + "\n"
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
    serve.add_argument(
        "--shutdown-timeout",
        type=float,
        default=None,
        metavar="SECONDS",
        help="on SIGTERM, wait at most this long for requests in flight (default: as long "
        "as they take); set it below your orchestrator's stop grace period",
    )
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

    check = sub.add_parser("check-config", help="report unsafe or inconsistent settings")
    check.set_defaults(func=cmd_check_config)

    audit = sub.add_parser("audit-purge", help="delete audit entries past the retention")
    audit.set_defaults(func=cmd_audit_purge)

    dkim = sub.add_parser("dkim", help="DKIM keys on the mail host (rspamd)").add_subparsers(
        dest="dkim", required=True
    )
    dkim_sync = dkim.add_parser(
        "sync", help="write the key files and selector map rspamd signs with (idempotent)"
    )
    dkim_sync.add_argument(
        "--dir", required=True, help="key directory, rspamd's path ($domain.$selector.key)"
    )
    dkim_sync.add_argument(
        "--selector-map", required=True, help="rspamd's selector_map file (domain selector)"
    )
    dkim_sync.add_argument(
        "--group", default=None, help="group that may read the keys (default: _rspamd if it exists)"
    )
    dkim_sync.add_argument(
        "--reload-command",
        default=None,
        help="run this when the map or a key file changed, e.g. 'systemctl reload rspamd'",
    )
    dkim_sync.set_defaults(func=cmd_dkim_sync)
    dkim.add_parser(
        "reencrypt",
        help="seal every key with MAILPROV_DKIM_KEY_SECRET (after setting or changing it)",
    ).set_defaults(func=cmd_dkim_reencrypt)
    dkim.add_parser("list", help="list keys as JSON lines (never the private key)").set_defaults(
        func=cmd_dkim_list
    )

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
