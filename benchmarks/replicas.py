"""Replicas: steps/s with one or more `optaas serve` processes, direct or behind nginx.

(a) one Adam float32 session of 1e6 parameters, 4 clients: 1 process (direct, and behind
    nginx), 2 processes behind nginx round robin, 2 processes behind nginx hashing on the session
    id (deploy/nginx.conf as compose runs it). Target: hashing keeps at least the rate of 1
    process.
(b) 8 sessions of 1e5 parameters, 16 clients (two per session): 1, 2 and 4 processes behind the
    hashing nginx. Target: 2 processes step at least 1.7 × as fast as 1.

Each process is `optaas serve` with one worker (compose's setting: a replica is one process, so
that a session's working set stays in one cache). They share a PostgreSQL cluster of the
benchmark's own (`initdb` in a temporary directory; `--postgres shared` uses the machine's) run
with PostgreSQL's durable defaults (fsync, full-page writes, synchronous commit), with a fresh
database per scenario: its WAL and its CPU time are then this benchmark's alone. nginx is
Debian's, one worker process (tests/proxy.py).

The load generator is cheap on purpose, so that it leaves the cores to what is measured: asyncio
in this process, one kept-alive HTTP/1.1 connection per client, each request written as bytes
prepared beforehand (the gradient as a safetensors file; only the `Idempotency-Key` header is new
per request), `?return=none`, the answer read by its Content-Length. Its CPU time per step is
measured and reported beside the servers', nginx's and PostgreSQL's (from /proc).

Session ids are random, and the hash may put a few sessions unevenly on the processes; (b)
measures the processes, so with more than one process it steps sessions chosen (among as many
candidates as it takes) so that nginx's hash gives each process the same number.

Measured per scenario, in a window after a warm-up: steps/s (steps answered 200 within the
window), latency p50 / p99 (requests that started and ended in it), errors, CPU milliseconds per
step of each part and of the whole machine (others' work included), WAL bytes per step and per
second (`pg_current_wal_lsn()` at the window's ends); and over the whole run the rows each step
writes, by table (`pg_stat_user_tables`, TOAST chunks of the arrays included).

    python benchmarks/replicas.py [--duration 20] [--warmup 4] [--only a|b]
                                  [--postgres private|shared] [--name replicas]

Prints the figures and writes benchmarks/results/<name>.{json,md}.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
import tempfile
import time
import uuid
from collections import Counter
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import httpx
import numpy as np
from sqlalchemy import create_engine, text

REPO_ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO_ROOT))

from app.tensors import SAFETENSORS_MEDIA_TYPE, tensors_to_safetensors  # noqa: E402
from benchmarks.load import create_sessions  # noqa: E402
from benchmarks.service_step import RESULTS, environment, percentile  # noqa: E402
from tests.databases import (  # noqa: E402
    POSTGRES_SERVER_URL,
    PrivatePostgres,
    create_postgres_database,
    drop_postgres_database,
)
from tests.live_server import LiveServer  # noqa: E402
from tests.proxy import NginxProxy  # noqa: E402

GRADIENT_VARIANTS = 4
TARGETS = {"affinity_over_one_process": 1.0, "two_over_one_process": 1.7}
CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


@dataclass(frozen=True)
class Scenario:
    part: str  # "a" or "b"
    size: int  # parameters per session
    sessions: int
    clients: int  # client c steps session c mod sessions
    processes: int
    routing: str  # "direct" (to the first process), "round robin" or "hash" (nginx)

    @property
    def label(self) -> str:
        where = "direct" if self.routing == "direct" else f"nginx {self.routing}"
        processes = f"{self.processes} process" + ("es" if self.processes > 1 else "")
        return f"({self.part}) {processes}, {where}"


SCENARIOS = [
    Scenario("a", 1_000_000, 1, 4, 1, "direct"),
    Scenario("a", 1_000_000, 1, 4, 1, "hash"),
    Scenario("a", 1_000_000, 1, 4, 2, "round robin"),
    Scenario("a", 1_000_000, 1, 4, 2, "hash"),
    Scenario("b", 100_000, 8, 16, 1, "hash"),
    Scenario("b", 100_000, 8, 16, 2, "hash"),
    Scenario("b", 100_000, 8, 16, 4, "hash"),
]


# -- CPU time, from /proc -----------------------------------------------------------------------


def process_times() -> dict[int, tuple[int, float]]:
    """Every process: pid → (parent pid, CPU seconds so far in user and system mode, its own
    and its ended children's: PostgreSQL's backends come and go with the connection pools)."""
    table = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            line = stat.read_text()
        except OSError:  # gone meanwhile
            continue
        fields = line[line.rindex(")") + 2 :].split()  # after "pid (comm) "
        table[int(stat.parent.name)] = (
            int(fields[1]),
            sum(int(value) for value in fields[11:15]) / CLOCK_TICKS,  # [cu]utime, [cs]stime
        )
    return table


def tree_cpu_seconds(table: dict[int, tuple[int, float]], roots: list[int]) -> float:
    """CPU seconds of the processes `roots` and all their descendants."""
    children: dict[int, list[int]] = {}
    for pid, (parent, _) in table.items():
        children.setdefault(parent, []).append(pid)
    total, pending = 0.0, list(roots)
    while pending:
        pid = pending.pop()
        total += table.get(pid, (0, 0.0))[1]
        pending.extend(children.get(pid, []))
    return total


def machine_busy_seconds() -> float:
    """CPU seconds the machine spent not idle, over all cores (/proc/stat)."""
    values = [int(v) for v in Path("/proc/stat").read_text().splitlines()[0].split()[1:]]
    idle = values[3] + values[4]  # idle + iowait
    return (sum(values[:8]) - idle) / CLOCK_TICKS


# -- PostgreSQL: WAL position and rows written -------------------------------------------------

TABLE_ROWS = text(
    """
    SELECT c.relname, s.n_tup_ins + s.n_tup_upd + s.n_tup_del
    FROM pg_stat_user_tables s JOIN pg_class c ON c.oid = s.relid
    UNION ALL
    SELECT owner.relname || ' (TOAST)', s.n_tup_ins + s.n_tup_upd + s.n_tup_del
    FROM pg_stat_all_tables s JOIN pg_class owner ON owner.reltoastrelid = s.relid
    WHERE owner.relnamespace = 'public'::regnamespace
    """
)


def wal_position(lsn: str) -> int:
    """A WAL location `X/Y` (hexadecimal) as a byte offset."""
    high, low = lsn.split("/")
    return (int(high, 16) << 32) + int(low, 16)


class PostgresProbe:
    """One connection to the scenario's database, for WAL positions and table statistics."""

    def __init__(self, url: str) -> None:
        self.engine = create_engine(url, isolation_level="AUTOCOMMIT")

    def wal(self) -> int:
        with self.engine.connect() as connection:
            return wal_position(connection.execute(text("SELECT pg_current_wal_lsn()")).scalar())

    def rows(self) -> dict[str, int]:
        """Rows inserted, updated and deleted so far, by table (as the backends reported them:
        a backend reports when it ends, or within seconds of going idle)."""
        with self.engine.connect() as connection:
            connection.execute(text("SELECT pg_stat_clear_snapshot()"))
            return {name: int(count) for name, count in connection.execute(TABLE_ROWS)}

    def connections(self) -> int:
        """Connections opened to this database so far (`pg_stat_database.sessions`)."""
        with self.engine.connect() as connection:
            connection.execute(text("SELECT pg_stat_clear_snapshot()"))
            return connection.execute(
                text("SELECT sessions FROM pg_stat_database WHERE datname = current_database()")
            ).scalar_one()

    def dispose(self) -> None:
        self.engine.dispose()


