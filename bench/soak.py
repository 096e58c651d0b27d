"""Soak: thousands of mixed requests against a real two-worker `mailprov serve`,
then a check that what the API answered is what the database holds.

    .venv/bin/python bench/soak.py --requests 5000
    .venv/bin/python bench/soak.py --database-url mysql+pymysql://root@127.0.0.1:3306/mailprov_soak

Loopback only; bounded by --requests and --max-seconds. 16 HTTP clients at once
create, read, list, change and delete domains, mailboxes and aliases, send mail
through the tests' SMTP submission server (in this process), read /health,
/ready and /audit, and make deliberate mistakes whose 4xx answer is known (400,
401, 403, 404, 409, 415, 422). A request only touches things no other request in
flight touches, so a model of what exists stays exact and every answer can be
checked against it.

errors = 5xx, any status not expected for that operation, transport errors, and
each mismatch found at the end: the model against GET of everything, against the
tables, messages the SMTP server received against the 200s of /send, and audit
rows against the successful changes. Exit status 1 if errors > 0. A 429 from
/send (the per-key send rate limit, set high here) is expected but reported.

SQLite (a temporary file) by default. --database-url takes a MariaDB or
PostgreSQL URL whose database (its name must contain "soak") is dropped and
created for the run and dropped afterwards.
"""

import argparse
import asyncio
import itertools
import os
import platform
import random
import sys
import tempfile
import time
import warnings
from collections import Counter, defaultdict
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import trustme
from sqlalchemy import create_engine, text
from sqlalchemy.engine import make_url

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from app.db import create_db_engine
from tests.live import Live, live_server
from tests.smtpd import PASSWORD, USERNAME, SubmissionServer, submission_server

EXT = "elsewhere.example"  # not hosted: alias destinations there need not exist
SCOPED = "scoped.soak.example"  # the one domain of a domain-scoped key, for 403s
QUOTAS = [0, 1 << 20, 1 << 30]
CREDENTIALS = {"username": USERNAME, "password": PASSWORD}
SETTINGS = {
    "MAILPROV_BCRYPT_COST": "4",  # hashing speed is not what a soak is about
    "MAILPROV_SEND_RATE_LIMIT": "100000",  # the limit is on, but never the point
    "MAILPROV_AUTH_FAILURE_LIMIT": "100000",  # 401s on purpose must not block the client
}

Done = Callable[[httpx.Response], None]


def domain_of(address: str) -> str:
    return address.rpartition("@")[2]


@dataclass
class Call:
    """One request, the statuses it may get, and what a 2xx changes in the model."""

    op: str
    method: str
    path: str
    expect: tuple[int, ...]
    json: Any = None
    content: bytes | None = None
    headers: dict[str, str] | None = None
    hold: tuple[str, ...] = ()  # names no other request may touch meanwhile
    domains: tuple[str, ...] = ()  # domains that must not be deleted meanwhile
    done: Done | None = None
    audited: str | None = None  # the operationId its success leaves on the audit trail


@dataclass
class Stats:
    latencies: dict[str, list[float]] = field(default_factory=lambda: defaultdict(list))
    statuses: dict[str, Counter[str]] = field(default_factory=lambda: defaultdict(Counter))
    unexpected: dict[str, list[str]] = field(default_factory=lambda: defaultdict(list))
    errors: int = 0
    mismatches: list[str] = field(default_factory=list)
    audited: Counter[str] = field(default_factory=Counter)
    message_ids: set[str] = field(default_factory=set)


