# Run from the repository root on an audited workspace (e.g. benchmarks/audit_full.py's 70k Fashion-MNIST one):
#   .venv/bin/python benchmarks/report_size.py --workspace .bench/fmnist70k-ws --opens 3
"""Size, write time and open time of the workspace report (docs/benchmarks.md, "Workspace report size and open time").

Rebuilds ``reports/report.html`` from the workspace's latest documents (timed in this process, cold), prints its
size and how much of it is thumbnails, then opens it ``--opens`` times in Debian's headless Chromium (Playwright)
and prints the median load and DOMContentLoaded times, and the time to turn a gallery page, filter by a class and
open the larger view (in the label-issues gallery).
"""

from __future__ import annotations

import argparse
import re
import shutil
import statistics
import time
from pathlib import Path

CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workspace", type=Path, required=True)
    parser.add_argument("--opens", type=int, default=3)
    args = parser.parse_args()

    started = time.perf_counter()
    from curato.commands.info import write_report
    from curato.workspace import Workspace

    path = write_report(Workspace.open(args.workspace), (), args.workspace / "reports" / "report.html")
    written = time.perf_counter() - started
    html = path.read_text()
    thumbnails = sum(len(match) for match in re.findall(r"data:image/png;base64,[A-Za-z0-9+/=]+", html))
    print(f"report {path}: {len(html) / 1e6:.2f} MB ({thumbnails / 1e6:.2f} MB thumbnails), written in {written:.1f} s "
          "(cold process, imports included)")

    from playwright.sync_api import sync_playwright

    loads, ready, turns, filters, views = [], [], [], [], []
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=shutil.which("chromium"), args=CHROMIUM_ARGS)
        for _ in range(args.opens):
            page = browser.new_page(viewport={"width": 1600, "height": 1000})
            page.goto(path.resolve().as_uri(), wait_until="load")
            timing = page.evaluate("performance.getEntriesByType('navigation')[0].toJSON()")
            loads.append(timing["loadEventEnd"] / 1000)
            ready.append(timing["domContentLoadedEventEnd"] / 1000)
            gallery = page.locator('.flagged[data-check="label_issues"]')
            if gallery.count():
                started = time.perf_counter()
                gallery.locator("button.next").click()
                turns.append(time.perf_counter() - started)
                classes = gallery.locator("select.filter-class option").all_inner_texts()
                if len(classes) > 1:
                    started = time.perf_counter()
                    gallery.locator("select.filter-class").select_option(label=classes[1])
                    filters.append(time.perf_counter() - started)
                started = time.perf_counter()
                gallery.locator("figure").first.click()
                page.locator("dialog#detail img.big").wait_for()
                views.append(time.perf_counter() - started)
            page.close()
        browser.close()

    def median(values: list[float]) -> str:
        return f"{statistics.median(values):.2f} s" if values else "n/a (not found on the page)"

    print(f"open ({args.opens}x, median): load {median(loads)}, DOMContentLoaded {median(ready)}; next gallery page "
          f"{median(turns)}, a class filter {median(filters)}, the larger view {median(views)}")


if __name__ == "__main__":
    main()