@dataclass(frozen=True)
class Snapshot:
    at: float  # perf_counter
    load_generator: float  # CPU seconds of this process
    optaas: float
    nginx: float
    postgres: float | None  # None on the shared cluster (not this benchmark's alone)
    machine: float
    wal: int


class Parts:
    """The processes whose CPU time is counted, and the database whose WAL is."""

    def __init__(
        self,
        servers: list[LiveServer],
        proxy: NginxProxy | None,
        postgres_pid: int | None,
        probe: PostgresProbe,
    ) -> None:
        self.servers = [server.process.pid for server in servers]  # type: ignore[union-attr]
        self.proxy = [proxy.process.pid] if proxy is not None else []  # type: ignore[union-attr]
        self.postgres_pid = postgres_pid
        self.probe = probe

    def snapshot(self) -> Snapshot:
        table = process_times()
        return Snapshot(
            at=time.perf_counter(),
            load_generator=time.process_time(),
            optaas=tree_cpu_seconds(table, self.servers),
            nginx=tree_cpu_seconds(table, self.proxy),
            postgres=tree_cpu_seconds(table, [self.postgres_pid]) if self.postgres_pid else None,
            machine=machine_busy_seconds(),
            wal=self.probe.wal(),
        )


# -- the load generator --------------------------------------------------------------------------


