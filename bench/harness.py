"""What the benchmarks share: scratch databases, seeding by SQL, servers run the
way production runs them, wrk, resident memory, and Markdown tables.

Everything stays on 127.0.0.1. Servers are children of the benchmark and are
stopped by it; databases are a temporary directory (SQLite) or one database
called `mailprov_bench` (MariaDB, PostgreSQL), dropped at the end.
"""

import json
import os
import platform
import re
import secrets
import shutil
import sqlite3
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator, Sequence
from contextlib import AbstractContextManager, contextmanager
from dataclasses import dataclass, field
from functools import cache
from importlib.metadata import version
from pathlib import Path

import httpx
from sqlalchemy import Engine, create_engine, text
from sqlalchemy.engine import make_url

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from app.db import create_db_engine
from app.migrate import migrate
from app.security import hash_password
from tests.helpers import make_key
from tests.live import free_port

ROOT = Path(__file__).resolve().parent.parent
MAILPROV = Path(sys.executable).parent / "mailprov"
LOAD_SCRIPT = ROOT / "bench" / "load.lua"
BARE = ROOT / "bench" / "bare.py"
DOMAIN = "bench.example"
PASSWORD = "summersun-bench"
BENCH_DATABASE = "mailprov_bench"
SERVERS = {
    "mariadb": os.environ.get("MAILPROV_BENCH_MARIADB_URL", "mysql+pymysql://root@127.0.0.1:3306/"),
    "postgresql": os.environ.get(
        "MAILPROV_BENCH_POSTGRESQL_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/postgres"
    ),
}


def address(n: int) -> str:
    """The n-th seeded mailbox (1-based); zero-padded, so address order is n order."""
    return f"user{n:07d}@{DOMAIN}"


# ---------------------------------------------------------------- databases


def reachable(backend: str) -> bool:
    if backend == "sqlite":
        return True
    engine = create_engine(SERVERS[backend])
    try:
        with engine.connect():
            return True
    except Exception:
        return False
    finally:
        engine.dispose()


@contextmanager
def bench_database(backend: str) -> Iterator[str]:
    """An empty database of its own on ``backend``; its URL. Gone afterwards."""
    if backend == "sqlite":
        workdir = Path(tempfile.mkdtemp(prefix="mailprov-bench-"))
        try:
            yield f"sqlite:///{workdir / 'bench.db'}"
        finally:
            shutil.rmtree(workdir, ignore_errors=True)
        return
    server = make_url(SERVERS[backend])
    admin = create_engine(server, isolation_level="AUTOCOMMIT")

    def drop() -> None:
        with admin.connect() as conn:
            if backend == "postgresql":
                conn.execute(
                    text(
                        "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                        "WHERE datname = :name AND pid <> pg_backend_pid()"
                    ),
                    {"name": BENCH_DATABASE},
                )
            conn.execute(text(f"DROP DATABASE IF EXISTS {BENCH_DATABASE}"))

    drop()  # left over by a run that was killed
    with admin.connect() as conn:
        charset = " CHARACTER SET utf8mb4" if backend == "mariadb" else ""
        conn.execute(text(f"CREATE DATABASE {BENCH_DATABASE}{charset}"))
    try:
        yield server.set(database=BENCH_DATABASE).render_as_string(hide_password=False)
    finally:
        drop()
        admin.dispose()


def prepare(database_url: str, mailboxes: int) -> str:
    """Migrate, host bench.example with ``mailboxes`` mailboxes; an admin key."""
    engine = create_db_engine(database_url)
    try:
        migrate(engine)
        with engine.begin() as conn:
            conn.execute(
                text("INSERT INTO virtual_domains (name) VALUES (:name)"), {"name": DOMAIN}
            )
        seed_mailboxes(engine, 1, mailboxes)
        return make_key(engine, name="bench")
    finally:
        engine.dispose()


