"""Fixtures. Helpers that tests import live in tests/helpers.py (this module is
pytest's, not one to import)."""

import logging
from collections.abc import Iterator
from pathlib import Path

import pytest
import trustme
from fastapi import FastAPI
from fastapi.testclient import TestClient
from sqlalchemy import Engine

from app.config import Settings
from app.db import create_db_engine
from app.main import create_app
from app.migrate import migrate
from tests.backends import BACKEND, scratch_database
from tests.helpers import TEST_COST, bearer, empty_database, make_key


def pytest_report_header() -> str:
    return f"mailprov backend: {BACKEND}"


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """The e2e suite (it starts the shared mail stack) and the Galera suite (a cluster)
    run only when ``-m`` names them, as scripts/e2e.sh and scripts/galera.sh do: so
    ``pytest`` and the fast loop ``pytest -m "not slow"`` leave them out. (An
    ``-m 'not e2e'`` in addopts would be replaced by any ``-m``.)"""
    for marker in ("e2e", "galera"):
        if marker in config.getoption("markexpr", ""):
            continue
        named = [item for item in items if item.get_closest_marker(marker) is not None]
        if named:
            config.hook.pytest_deselected(items=named)
            items[:] = [item for item in items if item.get_closest_marker(marker) is None]


@pytest.fixture(scope="session")
def database_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """One migrated database for the whole session; tests empty it after use."""
    with scratch_database(tmp_path_factory.mktemp("db")) as url:
        engine = create_db_engine(url)
        migrate(engine)
        engine.dispose()
        yield url


@pytest.fixture(scope="session")
def ca() -> trustme.CA:
    """A private CA for the tests' SMTP servers (tests/smtpd.py)."""
    return trustme.CA()


@pytest.fixture(scope="session")
def ca_file(ca: trustme.CA, tmp_path_factory: pytest.TempPathFactory) -> str:
    path = tmp_path_factory.mktemp("ca") / "ca.pem"
    ca.cert_pem.write_to_path(str(path))
    return str(path)


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


@pytest.fixture
def settings(database_url: str) -> Settings:
    return Settings(DATABASE_URL=database_url, BCRYPT_COST=TEST_COST)


@pytest.fixture
def app(settings: Settings, engine: Engine) -> Iterator[FastAPI]:
    app = create_app(settings)
    yield app
    app.state.engine.dispose()
    empty_database(engine)


@pytest.fixture
def admin_key(app: FastAPI, engine: Engine) -> str:
    return make_key(engine, name="admin")


@pytest.fixture
def client(app: FastAPI, admin_key: str) -> Iterator[TestClient]:
    """An admin's client."""
    with TestClient(app, headers=bearer(admin_key)) as client:
        yield client


@pytest.fixture
def anonymous(app: FastAPI) -> Iterator[TestClient]:
    """A client that sends no key."""
    with TestClient(app) as client:
        yield client


@pytest.fixture
def empty_after(engine: Engine) -> Iterator[None]:
    """Empty the database after a test that writes without the ``app`` fixture."""
    yield
    empty_database(engine)


@pytest.fixture
def captured_logs(caplog: pytest.LogCaptureFixture) -> pytest.LogCaptureFixture:
    caplog.set_level(logging.DEBUG)
    return caplog
