"""Replicas behind a real nginx (deploy/nginx.conf): session affinity, and `kill -9` of a replica.

Two `optaas serve` processes with the same configuration share one PostgreSQL database behind
Debian's nginx, configured by the repository's deploy/nginx.conf (tests/proxy.py). Two clients per
session step several float64 sessions at once through the proxy, every step with `If-Match` (the
step its gradient was computed at) and an `Idempotency-Key` named for that step, retried with
both after a 502/503 or a broken connection. A third of the way in, the replica that serves the
most sessions is killed with SIGKILL. Then:

- every session ends at exactly its number of steps, with θ equal — bit for bit — to the optimizer
  core run in this process on the same gradients, and so is θ in every answer a client got (no
  acknowledged step lost, none applied twice); the history holds each step once;
- before the kill, every request about a session went to one replica (the consistent hash on the
  session id), and creations were spread over both (round robin);
- after it, the survivor served the dead replica's sessions. The servers checkpoint θ and state
  only when a session changes hands (OPTAAS_CHECKPOINT_EVERY is huge), so what the dead replica
  stepped existed only as its step log: the survivor continued from the checkpoint plus the log;
- each replica saw the client's own address (nginx's X-Forwarded-For), never the one the client
  claimed in that header itself.

Without nginx the test is skipped with the reason, unless OPTAAS_REQUIRE_NGINX=1 (set by .ci/run).
"""

from __future__ import annotations

import json
import os
import threading
import time
from collections import Counter, defaultdict
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest

from tests.conftest import StartServer
from tests.live_server import LiveServer
from tests.proxy import NGINX, NginxProxy, ProxiedRequest
from tests.support import CoreRun, bearer, create_session, json_bytes, read_tensors

pytestmark = [pytest.mark.slow, pytest.mark.system, pytest.mark.postgres]

REQUIRE_NGINX = os.environ.get("OPTAAS_REQUIRE_NGINX") == "1"
OPTIMIZERS = [
    {"type": "adam", "lr": 0.05},
    {"type": "adamw", "lr": 0.05, "amsgrad": True},
    {"type": "sgd", "lr": 0.02, "momentum": 0.9, "nesterov": True},
    {"type": "rmsprop", "lr": 0.01, "centered": True, "momentum": 0.5},
    {"type": "adagrad", "lr": 0.1},
    {"type": "lion", "lr": 0.01},
]
STEPS = 36
CLIENTS_PER_SESSION = 2
KILL_AFTER = len(OPTIMIZERS) * STEPS // 3  # acknowledged steps, over all sessions
CLIENT_ADDRESS = "127.0.0.2"  # clients connect from here; nginx connects from 127.0.0.1
CLAIMED_ADDRESS = "203.0.113.7"  # what every client claims to be, in its own X-Forwarded-For
RETRY_DEADLINE_SECONDS = 30.0
RETRIED_STATUSES = {502, 503, 504}
SETTLE_SECONDS = 0.5


@pytest.fixture
def nginx_present() -> None:
    if not Path(NGINX).exists():
        reason = f"no nginx at {NGINX} (Debian: apt-get install nginx; or OPTAAS_TEST_NGINX)"
        if REQUIRE_NGINX:
            pytest.fail(f"OPTAAS_REQUIRE_NGINX=1 but {reason}")
        pytest.skip(reason)


@pytest.fixture
def replicas(nginx_present, postgres_url: str, start_server: StartServer) -> list[LiveServer]:
    env = {"OPTAAS_LOG_FORMAT": "json", "OPTAAS_CHECKPOINT_EVERY": "100000"}
    return [start_server(postgres_url, env=env, log_level="info") for _ in range(2)]


@pytest.fixture
def proxy(replicas: list[LiveServer], tmp_path: Path) -> Iterator[NginxProxy]:
    addresses = [f"127.0.0.1:{server.port}" for server in replicas]
    with NginxProxy(addresses, tmp_path / "nginx") as running:
        yield running


