"""The table models and the migrations describe the same schema.

``alembic check`` runs Alembic's own ``env.py`` in a fresh interpreter, as
``alembic revision --autogenerate`` would: it compares the migrated database
with the metadata that ``env.py`` registers and fails on any difference. A
table model that ``env.py`` cannot see would show up as a table to drop; a
model changed without a migration as a column or index to alter.
"""

import os
import subprocess
import sys

import pytest

from app.db import create_db_engine
from app.migrate import migrate
from tests.live import ROOT

CHECK = """
from alembic import command
from alembic.config import Config
config = Config()
config.set_main_option("script_location", "migrations")
command.check(config)
"""


@pytest.mark.slow  # runs alembic
def test_autogenerate_finds_nothing_to_change_after_migrating(fresh_database_url: str) -> None:
    engine = create_db_engine(fresh_database_url)
    try:
        migrate(engine)
    finally:
        engine.dispose()
    env = {**os.environ, "MAILPROV_DATABASE_URL": fresh_database_url}
    result = subprocess.run(
        [sys.executable, "-c", CHECK],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "No new upgrade operations detected" in result.stdout + result.stderr
