"""The ceiling: bare FastAPI endpoints shaped like mailprov's, with no key, no
database, no audit trail and no middleware.

Served the way `mailprov serve` serves mailprov: the same uvicorn.run options,
the same listening socket (app.cli's, labelled IPPROTO_TCP so that every
connection gets TCP_NODELAY with --workers N), no uvicorn access log:

    .venv/bin/python bench/bare.py --workers 2 --port 8001

Routes are plain `def`, like mailprov's, so they pay for the same threadpool hop;
answers and bodies have the fields and sizes of mailprov's. What is left between
this and mailprov is mailprov's own work: the key check, SQL, validation of
names, the audit trail. `/bare/async/...` shows what the threadpool hop costs.
"""

import argparse
import sys
from pathlib import Path

import uvicorn
from fastapi import FastAPI, status
from pydantic import BaseModel, Field

app = FastAPI(title="bare")

DOMAIN = "bench.example"
MAILDIR_ROOT = "/var/vmail"


class MailboxIn(BaseModel):
    address: str = Field(min_length=3, max_length=320)
    password: str = Field(min_length=1, max_length=72)
    quota: int = Field(default=0, ge=0)


class MailboxOut(BaseModel):
    address: str
    domain: str
    quota: int
    maildir: str


class MailboxesPage(BaseModel):
    items: list[MailboxOut]
    total: int
    limit: int
    next_cursor: str | None


class AliasIn(BaseModel):
    source: str = Field(min_length=3, max_length=320)
    destinations: list[str] = Field(min_length=1, max_length=1000)


class AliasOut(BaseModel):
    source: str
    domain: str
    catch_all: bool
    destinations: list[str]


def _mailbox(address: str, quota: int = 0) -> MailboxOut:
    local, _, domain = address.rpartition("@")
    return MailboxOut(
        address=address, domain=domain, quota=quota, maildir=f"{MAILDIR_ROOT}/{domain}/{local}"
    )


@app.get("/bare/mailboxes/{address}")
def read_mailbox(address: str) -> MailboxOut:
    return _mailbox(address)


@app.get("/bare/async/mailboxes/{address}")
async def read_mailbox_async(address: str) -> MailboxOut:
    return _mailbox(address)


@app.get("/bare/mailboxes")
def list_mailboxes(domain: str = DOMAIN, limit: int = 50) -> MailboxesPage:
    items = [_mailbox(f"user{n:07d}@{domain}") for n in range(1, limit + 1)]
    return MailboxesPage(items=items, total=1000, limit=limit, next_cursor="eyJhZnRlciI6ICJ4In0")


@app.post("/bare/mailboxes", status_code=status.HTTP_201_CREATED)
def create_mailbox(body: MailboxIn) -> MailboxOut:
    return _mailbox(body.address.lower(), body.quota)


@app.post("/bare/aliases", status_code=status.HTTP_201_CREATED)
def create_alias(body: AliasIn) -> AliasOut:
    source = body.source.lower()
    return AliasOut(
        source=source,
        domain=source.rpartition("@")[2],
        catch_all=source.startswith("@"),
        destinations=sorted(body.destinations),
    )


def main() -> None:
    parser = argparse.ArgumentParser(description="Serve bench.bare:app as mailprov is served.")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8000)
    parser.add_argument("--workers", type=int, default=1)
    parser.add_argument("--log-level", default="info")
    args = parser.parse_args()
    # The checkout on the path, as for `python -m uvicorn`; the workers inherit it.
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
    from app.cli import _bind_tcp_socket

    uvicorn.Config.bind_socket = _bind_tcp_socket  # type: ignore[method-assign, assignment]
    uvicorn.run(
        "bench.bare:app",
        host=args.host,
        port=args.port,
        workers=args.workers,
        log_level=args.log_level,
        access_log=False,  # as `mailprov serve`, whose access log is its own middleware's
    )


if __name__ == "__main__":
    main()
