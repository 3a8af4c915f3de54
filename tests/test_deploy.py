"""The deployment files and what the container relies on.

The Dockerfile is read with BuildKit's own parser (the `dockerfile` package), docker-compose.yml
with PyYAML and deploy/nginx.conf with crossplane (nginx's own configuration parser for Python);
each test names an essential that a user's `docker build` / `docker compose up` needs. Building
and starting the image is `../shared/tools/container-check`'s job (no container engine is
guaranteed in CI); what the image runs — `optaas serve` configured by `PORT` and `DATABASE_URL`
alone, `optaas healthcheck` — is run here for real, as processes, and nginx with deploy/nginx.conf
in front of two of them by tests/test_replicas.py.
"""

from __future__ import annotations

import os
import re
import shutil
import sqlite3
import subprocess
import sys
import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path

import crossplane
import dockerfile
import pytest
import yaml
from sqlalchemy import make_url

from app.api.app import create_app
from app.cli import build_parser, local_address
from app.config import Settings, normalise_database_url
from tests.live_server import REPO_ROOT, free_port, source_environment
from tests.proxy import NGINX_CONFIG, deploy_config, directives

BASE_IMAGE = "python:3.11-slim-bookworm"
COMPOSE_DATABASE_SERVICE = "postgres"
COMPOSE_APP_SERVICE = "optaas"
COMPOSE_PROXY_SERVICE = "nginx"
NGINX_WITH_RESOLVE = (1, 27, 3)  # the first open-source nginx whose upstream servers `resolve`
DOCKER_COMPOSE = os.environ.get("OPTAAS_TEST_DOCKER_COMPOSE") or shutil.which("docker-compose")
REQUIRE_DOCKER_COMPOSE = os.environ.get("OPTAAS_REQUIRE_DOCKER_COMPOSE") == "1"
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


def test_the_image_serves_the_guide_built_strictly_at_the_docs_extras_pins(runtime_stage):
    """A stage of its own builds the guide (a change to docs/ rebuilds no wheel), with the
    `docs` extra's pins read from pyproject.toml, every link checked; the runtime serves it."""
    stages = {stage[0].value[2].lower(): stage for stage in dockerfile_stages()[:-1]
              if len(stage[0].value) == 3}  # fmt: skip
    runs = [run.value[0] for run in instructions(stages["guide"], "RUN")]
    assert any("['docs']" in run and "pip install -r" in run for run in runs), runs
    (build,) = [run for run in runs if "mkdocs build" in run]
    assert "--strict" in build
    site = build.split("--site-dir ")[1].split()[0]
    (copy,) = [copy for copy in instructions(runtime_stage, "COPY") if "--from=guide" in copy.flags]
    assert copy.value[0] == site
    assert environment(runtime_stage)["OPTAAS_GUIDE_DIR"] == copy.value[1]


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


@pytest.mark.system
def test_docker_compose_accepts_the_file():
    """Compose's own validation (Debian's docker-compose; no engine needed for `config`)."""
    if DOCKER_COMPOSE is None:
        reason = (
            "no docker-compose (Debian: apt-get install --no-install-recommends docker-compose)"
        )
        if REQUIRE_DOCKER_COMPOSE:
            pytest.fail(f"OPTAAS_REQUIRE_DOCKER_COMPOSE=1 but {reason}")
        pytest.skip(reason)
    result = subprocess.run(
        [DOCKER_COMPOSE, "--file", str(REPO_ROOT / "docker-compose.yml"), "config", "--quiet"],
        capture_output=True,
        text=True,
        timeout=60,
        env=platform_environment(),
    )
    assert result.returncode == 0, result.stderr


def test_compose_runs_the_service_and_a_pinned_postgres(compose):
    services = compose["services"]
    assert set(services) == {COMPOSE_APP_SERVICE, COMPOSE_DATABASE_SERVICE, COMPOSE_PROXY_SERVICE}
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


def test_nginx_publishes_the_port_and_the_replicas_none_so_that_they_scale(compose):
    """`docker compose up --scale optaas=3` needs replicas without a host port or a fixed name."""
    app = compose["services"][COMPOSE_APP_SERVICE]
    assert "ports" not in app and "container_name" not in app
    assert [int(port) for port in app["expose"]] == [Settings.model_fields["port"].default]
    (mapping,) = compose["services"][COMPOSE_PROXY_SERVICE]["ports"]
    published, target = interpolate(mapping, {}).rsplit(":", 1)
    (site,) = directives(deploy_config(), "server")
    assert [directive["args"] for directive in directives(site["block"], "listen")] == [[target]]
    assert int(published) > 0


def test_the_database_keeps_its_data_in_a_named_volume(compose):
    volumes = compose["services"][COMPOSE_DATABASE_SERVICE]["volumes"]
    named = {volume.split(":")[0] for volume in volumes if ":/var/lib/postgresql/data" in volume}
    assert named, volumes
    assert named <= set(compose["volumes"])


