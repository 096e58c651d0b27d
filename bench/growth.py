"""Growth: the first, a middle and the last page of mailboxes (with and without
`total`), and a lookup by address, with 1 000, 100 000 and 1 000 000 mailboxes
in one domain.

    .venv/bin/python bench/growth.py                         # ~4 min
    .venv/bin/python bench/growth.py --quick                 # 1k and 100k, ~1 min
    .venv/bin/python bench/growth.py --sizes 1000,1000000 --backends sqlite

Mailboxes are seeded by SQL (a recursive CTE, or generate_series), never
through the API: user0000001@bench.example ... with one real {BLF-CRYPT}
cost-12 hash on every row. The same database grows from one size to the next.

Lists are keyset-paginated: a page starts after the address in its cursor. The
cursor of the page at position k is made the way app/pagination.py makes it,
from the address of row k - 1; each answer is checked to start at row k. Each
page is asked for twice: as is (`total` counted, the default) and with
`total=false` (no count: what a client paging through a large list uses).
Every request is timed from the client on a keep-alive connection (httpx, one
at a time, one uvicorn worker), after a few warm-up requests; the tables give
medians. Beside them, the two statements a page runs, timed straight on the
database: the `total` count and the keyset page itself (with the domain id
looked up first, as app/crud/common.py's of_domain does); on MariaDB also the
EXPLAIN of the middle page.

Target: a page with total=false at the largest size within +-20 % of the same
page at the smallest.

Loopback only; each timing is bounded by --requests and --max-seconds. SQLite
lives in a temporary directory; MariaDB and PostgreSQL in a database
`mailprov_bench`, dropped at the end.
"""

import argparse
import statistics
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import httpx
from sqlalchemy import Engine, text

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from app.db import create_db_engine
from app.pagination import encode_cursor
from bench.harness import (
    DOMAIN,
    address,
    bench_database,
    database_version,
    prepare,
    reachable,
    seed_mailboxes,
    serve_mailprov,
    table,
    verdict,
    versions,
)

LIMIT = 50
TARGET = 0.20
POSITIONS = ("first", "middle", "last")

# What crud.list_mailboxes runs for ?domain=...&limit=50&cursor=..., once the
# domain's id has been looked up (a constant by then, as in app/crud/common.py).
DOMAIN_ID_SQL = text("SELECT id FROM virtual_domains WHERE name = :domain")
COUNT_SQL = text("SELECT count(*) FROM virtual_users WHERE domain_id = :domain_id")
PAGE_SQL = (
    "SELECT id, domain_id, email, password, quota FROM virtual_users "
    "WHERE domain_id = :domain_id AND email > :after ORDER BY email LIMIT :limit"
)


@dataclass
class Timing:
    median_ms: float
    count: int


@dataclass
class Size:
    backend: str
    mailboxes: int
    seconds_to_seed: float
    pages: dict[str, Timing]  # total counted (the default)
    pages_no_total: dict[str, Timing]  # total=false
    lookups: dict[str, Timing]
    sql_count: Timing
    sql_page: Timing
    plan: str = ""  # MariaDB: EXPLAIN of the middle page
    forced: Timing | None = None  # MariaDB: the same with FORCE INDEX
    forced_plan: str = ""


def timed(call: Callable[[], None], requests: int, max_seconds: float, warmup: int = 5) -> Timing:
    """Median time of ``call``: ``requests`` times, or fewer once ``max_seconds`` ran out."""
    for _ in range(warmup):
        call()
    times: list[float] = []
    deadline = time.monotonic() + max_seconds
    while len(times) < requests and (len(times) < 5 or time.monotonic() < deadline):
        start = time.perf_counter()
        call()
        times.append(time.perf_counter() - start)
    return Timing(statistics.median(times) * 1000, len(times))


