"""The demo page in headless Chromium: pick a user, see the grid, click, see the grid change."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from recpipe_dev.local.redis_server import free_port

CHROMIUM = Path("/usr/bin/chromium")
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

pytestmark = [
    pytest.mark.browser,
    pytest.mark.skipif(
        not CHROMIUM.exists(),
        reason="Debian chromium not installed (/usr/bin/chromium): apt-get install -y chromium",
    ),
]


@pytest.fixture(scope="module")
def demo_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """`recpipe demo` (interactive mode) in a subprocess; Ctrl-C at the end must stop it cleanly."""
    state = tmp_path_factory.mktemp("demo-state")
    log_path = state / "demo.log"
    port = free_port()
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"}
    env.pop("REDIS_URL", None)
    with log_path.open("w") as log:
        proc = subprocess.Popen(
            [
                sys.executable, "-m", "recpipe_dev.cli", "demo", "--port", str(port), "--state-dir", str(state),
                "--users", "600", "--items", "500", "--events", "20000", "--requests", "10",
            ],
            stdout=log,
            stderr=subprocess.STDOUT,
            env=env,
        )  # fmt: skip
        deadline = time.monotonic() + 150
        while "the demo is running" not in log_path.read_text():
            if proc.poll() is not None or time.monotonic() > deadline:
                proc.kill()
                pytest.fail(f"demo did not come up (exit {proc.returncode}):\n{log_path.read_text()[-3000:]}")
            time.sleep(0.5)
        try:
            yield f"http://127.0.0.1:{port}/"
        finally:
            proc.send_signal(signal.SIGINT)
            try:
                code = proc.wait(30)
            except subprocess.TimeoutExpired:
                proc.kill()
                pytest.fail("demo did not stop within 30 s of Ctrl-C")
    assert code == 0, log_path.read_text()[-3000:]
    assert not (state / "demo.lock").exists() and not (state / "demo" / "local.json").exists()


#: The item ids shown in the grid, in order.
GRID_JS = "[...document.querySelectorAll('[data-testid=card]')].map(e => e.dataset.itemId)"


def test_clicking_an_item_posts_an_event_and_the_grid_follows(demo_url: str, tmp_path: Path) -> None:
    from playwright.sync_api import expect, sync_playwright

    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        page = browser.new_page(viewport={"width": 1300, "height": 1000})
        errors: list[str] = []
        page.on("pageerror", lambda e: errors.append(str(e)))
        page.goto(demo_url)

        # A known user is preselected: the grid shows titles, categories, scores and reasons.
        expect(page.locator("[data-testid=card]").first).to_be_visible(timeout=15_000)
        first = page.locator("[data-testid=card]").first
        assert first.locator("h3").inner_text().strip()
        assert first.locator(".chip").count() >= 1
        assert "score" in first.locator(".score").inner_text()
        assert first.locator(".reason").inner_text().strip()
        expect(page.locator("[data-testid=data-info]")).to_contain_text("synthetic shop")

        # A new visitor (cold start), then a click on one card.
        with page.expect_response(
            lambda r: "/recommendations?" in r.url and "web-visitor-" in r.url
        ) as cold_resp:
            page.locator("[data-testid=new-visitor]").click()
        cold = [it["item_id"] for it in cold_resp.value.json()["items"]]
        page.wait_for_function(f"ids => JSON.stringify({GRID_JS}) === JSON.stringify(ids)", arg=cold)
        expect(page.locator("[data-testid=current-user]")).to_contain_text("web-visitor-")
        clicked = page.locator("[data-testid=card]").nth(2)
        title = clicked.locator("h3").inner_text()
        with page.expect_response(lambda r: "/recommendations?" in r.url) as after_resp:
            clicked.click()
        after_click = [it["item_id"] for it in after_resp.value.json()["items"]]
        expect(page.locator("[data-testid=events-posted]")).to_have_text("2")  # view + click
        expect(page.locator("[data-testid=session] li").first).to_contain_text(title)
        page.wait_for_function(f"ids => JSON.stringify({GRID_JS}) === JSON.stringify(ids)", arg=after_click)
        assert after_click != cold
        assert "because you viewed" in page.locator("[data-testid=grid]").inner_text()

        # Add to cart: that item leaves the grid.
        target = page.locator("[data-testid=card]").first
        carted = target.get_attribute("data-item-id")
        target.locator("[data-testid=add-to-cart]").click()
        expect(page.locator("[data-testid=events-posted]")).to_have_text("3")
        expect(page.locator(f"[data-testid=card][data-item-id='{carted}']")).to_have_count(0, timeout=10_000)

        # The live panel shows latency rows and the stream path's progress.
        expect(page.locator("[data-testid=stats]")).to_contain_text("GET /recommendations", timeout=5_000)
        expect(page.locator("[data-testid=stream-delivered]")).to_have_text(
            re.compile(r"^\d+ / \d+$"), timeout=5_000
        )
        page.screenshot(path=str(tmp_path / "demo-page.png"), full_page=True)
        assert not errors, errors
        browser.close()
