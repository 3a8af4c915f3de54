"""Load: N concurrent clients stepping a few sessions, for a fixed time, on server processes.

`--servers` `optaas serve` processes (default 2) share a throw-away database (`--store`:
PostgreSQL by default, SQLite, or `memory`, which is one process only). Each client (an
asyncio task with its own HTTP connection) steps one session — client c steps session c mod S,
against server c mod the number of servers — as fast as answers come: Adam float32, JSON
gradients, `?return=none`, an `Idempotency-Key` on every step (what a careful client sends;
`--no-keys` leaves it out).
Measured: steps/s, latency percentiles, answers by status, transport errors, and the servers'
resident memory (RSS) at the start, every `--sample` seconds, and at the end. Afterwards each
session's step count is checked against the steps acknowledged for it.

    python benchmarks/load.py [--clients 16] [--sessions 4] [--duration 30] [--name load]
                              [--store postgresql|sqlite|memory] [--servers 2]

Prints a summary and writes benchmarks/results/<name>.{json,md}.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import tempfile
import time
import uuid
from collections import Counter
from contextlib import ExitStack
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import orjson

REPO_ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO_ROOT))

from benchmarks.service_step import database_url, environment, percentile  # noqa: E402
from tests.live_server import LiveServer  # noqa: E402

RESULTS = REPO_ROOT / "benchmarks" / "results"
GRADIENT_VARIANTS = 8


def rss_mib(pid: int) -> float:
    """Resident memory of a process, from /proc (Linux)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError(f"no VmRSS for process {pid}")


def servers_rss(servers: list[LiveServer]) -> list[float]:
    return [round(rss_mib(server.process.pid), 1) for server in servers]  # type: ignore[union-attr]


def create_sessions(server: LiveServer, count: int, size: int) -> list[dict[str, Any]]:
    rng = np.random.default_rng(0)
    sessions = []
    with server.client() as client:
        for _ in range(count):
            body = {
                "params": rng.standard_normal(size).astype(np.float32),
                "optimizer": {"type": "adam", "lr": 1e-3},
            }
            response = client.post(
                "/v1/sessions",
                content=orjson.dumps(body, option=orjson.OPT_SERIALIZE_NUMPY),
                headers={"Content-Type": "application/json"},
            )
            response.raise_for_status()
            sessions.append(response.json())
    return sessions


class Tally:
    """What the clients saw."""

    def __init__(self, sessions: int) -> None:
        self.latencies_ms: list[float] = []
        self.statuses: Counter[int] = Counter()
        self.transport_errors: Counter[str] = Counter()
        self.acknowledged = [0] * sessions


async def client_loop(
    index: int,
    servers: list[LiveServer],
    sessions: list[dict[str, Any]],
    bodies: list[bytes],
    deadline: float,
    tally: Tally,
    keys: bool,
) -> None:
    which = index % len(sessions)
    session = sessions[which]
    url = f"{servers[index % len(servers)].url}/v1/sessions/{session['id']}/step?return=none"
    headers = {"Authorization": f"Bearer {session['token']}", "Content-Type": "application/json"}
    async with httpx.AsyncClient(trust_env=False, timeout=60.0) as client:
        sent = 0
        while time.monotonic() < deadline:
            body = bodies[(index + sent) % len(bodies)]
            sent += 1
            started = time.perf_counter()
            key = {"Idempotency-Key": str(uuid.uuid4())} if keys else {}
            try:
                response = await client.post(url, content=body, headers={**headers, **key})
            except httpx.TransportError as error:
                tally.transport_errors[type(error).__name__] += 1
                continue
            tally.latencies_ms.append((time.perf_counter() - started) * 1000)
            tally.statuses[response.status_code] += 1
            if response.status_code == 200:
                tally.acknowledged[which] += 1


async def sample_rss(servers: list[LiveServer], every: float, deadline: float) -> list[Any]:
    samples = []
    started = time.monotonic()
    while time.monotonic() + every < deadline:
        await asyncio.sleep(every)
        samples.append([round(time.monotonic() - started), *servers_rss(servers)])
    return samples


async def drive(
    servers: list[LiveServer], sessions: list[dict[str, Any]], args: argparse.Namespace
) -> tuple[Tally, list[Any], float]:
    rng = np.random.default_rng(1)
    bodies = [
        orjson.dumps(
            {"gradients": rng.standard_normal(args.size).astype(np.float32), "loss": 1.0},
            option=orjson.OPT_SERIALIZE_NUMPY,
        )
        for _ in range(GRADIENT_VARIANTS)
    ]
    tally = Tally(len(sessions))
    started = time.monotonic()
    deadline = started + args.duration
    sampler = asyncio.create_task(sample_rss(servers, args.sample, deadline))
    await asyncio.gather(
        *(
            client_loop(index, servers, sessions, bodies, deadline, tally, args.keys)
            for index in range(args.clients)
        )
    )
    elapsed = time.monotonic() - started
    return tally, await sampler, elapsed