def test_compose_runs_a_pinned_nginx_that_resolves_upstreams_with_the_repository_config(compose):
    proxy = compose["services"][COMPOSE_PROXY_SERVICE]
    version = re.fullmatch(r"nginx:(\d+)\.(\d+)\.(\d+)(-[\w.]+)?", proxy["image"])
    assert version, f"pin an exact nginx release, not {proxy['image']}"
    assert tuple(map(int, version.groups()[:3])) >= NGINX_WITH_RESOLVE
    mounts = [volume.split(":") for volume in proxy["volumes"]]
    assert [(REPO_ROOT / source).resolve() for source, *_ in mounts] == [NGINX_CONFIG]
    assert mounts[0][1:] == ["/etc/nginx/conf.d/default.conf", "ro"]  # inside the image's http {}
    assert proxy["depends_on"] == {COMPOSE_APP_SERVICE: {"condition": "service_healthy"}}
    assert proxy["restart"] in {"always", "unless-stopped", "on-failure"}


def test_a_replica_is_one_process_that_trusts_the_proxy_for_the_client_address(compose):
    """The hash sends a session to a replica; with several workers in it, the session's steps
    would alternate between their caches again. uvicorn reads FORWARDED_ALLOW_IPS itself."""
    app = service_environment(compose["services"][COMPOSE_APP_SERVICE], {})
    assert app["OPTAAS_WORKERS"] == "1"
    assert app["FORWARDED_ALLOW_IPS"]


# -- deploy/nginx.conf ---------------------------------------------------------------------------


@pytest.fixture(scope="module")
def nginx() -> list[dict]:
    return deploy_config()


def only(block: list[dict], name: str) -> list[str]:
    """The arguments of the one directive `name` in `block`."""
    (directive,) = directives(block, name)
    return directive["args"]


def upstream_block(nginx: list[dict]) -> list[dict]:
    (upstream,) = directives(nginx, "upstream")
    return upstream["block"]


def location_block(nginx: list[dict]) -> list[dict]:
    (site,) = directives(nginx, "server")
    (location,) = directives(site["block"], "location")
    assert location["args"] == ["/"], "one location: every request goes to the one upstream"
    return location["block"]


def nginx_map(
    config: list[dict],
    source: str,
    variable: str,
    value: str,
    variables: Mapping[str, str] | None = None,
) -> str:
    """What the `map source variable { … }` block gives for `value`, by nginx's rules: exact
    strings first (compared without case), then regular expressions in order (`~`, or `~*`
    without case), else `default`. `$name` in the result is a named capture of the regular
    expression, or one of `variables`; other variables are left as they are."""
    (block,) = [d["block"] for d in directives(config, "map") if d["args"] == [source, variable]]
    entries = [(entry["directive"], entry["args"][0]) for entry in block]
    variables = dict(variables or {})
    for key, result in entries:
        if not key.startswith("~") and key != "default" and key.lower() == value.lower():
            return with_variables(result, variables)
    for key, result in entries:
        if key.startswith("~"):
            pattern = key.removeprefix("~*") if key.startswith("~*") else key.removeprefix("~")
            flags = re.IGNORECASE if key.startswith("~*") else 0
            match = re.search(pattern.replace("(?<", "(?P<"), value, flags)
            if match:
                return with_variables(result, {**variables, **match.groupdict()})
    return with_variables(dict(entries).get("default", ""), variables)


def with_variables(value: str, variables: Mapping[str, str]) -> str:
    """`value` with each `$name` in `variables` replaced by its value."""
    return re.sub(r"\$(\w+)", lambda name: variables.get(name[1], name[0]), value)


SESSION_ID = "8d5e8a52-2f36-4c6e-9a8b-0f1e2d3c4b5a"


@pytest.mark.parametrize("path", list(create_app().openapi()["paths"]))
def test_requests_about_a_session_are_hashed_on_its_id_and_the_rest_round_robin(nginx, path):
    """Every path of the API: those under one session (`{session_id}`) get the id as the hash
    key, the others (creation, import, previews, health, metrics) an empty key, which nginx's
    `hash` balances round robin."""
    assert only(upstream_block(nginx), "hash") == ["$optaas_session", "consistent"]
    uri = path.replace("{session_id}", SESSION_ID)
    expected = SESSION_ID if "{session_id}" in path else ""
    assert nginx_map(nginx, "$uri", "$optaas_session", uri) == expected


def test_replicas_are_found_by_dockers_dns_and_resolved_again_while_running(nginx):
    block = upstream_block(nginx)
    assert only(nginx, "resolver")[0] == "127.0.0.11"  # Docker's embedded DNS
    assert any(arg.startswith("valid=") for arg in only(nginx, "resolver"))
    assert only(block, "zone")[0], "`resolve` needs the upstream in shared memory"
    server, *parameters = only(block, "server")
    assert "resolve" in parameters
    assert server == f"{COMPOSE_APP_SERVICE}:{Settings.model_fields['port'].default}"


def test_connections_to_the_replicas_are_kept_alive(nginx):
    block = upstream_block(nginx)
    names = [directive["directive"] for directive in block]
    assert names.index("keepalive") > names.index("hash"), "the balancer comes before keepalive"
    location = location_block(nginx)
    assert only(location, "proxy_http_version") == ["1.1"]
    headers = {d["args"][0]: d["args"][1] for d in directives(location, "proxy_set_header")}
    assert headers["Connection"] == ""


