"""A PNG screenshot of a report (or any local HTML file) in headless Chromium, for docs and checks.

    python analysis/screenshot.py REPORT.html OUT.png [--width 1200] [--height 1500] [--full-page]

Uses Debian's /usr/bin/chromium through Playwright (no browser download); the page is loaded from
disk with every network request refused, as the report needs none.
"""

from __future__ import annotations

import argparse
import io
import sys
from pathlib import Path
from typing import Any

from PIL import Image

CHROMIUM = "/usr/bin/chromium"
ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
        "--disable-background-networking", "--disable-component-update", "--disable-sync"]


def screenshot(page_file: Path, out: Path, width: int, height: int, full_page: bool) -> int:
    from playwright.sync_api import sync_playwright

    def refuse_network(route: Any) -> None:
        if route.request.url.startswith(("file://", "data:")):
            route.continue_()
        else:
            route.abort()

    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=ARGS)
        try:
            page = browser.new_page(viewport={"width": width, "height": height})
            page.route("**/*", refuse_network)
            page.goto(page_file.resolve().as_uri(), wait_until="load")
            png = page.screenshot(full_page=full_page)
        finally:
            browser.close()
    # A 256-colour palette: a report is flat colours and text, and the file stays small for docs.
    Image.open(io.BytesIO(png)).convert("RGB").quantize(256).save(out, optimize=True)
    return out.stat().st_size


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("page", type=Path)
    parser.add_argument("out", type=Path)
    parser.add_argument("--width", type=int, default=1200)
    parser.add_argument("--height", type=int, default=1500)
    parser.add_argument("--full-page", action="store_true")
    args = parser.parse_args()
    if not args.page.is_file():
        print(f"error: {args.page}: no such file", file=sys.stderr)
        return 2
    size = screenshot(args.page, args.out, args.width, args.height, args.full_page)
    print(f"{args.out} ({size // 1024} kB)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