_SEED = {
    # Every backend: rows n = :start..:stop, addresses user<n, 7 digits>@<domain>.
    "sqlite": """
        WITH RECURSIVE seq(n) AS (SELECT :start UNION ALL SELECT n + 1 FROM seq WHERE n < :stop)
        INSERT INTO virtual_users (domain_id, email, password, quota)
        SELECT :domain_id, printf('user%07d@%s', n, :domain), :hash, 0 FROM seq""",
    "mysql": """
        INSERT INTO virtual_users (domain_id, email, password, quota)
        WITH RECURSIVE seq(n) AS (SELECT :start UNION ALL SELECT n + 1 FROM seq WHERE n < :stop)
        SELECT :domain_id, CONCAT('user', LPAD(n, 7, '0'), '@', :domain), :hash, 0 FROM seq""",
    "postgresql": """
        INSERT INTO virtual_users (domain_id, email, password, quota)
        SELECT :domain_id, 'user' || lpad(n::text, 7, '0') || '@' || CAST(:domain AS text),
               :hash, 0
        FROM generate_series(CAST(:start AS integer), CAST(:stop AS integer)) AS n""",
}
_CHUNK = 100_000  # rows per statement: bounded transactions (InnoDB's undo log)


@cache
def seeded_hash() -> str:
    """One real ``{BLF-CRYPT}`` cost-12 hash, the form the API writes, for every row."""
    return hash_password(PASSWORD, 12)


def seed_mailboxes(engine: Engine, start: int, stop: int) -> None:
    """Insert mailboxes ``start``..``stop`` by SQL (not the API), then refresh statistics."""
    if stop < start:
        return
    dialect = engine.dialect.name
    with engine.begin() as conn:
        domain_id = conn.execute(
            text("SELECT id FROM virtual_domains WHERE name = :name"), {"name": DOMAIN}
        ).scalar_one()
    for low in range(start, stop + 1, _CHUNK):
        high = min(stop, low + _CHUNK - 1)
        with engine.begin() as conn:
            if dialect == "mysql":
                conn.exec_driver_sql(f"SET SESSION max_recursive_iterations = {_CHUNK + 10}")
            conn.execute(
                text(_SEED[dialect]),
                {"start": low, "stop": high, "domain_id": domain_id, "domain": DOMAIN,
                 "hash": seeded_hash()},
            )  # fmt: skip
    # What a long-running server has (InnoDB's auto-recalc, autovacuum); SQLite has
    # no statistics unless someone runs ANALYZE, so it gets none here either.
    with engine.begin() as conn:
        if dialect == "mysql":
            conn.exec_driver_sql("ANALYZE TABLE virtual_users")
        elif dialect == "postgresql":
            conn.exec_driver_sql("ANALYZE virtual_users")


def server_version(database_url: str) -> str:
    engine = create_engine(database_url)
    try:
        with engine.connect() as conn:
            if engine.dialect.name == "mysql":
                return str(conn.exec_driver_sql("SELECT VERSION()").scalar_one())
            if engine.dialect.name == "postgresql":
                return str(conn.exec_driver_sql("SHOW server_version").scalar_one())
            return sqlite3.sqlite_version
    finally:
        engine.dispose()


# ---------------------------------------------------------------- servers


def _status_kb(pid: int, field_name: str) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(field_name + ":"):
            return int(line.split()[1])
    return 0


def cpu_seconds(pids: Sequence[int]) -> float:
    """User + system CPU time the processes have used so far (/proc/<pid>/stat)."""
    total = 0
    for pid in pids:
        fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
        total += int(fields[11]) + int(fields[12])  # utime, stime (fields 14 and 15)
    return total / os.sysconf("SC_CLK_TCK")


@dataclass
class Server:
    name: str
    base: str
    process: subprocess.Popen[bytes]
    workers: int

    def worker_pids(self) -> list[int]:
        """uvicorn's worker processes: with one worker, the server process itself;
        with more, the spawned children (not multiprocessing's resource tracker)."""
        if self.workers == 1:
            return [self.process.pid]
        pids = []
        for entry in Path("/proc").iterdir():
            if not entry.name.isdigit():
                continue
            try:
                stat = (entry / "stat").read_text()
                cmdline = (entry / "cmdline").read_bytes()
            except OSError:
                continue
            ppid = int(stat.rpartition(")")[2].split()[1])
            if ppid == self.process.pid and b"spawn_main" in cmdline:
                pids.append(int(entry.name))
        return sorted(pids)

    def rss_mb(self) -> list[float]:
        """VmRSS of each worker, in MB (10^6 bytes)."""
        return [_status_kb(pid, "VmRSS") * 1024 / 1e6 for pid in self.worker_pids()]

    def cpu_seconds(self) -> float:
        return cpu_seconds(self.worker_pids())

    def peak_mb(self) -> list[float]:
        """VmHWM (the highest VmRSS since start) of each worker, in MB."""
        return [_status_kb(pid, "VmHWM") * 1024 / 1e6 for pid in self.worker_pids()]


