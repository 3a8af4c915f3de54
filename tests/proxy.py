"""A real nginx in front of optaas server processes, run from the repository's deploy/nginx.conf.

`NginxProxy` runs Debian's nginx (`/usr/sbin/nginx`, or `OPTAAS_TEST_NGINX`) as this process's
user, everything in a temporary directory: a main configuration of its own (pid file, temporary
paths, one worker, in the foreground) that includes deploy/nginx.conf as compose uses it, but
for the `listen` address and the upstream's `server`, which become a free port here and the
given servers' addresses (Debian's nginx 1.22 has no `resolve`, and there is no Docker DNS
here). The access log (the file's own `optaas` format, written to stdout) goes to `access.log`
in that directory; `requests()` reads it back.
"""

from __future__ import annotations

import contextlib
import os
import pwd
import re
import shutil
import signal
import socket
import subprocess
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Any

import crossplane

from tests.live_server import REPO_ROOT, free_port

NGINX_CONFIG = REPO_ROOT / "deploy" / "nginx.conf"
NGINX = os.environ.get("OPTAAS_TEST_NGINX") or shutil.which("nginx") or "/usr/sbin/nginx"
START_TIMEOUT_SECONDS = 15.0
PORT_ATTEMPTS = 5

TEMPORARY_PATHS = ("client_body", "proxy", "fastcgi", "uwsgi", "scgi")

MAIN_CONFIG = """\
daemon off;
master_process on;
worker_processes {workers};
pid {directory}/nginx.pid;
error_log stderr warn;
{user}
events {{
    worker_connections 1024;
}}

http {{
{temporary_paths}
    include {directory}/optaas.conf;
}}
"""

# `$remote_addr [$time_iso8601] "$request" $status $request_length $body_bytes_sent
# $request_time session=… upstream=… upstream_status=…` (deploy/nginx.conf's log_format).
ACCESS_LINE = re.compile(
    r'^(?P<client>\S+) \[[^\]]+\] "(?P<method>\S+) (?P<uri>\S+) [^"]*" (?P<status>\d{3}) '
    r"\d+ \d+ \S+ session=(?P<session>\S*) upstream=(?P<upstream>.*?) "
    r"upstream_status=(?P<upstream_status>.*)$"
)


class ProxyError(RuntimeError):
    """nginx did not start; the message carries its error output."""


def deploy_config() -> list[dict[str, Any]]:
    """deploy/nginx.conf as crossplane parses it: a list of directives, each
    `{"directive", "args", "block"?}`."""
    parsed = crossplane.parse(str(NGINX_CONFIG), single=True, comments=False, check_ctx=False)
    if parsed["status"] != "ok":
        raise ProxyError(f"{NGINX_CONFIG}: {parsed['errors']}")
    return parsed["config"][0]["parsed"]


def directives(block: list[dict[str, Any]], name: str) -> list[dict[str, Any]]:
    """The directives called `name` in `block` (not in the blocks inside it)."""
    return [directive for directive in block if directive["directive"] == name]


def site_config(servers: Sequence[str], listen: str, *, hashing: bool = True) -> str:
    """deploy/nginx.conf with the `listen` address and the upstream's servers (host:port) put in.

    The one resolved `server` line becomes one line per server, with the same parameters but
    `resolve` (which needs nginx 1.27.3 and a DNS server). `hashing=False` drops the `hash`
    directive: plain round robin, the comparison the benchmark makes.
    """
    config = deploy_config()
    (upstream,) = directives(config, "upstream")
    (resolved,) = directives(upstream["block"], "server")
    parameters = [arg for arg in resolved["args"][1:] if arg != "resolve"]
    balanced = []
    for directive in upstream["block"]:
        if directive is resolved:
            balanced += [
                {"directive": "server", "args": [server, *parameters]} for server in servers
            ]
        elif hashing or directive["directive"] != "hash":
            balanced.append(directive)
    upstream["block"] = balanced
    (site,) = directives(config, "server")
    (listening,) = directives(site["block"], "listen")
    listening["args"] = [listen]
    return crossplane.build(config) + "\n"


@dataclass(frozen=True)
class ProxiedRequest:
    """One line of the proxy's access log."""

    method: str
    uri: str
    status: int
    session: str
    upstreams: tuple[str, ...]  # every server tried, in order; the last one answered

    @property
    def upstream(self) -> str:
        return self.upstreams[-1]


