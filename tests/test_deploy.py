"""The deployment files and what the container relies on.

The Dockerfile is read with BuildKit's own parser (the `dockerfile` package) and docker-compose.yml
with PyYAML; each test names an essential that a user's `docker build` / `docker compose up` needs.
Building and starting the image is `../shared/tools/container-check`'s job (no container engine
is guaranteed in CI); what the image runs — `optaas serve` configured by `PORT` and `DATABASE_URL`
alone, `optaas healthcheck` — is run here for real, as processes.
"""

from __future__ import annotations

import os
import re
import sqlite3
import subprocess
import sys
import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path

import dockerfile
import pytest
import yaml
from sqlalchemy import make_url

from app.cli import build_parser, local_address
from app.config import Settings, normalise_database_url
from tests.live_server import REPO_ROOT, free_port

BASE_IMAGE = "python:3.11-slim-bookworm"
COMPOSE_DATABASE_SERVICE = "postgres"
COMPOSE_APP_SERVICE = "optaas"
START_TIMEOUT_SECONDS = 60.0


# -- Dockerfile ----------------------------------------------------------------------------------


def dockerfile_stages() -> list[list[dockerfile.Command]]:
    """The Dockerfile's instructions, one list per stage, each starting with its FROM."""
    stages: list[list[dockerfile.Command]] = []
    for command in dockerfile.parse_file(str(REPO_ROOT / "Dockerfile")):
        if command.cmd == "FROM":
            stages.append([])
        assert stages, f"{command.original!r} comes before the first FROM"
        stages[-1].append(command)
    return stages


def instructions(stage: list[dockerfile.Command], name: str) -> list[dockerfile.Command]:
    return [command for command in stage if command.cmd == name]


def environment(stage: list[dockerfile.Command]) -> dict[str, str]:
    """The stage's ENV settings (`ENV A=1 B=2` parses to the values ("A", "1", "B", "2"))."""
    settings: dict[str, str] = {}
    for command in instructions(stage, "ENV"):
        settings.update(zip(command.value[::2], command.value[1::2], strict=True))
    return settings


@pytest.fixture(scope="module")
def runtime_stage() -> list[dockerfile.Command]:
    return dockerfile_stages()[-1]


def test_every_stage_is_built_on_the_pinned_base():
    stages = dockerfile_stages()
    assert len(stages) >= 2, "a build stage and a runtime stage"
    stage_names = {stage[0].value[2].lower() for stage in stages if len(stage[0].value) == 3}
    for stage in stages:
        base = stage[0].value[0]
        assert base == BASE_IMAGE or base.lower() in stage_names, base
    assert stages[-1][0].value[0] == BASE_IMAGE


def test_wheels_are_built_in_one_stage_and_installed_in_the_runtime_without_an_index(
    runtime_stage,
):
    build_stages = dockerfile_stages()[:-1]
    build_runs = [run.value[0] for stage in build_stages for run in instructions(stage, "RUN")]
    assert any(run.startswith("pip wheel") for run in build_runs), build_runs
    installs = [run for run in instructions(runtime_stage, "RUN") if "pip install" in run.value[0]]
    assert len(installs) == 1, installs
    assert "--no-index" in installs[0].value[0]
    assert any(flag.startswith("--mount=type=bind,from=") for flag in installs[0].flags), (
        "the wheels are mounted, not copied into a layer of the image"
    )
    no_cache = environment(runtime_stage).get("PIP_NO_CACHE_DIR") == "1"
    assert no_cache or "--no-cache-dir" in installs[0].value[0]


def test_the_runtime_runs_as_a_non_root_user(runtime_stage):
    users = instructions(runtime_stage, "USER")
    assert users, "no USER: the container would run as root"
    user = users[-1].value[0].split(":")[0]
    assert user not in {"root", "0"}
    last_user_line = users[-1].start_line
    assert all(run.start_line < last_user_line for run in instructions(runtime_stage, "RUN"))


def test_the_runtime_serves_on_every_interface_with_data_in_a_volume(runtime_stage):
    settings = environment(runtime_stage)
    assert settings["OPTAAS_HOST"] == "0.0.0.0"
    assert settings["OPTAAS_DATA_DIR"] == "/data"
    assert "OPTAAS_PORT" not in settings and "PORT" not in settings, "the platform sets PORT"
    assert [volume.value for volume in instructions(runtime_stage, "VOLUME")] == [("/data",)]
    assert [expose.value for expose in instructions(runtime_stage, "EXPOSE")] == [
        (str(Settings.model_fields["port"].default),)
    ]