@contextmanager
def _serve(
    name: str, command: list[str], port: int, ready: str, workers: int, env: dict[str, str]
) -> Iterator[Server]:
    with tempfile.TemporaryFile() as log:
        # A session of its own: should the server not stop on SIGTERM, its whole
        # group (and nothing else) is killed.
        process = subprocess.Popen(
            command, cwd=ROOT, env=os.environ | env, stdout=log, stderr=subprocess.STDOUT,
            start_new_session=True,
        )  # fmt: skip
        server = Server(name, f"http://127.0.0.1:{port}", process, workers)
        try:
            deadline = time.monotonic() + 60
            while True:
                if process.poll() is not None:
                    log.seek(0)
                    output = log.read().decode(errors="replace")
                    raise RuntimeError(f"{name} exited with {process.returncode}:\n{output}")
                try:
                    up = httpx.get(server.base + ready, timeout=1).status_code == 200
                except httpx.TransportError:
                    up = False
                if up and len(server.worker_pids()) == workers:
                    break
                if time.monotonic() > deadline:
                    raise RuntimeError(f"{name} did not become ready within 60 s")
                time.sleep(0.1)
            yield server
        finally:
            process.terminate()
            try:
                process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                os.killpg(process.pid, 9)
                process.wait()


# How both apps log: mailprov's default level (info, so its access log is written, one
# JSON line per request as in the image), into a temporary file.
LOG_LEVEL = "info"


def serve_mailprov(database_url: str, workers: int, **env: str) -> AbstractContextManager[Server]:
    """`mailprov serve --workers N`, as deployed: schema migrated before, info-level
    JSON logs with the access log; ``env`` adds to the environment (MALLOC_ARENA_MAX)."""
    port = free_port()
    command = [str(MAILPROV), "serve", "--no-migrate", "--host", "127.0.0.1", "--port",
               str(port), "--workers", str(workers), "--log-level", LOG_LEVEL]  # fmt: skip
    environment = {"MAILPROV_DATABASE_URL": database_url, "MAILPROV_LOG_FORMAT": "json"} | env
    return _serve("mailprov", command, port, "/ready", workers, environment)


def serve_bare(workers: int, **env: str) -> AbstractContextManager[Server]:
    """bench/bare.py, served by the same uvicorn.run as `mailprov serve` (same
    workers, same IPPROTO_TCP socket from app.cli, no uvicorn access log)."""
    port = free_port()
    command = [sys.executable, str(BARE), "--host", "127.0.0.1", "--port", str(port),
               "--workers", str(workers), "--log-level", LOG_LEVEL]  # fmt: skip
    return _serve("bare", command, port, "/bare/mailboxes/" + address(1), workers, env)


@dataclass
class MemorySampler:
    """Samples the VmRSS of servers' workers in the background; keeps the highest."""

    servers: Sequence[Server]
    interval: float = 0.2
    highest: dict[str, float] = field(default_factory=dict)
    _stop: threading.Event = field(default_factory=threading.Event)

    def __enter__(self) -> "MemorySampler":
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self._stop.set()
        self._thread.join()

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            for server in self.servers:
                try:
                    rss = max(server.rss_mb(), default=0.0)
                except (OSError, ValueError):
                    continue
                self.highest[server.name] = max(self.highest.get(server.name, 0.0), rss)


# ---------------------------------------------------------------- wrk


def ensure_wrk() -> str:
    """wrk from Debian; installed here when we may, else say how."""
    found = shutil.which("wrk")
    if found:
        return found
    if os.geteuid() == 0 and shutil.which("apt-get"):
        print("bench: installing wrk (apt-get install wrk)", file=sys.stderr)
        subprocess.run(["apt-get", "update", "-qq"], check=True, stdout=subprocess.DEVNULL)
        subprocess.run(
            ["apt-get", "install", "-y", "-qq", "wrk"], check=True, stdout=subprocess.DEVNULL,
            env=os.environ | {"DEBIAN_FRONTEND": "noninteractive"},
        )  # fmt: skip
        found = shutil.which("wrk")
    if not found:
        sys.exit(
            "bench: wrk is needed: apt-get install wrk (Debian, Ubuntu) or build it from source"
        )
    return found


