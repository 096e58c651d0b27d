"""Throughput and latency with wrk: four mailprov requests, each beside a bare
FastAPI endpoint of the same shape served the same way, in the same run.

    .venv/bin/python bench/throughput.py                 # ~8 min
    .venv/bin/python bench/throughput.py --quick         # ~3 min
    .venv/bin/python bench/throughput.py --backends sqlite --servers 1 --duration 5

For each backend (SQLite, MariaDB) and each way of serving, `mailprov serve`
and `bench/bare.py` run side by side on 127.0.0.1, and wrk loads the
bare one, then mailprov, with the same connections for the same time:

- read a mailbox      GET /mailboxes/{address}           (rotating over the seeded ones)
- list a page         GET /mailboxes?domain=...&limit=50  (the first page of 1 000)
- create an alias     POST /aliases                       (unique source per request)
- create a mailbox    POST /mailboxes                     (bcrypt at the default cost, 12)

Ways of serving (--servers): `N` is `mailprov serve --workers N` beside
`bench/bare.py --workers N` (the same uvicorn.run and listening socket), in the
environment the script runs in; `N+arena` the same with MALLOC_ARENA_MAX=2, as
the Docker image sets it. mailprov logs at its default level (info: the access
log, JSON) into a temporary file.

The ratio mailprov/bare is what the run measures: both see the same machine
within seconds of each other. Beside req/s, the CPU time the server's workers
used per request (/proc/<pid>/stat): what a request costs whatever else the
machine is doing. Target: reads >= 60 % of the bare endpoint's req/s. Creates
of mailboxes are bound by bcrypt; bench/hashing.py holds them to raw bcrypt.

Memory: VmRSS of each uvicorn worker (/proc/<pid>/status) when idle after a
warm-up, the highest seen while wrk runs, and VmHWM. Target: <= 120 MB per worker.

Loopback only; bounded by --duration per wrk run. The database is seeded by SQL
with 1 000 mailboxes; SQLite lives in a temporary directory, MariaDB in a
database `mailprov_bench` that is dropped at the end.
"""

import argparse
import sys
import time
from dataclasses import dataclass
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.harness import (
    Load,
    MemorySampler,
    Server,
    bench_database,
    database_version,
    ensure_wrk,
    prepare,
    reachable,
    serve_bare,
    serve_mailprov,
    table,
    verdict,
    versions,
    wrk,
)

SEEDED = 1000
READ_TARGET = 0.60
RSS_TARGET_MB = 120.0


@dataclass(frozen=True)
class Scenario:
    name: str
    mode: str  # load.lua's BENCH_MODE
    api_path: str
    bare_path: str
    read: bool  # held to the read target


SCENARIOS = [
    Scenario("read a mailbox", "get", "/mailboxes/user%07d@bench.example",
             "/bare/mailboxes/user%07d@bench.example", read=True),
    Scenario("list a page of 50", "get", "/mailboxes?domain=bench.example&limit=50",
             "/bare/mailboxes?domain=bench.example&limit=50", read=True),
    Scenario("create an alias", "alias", "/aliases", "/bare/aliases", read=False),
    Scenario("create a mailbox (cost 12)", "mailbox", "/mailboxes", "/bare/mailboxes", read=False),
]  # fmt: skip
ASYNC_BARE_PATH = "/bare/async/mailboxes/user%07d@bench.example"


@dataclass(frozen=True)
class Serving:
    """How both apps are served: ``2``, or ``2+arena`` (MALLOC_ARENA_MAX=2)."""

    workers: int
    arena: bool

    @classmethod
    def parse(cls, spec: str) -> "Serving":
        workers, _, variant = spec.partition("+")
        if variant not in ("", "arena"):
            raise ValueError(f"unknown server spec {spec!r}")
        return cls(int(workers), variant == "arena")

    @property
    def env(self) -> dict[str, str]:
        return {"MALLOC_ARENA_MAX": "2"} if self.arena else {}

    def __str__(self) -> str:
        return f"{self.workers}" + (", MALLOC_ARENA_MAX=2" if self.arena else "")


@dataclass
class Row:
    backend: str
    serving: Serving
    scenario: Scenario
    api: Load
    bare: Load

    @property
    def ratio(self) -> float:
        return self.api.rate / self.bare.rate

    @property
    def cpu_ratio(self) -> float:
        return self.bare.cpu_ms / self.api.cpu_ms if self.api.cpu_ms else 0.0


@dataclass
class Memory:
    backend: str
    serving: Serving
    server: str
    idle: list[float]
    loaded: float
    peak: list[float]


def measure(
    backend: str, url: str, key: str, serving: Serving, args: argparse.Namespace
) -> tuple[list[Row], list[Memory], Load | None]:
    rows: list[Row] = []
    workers, env = serving.workers, serving.env
    with serve_mailprov(url, workers, **env) as api, serve_bare(workers, **env) as bare:
        servers: list[Server] = [api, bare]
        # Warm-up: every worker imports lazily and fills its pools and caches.
        for server, path, credential in ((api, SCENARIOS[0].api_path, key),
                                         (bare, SCENARIOS[0].bare_path, None)):  # fmt: skip
            wrk(server, path, seconds=args.warmup, connections=args.connections,
                key=credential, rotate=SEEDED)  # fmt: skip
        time.sleep(1)
        idle = {s.name: s.rss_mb() for s in servers}
        with MemorySampler(servers) as sampler:
            for scenario in SCENARIOS:
                connections = args.connections
                if scenario.mode == "mailbox":
                    connections = args.create_connections
                results = {}
                # Bare first, then mailprov straight after: the pair sees the same machine.
                for server, path, credential in ((bare, scenario.bare_path, None),
                                                 (api, scenario.api_path, key)):  # fmt: skip
                    results[server.name] = wrk(
                        server, path, seconds=args.duration, connections=connections,
                        mode=scenario.mode, key=credential, rotate=SEEDED,
                    )  # fmt: skip
                row = Row(backend, serving, scenario, results["mailprov"], results["bare"])
                print(
                    f"bench: {backend}, {serving}: {scenario.name}: {row.api.rate:.0f} "
                    f"vs {row.bare.rate:.0f} req/s ({row.ratio:.2f}); CPU "
                    f"{row.api.cpu_ms:.2f} vs {row.bare.cpu_ms:.2f} ms/req",
                    file=sys.stderr,
                )
                rows.append(row)
            async_bare = None
            if args.async_bare:
                # Info: the same bare read from an `async def` route, no threadpool hop.
                async_bare = wrk(bare, ASYNC_BARE_PATH, seconds=args.duration,
                                 connections=args.connections, rotate=SEEDED)  # fmt: skip
        memory = [
            Memory(backend, serving, s.name, idle[s.name], sampler.highest.get(s.name, 0.0),
                   s.peak_mb())
            for s in servers
        ]  # fmt: skip
    return rows, memory, async_bare


