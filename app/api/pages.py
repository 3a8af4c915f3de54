"""Pages for people: a landing page (`/` redirects to `/welcome`), the API docs (`/docs`,
`/redoc`), the live view (`/ui`) and the guide (`/guide/`, when built), served with every asset
from the package (`app/static`) or the guide's directory, so they work with no internet access.

The JavaScript libraries are vendored from the npm registry by `scripts/vendor_static.sh`
(versions in `app/static/vendor/VERSIONS`, licences beside each). Swagger UI's online validator
badge and Redoc's Google fonts are switched off: both would be requests to other hosts.
"""

from __future__ import annotations

import base64
import hashlib
import re
from importlib import resources
from pathlib import Path

from fastapi import APIRouter, FastAPI
from fastapi.openapi.docs import get_redoc_html, get_swagger_ui_html
from fastapi.responses import FileResponse, HTMLResponse, RedirectResponse, Response
from fastapi.staticfiles import StaticFiles
from starlette.types import Scope

import app as package
from app.version import VERSION

STATIC_DIR = Path(str(resources.files(package) / "static"))
STATIC_URL = "/static"
VENDOR_URL = f"{STATIC_URL}/vendor"
FAVICON_URL = f"{VENDOR_URL}/swagger-ui/favicon-32x32.png"
LANDING_URL = "/welcome"
GUIDE_URL = "/guide"

UI_CONTENT_SECURITY_POLICY = (
    "default-src 'self'; script-src 'self'; style-src 'self'; "
    "img-src 'self' data:; connect-src 'self'; font-src 'self'; object-src 'none'; "
    "base-uri 'none'; form-action 'none'; frame-ancestors 'none'"
)
"""The live view talks to this server only; the browser refuses anything else."""

PAGE_HEADERS = {
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
    "Referrer-Policy": "no-referrer",
}
"""Every page: no guessing of content types, no framing by other sites (clickjacking), no
addresses of this server in the requests the page makes elsewhere (it makes none anyway)."""

_INLINE_SCRIPT = re.compile(r"<script>(.*?)</script>", re.DOTALL)

router = APIRouter(include_in_schema=False)


def docs_content_security_policy(html: str) -> str:
    """The CSP of an API docs page: scripts from this server and the page's own inline
    script (by its hash), styles inline too (Swagger UI and Redoc set them as they render),
    Redoc's search worker from a blob, images as data URLs; nothing from another host."""
    hashes = " ".join(
        f"'sha256-{base64.b64encode(hashlib.sha256(script.encode()).digest()).decode()}'"
        for script in _INLINE_SCRIPT.findall(html)
    )
    return (
        f"default-src 'self'; script-src 'self' {hashes}; style-src 'self' 'unsafe-inline'; "
        "img-src 'self' data:; font-src 'self' data:; connect-src 'self'; "
        "worker-src 'self' blob:; object-src 'none'; base-uri 'none'; form-action 'none'; "
        "frame-ancestors 'none'"
    )


def docs_page(page: HTMLResponse) -> HTMLResponse:
    """`page` with the security headers of a docs page."""
    html = bytes(page.body).decode()
    page.headers.update(
        {**PAGE_HEADERS, "Content-Security-Policy": docs_content_security_policy(html)}
    )
    return page


@router.get("/docs")
async def swagger_ui() -> HTMLResponse:
    return docs_page(
        get_swagger_ui_html(
            openapi_url="/openapi.json",
            title="optaas — API",
            swagger_js_url=f"{VENDOR_URL}/swagger-ui/swagger-ui-bundle.js",
            swagger_css_url=f"{VENDOR_URL}/swagger-ui/swagger-ui.css",
            swagger_favicon_url=FAVICON_URL,
            swagger_ui_parameters={"validatorUrl": None},
        )
    )


