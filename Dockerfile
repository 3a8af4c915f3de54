# syntax=docker/dockerfile:1
# optaas: `docker build -t optaas .` then `docker run -p 8000:8000 -v optaas-data:/data optaas`.
# Configuration comes from the environment (OPTAAS_*, PORT, DATABASE_URL; see docs/configuration.md).

# --- build: the project and every dependency as wheels ------------------------------------------
FROM python:3.11-slim-bookworm AS build

ENV PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_ROOT_USER_ACTION=ignore

WORKDIR /src
# Only what the wheels are built from: a change to tests or docs does not rebuild them. The
# server depends on the client's distribution (clients/python, by path): both become wheels.
COPY pyproject.toml README.md ./
COPY app ./app
COPY migrations ./migrations
COPY clients/python ./clients/python
RUN pip wheel --wheel-dir /wheels .

# --- guide: the documentation site (docs/), served by the image at /guide/ ------------------------
FROM python:3.11-slim-bookworm AS guide

ENV PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_ROOT_USER_ACTION=ignore

WORKDIR /src
# MkDocs at the `docs` extra's pins (pyproject.toml, read here rather than written twice), then
# the site, every link checked (--strict), as .ci/run builds it.
COPY pyproject.toml ./
RUN python -c "import tomllib; extras = tomllib.load(open('pyproject.toml', 'rb'))['project']['optional-dependencies']; print('\n'.join(extras['docs']))" > docs-requirements.txt \
    && pip install -r docs-requirements.txt
COPY mkdocs.yml ./
COPY docs ./docs
RUN NO_MKDOCS_2_WARNING=1 mkdocs build --strict --quiet --site-dir /guide

# --- runtime: the wheels installed, no compiler, no pip cache, no source tree -----------------
FROM python:3.11-slim-bookworm

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_ROOT_USER_ACTION=ignore

# The wheels are bind-mounted from the build stage, so they never become a layer of this image.
# They are the resolved set already (`pip wheel` above), so they are installed as they are:
# the server's wheel names the client by its path in the build stage, which is not here.
RUN --mount=type=bind,from=build,source=/wheels,target=/wheels \
    pip install --no-index --no-deps /wheels/*.whl

# A user without a login shell or home, with a fixed uid (above the host's usual ones) that
# Kubernetes' runAsNonRoot can check; /data (the default SQLite database) is its own.
RUN groupadd --gid 10001 optaas \
    && useradd --uid 10001 --gid optaas --no-create-home --home-dir /nonexistent \
        --shell /usr/sbin/nologin optaas \
    && mkdir /data \
    && chown optaas:optaas /data

# The optimizer kernels compiled now, once, into numba's disk cache: a container loads them at
# start instead of compiling (a CPU of another kind than the builder's compiles them at start,
# before /readyz answers, into the same directory). numba wants it writable by the user it runs
# as (uid 10001 here; group 0 for platforms that pick the uid themselves).
ENV NUMBA_CACHE_DIR=/var/cache/optaas/numba
RUN python -c "import app.optim; app.optim.warm_up()" \
    && chown -R 10001:0 /var/cache/optaas \
    && chmod -R g=u /var/cache/optaas
# The guide, at /guide/ (linked from the landing page at /).
COPY --from=guide /guide /usr/share/optaas/guide
ENV OPTAAS_GUIDE_DIR=/usr/share/optaas/guide

VOLUME /data
WORKDIR /data

# Listen on every interface inside the container. PORT (set by container platforms) is honoured
# when OPTAAS_PORT is not set; DATABASE_URL likewise when OPTAAS_DATABASE_URL is not.
ENV OPTAAS_HOST=0.0.0.0 \
    OPTAAS_DATA_DIR=/data \
    OPTAAS_WORKERS=1
EXPOSE 8000

USER 10001:10001

# `optaas healthcheck` GETs /healthz on the port the server was configured with (python only:
# the slim image has no curl).
HEALTHCHECK --interval=30s --timeout=10s --start-period=30s --retries=3 \
    CMD ["optaas", "healthcheck"]

# `optaas serve` applies the migrations, then serves; `docker run … optaas migrate` only migrates.
ENTRYPOINT ["optaas"]
CMD ["serve"]