def seconds(duration: str) -> float:
    """An nginx time (`90`, `90s`, `2m`, `1h`) in seconds."""
    value, unit = re.fullmatch(r"(\d+)(ms|s|m|h|d)?", duration).groups()
    return int(value) * {"ms": 0.001, "s": 1, None: 1, "m": 60, "h": 3600, "d": 86400}[unit]


def test_nginx_limits_do_not_undercut_optaas_own(nginx):
    (site,) = directives(nginx, "server")
    block = site["block"]
    assert only(block, "client_max_body_size") == ["0"], "optaas answers 413 itself"
    assert only(block, "proxy_request_buffering") == ["off"]
    assert only(block, "proxy_buffering") == ["off"]
    (longest_wait,) = [
        rule.le
        for rule in Settings.model_fields["max_wait_seconds"].metadata
        if hasattr(rule, "le")
    ]
    for timeout in ("proxy_read_timeout", "proxy_send_timeout"):
        assert seconds(only(block, timeout)[0]) > longest_wait, timeout


def test_nginx_forwards_the_client_address_and_never_resends_a_post(nginx):
    location = location_block(nginx)
    headers = {d["args"][0]: d["args"][1] for d in directives(location, "proxy_set_header")}
    # Replaced, not appended to: what a client writes in the header never reaches optaas.
    assert headers["X-Forwarded-For"] == "$remote_addr"
    assert headers["X-Forwarded-Proto"] == "$scheme"
    assert "non_idempotent" not in only(location, "proxy_next_upstream")


# -- docs/deploy.md: the same rules for Kubernetes (ingress-nginx) -------------------------------

DEPLOY_GUIDE = REPO_ROOT / "docs" / "deploy.md"


@pytest.fixture(scope="module")
def kubernetes(tmp_path_factory) -> dict[str, dict]:
    """The guide's Kubernetes manifests by kind, and its http-snippet parsed by crossplane."""
    (manifests,) = re.findall(r"```yaml\n(.*?)```", DEPLOY_GUIDE.read_text(), re.DOTALL)
    documents = {document["kind"]: document for document in yaml.safe_load_all(manifests)}
    snippet = tmp_path_factory.mktemp("kubernetes") / "http-snippet.conf"
    snippet.write_text(documents["ConfigMap"]["data"]["http-snippet"])
    parsed = crossplane.parse(str(snippet), single=True, comments=False, check_ctx=False)
    assert parsed["status"] == "ok", parsed["errors"]
    return {**documents, "http-snippet": parsed["config"][0]["parsed"]}


def test_the_ingress_hashes_on_the_same_session_key_as_deploy_nginx_conf(nginx, kubernetes):
    snippet = kubernetes["http-snippet"]
    (session_map,) = [d for d in directives(nginx, "map") if d["args"][0] == "$uri"]
    built = [crossplane.build([directive]) for directive in directives(snippet, "map")]
    assert crossplane.build([session_map]) in built, "the guide's map is not deploy/nginx.conf's"
    annotations = kubernetes["Ingress"]["metadata"]["annotations"]
    hash_by = annotations["nginx.ingress.kubernetes.io/upstream-hash-by"]
    (key_map,) = [d for d in directives(snippet, "map") if d["args"][1] == hash_by]
    source = key_map["args"][0]
    assert source == session_map["args"][1]  # the key is made from the session map's value
    for path in create_app().openapi()["paths"]:
        uri = path.replace("{session_id}", SESSION_ID)
        session = nginx_map(snippet, "$uri", source, uri)
        balanced_on = nginx_map(snippet, source, hash_by, session, {source[1:]: session})
        # ingress-nginx's Lua balancer has no round robin for an empty key: a random one instead
        assert balanced_on == (SESSION_ID if "{session_id}" in path else "$request_id"), path


def test_the_ingress_keeps_the_limits_of_deploy_nginx_conf(nginx, kubernetes):
    annotations = kubernetes["Ingress"]["metadata"]["annotations"]
    (site,) = directives(nginx, "server")
    for directive in ("client_max_body_size", "proxy_request_buffering", "proxy_buffering"):
        annotation = directive.replace("_", "-").replace("client-max-body", "proxy-body")
        assert [annotations[f"nginx.ingress.kubernetes.io/{annotation}"]] == only(
            site["block"], directive
        )
    for directive in ("proxy_read_timeout", "proxy_send_timeout", "proxy_connect_timeout"):
        annotation = f"nginx.ingress.kubernetes.io/{directive.replace('_', '-')}"
        assert int(annotations[annotation]) == seconds(only(site["block"], directive)[0])
    (container,) = kubernetes["Deployment"]["spec"]["template"]["spec"]["containers"]
    env = {variable["name"]: variable.get("value") for variable in container["env"]}
    assert env["OPTAAS_WORKERS"] == "1"
    assert "FORWARDED_ALLOW_IPS" in env


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
    return {**kept, "PYTHONPATH": source_environment()["PYTHONPATH"], **variables}


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
