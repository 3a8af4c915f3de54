"""The pages in a real browser: Debian's Chromium, headless, driven by Playwright, against a live
server, with every request to another host refused (and recorded, so the tests can say none was
made) and every script error or Content-Security-Policy violation failing the test. Screenshots
go to test-artifacts/ for people to look at.

Without Chromium the tests are skipped with the reason shown, unless OPTAAS_REQUIRE_BROWSER=1
(set by .ci/run), which makes them fail instead.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urlsplit

import numpy as np
import pytest
from playwright.sync_api import sync_playwright

from app.optim import OPTIMIZER_TYPES, optimizer_defaults, schedule_lrs
from tests.live_server import REPO_ROOT, LiveServer
from tests.support import bearer, create_session, post_json

CHROMIUM = os.environ.get("OPTAAS_TEST_CHROMIUM", "/usr/bin/chromium")
REQUIRE_BROWSER = os.environ.get("OPTAAS_REQUIRE_BROWSER") == "1"
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
ARTIFACTS = REPO_ROOT / "test-artifacts"
LOCAL_HOSTS = {"127.0.0.1", "localhost"}
WAIT_MS = 20_000

pytestmark = [pytest.mark.slow, pytest.mark.system]

# Reads a uPlot chart back: how many points it holds and in how many pixel columns of its
# canvas the series' own colour was drawn.
DRAWN = """
([name, color]) => {
  const chart = window.optaasUi.charts()[name];
  const [r, g, b] = [1, 3, 5].map((i) => parseInt(color.slice(i, i + 2), 16));
  const canvas = chart.ctx.canvas;
  const { data, width, height } = chart.ctx.getImageData(0, 0, canvas.width, canvas.height);
  const columns = new Set();
  for (let y = 0; y < height; y++) {
    for (let x = 0; x < width; x++) {
      const i = (y * width + x) * 4;
      const near = Math.abs(data[i] - r) < 48 && Math.abs(data[i + 1] - g) < 48
        && Math.abs(data[i + 2] - b) < 48 && data[i + 3] > 128;
      if (near) columns.add(x);
    }
  }
  return { points: chart.data[0].length, xs: chart.data[0], ys: chart.data[1],
           columns: columns.size, plotWidth: chart.bbox.width };
}
"""


@pytest.fixture(scope="module")
def server(tmp_path_factory) -> Iterator[LiveServer]:
    directory = tmp_path_factory.mktemp("browser")
    with LiveServer(f"sqlite:///{directory / 'optaas.sqlite3'}", directory / "server.log") as live:
        yield live


@pytest.fixture(scope="module")
def browser():
    if not Path(CHROMIUM).exists():
        reason = f"no Chromium at {CHROMIUM} (Debian: apt-get install chromium)"
        if REQUIRE_BROWSER:
            pytest.fail(f"OPTAAS_REQUIRE_BROWSER=1 but {reason}")
        pytest.skip(reason)
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        yield browser
        browser.close()


class OfflinePage:
    """A page whose requests to any host but this machine are aborted and remembered."""

    def __init__(self, browser, name: str) -> None:
        self.name = name
        self.context = browser.new_context(viewport={"width": 1400, "height": 1000})
        self.full_page = True
        self.outside: list[str] = []
        self.errors: list[str] = []
        self.context.route("**/*", self._route)
        self.page = self.context.new_page()
        self.page.on("pageerror", lambda error: self.errors.append(str(error)))
        self.page.on("console", self._console)
        self.page.on("request", self._seen)

    def _is_local(self, url: str) -> bool:
        parts = urlsplit(url)
        return parts.scheme in ("data", "blob", "about") or parts.hostname in LOCAL_HOSTS

    def _console(self, message) -> None:
        # Errors only: a script error or a Content-Security-Policy violation shows up here. An
        # HTTP error answer the page handles (the designer's 422s) is not one.
        answered = message.text.startswith("Failed to load resource: the server responded")
        if message.type == "error" and not answered:
            self.errors.append(message.text)

    def _route(self, route) -> None:
        if self._is_local(route.request.url):
            route.continue_()
        else:
            self.outside.append(route.request.url)
            route.abort()

    def _seen(self, request) -> None:
        if not self._is_local(request.url):
            self.outside.append(request.url)

    def screenshot(self, suffix: str = "") -> Path:
        ARTIFACTS.mkdir(exist_ok=True)
        path = ARTIFACTS / f"{self.name}{suffix}.png"
        self.page.screenshot(path=str(path), full_page=self.full_page)
        return path

    def close(self) -> None:
        self.context.close()


@pytest.fixture
def offline(browser, request) -> Iterator[OfflinePage]:
    page = OfflinePage(browser, request.node.name.removeprefix("test_"))
    yield page
    try:
        page.screenshot()
    finally:
        page.close()
    assert page.outside == [], f"requests to other hosts: {page.outside}"
    assert page.errors == [], f"script errors: {page.errors}"


@pytest.fixture(scope="module")
def guide_server(tmp_path_factory) -> Iterator[LiveServer]:
    """A server with the guide built (by mkdocs, as .ci/run builds it) at /guide/."""
    directory = tmp_path_factory.mktemp("browser-guide")
    subprocess.run(
        [sys.executable, "-m", "mkdocs", "build", "--quiet", "--site-dir", str(directory / "site")],
        cwd=REPO_ROOT, check=True, timeout=300, env={**os.environ, "NO_MKDOCS_2_WARNING": "1"},
    )  # fmt: skip
    env = {"OPTAAS_GUIDE_DIR": str(directory / "site")}
    database = f"sqlite:///{directory / 'optaas.sqlite3'}"
    with LiveServer(database, directory / "server.log", env=env) as live:
        yield live


def test_the_landing_page_leads_to_the_guide_whose_search_works(guide_server, offline):
    offline.page.goto(f"{guide_server.url}/")
    assert offline.page.url == f"{guide_server.url}/welcome"
    links = offline.page.eval_on_selector_all("a", "nodes => nodes.map(n => n.pathname)")
    assert {"/docs", "/redoc", "/ui", "/guide/"} <= set(links)
    offline.page.click("a[href='/guide/']")
    offline.page.wait_for_selector("nav.md-nav", timeout=WAIT_MS)
    assert offline.page.title().startswith("optaas")
    # The search runs in a web worker over search_index.json: both under the page's CSP.
    offline.page.fill("input.md-search__input", "accumulate")
    offline.page.wait_for_selector(".md-search-result__item", timeout=WAIT_MS)
    found = offline.page.eval_on_selector_all(
        ".md-search-result__link", "nodes => nodes.map(n => n.pathname)"
    )
    assert found and all(path.startswith("/guide/") for path in found), found


def operations(server) -> list[tuple[str, str]]:
    with server.client() as client:
        document = client.get("/openapi.json").json()
    return [(method, path) for path, ops in document["paths"].items() for method in ops]


def test_swagger_ui_lists_every_operation(server, offline):
    offline.page.goto(f"{server.url}/docs")
    offline.page.wait_for_selector(".opblock-summary", timeout=WAIT_MS)
    shown = offline.page.eval_on_selector_all(
        ".opblock-summary-path",
        "nodes => nodes.map(n => n.getAttribute('data-path') || n.textContent.trim())",
    )
    expected = operations(server)
    assert len(shown) == len(expected)
    assert {path.replace("\u200b", "") for path in shown} == {path for _, path in expected}


def test_redoc_renders_every_operation(server, offline):
    offline.full_page = False  # the first screen; the whole page is ten screens tall
    offline.page.goto(f"{server.url}/redoc")
    offline.page.wait_for_selector("[data-section-id^='tag/']", timeout=WAIT_MS)
    offline.page.wait_for_selector("h2 >> text=Apply one gradient", timeout=WAIT_MS)
    sections = offline.page.eval_on_selector_all(
        "[data-section-id*='/operation/']", "nodes => nodes.length"
    )
    assert sections == len(operations(server))


def take_steps(client, path: str, auth, start: int, count: int, rng) -> None:
    for t in range(start, start + count):
        body = {"gradients": rng.standard_normal(4).tolist(), "loss": 3.0 / (t + 1)}
        assert post_json(client, f"{path}/step", body, headers=auth).status_code == 200


def wait_for_points(page, name: str, color: str, points: int) -> dict:
    deadline = time.monotonic() + WAIT_MS / 1000
    while True:
        drawn = page.evaluate(DRAWN, [name, color])
        if drawn["points"] >= points or time.monotonic() > deadline:
            return drawn
        time.sleep(0.1)


def test_live_view_draws_the_curves_of_a_session_and_follows_new_steps(server, offline):
    rng = np.random.default_rng(5)
    with server.client() as client:
        created = create_session(
            client,
            {
                "params": [0.5, -0.5, 1.0, 2.0],
                "optimizer": {"type": "adam", "lr": 0.05},
                "schedule": {
                    "type": "warmup",
                    "warmup_steps": 10,
                    "then": {"type": "cosine", "total_steps": 50},
                },
            },
        )
        auth, path = bearer(created["token"]), f"/v1/sessions/{created['id']}"
        take_steps(client, path, auth, 0, 40, rng)

        page = offline.page
        page.goto(f"{server.url}/ui")
        page.evaluate("() => window.optaasUi.ready")
        page.fill("#session-id", created["id"])
        page.fill("#session-token", created["token"])
        page.click("#open-form button[type=submit]")
        colors = page.evaluate("() => window.optaasUi.colors")
        for name in ("lr", "loss", "grad_norm"):
            drawn = wait_for_points(page, name, colors[name], 40)
            assert drawn["points"] == 40, name
            assert drawn["xs"] == list(range(1, 41))
            assert drawn["columns"] > 0.8 * drawn["plotWidth"], (name, drawn["columns"])
        drawn = page.evaluate(DRAWN, ["loss", colors["loss"]])
        assert drawn["ys"] == pytest.approx([3.0 / (t + 1) for t in range(40)])

        take_steps(client, path, auth, 40, 15, rng)  # the page polls: it must follow
        assert wait_for_points(page, "lr", colors["lr"], 55)["points"] == 55

    assert created["token"] not in page.url
    stored = page.evaluate("() => sessionStorage.getItem('optaas.session')")
    assert created["token"] in stored
    assert page.evaluate("() => Object.keys(localStorage).length") == 0
    log = server.log_path.read_text()
    assert created["token"] not in log


NESTED = {
    "type": "sequential",
    "schedules": [
        {"type": "warmup", "warmup_steps": 50, "then": {"type": "constant"}},
        {
            "type": "sequential",
            "schedules": [
                {"type": "cosine", "total_steps": 200, "min_lr": 0.01},
                {"type": "step", "step_size": 50, "gamma": 0.5},
            ],
            "milestones": [200],
        },
    ],
    "milestones": [50],
}


def test_schedule_designer_draws_a_nested_schedule_built_in_its_form(server, offline):
    page = offline.page
    page.goto(f"{server.url}/ui")
    page.evaluate("() => window.optaasUi.ready")
    color = page.evaluate("() => window.optaasUi.colors.designer")

    # Build NESTED through the generated form, as a person would.
    page.fill("#designer-lr", "0.2")
    page.fill("#designer-steps", "500")
    page.select_option('[data-path="schedule.type"]', "sequential")
    page.fill('[data-path="schedule.milestones"]', "50")
    page.select_option('[data-path="schedule.schedules.0.type"]', "warmup")
    page.fill('[data-path="schedule.schedules.0.warmup_steps"]', "50")
    page.select_option('[data-path="schedule.schedules.1.type"]', "sequential")
    page.fill('[data-path="schedule.schedules.1.milestones"]', "200")
    inner = "schedule.schedules.1.schedules"
    page.select_option(f'[data-path="{inner}.0.type"]', "cosine")
    page.fill(f'[data-path="{inner}.0.total_steps"]', "200")
    page.fill(f'[data-path="{inner}.0.min_lr"]', "0.01")
    page.select_option(f'[data-path="{inner}.1.type"]', "step")
    page.fill(f'[data-path="{inner}.1.step_size"]', "50")
    page.fill(f'[data-path="{inner}.1.gamma"]', "0.5")

    assert page.evaluate("() => window.optaasUi.readSchedule()") == NESTED
    expected = schedule_lrs(NESTED, 0.2, 500)
    deadline = time.monotonic() + WAIT_MS / 1000
    while page.evaluate(DRAWN, ["designer", color])["ys"] != expected:
        assert time.monotonic() < deadline, "the designer did not draw the schedule"
        time.sleep(0.1)
    drawn = page.evaluate(DRAWN, ["designer", color])
    assert drawn["points"] == 500
    assert drawn["columns"] > 0.8 * drawn["plotWidth"]
    offline.screenshot("-drawn")

    # An invalid value: the problem is shown and its field marked.
    page.fill(f'[data-path="{inner}.0.total_steps"]', "0")
    page.wait_for_selector(f'.invalid[data-path="{inner}.0.total_steps"]', timeout=WAIT_MS)
    assert f"{inner}.0.total_steps" in page.text_content("#designer-status")


DESIGNER_SCHEDULE = {
    "type": "warmup",
    "warmup_steps": 100,
    "then": {"type": "cosine", "total_steps": 900},
}
"""The designer's first schedule (ui.js)."""


