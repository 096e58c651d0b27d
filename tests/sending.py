"""What the /send tests share: an app that relays to a test submission server
(tests/smtpd.py) and a message that authenticates there. Apart from helpers.py
because the server's module imports that one."""

from fastapi import FastAPI

from app.config import Settings
from app.main import create_app
from tests.smtpd import PASSWORD, USERNAME, SubmissionServer

CREDS = {"username": USERNAME, "password": PASSWORD}


def send_app(settings: Settings, server: SubmissionServer, **overrides: object) -> FastAPI:
    values: dict[str, object] = {
        "SUBMISSION_HOST": server.host,
        "SUBMISSION_PORT": server.port,
        "SUBMISSION_TLS": "implicit" if server.tls == "implicit" else "starttls",
        "SUBMISSION_CA_FILE": server.ca_file,
        "SUBMISSION_TIMEOUT": 2,
        "SUBMISSION_CONNECT_TIMEOUT": 2,
    }
    values.update(overrides)
    return create_app(settings.model_copy(update=values))


def message(**extra: object) -> dict[str, object]:
    body: dict[str, object] = {
        "from": {"address": "john@example.org", "name": "John Doe"},
        "to": ["lisa@ext.net"],
        "subject": "Hello",
        "text": "Hi Lisa",
        "credentials": CREDS,
    }
    body.update(extra)
    return body
