"""What a durable step costs PostgreSQL: the store's writes of an Adam float32 session.

Each step does to the database what a step of the service does at the store layer, in one
transaction committed with PostgreSQL's durable defaults: lock the session's row
(`SessionRepository.row(for_update=True)`), append the gradient to the step log
(`DatabaseArrays.append_log`: COPY) — or every `OPTAAS_CHECKPOINT_EVERY` (8) steps write a
checkpoint instead (`DatabaseArrays.save`: DELETE of the session's rows, COPY of θ, the two
moments and the step count) — and advance the row (one UPDATE). No HTTP and no optimizer: only
what reaches PostgreSQL, so that its share can be taken apart.

Three private clusters (`initdb` in temporary directories, PostgreSQL's durable defaults) are
stepped at the same time, one thread each, so that they share the machine alike and none has
idle time in which its autovacuum could catch up: A migrated to 0006 (the arrays' autovacuum
as the server has it), B to head (0007: the arrays' TOAST table vacuumed without the
cost-based delay), C as B on a server whose autovacuum wakes every 10 s instead of 60
(`autovacuum_naptime`, the deployment guide's advice for large sessions). The run lasts
minutes because autovacuum wakes once a minute by default and a vacuum of a grown table takes
longer: seconds show the write path of a new cluster, not the steady state. The figures are
per cluster; with three stepping at once on 2 cores, each steps at about a third of the rate
one would alone.

Measured per cluster: steps/s; CPU milliseconds per step of the session's backend, by phase
(lock, log, checkpoint, advance, commit: /proc's tick counts, summed over thousands of steps),
and of the whole cluster (autovacuum, checkpointer, WAL writer included); WAL bytes, records
and full-page images per step (`pg_stat_wal`); TOAST chunks inserted and deleted per step; and
after each window the TOAST table's size, its dead chunks and the autovacuums done. A cluster
stops stepping when the disk's free space falls under `--min-free-gb`.

    python benchmarks/pg_write.py [--windows 8] [--window 30] [--parameters 1000000]
                                  [--min-free-gb 12] [--name pg_write]

Prints the figures and writes benchmarks/results/<name>.{json,md}.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile
import threading
import time
from collections import defaultdict
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from sqlalchemy import create_engine, text

REPO_ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO_ROOT))

from app.store import migrate  # noqa: E402
from app.store.database import Database  # noqa: E402
from app.store.repository import SessionRepository  # noqa: E402
from app.store.steplog import LoggedStep  # noqa: E402
from benchmarks.replicas import (  # noqa: E402
    CLOCK_TICKS,
    process_times,
    tree_cpu_seconds,
    wal_position,
)
from benchmarks.service_step import RESULTS, environment  # noqa: E402
from tests.databases import PrivatePostgres, create_postgres_database  # noqa: E402
from tests.support import new_record  # noqa: E402

CHECKPOINT_EVERY = 8  # the default of OPTAAS_CHECKPOINT_EVERY
GRADIENT_VARIANTS = 4
PHASES = ("lock", "log", "checkpoint", "advance", "commit")

WAL_STATS = text("SELECT wal_records, wal_fpi, wal_bytes FROM pg_stat_wal")
TOAST_FACTS = text(
    """
    SELECT pg_relation_size(s.relid) AS bytes, s.n_tup_ins, s.n_tup_del, s.n_dead_tup,
           s.autovacuum_count
    FROM pg_stat_all_tables s JOIN pg_class c ON c.reltoastrelid = s.relid
    WHERE c.oid = 'session_arrays'::regclass
    """
)


def backend_cpu_seconds(pid: int) -> float:
    """CPU seconds (user + system) of one process so far."""
    line = Path(f"/proc/{pid}/stat").read_text()
    fields = line[line.rindex(")") + 2 :].split()
    return (int(fields[11]) + int(fields[12])) / CLOCK_TICKS


def adam_arrays(parameters: int) -> dict[str, np.ndarray]:
    """θ, the two moments and the step count of one Adam float32 tensor, as the store keeps them."""
    rng = np.random.default_rng(0)
    arrays = {
        key: rng.standard_normal(parameters).astype(np.float32)
        for key in ("param/params", "exp_avg/params", "exp_avg_sq/params")
    }
    arrays["step/params"] = np.array(0, np.int64)
    return arrays


@dataclass
class Cluster:
    """One private cluster, one session, and what its steps cost so far."""

    label: str
    revision: str
    parameters: int
    server_settings: dict[str, str] = field(default_factory=dict)
    """Set with ALTER SYSTEM before the run (a deployment's choice, not a migration's)."""
    server: PrivatePostgres = field(init=False)
    database: Database = field(init=False)
    session_id: Any = field(init=False)
    backend: int = 0
    steps: int = 0
    seconds: float = 0.0
    phase_seconds: dict[str, float] = field(default_factory=lambda: defaultdict(float))
    windows: list[dict[str, Any]] = field(default_factory=list)
    start: dict[str, float] = field(default_factory=dict)

    def open(self, arrays: dict[str, np.ndarray]) -> None:
        self.server = PrivatePostgres().init()
        self.server.start(durable=True)
        if self.server_settings:
            admin = create_engine(self.server.url, isolation_level="AUTOCOMMIT")
            with admin.connect() as connection:
                for name, value in self.server_settings.items():
                    connection.execute(text(f"ALTER SYSTEM SET {name} = '{value}'"))
                connection.execute(text("SELECT pg_reload_conf()"))
            admin.dispose()
        url = create_postgres_database(self.server.server_url)
        migrate.upgrade(url, self.revision)
        self.database = Database(url)
        record = new_record()
        self.session_id = record.id
        with self.database.transaction(write=True) as db:
            SessionRepository(db).add(record)
            db.flush()
            self.database.arrays.save(db, record.id, arrays)
        self.start = self.counters()

    def counters(self) -> dict[str, float]:
        """Cumulative figures: the cluster's CPU, WAL, TOAST chunks (stats as last reported)."""
        with self.database.transaction(write=False) as db:
            db.execute(text("SELECT pg_stat_clear_snapshot()"))
            records, fpi, _ = db.execute(WAL_STATS).one()
            lsn = db.execute(text("SELECT pg_current_wal_lsn()")).scalar_one()
            toast = db.execute(TOAST_FACTS).mappings().one()
        return {
            "cpu": tree_cpu_seconds(process_times(), [self.server.postmaster_pid()]),
            "wal_bytes": wal_position(lsn),
            "wal_records": int(records),
            "wal_fpi": int(fpi),
            "toast_inserted": toast["n_tup_ins"],
            "toast_deleted": toast["n_tup_del"],
            "toast_bytes": toast["bytes"],
            "toast_dead": toast["n_dead_tup"],
            "autovacuums": toast["autovacuum_count"],
        }

    def window(
        self, seconds: float, arrays: dict[str, np.ndarray], gradients: list[np.ndarray]
    ) -> None:
        """Step for `seconds` (or until the disk runs short), then note the TOAST table."""
        started = time.perf_counter()
        steps = 0
        while time.perf_counter() - started < seconds and disk_free_ok():
            self.step(arrays, gradients[self.steps % len(gradients)])
            steps += 1
        self.seconds += time.perf_counter() - started
        facts = self.counters()
        self.windows.append(
            {
                "steps": steps,
                "toast_mb": round(facts["toast_bytes"] / 1e6),
                "toast_dead_chunks": facts["toast_dead"],
                "autovacuums": facts["autovacuums"],
                "load_average_1min": round(os.getloadavg()[0], 2),
            }
        )

    def run(
        self,
        windows: int,
        seconds: float,
        arrays: dict[str, np.ndarray],
        gradients: list[np.ndarray],
    ) -> None:
        for index in range(windows):
            self.window(seconds, arrays, gradients)
            last = self.windows[-1]
            print(
                f"{self.label[:2]} window {index + 1}: {last['steps']} steps, TOAST "
                f"{last['toast_mb']} MB, {last['toast_dead_chunks']} dead chunks, "
                f"{last['autovacuums']} autovacuums",
                flush=True,
            )

    def step(self, arrays: dict[str, np.ndarray], gradient: np.ndarray) -> None:
        with self._phases() as phase, self.database.transaction(write=True) as db:
            repository = SessionRepository(db)
            row = repository.row(self.session_id, for_update=True)
            phase("lock")
            if (row.version + 1) % CHECKPOINT_EVERY == 0:
                self.database.arrays.save(db, self.session_id, arrays)
                phase("checkpoint")
            else:
                entry = LoggedStep(
                    version=row.version + 1,
                    step=row.step,
                    names=["params"],
                    config={},
                    schedule_state={},
                    loss=None,
                    partial=False,
                    gradients={"params": gradient},
                )
                self.database.arrays.append_log(db, self.session_id, entry)
                phase("log")
            repository.advance(row, step=row.step + 1, schedule_state={}, last_loss=None)
            phase("advance")
            if not self.backend:
                self.backend = db.execute(text("SELECT pg_backend_pid()")).scalar_one()
        self.steps += 1

    @contextmanager
    def _phases(self) -> Iterator[Any]:
        """`phase(name)` charges the backend's CPU since the last call to `name`; what is
        left when the transaction ends is the commit's."""
        last = [backend_cpu_seconds(self.backend) if self.backend else None]

        def phase(name: str) -> None:
            now = backend_cpu_seconds(self.backend) if self.backend else None
            if last[0] is not None and now is not None:
                self.phase_seconds[name] += now - last[0]
            last[0] = now

        yield phase
        phase("commit")

    def result(self) -> dict[str, Any]:
        self.database.dispose()  # backends report their statistics as they end
        time.sleep(1.0)
        end = self.counters()
        per_step = {key: (end[key] - self.start[key]) / self.steps for key in end}
        return {
            "label": self.label,
            "revision": self.revision,
            "steps": self.steps,
            "steps_per_s": round(self.steps / self.seconds, 1),
            "backend_cpu_ms_per_step": {
                name: round(self.phase_seconds[name] / self.steps * 1e3, 2) for name in PHASES
            },
            "cluster_cpu_ms_per_step": round(per_step["cpu"] * 1e3, 2),
            "wal_mb_per_step": round(per_step["wal_bytes"] / 1e6, 3),
            "wal_records_per_step": round(per_step["wal_records"]),
            "wal_fpi_per_step": round(per_step["wal_fpi"], 1),
            "toast_chunks_inserted_per_step": round(per_step["toast_inserted"]),
            "toast_chunks_deleted_per_step": round(per_step["toast_deleted"]),
            "windows": self.windows,
        }

    def close(self) -> None:
        if hasattr(self, "database"):
            self.database.dispose()
        if hasattr(self, "server"):
            self.server.destroy()


