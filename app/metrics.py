"""Prometheus metrics, served at GET /metrics.

Several worker processes (``mailprov serve --workers N``) each count on their
own; with ``PROMETHEUS_MULTIPROC_DIR`` set (``serve`` sets it whenever it runs
more than one worker) every process writes its counts there and a scrape, which
reaches one worker, adds up all of them. Several copies on several hosts are
several scrape targets, as Prometheus expects.

Labels stay few: the route *template* (``/mailboxes/{address}``), never a path
with an address in it; send outcomes are problem codes.
"""

import os

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    REGISTRY,
    CollectorRegistry,
    Counter,
    Histogram,
    generate_latest,
    multiprocess,
)

from app import __version__

MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"
CONTENT_TYPE = CONTENT_TYPE_LATEST

REQUESTS = Counter(
    "mailprov_http_requests",
    "HTTP requests answered, by route template and status.",
    ["method", "route", "status"],
)
LATENCY = Histogram(
    "mailprov_http_request_duration_seconds",
    "Time from request to the end of the answer, by route template.",
    ["method", "route"],
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60),
)
SENDS = Counter(
    "mailprov_sends",
    "POST /send outcomes: queued, replayed, or the problem code of the refusal.",
    ["outcome"],
)
DATABASE_ERRORS = Counter(
    "mailprov_database_errors",
    "Database failures answered 503: unavailable, pool-exhausted, error.",
    ["kind"],
)
TRANSACTION_RETRIES = Counter(
    "mailprov_transaction_retries",
    "Transactions run again after the database refused them for a concurrent one "
    "(Galera certification failure, deadlock), by reason.",
    ["reason"],
)
AUTH_FAILURES = Counter(
    "mailprov_auth_failures",
    "Requests refused by authentication: missing, invalid, blocked (429).",
    ["reason"],
)
BUILD = Counter("mailprov_build", "Build information (always 0).", ["version"])
BUILD.labels(__version__)  # the labelled series exists from the start


def exposition() -> bytes:
    """The text format, summed over every worker when multiprocess mode is on."""
    if os.environ.get(MULTIPROC_ENV):
        registry = CollectorRegistry()
        multiprocess.MultiProcessCollector(registry)  # type: ignore[no-untyped-call]
        return generate_latest(registry)
    return generate_latest(REGISTRY)
