"""`mailprov check-config`, and production refusing to start with unsafe settings."""

import os
import subprocess
from pathlib import Path

import pytest
from pydantic import SecretStr

from app.checks import Finding, UnsafeConfiguration, check
from app.config import Settings
from app.main import create_app
from tests.live import MAILPROV, ROOT

# A production configuration with nothing to report: the baseline each case spoils.
SAFE = {
    "ENVIRONMENT": "production",
    "DATABASE_URL": "mysql+pymysql://mailprov:Xq3-long-unique-pass@db.internal/mailserver",
    "SUBMISSION_HOST": "mail.example.org",
    "SUBMISSION_USERNAME": "mailprov@example.org",
    "SUBMISSION_PASSWORD": SecretStr("n0t-a-default-passphrase"),
    "DKIM_KEY_SECRET": SecretStr("Zq8w3Jm1vH0bPq2LxR7tN5cY9eK4sA6dF1gU0iO3"),
    "DNS_MX_HOST": "mail.example.org",
}


def findings(**changes: object) -> set[tuple[str, str]]:
    settings = Settings.model_construct(**(Settings().model_dump() | SAFE | changes))
    return {(f.level, f.setting) for f in check(settings)}


def test_safe_production_settings_have_no_findings() -> None:
    assert findings() == set()


@pytest.mark.parametrize(
    ("changes", "expected"),
    [
        ({"BCRYPT_COST": 5}, ("error", "MAILPROV_BCRYPT_COST")),
        ({"SUBMISSION_PASSWORD": SecretStr("changeme")}, ("error", "MAILPROV_SUBMISSION_PASSWORD")),
        ({"SUBMISSION_PASSWORD": SecretStr("short")}, ("error", "MAILPROV_SUBMISSION_PASSWORD")),
        ({"SUBMISSION_PASSWORD": None}, ("error", "MAILPROV_SUBMISSION_PASSWORD")),
        ({"SUBMISSION_USERNAME": None}, ("error", "MAILPROV_SUBMISSION_USERNAME")),
        ({"SUBMISSION_PORT": 465}, ("error", "MAILPROV_SUBMISSION_TLS")),
        ({"SUBMISSION_TLS": "implicit"}, ("error", "MAILPROV_SUBMISSION_TLS")),
        ({"SUBMISSION_PORT": 25}, ("warning", "MAILPROV_SUBMISSION_PORT")),
        ({"SUBMISSION_CA_FILE": "/nonexistent/ca.pem"}, ("error", "MAILPROV_SUBMISSION_CA_FILE")),
        ({"SUBMISSION_TIMEOUT": 1}, ("error", "MAILPROV_SUBMISSION_TIMEOUT")),
        ({"DATABASE_URL": "mysql+pymysql://mailprov:pw-rw@db/mailserver"},
         ("error", "MAILPROV_DATABASE_URL")),
        ({"DATABASE_URL": "mysql+pymysql://root:Xq3-long-unique-pass@db/mailserver"},
         ("warning", "MAILPROV_DATABASE_URL")),
        ({"DATABASE_URL": "postgresql+psycopg://mailprov@db.internal/mailserver"},
         ("warning", "MAILPROV_DATABASE_URL")),
        ({"DATABASE_URL": "sqlite://"}, ("error", "MAILPROV_DATABASE_URL")),
        ({"DATABASE_URL": "sqlite:////var/lib/mailprov/mailprov.db"},
         ("warning", "MAILPROV_DATABASE_URL")),
        ({"DATABASE_URL": "oracle://x@y/z"}, ("error", "MAILPROV_DATABASE_URL")),
        ({"PAGE_SIZE_DEFAULT": 600}, ("error", "MAILPROV_PAGE_SIZE_DEFAULT")),
        ({"MAX_BODY_BYTES": 1024 * 1024}, ("warning", "MAILPROV_MAX_BODY_BYTES")),
        ({"MAILDIR_ROOT": "vmail"}, ("error", "MAILPROV_MAILDIR_ROOT")),
        ({"SEND_RATE_LIMIT": 0}, ("warning", "MAILPROV_SEND_RATE_LIMIT")),
        ({"DKIM_KEY_SECRET": None}, ("warning", "MAILPROV_DKIM_KEY_SECRET")),
        ({"DKIM_KEY_SECRET": SecretStr("too-short-to-be-a-key")},
         ("error", "MAILPROV_DKIM_KEY_SECRET")),
        ({"DKIM_KEY_SECRET_PREVIOUS": SecretStr("changeme")},
         ("error", "MAILPROV_DKIM_KEY_SECRET_PREVIOUS")),
        ({"DKIM_KEY_SECRET": None, "DKIM_KEY_SECRET_PREVIOUS": SecretStr("x" * 40)},
         ("error", "MAILPROV_DKIM_KEY_SECRET_PREVIOUS")),
        ({"DNS_SPF": "spf1 mx"}, ("error", "MAILPROV_DNS_SPF")),
        ({"DNS_DMARC": "p=reject"}, ("error", "MAILPROV_DNS_DMARC")),
        ({"DNS_TLSRPT_RUA": "tlsrpt@example.org"}, ("error", "MAILPROV_DNS_TLSRPT_RUA")),
        ({"DNS_MX_HOST": "localhost"}, ("warning", "MAILPROV_DNS_MX_HOST")),
        ({"DNS_MX_HOST": None}, ("warning", "MAILPROV_DNS_MX_HOST")),
        ({"METRICS": "open"}, ("warning", "MAILPROV_METRICS")),
        ({"AUTH_FAILURE_LIMIT": 5000}, ("warning", "MAILPROV_AUTH_FAILURE_LIMIT")),
    ],
)  # fmt: skip
def test_each_unsafe_setting_is_reported(
    changes: dict[str, object], expected: tuple[str, str]
) -> None:
    assert expected in findings(**changes)