class Model:
    """What exists, as the answers so far say; and the requests to make next."""

    def __init__(self, rng: random.Random, stats: Stats) -> None:
        self.rng = rng
        self.stats = stats
        self.n = itertools.count(1)
        self.work: list[str] = []  # domains that hold mailboxes and aliases
        self.scratch: list[str] = []  # empty domains, made to be deleted
        self.retiring: set[str] = set()  # being deleted with everything in them
        self.mailboxes: dict[str, int] = {}  # address -> quota
        self.aliases: dict[str, set[str]] = {}  # source -> destinations
        self.busy: set[str] = set()
        self.users: Counter[str] = Counter()  # requests in flight per domain
        self.tainted: set[str] = set()  # fate unknown after a transport error
        self.scoped_key = ""

    # -- picking what no request in flight touches

    def free(self, name: str) -> bool:
        return not {name, domain_of(name)} & (self.busy | self.retiring | self.tainted)

    def pick_domain(self) -> str | None:
        found = [d for d in self.work if self.free(d)]
        return self.rng.choice(found) if found else None

    def pick_mailbox(self, where: Callable[[str], bool] = lambda _: True) -> str | None:
        found = [a for a in self.mailboxes if self.free(a) and where(a)]
        return self.rng.choice(found) if found else None

    def pick_alias(self, where: Callable[[str], bool] = lambda _: True) -> str | None:
        found = [s for s in self.aliases if self.free(s) and where(s)]
        return self.rng.choice(found) if found else None

    def local_mailboxes(self, domain: str, k: int) -> list[str]:
        found = [a for a in self.mailboxes if domain_of(a) == domain and self.free(a)]
        return self.rng.sample(found, min(k, len(found)))

    def referrers(self) -> dict[str, list[str]]:
        """Alias sources by the destinations they deliver to."""
        found: dict[str, list[str]] = defaultdict(list)
        for source, destinations in self.aliases.items():
            for destination in destinations:
                found[destination].append(source)
        return found

    def mismatch(self, what: str) -> None:
        self.stats.mismatches.append(what)

    def aliased(self, call: str, source: str, want: set[str]) -> Done:
        """Check an alias answer against `want`, and take `want` as the alias now."""

        def done(response: httpx.Response) -> None:
            got = set(response.json()["destinations"])
            if got != want:
                self.mismatch(f"{call} {source}: {sorted(got)}, model {sorted(want)}")
            self.aliases[source] = want

        return done

    # -- the operations: a Call, or None when nothing fits now

    def health(self) -> Call:
        return Call("health", "GET", "/health", (200,))

    def ready(self) -> Call:
        return Call("ready", "GET", "/ready", (200,))

    def metrics(self) -> Call:
        return Call("metrics", "GET", "/metrics", (200,))

    def list_audit(self) -> Call:
        return Call("list_audit", "GET", "/audit?limit=20", (200,))

    def list_domains(self) -> Call:
        return Call("list_domains", "GET", "/domains?limit=20", (200,))

    def create_domain(self) -> Call:
        name = f"d{next(self.n)}.soak.example"
        pool = self.work if len(self.work) < 4 or self.rng.random() < 0.5 else self.scratch
        return Call("create_domain", "POST", "/domains", (201,), json={"name": name}, hold=(name,),
                    done=lambda _: pool.append(name), audited="create_domain")  # fmt: skip

    def delete_domain(self) -> Call | None:
        scratch = [d for d in self.scratch if self.free(d)]
        if scratch:
            name = self.rng.choice(scratch)
            forget: Done = lambda _: self.scratch.remove(name)  # noqa: E731
            return Call("delete_domain", "DELETE", f"/domains/{name}", (200,), hold=(name,),
                        done=forget, audited="delete_domain")  # fmt: skip
        idle = [d for d in self.work if self.free(d) and not self.users[d]]
        if len(self.work) <= 4 or not idle:
            return None
        # Retire a domain in use: everything in it goes in one cascading delete.
        name = self.rng.choice(idle)
        self.retiring.add(name)
        mailboxes = [a for a in self.mailboxes if domain_of(a) == name]
        aliases = [s for s in self.aliases if domain_of(s) == name]

        def done(response: httpx.Response) -> None:
            body = response.json()
            if (body["mailboxes_removed"], body["aliases_removed"]) != (
                len(mailboxes),
                len(aliases),
            ):
                self.mismatch(f"DELETE /domains/{name}: {body}; model: {mailboxes}, {aliases}")
            for address in mailboxes:
                del self.mailboxes[address]
            for source in aliases:
                del self.aliases[source]
            self.work.remove(name)
            self.retiring.discard(name)

        path = f"/domains/{name}?cascade=true"
        return Call("retire_domain", "DELETE", path, (200,), hold=(name,), done=done,
                    audited="delete_domain")  # fmt: skip

    def read_domain(self) -> Call | None:
        name = self.pick_domain()
        if name is None:
            return None
        return Call("read_domain", "GET", f"/domains/{name}", (200,), domains=(name,))

    def create_mailbox(self) -> Call | None:
        domain = self.pick_domain()
        if domain is None:
            return None
        address, quota = f"m{next(self.n)}@{domain}", self.rng.choice(QUOTAS)
        body = {"address": address, "password": f"soak-{address}", "quota": quota}

        def done(_: httpx.Response) -> None:
            self.mailboxes[address] = quota

        return Call("create_mailbox", "POST", "/mailboxes", (201,), json=body, hold=(address,),
                    domains=(domain,), done=done, audited="create_mailbox")  # fmt: skip

    def read_mailbox(self) -> Call | None:
        address = self.pick_mailbox()
        if address is None:
            return None
        want = {"address": address, "quota": self.mailboxes[address]}

        def done(response: httpx.Response) -> None:
            body = response.json()
            if {k: body[k] for k in want} != want:
                self.mismatch(f"GET /mailboxes/{address}: {body}, model {want}")

        return Call("read_mailbox", "GET", f"/mailboxes/{address}", (200,), hold=(address,),
                    domains=(domain_of(address),), done=done)  # fmt: skip

    def list_mailboxes(self) -> Call | None:
        domain = self.pick_domain()
        if domain is None:
            return None
        path = f"/mailboxes?domain={domain}&limit=50"
        return Call("list_mailboxes", "GET", path, (200,), domains=(domain,))

    def update_mailbox(self) -> Call | None:
        address = self.pick_mailbox()
        if address is None:
            return None
        quota = self.rng.choice(QUOTAS)
        body: dict[str, Any] = {"quota": quota}
        if self.rng.random() < 0.3:
            body["password"] = f"changed-{next(self.n)}"

        def done(response: httpx.Response) -> None:
            self.mailboxes[address] = quota
            if response.json()["quota"] != quota:
                self.mismatch(f"PATCH /mailboxes/{address}: {response.text}, quota {quota}")

        return Call("update_mailbox", "PATCH", f"/mailboxes/{address}", (200,), json=body,
                    hold=(address,), domains=(domain_of(address),), done=done,
                    audited="update_mailbox")  # fmt: skip

    def delete_mailbox(self) -> Call | None:
        index = self.referrers()
        address = self.pick_mailbox(lambda a: all(self.free(s) for s in index[a]))
        if address is None:
            return None
        referrers = index[address]

        def done(response: httpx.Response) -> None:
            removed = response.json()["alias_destinations_removed"]
            if sorted(r["source"] for r in removed) != sorted(referrers):
                self.mismatch(f"DELETE /mailboxes/{address}: removed {removed}, model {referrers}")
            del self.mailboxes[address]
            for source in referrers:
                self.aliases[source].discard(address)
                if not self.aliases[source]:  # its last destination: the alias goes too
                    del self.aliases[source]

        # With aliases delivering there the delete needs cascade (without: the 409 below).
        path = f"/mailboxes/{address}" + ("?cascade=true" if referrers else "")
        return Call("delete_mailbox", "DELETE", path, (200,), hold=(address, *referrers),
                    domains=(domain_of(address),), done=done, audited="delete_mailbox")  # fmt: skip

    def create_alias(self) -> Call | None:
        domain = self.pick_domain()
        if domain is None:
            return None
        source = f"a{next(self.n)}@{domain}"
        local = self.local_mailboxes(domain, self.rng.randint(0, 2))
        outside = [f"x{next(self.n)}@{EXT}"] if not local or self.rng.random() < 0.5 else []
        body = {"source": source, "destinations": [*local, *outside]}
        return Call("create_alias", "POST", "/aliases", (201,), json=body, hold=(source, *local),
                    domains=(domain,), done=self.aliased("POST", source, {*local, *outside}),
                    audited="create_alias")  # fmt: skip

    def read_alias(self) -> Call | None:
        source = self.pick_alias()
        if source is None:
            return None
        done = self.aliased("GET", source, self.aliases[source])
        return Call("read_alias", "GET", f"/aliases/{source}", (200,), hold=(source,),
                    domains=(domain_of(source),), done=done)  # fmt: skip

    def list_aliases(self) -> Call | None:
        domain = self.pick_domain()
        if domain is None:
            return None
        path = f"/aliases?domain={domain}&limit=50"
        return Call("list_aliases", "GET", path, (200,), domains=(domain,))

    def add_alias_destination(self) -> Call | None:
        source = self.pick_alias()
        if source is None:
            return None
        have = self.aliases[source]
        local = [a for a in self.local_mailboxes(domain_of(source), 1) if a not in have]
        new = local[0] if local and self.rng.random() < 0.5 else f"x{next(self.n)}@{EXT}"
        path = f"/aliases/{source}/destinations"
        return Call("add_alias_destination", "POST", path, (200,), json={"destination": new},
                    hold=(source, new), domains=(domain_of(source),),
                    done=self.aliased("POST", source, have | {new}),
                    audited="add_alias_destination")  # fmt: skip

    def replace_alias_destinations(self) -> Call | None:
        source = self.pick_alias()
        if source is None:
            return None
        new = [*self.local_mailboxes(domain_of(source), 1), f"x{next(self.n)}@{EXT}"]
        return Call("replace_alias_destinations", "PUT", f"/aliases/{source}", (200,),
                    json={"destinations": new}, hold=(source, *new[:-1]),
                    domains=(domain_of(source),), done=self.aliased("PUT", source, set(new)),
                    audited="replace_alias_destinations")  # fmt: skip

    def remove_alias_destination(self) -> Call | None:
        source = self.pick_alias(lambda s: len(self.aliases[s]) > 1)
        if source is None:
            return None
        gone = self.rng.choice(sorted(self.aliases[source]))
        path = f"/aliases/{source}/destinations/{gone}"
        return Call("remove_alias_destination", "DELETE", path, (200,), hold=(source, gone),
                    domains=(domain_of(source),),
                    done=self.aliased("DELETE", source, self.aliases[source] - {gone}),
                    audited="remove_alias_destination")  # fmt: skip

    def delete_alias(self) -> Call | None:
        source = self.pick_alias()
        if source is None:
            return None

        def done(_: httpx.Response) -> None:
            del self.aliases[source]

        return Call("delete_alias", "DELETE", f"/aliases/{source}", (200,), hold=(source,),
                    domains=(domain_of(source),), done=done, audited="delete_alias")  # fmt: skip

    def send_message(self) -> Call:
        body = {"from": {"address": USERNAME, "name": "Soak"}, "to": [f"r{next(self.n)}@{EXT}"],
                "subject": "Soak", "text": "x" * 500, "credentials": CREDENTIALS}  # fmt: skip

        def done(response: httpx.Response) -> None:
            self.stats.message_ids.add(response.json()["message_id"])

        return Call("send_message", "POST", "/send", (200, 429), json=body, done=done,
                    audited="send_message")  # fmt: skip

    # -- deliberate mistakes, each with the one answer it must get

    def duplicate_domain(self) -> Call | None:
        domain = self.pick_domain()
        if domain is None:
            return None
        body = {"name": domain.upper()}  # the same name, once normalised
        return Call(
            "bad:duplicate_domain", "POST", "/domains", (409,), json=body, domains=(domain,)
        )

    def duplicate_mailbox(self) -> Call | None:
        address = self.pick_mailbox()
        if address is None:
            return None
        body = {"address": address, "password": "another-one"}
        return Call("bad:duplicate_mailbox", "POST", "/mailboxes", (409,), json=body,
                    hold=(address,), domains=(domain_of(address),))  # fmt: skip

    def unhosted_mailbox(self) -> Call:
        body = {"address": f"m@nowhere{next(self.n)}.example", "password": "summersun"}
        return Call("bad:unhosted_mailbox", "POST", "/mailboxes", (422,), json=body)

    def missing_mailbox(self) -> Call | None:
        domain = self.pick_domain()
        if domain is None:
            return None
        path = f"/mailboxes/nobody{next(self.n)}@{domain}"
        return Call("bad:missing_mailbox", "GET", path, (404,), domains=(domain,))

    def invalid_quota(self) -> Call | None:
        address = self.pick_mailbox()
        if address is None:
            return None
        return Call("bad:invalid_quota", "PATCH", f"/mailboxes/{address}", (422,),
                    json={"quota": -1}, hold=(address,), domains=(domain_of(address),))  # fmt: skip

    def delete_referenced(self) -> Call | None:
        index = self.referrers()
        address = self.pick_mailbox(lambda a: bool(index[a]) and all(map(self.free, index[a])))
        if address is None:
            return None
        return Call("bad:delete_referenced", "DELETE", f"/mailboxes/{address}", (409,),
                    hold=(address, *index[address]), domains=(domain_of(address),))  # fmt: skip

    def remove_last_destination(self) -> Call | None:
        source = self.pick_alias(lambda s: len(self.aliases[s]) == 1)
        if source is None:
            return None
        [last] = self.aliases[source]
        path = f"/aliases/{source}/destinations/{last}"
        return Call("bad:remove_last_destination", "DELETE", path, (409,), hold=(source, last),
                    domains=(domain_of(source),))  # fmt: skip

    def unknown_destination(self) -> Call | None:
        domain = self.pick_domain()
        if domain is None:
            return None
        n = next(self.n)
        body = {"source": f"a{n}@{domain}", "destinations": [f"nosuch{n}@{domain}"]}
        return Call("bad:unknown_destination", "POST", "/aliases", (422,), json=body,
                    domains=(domain,))  # fmt: skip

    def alias_loop(self) -> Call | None:
        domain = self.pick_domain()
        if domain is None:
            return None
        source = f"a{next(self.n)}@{domain}"
        body = {"source": source, "destinations": [source]}
        return Call("bad:alias_loop", "POST", "/aliases", (422,), json=body, domains=(domain,))

    def refused_send(self) -> Call:
        # The SMTP server refuses every recipient: 422 recipients-refused.
        body = {"from": USERNAME, "to": [f"nobody{next(self.n)}@{EXT}"], "text": "x",
                "credentials": CREDENTIALS}  # fmt: skip
        return Call("bad:refused_send", "POST", "/send", (422, 429), json=body)

    def no_key(self) -> Call:
        return Call("bad:no_key", "GET", "/domains", (401,), headers={"Authorization": ""})

    def forbidden(self) -> Call | None:
        domain = self.pick_domain()
        if domain is None:
            return None
        scoped = {"Authorization": f"Bearer {self.scoped_key}"}
        return Call("bad:forbidden", "GET", f"/mailboxes/m1@{domain}", (403,), headers=scoped,
                    domains=(domain,))  # fmt: skip

    def malformed_json(self) -> Call:
        return Call("bad:malformed_json", "POST", "/domains", (400,), content=b'{"name": ',
                    headers={"Content-Type": "application/json"})  # fmt: skip

    def wrong_media_type(self) -> Call:
        return Call("bad:wrong_media_type", "POST", "/domains", (415,), content=b"name=x.example",
                    headers={"Content-Type": "text/plain"})  # fmt: skip

    def no_route(self) -> Call:
        return Call("bad:no_route", "GET", f"/nothing/{next(self.n)}", (404,))

    def mix(self) -> list[tuple[Callable[[], Call | None], int]]:
        """Operations and their weights (of 120)."""
        return [
            (self.health, 2), (self.ready, 2), (self.metrics, 2), (self.list_audit, 2),
            (self.list_domains, 2),
            (self.create_domain, 2), (self.delete_domain, 2), (self.read_domain, 3),
            (self.create_mailbox, 12), (self.read_mailbox, 10), (self.list_mailboxes, 4),
            (self.update_mailbox, 6), (self.delete_mailbox, 4),
            (self.create_alias, 7), (self.read_alias, 5), (self.list_aliases, 3),
            (self.add_alias_destination, 4), (self.replace_alias_destinations, 3),
            (self.remove_alias_destination, 3), (self.delete_alias, 3),
            (self.send_message, 6),
            (self.duplicate_domain, 1), (self.duplicate_mailbox, 1), (self.unhosted_mailbox, 1),
            (self.missing_mailbox, 1), (self.invalid_quota, 1), (self.delete_referenced, 1),
            (self.remove_last_destination, 1), (self.unknown_destination, 1),
            (self.alias_loop, 1), (self.refused_send, 1), (self.no_key, 1), (self.forbidden, 1),
            (self.malformed_json, 1), (self.wrong_media_type, 1), (self.no_route, 1),
        ]  # fmt: skip

    def next_call(self, mix: list[tuple[Callable[[], Call | None], int]]) -> Call:
        ops, weights = zip(*mix, strict=True)
        call = self.rng.choices(ops, weights)[0]() or self.create_mailbox() or self.create_domain()
        if self.busy.intersection(call.hold):  # e.g. a destination another request holds
            call = self.health()
        self.busy.update(call.hold)
        self.users.update(call.domains)
        return call

    def finish(self, call: Call, response: httpx.Response | None) -> None:
        self.busy.difference_update(call.hold)
        self.users.subtract(call.domains)
        if response is None:  # a transport error: done or not? Nobody can say
            self.tainted.update(call.hold)
        elif call.op == "retire_domain" and response.status_code != 200:
            self.retiring.discard(call.hold[0])