def test_the_healthcheck_runs_optaas_healthcheck(runtime_stage):
    (check,) = instructions(runtime_stage, "HEALTHCHECK")
    assert check.json, "exec form: no shell needed"
    assert check.value == ("CMD", "optaas", "healthcheck")
    assert build_parser().parse_args(list(check.value[2:])).command == "healthcheck"


def test_the_container_runs_optaas_serve(runtime_stage):
    (entrypoint,) = instructions(runtime_stage, "ENTRYPOINT")
    (command,) = instructions(runtime_stage, "CMD")
    assert entrypoint.json and command.json
    assert [*entrypoint.value, *command.value] == ["optaas", "serve"]
    assert build_parser().parse_args(list(command.value)).command == "serve"


def test_the_image_compiles_the_kernels_at_build_time_into_a_cache_its_user_may_write(
    runtime_stage,
):
    """numba's cache is filled while the image is built (no first step waits for a compiler),
    in NUMBA_CACHE_DIR, which numba insists on being able to write to at run time."""
    cache = environment(runtime_stage)["NUMBA_CACHE_DIR"]
    (install,) = [
        run for run in instructions(runtime_stage, "RUN") if "pip install" in run.value[0]
    ]
    warm_ups = [run for run in instructions(runtime_stage, "RUN") if "warm_up()" in run.value[0]]
    assert len(warm_ups) == 1, "the kernels are compiled once, after the install"
    (warm_up,) = warm_ups
    assert warm_up.start_line > install.start_line
    cache_env = next(c for c in instructions(runtime_stage, "ENV") if "NUMBA_CACHE_DIR" in c.value)
    assert cache_env.start_line < warm_up.start_line
    assert re.search(r"chown -R 10001\S* " + re.escape(cache.rsplit("/", 1)[0]), warm_up.value[0])


def test_dockerignore_keeps_the_build_context_small():
    ignored = {
        line.strip()
        for line in (REPO_ROOT / ".dockerignore").read_text().splitlines()
        if line.strip() and not line.startswith("#")
    }
    for path in (".git", ".venv", "test-artifacts", "benchmarks", "optaas-data", "data"):
        assert path in ignored, path
    copied = {
        source
        for stage in dockerfile_stages()
        for copy in instructions(stage, "COPY")
        for source in copy.value[:-1]
    }
    assert not copied & ignored, "the Dockerfile copies something .dockerignore leaves out"


# -- docker-compose.yml --------------------------------------------------------------------------

INTERPOLATION = re.compile(r"\$\{(?P<name>\w+)(?::-(?P<default>[^}]*))?\}")


def interpolate(value: str, variables: Mapping[str, str]) -> str:
    """Compose's `${NAME}` and `${NAME:-default}` (default when unset or empty)."""

    def substitute(match: re.Match[str]) -> str:
        return variables.get(match["name"]) or match["default"] or ""

    return INTERPOLATION.sub(substitute, value)


@pytest.fixture(scope="module")
def compose() -> dict:
    return yaml.safe_load((REPO_ROOT / "docker-compose.yml").read_text())


def service_environment(service: dict, variables: Mapping[str, str]) -> dict[str, str]:
    return {
        name: interpolate(str(value), variables) for name, value in service["environment"].items()
    }


def test_compose_runs_the_service_and_a_pinned_postgres(compose):
    services = compose["services"]
    assert set(services) == {COMPOSE_APP_SERVICE, COMPOSE_DATABASE_SERVICE}
    assert re.fullmatch(r"postgres:\d+(\.\d+)?(-\w+)?", services[COMPOSE_DATABASE_SERVICE]["image"])
    assert services[COMPOSE_APP_SERVICE]["build"] == "."
    for service in services.values():
        assert service["restart"] in {"always", "unless-stopped", "on-failure"}


def test_compose_health_checks(compose):
    services = compose["services"]
    database_check = services[COMPOSE_DATABASE_SERVICE]["healthcheck"]["test"]
    assert database_check[0] in {"CMD", "CMD-SHELL"}
    assert database_check[1].startswith("pg_isready")
    assert services[COMPOSE_APP_SERVICE]["healthcheck"]["test"] == ["CMD", "optaas", "healthcheck"]


def test_the_service_waits_for_a_healthy_database(compose):
    depends_on = compose["services"][COMPOSE_APP_SERVICE]["depends_on"]
    assert depends_on == {COMPOSE_DATABASE_SERVICE: {"condition": "service_healthy"}}