@dataclass(frozen=True)
class Target:
    """What one client sends: a request head (without its Idempotency-Key) and bodies."""

    head: bytes
    bodies: list[bytes]

    def request_head(self) -> bytes:
        return self.head + b"Idempotency-Key: " + uuid.uuid4().hex.encode() + b"\r\n\r\n"


class Connection:
    """One kept-alive HTTP/1.1 connection that writes prepared requests and reads answers."""

    def __init__(self, host: str, port: int) -> None:
        self.host, self.port = host, port
        self.reader: asyncio.StreamReader | None = None
        self.writer: asyncio.StreamWriter | None = None

    async def open(self) -> None:
        self.reader, self.writer = await asyncio.open_connection(self.host, self.port)

    async def exchange(self, head: bytes, body: bytes) -> int:
        """Send one request, read its whole answer; the answer's status."""
        assert self.reader is not None and self.writer is not None
        self.writer.write(head)
        self.writer.write(body)
        await self.writer.drain()
        header = await self.reader.readuntil(b"\r\n\r\n")
        status = int(header[9:12])
        fields = header.lower()
        if b"\r\ntransfer-encoding: chunked" in fields:
            while size := int((await self.reader.readuntil(b"\r\n")).split(b";")[0], 16):
                await self.reader.readexactly(size + 2)
            await self.reader.readuntil(b"\r\n")
        else:
            start = fields.index(b"\r\ncontent-length:") + len(b"\r\ncontent-length:")
            await self.reader.readexactly(int(fields[start : fields.index(b"\r\n", start)]))
        return status

    async def close(self) -> None:
        if self.writer is not None:
            self.writer.close()
            await asyncio.gather(self.writer.wait_closed(), return_exceptions=True)


@dataclass
class Exchanges:
    """What the clients saw: (started, ended, status) per request, transport errors by kind."""

    requests: list[tuple[float, float, int]]
    transport_errors: Counter[str]


async def client_loop(
    target: Target, address: tuple[str, int], offset: int, stop_at: float, seen: Exchanges
) -> None:
    connection = Connection(*address)
    await connection.open()
    sent = offset
    while time.perf_counter() < stop_at:
        head, body = target.request_head(), target.bodies[sent % len(target.bodies)]
        sent += 1
        started = time.perf_counter()
        try:
            status = await connection.exchange(head, body)
        except (ConnectionError, asyncio.IncompleteReadError) as error:
            seen.transport_errors[type(error).__name__] += 1
            await connection.close()
            await connection.open()
            continue
        seen.requests.append((started, time.perf_counter(), status))
    await connection.close()


async def drive(
    targets: list[Target], address: tuple[str, int], parts: Parts, warmup: float, duration: float
) -> tuple[Exchanges, Snapshot, Snapshot]:
    """The clients run warm-up + duration; snapshots are taken at the window's two ends."""
    seen = Exchanges([], Counter())
    stop_at = time.perf_counter() + warmup + duration
    clients = [
        asyncio.create_task(client_loop(target, address, index, stop_at, seen))
        for index, target in enumerate(targets)
    ]
    await asyncio.sleep(warmup)
    before = await asyncio.to_thread(parts.snapshot)
    await asyncio.sleep(max(0.0, stop_at - time.perf_counter()))
    after = await asyncio.to_thread(parts.snapshot)
    await asyncio.gather(*clients)
    return seen, before, after


# -- a scenario ----------------------------------------------------------------------------------


def client_targets(
    scenario: Scenario, sessions: list[dict[str, Any]], address: tuple[str, int]
) -> list[Target]:
    rng = np.random.default_rng(1)
    bodies = [
        tensors_to_safetensors({"params": rng.standard_normal(scenario.size).astype(np.float32)})
        for _ in range(GRADIENT_VARIANTS)
    ]
    targets = []
    for index in range(scenario.clients):
        session = sessions[index % len(sessions)]
        head = (
            f"POST /v1/sessions/{session['id']}/step?return=none HTTP/1.1\r\n"
            f"Host: {address[0]}:{address[1]}\r\n"
            f"Authorization: Bearer {session['token']}\r\n"
            f"Content-Type: {SAFETENSORS_MEDIA_TYPE}\r\n"
            f"Content-Length: {len(bodies[0])}\r\n"
        ).encode()
        targets.append(Target(head, bodies))
    return targets