async def run_call(client: httpx.AsyncClient, model: Model, call: Call) -> None:
    stats = model.stats
    start = time.perf_counter()
    response: httpx.Response | None = None
    try:
        response = await client.request(
            call.method, call.path, json=call.json, content=call.content, headers=call.headers
        )
        status = str(response.status_code)
    except httpx.TransportError as exc:
        status = f"transport:{type(exc).__name__}"
    stats.latencies[call.op].append(time.perf_counter() - start)
    stats.statuses[call.op][status] += 1
    try:
        if response is None or response.status_code not in call.expect:
            stats.errors += 1
            if len(stats.unexpected[call.op]) < 5:
                body = response.text[:300] if response is not None else ""
                stats.unexpected[call.op].append(f"{call.method} {call.path} -> {status} {body}")
        elif response.status_code < 300:
            if call.audited:
                stats.audited[call.audited] += 1
            if call.done:
                call.done(response)
    finally:
        model.finish(call, response)


def client(live: Live) -> httpx.AsyncClient:
    return httpx.AsyncClient(base_url=live.base, headers=live.headers, timeout=60)


async def setup(live: Live, model: Model) -> None:
    """Four domains to work in, and a key scoped to a domain of its own."""
    async with client(live) as http:
        for _ in range(4):
            await run_call(http, model, model.create_domain())
        scoped = Call("create_domain", "POST", "/domains", (201,), json={"name": SCOPED},
                      audited="create_domain")  # fmt: skip
        await run_call(http, model, scoped)
        response = await http.post("/keys", json={"name": "soak-scoped", "domains": [SCOPED]})
        assert response.status_code == 201, response.text
        model.stats.audited["create_key"] += 1
        model.scoped_key = response.json()["key"]