def test_findings_never_quote_a_secret() -> None:
    secret = "hunter2"
    url = f"mysql+pymysql://mailprov:{secret}@db/mailserver"
    settings = Settings.model_construct(
        **(Settings().model_dump() | SAFE | {"DATABASE_URL": url,
                                             "SUBMISSION_PASSWORD": SecretStr(secret)})
    )  # fmt: skip
    found = check(settings)
    assert len([f for f in found if f.level == "error"]) == 2
    assert all(secret not in str(f) for f in found)
    assert secret not in str(UnsafeConfiguration(found))


def test_production_refuses_to_start_with_errors_but_development_only_warns(
    caplog: pytest.LogCaptureFixture,
) -> None:
    weak = {"BCRYPT_COST": 4, "DATABASE_URL": "sqlite://"}
    with pytest.raises(UnsafeConfiguration) as refused:
        create_app(Settings(ENVIRONMENT="production", **weak))  # type: ignore[arg-type]
    assert {f.setting for f in refused.value.findings} == {
        "MAILPROV_BCRYPT_COST",
        "MAILPROV_DATABASE_URL",
    }
    app = create_app(Settings(ENVIRONMENT="development", **weak))  # type: ignore[arg-type]
    app.state.engine.dispose()
    assert any("MAILPROV_BCRYPT_COST" in r.getMessage() for r in caplog.records)
    # Warnings alone never stop it.
    app = create_app(Settings(ENVIRONMENT="production", DATABASE_URL="sqlite:///" + os.devnull))
    app.state.engine.dispose()


def run(*args: str, **env: str) -> subprocess.CompletedProcess[str]:
    clean = {k: v for k, v in os.environ.items() if not k.startswith("MAILPROV_")}
    return subprocess.run(
        [str(MAILPROV), *args], env=clean | env, cwd=ROOT, capture_output=True, text=True,
        timeout=60, check=False,
    )  # fmt: skip


@pytest.mark.slow  # runs the CLI
def test_check_config_command(tmp_path: Path) -> None:
    ok = run("check-config", MAILPROV_DATABASE_URL=f"sqlite:///{tmp_path}/ok.db")
    assert ok.returncode == 0 and ok.stdout == "", ok.stderr
    assert "0 errors, 0 warnings (development)" in ok.stderr
    bad = run("check-config", MAILPROV_ENVIRONMENT="production", MAILPROV_BCRYPT_COST="6",
              MAILPROV_SUBMISSION_USERNAME="svc@example.org",
              MAILPROV_DATABASE_URL=f"sqlite:///{tmp_path}/bad.db")  # fmt: skip
    assert bad.returncode == 1
    assert "error: MAILPROV_BCRYPT_COST" in bad.stdout
    assert "error: MAILPROV_SUBMISSION_PASSWORD" in bad.stdout
    assert "warning: MAILPROV_DATABASE_URL" in bad.stdout
    assert "the service will refuse to start" in bad.stderr


@pytest.mark.slow  # runs the CLI
def test_serve_in_production_refuses_before_touching_anything(tmp_path: Path) -> None:
    database = tmp_path / "never.db"
    url = f"sqlite:///{database}"
    refused = run("serve", "--port", "1", MAILPROV_ENVIRONMENT="production",
                  MAILPROV_BCRYPT_COST="4", MAILPROV_DATABASE_URL=url)  # fmt: skip
    assert refused.returncode == 1
    assert "refusing to start in production" in refused.stderr
    assert "MAILPROV_BCRYPT_COST" in refused.stderr
    assert not database.exists()  # not migrated, not even created


def test_finding_reads_as_level_setting_message() -> None:
    finding = Finding("error", "MAILPROV_X", "is wrong")
    assert str(finding) == "error: MAILPROV_X: is wrong"


def test_serve_labels_its_listening_socket_tcp() -> None:
    """So asyncio sets TCP_NODELAY on every connection, also with --workers N."""
    import socket

    import uvicorn

    from app.cli import _bind_tcp_socket

    config = uvicorn.Config("app.main:create_app", host="127.0.0.1", port=0, workers=2)
    with _bind_tcp_socket(config) as sock:
        assert sock.proto == socket.IPPROTO_TCP
        assert sock.getsockname()[0] == "127.0.0.1"


def test_serve_limits_malloc_arenas_unless_told(monkeypatch: pytest.MonkeyPatch) -> None:
    from app.cli import _limit_malloc_arenas

    monkeypatch.delenv("MALLOC_ARENA_MAX", raising=False)
    _limit_malloc_arenas()
    assert os.environ["MALLOC_ARENA_MAX"] == "2"  # what the spawned workers start with
    monkeypatch.setenv("MALLOC_ARENA_MAX", "4")
    _limit_malloc_arenas()
    assert os.environ["MALLOC_ARENA_MAX"] == "4"
    monkeypatch.setenv("MALLOC_ARENA_MAX", "lots")
    _limit_malloc_arenas()  # not a number: left alone, no error
