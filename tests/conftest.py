import logging
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient
from sqlalchemy import Engine, text

from app.config import Settings
from app.db import create_db_engine
from app.main import create_app
from app.migrate import migrate
from tests.backends import BACKEND, scratch_database

TEST_COST = 4  # bcrypt's minimum: hashing speed is not what these tests measure


def pytest_report_header() -> str:
    return f"mailprov backend: {BACKEND}"


@pytest.fixture(scope="session")
def database_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """One migrated database for the whole session; tests empty it after use."""
    with scratch_database(tmp_path_factory.mktemp("db")) as url:
        engine = create_db_engine(url)
        migrate(engine)
        engine.dispose()
        yield url


@pytest.fixture
def fresh_database_url(tmp_path: Path) -> Iterator[str]:
    """An empty, unmigrated database of its own."""
    with scratch_database(tmp_path) as url:
        yield url


@pytest.fixture(scope="session")
def engine(database_url: str) -> Iterator[Engine]:
    engine = create_db_engine(database_url)
    yield engine
    engine.dispose()


def _empty(engine: Engine) -> None:
    with engine.begin() as conn:
        for table in ("virtual_aliases", "virtual_users", "virtual_domains"):
            conn.execute(text(f"DELETE FROM {table}"))


@pytest.fixture
def settings(database_url: str) -> Settings:
    return Settings(DATABASE_URL=database_url, BCRYPT_COST=TEST_COST)


@pytest.fixture
def app(settings: Settings, engine: Engine) -> Iterator[FastAPI]:
    app = create_app(settings)
    yield app
    app.state.engine.dispose()
    _empty(engine)


@pytest.fixture
def client(app: FastAPI) -> Iterator[TestClient]:
    with TestClient(app) as client:
        yield client


@contextmanager
def api_client(settings: Settings) -> Iterator[TestClient]:
    """A TestClient on a new app for these settings, sending what the API requires."""
    app = create_app(settings)
    try:
        with TestClient(app) as client:
            yield client
    finally:
        app.state.engine.dispose()


def sql(engine: Engine, statement: str, **params: Any) -> list[tuple[Any, ...]]:
    """Run one statement the way Postfix or Dovecot would, and return its rows."""
    with engine.connect() as conn:
        return [tuple(row) for row in conn.execute(text(statement), params)]


@pytest.fixture
def captured_logs(caplog: pytest.LogCaptureFixture) -> pytest.LogCaptureFixture:
    caplog.set_level(logging.DEBUG)
    return caplog