async def soak(live: Live, model: Model, args: argparse.Namespace) -> int:
    """The mixed load from --concurrency clients; the number of requests made."""
    remaining = args.requests
    deadline = time.monotonic() + args.max_seconds
    mix = model.mix()

    async def one_client() -> int:
        nonlocal remaining
        made = 0
        async with client(live) as http:
            while remaining > 0 and time.monotonic() < deadline:
                remaining -= 1
                await run_call(http, model, model.next_call(mix))
                made += 1
        return made

    return sum(await asyncio.gather(*(one_client() for _ in range(args.concurrency))))


async def verify_api(live: Live, model: Model, concurrency: int) -> int:
    """GET every mailbox, alias and work domain the model holds; how many GETs."""
    checks: list[tuple[str, Callable[[Any], object], object]] = []
    for address, quota in model.mailboxes.items():
        checks.append((f"/mailboxes/{address}", lambda b: b["quota"], quota))
    for source, destinations in model.aliases.items():
        checks.append((f"/aliases/{source}", lambda b: set(b["destinations"]), destinations))
    for domain in model.work:
        counts = (
            sum(domain_of(a) == domain for a in model.mailboxes),
            sum(domain_of(s) == domain for s in model.aliases),
        )
        checks.append((f"/domains/{domain}", lambda b: (b["mailboxes"], b["aliases"]), counts))
    queue = iter(checks)

    async def one_client() -> None:
        async with client(live) as http:
            for path, seen, want in queue:
                try:
                    response = await http.get(path)
                except httpx.TransportError as exc:
                    model.mismatch(f"verify GET {path}: {type(exc).__name__}")
                    continue
                if response.status_code != 200:
                    model.mismatch(f"verify GET {path}: {response.status_code} {response.text}")
                elif (got := seen(response.json())) != want:
                    model.mismatch(f"verify GET {path}: {got}, model {want}")

    await asyncio.gather(*(one_client() for _ in range(concurrency)))
    return len(checks)


