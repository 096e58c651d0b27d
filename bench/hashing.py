"""Hashing: mailbox creations per second through the API beside raw bcrypt
hashes per second at the same cost, on all cores, in the same run.

    .venv/bin/python bench/hashing.py                    # ~1 to 2.5 min
    .venv/bin/python bench/hashing.py --quick

Creating a mailbox hashes its password with bcrypt (MAILPROV_BCRYPT_COST,
default 12), so bcrypt sets the ceiling. Three ways to make N hashes, each with
as many processes as cores, in alternating rounds (best of each):

- raw bcrypt        bcrypt.hashpw in a pool of processes, one hash per task
- hash_password     the same through app.security (libpass, {BLF-CRYPT}$2y$)
- POST /mailboxes   `mailprov serve --workers <cores>`, N creates from an httpx
                    client with 2 requests in flight per worker

The ratio API/raw is what mailprov's own work (HTTP, key, SQL, audit) costs on
top of bcrypt. Target: >= 90 % of raw bcrypt.

Loopback only; bounded by --creates per round. SQLite in a temporary directory
(bcrypt dominates; --backend mariadb to check that it does there too).
"""

import argparse
import asyncio
import multiprocessing
import multiprocessing.pool
import os
import secrets
import sys
import time
from collections.abc import Callable
from pathlib import Path

import bcrypt
import httpx

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from app.security import hash_password
from bench.harness import (
    DOMAIN,
    PASSWORD,
    Server,
    bench_database,
    cpu_seconds,
    database_version,
    prepare,
    serve_mailprov,
    table,
    verdict,
    versions,
)

TARGET = 0.90


def raw_bcrypt(cost: int) -> None:
    bcrypt.hashpw(PASSWORD.encode(), bcrypt.gensalt(cost))


def app_hash(cost: int) -> None:
    hash_password(PASSWORD, cost)


def in_pool(
    pool: multiprocessing.pool.Pool, work: Callable[[int], None], n: int, cost: int
) -> tuple[float, float]:
    """Seconds for ``n`` hashes, one task each, on the pool's processes; their CPU seconds."""
    pids = [process.pid for process in getattr(pool, "_pool")]  # noqa: B009
    cpu = cpu_seconds(pids)
    start = time.perf_counter()
    for _ in pool.imap_unordered(work, [cost] * n, chunksize=1):
        pass
    return time.perf_counter() - start, cpu_seconds(pids) - cpu


def through_api(server: Server, key: str, n: int, concurrency: int) -> tuple[float, float]:
    """Seconds for ``n`` POST /mailboxes; the CPU seconds of the server's workers."""
    cpu = server.cpu_seconds()
    seconds = asyncio.run(creates(server.base, key, n, concurrency))
    return seconds, server.cpu_seconds() - cpu


async def creates(base: str, key: str, n: int, concurrency: int) -> float:
    """Seconds for ``n`` POST /mailboxes, ``concurrency`` in flight."""
    run = secrets.token_hex(4)
    gate = asyncio.Semaphore(concurrency)
    limits = httpx.Limits(max_connections=concurrency)
    headers = {"Authorization": f"Bearer {key}"}
    async with httpx.AsyncClient(
        base_url=base, headers=headers, limits=limits, timeout=120
    ) as client:

        async def one(i: int) -> None:
            async with gate:
                body = {"address": f"h-{run}-{i}@{DOMAIN}", "password": PASSWORD}
                response = await client.post("/mailboxes", json=body)
                assert response.status_code == 201, response.text

        start = time.perf_counter()
        await asyncio.gather(*(one(i) for i in range(n)))
        return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--cost", type=int, default=12, help="bcrypt cost (the default is 12)")
    parser.add_argument("--creates", type=int, default=60, help="hashes and creates per round")
    parser.add_argument("--rounds", type=int, default=2, help="alternating rounds; best of each")
    parser.add_argument("--workers", type=int, default=os.cpu_count() or 1,
                        help="uvicorn workers and bcrypt processes (default: cores)")  # fmt: skip
    parser.add_argument("--concurrency", type=int, default=0,
                        help="creates in flight (default: 2 per worker)")  # fmt: skip
    parser.add_argument("--backend", default="sqlite", choices=["sqlite", "mariadb", "postgresql"])
    parser.add_argument("--quick", action="store_true", help="20 creates, one round")
    args = parser.parse_args()
    if args.quick:
        args.creates, args.rounds = 20, 1
    concurrency = args.concurrency or 2 * args.workers

    # Per path: (wall seconds, CPU seconds) of each round.
    runs: dict[str, list[tuple[float, float]]] = {
        "raw bcrypt": [], "hash_password": [], "POST /mailboxes": []
    }  # fmt: skip
    # fork: the pool's processes start with bcrypt and app.security already imported.
    with multiprocessing.get_context("fork").Pool(args.workers) as pool, bench_database(
        args.backend
    ) as url:  # fmt: skip
        database = database_version(url)
        key = prepare(url, 0)
        pool.map(raw_bcrypt, [4] * args.workers)
        pool.map(app_hash, [4] * args.workers)
        with serve_mailprov(url, args.workers, MAILPROV_BCRYPT_COST=str(args.cost)) as api:
            through_api(api, key, 2 * args.workers, concurrency)  # warm-up
            for _ in range(args.rounds):
                runs["raw bcrypt"].append(in_pool(pool, raw_bcrypt, args.creates, args.cost))
                runs["hash_password"].append(in_pool(pool, app_hash, args.creates, args.cost))
                runs["POST /mailboxes"].append(through_api(api, key, args.creates, concurrency))
    # Wall clock: hashes per second, best round. CPU: hashes per CPU-second of the
    # processes doing the work, which other load on the machine hardly moves.
    rates = {name: args.creates / min(w for w, _ in r) for name, r in runs.items()}
    per_cpu = {name: args.creates / min(c for _, c in r) for name, r in runs.items()}

    print(f"# Hashing ({time.strftime('%Y-%m-%d')})\n")
    print(versions([database]))
    print(
        f"\nbcrypt cost {args.cost}; {args.creates} per round, {args.rounds} alternating "
        f"rounds, best of each; {args.workers} processes / uvicorn workers "
        f"(`mailprov serve --workers {args.workers}`), {concurrency} creates in flight. "
        "CPU: user + system time of the pool's processes or of the server's workers.\n"
    )
    rows = []
    for name in runs:
        ratio = rates[name] / rates["raw bcrypt"]
        cpu_ratio = per_cpu[name] / per_cpu["raw bcrypt"]
        cpu_ms = 1000 / per_cpu[name]
        rows.append([name, f"{rates[name]:.2f}", " / ".join(f"{w:.1f}" for w, _ in runs[name]),
                     f"{cpu_ms:.0f}" if cpu_ms >= 10 else f"{cpu_ms:.1f}", f"{ratio:.2f}",
                     f"{cpu_ratio:.2f}",
                     verdict(ratio >= TARGET) if name == "POST /mailboxes" else "—"])  # fmt: skip
    print(
        table(
            ["path", "per second", "round times (s)", "CPU ms each", "of raw bcrypt",
             "of raw bcrypt, by CPU", "target >= 0.90"],
            rows,
        )
    )  # fmt: skip


if __name__ == "__main__":
    main()