def gradient(index: int, t: int, theta: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Session `index`'s gradient at step t: θ pulled towards 1, plus noise fixed by (index, t)."""
    rng = np.random.default_rng([index, t])
    return {
        name: 0.5 * (value - 1.0) + rng.standard_normal(value.shape)
        for name, value in theta.items()
    }


@dataclass
class Run:
    """One session under test: its id and token, and every θ a client was answered with."""

    index: int
    id: str
    token: str
    theta0: dict[str, np.ndarray]
    acknowledged: dict[int, list[dict[str, np.ndarray]]] = field(
        default_factory=lambda: defaultdict(list)
    )

    @property
    def headers(self) -> dict[str, str]:
        return {**bearer(self.token), "X-Forwarded-For": CLAIMED_ADDRESS}


class Clients:
    """Threads stepping the runs through the proxy, two per session, until each is at STEPS."""

    def __init__(self, proxy: NginxProxy, runs: list[Run]) -> None:
        self.proxy = proxy
        self.runs = runs
        self.lock = threading.Lock()
        self.acknowledged = 0
        self.retries: Counter[str] = Counter()
        self.failures: list[BaseException] = []
        self.threads = [
            threading.Thread(target=self._guarded, args=(run,), daemon=True)
            for run in runs
            for _ in range(CLIENTS_PER_SESSION)
        ]

    def start(self) -> None:
        for thread in self.threads:
            thread.start()

    def join(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        for thread in self.threads:
            thread.join(max(0.0, deadline - time.monotonic()))
        assert not any(thread.is_alive() for thread in self.threads), "clients did not finish"
        if self.failures:
            raise self.failures[0]

    def _guarded(self, run: Run) -> None:
        try:
            self._step_until_done(run)
        except BaseException as error:  # reported by join()
            self.failures.append(error)

    def _step_until_done(self, run: Run) -> None:
        transport = httpx.HTTPTransport(local_address=CLIENT_ADDRESS)
        with httpx.Client(
            base_url=self.proxy.url, transport=transport, trust_env=False, timeout=30.0
        ) as client:
            t, theta = 0, run.theta0
            while t < STEPS:
                answer = self._post_step(client, run, t, gradient(run.index, t, theta))
                if answer.status_code == 412:  # another client stepped first: read where it is
                    t, theta = self._read_params(client, run)
                    continue
                body = answer.json()
                t, theta = body["step"], read_tensors(body["params"], "float64")
                with self.lock:
                    run.acknowledged[t].append(theta)
                    self.acknowledged += 1

    def _post_step(
        self, client: httpx.Client, run: Run, t: int, grads: dict[str, np.ndarray]
    ) -> httpx.Response:
        """The step from t, sent until a replica answers it (200, or 412 if t is past)."""
        headers = {
            **run.headers,
            "Content-Type": "application/json",
            "If-Match": f'"{t}"',
            "Idempotency-Key": f"step-{t}",
        }
        body = json_bytes({"gradients": grads})
        return self._until_answered(
            lambda: client.post(f"/v1/sessions/{run.id}/step", content=body, headers=headers),
            expected={200, 412},
        )

    def _read_params(self, client: httpx.Client, run: Run) -> tuple[int, dict[str, np.ndarray]]:
        answer = self._until_answered(
            lambda: client.get(f"/v1/sessions/{run.id}/params", headers=run.headers),
            expected={200},
        )
        body = answer.json()
        return body["step"], read_tensors(body["params"], "float64")

    def _until_answered(self, send: Any, expected: set[int]) -> httpx.Response:
        deadline = time.monotonic() + RETRY_DEADLINE_SECONDS
        while True:
            try:
                answer = send()
            except httpx.TransportError as error:
                outcome = type(error).__name__
            else:
                if answer.status_code in expected:
                    return answer
                assert answer.status_code in RETRIED_STATUSES, answer.text
                outcome = str(answer.status_code)
            with self.lock:
                self.retries[outcome] += 1
            assert time.monotonic() < deadline, f"no answer in {RETRY_DEADLINE_SECONDS} s"
            time.sleep(0.05)


def create_runs(proxy: NginxProxy) -> list[Run]:
    runs = []
    with httpx.Client(base_url=proxy.url, trust_env=False, timeout=30.0) as client:
        for index, optimizer in enumerate(OPTIMIZERS):
            rng = np.random.default_rng(index)
            theta0 = {"w": rng.standard_normal((4, 8)), "b": rng.standard_normal(8)}
            created = create_session(
                client,
                {"params": theta0, "dtype": "float64", "optimizer": optimizer},
            )
            runs.append(Run(index, created["id"], created["token"], theta0))
    return runs


def reference_thetas(run: Run, view: dict[str, Any]) -> list[dict[str, np.ndarray]]:
    """θ_0 … θ_STEPS of the same session stepped by the optimizer core in this process."""
    core = CoreRun(view, run.theta0)
    thetas = [{name: value.copy() for name, value in core.params.items()}]
    for t in range(STEPS):
        core.step(gradient(run.index, t, core.params))
        thetas.append({name: value.copy() for name, value in core.params.items()})
    return thetas


def answered_by(entries: list[ProxiedRequest]) -> dict[str, set[str]]:
    """Session → the replicas that answered its requests (502s and the like left out)."""
    replicas: dict[str, set[str]] = defaultdict(set)
    for entry in entries:
        if entry.session and entry.status < 500:
            replicas[entry.session].add(entry.upstream)
    return replicas


def access_log_clients(server: LiveServer) -> Counter[str]:
    """The client addresses in a replica's access log (JSON lines, `client` = host:port)."""
    clients: Counter[str] = Counter()
    for line in server.log_path.read_text(errors="replace").splitlines():
        if line.startswith("{"):
            record = json.loads(line)
            if record.get("logger") == "optaas.access" and record.get("client"):
                clients[record["client"].rsplit(":", 1)[0]] += 1
    return clients


def test_sessions_stick_to_a_replica_and_survive_its_kill_9_exactly(replicas, proxy):
    runs = create_runs(proxy)
    addresses = {f"127.0.0.1:{server.port}": server for server in replicas}
    creations = [entry for entry in proxy.requests() if entry.uri == "/v1/sessions"]
    assert {entry.upstream for entry in creations} == set(addresses), "not round robin"

    clients = Clients(proxy, runs)
    clients.start()
    while clients.acknowledged < KILL_AFTER and not clients.failures:
        time.sleep(0.01)
    before_kill = proxy.requests()
    sessions_of: dict[str, set[str]] = defaultdict(set)
    for session, answering in answered_by(before_kill).items():
        assert len(answering) == 1, f"session {session} was served by {answering}"
        sessions_of[answering.pop()].add(session)
    victim_address = max(addresses, key=lambda address: len(sessions_of[address]))
    addresses[victim_address].kill()
    survivor_address = next(address for address in addresses if address != victim_address)
    time.sleep(SETTLE_SECONDS)  # answers sent before the kill are logged when nginx is done
    settled = len(proxy.requests())
    clients.join(timeout=90.0)

    served_after = answered_by(proxy.requests()[settled:])
    moved = [session for session in sessions_of[victim_address] if session in served_after]
    assert moved, "no session of the killed replica was stepped after the kill"
    for session in moved:
        assert served_after[session] == {survivor_address}, served_after[session]

    with httpx.Client(base_url=proxy.url, trust_env=False, timeout=30.0) as client:
        for run in runs:
            view = client.get(f"/v1/sessions/{run.id}", headers=run.headers).json()
            assert view["step"] == STEPS
            expected = reference_thetas(run, view)
            final = client.get(f"/v1/sessions/{run.id}/params", headers=run.headers).json()
            assert final["step"] == STEPS
            for name, value in read_tensors(final["params"], "float64").items():
                np.testing.assert_array_equal(value, expected[STEPS][name], err_msg=name)
            for step, thetas in run.acknowledged.items():
                for theta in thetas:
                    for name, value in theta.items():
                        np.testing.assert_array_equal(value, expected[step][name])
            history = client.get(
                f"/v1/sessions/{run.id}/history", params={"limit": 1000}, headers=run.headers
            ).json()
            steps = [record["step"] for record in history["records"] if record["kind"] == "step"]
            assert steps == list(range(1, STEPS + 1)), steps

    for server in replicas:
        seen = access_log_clients(server)
        assert seen, f"no access log lines from {server.url}"
        assert set(seen) <= {CLIENT_ADDRESS, "127.0.0.1"}, seen  # 127.0.0.1: creations, checks
        assert seen[CLIENT_ADDRESS] > 0 and CLAIMED_ADDRESS not in seen
    assert addresses[survivor_address].running
    assert clients.retries, "the kill interrupted no request: nothing was retried"