def verify_database(url: str, model: Model) -> None:
    engine = create_db_engine(url)
    try:
        with engine.connect() as conn:

            def rows(query: str) -> list[tuple[Any, ...]]:
                return [tuple(row) for row in conn.execute(text(query))]

            domains = {name for (name,) in rows("SELECT name FROM virtual_domains")}
            ids = dict(rows("SELECT id, name FROM virtual_domains"))
            users = dict(rows("SELECT email, quota FROM virtual_users"))
            alias_rows = set(rows("SELECT source, destination FROM virtual_aliases"))
            owners = rows("SELECT email, domain_id FROM virtual_users")
            owners += rows("SELECT source, domain_id FROM virtual_aliases")
            audit = dict(
                rows(
                    "SELECT action, COUNT(*) FROM mailprov_audit WHERE status < 300 GROUP BY action"
                )
            )
    finally:
        engine.dispose()

    def known(name: str) -> bool:
        return not {name, domain_of(name)} & model.tainted

    def compare(what: str, in_db: set[Any], in_model: set[Any]) -> None:
        if in_db != in_model:
            model.mismatch(f"{what}: only in the database {sorted(in_db - in_model)[:5]}, "
                           f"only in the model {sorted(in_model - in_db)[:5]}")  # fmt: skip

    compare("domains", {d for d in domains if known(d)},
            {d for d in (*model.work, *model.scratch, SCOPED) if known(d)})  # fmt: skip
    compare("mailboxes", {(a, q) for a, q in users.items() if known(a)},
            {(a, q) for a, q in model.mailboxes.items() if known(a)})  # fmt: skip
    compare("alias rows", {(s, d) for s, d in alias_rows if known(s)},
            {(s, d) for s, ds in model.aliases.items() for d in ds if known(s)})  # fmt: skip
    # Whatever the model says: local destinations exist, rows belong to their domain.
    sources = {s for s, _ in alias_rows}
    dangling = {d for _, d in alias_rows if domain_of(d) in domains} - set(users) - sources
    if dangling:
        model.mismatch(f"alias destinations that do not exist: {sorted(dangling)[:5]}")
    orphans = [name for name, domain_id in owners if ids.get(domain_id) != domain_of(name)]
    if orphans:
        model.mismatch(f"rows whose domain_id is not their domain: {orphans[:5]}")
    for action, count in sorted(model.stats.audited.items()):
        if audit.get(action, 0) != count:
            model.mismatch(f"audit: {audit.get(action, 0)} successful {action}, {count} answered")