def final_steps(server: LiveServer, sessions: list[dict[str, Any]]) -> list[int]:
    with server.client() as client:
        return [
            client.get(
                f"/v1/sessions/{session['id']}",
                headers={"Authorization": f"Bearer {session['token']}"},
            ).json()["step"]
            for session in sessions
        ]


def run(args: argparse.Namespace) -> dict[str, Any]:
    if args.store == "memory" and args.servers != 1:
        raise SystemExit("the memory store is one server process: use --servers 1")
    with ExitStack() as stack:
        directory = Path(stack.enter_context(tempfile.TemporaryDirectory()))
        url = database_url(stack, args.store, directory)
        servers = [
            stack.enter_context(LiveServer(url, directory / f"server-{number}.log"))
            for number in range(args.servers)
        ]
        sessions = create_sessions(servers[0], args.sessions, args.size)
        rss_start = servers_rss(servers)
        tally, rss_samples, elapsed = asyncio.run(drive(servers, sessions, args))
        rss_end = servers_rss(servers)
        steps = final_steps(servers[-1], sessions)
    ok = tally.statuses.get(200, 0)
    return {
        "clients": args.clients,
        "sessions": args.sessions,
        "parameters": args.size,
        "servers": args.servers,
        "database": args.store,
        "idempotency_keys": args.keys,
        "duration_s": round(elapsed, 1),
        "steps": ok,
        "steps_per_s": round(ok / elapsed, 1),
        "p50_ms": round(percentile(tally.latencies_ms, 50), 2),
        "p99_ms": round(percentile(tally.latencies_ms, 99), 2),
        "max_ms": round(max(tally.latencies_ms), 2),
        "answers_by_status": {str(status): n for status, n in sorted(tally.statuses.items())},
        "errors": sum(n for status, n in tally.statuses.items() if status != 200)
        + sum(tally.transport_errors.values()),
        "transport_errors": dict(tally.transport_errors),
        "server_rss_mib_start": rss_start,
        "server_rss_mib_end": rss_end,
        "server_rss_mib_samples": rss_samples,
        "steps_stored_equal_acknowledged": steps == tally.acknowledged,
    }


def markdown(result: dict[str, Any], context: dict[str, Any]) -> str:
    samples = result["server_rss_mib_samples"]
    trend = ", ".join(
        f"{sample[0]}s: {'/'.join(map(str, sample[1:]))}"
        for sample in samples[:: max(1, len(samples) // 12)]
    )
    return "\n".join(
        [
            f"# Load: {result['clients']} clients, {result['sessions']} sessions, "
            f"{result['duration_s']} s, {result['servers']} server process(es), "
            f"{result['database']}",
            "",
            f"{context['when']}, Python {context['python']}, {context['cpus']} CPUs, 1-minute "
            f"load average {context['load_average_1min']} at the end. Clients, servers and the "
            "database on the same machine. Adam float32, "
            f"{result['parameters']:,} parameters, JSON, `?return=none`, "
            + ("an Idempotency-Key on every step." if result["idempotency_keys"] else "no keys."),
            "",
            "| steps | steps/s | p50 ms | p99 ms | max ms | errors | RSS start MiB | RSS end MiB |",
            "|---:|---:|---:|---:|---:|---:|---|---|",
            f"| {result['steps']:,} | {result['steps_per_s']} | {result['p50_ms']} | "
            f"{result['p99_ms']} | {result['max_ms']} | {result['errors']} | "
            f"{' / '.join(map(str, result['server_rss_mib_start']))} | "
            f"{' / '.join(map(str, result['server_rss_mib_end']))} |",
            "",
            f"Answers by status: {result['answers_by_status']}; transport errors: "
            f"{result['transport_errors'] or 'none'}. Stored step counts equal the acknowledged "
            f"steps per session: {'yes' if result['steps_stored_equal_acknowledged'] else 'NO'}.",
            "",
            f"Server RSS over time (MiB, per server): {trend or 'run too short'}.",
            "",
        ]
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--clients", type=int, default=16)
    parser.add_argument("--sessions", type=int, default=4)
    parser.add_argument("--size", type=int, default=1000, help="parameters per session")
    parser.add_argument("--duration", type=float, default=30.0, help="seconds of load")
    parser.add_argument("--sample", type=float, default=10.0, help="seconds between RSS samples")
    parser.add_argument("--name", default="load", help="results file name (without suffix)")
    parser.add_argument("--store", choices=["postgresql", "sqlite", "memory"], default="postgresql")
    parser.add_argument("--servers", type=int, default=2, help="server processes")
    parser.add_argument(
        "--no-keys", dest="keys", action="store_false", help="send no Idempotency-Key"
    )
    args = parser.parse_args()
    result = run(args)
    context = environment()
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / f"{args.name}.json").write_text(
        json.dumps({"environment": context, "result": result}, indent=2) + "\n"
    )
    text = markdown(result, context)
    (RESULTS / f"{args.name}.md").write_text(text)
    print(text)
    print(f"written to {RESULTS / args.name}.md and .json")


if __name__ == "__main__":
    main()
