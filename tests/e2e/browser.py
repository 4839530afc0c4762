"""What the Chromium tests share: the accessibility check of a page, and signing in to the console."""
from __future__ import annotations

from axe_playwright_python.sync_playwright import Axe
from playwright.sync_api import Page

from tests.e2e.conftest import Running

AXE = Axe()


def accessible(page: Page) -> None:
    """axe-core on the page as it is: no serious or critical violation (the report names them)."""
    results = AXE.run(page)
    bad = [v for v in results.response["violations"] if v.get("impact") in ("serious", "critical")]
    assert not bad, (page.url, [(v["id"], v["impact"], [n["target"] for n in v["nodes"]][:3]) for v in bad])


def sign_in(page: Page, running: Running, name: str, password: str) -> None:
    page.goto(f"{running.console_url}/login")
    page.fill("input[name=username]", name)
    page.fill("input[name=password]", password)
    page.click("button[type=submit]")
    page.wait_for_url(f"{running.console_url}/")