def verify_smtp(smtp: SubmissionServer, model: Model) -> None:
    with smtp.transcript.lock:
        received = {r.message["Message-ID"] for r in smtp.transcript.received}
    sent = model.stats.message_ids
    if received != sent:
        model.mismatch(f"the SMTP server received {len(received)} messages, /send queued "
                       f"{len(sent)}; {len(received ^ sent)} differ")  # fmt: skip


@contextmanager
def soak_database(url: str | None, workdir: Path) -> Iterator[str]:
    """A fresh database: a SQLite file, or a server database made and dropped here."""
    if url is None:
        yield f"sqlite:///{workdir / 'soak.db'}"
        return
    parsed = make_url(url)
    name = parsed.database or ""
    if "soak" not in name or not name.replace("_", "").isalnum():
        sys.exit(f"soak: the database is dropped, so its name must contain 'soak': {name!r}")
    postgres = parsed.get_backend_name() == "postgresql"
    admin = create_engine(parsed.set(database="postgres" if postgres else ""),
                          isolation_level="AUTOCOMMIT")  # fmt: skip
    with admin.connect() as conn:
        conn.execute(text(f"DROP DATABASE IF EXISTS {name}"))
        conn.execute(
            text(f"CREATE DATABASE {name}" + ("" if postgres else " CHARACTER SET utf8mb4"))
        )
    try:
        yield url
    finally:
        with admin.connect() as conn:
            conn.execute(text(f"DROP DATABASE IF EXISTS {name}"))
        admin.dispose()