def rate(load: Load) -> str:
    """req/s: whole numbers, but keep the few creates per second bcrypt allows readable."""
    return f"{load.rate:.1f}" if load.rate < 10 else f"{load.rate:.0f}"


def share(ratio: float) -> str:
    return f"{ratio:.3f}" if ratio < 0.1 else f"{ratio:.2f}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--backends", default="sqlite,mariadb", help="of sqlite,mariadb,postgresql")
    parser.add_argument(
        "--servers", default="1,2,2+arena", help="worker counts; +arena: MALLOC_ARENA_MAX=2"
    )
    parser.add_argument("--duration", type=float, default=8, help="seconds per wrk run")
    parser.add_argument("--warmup", type=float, default=2, help="seconds of warm-up per server")
    parser.add_argument("--connections", type=int, default=16, help="wrk connections")
    parser.add_argument(
        "--create-connections", type=int, default=4,
        help="wrk connections for mailbox creates (each holds a core for ~0.3 s)",
    )  # fmt: skip
    parser.add_argument("--quick", action="store_true", help="3 s runs, 1 s warm-up")
    args = parser.parse_args()
    if args.quick:
        args.duration, args.warmup = 3, 1
    ensure_wrk()
    backends = [b for b in args.backends.split(",") if b]
    servings = [Serving.parse(s) for s in args.servers.split(",") if s]

    rows: list[Row] = []
    memory: list[Memory] = []
    async_rows: list[tuple[Serving, Load, Load]] = []
    databases: list[str] = []
    for backend in backends:
        if not reachable(backend):
            print(f"bench: SKIPPING {backend}: no server reachable", file=sys.stderr)
            continue
        with bench_database(backend) as url:
            key = prepare(url, SEEDED)
            databases.append(database_version(url))
            for serving in servings:
                # The bare app does not depend on the backend: its async variant runs once.
                args.async_bare = len(databases) == 1
                got, mem, async_bare = measure(backend, url, key, serving, args)
                rows += got
                memory += mem
                if async_bare is not None:
                    async_rows.append((serving, got[0].bare, async_bare))

    print(f"# Throughput and latency ({time.strftime('%Y-%m-%d')})\n")
    print(versions(databases))
    print(
        f"\nwrk -t1, {args.connections} connections ({args.create_connections} for mailbox "
        f"creates), {args.duration:g} s per run after {args.warmup:g} s warm-up; "
        f"{SEEDED} mailboxes seeded. Latency in ms; CPU: ms of the server's workers' CPU "
        "time per request. Ratios: mailprov/bare (req/s) and bare/mailprov (CPU).\n"
    )
    print(
        table(
            ["backend", "workers", "request", "mailprov req/s", "p50", "p99", "CPU",
             "bare req/s", "p50", "p99", "CPU", "ratio req/s", "ratio CPU",
             "target >= 0.60"],
            [[r.backend, r.serving, r.scenario.name, rate(r.api), f"{r.api.p50_ms:.1f}",
              f"{r.api.p99_ms:.1f}", f"{r.api.cpu_ms:.2f}", rate(r.bare),
              f"{r.bare.p50_ms:.1f}", f"{r.bare.p99_ms:.1f}", f"{r.bare.cpu_ms:.2f}",
              share(r.ratio), share(r.cpu_ratio),
              verdict(r.ratio >= READ_TARGET) if r.scenario.read else "—"]
             + ([f"{r.api.errors + r.bare.errors} errors!"] if r.api.errors + r.bare.errors else [])
             for r in rows],
        )
    )  # fmt: skip
    if async_rows:
        print(
            "\nThe bare read as a `def` route (threadpool, like mailprov's) and as `async def`:\n"
        )
        print(
            table(
                ["workers", "def req/s", "def CPU", "async def req/s", "async def CPU"],
                [[s, f"{d.rate:.0f}", f"{d.cpu_ms:.2f}", f"{a.rate:.0f}", f"{a.cpu_ms:.2f}"]
                 for s, d, a in async_rows],
            )
        )  # fmt: skip
    print("\n# Memory per worker (VmRSS, MB)\n")
    print(
        table(
            ["backend", "workers", "server", "idle, each worker", "highest under load",
             "VmHWM, each worker", "target <= 120 MB"],
            [[m.backend, m.serving, m.server, " / ".join(f"{v:.0f}" for v in m.idle),
              f"{m.loaded:.0f}", " / ".join(f"{v:.0f}" for v in m.peak),
              verdict(max(m.peak, default=0) <= RSS_TARGET_MB) if m.server == "mailprov" else "—"]
             for m in memory],
        )
    )  # fmt: skip


if __name__ == "__main__":
    main()
