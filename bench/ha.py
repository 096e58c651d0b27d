"""Throughput of one and two mailprov copies behind HAProxy, on the three-node Galera
cluster of deploy/ha.sh, and the CPU each part spends per request (issue 20).

    .venv/bin/python bench/ha.py                    # ~3 min (as root: ha.sh starts the cluster)
    .venv/bin/python bench/ha.py --duration 5 --quick

The cluster runs from a state dir of its own (/tmp/mailprov-galera-bench, ports
3310-3313, 4511-4533, 8090-8092, 8099); two copies, each pinned to a node, behind
HAProxy's HTTP frontend. wrk (one thread) loads HAProxy:

- with one copy (copy 2 stopped, HAProxy marks it down), then with both;
- read a mailbox (GET, rotating over 1 000 seeded ones) and create a mailbox
  (POST, bcrypt at cost 10, a quarter of the default 12's work, so that a run of
  seconds has enough of them).

For each run: req/s, p50/p99, and the CPU time per request of the copies, of
HAProxy, of the three mariadbd nodes and of wrk (/proc/<pid>/stat), and how busy
the machine's cores were (/proc/stat), and how much of that was not this stack
(other work on the machine). CPU per request of a copy is what a copy
costs whatever else the machine does: with one core per copy, N copies serve N
times what one serves, as long as the database tier keeps up. On this machine
(two cores for wrk, HAProxy, three database nodes and the copies) the second copy
can only use what the others leave: the table says what took the cores.

Loopback only; each wrk run bounded by --duration. At the end the cluster stops
and its state dir is removed.
"""

import argparse
import os
import shlex
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import httpx

from app.db import create_db_engine
from bench.harness import DOMAIN, Load, cpu_seconds, seed_mailboxes, table, wrk
from tests.helpers import make_key

ROOT = Path(__file__).resolve().parent.parent
HA_SH = ROOT / "deploy" / "ha.sh"
STATE = Path("/tmp/mailprov-galera-bench")
SEEDED = 1000


@dataclass(frozen=True)
class Scenario:
    name: str
    mode: str  # load.lua's BENCH_MODE
    path: str
    connections: int


SCENARIOS = [
    Scenario("read a mailbox", "get", "/mailboxes/user%07d@bench.example", 16),
    Scenario("create a mailbox (bcrypt cost 10)", "mailbox", "/mailboxes", 8),
]


def pid_of(path: Path) -> int | None:
    try:
        pid = int(path.read_text().strip())
    except (OSError, ValueError):
        return None
    return pid if Path(f"/proc/{pid}").exists() else None


def parts() -> dict[str, list[int]]:
    """The processes whose CPU time a run accounts for, by part."""
    found: dict[str, list[int]] = {"copies": [], "haproxy": [], "mariadbd (3 nodes)": []}
    for n in (1, 2):
        if (pid := pid_of(STATE / f"copy{n}.pid")) is not None:
            found["copies"].append(pid)
    if (pid := pid_of(STATE / "haproxy.pid")) is not None:
        found["haproxy"].append(pid)
    for n in (1, 2, 3):
        if (pid := pid_of(STATE / f"node{n}" / "mysqld.pid")) is not None:
            found["mariadbd (3 nodes)"].append(pid)
    return found


def machine_busy() -> tuple[float, float]:
    """(busy, total) jiffies of all cores so far (/proc/stat)."""
    fields = [int(v) for v in Path("/proc/stat").read_text().splitlines()[0].split()[1:]]
    idle = fields[3] + fields[4]  # idle, iowait
    return sum(fields) - idle, sum(fields)


class Target:
    """What bench.harness.wrk loads (HAProxy) and whose CPU it measures (the copies)."""

    def __init__(self, base: str) -> None:
        self.base = base

    def cpu_seconds(self) -> float:
        return cpu_seconds(parts()["copies"])


@dataclass
class Run:
    copies: int
    scenario: Scenario
    load: Load
    cpu_ms: dict[str, float]  # per request, by part
    busy: float  # share of the machine's cores in use
    others: float  # share of the machine's cores used by neither this stack nor wrk


def ha(*args: str, env: dict[str, str], timeout: float = 600) -> str:
    result = subprocess.run([str(HA_SH), *args], env=env, capture_output=True, text=True,
                            timeout=timeout, check=False)  # fmt: skip
    if result.returncode != 0:
        sys.exit(f"bench: ha.sh {' '.join(args)} failed:\n{result.stdout}\n{result.stderr}")
    return result.stdout


def wait_copy2(stats: str, state: str) -> None:
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        csv = httpx.get(stats + ";csv", timeout=5).text
        if any(line.startswith("mailprov,copy2,") and f",{state}," in line
               for line in csv.splitlines()):  # fmt: skip
            return
        time.sleep(0.2)
    sys.exit(f"bench: HAProxy did not see copy 2 {state}")