def page_start(position: str, size: int) -> int:
    """0-based index of the page's first row."""
    return {"first": 0, "middle": size // 2, "last": size - LIMIT}[position]


def read_page(
    client: httpx.Client, size: int, position: str, with_total: bool
) -> Callable[[], None]:
    start = page_start(position, size)
    params = {"domain": DOMAIN, "limit": str(LIMIT)}
    if not with_total:
        params["total"] = "false"
    if start > 0:
        params["cursor"] = encode_cursor(address(start))  # row start - 1 is user<start>

    def call() -> None:
        response = client.get("/mailboxes", params=params)
        assert response.status_code == 200, response.text
        body = response.json()
        assert body["items"][0]["address"] == address(start + 1), body["items"][0]
        assert len(body["items"]) == LIMIT
        assert body["total"] == (size if with_total else None), body["total"]
        assert (body["next_cursor"] is None) == (position == "last")

    return call


def read_mailbox(client: httpx.Client, n: int) -> Callable[[], None]:
    def call() -> None:
        response = client.get(f"/mailboxes/{address(n)}")
        assert response.status_code == 200, response.text

    return call


def statement(engine: Engine, sql: object, **params: object) -> Callable[[], None]:
    def call() -> None:
        with engine.connect() as conn:
            conn.execute(sql, params).all()  # type: ignore[call-overload]

    return call


# MariaDB, for comparison: the keyset page told to range over both index columns.
FORCED_SQL = PAGE_SQL.replace(
    "FROM virtual_users", "FROM virtual_users FORCE INDEX (ix_virtual_users_domain_id_email)"
)


def explain(engine: Engine, sql: str, **params: object) -> str:
    """MariaDB's plan for the keyset page: "type, key, key_len, rows, Extra"."""
    with engine.connect() as conn:
        row = conn.execute(text("EXPLAIN " + sql), params).mappings().one()
    return f"{row['type']}, {row['key']}, key_len {row['key_len']}, rows {row['rows']}, " + str(
        row["Extra"]
    )


def analyze(engine: Engine) -> None:
    """PostgreSQL: what autovacuum does after a bulk insert (an index-only count needs
    the visibility map); the other backends are refreshed by seed_mailboxes."""
    if engine.dialect.name == "postgresql":
        with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
            conn.exec_driver_sql("VACUUM ANALYZE virtual_users")


def measure(backend: str, sizes: list[int], args: argparse.Namespace) -> tuple[list[Size], str]:
    results: list[Size] = []
    with bench_database(backend) as url:
        version = database_version(url)
        key = prepare(url, 0)
        engine = create_db_engine(url)
        try:
            with serve_mailprov(url, 1) as api, httpx.Client(
                base_url=api.base, headers={"Authorization": f"Bearer {key}"}, timeout=60
            ) as client:  # fmt: skip
                seeded = 0
                for size in sizes:
                    start = time.perf_counter()
                    seed_mailboxes(engine, seeded + 1, size)
                    analyze(engine)
                    seeded = size
                    seconds_to_seed = time.perf_counter() - start

                    def run(call: Callable[[], None]) -> Timing:
                        return timed(call, args.requests, args.max_seconds)

                    pages = {p: run(read_page(client, size, p, True)) for p in POSITIONS}
                    bare = {p: run(read_page(client, size, p, False)) for p in POSITIONS}
                    where = {"first": 1, "middle": size // 2, "last": size}
                    lookups = {p: run(read_mailbox(client, n)) for p, n in where.items()}
                    middle = address(page_start("middle", size))
                    with engine.connect() as conn:
                        domain_id = conn.execute(DOMAIN_ID_SQL, {"domain": DOMAIN}).scalar_one()
                    sql_count = run(statement(engine, COUNT_SQL, domain_id=domain_id))
                    keyset = {"domain_id": domain_id, "after": middle, "limit": LIMIT + 1}
                    sql_page = run(statement(engine, text(PAGE_SQL), **keyset))
                    result = Size(backend, size, seconds_to_seed, pages, bare, lookups, sql_count,
                                  sql_page)  # fmt: skip
                    if engine.dialect.name == "mysql":
                        result.plan = explain(engine, PAGE_SQL, **keyset)
                        result.forced = run(statement(engine, text(FORCED_SQL), **keyset))
                        result.forced_plan = explain(engine, FORCED_SQL, **keyset)
                    results.append(result)
                    print(
                        f"bench: {backend} {size}: pages "
                        + " / ".join(f"{t.median_ms:.1f}" for t in pages.values())
                        + " ms; total=false "
                        + " / ".join(f"{t.median_ms:.1f}" for t in bare.values())
                        + f" ms, count {sql_count.median_ms:.1f} ms",
                        file=sys.stderr,
                    )
        finally:
            engine.dispose()
    return results, version


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--backends", default="sqlite,mariadb,postgresql")
    parser.add_argument("--sizes", default="1000,100000,1000000", help="ascending")
    parser.add_argument("--requests", type=int, default=100, help="timed requests per cell")
    parser.add_argument("--max-seconds", type=float, default=3, help="time budget per cell")
    parser.add_argument("--quick", action="store_true", help="1k and 100k, 50 requests")
    args = parser.parse_args()
    if args.quick:
        args.sizes, args.requests = "1000,100000", 50
    sizes = sorted(int(s) for s in args.sizes.split(",") if s)

    results: list[Size] = []
    databases: list[str] = []
    for backend in (b for b in args.backends.split(",") if b):
        if not reachable(backend):
            print(f"bench: SKIPPING {backend}: no server reachable", file=sys.stderr)
            continue
        got, version = measure(backend, sizes, args)
        results += got
        databases.append(version)

    print(f"# Growth ({time.strftime('%Y-%m-%d')})\n")
    print(versions(databases))
    print(
        f"\nOne uvicorn worker; medians in ms of up to {args.requests} sequential requests "
        f"(at most {args.max_seconds:g} s each) on a keep-alive connection; "
        f"pages of {LIMIT} with ?domain=; all mailboxes in that one domain. "
        "Pages as is (total counted) and with total=false.\n"
    )
    print(
        table(
            ["backend", "mailboxes", "seeded in", "first page", "middle page", "last page",
             "first, total=false", "middle, total=false", "last, total=false",
             "lookup first", "lookup middle", "lookup last", "SQL: count(*)",
             "SQL: keyset page"],
            [[r.backend, f"{r.mailboxes:,}", f"{r.seconds_to_seed:.1f} s",
              *(f"{r.pages[p].median_ms:.2f}" for p in POSITIONS),
              *(f"{r.pages_no_total[p].median_ms:.2f}" for p in POSITIONS),
              *(f"{r.lookups[p].median_ms:.2f}" for p in POSITIONS),
              f"{r.sql_count.median_ms:.2f}", f"{r.sql_page.median_ms:.2f}"]
             for r in results],
        )
    )  # fmt: skip
    plans = [[r.backend, f"{r.mailboxes:,}", f"{r.sql_page.median_ms:.2f}", r.plan,
              f"{r.forced.median_ms:.2f}", r.forced_plan]
             for r in results if r.forced]  # fmt: skip
    if plans:
        print(
            "\nMariaDB: the keyset page (middle) without and with FORCE INDEX (the app forces it); "
            "ms, and EXPLAIN's type, key, key_len, rows, Extra:\n"
        )
        print(table(["backend", "mailboxes", "no hint, ms", "plan", "FORCE INDEX, ms", "plan"],
                    plans))  # fmt: skip
    rows = []
    for backend in dict.fromkeys(r.backend for r in results):
        mine = [r for r in results if r.backend == backend]
        small, large = mine[0], mine[-1]
        if small is large:
            continue
        for p in POSITIONS:
            for label, of in (("total=false", "pages_no_total"), ("total counted", "pages")):
                before = getattr(small, of)[p].median_ms
                after = getattr(large, of)[p].median_ms
                change = after / before - 1
                judged = verdict(abs(change) <= TARGET) if of == "pages_no_total" else "—"
                rows.append([backend, f"{p} page", label, f"{before:.2f}", f"{after:.2f}",
                             f"{change:+.0%}", judged])  # fmt: skip
    if rows:
        small_n, large_n = f"{sizes[0]:,}", f"{sizes[-1]:,}"
        print(
            f"\nTarget: a page with total=false at {large_n} within +-20 % of the same page "
            f"at {small_n} (the default, total counted, shown for comparison).\n"
        )
        print(
            table(
                ["backend", "page", "total", f"{small_n} ms", f"{large_n} ms", "change", "target"],
                rows,
            )
        )


if __name__ == "__main__":
    main()