@pytest.mark.parametrize(
    "variables", [{}, {"POSTGRES_PASSWORD": "s3cret"}], ids=["defaults", "password-set"]
)
def test_the_service_gets_the_compose_database_url(compose, variables):
    app = service_environment(compose["services"][COMPOSE_APP_SERVICE], variables)
    database = service_environment(compose["services"][COMPOSE_DATABASE_SERVICE], variables)
    url = make_url(normalise_database_url(app["OPTAAS_DATABASE_URL"]))
    assert url.drivername == "postgresql+psycopg"
    assert (url.host, url.port) == (COMPOSE_DATABASE_SERVICE, 5432)
    assert url.username == database["POSTGRES_USER"]
    assert url.password == database["POSTGRES_PASSWORD"]
    assert url.database == database["POSTGRES_DB"]
    if variables:
        assert url.password == variables["POSTGRES_PASSWORD"]


def test_the_service_port_is_published(compose):
    (mapping,) = compose["services"][COMPOSE_APP_SERVICE]["ports"]
    published, target = interpolate(mapping, {}).rsplit(":", 1)
    assert int(target) == Settings.model_fields["port"].default
    assert int(published) > 0


def test_the_database_keeps_its_data_in_a_named_volume(compose):
    volumes = compose["services"][COMPOSE_DATABASE_SERVICE]["volumes"]
    named = {volume.split(":")[0] for volume in volumes if ":/var/lib/postgresql/data" in volume}
    assert named, volumes
    assert named <= set(compose["volumes"])


# -- what the container runs ---------------------------------------------------------------------


@pytest.mark.parametrize(
    ("host", "reached_at"),
    [
        ("0.0.0.0", "127.0.0.1"),
        ("::", "[::1]"),
        ("10.1.2.3", "10.1.2.3"),
        ("fe80::1", "[fe80::1]"),
        ("localhost", "localhost"),
    ],
)
def test_healthcheck_reaches_wildcard_addresses_over_loopback(host, reached_at):
    assert local_address(host) == reached_at


def platform_environment(**variables: str) -> dict[str, str]:
    """This process's environment without any OPTAAS_* setting, plus `variables`."""
    kept = {
        name: value
        for name, value in os.environ.items()
        if not name.startswith("OPTAAS_") and name not in {"PORT", "DATABASE_URL"}
    }
    return {**kept, "PYTHONPATH": str(REPO_ROOT), **variables}


def run_healthcheck(env: Mapping[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "app.cli", "healthcheck"],
        cwd=REPO_ROOT,
        env=dict(env),
        capture_output=True,
        text=True,
        timeout=30,
    )


@contextmanager
def serving(env: Mapping[str, str], log: Path) -> Iterator[subprocess.Popen[bytes]]:
    """`optaas serve` as the image runs it (configured by the environment only), until healthy."""
    with log.open("wb") as output:
        server = subprocess.Popen(
            [sys.executable, "-m", "app.cli", "serve"],
            cwd=REPO_ROOT,
            env=dict(env),
            stdout=output,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    try:
        deadline = time.monotonic() + START_TIMEOUT_SECONDS
        while run_healthcheck(env).returncode != 0:
            alive = server.poll() is None
            assert alive and time.monotonic() < deadline, log.read_text(errors="replace")
            time.sleep(0.2)
        yield server
    finally:
        server.terminate()
        server.wait(timeout=15)


def test_serve_listens_on_port_and_uses_database_url_from_the_platform(tmp_path):
    database = tmp_path / "platform.sqlite3"
    env = platform_environment(
        PORT=str(free_port()), DATABASE_URL=f"sqlite:///{database}", OPTAAS_HOST="127.0.0.1"
    )
    with serving(env, tmp_path / "server.log"):
        wildcard = run_healthcheck({**env, "OPTAAS_HOST": "0.0.0.0"})
        assert wildcard.returncode == 0, wildcard.stderr
        assert wildcard.stdout.startswith(f"healthy: http://127.0.0.1:{env['PORT']}/healthz")
        with sqlite3.connect(database) as migrated:
            assert migrated.execute("SELECT count(*) FROM alembic_version").fetchone() == (1,)


def test_healthcheck_fails_when_nothing_answers():
    port = free_port()
    result = run_healthcheck(platform_environment(PORT=str(port)))
    assert result.returncode == 1
    assert f"unhealthy: http://127.0.0.1:{port}/healthz" in result.stderr