def measure(copies: int, base: str, key: str, args: argparse.Namespace) -> list[Run]:
    runs = []
    target = Target(base)
    wrk(target, SCENARIOS[0].path, seconds=args.warmup, connections=16, key=key, rotate=SEEDED)
    for scenario in SCENARIOS:
        before = {part: cpu_seconds(pids) for part, pids in parts().items()}
        wrk0 = os.times()
        busy0, total0 = machine_busy()
        load = wrk(target, scenario.path, seconds=args.duration, mode=scenario.mode,
                   connections=scenario.connections, key=key, rotate=SEEDED)  # fmt: skip
        busy1, total1 = machine_busy()
        wrk1 = os.times()
        after = {part: cpu_seconds(pids) for part, pids in parts().items()}
        cpu_ms = {
            part: (after[part] - before[part]) * 1000 / max(1, load.requests) for part in after
        }
        wrk_seconds = (wrk1.children_user + wrk1.children_system) - (
            wrk0.children_user + wrk0.children_system
        )
        cpu_ms["wrk"] = wrk_seconds * 1000 / max(1, load.requests)
        ticks = os.sysconf("SC_CLK_TCK")
        ours = sum(after[p] - before[p] for p in after) + wrk_seconds
        busy = (busy1 - busy0) / (total1 - total0)
        others = max(0.0, (busy1 - busy0) / ticks - ours) / ((total1 - total0) / ticks)
        runs.append(Run(copies, scenario, load, cpu_ms, busy, others))
        print(f"bench: {copies} cop{'y' if copies == 1 else 'ies'}: {scenario.name}: "
              f"{load.rate:.0f} req/s, copies {cpu_ms['copies']:.2f} ms CPU/req, "
              f"machine {runs[-1].busy:.0%} busy ({runs[-1].others:.0%} other work)",
              file=sys.stderr)  # fmt: skip
    return runs


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--duration", type=float, default=15, help="seconds per wrk run")
    parser.add_argument("--warmup", type=float, default=3)
    args = parser.parse_args()
    if os.geteuid() != 0:
        sys.exit("bench: deploy/ha.sh runs as root")
    env = {k: v for k, v in os.environ.items() if not k.startswith("MAILPROV_")} | {
        "MAILPROV_HA_DIR": str(STATE),
        "MAILPROV_HA_DB": "mailprov_bench",
        "MAILPROV_HA_COPIES": "2",
        "MAILPROV_BCRYPT_COST": "10",
    }
    ha("install", env=env, timeout=900)
    try:
        ha("start", env=env)
        values = {}
        for line in ha("env", env=env).splitlines():
            name, _, quoted = line.removeprefix("export ").partition("=")
            values[name] = " ".join(shlex.split(quoted))
        node1 = values["MAILPROV_HA_NODE_URLS"].split()[0]
        engine = create_db_engine(node1)
        try:
            with engine.begin() as conn:
                conn.exec_driver_sql("INSERT INTO virtual_domains (name) VALUES (%s)", (DOMAIN,))
            seed_mailboxes(engine, 1, SEEDED)
            key = make_key(engine, name="bench")
        finally:
            engine.dispose()
        base, stats = values["MAILPROV_HA_URL"], values["MAILPROV_HA_STATS_URL"]
        ha("kill-copy", "2", env=env)
        wait_copy2(stats, "DOWN")
        runs = measure(1, base, key, args)
        ha("start-copy", "2", env=env)
        wait_copy2(stats, "UP")
        runs += measure(2, base, key, args)
    finally:
        ha("destroy", env=env)

    print(f"# HA benchmark ({time.strftime('%Y-%m-%d')}, {os.cpu_count()} cores)\n")
    header = ["copies", "request", "req/s", "p50 ms", "p99 ms", "errors", "cores busy",
              "by other work",
              "CPU ms/req: copies", "haproxy", "mariadbd (3)", "wrk",
              "capacity per copy-core"]  # fmt: skip
    rows = []
    for run in runs:
        rows.append([
            run.copies, run.scenario.name, f"{run.load.rate:.0f}", f"{run.load.p50_ms:.1f}",
            f"{run.load.p99_ms:.1f}", run.load.errors, f"{run.busy:.0%}", f"{run.others:.0%}",
            f"{run.cpu_ms['copies']:.2f}", f"{run.cpu_ms['haproxy']:.2f}",
            f"{run.cpu_ms['mariadbd (3 nodes)']:.2f}", f"{run.cpu_ms['wrk']:.2f}",
            f"{1000 / max(run.cpu_ms['copies'], 1e-9):.0f} req/s",
        ])  # fmt: skip
    print(table(header, rows))


if __name__ == "__main__":
    main()