class NginxProxy:
    """nginx on 127.0.0.1 before `servers` (host:port), from deploy/nginx.conf."""

    def __init__(
        self,
        servers: Sequence[str],
        directory: Path,
        *,
        hashing: bool = True,
        workers: int = 1,
    ) -> None:
        self.servers = list(servers)
        self.directory = directory
        self.hashing = hashing
        self.workers = workers
        self.port: int | None = None
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        if self.port is None:
            raise ProxyError("nginx has not been started")
        return f"http://127.0.0.1:{self.port}"

    @property
    def access_log(self) -> Path:
        return self.directory / "access.log"

    @property
    def error_log(self) -> Path:
        return self.directory / "error.log"

    def start(self) -> NginxProxy:
        if not Path(NGINX).exists():
            raise FileNotFoundError(f"no nginx at {NGINX}")
        self.directory.mkdir(parents=True, exist_ok=True)
        for _attempt in range(PORT_ATTEMPTS):
            self.port = free_port()
            self._write_config()
            self._spawn()
            if self._wait_listening():
                return self
            if "Address already in use" not in self.error_output():
                break
        raise ProxyError(f"nginx did not start\n{self.error_output()}")

    def stop(self) -> None:
        """SIGQUIT: nginx finishes the requests in flight, then exits (SIGKILL after 15 s)."""
        if self.process is None or self.process.poll() is not None:
            return
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.process.pid, signal.SIGQUIT)
        try:
            self.process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait(timeout=15)

    def requests(self) -> list[ProxiedRequest]:
        """The access log so far, one entry per request nginx finished."""
        if not self.access_log.exists():
            return []
        entries = []
        for line in self.access_log.read_text(errors="replace").splitlines():
            match = ACCESS_LINE.match(line)
            if match is None:
                continue
            entries.append(
                ProxiedRequest(
                    method=match["method"],
                    uri=match["uri"],
                    status=int(match["status"]),
                    session=match["session"],
                    upstreams=tuple(re.split(r"\s*[,:]\s+", match["upstream"])),
                )
            )
        return entries

    def error_output(self) -> str:
        if not self.error_log.exists():
            return "(no nginx error output)"
        return self.error_log.read_text(errors="replace")[-4000:]

    def __enter__(self) -> NginxProxy:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.stop()

    def _write_config(self) -> None:
        site = site_config(self.servers, f"127.0.0.1:{self.port}", hashing=self.hashing)
        (self.directory / "optaas.conf").write_text(site)
        paths = []
        for name in TEMPORARY_PATHS:
            (self.directory / name).mkdir(exist_ok=True)
            paths.append(f"    {name}_temp_path {self.directory / name};")
        # As root the workers would run as `nobody`; they run as the user who started nginx.
        user = f"user {pwd.getpwuid(os.geteuid()).pw_name};" if os.geteuid() == 0 else ""
        (self.directory / "nginx.conf").write_text(
            MAIN_CONFIG.format(
                workers=self.workers,
                directory=self.directory,
                user=user,
                temporary_paths="\n".join(paths),
            )
        )

    def _spawn(self) -> None:
        command = [
            NGINX,
            "-e", "stderr",  # before the configuration is read, too (not /var/log/nginx)
            "-p", f"{self.directory}/",
            "-c", str(self.directory / "nginx.conf"),
        ]  # fmt: skip
        with self.access_log.open("ab") as stdout, self.error_log.open("ab") as stderr:
            self.process = subprocess.Popen(
                command,
                stdin=subprocess.DEVNULL,
                stdout=stdout,
                stderr=stderr,
                start_new_session=True,
            )

    def _wait_listening(self) -> bool:
        """True once the port accepts connections; False if nginx exited first."""
        assert self.process is not None and self.port is not None
        deadline = time.monotonic() + START_TIMEOUT_SECONDS
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                return False
            with (
                contextlib.suppress(OSError),
                socket.create_connection(("127.0.0.1", self.port), timeout=1.0),
            ):
                return True
            time.sleep(0.05)
        self.stop()
        raise ProxyError(
            f"nginx did not listen in {START_TIMEOUT_SECONDS} s\n{self.error_output()}"
        )
