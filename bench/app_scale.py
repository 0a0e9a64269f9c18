"""The app on a run folder of any size, driven in headless Chromium as a user would (issue 14).

Starts the app (``streamlit run app.py``, a fresh empty workspace) and Debian's Chromium
(software WebGL), then times, from the user's action until the change is on screen:

1. **open_run_s**: the sidebar's "Open a file or folder…" with the run folder, from the Enter
   until its Overview is drawn and idle;
2. **map_draw_s**: a click on *Map* until the scatter has drawn every point
   (**map_points_drawn** is read from the scatter itself);
3. **recolour_s**: choosing a score in the map's own colour menu until the new colours are
   drawn (then other scores, ``recolour_all_s``; and one more in the page's "Colour by", which
   reruns the page first: ``recolour_page_menu_s``);
4. **box_select_s**: from releasing a box drag until the selection panel shows its count;
   **box_selected** is that count, checked against the points inside the box by geometry over
   every point of the run (``box_inside_by_geometry``); the same for a lasso (``lasso_*``);
5. **data_map_s**, **hardness_s**: a click on the page until it is drawn and idle;
6. **browser_heap_mb**: the JavaScript heap after a garbage collection, on the Map after the
   selections (``browser_heap_end_mb``: at the end); **javascript_errors**: page errors and
   console errors.

How each step is timed: ``bench/app_driver.py``. The machine's load average is recorded before
and after (the machine may be shared). Writes ``DIR/app_scale_<n>.json``, and a screenshot after
each step (``DIR/app_scale_<n>_<step>.png``).

Usage::

    .venv/bin/python bench/app_scale.py --run /tmp/scatter-bench/run1000000 --out bench/results/app_scale
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from bench.app_driver import AppDriver, PageError, app_server, chromium_pid, chromium_rss_mb, launch, run_points, step  # noqa: E402
from bench.map_speed import machine_info  # noqa: E402

REQUIRED = ("n", "open_run_s", "map_draw_s", "map_points_drawn", "recolour_s", "box_select_s", "box_selected",
            "data_map_s", "hardness_s", "browser_heap_mb", "javascript_errors")


def measure(run: Path, *, colours: list[str], timeout_s: float, out: Path, page_colour: str = "el2n") -> dict:
    """Every step on ``run`` in a fresh app server and browser; the result holds ``REQUIRED``.
    The server's log and the screenshots go to ``out``."""
    from playwright.sync_api import sync_playwright

    points = run_points(run)
    n = len(points)
    result: dict = {"n": n, "run": str(run), "load_average_at_start": [round(v, 2) for v in os.getloadavg()]}
    with tempfile.TemporaryDirectory() as workspace, app_server(Path(workspace), out) as url, \
            sync_playwright() as playwright:
        browser = launch(playwright)
        try:
            app = AppDriver.open(browser, url, timeout_s)

            def shot(name: str) -> None:
                app.page.screenshot(path=str(out / f"app_scale_{n}_{name}.png"))

            result.update(app.open_run(run))
            step(f"{n:,}: run open in {result['open_run_s']} s")
            result.update(app.open_map(n))
            step(f"{n:,}: map drawn {result['map_draw_s']} s after the click ({result['map_points_drawn']:,} points)")
            shot("map")
            recolours = [app.recolour(column) for column in colours]
            result.update(recolours[0])
            result["recolour_columns"] = colours
            result["recolour_all_s"] = [r["recolour_s"] for r in recolours]
            result["recolour_all_timeline_ms"] = [r["recolour_timeline_ms"] for r in recolours]
            by_page = app.recolour(page_colour, menu="page")
            result["recolour_page_menu_column"] = page_colour
            result["recolour_page_menu_s"] = by_page["recolour_s"]
            result["recolour_page_menu_timeline_ms"] = by_page["recolour_timeline_ms"]
            step(f"{n:,}: recoloured in {result['recolour_all_s']} s (map menu), "
                 f"{result['recolour_page_menu_s']} s (page menu)")
            shot("recoloured")
            result.update(app.box_select(points))
            step(f"{n:,}: box selection of {result['box_selected']:,} shown {result['box_select_s']} s after the release")
            result.update(app.lasso_select(points))
            step(f"{n:,}: lasso selection of {result['lasso_selected']:,} shown {result['lasso_select_s']} s "
                 "after the release")
            shot("selected")
            result["map_draws"] = app.view_stats()["draws"]  # every frame the Map's scatter drew
            result["browser_heap_mb"] = app.heap_mb()  # on the Map, every point held
            for title, key, drawn in (("Data map", "data_map_s", n), ("Hardness", "hardness_s", None)):
                try:
                    result[key] = app.open_page(title, drawn=drawn)
                    step(f"{n:,}: {title} drawn and idle in {result[key]} s")
                    shot(key.removesuffix("_s"))
                except PageError as exc:  # null in the results, with the page's error
                    result[key] = None
                    result.setdefault("page_errors", {})[title] = str(exc)
                    step(str(exc).splitlines()[0])
            result["browser_heap_end_mb"] = app.heap_mb()  # on the Hardness page, at the end
            result["chromium_rss_mb"] = chromium_rss_mb(chromium_pid())
            result["javascript_errors"] = list(app.errors)
            app.close()
        finally:
            browser.close()
    result["load_average_at_end"] = [round(v, 2) for v in os.getloadavg()]
    missing = [key for key in REQUIRED if key not in result]
    if missing:
        raise RuntimeError(f"app_scale measured no {', '.join(missing)}")
    return result


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--run", type=Path, required=True, help="a run folder (cartographer analyze --out)")
    parser.add_argument("--out", type=Path, required=True, help="folder for app_scale_<n>.json")
    parser.add_argument("--colour", nargs="+", default=["confidence", "variability", "aum"],
                        help="score columns to recolour by, in turn (the first gives recolour_s)")
    parser.add_argument("--page-colour", default="el2n",
                        help="a score to recolour by in the page's own menu (recolour_page_menu_s)")
    parser.add_argument("--timeout", type=float, default=600.0, help="seconds to wait for any one step")
    args = parser.parse_args(argv)
    if not (args.run / "examples.parquet").exists():
        parser.error(f"{args.run} is not a run folder: it has no examples.parquet")
    args.out.mkdir(parents=True, exist_ok=True)
    result = {"benchmark": "app_scale", "machine": machine_info(),
              **measure(args.run, colours=args.colour, timeout_s=args.timeout, out=args.out,
                       page_colour=args.page_colour)}
    path = args.out / f"app_scale_{result['n']}.json"
    path.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps({k: v for k, v in result.items() if k in REQUIRED or k.startswith("load")}), flush=True)
    step(f"written {path}")
    return 1 if result["javascript_errors"] else 0


if __name__ == "__main__":
    sys.exit(main())
