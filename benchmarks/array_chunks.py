"""How large a row of an array should be: a checkpoint of Adam's θ, m and v written and read
back through the store, by chunk size, on SQLite and PostgreSQL, side by side in one run.

    python benchmarks/array_chunks.py [--parameters 10000000] [--repeats 3]

Prints the median write and read time and the read's peak extra memory per chunk size, and
writes benchmarks/results/array_chunks.{json,md}. The machine's load is recorded.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
import tracemalloc
from contextlib import ExitStack
from pathlib import Path

import numpy as np

REPO_ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO_ROOT))

from app.stepping import SessionArrays  # noqa: E402
from app.store.database import Database  # noqa: E402
from app.store.migrate import upgrade  # noqa: E402
from app.store.repository import SessionRepository  # noqa: E402
from benchmarks.service_step import RESULTS  # noqa: E402
from tests.databases import create_postgres_database, drop_postgres_database  # noqa: E402
from tests.support import new_record  # noqa: E402

MIB = 1024**2
CHUNK_SIZES = [1 * MIB, 4 * MIB, 16 * MIB, 64 * MIB]


def measure(url: str, chunk_bytes: int, arrays: dict[str, np.ndarray], repeats: int) -> dict:
    database = Database(url, chunk_bytes=chunk_bytes)
    writes, reads, peaks = [], [], []
    try:
        for _ in range(repeats):
            record = new_record()
            started = time.perf_counter()
            with database.transaction(write=True) as db:
                repository = SessionRepository(db)
                repository.add(record)
                SessionArrays(db).save(record.id, arrays)
            writes.append(time.perf_counter() - started)
            tracemalloc.start()
            started = time.perf_counter()
            with database.transaction(write=False) as db:
                loaded = SessionArrays(db).load(record.id, writable=True)
            reads.append(time.perf_counter() - started)
            peaks.append(tracemalloc.get_traced_memory()[1])
            tracemalloc.stop()
            del loaded
            with database.transaction(write=True) as db:
                SessionRepository(db).delete(SessionRepository(db).get(record.id))
    finally:
        database.dispose()
    data_bytes = sum(array.nbytes for array in arrays.values())
    return {
        "chunk_mib": chunk_bytes / MIB,
        "write_s": statistics.median(writes),
        "read_s": statistics.median(reads),
        "read_peak_over_data": statistics.median(peaks) / data_bytes,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--parameters", type=int, default=10_000_000)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    rng = np.random.default_rng(0)
    arrays = {
        f"{slot}/w": rng.standard_normal(args.parameters, dtype=np.float32)
        for slot in ("param", "exp_avg", "exp_avg_sq")
    }
    load_before = os.getloadavg()
    rows = []
    with ExitStack() as stack:
        directory = stack.enter_context(tempfile.TemporaryDirectory())
        postgres = create_postgres_database()
        stack.callback(drop_postgres_database, postgres)
        urls = {"sqlite": f"sqlite:///{directory}/chunks.sqlite3", "postgresql": postgres}
        for url in urls.values():
            upgrade(url)
        for chunk_bytes in CHUNK_SIZES:
            for store, url in urls.items():
                row = {"store": store, **measure(url, chunk_bytes, arrays, args.repeats)}
                rows.append(row)
                print(json.dumps(row))
    result = {
        "parameters": args.parameters,
        "bytes": sum(array.nbytes for array in arrays.values()),
        "load_before": load_before,
        "load_after": os.getloadavg(),
        "rows": rows,
    }
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "array_chunks.json").write_text(json.dumps(result, indent=2) + "\n")
    lines = [
        f"# Array chunks: a checkpoint of {args.parameters:.0e} float32 Adam parameters "
        f"({result['bytes'] / MIB:.0f} MiB), written and read back",
        "",
        f"Load average before {load_before[0]:.1f}, after {result['load_after'][0]:.1f}. "
        "Median of the repeats; read peak: Python's traced allocations during the read "
        "(the arrays included) ÷ the arrays' bytes.",
        "",
        "| chunk | store | write s | read s | read peak ÷ data |",
        "|---|---|---|---|---|",
    ]
    for row in rows:
        lines.append(
            f"| {row['chunk_mib']:g} MiB | {row['store']} | {row['write_s']:.3f} | "
            f"{row['read_s']:.3f} | {row['read_peak_over_data']:.2f} |"
        )
    (RESULTS / "array_chunks.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
