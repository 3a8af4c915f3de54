"""Hostile clients: what they cost a server, and how `/healthz` answers meanwhile.

One `optaas serve` process on SQLite, with the default settings (rate limits included), takes:

(a) hanging declared-size bodies: 8 connections declare 512 MiB to a step of a random session
    with a made-up token, and 8 declare a JSON creation of the JSON limit (32 MiB) and send
    1 KiB of it, then all hang for `--hold` seconds;
(b) a 64 MB junk JSON body (`{"gradients":{"w":[[],[],…]}}`) posted with a made-up token;
(c) creations at 1,000 per second (open loop) for `--duration` seconds, from one address.

Throughout, `/healthz` is asked every 20 ms and the server's resident memory (VmRSS) read
every 20 ms; each scenario reports the growth over the memory before it, and `/healthz`'s p50
and max. Targets (issue 12): growth ≤ 64 MiB for (a), ≤ 256 MiB for (b), `/healthz` p50 ≤
20 ms throughout, the junk body answered in ≤ 1 s.

    python benchmarks/hostile.py [--hold 5] [--duration 5]

Prints the table and writes benchmarks/results/hostile.{json,md}.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import socket
import sys
import tempfile
import threading
import time
import uuid
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager, suppress
from pathlib import Path
from typing import Any

import httpx
import orjson

REPO_ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO_ROOT))

from app.config import Settings  # noqa: E402
from benchmarks.load import rss_mib  # noqa: E402
from benchmarks.service_step import context_line, environment, percentile  # noqa: E402
from tests.live_server import LiveServer  # noqa: E402

RESULTS = REPO_ROOT / "benchmarks" / "results"
MiB = 1024**2
SAMPLE_SECONDS = 0.02
TARGETS = {"a_growth_mib": 64, "b_growth_mib": 256, "healthz_p50_ms": 20, "junk_answer_s": 1.0}


class Watch:
    """Samples `/healthz` latency and the server's VmRSS on threads, while a scenario runs."""

    def __init__(self, server: LiveServer) -> None:
        self.server = server
        self.latencies: list[float] = []
        self.rss: list[float] = []
        self._stop = threading.Event()

    @contextmanager
    def running(self) -> Iterator[Watch]:
        self.baseline = rss_mib(self.server.process.pid)  # type: ignore[union-attr]
        threads = [threading.Thread(target=self._ask), threading.Thread(target=self._read)]
        for thread in threads:
            thread.start()
        try:
            yield self
        finally:
            self._stop.set()
            for thread in threads:
                thread.join()

    def _ask(self) -> None:
        with httpx.Client(base_url=self.server.url, trust_env=False, timeout=30) as client:
            while not self._stop.is_set():
                started = time.perf_counter()
                client.get("/healthz").raise_for_status()
                self.latencies.append((time.perf_counter() - started) * 1000)
                time.sleep(SAMPLE_SECONDS)

    def _read(self) -> None:
        while not self._stop.is_set():
            self.rss.append(rss_mib(self.server.process.pid))  # type: ignore[union-attr]
            time.sleep(SAMPLE_SECONDS)

    def summary(self) -> dict[str, float]:
        return {
            "rss_before_mib": round(self.baseline, 1),
            "rss_growth_mib": round(max(self.rss, default=self.baseline) - self.baseline, 1),
            "healthz_p50_ms": round(percentile(self.latencies, 50), 2),
            "healthz_max_ms": round(max(self.latencies), 2),
            "healthz_samples": len(self.latencies),
        }


def head(path: str, length: int, token: str | None) -> bytes:
    lines = [f"POST {path} HTTP/1.1", "Host: 127.0.0.1", "Content-Type: application/json"]
    lines.append(f"Content-Length: {length}")
    if token is not None:
        lines.append(f"Authorization: Bearer {token}")
    return ("\r\n".join(lines) + "\r\n\r\n").encode()


def status_of(connection: socket.socket) -> int | None:
    """The status of the answer on `connection`, if one came (None: still hanging)."""
    connection.settimeout(0.5)
    try:
        data = connection.recv(64)
    except TimeoutError:
        return None
    return int(data.split()[1]) if data.startswith(b"HTTP/1.1") else None


