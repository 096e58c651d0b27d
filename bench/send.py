"""/send throughput: N messages through the API beside the same N sent directly
with aiosmtplib, in the same run, against the same local SMTP server.

Both paths do the same SMTP work per message (connect, STARTTLS with a verified
certificate, AUTH PLAIN, MAIL, RCPT, DATA, QUIT), with the same concurrency, so
the ratio is the API's own overhead: HTTP, validation, composing, auditing.

    .venv/bin/python bench/send.py --messages 300 --concurrency 8

Loopback only; bounded by --messages. The SMTP server is the tests' aiosmtpd
(STARTTLS required, AUTH), in a process of its own, so neither load generator
shares an interpreter lock with it.
"""

import argparse
import asyncio
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from email.message import EmailMessage
from pathlib import Path

import aiosmtplib
import httpx

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from app.relay import QUEUE_ID
from tests.live import live_server
from tests.smtpd import PASSWORD, USERNAME

PAYLOAD = {
    "from": {"address": USERNAME, "name": "Bench"},
    "to": ["lisa@example.net"],
    "subject": "Benchmark",
    "text": "x" * 2000,
    "credentials": {"username": USERNAME, "password": PASSWORD},
}


async def run_direct(host: str, port: int, ca_file: str, n: int, concurrency: int) -> float:
    import ssl

    context = ssl.create_default_context(cafile=ca_file)
    gate = asyncio.Semaphore(concurrency)

    async def one(i: int) -> None:
        message = EmailMessage()
        message["From"], message["To"], message["Subject"] = (
            USERNAME,
            "lisa@example.net",
            "Benchmark",
        )
        message.set_content("x" * 2000)
        async with gate:
            response = await aiosmtplib.send(
                message,
                hostname=host,
                port=port,
                start_tls=True,
                tls_context=context,
                username=USERNAME,
                password=PASSWORD,
                timeout=30,
            )
            assert QUEUE_ID.search(response[1]), response

    start = time.perf_counter()
    await asyncio.gather(*(one(i) for i in range(n)))
    return time.perf_counter() - start


async def run_api(base: str, headers: dict[str, str], n: int, concurrency: int) -> float:
    gate = asyncio.Semaphore(concurrency)
    async with httpx.AsyncClient(base_url=base, headers=headers, timeout=60) as client:

        async def one(i: int) -> None:
            async with gate:
                response = await client.post("/send", json=PAYLOAD)
                assert response.status_code == 200, response.text

        start = time.perf_counter()
        await asyncio.gather(*(one(i) for i in range(n)))
        return time.perf_counter() - start


@contextmanager
def cleanup(workdir: Path) -> Iterator[None]:
    try:
        yield
    finally:
        shutil.rmtree(workdir, ignore_errors=True)


@contextmanager
def smtp_server(ca_file: Path) -> Iterator[tuple[str, int]]:
    """The test submission server in a child process; its CA written to ca_file."""
    child = subprocess.Popen(
        [sys.executable, "-m", "tests.smtpd", str(ca_file)],
        stdout=subprocess.PIPE, text=True, cwd=Path(__file__).resolve().parent.parent,
    )  # fmt: skip
    try:
        assert child.stdout is not None
        host, port = child.stdout.readline().split()
        yield host, int(port)
    finally:
        child.terminate()
        child.wait(timeout=10)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--messages", type=int, default=300)
    parser.add_argument("--concurrency", type=int, default=8)
    parser.add_argument("--rounds", type=int, default=3, help="alternating rounds; best of each")
    parser.add_argument("--workers", type=int, default=1, help="uvicorn workers for the API")
    args = parser.parse_args()

    workdir = Path(tempfile.mkdtemp(prefix="mailprov-bench-"))
    ca_file = workdir / "ca.pem"
    database = f"sqlite:///{workdir / 'bench.db'}"
    with smtp_server(ca_file) as (host, port), cleanup(workdir):
        env = {
            "MAILPROV_SUBMISSION_HOST": host,
            "MAILPROV_SUBMISSION_PORT": str(port),
            "MAILPROV_SUBMISSION_CA_FILE": str(ca_file),
            # The per-key limit is counted as in production, set high enough never to refuse.
            "MAILPROV_SEND_RATE_LIMIT": "1000000",
        }
        with live_server(database, workers=args.workers, **env) as live:
            direct, api = [], []
            for _ in range(args.rounds):
                direct.append(
                    asyncio.run(
                        run_direct(host, port, str(ca_file), args.messages, args.concurrency)
                    )
                )
                api.append(
                    asyncio.run(run_api(live.base, live.headers, args.messages, args.concurrency))
                )
    best_direct, best_api = min(direct), min(api)
    direct_rate, api_rate = args.messages / best_direct, args.messages / best_api
    overhead = (direct_rate / api_rate - 1) * 100
    print(
        f"# /send benchmark ({time.strftime('%Y-%m-%d')}, {platform.machine()}, "
        f"{os.cpu_count()} cores, Python {platform.python_version()})"
    )
    print(
        f"messages per round: {args.messages}, concurrency: {args.concurrency}, "
        f"rounds: {args.rounds}, API workers: {args.workers}"
    )
    print(
        f"direct aiosmtplib : {direct_rate:8.1f} msg/s (best of {[round(t, 2) for t in direct]} s)"
    )
    print(f"via POST /send    : {api_rate:8.1f} msg/s (best of {[round(t, 2) for t in api]} s)")
    ratio = api_rate / direct_rate
    print(f"ratio api/direct  : {ratio:.3f}  (API overhead {overhead:+.1f} %; target <= 10 %)")


if __name__ == "__main__":
    main()
