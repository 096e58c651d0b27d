"""The README's curl examples work as written, against a live `mailprov serve`."""

import re
import subprocess

import httpx

from tests.live import ROOT, live_server

README = ROOT / "README.md"
WRITTEN_BASE = "http://127.0.0.1:8000"


def curl_blocks() -> list[str]:
    blocks = re.findall(r"```sh\n(.*?)```", README.read_text(encoding="utf-8"), flags=re.S)
    return [block for block in blocks if "curl " in block]


def test_readme_shows_every_everyday_task() -> None:
    text = "\n".join(curl_blocks())
    for example in [
        f"-X POST {WRITTEN_BASE}/domains",
        f"-X POST {WRITTEN_BASE}/mailboxes",
        f"-X POST {WRITTEN_BASE}/aliases",
        f"'{WRITTEN_BASE}/mailboxes?",
        f"-X PATCH {WRITTEN_BASE}/mailboxes/",
        f"-X DELETE '{WRITTEN_BASE}/domains/",
    ]:
        assert example in text, example


def test_readme_curl_examples_run_in_order(fresh_database_url: str) -> None:
    with live_server(fresh_database_url) as live:
        base = live.base
        for block in curl_blocks():
            script = block.replace(WRITTEN_BASE, base)
            result = subprocess.run(
                ["bash", "-euo", "pipefail", "-c", script],
                capture_output=True,
                text=True,
                timeout=60,
            )
            assert result.returncode == 0, (
                f"{block}\n--- stdout\n{result.stdout}\n--- stderr\n{result.stderr}"
            )
            if "PATCH" in block:
                mailbox = httpx.get(base + "/mailboxes/john@example.org").json()
                assert mailbox["quota"] == 2147483648
        # The last block removed everything again.
        assert httpx.get(base + "/domains").json()["total"] == 0