def window_figures(seen: Exchanges, before: Snapshot, after: Snapshot) -> dict[str, Any]:
    """Steps/s, latency and CPU per step of the part of the run between the two snapshots."""
    inside = [(s, e, status) for s, e, status in seen.requests if before.at <= s and e <= after.at]
    ended = [status for _, e, status in seen.requests if before.at <= e <= after.at]
    steps = ended.count(200)
    seconds = after.at - before.at
    latencies = [(e - s) * 1000 for s, e, status in inside if status == 200]

    def per_step_ms(name: str) -> float | None:
        start, end = getattr(before, name), getattr(after, name)
        return None if start is None else round((end - start) / steps * 1000, 2)

    return {
        "window_s": round(seconds, 2),
        "steps": steps,
        "steps_per_s": round(steps / seconds, 1),
        "p50_ms": round(percentile(latencies, 50), 1),
        "p99_ms": round(percentile(latencies, 99), 1),
        "answers_by_status": dict(Counter(str(status) for status in ended)),
        "errors": len(ended) - steps,
        "cpu_ms_per_step": {
            part: per_step_ms(part)
            for part in ("load_generator", "optaas", "nginx", "postgres", "machine")
        },
        "optaas_cores_busy": round((after.optaas - before.optaas) / seconds, 2),
        "machine_cores_busy": round((after.machine - before.machine) / seconds, 2),
        "wal_bytes_per_step": round((after.wal - before.wal) / steps),
        "wal_mb_per_s": round((after.wal - before.wal) / seconds / 1e6, 1),
    }


def run_scenario(
    scenario: Scenario, server_url: str, postgres_pid: int | None, args: argparse.Namespace
) -> dict[str, Any]:
    with ExitStack() as stack:
        directory = Path(stack.enter_context(tempfile.TemporaryDirectory()))
        url = create_postgres_database(server_url)
        stack.callback(drop_postgres_database, url)
        servers = [
            stack.enter_context(LiveServer(url, directory / f"server-{number}.log"))
            for number in range(scenario.processes)
        ]
        proxy = None
        address = ("127.0.0.1", servers[0].port)
        if scenario.routing != "direct":
            proxy = NginxProxy(
                [f"127.0.0.1:{server.port}" for server in servers],
                directory / "nginx",
                hashing=scenario.routing == "hash",
            )
            stack.enter_context(proxy)
            address = ("127.0.0.1", proxy.port)
        probe = PostgresProbe(url)
        stack.callback(probe.dispose)
        rows_before, connections_before = probe.rows(), probe.connections()
        if (
            proxy is not None
            and scenario.routing == "hash"
            and 1 < scenario.processes <= scenario.sessions
        ):
            sessions, candidates = evenly_hashed_sessions(scenario, servers[0], proxy)
        else:
            sessions = create_sessions(servers[0], scenario.sessions, scenario.size)
            candidates = len(sessions)
        targets = client_targets(scenario, sessions, address)  # type: ignore[arg-type]
        parts = Parts(servers, proxy, postgres_pid, probe)
        seen, before, after = asyncio.run(
            drive(targets, address, parts, args.warmup, args.duration)  # type: ignore[arg-type]
        )
        served = proxy_spread(proxy) if proxy is not None else None
        for server in servers:
            server.stop()  # its backends end, and report their statistics as they do
        time.sleep(1.0)
        rows_after, connections_after = probe.rows(), probe.connections()
    all_steps = sum(1 for *_, status in seen.requests if status == 200)
    rows = {
        table: round((rows_after[table] - rows_before.get(table, 0)) / all_steps, 1)
        for table in sorted(rows_after)
        if rows_after[table] != rows_before.get(table, 0)
    }
    return {
        **asdict(scenario),
        "label": scenario.label,
        **window_figures(seen, before, after),
        "transport_errors": dict(seen.transport_errors),
        "sessions_created": candidates,
        "rows_per_step": rows,
        "connections_opened_per_step": round(
            (connections_after - connections_before) / all_steps, 3
        ),
        "requests_by_process": served,
        "load_average_1min_after": round(os.getloadavg()[0], 2),
    }


