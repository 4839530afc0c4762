"""Web chat benchmark: ``python -m bench.webchat`` (``make bench-webchat``; results into bench/RESULTS.md).

The page's weight (HTML + JS + CSS as served, and as transferred) and the time from opening ``/chat``
to the first message on the screen, in Debian's Chromium at 360 x 740 on Chrome DevTools' network
profiles ("Fast 3G": 562.5 ms round trip, 1.44 Mbit/s down, 675 kbit/s up; "Slow 3G": 2 s, 400 kbit/s
both ways), each visit a new browser context (nothing cached), then a visit with the cache warm.
The stack is the real one (the greeting comes from Rasa); median of ``--runs`` visits per profile."""
from __future__ import annotations

import argparse
import shutil
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

from playwright.sync_api import Browser, sync_playwright

from bench.run import write_results
from tests.sandbox import free_port, make_settings, start_stack

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
# Chrome DevTools' throttling presets (front_end/core/sdk/NetworkManager.ts): bytes per second, ms.
PROFILES = {
    "fast-3g": {"latency": 562.5, "downloadThroughput": 1.6e6 / 8 * 0.9, "uploadThroughput": 750e3 / 8 * 0.9},
    "slow-3g": {"latency": 2000.0, "downloadThroughput": 500e3 / 8 * 0.8, "uploadThroughput": 500e3 / 8 * 0.8},
}
PAGE_KINDS = ("Document", "Script", "Stylesheet")


def visit(browser: Browser, url: str, profile: dict[str, float], warm: bool) -> dict[str, Any]:
    """One visit: ms to the first message, and the bytes of the page's own resources."""
    ctx = browser.new_context(viewport={"width": 360, "height": 740}, device_scale_factor=2, is_mobile=True,
                              has_touch=True, locale="zh-CN")
    page = ctx.new_page()
    if warm:  # the cache filled on a fast network, then the measured visit on the slow one
        page.goto(url)
        page.wait_for_selector(".msg.bot")
    cdp = ctx.new_cdp_session(page)
    cdp.send("Network.enable")
    cdp.send("Network.setCacheDisabled", {"cacheDisabled": False})
    cdp.send("Network.emulateNetworkConditions", {"offline": False, **profile})
    kinds: dict[str, str] = {}
    sizes = {"encoded": 0, "decoded": 0}
    cdp.on("Network.responseReceived", lambda e: kinds.__setitem__(e["requestId"], e["type"]))
    cdp.on("Network.dataReceived", lambda e: sizes.__setitem__("decoded", sizes["decoded"] + e["dataLength"])
           if kinds.get(e["requestId"]) in PAGE_KINDS else None)
    cdp.on("Network.loadingFinished", lambda e: sizes.__setitem__("encoded", sizes["encoded"] + e["encodedDataLength"])
           if kinds.get(e["requestId"]) in PAGE_KINDS else None)
    t0 = time.perf_counter()
    page.goto(url, wait_until="commit")
    page.wait_for_selector(".msg.bot", timeout=60_000)
    first_ms = (time.perf_counter() - t0) * 1000
    page.wait_for_load_state("load")
    ctx.close()
    return {"first_message_ms": first_ms, "transferred_bytes": sizes["encoded"], "page_bytes": sizes["decoded"]}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--runs", type=int, default=7)
    parser.add_argument("--out", default="bench/webchat-last-run.json")
    args = parser.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="heze-bench-webchat-"))
    api = free_port()
    settings = make_settings(rasa_port=free_port(), action_port=free_port(), services_api_port=api,
                             public_base_url=f"http://127.0.0.1:{api}", heze_db_url=f"sqlite:///{tmp / 'heze.db'}",
                             tracker_db=str(tmp / "tracker.db"))
    stack, engine = start_stack(settings, tmp)
    results: dict[str, Any] = {"runs": args.runs, "viewport": "360x740", "profiles": {}}
    try:
        with sync_playwright() as p:
            browser = p.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
            url = f"{settings.public_base_url}/chat"
            visit(browser, url, {"latency": 0, "downloadThroughput": -1, "uploadThroughput": -1}, False)  # warm-up
            for name, profile in PROFILES.items():
                for warm in (False, True):
                    visits = [visit(browser, url, profile, warm) for _ in range(args.runs)]
                    key = f"{name}-{'warm' if warm else 'cold'}"
                    results["profiles"][key] = {
                        "first_message_ms_median": round(statistics.median(v["first_message_ms"] for v in visits)),
                        "first_message_ms_all": [round(v["first_message_ms"]) for v in visits],
                        "page_bytes": visits[-1]["page_bytes"],
                        "transferred_bytes": visits[-1]["transferred_bytes"],
                    }
                    print(key, results["profiles"][key], flush=True)
            browser.close()
    finally:
        stack.stop()
        engine.dispose()
    write_results(results, args)


if __name__ == "__main__":
    main()