MIN_FREE_BYTES = [12e9]


def disk_free_ok() -> bool:
    """Whether the clusters' disk (the temporary directory's) still has room to grow."""
    return shutil.disk_usage(tempfile.gettempdir()).free > MIN_FREE_BYTES[0]


def markdown(report: dict[str, Any]) -> str:
    env = report["environment"]
    lines = [
        "# What a durable step costs PostgreSQL (store writes only, Adam float32)",
        "",
        f"{env['when']}, code {env['code']}, Python {env['python']}, {env['cpus']} CPUs; "
        f"1-minute load average {report['load_average_1min_before']} before, "
        f"{env['load_average_1min']} after (a shared machine: CPU times include contention). "
        f"{report['parameters']:.0e} parameters, a checkpoint every {CHECKPOINT_EVERY} steps; "
        f"{report['windows']} windows of {report['window_s']} s, the clusters stepped at once.",
        "",
        "| cluster | steps | steps/s | backend CPU ms/step: lock | log | checkpoint | advance "
        "| commit | cluster CPU ms/step | WAL MB/step | WAL records/step | full-page images/step "
        "| TOAST chunks inserted/step | deleted/step |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in report["results"]:
        cpu = r["backend_cpu_ms_per_step"]
        lines.append(
            f"| {r['label']} | {r['steps']} | {r['steps_per_s']} | "
            + " | ".join(str(cpu[name]) for name in PHASES)
            + f" | {r['cluster_cpu_ms_per_step']} | {r['wal_mb_per_step']} | "
            f"{r['wal_records_per_step']} | {r['wal_fpi_per_step']} | "
            f"{r['toast_chunks_inserted_per_step']} | {r['toast_chunks_deleted_per_step']} |"
        )
    lines += [
        "",
        "*backend*: the session's connection, by phase (a checkpoint step's `checkpoint` is its "
        "DELETE and COPY; the figure is per step over all steps); *cluster*: every process of "
        "the cluster (autovacuum, checkpointer, WAL writer included).",
        "",
        "The TOAST table after each window (MB, dead chunks, autovacuums done):",
        "",
        "| window | " + " | ".join(r["label"] for r in report["results"]) + " |",
        "|---:|" + "---|" * len(report["results"]),
    ]
    for index in range(report["windows"]):
        cells = []
        for r in report["results"]:
            w = r["windows"][index]
            cells.append(
                f"{w['toast_mb']} MB, {w['toast_dead_chunks']} dead, {w['autovacuums']} vacuums"
            )
        lines.append(f"| {index + 1} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--windows", type=int, default=8, help="windows per cluster")
    parser.add_argument("--window", type=float, default=30.0, help="seconds per window")
    parser.add_argument("--parameters", type=int, default=1_000_000)
    parser.add_argument("--min-free-gb", type=float, default=12.0, help="stop stepping below")
    parser.add_argument("--name", default="pg_write", help="results file name (no suffix)")
    args = parser.parse_args()
    MIN_FREE_BYTES[0] = args.min_free_gb * 1e9
    load_before = round(os.getloadavg()[0], 2)
    arrays = adam_arrays(args.parameters)
    rng = np.random.default_rng(1)
    gradients = [
        rng.standard_normal(args.parameters).astype(np.float32) for _ in range(GRADIENT_VARIANTS)
    ]
    clusters = [
        Cluster("A: autovacuum as the server has it (0006)", "0006", args.parameters),
        Cluster("B: the arrays' TOAST vacuumed unthrottled (0007)", "head", args.parameters),
        Cluster(
            "C: as B, autovacuum_naptime 10 s",
            "head",
            args.parameters,
            {"autovacuum_naptime": "10s"},
        ),
    ]
    try:
        for cluster in clusters:
            cluster.open(arrays)
        threads = [
            threading.Thread(
                target=cluster.run, args=(args.windows, args.window, arrays, gradients)
            )
            for cluster in clusters
        ]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        results = [cluster.result() for cluster in clusters]
    finally:
        for cluster in clusters:
            cluster.close()
    report = {
        "environment": environment(),
        "load_average_1min_before": load_before,
        "parameters": args.parameters,
        "windows": args.windows,
        "window_s": args.window,
        "results": results,
    }
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / f"{args.name}.json").write_text(json.dumps(report, indent=2) + "\n")
    text_report = markdown(report)
    (RESULTS / f"{args.name}.md").write_text(text_report)
    print(text_report)
    print(f"written to {RESULTS / args.name}.md and .json")


if __name__ == "__main__":
    main()
