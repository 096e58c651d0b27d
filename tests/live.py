"""A real `mailprov serve` (uvicorn) in a subprocess, for tests whose behaviour
depends on real HTTP."""

import os
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import IO

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
    process: subprocess.Popen[bytes]  # `mailprov serve` itself, e.g. to send it SIGTERM
    log: IO[bytes]  # its stdout and stderr

    def base_for(self, index: int) -> str:
        """Where request ``index`` of a race goes: one server here (see tests/galera)."""
        return self.base

    def output(self) -> str:
        """What the server has logged so far (pread: the server shares the file offset)."""
        fd = self.log.fileno()
        return os.pread(fd, os.fstat(fd).st_size, 0).decode(errors="replace")


@contextmanager
def live_server(
    database_url: str, *, workers: int = 1, log_level: str = "warning", **env: str
) -> Iterator[Live]:
    # Migrate and make the first admin key before the server starts: `serve` then
    # finds the schema at head, and no two processes migrate at once.
    engine = create_db_engine(database_url)
    try:
        migrate(engine)
        key = make_key(engine, name="live-admin")
    finally:
        engine.dispose()
    port = free_port()
    environment = (
        os.environ
        | {
            "MAILPROV_DATABASE_URL": database_url,
            "MAILPROV_BCRYPT_COST": "4",
        }
        | env
    )
    command = [str(MAILPROV), "serve", "--host", "127.0.0.1", "--port", str(port),
               "--workers", str(workers), "--log-level", log_level]  # fmt: skip
    # A file, not a pipe: a server that logs a lot must never block on a full pipe.
    with tempfile.TemporaryFile() as log:
        process = subprocess.Popen(
            command, cwd=ROOT, env=environment, stdout=log, stderr=subprocess.STDOUT
        )
        base = f"http://127.0.0.1:{port}"
        try:
            deadline = time.monotonic() + 30
            while True:
                if process.poll() is not None:
                    log.seek(0)
                    output = log.read().decode(errors="replace")
                    raise RuntimeError(
                        f"mailprov serve exited with {process.returncode}:\n{output}"
                    )
                try:
                    if httpx.get(base + "/ready", timeout=1).status_code == 200:
                        break
                except httpx.TransportError:
                    pass
                if time.monotonic() > deadline:
                    raise RuntimeError("mailprov serve did not become ready within 30 s")
                time.sleep(0.1)
            yield Live(base, {"Authorization": f"Bearer {key}"}, process, log)
        finally:
            process.terminate()
            try:
                process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
