"""The report opened in a real headless browser (Debian's Chromium, driven by Playwright): it loads
from disk with no network, raises no error, and every figure decodes and is drawn.

Skipped when /usr/bin/chromium is missing, unless AUTOSCI_REQUIRE_BROWSER=1 (CI installs it with
tests/report/install_browser.sh), where a missing browser fails the run instead.
"""

from __future__ import annotations

import io
import os
from pathlib import Path
from typing import Any

import pytest
from PIL import Image

from autosci_hpc.report import load_campaign, plots, write_report

from report_builders import EVIL, STANDARD_TRIALS, C, build_campaign, story

CHROMIUM = Path("/usr/bin/chromium")
ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
        "--disable-background-networking", "--disable-component-update", "--disable-sync"]


def browser_or_skip() -> Any:
    required = os.environ.get("AUTOSCI_REQUIRE_BROWSER") == "1"
    missing = (None if CHROMIUM.exists()
               else f"{CHROMIUM} is not installed (bash tests/report/install_browser.sh)")
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        missing = missing or "playwright is not installed (the test extra)"
    if missing:
        if required:
            pytest.fail(f"AUTOSCI_REQUIRE_BROWSER=1 but {missing}")
        pytest.skip(missing)
    return sync_playwright


def colours(png: bytes) -> int:
    image = Image.open(io.BytesIO(png)).convert("RGB")
    image.thumbnail((600, 600))
    return len(image.getcolors(maxcolors=1 << 24) or [])


def test_the_report_opens_in_a_browser_with_every_figure_drawn(tmp_path: Path) -> None:
    sync_playwright = browser_or_skip()
    a = story(tmp_path, "dec-a")
    b = build_campaign(tmp_path / "single-b", STANDARD_TRIALS, [C(12.5, 0.5), C(36, 0.62)], mode="single",
                       seed=1)
    out = write_report([a, b], tmp_path / "report.html")
    figures = plots.campaign_plots(load_campaign(a), 0.6)
    expected = 3 + len(figures) + len(plots.campaign_plots(load_campaign(b), 0.6))

    # The figures as the plot code writes them to disk: real drawings, not blank frames.
    for path in plots.save_plots(figures, tmp_path / "png"):
        png = path.read_bytes()
        assert len(png) > 5_000 and colours(png) > 20, path.name

    errors: list[str] = []
    fetched: list[str] = []
    dialogs: list[str] = []
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=str(CHROMIUM), args=ARGS)
        try:
            page = browser.new_page(viewport={"width": 1200, "height": 900})
            page.on("console", lambda msg: errors.append(msg.text) if msg.type == "error" else None)
            page.on("pageerror", lambda exc: errors.append(str(exc)))

            def dialog(d: Any) -> None:  # an alert() would mean agent markup ran
                dialogs.append(d.message)
                d.dismiss()

            page.on("dialog", dialog)

            def route(r: Any) -> None:
                url = r.request.url
                if url.startswith(("file://", "data:")):
                    r.continue_()
                else:  # the report must need nothing from a network
                    fetched.append(url)
                    r.abort()

            page.route("**/*", route)
            page.goto(out.resolve().as_uri(), wait_until="load")
            page.evaluate("document.querySelectorAll('details').forEach(d => d.open = true)")
            page.wait_for_function("Array.from(document.images).every(i => i.complete)")
            drawn = page.evaluate("Array.from(document.images).map(i => [i.naturalWidth, i.naturalHeight])")
            scripts = page.evaluate("document.querySelectorAll('script').length")
            heading = page.inner_text("h1")
            body = page.inner_text("body")
            shot = page.screenshot(full_page=True)
        finally:
            browser.close()
    assert errors == [] and fetched == [] and dialogs == []
    assert scripts == 0 and EVIL in body  # the agent's markup is shown as text, never run
    assert heading == "autosci report: 2 campaigns on toy"
    assert len(drawn) == expected and all(w > 100 and h > 100 for w, h in drawn)
    assert len(shot) > 100_000 and colours(shot) > 100