@router.get("/redoc")
async def redoc() -> HTMLResponse:
    return docs_page(
        get_redoc_html(
            openapi_url="/openapi.json",
            title="optaas — API",
            redoc_js_url=f"{VENDOR_URL}/redoc/redoc.standalone.js",
            redoc_favicon_url=FAVICON_URL,
            with_google_fonts=False,
        )
    )


@router.get("/")
async def root() -> RedirectResponse:
    """Someone who opens the server in a browser lands on the page that links the others."""
    return RedirectResponse(LANDING_URL, status_code=307)


def guide_is_built(guide_dir: Path) -> bool:
    return (guide_dir / "index.html").is_file()


def landing_html(guide_built: bool) -> str:
    """The landing page: what this server is and where its pages are."""
    guide = (
        f'<li><a href="{GUIDE_URL}/">Guide</a> — install, sessions, clients, configuration, '
        "deployment, performance</li>"
        if guide_built
        else "<li>Guide — not built on this server: <code>pip install -e '.[docs]' &amp;&amp; "
        "mkdocs build</code> in the repository (or point <code>OPTAAS_GUIDE_DIR</code> at a "
        "built one)</li>"
    )
    return f"""<!DOCTYPE html>
<html lang="en">
<head>
  <meta charset="utf-8">
  <meta name="viewport" content="width=device-width, initial-scale=1">
  <title>optaas</title>
  <link rel="icon" href="{FAVICON_URL}">
  <link rel="stylesheet" href="{STATIC_URL}/welcome/welcome.css">
</head>
<body>
  <main>
    <h1>optaas <small>{VERSION}</small></h1>
    <p>Optimisation as a service: the optimizer of a training run kept in a database;
       clients post gradients and get the parameters back.</p>
    <ul>
      <li><a href="/docs">API reference</a> (Swagger UI: try the calls) ·
          <a href="/redoc">the same as one page</a> · <a href="/openapi.json">openapi.json</a></li>
      <li><a href="/ui">Watch a run</a> — learning rate, loss and gradient norm of a session,
          and a schedule designer</li>
      {guide}
      <li><a href="/healthz">/healthz</a> · <a href="/readyz">/readyz</a> ·
          <a href="/metrics">/metrics</a></li>
    </ul>
  </main>
</body>
</html>
"""


@router.get("/ui")
async def live_view() -> FileResponse:
    """Open a session with its id and token, watch its curves; design schedules."""
    return FileResponse(
        STATIC_DIR / "ui" / "index.html",
        headers={**PAGE_HEADERS, "Content-Security-Policy": UI_CONTENT_SECURITY_POLICY},
    )


class GuideFiles(StaticFiles):
    """The built guide's files, its pages with the security headers of a docs page (its
    inline scripts allowed by their hashes, as the API docs')."""

    def file_response(
        self, full_path: str | Path, stat_result: object, scope: Scope, status_code: int = 200
    ) -> Response:
        response = super().file_response(full_path, stat_result, scope, status_code)
        response.headers.update(PAGE_HEADERS)
        if str(full_path).endswith(".html"):
            html = Path(full_path).read_text(encoding="utf-8")
            response.headers["Content-Security-Policy"] = docs_content_security_policy(html)
        return response


def install_pages(app: FastAPI, guide_dir: Path) -> None:
    """The pages, and the guide at /guide/ if `guide_dir` holds a built one (else no route:
    the landing page says how to build it)."""
    guide_built = guide_is_built(guide_dir)
    landing = landing_html(guide_built)

    @app.get(LANDING_URL, include_in_schema=False)
    async def welcome() -> HTMLResponse:
        return HTMLResponse(
            landing,
            headers={**PAGE_HEADERS, "Content-Security-Policy": UI_CONTENT_SECURITY_POLICY},
        )

    app.include_router(router)
    app.mount(STATIC_URL, StaticFiles(directory=STATIC_DIR), name="static")
    if guide_built:
        app.mount(GUIDE_URL, GuideFiles(directory=guide_dir, html=True), name="guide")
