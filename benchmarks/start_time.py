"""A server's start, cold and warm: from `optaas serve` to the first 200 from /readyz, and the
first steps after it.

Cold: numba's disk cache (`NUMBA_CACHE_DIR`) empty, so the server compiles every optimizer
kernel before it reports ready. Warm: the same cache, filled by the cold start (what an
installed server, or the Docker image, whose build fills it, meets). After each start, one
Adam session of 1e3 float32 parameters is created and stepped: the first step must cost what
the later ones cost (no compiler on the step's path). memory:// database, one process.

    python benchmarks/start_time.py [--warm-runs 3]

Prints the table and writes benchmarks/results/start_time.{json,md}.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

REPO_ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO_ROOT))

from benchmarks.service_step import RESULTS, context_line, environment  # noqa: E402
from tests import live_server  # noqa: E402

SIZE = 1_000
STEPS = 20


def step_times(server: live_server.LiveServer) -> list[float]:
    """Milliseconds of the first STEPS steps of a fresh Adam session, as the client sees them."""
    with server.client() as client:
        created = client.post(
            "/v1/sessions",
            json={"params": [0.0] * SIZE, "optimizer": {"type": "adam", "lr": 1e-3}},
        )
        created.raise_for_status()
        session = created.json()
        headers = {"Authorization": f"Bearer {session['token']}"}
        times = []
        for index in range(STEPS):
            body = {"gradients": [float((index + j) % 7) - 3.0 for j in range(SIZE)]}
            started = time.perf_counter()
            answer = client.post(
                f"/v1/sessions/{session['id']}/step?return=none", json=body, headers=headers
            )
            times.append((time.perf_counter() - started) * 1e3)
            answer.raise_for_status()
    return times


def start_once(cache: Path, label: str, directory: Path) -> dict[str, Any]:
    server = live_server.LiveServer(
        "memory://", directory / f"{label}.log", env={"NUMBA_CACHE_DIR": str(cache)}
    )
    started = time.perf_counter()
    server.start()
    try:
        ready = time.perf_counter() - started
        steps = step_times(server)
    finally:
        server.stop()
    row = {
        "start": label,
        "ready_s": round(ready, 2),
        "first_step_ms": round(steps[0], 2),
        "later_steps_p50_ms": round(statistics.median(steps[1:]), 2),
    }
    print(
        f"{label:<6} ready after {row['ready_s']:6.2f} s; first step "
        f"{row['first_step_ms']:7.2f} ms, later steps p50 {row['later_steps_p50_ms']:6.2f} ms",
        flush=True,
    )
    return row


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--warm-runs", type=int, default=3)
    args = parser.parse_args()
    live_server.START_TIMEOUT_SECONDS = 900.0  # a cold start compiles, on a busy machine too
    load_before = os.getloadavg()[0]
    with tempfile.TemporaryDirectory() as scratch:
        directory = Path(scratch)
        cache = directory / "numba-cache"
        rows = [start_once(cache, "cold", directory)]
        rows += [start_once(cache, "warm", directory) for _ in range(args.warm_runs)]
    context = environment()
    lines = [
        "# Server start, cold and warm (memory://, one process)",
        "",
        context_line(context),
        f"1-minute load average at the start: {load_before:.2f}.",
        "",
        "cold: numba's cache empty (the kernels are compiled before /readyz answers); warm: the "
        "cache the cold start filled. `ready`: from `optaas serve` to the first 200 of /readyz "
        "(migrations, imports, kernels); steps: Adam, 1e3 float32 parameters, JSON, as the "
        "client sees them.",
        "",
        "| start | ready s | first step ms | later steps p50 ms |",
        "|---|---:|---:|---:|",
        *(
            f"| {r['start']} | {r['ready_s']:.2f} | {r['first_step_ms']:.2f} | "
            f"{r['later_steps_p50_ms']:.2f} |"
            for r in rows
        ),
        "",
    ]
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "start_time.json").write_text(
        json.dumps({"environment": context, "load_before": load_before, "rows": rows}, indent=2)
        + "\n"
    )
    (RESULTS / "start_time.md").write_text("\n".join(lines))
    print("\n".join(lines))


if __name__ == "__main__":
    main()