def hanging_bodies(server: LiveServer, hold: float, settings: Settings) -> dict[str, Any]:
    """(a): 8 × 512 MiB declared to a random session's step, 8 × the JSON limit declared to a
    creation with 1 KiB sent; held `hold` seconds."""
    with ExitStack() as stack:
        step_sockets = [
            stack.enter_context(socket.create_connection(("127.0.0.1", server.port)))
            for _ in range(8)
        ]
        create_sockets = [
            stack.enter_context(socket.create_connection(("127.0.0.1", server.port)))
            for _ in range(8)
        ]
        for connection in step_sockets:
            connection.sendall(head(f"/v1/sessions/{uuid.uuid4()}/step", 512 * MiB, "made-up"))
        for connection in create_sockets:
            connection.sendall(head("/v1/sessions", settings.max_json_body_bytes, None))
            connection.sendall(b" " * 1024)
        time.sleep(hold)
        return {
            "step_answers": dict(Counter(str(status_of(c)) for c in step_sockets)),
            "create_answers_while_hanging": dict(
                Counter(str(status_of(c)) for c in create_sockets)
            ),
        }


def junk_body(server: LiveServer) -> dict[str, Any]:
    """(b): 64 MB of `[],` posted to a random session with a made-up token; the time until the
    answer's first bytes arrive (the upload goes on, on its own thread, as long as the server
    reads it)."""
    junk = b'{"gradients":{"w":[' + b"[]," * (64 * MiB // 3) + b"[]]}}"
    with socket.create_connection(("127.0.0.1", server.port)) as connection:
        started = time.perf_counter()
        upload = threading.Thread(
            target=_send_quietly,
            args=(connection, head(f"/v1/sessions/{uuid.uuid4()}/step", len(junk), "x") + junk),
        )
        upload.start()
        connection.settimeout(60)
        first = connection.recv(64)
        seconds = time.perf_counter() - started
        connection.shutdown(socket.SHUT_RDWR)
        upload.join()
    return {"body_bytes": len(junk), "status": int(first.split()[1]), "answer_s": round(seconds, 3)}


def _send_quietly(connection: socket.socket, data: bytes) -> None:
    with suppress(OSError):  # the server answered and closed, or we shut the socket down
        connection.sendall(data)


CREATE = (
    b"POST /v1/sessions HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
    b"Content-Length: %d\r\n\r\n%s"
)


async def creation_flood(
    server: LiveServer, rate: float, duration: float, connections: int = 32
) -> dict[str, Any]:
    """(c): creations offered at `rate` per second for `duration` seconds, on `connections`
    keep-alive connections (raw HTTP/1.1: an HTTP library's own cost would limit the rate)."""
    body = orjson.dumps({"params": [0.5, -0.5], "optimizer": {"type": "sgd"}})
    request = CREATE % (len(body), body)
    statuses: Counter[str] = Counter()
    tickets: asyncio.Queue[None] = asyncio.Queue()

    async def client() -> None:
        reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
        try:
            while True:
                await tickets.get()
                writer.write(request)
                status_line = await reader.readline()
                length = 0
                while (line := await reader.readline()) not in (b"\r\n", b""):
                    if line.lower().startswith(b"content-length:"):
                        length = int(line.split(b":")[1])
                await reader.readexactly(length)
                statuses[status_line.split()[1].decode()] += 1
                tickets.task_done()
        finally:
            writer.close()

    clients = [asyncio.create_task(client()) for _ in range(connections)]
    started = time.perf_counter()
    offered = 0
    while (elapsed := time.perf_counter() - started) < duration:
        for _ in range(int(elapsed * rate) - offered):
            tickets.put_nowait(None)
            offered += 1
        await asyncio.sleep(0.001)
    await tickets.join()
    seconds = time.perf_counter() - started
    for task in clients:
        task.cancel()
    await asyncio.gather(*clients, return_exceptions=True)
    return {
        "offered": offered,
        "offered_per_s": round(offered / duration, 1),
        "answered_per_s": round(offered / seconds, 1),
        "answers": dict(statuses),
    }


def measure(server: LiveServer, name: str, scenario: Callable[[], dict[str, Any]]) -> dict:
    time.sleep(1)  # let the last scenario's connections close
    with Watch(server).running() as watch:
        outcome = scenario()
        time.sleep(0.5)
    row = {"scenario": name, **outcome, **watch.summary()}
    print(json.dumps(row))
    return row


def verdicts(rows: dict[str, dict]) -> list[dict[str, Any]]:
    a, b, c = rows["a"], rows["b"], rows["c"]
    checks = [
        ("(a) RSS growth MiB", a["rss_growth_mib"], TARGETS["a_growth_mib"]),
        ("(b) RSS growth MiB", b["rss_growth_mib"], TARGETS["b_growth_mib"]),
        ("(b) junk body answered, s", b["answer_s"], TARGETS["junk_answer_s"]),
        *(
            (f"({key}) /healthz p50 ms", row["healthz_p50_ms"], TARGETS["healthz_p50_ms"])
            for key, row in (("a", a), ("b", b), ("c", c))
        ),
    ]
    return [
        {"what": what, "value": value, "target": f"≤ {limit}", "met": value <= limit}
        for what, value, limit in checks
    ]


def markdown(results: dict[str, Any]) -> str:
    lines = [
        "# Hostile clients (benchmarks/hostile.py)",
        "",
        context_line(results["environment"]),
        "",
        "| scenario | answers | RSS before MiB | RSS growth MiB | /healthz p50 ms | max ms |",
        "|---|---|---|---|---|---|",
    ]
    for row in results["rows"]:
        answers = {
            key: row[key]
            for key in ("step_answers", "create_answers_while_hanging", "status", "answers")
            if key in row
        }
        lines.append(
            f"| {row['scenario']} | {json.dumps(answers)} | {row['rss_before_mib']} | "
            f"{row['rss_growth_mib']} | {row['healthz_p50_ms']} | {row['healthz_max_ms']} |"
        )
    lines += ["", "| target | measured | target | met |", "|---|---|---|---|"]
    for verdict in results["targets"]:
        met = "yes" if verdict["met"] else "**no**"
        lines.append(f"| {verdict['what']} | {verdict['value']} | {verdict['target']} | {met} |")
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--hold", type=float, default=5.0, help="seconds (a) holds its sockets")
    parser.add_argument("--duration", type=float, default=5.0, help="seconds of (c)")
    parser.add_argument("--rate", type=float, default=1000.0, help="creations per second (c)")
    args = parser.parse_args()
    settings = Settings(database_url="sqlite://")  # the defaults the server runs with
    env = {  # the defaults, which tests/live_server.py turns off for the test suite
        "OPTAAS_CREATION_RATE_LIMIT": settings.creation_rate_limit,
        "OPTAAS_PREVIEW_RATE_LIMIT": settings.preview_rate_limit,
    }
    with tempfile.TemporaryDirectory() as directory:
        url = f"sqlite:///{Path(directory) / 'optaas.sqlite3'}"
        with LiveServer(url, Path(directory) / "server.log", env=env) as server:
            rows = {
                "a": measure(
                    server,
                    "(a) 8 + 8 hanging bodies",
                    lambda: hanging_bodies(server, args.hold, settings),
                ),
                "b": measure(
                    server, "(b) 64 MB junk JSON, made-up token", lambda: junk_body(server)
                ),
                "c": measure(
                    server,
                    f"(c) creations at {args.rate:g}/s",
                    lambda: asyncio.run(creation_flood(server, args.rate, args.duration)),
                ),
            }
    results = {
        "environment": environment(),
        "rows": list(rows.values()),
        "targets": verdicts(rows),
    }
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "hostile.json").write_text(json.dumps(results, indent=2) + "\n")
    report = markdown(results)
    (RESULTS / "hostile.md").write_text(report)
    print(report)
    print(f"written to {RESULTS}/hostile.{{md,json}}")


if __name__ == "__main__":
    main()