def evenly_hashed_sessions(
    scenario: Scenario, server: LiveServer, proxy: NginxProxy
) -> tuple[list[dict[str, Any]], int]:
    """`scenario.sessions` sessions that nginx's hash spreads evenly over the processes, and how
    many were created to find them.

    Session ids are random, so a few sessions can land unevenly (8 on 2 processes split 7 / 1
    in one run): that measures luck, not the processes. Candidates are created in batches and
    each is read once through nginx; its access log says which process answered.
    """
    quota = scenario.sessions // scenario.processes
    chosen: list[dict[str, Any]] = []
    taken: Counter[str] = Counter()
    created = 0
    with httpx.Client(base_url=proxy.url, trust_env=False, timeout=60.0) as client:
        while len(chosen) < scenario.sessions:
            assert created < 50 * scenario.sessions, "nginx does not spread the sessions"
            batch = create_sessions(server, scenario.sessions, scenario.size)
            created += len(batch)
            for session in batch:
                headers = {"Authorization": f"Bearer {session['token']}"}
                client.get(f"/v1/sessions/{session['id']}", headers=headers).raise_for_status()
            owner = answered_by(proxy, [session["id"] for session in batch])
            for session in batch:
                process = owner[session["id"]]
                if taken[process] < quota and len(chosen) < scenario.sessions:
                    chosen.append(session)
                    taken[process] += 1
    return chosen, created


def answered_by(proxy: NginxProxy, sessions: list[str], timeout: float = 10.0) -> dict[str, str]:
    """Session → the process that answered its last request, from nginx's access log (which
    nginx writes once the answer is sent: a moment after the client has it)."""
    deadline = time.monotonic() + timeout
    while True:
        owner = {entry.session: entry.upstream for entry in proxy.requests() if entry.session}
        if all(session in owner for session in sessions) or time.monotonic() > deadline:
            return owner
        time.sleep(0.05)


def proxy_spread(proxy: NginxProxy) -> dict[str, dict[str, int]]:
    """From nginx's access log: per session, how many steps each process answered (with
    affinity, one process answers all of a session's)."""
    spread: dict[str, Counter[str]] = {}
    for entry in proxy.requests():
        if (
            entry.session
            and entry.method == "POST"
            and entry.uri.partition("?")[0].endswith("/step")
        ):
            spread.setdefault(entry.session, Counter())[entry.upstream] += 1
    return {session: dict(counts) for session, counts in spread.items()}


@contextmanager
def postgres_server(kind: str) -> Iterator[tuple[str, int | None]]:
    """The URL of the PostgreSQL server to measure on (no database), and its main process."""
    if kind == "shared":
        yield POSTGRES_SERVER_URL, None
        return
    cluster = PrivatePostgres().init()
    try:
        cluster.start(durable=True)
        yield cluster.server_url, cluster.postmaster_pid()
    finally:
        cluster.destroy()


# -- results -------------------------------------------------------------------------------------


def targets_met(results: list[dict[str, Any]]) -> dict[str, Any]:
    def rate(part: str, processes: int, routing: str) -> float | None:
        for result in results:
            key = (result["part"], result["processes"], result["routing"])
            if key == (part, processes, routing):
                return result["steps_per_s"]
        return None

    checks = {}
    one, proxied, hashed = rate("a", 1, "direct"), rate("a", 1, "hash"), rate("a", 2, "hash")
    if one and hashed:
        checks["affinity_over_one_process"] = round(hashed / one, 2)
    if proxied and hashed:  # the same path through nginx: what affinity alone costs or saves
        checks["affinity_over_one_process_behind_nginx"] = round(hashed / proxied, 2)
    round_robin = rate("a", 2, "round robin")
    if round_robin and hashed:
        checks["affinity_over_round_robin"] = round(hashed / round_robin, 2)
    one, two, four = rate("b", 1, "hash"), rate("b", 2, "hash"), rate("b", 4, "hash")
    if one and two:
        checks["two_over_one_process"] = round(two / one, 2)
    if one and four:
        checks["four_over_one_process"] = round(four / one, 2)
    return {
        name: {"ratio": ratio, "target": TARGETS.get(name), "met": ratio >= TARGETS[name]}
        if name in TARGETS
        else {"ratio": ratio}
        for name, ratio in checks.items()
    }


def ceiling(result: dict[str, Any], cpus: int) -> str:
    """The steps/s that `cpus` cores could carry at the parts' measured CPU time per step."""
    cpu = result["cpu_ms_per_step"]
    parts = ("load_generator", "optaas", "nginx", "postgres")
    if any(cpu[part] is None for part in parts):
        return "–"
    return f"{cpus * 1000 / sum(cpu[part] for part in parts):.0f}"