def ms(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))] * 1000


def report(stats: Stats, args: argparse.Namespace, backend: str, made: int, seconds: float,
           verified: int) -> None:  # fmt: skip
    print(f"# soak ({time.strftime('%Y-%m-%d %H:%M')}, {platform.machine()}, {os.cpu_count()} "
          f"cores, Python {platform.python_version()}): {backend}, {args.workers} workers, "
          f"{args.concurrency} clients, seed {args.seed}")  # fmt: skip
    print(f"{'operation':<30} {'count':>6} {'p50 ms':>8} {'p99 ms':>8}  statuses")
    for op, lat in sorted(stats.latencies.items()):
        statuses = " ".join(f"{s}:{n}" for s, n in sorted(stats.statuses[op].items()))
        print(f"{op:<30} {len(lat):>6} {ms(lat, 0.5):>8.1f} {ms(lat, 0.99):>8.1f}  {statuses}")
    every = [x for lat in stats.latencies.values() for x in lat]
    print(f"{'all':<30} {len(every):>6} {ms(every, 0.5):>8.1f} {ms(every, 0.99):>8.1f}")
    stopped = "" if made == args.requests else f" (stopped by --max-seconds {args.max_seconds})"
    print(
        f"requests: {made} of {args.requests} in {seconds:.1f} s, {made / seconds:.0f}/s{stopped}"
    )
    limited = stats.statuses["send_message"]["429"] + stats.statuses["bad:refused_send"]["429"]
    print(f"/send rate-limited (429, expected): {limited}")
    print(f"consistency: {verified} GETs, the tables, the SMTP server and the audit trail "
          f"checked: {len(stats.mismatches)} mismatches")  # fmt: skip
    for op, samples in sorted(stats.unexpected.items()):
        for sample in samples:
            print(f"  unexpected {op}: {sample}")
    for mismatch in stats.mismatches[:20]:
        print(f"  mismatch: {mismatch[:2000]}")
    print(f"errors: {stats.errors + len(stats.mismatches)}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--requests", type=int, default=3000)
    parser.add_argument("--max-seconds", type=float, default=600, help="then make no more")
    parser.add_argument("--concurrency", type=int, default=16, help="HTTP clients at once")
    parser.add_argument("--workers", type=int, default=2, help="uvicorn worker processes")
    parser.add_argument("--database-url", help="MariaDB or PostgreSQL (default: SQLite)")
    parser.add_argument("--seed", type=int, help="repeat a run's choices (default: random)")
    args = parser.parse_args()
    if args.seed is None:
        args.seed = random.randrange(1 << 32)

    # aiosmtpd (the SMTP server, in this process) touches its own deprecated attribute.
    warnings.filterwarnings("ignore", "Session.login_data is deprecated")
    workdir = Path(tempfile.mkdtemp(prefix="mailprov-soak-"))
    ca = trustme.CA()
    ca_file = str(workdir / "ca.pem")
    ca.cert_pem.write_to_path(ca_file)
    stats = Stats()
    model = Model(random.Random(args.seed), stats)
    with (
        soak_database(args.database_url, workdir) as url,
        submission_server(ca, ca_file) as smtp,
    ):
        env = SETTINGS | {
            "MAILPROV_SUBMISSION_HOST": smtp.host,
            "MAILPROV_SUBMISSION_PORT": str(smtp.port),
            "MAILPROV_SUBMISSION_CA_FILE": ca_file,
        }
        with live_server(url, workers=args.workers, **env) as live:
            asyncio.run(setup(live, model))
            start = time.perf_counter()
            made = asyncio.run(soak(live, model, args))
            seconds = time.perf_counter() - start
            verified = asyncio.run(verify_api(live, model, args.concurrency))
            verify_database(url, model)
            verify_smtp(smtp, model)
            if "Traceback" in (output := live.output()):
                model.mismatch(f"the server logged a traceback:\n{output[-3000:]}")
    report(stats, args, make_url(url).get_backend_name(), made, seconds, verified)
    sys.exit(1 if stats.errors or stats.mismatches else 0)


if __name__ == "__main__":
    main()
