"""A real optaas server process for end-to-end tests: start, stop, kill -9, restart.

`LiveServer` runs `python -m app.cli serve` (migrations, then uvicorn) from the repository root
on a free port against a given database, waits until `/readyz` answers, and keeps the server's
output in a log file whose tail is shown when anything goes wrong. It keeps its port across
restarts, so clients can go on talking to the same URL. Crash and concurrency tests build on
`kill()` (SIGKILL to the whole process group, uvicorn workers included) and `restart()`.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Mapping
from pathlib import Path
from types import TracebackType

import httpx

REPO_ROOT = Path(__file__).resolve().parent.parent
CLIENT_SOURCE = REPO_ROOT / "clients" / "python" / "src"
START_TIMEOUT_SECONDS = 60.0
STOP_TIMEOUT_SECONDS = 15.0
PORT_ATTEMPTS = 5


def source_environment(**extra: str) -> dict[str, str]:
    """This environment with the server and the client imported from the source tree (as the
    tests import them: pyproject's `pythonpath`), for the processes the tests start."""
    paths = [str(REPO_ROOT), str(CLIENT_SOURCE), os.environ.get("PYTHONPATH")]
    return {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, paths)), **extra}


class ServerError(RuntimeError):
    """The server did not start or stop as asked; the message carries its log's tail."""


def free_port() -> int:
    """A port nobody listens on right now (another process may still take it: we retry)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


class LiveServer:
    """One `optaas serve` process (with its uvicorn workers) on 127.0.0.1."""

    def __init__(
        self,
        database_url: str,
        log_path: Path,
        *,
        workers: int = 1,
        env: Mapping[str, str] | None = None,
        log_level: str = "warning",
        root: Path = REPO_ROOT,
    ) -> None:
        """`root`: the source tree the server runs from (another checkout, for benchmarks that
        compare two versions side by side)."""
        self.root = root
        self.database_url = database_url
        self.log_path = log_path
        self.workers = workers
        self.log_level = log_level
        self.extra_env = dict(env or {})
        self.port: int | None = None
        self.process: subprocess.Popen[bytes] | None = None

    # -- the URL and clients ------------------------------------------------------------

    @property
    def url(self) -> str:
        if self.port is None:
            raise ServerError("the server has not been started")
        return f"http://127.0.0.1:{self.port}"

    def client(self, **kwargs: object) -> httpx.Client:
        """An HTTP client for this server (no proxies from the environment)."""
        return httpx.Client(base_url=self.url, trust_env=False, timeout=60.0, **kwargs)

    @property
    def running(self) -> bool:
        return self.process is not None and self.process.poll() is None

    # -- lifecycle -----------------------------------------------------------------------

    def start(self) -> LiveServer:
        """Start the server and wait until it is ready; keeps the port of an earlier start."""
        if self.running:
            raise ServerError("the server is already running")
        keep_port = self.port is not None
        for _attempt in range(PORT_ATTEMPTS):
            if not keep_port:
                self.port = free_port()
            self._spawn()
            if self._wait_ready():
                return self
            if not self._port_was_taken():
                break
            time.sleep(0.2)
        raise ServerError(f"the server did not become ready\n{self.log_tail()}")

    def stop(self) -> None:
        """SIGTERM and wait for a graceful exit (SIGKILL if it takes too long)."""
        if not self.running:
            return
        assert self.process is not None
        self._signal_group(signal.SIGTERM)
        try:
            self.process.wait(timeout=STOP_TIMEOUT_SECONDS)
        except subprocess.TimeoutExpired:
            self.kill()
            raise ServerError(f"the server ignored SIGTERM\n{self.log_tail()}") from None

    def kill(self) -> None:
        """SIGKILL the whole process group at once: a crash, not a shutdown."""
        if self.process is None:
            return
        self._signal_group(signal.SIGKILL)
        self.process.wait(timeout=STOP_TIMEOUT_SECONDS)

    def restart(self, *, kill: bool = False) -> LiveServer:
        """Stop (or `kill`) and start again on the same port and database."""
        self.kill() if kill else self.stop()
        return self.start()

    def log_tail(self, lines: int = 60) -> str:
        if not self.log_path.exists():
            return "(no server log)"
        text = self.log_path.read_text(errors="replace").splitlines()
        return "\n".join(["--- server log (tail) ---", *text[-lines:]])

    def __enter__(self) -> LiveServer:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        try:
            self.stop()
        finally:
            self.kill()

    # -- internals -----------------------------------------------------------------------

    def _spawn(self) -> None:
        env = source_environment(
            **{
                "PYTHONUNBUFFERED": "1",
                # Tests create sessions and previews by the hundred from one address: the rate
                # limits are off unless a test sets them (tests/test_hostile.py does).
                "OPTAAS_CREATION_RATE_LIMIT": "",
                "OPTAAS_PREVIEW_RATE_LIMIT": "",
                # The metrics files go with the log, so a server killed with SIGKILL (which
                # cannot clean up) leaves nothing in $TMPDIR.
                "PROMETHEUS_MULTIPROC_DIR": str(self.log_path.parent / f"metrics-{self.port}"),
                **self.extra_env,
            }
        )
        command = [
            sys.executable,
            "-m",
            "app.cli",
            "serve",
            "--host=127.0.0.1",
            f"--port={self.port}",
            f"--workers={self.workers}",
            f"--database-url={self.database_url}",
            f"--log-level={self.log_level}",
        ]
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        with self.log_path.open("ab") as log:
            log.write(f"\n=== {' '.join(command)}\n".encode())
            self.process = subprocess.Popen(
                command,
                cwd=self.root,
                env=env,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,  # its own process group: kill() reaches the workers
            )

    def _wait_ready(self) -> bool:
        """True once /readyz answers 200; False if the process died first."""
        assert self.process is not None
        deadline = time.monotonic() + START_TIMEOUT_SECONDS
        with httpx.Client(trust_env=False, timeout=2.0) as probe:
            while time.monotonic() < deadline:
                if self.process.poll() is not None:
                    return False
                try:
                    if probe.get(f"{self.url}/readyz").status_code == 200:
                        return True
                except httpx.TransportError:
                    pass
                time.sleep(0.05)
        self.kill()
        raise ServerError(f"not ready in {START_TIMEOUT_SECONDS} s\n{self.log_tail()}")

    def _port_was_taken(self) -> bool:
        """Whether the last start failed because another process had the port."""
        if not self.log_path.exists():
            return False
        last_run = self.log_path.read_text(errors="replace").rsplit("\n=== ", 1)[-1]
        return "address already in use" in last_run.lower()

    def _signal_group(self, signum: int) -> None:
        assert self.process is not None
        with contextlib.suppress(ProcessLookupError):  # already gone
            os.killpg(self.process.pid, signum)
