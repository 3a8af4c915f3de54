"""Pages for people: the API docs (`/docs`, `/redoc`) and the live view (`/ui`), served with
every asset from the package (`app/static`), so they work with no internet access.

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
from fastapi.responses import FileResponse, HTMLResponse
from fastapi.staticfiles import StaticFiles

import app as package

STATIC_DIR = Path(str(resources.files(package) / "static"))
STATIC_URL = "/static"
VENDOR_URL = f"{STATIC_URL}/vendor"
FAVICON_URL = f"{VENDOR_URL}/swagger-ui/favicon-32x32.png"

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


@router.get("/ui")
async def live_view() -> FileResponse:
    """Open a session with its id and token, watch its curves; design schedules."""
    return FileResponse(
        STATIC_DIR / "ui" / "index.html",
        headers={**PAGE_HEADERS, "Content-Security-Policy": UI_CONTENT_SECURITY_POLICY},
    )


def install_pages(app: FastAPI) -> None:
    app.include_router(router)
    app.mount(STATIC_URL, StaticFiles(directory=STATIC_DIR), name="static")