def markdown(report: dict[str, Any]) -> str:
    context = report["environment"]
    lines = [
        "# Replicas: one or more optaas processes, direct or behind nginx",
        "",
        f"{context['when']}, code {context['code']}, Python {context['python']}, "
        f"{context['cpus']} CPUs; 1-minute load average {report['load_average_1min_before']} "
        f"before, {context['load_average_1min']} after (the machine is shared: others' work "
        "is in it, and in the *machine* column). Adam float32, safetensors gradients, "
        "`?return=none`, an Idempotency-Key on every step; PostgreSQL "
        f"({report['postgres']}, durable defaults), one worker per optaas process, nginx with "
        f"one worker. Warm-up {report['warmup_s']} s, then a window of {report['duration_s']} s.",
        "",
        "| scenario | sessions × parameters | clients | steps/s | p50 ms | p99 ms | errors | "
        "CPU ms/step: load gen. | optaas | nginx | PostgreSQL | machine | optaas cores busy | "
        "WAL kB/step | WAL MB/s |",
        "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in report["results"]:
        cpu = r["cpu_ms_per_step"]
        lines.append(
            f"| {r['label']} | {r['sessions']} × {r['size']:.0e} | {r['clients']} | "
            f"{r['steps_per_s']} | {r['p50_ms']} | {r['p99_ms']} | {r['errors']} | "
            f"{cpu['load_generator']} | {cpu['optaas']} | {cpu['nginx']} | "
            f"{cpu['postgres'] if cpu['postgres'] is not None else '–'} | {cpu['machine']} | "
            f"{r['optaas_cores_busy']} | {r['wal_bytes_per_step'] / 1000:.0f} | "
            f"{r['wal_mb_per_s']} |"
        )
    lines += [
        "",
        "*CPU ms/step* is CPU time over the window divided by the steps in it; *machine* is the "
        "whole machine's (every core, everyone's work). The parts' own sum bounds the rate "
        f"{context['cpus']} cores can carry: {context['cpus']} × 1000 / (load generator + "
        "optaas + nginx + PostgreSQL) steps/s — "
        + "; ".join(f"{r['label']}: {ceiling(r, context['cpus'])}" for r in report["results"])
        + ".",
        "",
        "Targets:",
        "",
    ]
    for name, check in report["targets"].items():
        verdict = (
            f"target ≥ {check['target']}: {'met' if check['met'] else 'NOT met'}"
            if "met" in check
            else "no target"
        )
        lines.append(f"- {name.replace('_', ' ')}: {check['ratio']} ({verdict})")
    lines += ["", "Rows written per step, by table (whole run, session creation included):", ""]
    for r in report["results"]:
        rows = ", ".join(f"{table} {count}" for table, count in r["rows_per_step"].items())
        picked = (
            f"; the {r['sessions']} sessions picked from {r['sessions_created']} created"
            if r["sessions_created"] != r["sessions"]
            else ""
        )
        lines.append(
            f"- {r['label']}: {rows}; database connections opened per step "
            f"{r['connections_opened_per_step']}{picked}"
        )
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--duration", type=float, default=20.0, help="seconds measured")
    parser.add_argument("--warmup", type=float, default=4.0, help="seconds before the window")
    parser.add_argument("--only", choices=["a", "b"], help="run one part only")
    parser.add_argument("--postgres", choices=["private", "shared"], default="private")
    parser.add_argument("--name", default="replicas", help="results file name (no suffix)")
    args = parser.parse_args()
    scenarios = [s for s in SCENARIOS if args.only in (None, s.part)]
    load_before = round(os.getloadavg()[0], 2)
    results = []
    with postgres_server(args.postgres) as (server_url, postgres_pid):
        for scenario in scenarios:
            result = run_scenario(scenario, server_url, postgres_pid, args)
            results.append(result)
            print(
                f"{result['label']:<36} {result['steps_per_s']:7.1f} steps/s  "
                f"p50 {result['p50_ms']:7.1f} ms  p99 {result['p99_ms']:7.1f} ms  "
                f"errors {result['errors']}  CPU ms/step {result['cpu_ms_per_step']}  "
                f"WAL {result['wal_mb_per_s']} MB/s",
                flush=True,
            )
    report = {
        "environment": environment(),
        "load_average_1min_before": load_before,
        "postgres": args.postgres,
        "warmup_s": args.warmup,
        "duration_s": args.duration,
        "results": results,
        "targets": targets_met(results),
    }
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / f"{args.name}.json").write_text(json.dumps(report, indent=2) + "\n")
    text = markdown(report)
    (RESULTS / f"{args.name}.md").write_text(text)
    print(text)
    print(f"written to {RESULTS / args.name}.md and .json")


if __name__ == "__main__":
    main()