def wrk_version() -> str:
    result = subprocess.run([ensure_wrk(), "--version"], capture_output=True, text=True)
    return (result.stdout or result.stderr).split()[1]


@dataclass
class Load:
    """One wrk run."""

    requests: int
    seconds: float
    p50_ms: float
    p90_ms: float
    p99_ms: float
    errors: int
    cpu_seconds: float = 0.0  # the server's workers' CPU time during the run, if measured

    @property
    def rate(self) -> float:
        return self.requests / self.seconds

    @property
    def cpu_ms(self) -> float:
        """CPU time per request, in ms: what a request costs, whatever else the machine does."""
        return self.cpu_seconds * 1000 / max(1, self.requests)


def wrk(
    server: Server,
    path: str,
    *,
    seconds: float,
    connections: int,
    mode: str = "get",
    key: str | None = None,
    rotate: int = 1,
) -> Load:
    """Closed-loop load: ``connections`` keep-alive connections from one wrk thread
    (on two cores, a second wrk thread would only take CPU from the server)."""
    env = os.environ | {
        "BENCH_MODE": mode,
        "BENCH_PATH": path,
        "BENCH_ROTATE": str(rotate),
        "BENCH_KEY": key or "",
        "BENCH_RUN": secrets.token_hex(4),
    }
    command = [ensure_wrk(), "-t1", f"-c{connections}", f"-d{max(1, round(seconds))}s",
               "--timeout", "60s", "-s", str(LOAD_SCRIPT), server.base + "/"]  # fmt: skip
    cpu_before = server.cpu_seconds()
    result = subprocess.run(command, env=env, capture_output=True, text=True, timeout=seconds + 90)
    cpu = server.cpu_seconds() - cpu_before
    for line in result.stdout.splitlines():
        if line.startswith("BENCH_RESULT "):
            raw = json.loads(line.removeprefix("BENCH_RESULT "))
            break
    else:
        raise RuntimeError(f"wrk gave no result:\n{result.stdout}\n{result.stderr}")
    errors = sum(v for k, v in raw.items() if k.startswith("errors_"))
    return Load(
        requests=raw["requests"],
        seconds=raw["duration_us"] / 1e6,
        p50_ms=raw["p50_us"] / 1000,
        p90_ms=raw["p90_us"] / 1000,
        p99_ms=raw["p99_us"] / 1000,
        errors=errors,
        cpu_seconds=cpu,
    )


# ---------------------------------------------------------------- reporting


def table(header: Sequence[str], rows: Sequence[Sequence[object]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(str(cell) for cell in row) + " |" for row in rows]
    return "\n".join(lines)


def verdict(ok: bool) -> str:
    return "pass" if ok else "**miss**"


def database_version(database_url: str) -> str:
    """E.g. "MariaDB 10.11.19": which server a result was measured on."""
    backend = make_url(database_url).get_backend_name()
    name = {"sqlite": "SQLite", "mysql": "MariaDB", "postgresql": "PostgreSQL"}[backend]
    number = re.match(r"[0-9.]+", server_version(database_url))
    return f"{name} {number.group() if number else '?'}"


def versions(databases: Sequence[str] = ()) -> str:
    """One line saying what ran: enough to compare a later run with this one."""
    cpu = "unknown CPU"
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            cpu = line.split(":", 1)[1].strip()
            break
    parts = [
        time.strftime("%Y-%m-%d %H:%M %Z"),
        f"{cpu}, {os.cpu_count()} cores, Linux {platform.release()}",
        f"Python {platform.python_version()}",
        f"uvicorn {version('uvicorn')} (h11, asyncio)",
        *(f"{name} {version(name)}" for name in ("FastAPI", "Starlette", "pydantic")),
        *(f"{name} {version(name)}" for name in ("SQLAlchemy", "bcrypt", "libpass")),
        f"wrk {wrk_version()}",
        *databases,
    ]
    return "; ".join(parts)