def test_the_designers_optimizer_form_knows_every_type(server, offline):
    """The optimizer form lists every type the API takes (from its schema); a chosen type's
    lr is the base rate of the curve, and a learning-rate-free type is said to scale it."""
    page = offline.page
    page.goto(f"{server.url}/ui")
    page.evaluate("() => window.optaasUi.ready")
    color = page.evaluate("() => window.optaasUi.colors.designer")
    options = page.eval_on_selector_all(
        '[data-path="optimizer.type"] option', "nodes => nodes.map((node) => node.value)"
    )
    assert sorted(option for option in options if option) == sorted(OPTIMIZER_TYPES)

    page.select_option('[data-path="optimizer.type"]', "prodigy")
    page.fill('[data-path="optimizer.lr"]', "0.5")
    page.fill("#designer-steps", "100")
    defaults = {k: v for k, v in optimizer_defaults("prodigy").items() if v is not None}
    read = page.evaluate("() => window.optaasUi.readOptimizer()")
    assert read == {**defaults, "type": "prodigy", "lr": 0.5}
    expected = schedule_lrs(DESIGNER_SCHEDULE, 0.5, 100)
    deadline = time.monotonic() + WAIT_MS / 1000
    while page.evaluate(DRAWN, ["designer", color])["ys"] != expected:
        assert time.monotonic() < deadline, "the designer did not draw the optimizer's rates"
        time.sleep(0.1)
    assert "estimates" in page.text_content("#designer-status")
    assert page.is_disabled("#designer-lr")
    offline.screenshot("-optimizer")

    # A bad value of the optimizer's: the problem names it and its field is marked.
    page.fill('[data-path="optimizer.d0"]', "-1")
    page.wait_for_selector('.invalid[data-path="optimizer.d0"]', timeout=WAIT_MS)
    assert "optimizer.d0" in page.text_content("#designer-status")
