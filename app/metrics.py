"""Prometheus metrics (prometheus-client), correct across several server processes.

`optaas serve` runs prometheus-client's multiprocess mode: before any worker starts it points
`PROMETHEUS_MULTIPROC_DIR` at a fresh, empty directory (`app.cli.prepare_metrics_dir`), every worker
process writes its counters and histograms to files there, and a scrape sums the files of all
processes (`MultiProcessCollector`). The session count is not a per-process number: a collector
counts the rows of `sessions` at scrape time, so any worker gives the same answer.

Without `PROMETHEUS_MULTIPROC_DIR` (the app run in-process, e.g. by uvicorn directly) the metrics
are the one process's own.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterator

from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.multiprocess import MultiProcessCollector
from prometheus_client.registry import Collector
from sqlalchemy import func, select
from sqlalchemy.exc import SQLAlchemyError

from app.config import PROMETHEUS_MULTIPROC_ENV
from app.store.database import Database
from app.store.models import SessionRecord

logger = logging.getLogger(__name__)

STEPS = Counter(
    "optaas_steps",
    "Step requests answered, by the session's optimizer type ('unknown' when the request was "
    "refused before its session was read) and outcome: applied, skipped (non-finite gradient "
    "under nonfinite=skip), accumulated (202: counted toward a step that awaits more gradients), "
    "rejected (an error answer), replayed (an idempotent repeat).",
    ["optimizer", "outcome"],
    registry=None,
)
STEP_LATENCY = Histogram(
    "optaas_step_latency_seconds",
    "Time from a step request's arrival to its answer, for steps applied or skipped.",
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30),
    registry=None,
)
REQUEST_BYTES = Histogram(
    "optaas_request_body_bytes",
    "Bytes of request body the server read, by route template (a request refused before its "
    "body was read counts 0).",
    ["route"],
    buckets=tuple(4.0**power for power in range(4, 16)),  # 256 B … 1 GiB
    registry=None,
)
REJECTIONS = Counter(
    "optaas_rejections",
    "Requests answered with an error, by HTTP status and problem type (the slug of "
    "/problems/<slug>).",
    ["status", "slug"],
    registry=None,
)
PROCESS_METRICS = (STEPS, STEP_LATENCY, REQUEST_BYTES, REJECTIONS)


class SessionCount(Collector):
    """`optaas_sessions`: the number of sessions stored, counted at scrape time."""

    def __init__(self, database: Database) -> None:
        self.database = database

    def collect(self) -> Iterator[Metric]:
        try:
            with self.database.transaction(write=False) as db:
                count = db.scalar(select(func.count()).select_from(SessionRecord))
        except SQLAlchemyError as error:  # the other metrics are still worth a scrape
            logger.warning("optaas_sessions not collected: %s", type(error).__name__)
            return
        yield GaugeMetricFamily("optaas_sessions", "Sessions stored in the database.", count)


def scrape(database: Database) -> bytes:
    """The Prometheus text exposition: every process's metrics (summed) and the session count."""
    registry = CollectorRegistry(auto_describe=False)
    if os.environ.get(PROMETHEUS_MULTIPROC_ENV):
        MultiProcessCollector(registry)
    else:
        for metric in PROCESS_METRICS:
            registry.register(metric)
    registry.register(SessionCount(database))
    return generate_latest(registry)
