"""The Data map and Hardness pages on a run folder, timed in headless Chromium (issue 14 item 2).

Starts the app (a fresh empty workspace) and Debian's Chromium (software WebGL), opens the run
folder from the sidebar, then times a click on *Data map*, on *Hardness*, and on each of them
again, from the click until the page is drawn and idle (``bench/app_driver.py``). With each
time it records the CPU seconds the app server spent on that step (the machine may be shared:
wall-clock times there say more about the load than about the page), and the load average
before and after. Writes ``DIR/hardness_pages_<n>.json``.

Usage::

    .venv/bin/python bench/hardness_pages.py --run /tmp/scatter-bench/run1000000 --out /tmp/hardness-pages
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
from pathlib import Path

import psutil

REPO = Path(__file__).resolve().parent.parent
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from bench.app_driver import AppDriver, launch, run_points, step  # noqa: E402
from tests.app_server import running_app  # noqa: E402

STEPS = (("Data map", "data_map"), ("Hardness", "hardness"), ("Data map", "data_map_again"),
         ("Hardness", "hardness_again"))


def _cpu_seconds(process: psutil.Process) -> float:
    """CPU time of the app server and of the worker processes it started."""
    total = sum(process.cpu_times()[:2])
    for child in process.children(recursive=True):
        try:
            total += sum(child.cpu_times()[:2])
        except psutil.NoSuchProcess:
            pass
    return total


def measure(run: Path, *, timeout_s: float, out: Path) -> dict:
    from playwright.sync_api import sync_playwright

    n = len(run_points(run))
    result: dict = {"n": n, "run": str(run), "load_average_at_start": [round(v, 2) for v in os.getloadavg()]}
    with tempfile.TemporaryDirectory() as workspace, \
            running_app(out, {"CARTOGRAPHER_WORKSPACE": workspace}) as app, sync_playwright() as playwright:
        server = psutil.Process(app.process.pid)
        browser = launch(playwright)
        try:
            driver = AppDriver.open(browser, app.url, timeout_s)
            result.update(driver.open_run(run))
            step(f"{n:,}: run open in {result['open_run_s']} s")
            for title, name in STEPS:
                before = _cpu_seconds(server)
                result[f"{name}_s"] = driver.open_page(title, drawn=None)
                result[f"{name}_server_cpu_s"] = round(_cpu_seconds(server) - before, 2)
                step(f"{n:,}: {title} drawn and idle in {result[f'{name}_s']} s "
                     f"(server CPU {result[f'{name}_server_cpu_s']} s)")
                driver.page.screenshot(path=str(out / f"hardness_pages_{n}_{name}.png"), full_page=True)
            result["javascript_errors"] = list(driver.errors)
            driver.close()
        finally:
            browser.close()
    result["load_average_at_end"] = [round(v, 2) for v in os.getloadavg()]
    return result


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--run", type=Path, required=True, help="a run folder (cartographer analyze --out)")
    parser.add_argument("--out", type=Path, required=True, help="folder for hardness_pages_<n>.json")
    parser.add_argument("--timeout", type=float, default=600.0, help="seconds to wait for any one step")
    args = parser.parse_args(argv)
    if not (args.run / "examples.parquet").exists():
        parser.error(f"{args.run} is not a run folder: it has no examples.parquet")
    args.out.mkdir(parents=True, exist_ok=True)
    result = measure(args.run, timeout_s=args.timeout, out=args.out)
    path = args.out / f"hardness_pages_{result['n']}.json"
    path.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result), flush=True)
    return 1 if result["javascript_errors"] else 0


if __name__ == "__main__":
    sys.exit(main())
