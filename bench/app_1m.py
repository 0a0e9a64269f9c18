"""Check: the app opens a 1M-example run folder and stays usable, in a real browser.

Starts the app (``streamlit run app.py``) and drives Debian's Chromium with Playwright, as a
user would: open the run folder written by ``bench/e2e.py`` (sidebar → "Open a file or
folder…"), then

1. the Map: time until the chart is drawn, what it says it shows;
2. recolour by a score: time until the chart shows the new colouring;
3. a box selection: time until the selection panel shows its size, and whether that size is
   the number of points inside the box among all 1M (drawn or not);
4. the Data map and Hardness pages: time until their charts are drawn.

Times are wall-clock in the browser (server work, transfer and drawing). Screenshots and
``app_1m.json`` go to ``--out``.

Usage::

    .venv/bin/python bench/app_1m.py --run /tmp/cartographer-e2e/run
"""

from __future__ import annotations

import argparse
import json
import os
import re
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

import numpy as np
import pandas as pd

REPO = Path(__file__).resolve().parent.parent
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from bench.map_speed import machine_info  # noqa: E402

CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--disable-dev-shm-usage"]
PLOT_READY = "() => document.querySelector('.js-plotly-plot')?._fullData?.length > 0"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def start_app(workspace: Path, log: Path) -> tuple[subprocess.Popen, str]:
    port = free_port()
    env = dict(os.environ, CARTOGRAPHER_WORKSPACE=str(workspace), STREAMLIT_BROWSER_GATHER_USAGE_STATS="false")
    server = subprocess.Popen([sys.executable, "-m", "streamlit", "run", str(REPO / "app.py"),
                               "--server.headless", "true", "--server.port", str(port),
                               "--server.address", "127.0.0.1", "--server.fileWatcherType", "none"],
                              cwd=REPO, env=env, stdout=log.open("w"), stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    for _ in range(300):
        try:
            if urllib.request.urlopen(f"{url}/_stcore/health", timeout=1).read() == b"ok":
                return server, url
        except OSError:
            time.sleep(0.2)
    server.kill()
    raise RuntimeError(f"the app did not start; see {log}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--run", type=Path, default=Path("/tmp/cartographer-e2e/run"))
    parser.add_argument("--out", type=Path, default=REPO / "bench" / "results" / "app_1m")
    parser.add_argument("--timeout", type=float, default=300.0, help="seconds to wait for any one step")
    args = parser.parse_args(argv)
    from playwright.sync_api import expect, sync_playwright

    args.out.mkdir(parents=True, exist_ok=True)
    points = pd.read_parquet(args.run / "examples.parquet", columns=["x", "y"])
    timeout_ms = args.timeout * 1000
    result: dict = {"benchmark": "app_1m", "machine": machine_info(), "run": str(args.run), "n": len(points)}
    with tempfile.TemporaryDirectory() as workspace:
        server, url = start_app(Path(workspace), args.out / "streamlit.log")
        try:
            with sync_playwright() as playwright:
                browser = playwright.chromium.launch(executable_path="/usr/bin/chromium", args=CHROMIUM_ARGS)
                page = browser.new_context(viewport={"width": 1500, "height": 1000}).new_page()
                page.set_default_timeout(timeout_ms)
                errors: list[str] = []
                page.on("pageerror", lambda error: errors.append(str(error)))
                page.goto(url)
                page.wait_for_selector("[data-testid=stApp]")

                def idle():
                    """Until the script has finished its rerun and nothing on screen is stale."""
                    time.sleep(0.5)  # let a rerun the last action triggered begin
                    page.wait_for_function("() => !document.querySelector('[data-testid=stStatusWidget]')"
                                           " && !document.querySelector('[data-stale=true]')",
                                           timeout=timeout_ms)

                def nav(title: str):
                    page.get_by_test_id("stSidebarNav").get_by_text(title, exact=True).click()

                # open the run folder
                started = time.perf_counter()
                page.locator("[data-testid=stSelectbox]").filter(has_text="Dataset").first.click()
                page.get_by_role("option", name="Open a file or folder…", exact=True).click()
                box = page.get_by_role("textbox", name="Path to a file or image folder")
                box.fill(str(args.run))
                box.press("Enter")
                expect(page.get_by_text(re.compile(r"Run of .*1,000,000 examples"))).to_be_visible(timeout=timeout_ms)
                idle()
                result["open_run_s"] = round(time.perf_counter() - started, 1)

                # the Map
                started = time.perf_counter()
                nav("Map")
                page.wait_for_function(PLOT_READY, timeout=timeout_ms)
                idle()
                result["map_draw_s"] = round(time.perf_counter() - started, 1)
                result["map_caption"] = page.get_by_text(re.compile(r"Showing [\d,]+ of|All [\d,]+ points")).first.inner_text()
                result["map_points_drawn"] = page.evaluate(
                    "() => document.querySelector('.js-plotly-plot')._fullData.reduce((n, t) => n + (t._length || 0), 0)")
                page.screenshot(path=str(args.out / "map.png"))

                # recolour by a score
                started = time.perf_counter()
                page.locator("[data-testid=stSelectbox]").filter(has_text="Colour by").first.click()
                page.keyboard.type("confidence")  # the option list is virtualised: filter it
                page.get_by_role("option", name="confidence", exact=True).click()
                page.wait_for_function("() => document.querySelector('.js-plotly-plot')._fullData"
                                       ".some(t => t.name === 'confidence')", timeout=timeout_ms)
                idle()
                result["recolour_s"] = round(time.perf_counter() - started, 1)
                page.screenshot(path=str(args.out / "map_confidence.png"))

                # a box selection
                area = page.locator(".js-plotly-plot .nsewdrag").first.bounding_box()
                page.locator(".js-plotly-plot").first.hover()
                page.locator('[data-title="Box Select"]').first.click()
                x0, y0 = area["x"] + area["width"] * 0.35, area["y"] + area["height"] * 0.35
                x1, y1 = x0 + area["width"] * 0.25, y0 + area["height"] * 0.25
                (rx0, rx1), (ry0, ry1) = page.evaluate(
                    "() => { const l = document.querySelector('.js-plotly-plot')._fullLayout;"
                    " return [l.xaxis.range, l.yaxis.range]; }")

                def to_data(px, py):
                    return (rx0 + (px - area["x"]) / area["width"] * (rx1 - rx0),
                            ry1 - (py - area["y"]) / area["height"] * (ry1 - ry0))

                started = time.perf_counter()
                page.mouse.move(x0, y0)
                page.mouse.down()
                page.mouse.move(x1, y1, steps=15)
                page.mouse.up()
                heading = page.get_by_text(re.compile(r"Selection · [\d,]+ examples"))
                expect(heading).not_to_have_text("Selection · 0 examples", timeout=timeout_ms)
                idle()
                result["box_select_s"] = round(time.perf_counter() - started, 1)
                selected = int(re.search(r"([\d,]+)", heading.inner_text()).group(1).replace(",", ""))
                def inside(grow: float) -> int:
                    (ax0, ay0), (ax1, ay1) = to_data(x0 - grow, y0 - grow), to_data(x1 + grow, y1 + grow)
                    return int(((points["x"] >= min(ax0, ax1)) & (points["x"] <= max(ax0, ax1))
                                & (points["y"] >= min(ay0, ay1)) & (points["y"] <= max(ay0, ay1))).sum())

                result["box_selected"] = selected
                # among all 1M points, drawn or not; the box's edge is only known to a pixel or two
                result["box_inside_all_points"] = {"box": inside(0), "shrunk_2px": inside(-2), "grown_2px": inside(2)}
                page.screenshot(path=str(args.out / "map_box_selection.png"))

                # the Data map draws one chart; Hardness a box plot and the score-agreement heatmap
                for title, name, charts in (("Data map", "data_map", 1), ("Hardness", "hardness", 2)):
                    started = time.perf_counter()
                    nav(title)
                    expect(page.get_by_role("heading", name=title, exact=True)).to_be_visible(timeout=timeout_ms)
                    page.wait_for_function(
                        f"() => [...document.querySelectorAll('.js-plotly-plot')]"
                        f".filter(p => p._fullData?.length > 0).length >= {charts}", timeout=timeout_ms)
                    idle()
                    result[f"{name}_s"] = round(time.perf_counter() - started, 1)
                    page.screenshot(path=str(args.out / f"{name}.png"), full_page=True)
                result["javascript_errors"] = errors
                browser.close()
        finally:
            server.terminate()
            server.wait(timeout=30)
    (args.out / "app_1m.json").write_text(json.dumps(result, indent=2))
    print(json.dumps({k: v for k, v in result.items() if k != "machine"}, indent=2))
    return 0 if not result.get("javascript_errors") else 1


if __name__ == "__main__":
    sys.exit(main())
