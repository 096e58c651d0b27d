"""A real `mailprov serve` (uvicorn) in a subprocess, for tests whose behaviour
depends on real HTTP."""

import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import httpx

from app.db import create_db_engine
from app.migrate import migrate
from tests.helpers import make_key

ROOT = Path(__file__).resolve().parent.parent
MAILPROV = Path(sys.executable).parent / "mailprov"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@dataclass
class Live:
    base: str  # e.g. http://127.0.0.1:43123
    headers: dict[str, str]  # what every API call must send (authentication)


@contextmanager
def live_server(database_url: str, *, workers: int = 1, **env: str) -> Iterator[Live]:
    port = free_port()
    environment = (
        os.environ
        | {
            "MAILPROV_DATABASE_URL": database_url,
            "MAILPROV_BCRYPT_COST": "4",
        }
        | env
    )
    process = subprocess.Popen(
        [
            str(MAILPROV),
            "serve",
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
            "--log-level",
            "warning",
        ],
        cwd=ROOT,
        env=environment,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )
    base = f"http://127.0.0.1:{port}"
    # Migrate here (serve would too) so that the first admin key can be made up front.
    engine = create_db_engine(database_url)
    try:
        migrate(engine)
        key = make_key(engine, name="live-admin")
    finally:
        engine.dispose()
    try:
        deadline = time.monotonic() + 30
        while True:
            if process.poll() is not None:
                output = process.stdout.read().decode() if process.stdout else ""
                raise RuntimeError(f"mailprov serve exited with {process.returncode}:\n{output}")
            try:
                if httpx.get(base + "/ready", timeout=1).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            if time.monotonic() > deadline:
                raise RuntimeError("mailprov serve did not become ready within 30 s")
            time.sleep(0.1)
        yield Live(base=base, headers={"Authorization": f"Bearer {key}"})
    finally:
        process.terminate()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
        if process.stdout:
            process.stdout.close()
